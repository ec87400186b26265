"""The options kohya sd-scripts accepts, and checks of values against them.

The facts come from ``lorabuild/data/kohya_options.json``, which ``tools/extract_kohya_options.py``
extracts from the pinned kohya checkout (its argparse parsers and its dataset-config voluptuous
schema); the file is read once, on first use.

kohya validates nothing in a ``--config_file`` TOML: unknown keys are ignored, values skip argparse's
type conversion and ``choices`` (KOHYA.md section 4). :func:`check_config_value` is the check kohya
leaves out. :func:`check_dataset_config` reports every problem kohya's ``ConfigSanitizer`` would
raise on a ``--dataset_config`` document, where kohya stops at the first.

Why one module: both checks read one data file through one private model of it (the parsed type
expressions, :class:`_KohyaData`) and word their messages with the same helpers (``_describe``,
``_type_message``, ``_toml``); split in two, that private vocabulary would become a public one
with a single user.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Literal, TypeAlias, cast

from lorabuild.problems import did_you_mean

# Every script the data file covers, in the extractor's order (tools/extract_kohya_options.py
# SCRIPTS): each family's trainer and image generator at the pinned commit. kohya's FLUX.1 scripts
# train and render Chroma too (--model_type chroma).
SCRIPTS = (
    "train_network.py",
    "sdxl_train_network.py",
    "gen_img.py",
    "flux_train_network.py",
    "flux_minimal_inference.py",
    "sd3_train_network.py",
    "sd3_minimal_inference.py",
    "lumina_train_network.py",
    "lumina_minimal_inference.py",
    "hunyuan_image_train_network.py",
    "hunyuan_image_minimal_inference.py",
    "anima_train_network.py",
    "anima_minimal_inference.py",
)

OptionKind = Literal["flag", "value", "list"]
JsonScalar: TypeAlias = bool | int | float | str | None
OptionDefault: TypeAlias = JsonScalar | tuple[JsonScalar, ...]


@dataclass(frozen=True)
class OptionSpec:
    """One option of a kohya script, as its argparse parser defines it.

    Attributes:
        name: The argparse ``dest``: the key in a ``--config_file`` TOML (``network_dim``).
        kind: ``flag`` (store_true), ``value`` (one value) or ``list`` (``nargs``: ``*``, ``+``, 2).
        type: ``bool`` for flags, else the converter: ``str``, ``int``, ``float``, ``path``, or a
            custom converter's name (``int_or_float`` for ``lr_warmup_steps``/``lr_decay_steps``).
            For lists, the type of each item.
        default: argparse's default (lists as tuples).
        choices: The values argparse allows on the command line, or ``None`` for any.
        option_strings: The command-line spellings (``("--network_dim",)``).
        nargs: argparse's ``nargs`` for list options, else ``None``.
    """

    name: str
    kind: OptionKind
    type: str
    default: OptionDefault
    choices: tuple[JsonScalar, ...] | None
    option_strings: tuple[str, ...] = ()
    nargs: int | str | None = None


# A type expression from the data file (``int``, ``float|int``, ``int|[int,int]``), parsed into
# alternatives; an alternative is a scalar type name or a fixed-length sequence of them.
_Alternative: TypeAlias = str | tuple[str, ...]
_TypeExpr: TypeAlias = tuple[_Alternative, ...]
_SCALAR_TYPES = frozenset({"int", "float", "bool", "str", "dict", "null"})


@dataclass(frozen=True)
class _DatasetKind:
    dataset: Mapping[str, _TypeExpr]
    subset: Mapping[str, _TypeExpr]
    subset_required: tuple[str, ...]


@dataclass(frozen=True)
class _Script:
    reads_config_file: bool
    options: Mapping[str, OptionSpec]


@dataclass(frozen=True)
class _KohyaData:
    kohya_commit: str
    raw_scripts: Mapping[str, Mapping[str, object]]  # parsed script by script, on first use (_script)
    top_level: tuple[str, ...]
    general: Mapping[str, _TypeExpr]
    dreambooth: _DatasetKind
    fine_tuning: _DatasetKind
    argparse_checked: Mapping[str, _TypeExpr]


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


def _parse_type(text: str) -> _TypeExpr:
    alternatives: list[_Alternative] = []
    for part in text.split("|"):
        if part.startswith("[") and part.endswith("]"):
            items = tuple(part[1:-1].split(","))
            if not set(items) <= _SCALAR_TYPES:
                raise ValueError(f"kohya_options.json: bad type expression {text!r}")
            alternatives.append(items)
        elif part in _SCALAR_TYPES:
            alternatives.append(part)
        else:
            raise ValueError(f"kohya_options.json: bad type expression {text!r}")
    return tuple(alternatives)


def _type_map(raw: object) -> Mapping[str, _TypeExpr]:
    table = cast(dict[str, str], raw)
    return MappingProxyType({key: _parse_type(expr) for key, expr in table.items()})


def _scalar_tuple(raw: object) -> tuple[JsonScalar, ...]:
    return tuple(cast(list[JsonScalar], raw))


def _option(name: str, raw: Mapping[str, object]) -> OptionSpec:
    default = raw["default"]
    choices = raw["choices"]
    return OptionSpec(
        name=name,
        kind=cast(OptionKind, raw["kind"]),
        type=cast(str, raw["type"]),
        default=_scalar_tuple(default) if isinstance(default, list) else cast(JsonScalar, default),
        choices=None if choices is None else _scalar_tuple(choices),
        option_strings=tuple(cast(list[str], raw["option_strings"])),
        nargs=cast(int | str | None, raw["nargs"]),
    )


def _dataset_kind(raw: Mapping[str, object]) -> _DatasetKind:
    return _DatasetKind(
        dataset=_type_map(raw["dataset"]),
        subset=_type_map(raw["subset"]),
        subset_required=tuple(cast(list[str], raw["subset_required"])),
    )


@functools.cache
def _data() -> _KohyaData:
    text = resources.files("lorabuild").joinpath("data/kohya_options.json").read_text(encoding="utf-8")
    raw = cast(dict[str, dict[str, object]], json.loads(text))
    dataset_config = raw["dataset_config"]
    return _KohyaData(
        kohya_commit=cast(str, raw["kohya_commit"]),
        raw_scripts=MappingProxyType(cast(dict[str, dict[str, object]], raw["scripts"])),
        top_level=tuple(cast(list[str], dataset_config["top_level"])),
        general=_type_map(dataset_config["general"]),
        dreambooth=_dataset_kind(cast(dict[str, object], dataset_config["dreambooth"])),
        fine_tuning=_dataset_kind(cast(dict[str, object], dataset_config["fine_tuning"])),
        argparse_checked=_type_map(dataset_config["argparse_checked"]),
    )


@functools.cache
def _script(script: str) -> _Script:
    try:
        entry = _data().raw_scripts[script]
    except KeyError:
        raise ValueError(f"no kohya options recorded for {script!r}; known: {', '.join(SCRIPTS)}") from None
    options = cast(dict[str, dict[str, object]], entry["options"])
    return _Script(
        reads_config_file=bool(entry["reads_config_file"]),
        options=MappingProxyType({name: _option(name, spec) for name, spec in options.items()}),
    )


def kohya_commit() -> str:
    """The kohya sd-scripts commit the option data was extracted from."""
    return _data().kohya_commit


def options(script: str) -> Mapping[str, OptionSpec]:
    """The options a kohya script accepts, by argparse ``dest`` name.

    Args:
        script: One of :data:`SCRIPTS` (``train_network.py``, ``flux_minimal_inference.py``...).

    Returns:
        A read-only mapping from option name to its :class:`OptionSpec`.

    Raises:
        ValueError: ``script`` is not one of the scripts the data covers.
    """
    return _script(script).options


# ------------------------------------------------------------------------------------------
# Type expressions, checked the way voluptuous checks them (isinstance; bool is an int)
# ------------------------------------------------------------------------------------------

_SCALAR_CLASSES: Mapping[str, type | tuple[type, ...]] = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "dict": dict,
    "null": type(None),
}
_SCALAR_WORDS = {
    "int": ("an integer", "integers"),
    "float": ("a float written with a decimal point", "floats written with a decimal point"),
    "bool": ("true or false", "booleans"),
    "str": ("a string", "strings"),
    "dict": ("a table", "tables"),
}


def _matches(expr: _TypeExpr, value: object) -> bool:
    for alternative in expr:
        if isinstance(alternative, str):
            if isinstance(value, _SCALAR_CLASSES[alternative]):
                return True
        elif (
            isinstance(value, list | tuple)
            and len(value) == len(alternative)
            and all(isinstance(v, _SCALAR_CLASSES[t]) for v, t in zip(value, alternative, strict=True))
        ):
            return True
    return False


def _describe(expr: _TypeExpr) -> str:
    words: list[str] = []
    scalars = {a for a in expr if isinstance(a, str)} - {"null"}
    if {"int", "float"} <= scalars:
        words.append("a number")
        scalars -= {"int", "float"}
    for alternative in expr:
        if isinstance(alternative, str):
            if alternative in scalars:
                words.append(_SCALAR_WORDS[alternative][0])
        elif len(set(alternative)) == 1:
            words.append(f"an array of {len(alternative)} {_SCALAR_WORDS[alternative[0]][1]}")
        else:
            words.append("an array of " + ", ".join(_SCALAR_WORDS[t][0] for t in alternative))
    return " or ".join(words)


def _as_float_literal(value: object) -> str | None:
    """How to write an int (or array of ints) as float literals, for the hint; None if not ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        return repr(float(value))
    if isinstance(value, list | tuple) and value and all(isinstance(v, int | float) for v in value):
        return "[" + ", ".join(repr(float(v)) for v in value) + "]"
    return None


