"""Recipe files that extend others (``extends``) and sweeps (``[sweep]``), as plain TOML documents.

Runs before validation: :func:`lorabuild.recipe.load.load_builds` validates what this module returns.

``extends = "base.toml"`` (or a list, later files winning) deep-merges the base under the file:
tables merge key by key; arrays (``dataset.subsets`` included) and scalars are replaced whole,
so a file never has to guess how its list combines with the base's. Chains are allowed; a cycle is
an error that shows it (``a.toml → b.toml → a.toml``). Relative paths written in a base stay
relative to the base: every value the schema types :data:`~lorabuild.recipe.schema.RecipePath` is rebased
onto the extending file's folder when the base is merged.

``[sweep]`` maps dotted keys (the syntax of ``--set``) to lists of values and expands into one build
per point, the product of the lists or, with ``mode = "zip"``, their items side by side. Each
build's name comes from ``name = "{name}-dim{network.dim}"``, or by default from the recipe's name
and short ``keyvalue`` parts (``Kazari_v1-dim16-lr1e-4``).

The merged document keeps its layers (which file wrote what), so a problem can name the file
that wrote the bad value (:meth:`Expansion.file_of`).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from lorabuild.problems import Problem, RecipeError, did_you_mean, error
from lorabuild.recipe.schema import Recipe, RecipePath

Loc = tuple[str | int, ...]

SWEEP_MODES = ("product", "zip")
# Keys of [sweep] that configure it rather than name a recipe key.
_SWEEP_SETTINGS = ("mode", "name")
# A sweep of more builds than this is almost surely a mistake (a list pasted twice).
MAX_BUILDS = 1000


def read_toml(path: Path, label: str | None = None) -> dict[str, Any]:
    """Read one TOML file (UTF-8, a BOM allowed).

    Args:
        path: The file.
        label: How problems name it (default: the path as given).

    Raises:
        RecipeError: When it is missing, unreadable, not UTF-8 or not TOML.
    """
    display = label or path.as_posix()
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise RecipeError([error("", "recipe file not found").at(display)]) from None
    except IsADirectoryError:
        raise RecipeError([error("", "is a folder, not a recipe file").at(display)]) from None
    except UnicodeDecodeError as exc:
        raise RecipeError(
            [error("", f"is not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8").at(display)]
        ) from None
    except OSError as exc:
        raise RecipeError([error("", f"cannot be read: {exc.strerror}").at(display)]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([error("", f"is not valid TOML: {exc}").at(display)]) from None


# --- dotted keys -------------------------------------------------------------------------------

_KEY_PART = re.compile(r"([A-Za-z0-9_\-]+)((?:\[\d+\])*)")


def parse_key(key: str) -> Loc | str:
    """``dataset.subsets[0].repeats`` -> ``("dataset", "subsets", 0, "repeats")``; a message if malformed."""
    loc: list[str | int] = []
    for part in key.split("."):
        match = _KEY_PART.fullmatch(part)
        if not match:
            return f"'{part}' is not a key name"
        loc.append(match.group(1))
        loc.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(loc)


def set_key(doc: dict[str, Any], loc: Loc, value: Any) -> str | None:
    """Set ``value`` at ``loc`` in ``doc`` in place, creating tables on the way; a message if impossible."""
    node: Any = doc
    for step, nxt in itertools.pairwise(loc):
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return f"there is no item [{step}] to override"
            node = node[step]
            continue
        if not isinstance(node, dict):
            return f"'{step}' is inside a value that is not a table"
        node = node.setdefault(step, [] if isinstance(nxt, int) else {})
    last = loc[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            return f"there is no item [{last}] to override"
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        return "cannot set a key inside a value that is not a table"
    return None


def get_key(doc: Any, loc: Loc) -> tuple[bool, Any]:
    """``(True, value)`` at ``loc`` in ``doc``, or ``(False, None)`` when it is not there."""
    node = doc
    for step in loc:
        there = (
            step < len(node)
            if isinstance(node, list) and isinstance(step, int)
            else isinstance(node, dict) and step in node
        )
        if not there:
            return False, None
        node = node[step]
    return True, node


# --- the schema, walked ------------------------------------------------------------------------

_PATH_MARK = get_args(RecipePath)[1]  # the AfterValidator that makes a Path a recipe path


def _is_recipe_path(info: FieldInfo) -> bool:
    """Whether a field is typed :data:`RecipePath` (``RecipePath | None`` included)."""

    def mentions(annotation: Any) -> bool:
        return any(arg == _PATH_MARK or mentions(arg) for arg in get_args(annotation))

    return any(m == _PATH_MARK for m in info.metadata) or mentions(info.annotation)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model class inside ``X``, ``X | None`` or ``list[X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        inner = _model_of(arg)
        if inner is not None:
            return inner
    return None


def field_at(loc: Loc) -> tuple[FieldInfo | None, str]:
    """The schema field at ``loc``, or None and why not ("unknown key ..." with a "did you mean").

    Keys inside a value that is not a table of the schema (``kohya.*``, ``launch.env.*``) are
    accepted as they are: the schema checks them when the recipe is validated.
    """
    model: type[BaseModel] | None = Recipe
    info: FieldInfo | None = None
    for index, part in enumerate(loc):
        if isinstance(part, int):
            continue
        if model is None:
            return None, ""
        if part not in model.model_fields:
            shown = ".".join(str(p) for p in loc[: index + 1] if isinstance(p, str))
            return None, f"{shown} is not a recipe key{did_you_mean(part, model.model_fields)}"
        info = model.model_fields[part]
        model = _model_of(info.annotation)
    return info, ""


def _choices(annotation: Any) -> set[Any]:
    """The ``Literal`` values a field accepts besides a path (``install.preview``: "grid", "none")."""
    if get_origin(annotation) is Literal:
        return set(get_args(annotation))
    return {choice for arg in get_args(annotation) for choice in _choices(arg)}


def _rebase_value(info: FieldInfo, value: Any, fix: Callable[[str], str]) -> Any:
    """``value`` of the field ``info`` (or an item of it) with every recipe path in it passed through ``fix``."""
    if isinstance(value, list):
        return [_rebase_value(info, item, fix) for item in value]
    if _is_recipe_path(info):
        return fix(value) if isinstance(value, str) and value not in _choices(info.annotation) else value
    inner = _model_of(info.annotation)
    if inner is not None and isinstance(value, dict):
        _rebase_tree(value, inner, fix)
    return value


def _rebase_tree(node: dict[str, Any], model: type[BaseModel], fix: Callable[[str], str]) -> None:
    for key, value in node.items():
        info = model.model_fields.get(key)
        if info is not None:
            node[key] = _rebase_value(info, value, fix)


def rebase_at(loc: Loc, value: Any, fix: Callable[[str], str]) -> Any:
    """A copy of ``value``, to be set at ``loc``, with every recipe path inside it passed through ``fix``.

    The value may be a path, a table or an array of tables holding paths at any depth
    (``dataset.subsets = [{source = "..."}]``), or hold none.
    """
    info, _ = field_at(loc)
    return value if info is None else _rebase_value(info, copy.deepcopy(value), fix)


def rebase_paths(doc: dict[str, Any], from_dir: Path, to_dir: Path) -> None:
    """Rewrite ``doc``'s relative recipe paths (and swept path values) from ``from_dir`` onto ``to_dir``.

    Paths are joined and normalised without touching the disk; a path that cannot be made
    relative (another Windows drive) becomes absolute. ``~`` and absolute paths stay as written.
    """
    if os.path.normcase(os.path.abspath(from_dir)) == os.path.normcase(os.path.abspath(to_dir)):
        return

    def fix(value: str) -> str:
        if not value or value.startswith("~") or Path(value).is_absolute():
            return value
        joined = os.path.normpath(os.path.join(from_dir, value))
        try:
            moved = os.path.relpath(joined, to_dir)
        except ValueError:  # another drive
            moved = os.path.abspath(joined)
        return Path(moved).as_posix()

    _rebase_tree(doc, Recipe, fix)
    sweep = doc.get("sweep")
    if isinstance(sweep, dict):
        for key, values in sweep.items():
            loc = parse_key(key) if key not in _SWEEP_SETTINGS else ""
            if isinstance(loc, tuple) and isinstance(values, list):
                sweep[key] = [rebase_at(loc, v, fix) for v in values]


# --- extends -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One file's own keys (paths already rebased onto the top file's folder)."""

    path: Path
    doc: dict[str, Any]


