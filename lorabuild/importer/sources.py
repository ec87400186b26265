"""Each source file read by its kind, and several sources made one recipe.

- ``.toml``: a kohya ``--config_file`` (or ``--output_config`` dump) or ``--dataset_config``
  (told apart by its ``[[datasets]]``/``[general]`` tables); other tools' TOMLs are tried first by
  the readers in :data:`TOML_READERS`.
- ``.json``: the readers in :data:`JSON_READERS` (other tools' configs).
- ``.sh``/``.bash``, ``.ps1``, ``.bat``/``.cmd``: a script with a kohya training launch
  (:mod:`lorabuild.importer.scripts`).
- ``.safetensors``: a LoRA file's ``ss_*`` metadata (:mod:`lorabuild.importer.header`).

kohya's options from every TOML and script are read together (a config and its dataset config
make one recipe); a header or another tool's config is a recipe of its own. When several sources
set a key, the later one on the command line wins.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lorabuild.importer import gui, lorascripts
from lorabuild.importer import header as header_reader
from lorabuild.importer import scripts as script_reader
from lorabuild.importer.kohya import from_kohya_options
from lorabuild.importer.model import Imported, ImportFailed


@dataclass
class KohyaParts:
    """kohya's options and dataset config gathered from one or more sources, read together.

    Attributes:
        options: The options (a later source's value wins).
        dataset: The ``--dataset_config`` document, or None.
        script: The training script a source names, or None.
        base: The folder relative paths are relative to (the first source's folder).
        sources: The files read, for the recipe's header.
    """

    options: dict[str, object] = field(default_factory=dict)
    dataset: dict[str, object] | None = None
    script: str | None = None
    base: Path | None = None
    sources: list[str] = field(default_factory=list)
    accelerate: dict[str, str | bool] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def add(self, other: KohyaParts) -> None:
        """Fold ``other`` in: its options on top, its dataset config and script when it has them."""
        self.options.update(other.options)
        self.dataset = other.dataset if other.dataset is not None else self.dataset
        self.script = other.script or self.script
        self.base = self.base or other.base
        self.sources.extend(other.sources)
        self.accelerate.update(other.accelerate)
        self.env.update(other.env)


Reader = Callable[[Path, Mapping[str, object]], "Imported | KohyaParts | None"]
"""A reader of another tool's config: the parsed document in, an import out (None: not its format)."""

TOML_READERS: list[Reader] = [lorascripts.read]
"""Readers tried on a TOML before it is read as kohya's own (lora-scripts' formats register here)."""

JSON_READERS: list[Reader] = [gui.read]
"""Readers of JSON configs (the kohya_ss GUI's registers here)."""


def import_sources(paths: Sequence[Path]) -> Imported:
    """One recipe from ``paths`` (see the module's docstring for the kinds).

    Raises:
        ImportFailed: A file cannot be read, or is none of the kinds, or holds no training setup.
    """
    if not paths:
        raise ImportFailed("import", "name at least one source file")
    parts: KohyaParts | None = None
    imports: list[Imported] = []
    for path in paths:
        for found in read_source(path):
            if isinstance(found, KohyaParts):
                if parts is None:
                    parts = found
                else:
                    parts.add(found)
            else:
                imports.append(found)
    result: Imported | None = None
    if parts is not None:
        result = from_kohya_options(
            parts.options,
            parts.dataset,
            script=parts.script,
            source=" + ".join(parts.sources),
            base=parts.base,
        )
        script_reader.accelerate_keys(result, parts.accelerate)
        script_reader.env_keys(result, parts.env)
    for imp in imports:
        result = imp if result is None else result.merge(imp)
    assert result is not None  # every path gave something or raised
    return result


def read_source(path: Path) -> list[Imported | KohyaParts]:
    """What one file holds (a script also brings the config files it names)."""
    name = path.as_posix()
    if not path.is_file():
        raise ImportFailed(name, "no such file" if not path.exists() else "is not a file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return [header_reader.from_header(path)]
    if suffix in script_reader.SHELLS:
        lora_scripts = lorascripts.read_script(path)  # its launch is built by if blocks on its variables
        if lora_scripts is not None:
            return [lora_scripts]
        launch = script_reader.read_script(path)
        return [_launch_parts(path, launch)]
    data = _read_text(path)
    if suffix == ".json":
        return [_json(path, data)]
    if suffix == ".toml":
        return [_toml(path, data)]
    raise ImportFailed(
        name,
        "is not a kind lorabuild imports: a kohya config or dataset config (.toml), a GUI config (.json), "
        "a script (.sh, .ps1, .bat) or a LoRA file (.safetensors)",
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFailed(path.as_posix(), f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _json(path: Path, text: str) -> Imported | KohyaParts:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ImportFailed(path.as_posix(), f"is not JSON: {exc}") from None
    if isinstance(doc, dict):
        for reader in JSON_READERS:
            found = reader(path, doc)
            if found is not None:
                return found
    raise ImportFailed(path.as_posix(), "is JSON, but not a training config lorabuild can import")


def _toml(path: Path, text: str) -> Imported | KohyaParts:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ImportFailed(path.as_posix(), f"is not TOML: {exc}") from None
    for reader in TOML_READERS:
        found = reader(path, doc)
        if found is not None:
            return found
    return kohya_toml(path, doc)


def kohya_toml(path: Path, doc: Mapping[str, object]) -> KohyaParts:
    """A kohya ``--config_file`` or ``--dataset_config`` document."""
    name = path.as_posix()
    if isinstance(doc.get("datasets"), list) or (set(doc) <= {"general", "datasets"} and doc):
        return KohyaParts(dataset=dict(doc), base=path.parent, sources=[name])
    if not doc:
        raise ImportFailed(name, "is an empty TOML file")
    return KohyaParts(options=dict(doc), base=path.parent, sources=[name])


def _launch_parts(path: Path, launch: script_reader.Launch) -> KohyaParts:
    """A script's launch: its flags on top of the config files it names (read relative to the script)."""
    parts = KohyaParts(script=launch.script, base=path.parent, sources=[path.as_posix()])
    for option in ("config_file", "dataset_config"):
        ref = launch.options.get(option)
        if not isinstance(ref, str):
            continue
        file = path.parent / ref if not Path(ref).is_absolute() else Path(ref)
        if option == "config_file" and file.suffix != ".toml":
            file = file.with_name(file.name + ".toml")  # kohya adds .toml (read_config_from_file)
        if not file.is_file():
            raise ImportFailed(path.as_posix(), f"its --{option} {ref} is not here ({file.as_posix()})")
        found = kohya_toml(file, _parse_toml(file))
        if option == "config_file":
            found.options.pop("dataset_config", None)
        parts.add(found)
    flags = {k: v for k, v in launch.options.items() if k not in ("config_file", "dataset_config")}
    parts.options.update(flags)
    parts.accelerate.update(launch.accelerate)
    parts.env.update(launch.env)
    return parts


def _parse_toml(path: Path) -> Mapping[str, object]:
    try:
        return tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ImportFailed(path.as_posix(), f"is not TOML: {exc}") from None
