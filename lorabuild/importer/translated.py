"""A config of another tool translated into kohya's option names: what the GUI readers hand on.

The readers of other tools' configs (:mod:`~lorabuild.importer.gui` for bmaltais/kohya_ss,
:mod:`~lorabuild.importer.lorascripts` for Akegarasu/lora-scripts) do not write recipe keys
themselves: they translate the tool's own names and units into the options kohya's training script
would have received (``--config_file`` keys) and a kohya ``--dataset_config`` document, and the
one mapping from kohya's options to a recipe does the rest. What the tool holds that kohya never
sees (its launch settings, inline sample prompts) goes straight to recipe keys, and every key of
the source file is accounted for in :attr:`Translated.accounted`, so that a test can prove none
was dropped silently.

Also here, shared by the readers: the parts of a kohya command line (:func:`parse_flags`), the
DreamBooth folder layout (:func:`dreambooth_subsets`), kohya's sample-prompt lines
(:func:`prompt_settings`) and what counts as a secret (:func:`is_secret`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lorabuild.kohya import options as kohya_options

NoteKind = Literal["unknown to kohya", "not representable", "secret removed", "TODO", "tool only"]


@dataclass(frozen=True)
class Note:
    """Something of the source that the recipe does not carry, and why.

    Attributes:
        key: The source's own key (``wandb_api_key``, ``additional_parameters: --foo``).
        kind: What kind of loss it is.
        message: One sentence for the user.
    """

    key: str
    kind: NoteKind
    message: str


@dataclass
class Translated:
    """A config translated into kohya's terms, before it becomes a recipe.

    Attributes:
        source: The file read.
        tool: The tool that wrote it, as messages name it (``kohya_ss GUI``).
        script: kohya's training script it would run (``sdxl_train_network.py``).
        options: kohya ``--config_file`` options: option name → value, as kohya would read them.
        dataset: A kohya ``--dataset_config`` document (``datasets[].subsets[]``), or None when the
            source names no training images.
        recipe: Recipe keys set directly (dotted: ``evaluate.prompts``, ``launch.num_cpu_threads_per_process``).
        notes: What the recipe cannot carry.
        accounted: Every key of the source → what became of it (a kohya option, a recipe key, a note).
    """

    source: Path
    tool: str
    script: str
    options: dict[str, object] = field(default_factory=dict)
    dataset: dict[str, object] | None = None
    recipe: dict[str, object] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    accounted: dict[str, str] = field(default_factory=dict)

    def option(self, source_key: str, name: str, value: object) -> None:
        """Set kohya option ``name`` from the source's ``source_key``."""
        self.options[name] = value
        self.accounted.setdefault(source_key, f"kohya {name}")

    def set(self, source_key: str, recipe_key: str, value: object) -> None:
        """Set recipe key ``recipe_key`` directly from the source's ``source_key``."""
        self.recipe[recipe_key] = value
        self.accounted.setdefault(source_key, recipe_key)

    def note(self, key: str, kind: NoteKind, message: str) -> None:
        """Record that ``key`` is not carried over (``key`` is accounted for by the note)."""
        self.notes.append(Note(key, kind, message))
        self.accounted.setdefault(key.split(":", 1)[0], f"note: {kind}")

    def skip(self, key: str, why: str) -> None:
        """Account for ``key`` that means nothing to kohya (unset, a default, the tool's own state)."""
        self.accounted.setdefault(key, why)


class NotAConfigError(ValueError):
    """The file is not a config of the tool its reader reads; the message names the file."""


# --- secrets -------------------------------------------------------------------------------------

_SECRET = re.compile(r"(token|api_?key|secret|password|passwd|credential)", re.IGNORECASE)


def is_secret(name: str) -> bool:
    """Whether an option or key name holds a credential (``wandb_api_key``, ``huggingface_token``).

    ``max_token_length``-like names are not secrets: a token *count* is not a credential.
    """
    if re.search(r"token_(length|warmup|count)|tokens?_separator|keep_tokens|class_tokens", name):
        return False
    return bool(_SECRET.search(name))


# --- kohya's command line ------------------------------------------------------------------------


@dataclass(frozen=True)
class Flag:
    """One option of a kohya command line: ``--name`` with its values (none for a flag)."""

    name: str
    values: tuple[str, ...]
    text: str  # as written, for messages


def split_flags(text: str) -> list[Flag]:
    """``--name value --flag --list a b`` (POSIX shell words) as flags with their values.

    Raises:
        ValueError: The text does not split into shell words (an unclosed quote), or a value
            comes before any ``--name``.
    """
    words = shlex.split(text, posix=True)
    flags: list[Flag] = []
    name: str | None = None
    values: list[str] = []
    written: list[str] = []

    def close() -> None:
        if name is not None:
            flags.append(Flag(name, tuple(values), " ".join(written)))

    for word in words:
        if word.startswith("--") and len(word) > 2:
            close()
            head, eq, tail = word[2:].partition("=")
            name, values, written = head.replace("-", "_"), ([tail] if eq else []), [word]
        elif name is None:
            raise ValueError(f"{word!r} is not an option: each item must start with --")
        else:
            values.append(word)
            written.append(shlex.quote(word))
    close()
    return flags


