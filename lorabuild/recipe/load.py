"""Loading a recipe: TOML file, ``--set`` overrides, schema validation, readable errors.

Every problem comes back at once as a :class:`~lorabuild.problems.Problem` with the recipe
file and the dotted key path, e.g.
``recipes/kazari.toml: dataset.subsets[0].repeats: must be at least 1 (got 0)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from lorabuild.problems import Problem, RecipeError, did_you_mean, error
from lorabuild.recipe.expand import Build, Expansion, Override, builds_of, expand
from lorabuild.recipe.keys import parse_key, rebase_at, set_key
from lorabuild.recipe.schema import Recipe
from lorabuild.render import toml as tomlout


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe (one build) and where it came from.

    Attributes:
        recipe: The validated recipe.
        path: The recipe file as the user named it (for messages).
        raw: The fully merged TOML document: bases merged, the sweep's values and ``--set``
            overrides applied, ``name`` set to the build's name (what the recipe hash covers).
        sources: The recipe file and every file it extends, nearest first.
        sweep_values: This build's swept values by dotted key (empty for a file without a sweep).
        label: How messages name it when the file alone is not enough
            (``a.toml (extends base.toml, build Kazari_v1-dim16)``); the path when empty.
    """

    recipe: Recipe
    path: Path
    raw: dict[str, Any]
    sources: tuple[Path, ...] = ()
    sweep_values: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    build: Build | None = field(default=None, repr=False, compare=False)
    expansion: Expansion | None = field(default=None, repr=False, compare=False)

    @property
    def display(self) -> str:
        """The recipe as shown in messages: its path, with its bases and build name when it has them."""
        return self.label or self.path.as_posix()

    def file_of(self, key: str) -> str:
        """How a problem at ``key`` names its file: the file that wrote the value (see :attr:`display`)."""
        loc = parse_key(key) if key else ()
        if self.expansion is None or not isinstance(loc, tuple) or not loc:
            return self.display
        return self.expansion.file_of(loc, self.build)

    @property
    def name(self) -> str:
        """The build's name (``recipe.name``)."""
        return self.recipe.name

    def section_hash(self, *sections: str) -> str:
        """A stable hash of the given top-level sections of the recipe (all when none given)."""
        chosen = {k: v for k, v in self.raw.items() if not sections or k in sections}
        blob = json.dumps(chosen, sort_keys=True, default=str, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()


def load_recipe(path: Path, overrides: Sequence[str] = (), only: str | None = None) -> LoadedRecipe:
    """Read, merge, override and validate one build of a recipe file.

    Args:
        path: The recipe TOML file.
        overrides: ``dotted.key=value`` strings; values are parsed as TOML values
            (``4``, ``1e-4``, ``true``, ``[768, 768]``, ``"text"``), bare words as strings.
        only: The build to load from a file whose ``[sweep]`` expands to several (``--only NAME``);
            for a file of one build it must be that build's name when given.

    Returns:
        The validated build.

    Raises:
        RecipeError: With every problem found, each naming the file and key; when the file
            expands to several builds and ``only`` does not pick one of them.
    """
    expansion, builds = _expand(path, overrides)
    if only is not None:
        chosen = [b for b in builds if b.name == only]
        if not chosen:
            raise RecipeError(
                [error("", f"has no build named {only!r}: {_choices(builds)}").at(path.as_posix())]
            )
        return _validate(expansion, chosen[0])
    if len(builds) > 1:
        raise RecipeError(
            [
                error(
                    "sweep",
                    f"expands to {len(builds)} builds: pick one with --only NAME ({_choices(builds)}); "
                    f"lorabuild ls {path.as_posix()} lists them",
                ).at(path.as_posix())
            ]
        )
    return _validate(expansion, builds[0])


def load_builds(path: Path, overrides: Sequence[str] = ()) -> list[LoadedRecipe]:
    """Every build a recipe file defines, validated, in order: one per sweep point, or one.

    ``overrides`` apply on top of every build, after the sweep's values.

    Raises:
        RecipeError: With every problem of every build, each naming its file (and build).
    """
    expansion, builds = _expand(path, overrides)
    loaded: list[LoadedRecipe] = []
    problems: list[Problem] = []
    for build in builds:
        try:
            loaded.append(_validate(expansion, build))
        except RecipeError as exc:
            problems += exc.problems
    if problems:
        raise RecipeError(problems)
    return loaded


def _choices(builds: Sequence[Build]) -> str:
    names = [b.name for b in builds]
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return f"its build{'s are' if len(names) > 1 else ' is'} {shown}"


def _expand(path: Path, overrides: Sequence[str]) -> tuple[Expansion, list[Build]]:
    """Merge the file with its bases, check the overrides and list the builds (not yet validated)."""
    parsed: list[Override] = []
    problems: list[Problem] = []
    for item in overrides:
        override = parse_override(item)
        if isinstance(override, Problem):
            problems.append(override.at("--set"))
        else:
            parsed.append(replace(override, value=rebase_at(override.loc, override.value, _from_cwd)))
    expansion = expand(path)
    if problems:
        raise RecipeError(problems)
    builds, problems = builds_of(expansion, parsed)
    if problems:
        raise RecipeError(problems)
    return expansion, builds


def _validate(expansion: Expansion, build: Build) -> LoadedRecipe:
    """Validate one build against the schema; problems name the file that wrote each bad value."""
    try:
        recipe = Recipe.model_validate(build.raw, context={"base": expansion.path.parent})
    except ValidationError as exc:
        raise RecipeError(problems_from_validation(exc, lambda loc: expansion.file_of(loc, build))) from None
    return LoadedRecipe(
        recipe=recipe,
        path=expansion.path,
        raw=build.raw,
        sources=expansion.sources,
        sweep_values=build.sweep_values,
        label=expansion.label(build.name) if expansion.sweep or len(expansion.sources) > 1 else "",
        build=build,
        expansion=expansion,
    )


def parse_override(item: str) -> Override | Problem:
    """Parse one ``dotted.key=value`` override; a problem if malformed."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        return error(item, "expected dotted.key=value, e.g. --set training.epochs=4")
    loc = parse_key(key)
    if isinstance(loc, str):
        return error(key, loc)
    bad = next((i for i, ch in enumerate(text) if "\udc80" <= ch <= "\udcff"), None)
    if bad is not None:
        # The command line held bytes that are not UTF-8 (os.fsdecode makes them lone surrogates):
        # no file lorabuild writes, all UTF-8, could hold the value.
        return error(
            key,
            f"is not UTF-8 text: byte 0x{ord(text[bad]) - 0xDC00:02X} at position {bad} of the value; "
            "write it in UTF-8",
        )
    return Override(key, loc, parse_value(text.strip()))


def apply_override(doc: dict[str, Any], item: str) -> Problem | None:
    """Apply one ``dotted.key=value`` override to ``doc`` in place; return a problem if malformed."""
    override = parse_override(item)
    if isinstance(override, Problem):
        return override
    why = set_key(doc, override.loc, override.value)
    return error(override.key, why) if why else None


def _from_cwd(path: str) -> str:
    """A relative path given on the command line, made absolute from the current folder."""
    if not path or path.startswith("~") or Path(path).is_absolute():
        return path
    return os.path.normpath(Path.cwd() / path)


def cwd_relative(item: str) -> str:
    """A ``--set`` item with every recipe path in its value made absolute from the current folder.

    In the recipe file, relative paths are relative to the file; on the command line they are
    relative to where the user types the command, as every other command-line path is. That
    holds for a path anywhere in the value: ``--set model.base=m.safetensors`` as much as
    ``--set 'dataset.subsets=[{source = "data/x"}]'``. The loader applies the same rule itself;
    this form is for command lines that run elsewhere (the Makefile's, the sbatch script's).
    """
    override = parse_override(item)
    if isinstance(override, Problem):
        return item
    value = rebase_at(override.loc, override.value, _from_cwd)
    return item if value == override.value else f"{override.key}={tomlout.value(value)}"


def parse_value(text: str) -> Any:
    """Parse an override's value as a TOML value; anything that is not TOML is a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# Segments pydantic adds to an error's location for union members and validators; they are
# not recipe keys (recipe keys never contain brackets or match these type names).
_LOC_TAG = re.compile(r"^(int|float|str|bool|none|function-.*|lax-or-strict.*|.*\[.*\].*)$")


def key_path(loc: Sequence[str | int]) -> str:
    """Render a location as ``dataset.subsets[0].repeats``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _clean_loc(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    return tuple(p for p in loc if isinstance(p, int) or not _LOC_TAG.match(p))


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The schema model that holds the key at ``loc`` (used for "did you mean")."""
    model: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = _unwrap(model.model_fields[part].annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """The model class inside ``X | None`` or ``list[X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):  # X | None, list[X]
        inner = _unwrap(arg)
        if inner is not None:
            return inner
    return None


_TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "str": "a text string",
    "list": "a list",
    "dict": "a table",
    "model": "a table",
    "tuple": "a list",
    "path": "a path",
}


def _describe_input(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # inf, -inf, nan: as TOML writes them
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_type_error(kind: str) -> bool:
    """Whether an error only says the value has the wrong type (not which constraint it breaks)."""
    return kind.endswith(("_type", "_parsing")) or kind in ("int_from_float", "literal_error")


def _message(err: ErrorDetails, loc: tuple[str | int, ...]) -> str:
    """The message for one pydantic error: what the key must be, and what it got.

    Every constraint's message states the constraint (the bound, the length, the pattern, the
    choices) with the value given, so that the user can tell what to change without the docs.
    """
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    value = err.get("input")
    got = _describe_input(value)
    size = len(value) if isinstance(value, str | list | tuple | dict) else None
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        model = _model_at(loc)
        hint = did_you_mean(str(loc[-1]), model.model_fields) if model else ""
        return f"unknown key{hint}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {
            "greater_than_equal": ("at least", "ge"),
            "greater_than": ("greater than", "gt"),
            "less_than_equal": ("at most", "le"),
            "less_than": ("less than", "lt"),
        }[kind]
        return f"must be {words[0]} {ctx[words[1]]} (got {got})"
    if kind == "multiple_of":
        return f"must be a multiple of {ctx['multiple_of']} (got {got})"
    if kind == "finite_number":
        return f"must be a finite number (got {got})"
    if kind == "literal_error":
        hint = ""
        if isinstance(value, str):
            options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            hint = did_you_mean(value, options)
        return f"must be one of {ctx.get('expected')} (got {got}){hint}"
    if kind in ("too_short", "too_long") and isinstance(value, str):
        kind = "string_" + kind
    if kind in ("too_short", "too_long"):
        bound = (
            ("at least", ctx.get("min_length")) if kind == "too_short" else ("at most", ctx.get("max_length"))
        )
        return f"must have {bound[0]} {bound[1]} item(s) (got {ctx.get('actual_length', size)})"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind in ("string_too_short", "string_too_long"):
        bound = (
            ("at least", ctx.get("min_length"))
            if kind == "string_too_short"
            else ("at most", ctx.get("max_length"))
        )
        return f"must be {bound[0]} {bound[1]} characters long (got {size} characters: {got})"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')} (got {got})"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    for word, text in _TYPE_WORDS.items():
        if kind.startswith(word):
            return f"must be {text} (got {got})"
    return f"{err['msg'][:1].lower()}{err['msg'][1:]} (got {got})"


def problems_from_validation(
    exc: ValidationError, where: Callable[[tuple[str | int, ...]], str] | None = None
) -> list[Problem]:
    """Turn pydantic's errors into problems, one per key (union alternatives merged).

    Args:
        exc: pydantic's error.
        where: The file a problem at a key belongs to (the file that wrote the value); none when None.
    """
    grouped: dict[tuple[str | int, ...], list[ErrorDetails]] = {}
    for err in exc.errors(include_url=False):
        grouped.setdefault(_clean_loc(err["loc"]), []).append(err)
    problems = []
    for loc, errs in grouped.items():
        inner = any(other[: len(loc)] == loc and len(other) > len(loc) for other in grouped)
        if inner and all(_is_type_error(e["type"]) for e in errs):
            continue  # a union member that got further reports the problem inside the value
        if len(errs) == 1:
            text = _message(errs[0], loc)
        else:
            # A union (e.g. "int | float | str"): say what would be accepted instead of every branch.
            # A constraint that one member broke says more than the members' type mismatches.
            specific = [e for e in errs if not _is_type_error(e["type"])] or [
                e for e in errs if e["type"] == "literal_error"
            ]
            if specific:
                text = _message(specific[0], loc)
            else:
                kinds = []
                for e in errs:
                    for word, desc in _TYPE_WORDS.items():
                        if e["type"].startswith(word) and desc not in kinds:
                            kinds.append(desc)
                text = f"must be {' or '.join(kinds) or 'a valid value'} (got {_describe_input(errs[0].get('input'))})"
        problem = error(key_path(loc), text)
        problems.append(problem.at(where(loc)) if where else problem)
    return problems
