"""Another tool's config translated into kohya's option names: what the GUI readers hand on.

The readers of other tools' configs (:mod:`~lorabuild.importer.gui` for bmaltais/kohya_ss,
:mod:`~lorabuild.importer.lorascripts` for Akegarasu/lora-scripts) write no recipe keys for what
kohya has an option for: they translate the tool's own names and units into the options kohya's
training script would have received (``--config_file`` keys), and
:func:`~lorabuild.importer.kohya.from_kohya_options`, the one mapping from kohya's options to a
recipe, does the rest (:func:`to_imported`). What the tool holds that kohya never sees (its launch
settings, inline sample prompts) goes straight to recipe keys. Every key of the source file is
accounted for in :attr:`Translated.accounted`, so that a test can prove that none was dropped
silently.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from lorabuild.importer import dataset as dataset_import
from lorabuild.importer.kohya import from_kohya_options
from lorabuild.importer.model import Imported, ImportFailed, Note, NoteKind, is_secret
from lorabuild.importer.scripts import parse_flags
from lorabuild.importer.write import recipe_document
from lorabuild.kohya import options as kohya_options
from lorabuild.recipe.load import problems_from_validation
from lorabuild.recipe.schema import Recipe


@dataclass
class Translated:
    """A config translated into kohya's terms, before it becomes a recipe.

    Attributes:
        source: The file read.
        script: kohya's training script it would run (``sdxl_train_network.py``).
        base: The folder the config's relative paths are relative to (None: the current folder).
        options: kohya ``--config_file`` options: option name → value, as kohya would read them
            (``train_data_dir`` and ``reg_data_dir`` included: their ``N_name`` folders are the subsets).
        prompts: Inline sample-prompt lines (kohya's prompt syntax), or None.
        recipe: Recipe keys set directly (dotted: ``launch.num_cpu_threads_per_process``).
        notes: What the recipe cannot carry, found while translating.
        accounted: Every key of the source → what became of it (a kohya option, a recipe key, a note).
    """

    source: Path
    script: str
    base: Path | None = None
    options: dict[str, object] = field(default_factory=dict)
    prompts: str | None = None
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

    def note(self, kind: NoteKind, key: str, why: str) -> None:
        """Record that ``key`` is not carried over (a ``key: detail`` note accounts for ``key``)."""
        self.notes.append(Note(kind, key, why))
        self.accounted.setdefault(key.split(":", 1)[0], f"note: {kind.value}")

    def secret(self, key: str, value: object) -> None:
        """A credential: never carried; said so when it holds one."""
        if value in (None, "", False):
            self.skip(key, "secret, empty")
        else:
            self.note(
                NoteKind.SECRET,
                key,
                "removed: secrets are never written to a recipe; give it to the tool that needs it "
                "(e.g. an environment variable) when you train",
            )

    def skip(self, key: str, why: str) -> None:
        """Account for ``key``, which means nothing to kohya (unset, a default, the tool's own state)."""
        self.accounted.setdefault(key, why)

    def flags(self, key: str, text: str) -> None:
        """Raw kohya command-line flags (``--name value …``) as options: they win over the config's."""
        try:
            words = shlex.split(text, posix=True)
        except ValueError as exc:
            self.note(NoteKind.UNREPRESENTABLE, key, f"{text!r} does not split into shell words ({exc})")
            return
        self.skip(key, "parsed as kohya options")
        for name, value in parse_flags(words, self.script).items():
            if is_secret(name):
                self.secret(f"{key}: --{name}", value)
            else:
                self.options[name] = value


def to_imported(translated: Translated) -> Imported:
    """The recipe: kohya's options through :func:`from_kohya_options`, then the tool's own keys and notes."""
    imp = from_kohya_options(
        translated.options,
        None,
        script=translated.script,
        source=translated.source.as_posix(),
        base=translated.base,
    )
    for key, value in translated.recipe.items():
        imp.set(key, value)
    if translated.prompts is not None:
        dataset_import.read_prompt_lines(imp, translated.prompts, "sample_prompts")
    for note in translated.notes:
        imp.note(note.kind, note.key, note.why)
    drop_refused(imp)
    return imp


def drop_refused(imp: Imported) -> None:
    """Take out every value the recipe schema refuses, each with a note: the recipe keeps lorabuild's default.

    GUIs save values kohya itself would stop on or that a recipe cannot hold (kohya_ss's
    ``bucket_reso_steps = 1``, LyCORIS's "full rank" ``network_dim = 100000``); an import writes a
    recipe that loads, and says what it left out.
    """
    for _ in range(3):  # a refused value can hide another in the same table; a few passes suffice
        try:
            Recipe.model_validate(
                recipe_document(imp, Path.cwd() / "recipe.toml"), context={"base": Path.cwd()}
            )
            return
        except ValidationError as exc:
            refused = [p for p in problems_from_validation(exc) if p.key in imp.values]
        if not refused:
            return  # what is left (a missing key, a subset) is the writer's to report
        for problem in refused:
            value = imp.values.pop(problem.key)
            imp.comments.pop(problem.key, None)
            imp.unrepresentable(
                problem.key, f"{value!r} left out, lorabuild's default applies: {problem.message}"
            )


def coerce(script: str, name: str, value: object) -> object:
    """A value as kohya's argparse type would have made it: GUIs save numbers as text ("1234") or 4.0.

    Values that do not convert are left as they are (the recipe's check then names them).
    """
    spec = kohya_options.options(script).get(name)
    if spec is None or spec.kind != "value":
        return value
    if spec.type == "int" and isinstance(value, float) and value.is_integer():
        return int(value)  # the GUI's int(...) of a number field saved as 4.0
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if spec.type == "int":
            return int(text)
        if spec.type == "float":
            return float(text)
        if spec.type == "int_or_float":  # lr_warmup_steps: steps, or a fraction of them
            return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return value
    return value


def refuse(path: Path, message: str) -> ImportFailed:
    """The error for a file that is not the config its reader reads (it names the file)."""
    return ImportFailed(path.as_posix(), message)