def flag_value(script: str, flag: Flag) -> object:
    """The value kohya's parser gives ``flag`` (typed by the option's argparse type).

    Raises:
        KeyError: kohya's ``script`` has no such option.
        ValueError: The values do not fit the option (a flag with a value, a number that is not one).
    """
    spec = kohya_options.options(script)[flag.name]
    if spec.kind == "flag":
        if flag.values:
            raise ValueError(f"--{flag.name} is a flag and takes no value (got {' '.join(flag.values)!r})")
        return True
    if spec.kind == "list":
        return [_typed(spec.type, v) for v in flag.values]
    if len(flag.values) != 1:
        raise ValueError(f"--{flag.name} takes one value (got {len(flag.values)})")
    return _typed(spec.type, flag.values[0])


def _typed(kind: str, text: str) -> object:
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "int_or_float":
        return float(text) if any(c in text for c in ".eE%") else int(text)
    return text


def coerce(script: str, name: str, value: object) -> object:
    """A value as kohya's argparse type would have made it: GUIs save numbers as text ("1234").

    Values that do not convert are left as they are (the recipe's check then names them).
    """
    spec = kohya_options.options(script).get(name)
    if spec is None or spec.kind != "value":
        return value
    if spec.type == "int" and isinstance(value, float) and value.is_integer():
        return int(value)  # the GUI's int(...) of a number field saved as 4.0
    if not isinstance(value, str):
        return value
    try:
        return _typed(spec.type, value.strip())
    except ValueError:
        return value


# --- DreamBooth folders --------------------------------------------------------------------------

_REPEATS_FOLDER = re.compile(r"^(\d+)_(.*)$")


def dreambooth_subsets(folder: str, *, is_reg: bool, key: str, into: Translated) -> list[dict[str, object]]:
    """kohya's subsets for a ``--train_data_dir`` / ``--reg_data_dir`` parent folder.

    kohya trains each ``N_name`` subfolder with ``N`` repeats and ``name`` as its class tokens
    (train_util.DreamBoothDataset); other subfolders are skipped. A folder that is not on this
    machine is kept as one subset with a TODO note: its repeats and trigger live in folder names
    that cannot be read here.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        into.note(
            key,
            "TODO",
            f"{folder!r} is not a folder on this machine: kohya reads repeats and trigger from its N_name "
            "subfolders, so dataset.subsets holds the folder itself; point each subset at one N_name "
            "subfolder and set its repeats and trigger",
        )
        subset: dict[str, object] = {"image_dir": folder}
        if is_reg:
            subset["is_reg"] = True
        return [subset]
    subsets: list[dict[str, object]] = []
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        match = _REPEATS_FOLDER.match(child.name)
        if not match:
            into.note(
                f"{key}: {child.name}",
                "not representable",
                f"{child} is not named N_name: kohya skips it, and so does the recipe",
            )
            continue
        subset = {"image_dir": str(child), "num_repeats": int(match.group(1))}
        if match.group(2).strip():
            subset["class_tokens"] = match.group(2).strip()
        if is_reg:
            subset["is_reg"] = True
        subsets.append(subset)
    if not subsets:
        into.note(key, "TODO", f"{folder} has no N_name subfolder: kohya would train nothing from it")
    return subsets


# --- sample prompts ------------------------------------------------------------------------------

# kohya's per-prompt options (library/train_util.py line_to_prompt_dict) and the [evaluate] key each
# sets when every prompt agrees on it.
_PROMPT_OPTIONS = {"n": "negative_prompt", "s": "steps", "l": "cfg_scale", "w": "width", "h": "height"}


def prompt_settings(text: str, key: str, into: Translated) -> None:
    """Inline kohya prompt lines (``a cat --w 832 --h 1216 --s 20 --l 4 --d 42 --n ugly``) → ``[evaluate]``.

    The prompts become ``evaluate.prompts``; an option every line gives the same value becomes the
    ``[evaluate]`` setting, ``--d`` seeds ``evaluate.seeds``; anything else is noted.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        into.skip(key, "empty")
        return
    prompts: list[str] = []
    per_option: dict[str, list[str]] = {}
    seeds: list[int] = []
    for line in lines:
        parts = re.split(r"\s+--(?=[a-z]+\b)", " " + line)
        prompts.append(parts[0].strip())
        for part in parts[1:]:
            letter, _, value = part.partition(" ")
            value = value.strip()
            if letter == "d" and value.isdigit():
                seeds.append(int(value))
            elif letter in _PROMPT_OPTIONS:
                per_option.setdefault(letter, []).append(value)
            else:
                into.note(key, "not representable", f"the prompt option --{letter} {value} has no recipe key")
    into.set(key, "evaluate.prompts", prompts)
    for letter, values in per_option.items():
        target = f"evaluate.{_PROMPT_OPTIONS[letter]}"
        if len(set(values)) > 1 or len(values) < len(lines):
            into.note(key, "not representable", f"--{letter} differs between prompts; {target} is one value")
            continue
        value = values[0]
        into.recipe[target] = value if letter == "n" else _number(value)
    if seeds:
        into.recipe["evaluate.seeds"] = sorted(set(seeds))


def _number(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def known_options(script: str) -> Mapping[str, kohya_options.OptionSpec]:
    """kohya's options for ``script`` (a shorthand for the readers)."""
    return kohya_options.options(script)