def _type_message(expr: _TypeExpr, value: object) -> str:
    message = f"must be {_describe(expr)} (got {_toml(value)})"
    floats = _as_float_literal(value)
    if floats is not None and _matches(expr, _float_version(value)):
        message += f"; write {floats}, kohya rejects integers here"
    return message


def _float_version(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, list | tuple):
        return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


def _toml(value: object) -> str:
    """A value as it would look in TOML, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------------
# --config_file values
# ------------------------------------------------------------------------------------------

# kohya converts these two from strings itself (train_util.prepare_dataset_args), after the config
# file is read, so in a config file they must be strings: an int crashes with AttributeError.
_STRING_PARSED = frozenset({"resolution", "face_crop_aug_range"})
# max_token_length: argparse allows 150 and 225; 75 is CLIP's own length, which the tokenizer
# treats exactly like unset (strategy_sd.py:24 lists None, 75, 150, 225).
_MAX_TOKEN_LENGTHS = (75, 150, 225)


def check_config_value(script: str, name: str, value: object) -> str | None:
    """Check one ``name = value`` entry of a kohya ``--config_file`` TOML.

    kohya reads a config file without type conversion, ``choices`` or unknown-key checks, so a wrong
    value surfaces late, or never (a misspelt key is ignored). This returns what kohya would need.

    Args:
        script: The kohya script the config file is for (see :data:`SCRIPTS`). For the image
            generators (``gen_img.py``, ``*_minimal_inference.py``), which have no ``--config_file``,
            the same checks apply to values given on their command line.
        name: The option's argparse ``dest`` name, as written in the TOML.
        value: The value as a TOML parser returns it.

    Returns:
        ``None`` if kohya accepts the value and reads it as intended, else one sentence saying what
        is wrong and how to fix it.

    Raises:
        ValueError: ``script`` is not one of the scripts the data covers.
    """
    script_data = _script(script)
    spec = script_data.options.get(name)
    if spec is None:
        return _unknown_option(script, name)
    if value is None:
        return f"'{name}' has no value; leave it out to use kohya's default."
    if spec.kind == "flag":
        return (
            None
            if isinstance(value, bool)
            else f"'{name}' is a flag and must be true or false (got {_toml(value)})."
        )
    if spec.kind == "list":
        return _check_list(spec, value)
    if script_data.reads_config_file:
        if name in _STRING_PARSED:
            return _check_string_parsed(name, value)
        if spec.type == "int_or_float":
            return _check_steps_or_ratio(name, value)
    message = _check_scalar(spec, value)
    if message is None and script_data.reads_config_file and name in _data().argparse_checked:
        # kohya checks dataset-related options with its dataset-config schema (strict isinstance).
        expr = _data().argparse_checked[name]
        if not _matches(expr, value):
            message = f"'{name}' {_type_message(expr, value)}."
    if message is None:
        message = _check_choices(spec, value)
    return message


def _unknown_option(script: str, name: str) -> str:
    data = _data()
    others = [other for other in SCRIPTS if other in data.raw_scripts and name in _script(other).options]
    dataset_keys = data.general.keys() | data.dreambooth.subset.keys() | data.fine_tuning.subset.keys()
    if others:
        hint = f" (it is an option of {_some_scripts(others)})"
    elif name in dataset_keys:
        hint = " (it is a dataset-config key: set it in the --dataset_config TOML)"
    else:
        hint = did_you_mean(name, _script(script).options)
    ignored = "; kohya silently ignores unknown config keys" if _script(script).reads_config_file else ""
    return f"'{name}' is not an option of {script}{hint}{ignored}."


def _some_scripts(scripts: list[str]) -> str:
    """``a``, ``a and b``, ``a, b, c and d``; past four, ``a, b, c and 3 more`` (the data has 13)."""
    if len(scripts) > 4:
        return f"{', '.join(scripts[:3])} and {len(scripts) - 3} more"
    if len(scripts) == 1:
        return scripts[0]
    return f"{', '.join(scripts[:-1])} and {scripts[-1]}"


def _check_scalar(spec: OptionSpec, value: object) -> str | None:
    name = spec.name
    if spec.type == "int":
        if not _is_int(value):
            return f"'{name}' must be an integer (got {_toml(value)})."
    elif spec.type in ("float", "int_or_float"):
        if not _is_number(value):
            return f"'{name}' must be a number (got {_toml(value)})."
    elif spec.type in ("str", "path"):
        if not isinstance(value, str):
            return f"'{name}' must be a string (got {_toml(value)}); quote it."
    else:  # a converter this module does not know: the data file is newer than the code
        return f"'{name}' has kohya type '{spec.type}', which lorabuild cannot check yet."
    return None


def _check_choices(spec: OptionSpec, value: object) -> str | None:
    if spec.name == "max_token_length":
        if value in _MAX_TOKEN_LENGTHS:
            return None
        return f"'max_token_length' must be 75 (the default), 150 or 225 (got {_toml(value)})."
    if spec.choices is None or value in spec.choices:
        return None
    allowed = ", ".join(_toml(c) for c in spec.choices if c is not None)
    hint = did_you_mean(str(value), _names(spec))
    return f"'{spec.name}' must be one of {allowed} (got {_toml(value)}){hint}."


def _names(spec: OptionSpec) -> list[str]:
    return [str(c) for c in spec.choices or () if c is not None]


def _check_list(spec: OptionSpec, value: object) -> str | None:
    name = spec.name
    if name == "text_encoder_lr" and _is_number(value):
        return None  # train_network.py takes a single number here too ("toml backward compatibility")
    if not isinstance(value, list | tuple):
        example = '["conv_dim=4", "conv_alpha=1"]' if spec.type == "str" else "[0.5, 1.0]"
        why = "; kohya would iterate the string character by character" if isinstance(value, str) else ""
        return f"'{name}' must be an array like {example} (got {_toml(value)}){why}."
    if isinstance(spec.nargs, int) and len(value) != spec.nargs:
        return f"'{name}' must be an array of exactly {spec.nargs} items (got {len(value)})."
    for index, item in enumerate(value):
        item_spec = OptionSpec(f"{name}[{index}]", "value", spec.type, None, spec.choices)
        message = _check_scalar(item_spec, item) or _check_choices(item_spec, item)
        if message is not None:
            return message
    return None


def _check_string_parsed(name: str, value: object) -> str | None:
    if name == "resolution":
        example = 'write "512" or "768,512"'
        if not isinstance(value, str):
            return f"'resolution' must be a string in a config file, {example} (got {_toml(value)})."
        parts = value.split(",")
        if len(parts) > 2 or not all(_parses(int, p) for p in parts):
            return (
                f"'resolution' must be one or two integers joined by a comma, {example} (got {_toml(value)})."
            )
        return None
    example = 'write "2.0,4.0"'
    if not isinstance(value, str):
        return f"'face_crop_aug_range' must be a string in a config file, {example} (got {_toml(value)})."
    parts = value.split(",")
    if len(parts) != 2 or not all(_parses(float, p) for p in parts) or float(parts[0]) > float(parts[1]):
        return f"'face_crop_aug_range' must be 'low,high' with low <= high, {example} (got {_toml(value)})."
    return None


def _parses(kind: type[int] | type[float], text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _check_steps_or_ratio(name: str, value: object) -> str | None:
    # train_util.get_scheduler_fix: a float is a fraction of the total steps, anything else is
    # used as a step count. The "N%" form is parsed only on the command line.
    if _is_int(value):
        return None
    if isinstance(value, float):
        if value < 1:
            return None
        return (
            f"'{name}' = {value!r} would be read as {value!r} times the total steps; "
            f"write the step count as an integer ({int(value)}) or a fraction below 1."
        )
    if isinstance(value, str) and value.endswith("%") and _parses(float, value[:-1]):
        fraction = float(value[:-1]) / 100
        got = _toml(value)
        return (
            f"'{name}' = {got} is understood only on the command line; in a config file write {fraction!r}."
        )
    got = _toml(value)
    return f"'{name}' must be an integer step count or a fraction below 1 of the total steps (got {got})."


# ------------------------------------------------------------------------------------------
# --dataset_config documents
# ------------------------------------------------------------------------------------------


def check_dataset_config(doc: Mapping[str, object]) -> list[str]:
    """Check a whole kohya ``--dataset_config`` document against kohya's dataset-config schema.

    Mirrors ``ConfigSanitizer(support_dreambooth=True, support_finetuning=True,
    support_controlnet=False, support_dropout=True)`` as ``train_network.py`` builds it: unknown or
    misplaced keys, missing required keys and wrong types (strict: an integer where a float is
    required is an error; ``true`` passes as an integer, as in kohya) are all reported.

    Args:
        doc: The parsed TOML (or JSON) document.

    Returns:
        Every problem as ``key.path: message`` (``datasets[0].subsets[0].num_repeats: ...``);
        empty when kohya accepts the document.
    """
    data = _data()
    problems: list[str] = []
    for key, value in doc.items():
        if key == "general":
            if not isinstance(value, dict):
                problems.append("general: must be a table ([general]).")
            else:
                problems += _check_table(value, "general", data.general, {}, "[general]")
        elif key == "datasets":
            if not isinstance(value, list):
                problems.append("datasets: must be an array of tables; write [[datasets]], not [datasets].")
            else:
                for index, dataset in enumerate(value):
                    problems += _check_dataset(dataset, f"datasets[{index}]")
        else:
            hint = did_you_mean(key, data.top_level)
            problems.append(f"{key}: only [general] and [[datasets]] may be at the top level{hint}.")
    return problems


def _check_dataset(dataset: object, path: str) -> list[str]:
    data = _data()
    if not isinstance(dataset, dict):
        return [f"{path}: must be a table ([[datasets]])."]
    subsets = dataset.get("subsets", [])
    problems: list[str] = []
    # kohya picks the schema from the subsets (config_util.validate_flex_dataset): fine-tuning if
    # every subset has metadata_file (so also when there are none), DreamBooth if none has.
    subset_list: list[object] = subsets if isinstance(subsets, list) else []
    with_metadata = [isinstance(s, dict) and "metadata_file" in s for s in subset_list]
    if any(with_metadata) and not all(with_metadata):
        problems.append(
            f"{path}: mixes DreamBooth subsets (image_dir) and fine-tuning subsets (metadata_file); "
            "split them into separate [[datasets]]."
        )
    fine_tuning = isinstance(subsets, list) and all(with_metadata)
    kind, other = (data.fine_tuning, data.dreambooth) if fine_tuning else (data.dreambooth, data.fine_tuning)
    table = {k: v for k, v in dataset.items() if k != "subsets"}
    problems += _check_table(table, path, kind.dataset, other.dataset, _level_name(kind, "[[datasets]]"))
    if not isinstance(subsets, list):
        problems.append(f"{path}.subsets: must be an array of tables; write [[datasets.subsets]].")
    for index, subset in enumerate(subset_list):
        subset_path = f"{path}.subsets[{index}]"
        if not isinstance(subset, dict):
            problems.append(f"{subset_path}: must be a table ([[datasets.subsets]]).")
            continue
        ft_subset = "metadata_file" in subset
        mine, theirs = (
            (data.fine_tuning, data.dreambooth) if ft_subset else (data.dreambooth, data.fine_tuning)
        )
        for required in mine.subset_required:
            if required not in subset:
                problems.append(
                    f"{subset_path}.{required}: is missing; {_level_name(mine, 'subset')} must set it."
                )
        problems += _check_table(subset, subset_path, mine.subset, theirs.subset, _level_name(mine, "subset"))
    return problems


def _level_name(kind: _DatasetKind, level: str) -> str:
    if kind is _data().fine_tuning:
        return f"a fine-tuning {level} (one with metadata_file)"
    return f"a DreamBooth {level} (one without metadata_file)"


def _check_table(
    table: Mapping[str, object],
    path: str,
    schema: Mapping[str, _TypeExpr],
    other_kind: Mapping[str, _TypeExpr],
    where: str,
) -> list[str]:
    problems: list[str] = []
    for key, value in table.items():
        expr = schema.get(key)
        if expr is None:
            problems.append(f"{path}.{key}: {_misplaced(key, schema, other_kind, where)}")
        elif not _matches(expr, value):
            problems.append(f"{path}.{key}: {_type_message(expr, value)}.")
    return problems


def _misplaced(
    key: str, schema: Mapping[str, _TypeExpr], other_kind: Mapping[str, _TypeExpr], where: str
) -> str:
    """Why ``key`` is not allowed here, and where it belongs."""
    data = _data()
    subset_keys = data.dreambooth.subset.keys() | data.fine_tuning.subset.keys()
    if key in other_kind:
        other = "a DreamBooth" if where.startswith("a fine-tuning") else "a fine-tuning"
        return f"is not allowed in {where}, only in {other} one."
    if key in subset_keys and "subset" not in where:
        return f"is not allowed in {where}; it belongs in [[datasets.subsets]]."
    if key in data.general:
        return f"is not allowed in {where}; it belongs in [[datasets]] or [general]."
    if key in options("train_network.py"):
        return f"is not allowed in {where}; it is a training option, so set it in the --config_file TOML."
    return f"is not a kohya dataset-config key{did_you_mean(key, schema)}."


__all__ = [
    "SCRIPTS",
    "OptionDefault",
    "OptionKind",
    "OptionSpec",
    "check_config_value",
    "check_dataset_config",
    "kohya_commit",
    "options",
]