def _flatten_sweep(sweep: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``[sweep] network.dim = [...]`` (nested tables) and ``"network.dim" = [...]`` alike -> dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in sweep.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten_sweep(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _same(a: Path, b: Path) -> bool:
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def _layers(path: Path, stack: tuple[Path, ...], top_dir: Path) -> list[Layer]:
    """The layers of ``path``, lowest precedence first: its bases' layers, then its own."""
    parent = stack[-1].as_posix() if stack else ""
    label = f"{path.as_posix()} (extended by {parent})" if stack else None
    if not path.exists() and stack:
        raise RecipeError(
            [
                error(
                    "extends",
                    f"{path.as_posix()} not found (a relative path is relative to the folder of the file "
                    "that extends it)",
                ).at(parent)
            ]
        )
    doc = read_toml(path, label)
    extends = doc.pop("extends", None)
    if isinstance(doc.get("sweep"), dict):
        doc["sweep"] = _flatten_sweep(doc["sweep"])
    bases: list[str]
    if extends is None:
        bases = []
    elif isinstance(extends, str):
        bases = [extends]
    elif isinstance(extends, list) and all(isinstance(b, str) and b for b in extends):
        bases = list(extends)
    else:
        raise RecipeError(
            [
                error("extends", 'must be a file name or a list of them, e.g. extends = "base.toml"').at(
                    path.as_posix()
                )
            ]
        )
    layers: list[Layer] = []
    for name in bases:
        try:
            base = Path(name).expanduser()
        except RuntimeError:  # ~name of no user here, or no home folder
            raise RecipeError(
                [
                    error("extends", f"{name!r} starts with ~ but names no user's home folder").at(
                        path.as_posix()
                    )
                ]
            ) from None
        if not base.is_absolute():
            base = Path(os.path.normpath(path.parent / base))
        chain = (*stack, path)
        if any(_same(base, p) for p in chain):
            shown = " → ".join(p.as_posix() for p in (*chain, base))
            raise RecipeError(
                [error("extends", f"files extend each other in a cycle: {shown}").at(path.as_posix())]
            )
        layers += _layers(base, chain, top_dir)
    rebase_paths(doc, path.parent, top_dir)
    layers.append(Layer(path, doc))
    return layers


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged onto a copy of ``base``: tables merge, everything else is replaced whole."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- sweeps ------------------------------------------------------------------------------------


def _number(value: float) -> str:
    """``1e-4`` rather than ``0.0001``, ``5e-5`` rather than ``5e-05``; ``0.5`` as it is."""
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e6):
        mantissa, exponent = f"{value:.6e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}" if value != int(value) or abs(value) >= 1e6 else f"{value:.1f}"


def format_value(value: Any) -> str:
    """A swept value for people: TOML-like, numbers short (``1e-4``, ``16``, ``"Lion"``, ``[768, 768]``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _short(value: Any) -> str:
    """A value as a short, file-name-safe word: ``1e-4``, ``16``, ``768x768``, ``true``."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = _number(value).removesuffix(".0")
    elif isinstance(value, list):
        text = "x".join(_short(v) for v in value)
    elif isinstance(value, str):
        text = Path(value).name if ("/" in value or "\\" in value) else value
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._\-]+", "_", text).strip("_") or "_"


