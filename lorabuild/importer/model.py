"""What an import builds: :class:`Imported`, a recipe as dotted keys, and the :class:`Note` list of
what could not be carried over.

Every reader (kohya's TOMLs, scripts, a LoRA file's header, the GUIs' configs) fills one
:class:`Imported`; :mod:`lorabuild.importer.write` turns it into recipe text. Values are plain
TOML values, except paths: :meth:`Imported.set_path` keeps a path the source wrote relative as a
:class:`~pathlib.Path` joined to the folder it was relative to (the writer makes it relative to the
recipe's folder), and a rooted one (``/models/x``, ``C:\\models\\x``) as the string written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath, PureWindowsPath

from lorabuild.problems import LorabuildError


class NoteKind(StrEnum):
    """Why a source key did not become a recipe value as it was."""

    UNKNOWN = "unknown to kohya"
    """The pinned kohya has no such option: kohya ignores it silently in a config file."""
    UNREPRESENTABLE = "not representable"
    """A recipe cannot say it (or says it differently); the note says what the recipe does instead."""
    SECRET = "secret removed"
    """An API key or token: never written to a recipe."""
    TODO = "TODO"
    """What the source cannot hold and the recipe needs: data folders, captions, prompts."""


@dataclass(frozen=True)
class Note:
    """One thing an import could not carry over.

    Attributes:
        kind: Why.
        key: The source's key (``lr_restart_cycles``, ``ss_tag_frequency``), or the recipe key a
            TODO is about (``dataset.subsets[0].source``).
        why: What happened and what to do, one line.
    """

    kind: NoteKind
    key: str
    why: str

    def line(self) -> str:
        """``key: [kind] why``, as the CLI prints it and the recipe's header comment holds it."""
        return f"{self.key}: [{self.kind.value}] {self.why}"


ENV_WORD = "\0env"
"""A script reader's pseudo-command ``[ENV_WORD, NAME, value]``: the script sets an environment variable."""

PathValue = Path | str
"""A path value: a :class:`Path` (relative in the source, joined to its folder) or a rooted string."""


class ImportFailed(LorabuildError):
    """A source is not something lorabuild can import: names the file and what is wrong (exit 2)."""

    exit_code = 2

    def __init__(self, source: str, message: str):
        self.source = source
        self.message = message
        super().__init__(f"{source}: {message}")


@dataclass
class Imported:
    """The recipe being built from one or more sources.

    Attributes:
        source: What it came from, for the recipe's header (file names, ``+``-joined when several).
        values: Dotted recipe keys to values: ``"network.dim": 16``, ``"kohya.caption_prefix": "x"``,
            ``"network.args": {...}``, ``"dataset.subsets": [{"source": Path(...), "repeats": 2}]``.
        notes: What could not be carried over, in the order found.
        comments: A short comment for a key's line in the recipe (``"kohya lr_warmup_steps 5%"``).
        script: The kohya training script the source names (``flux_train_network.py``), or None.
    """

    source: str
    values: dict[str, object] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    comments: dict[str, str] = field(default_factory=dict)
    script: str | None = None

    def set(self, key: str, value: object, comment: str | None = None) -> None:
        """Set a dotted recipe key (replacing what was there)."""
        self.values[key] = value
        if comment:
            self.comments[key] = comment

    def get(self, key: str, default: object = None) -> object:
        """A key's value, or ``default``."""
        return self.values.get(key, default)

    def set_path(self, key: str, text: str, base: Path | None) -> PathValue:
        """Set a path value as the source wrote it; relative paths are relative to ``base``."""
        value = path_value(text, base)
        self.set(key, value)
        return value

    def note(self, kind: NoteKind, key: str, why: str) -> None:
        """Record what could not be carried over (once per kind and key)."""
        if not any(n.kind is kind and n.key == key for n in self.notes):
            self.notes.append(Note(kind, key, why))

    def unknown(self, key: str, value: object, script: str | None = None) -> None:
        """A key kohya does not know: listed, never dropped silently."""
        where = f"kohya's {script}" if script else "the pinned kohya"
        self.note(NoteKind.UNKNOWN, key, f"{where} has no such option (kohya ignores it): {value!r} left out")

    def secret(self, key: str) -> None:
        """A secret found in the source: never written."""
        self.note(
            NoteKind.SECRET,
            key,
            "removed: secrets are never written to a recipe; give it to the tool that needs it "
            "(e.g. an environment variable) when you train",
        )

    def todo(self, key: str, why: str) -> None:
        """Something the recipe needs that the source cannot hold."""
        self.note(NoteKind.TODO, key, why)

    def unrepresentable(self, key: str, why: str) -> None:
        """A source value a recipe cannot say as it is."""
        self.note(NoteKind.UNREPRESENTABLE, key, why)

    def merge(self, later: Imported) -> Imported:
        """This import with ``later``'s values on top (a later source wins), notes of both."""
        merged = Imported(
            source=f"{self.source} + {later.source}",
            values={**self.values, **later.values},
            notes=list(self.notes),
            comments={**self.comments, **later.comments},
            script=later.script or self.script,
        )
        for n in later.notes:
            merged.note(n.kind, n.key, n.why)
        return merged


def path_value(text: str, base: Path | None) -> PathValue:
    """A path as a source wrote it: rooted paths (any system's) kept as written, others joined to ``base``."""
    if is_rooted(text):
        return text
    joined = Path(text) if base is None else base / text
    return Path(os.path.normpath(joined))


def is_rooted(text: str) -> bool:
    """Whether a path names a place without a folder to start from, on POSIX or Windows."""
    windows = PureWindowsPath(text)
    return bool(windows.drive or windows.root) or PurePosixPath(text).is_absolute()


# Option and GUI key names that hold credentials. kohya has wandb_api_key and huggingface_token;
# the GUIs add their own (kohya_ss's huggingface_token, lora-scripts' wandb key).
_SECRET = re.compile(r"(api_?key|token|secret|password|passwd|credential)s?$", re.IGNORECASE)
# Names that match the pattern but hold no secret (kohya's token options are about captions).
_NOT_SECRET = frozenset(
    {
        "keep_tokens",
        "class_tokens",
        "max_token_length",
        "t5xxl_max_token_length",
        "keep_tokens_separator",
        "token_warmup_min",
        "token_warmup_step",
        "shuffle_token",
        "weighted_captions_token",
    }
)


def is_secret(name: str) -> bool:
    """Whether a source key holds a credential (``wandb_api_key``, ``huggingface_token``...)."""
    return name not in _NOT_SECRET and "token_length" not in name and bool(_SECRET.search(name))


def flatten_sections(doc: Mapping[str, object]) -> dict[str, object]:
    """A kohya ``--config_file`` document as one table: kohya merges its sections (KOHYA.md section 4).

    A table at the top level is a section: its keys join the others (a later section's key wins,
    as in kohya's ``read_config_from_file``).
    """
    flat: dict[str, object] = {}
    for key, value in doc.items():
        if isinstance(value, Mapping):
            flat.update({str(k): v for k, v in value.items()})
        else:
            flat[key] = value
    return flat