def _last_word(key: str) -> str:
    parts = [p for p in re.split(r"[.\[\]]+", key) if p and not p.isdigit()]
    return parts[-1] if parts else key


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Point:
    """One build of a sweep: its swept values (dotted key -> value), in the sweep's key order."""

    values: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    """A parsed ``[sweep]`` table.

    Attributes:
        keys: The swept dotted keys, in the file's order.
        points: One per build.
        template: The build-name template, or None for the default.
    """

    keys: tuple[str, ...]
    points: tuple[Point, ...]
    template: str | None


def parse_sweep(table: Any, where: Callable[[Loc], str]) -> Sweep:
    """Check a merged ``[sweep]`` table and list its points.

    Args:
        table: The ``sweep`` value of the merged document.
        where: The file (label) that wrote a key of the document, for problems.

    Raises:
        RecipeError: With every problem of the table.
    """
    if not isinstance(table, dict):
        raise RecipeError(
            [error("sweep", 'must be a table: [sweep] "network.dim" = [16, 32]').at(where(("sweep",)))]
        )
    problems: list[Problem] = []
    mode = table.get("mode", "product")
    if mode not in SWEEP_MODES:
        problems.append(
            error("sweep.mode", f'must be "product" or "zip" (got {mode!r})').at(where(("sweep", "mode")))
        )
    template = table.get("name")
    if template is not None and (not isinstance(template, str) or not template.strip()):
        problems.append(
            error("sweep.name", 'must be a name template, e.g. "{name}-dim{network.dim}"').at(
                where(("sweep", "name"))
            )
        )
        template = None
    keys: list[str] = []
    lists: list[list[Any]] = []
    for key, values in table.items():
        if key in _SWEEP_SETTINGS:
            continue
        shown = f'sweep."{key}"'
        here = where(("sweep", key))
        loc = parse_key(key)
        if isinstance(loc, str):
            problems.append(error(shown, f'{loc}: write a dotted recipe key, e.g. "network.dim"').at(here))
            continue
        if loc in (("name",), ("extends",), ("sweep",)) or loc[0] == "sweep":
            problems.append(error(shown, f"{key} cannot be swept").at(here))
            continue
        _, why = field_at(loc)
        if why:
            problems.append(error(shown, why).at(here))
            continue
        if not isinstance(values, list) or not values:
            problems.append(
                error(shown, f"must be a list of values to try, e.g. {key!r} = [16, 32]").at(here)
            )
            continue
        keys.append(key)
        lists.append(values)
    if not keys and not problems:
        problems.append(
            error("sweep", 'has no keys to sweep: add e.g. "network.dim" = [16, 32]').at(where(("sweep",)))
        )
    if mode == "zip" and len({len(v) for v in lists}) > 1:
        sizes = ", ".join(f"{k} has {len(v)}" for k, v in zip(keys, lists, strict=True))
        problems.append(
            error("sweep.mode", f'"zip" pairs the lists item by item, so they need one length: {sizes}').at(
                where(("sweep", "mode"))
            )
        )
    if problems:
        raise RecipeError(problems)
    combos = zip(*lists, strict=True) if mode == "zip" else itertools.product(*lists)
    points = []
    for combo in combos:
        points.append(Point(dict(zip(keys, combo, strict=True))))
        if len(points) > MAX_BUILDS:
            raise RecipeError(
                [
                    error("sweep", f"expands to more than {MAX_BUILDS} builds: sweep fewer values").at(
                        where(("sweep",))
                    )
                ]
            )
    return Sweep(tuple(keys), tuple(points), template)


def default_name(name: str, keys: Sequence[str], values: dict[str, Any]) -> str:
    """``Kazari_v1`` + ``dim16`` + ``lr1e-4`` -> ``Kazari_v1-dim16-lr1e-4`` (clashing short keys in full)."""
    words = [_last_word(k) for k in keys]
    parts = []
    for key, word in zip(keys, words, strict=True):
        label = word if words.count(word) == 1 else re.sub(r"[^A-Za-z0-9_]+", "_", key).strip("_")
        parts.append(f"{label}{_short(values[key])}")
    return "-".join([name, *parts])


def render_name(template: str, name: str, values: dict[str, Any], doc: dict[str, Any]) -> str:
    """Fill ``{name}``, ``{swept.key}`` and ``{any.recipe.key}`` placeholders of a build-name template.

    Raises:
        ValueError: Naming a placeholder that is neither.
    """

    def fill(match: re.Match[str]) -> str:
        key = match.group(1).strip()
        if key == "name":
            return name
        if key in values:
            return _short(values[key])
        loc = parse_key(key)
        found, value = get_key(doc, loc) if isinstance(loc, tuple) else (False, None)
        if found and not isinstance(value, dict):
            return _short(value)
        raise ValueError(
            f"{{{key}}} is not a swept key or a key of the recipe{did_you_mean(key, ['name', *values])}"
        )

    return _PLACEHOLDER.sub(fill, template)


# --- the whole expansion -----------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    """One build a recipe file expands to, before validation.

    Attributes:
        name: Its name (the ``name`` key of :attr:`raw`, when that is a string).
        raw: The merged document with the sweep's values and ``--set`` applied.
        sweep_values: The swept keys' values for this build (empty without a sweep).
        override_locs: The keys ``--set`` wrote (problems there belong to the command line's file).
    """

    name: str
    raw: dict[str, Any]
    sweep_values: dict[str, Any] = field(default_factory=dict)
    override_locs: tuple[Loc, ...] = ()


@dataclass(frozen=True)
class Expansion:
    """A recipe file with its bases merged and its sweep expanded.

    Attributes:
        path: The recipe file as the user named it.
        layers: Every file's own keys, lowest precedence first (the file itself last).
        merged: The merged document, without ``extends`` (with ``sweep``, if any).
        sweep: The parsed sweep, or None.
    """

    path: Path
    layers: tuple[Layer, ...]
    merged: dict[str, Any]
    sweep: Sweep | None

    @property
    def sources(self) -> tuple[Path, ...]:
        """The recipe file and every file it extends, nearest first, each once."""
        return tuple(dict.fromkeys(layer.path for layer in reversed(self.layers)))

    def label(self, build: str | None = None) -> str:
        """How problems with no better place name the file: ``a.toml (extends base.toml, build X)``."""
        notes = []
        if len(self.sources) > 1:
            notes.append("extends " + ", ".join(p.as_posix() for p in self.sources[1:]))
        if build is not None and self.sweep is not None:
            notes.append(f"build {build}")
        return self.path.as_posix() + (f" ({', '.join(notes)})" if notes else "")

    def writer_of(self, loc: Loc) -> Path | None:
        """The file whose own keys set the value at ``loc`` (or the value holding it), if any."""
        for layer in reversed(self.layers):
            node: Any = layer.doc
            for step in loc:
                if isinstance(node, dict) and isinstance(step, str) and step in node:
                    node = node[step]
                else:
                    break
            else:
                return layer.path
            if node is not layer.doc and not isinstance(node, dict):
                return layer.path  # an array or a value above loc, replaced whole by this file
        return None

    def file_of(self, loc: Loc, build: Build | None = None) -> str:
        """The label of the file that wrote the value at ``loc`` for problems there."""
        name = build.name if build is not None else None
        if build is not None and any(loc[: len(o)] == o for o in build.override_locs):
            return self.label(name)
        if build is not None and self.sweep is not None:
            for key in build.sweep_values:
                swept = parse_key(key)
                if isinstance(swept, tuple) and loc[: len(swept)] == swept:
                    loc = ("sweep", key)
                    break
        writer = self.writer_of(loc)
        if writer is None or writer == self.path:
            return self.label(name)
        extra = f", build {name}" if name is not None and self.sweep is not None else ""
        return f"{writer.as_posix()} (extended by {self.path.as_posix()}{extra})"


def expand(path: Path) -> Expansion:
    """Merge a recipe file with the files it extends and parse its sweep.

    Raises:
        RecipeError: A file is missing or not TOML, ``extends`` is malformed or cyclic, or the
            sweep is malformed.
    """
    layers = _layers(path, (), path.parent)
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer.doc)
    expansion = Expansion(path, tuple(layers), merged, None)
    if "sweep" not in merged:
        return expansion
    sweep = parse_sweep(merged["sweep"], expansion.file_of)
    return Expansion(path, tuple(layers), merged, sweep)


@dataclass(frozen=True)
class Override:
    """One parsed ``--set key=value``."""

    key: str
    loc: Loc
    value: Any


def builds_of(expansion: Expansion, overrides: Iterable[Override] = ()) -> tuple[list[Build], list[Problem]]:
    """The builds of an expansion, with ``--set`` values applied on top of each.

    Returns:
        The builds, and problems: a name template that does not fill, a swept value or an
        override that cannot be set, two builds with one name.
    """
    overrides = list(overrides)
    base = {k: v for k, v in expansion.merged.items() if k != "sweep"}
    points = expansion.sweep.points if expansion.sweep else (Point({}),)
    builds: list[Build] = []
    problems: list[Problem] = []
    for point in points:
        raw = copy.deepcopy(base)
        for key, value in point.values.items():
            loc = parse_key(key)
            assert isinstance(loc, tuple)  # checked by parse_sweep
            why = set_key(raw, loc, copy.deepcopy(value))
            if why:
                problems.append(error(f'sweep."{key}"', why).at(expansion.file_of(("sweep", key))))
        for item in overrides:
            why = set_key(raw, item.loc, copy.deepcopy(item.value))
            if why and error(item.key, why).at("--set") not in problems:
                problems.append(error(item.key, why).at("--set"))
        name = raw.get("name")
        if expansion.sweep is not None and isinstance(name, str):
            try:
                if expansion.sweep.template is None:
                    name = default_name(name, expansion.sweep.keys, point.values)
                else:
                    name = render_name(expansion.sweep.template, name, point.values, raw)
            except ValueError as exc:
                problems.append(error("sweep.name", str(exc)).at(expansion.file_of(("sweep", "name"))))
                return builds, problems
            raw["name"] = name
        builds.append(
            Build(
                name if isinstance(name, str) else "",
                raw,
                dict(point.values),
                tuple(item.loc for item in overrides),
            )
        )
    seen: dict[str, int] = {}
    for index, build in enumerate(builds, 1):
        if build.name in seen:
            problems.append(
                error(
                    "sweep.name",
                    f"builds {seen[build.name]} and {index} are both named {build.name!r}: put every swept "
                    'key in the name template, e.g. name = "{name}-dim{network.dim}"',
                ).at(expansion.file_of(("sweep", "name")))
            )
        seen.setdefault(build.name, index)
    return builds, problems
