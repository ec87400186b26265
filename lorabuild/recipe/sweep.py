"""Sweeps (``[sweep]``): one recipe file, several builds.

``[sweep]`` maps dotted keys (the syntax of ``--set``) to lists of values and expands into one build
per point, the product of the lists or, with ``mode = "zip"``, their items side by side. Each
build's name comes from ``name = "{name}-dim{network.dim}"``, or by default from the recipe's name
and short ``keyvalue`` parts (``Kazari_v1-dim16-lr1e-4``). :func:`format_value` shows a swept
value to people (``lorabuild ls``).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.problems import Problem, RecipeError, did_you_mean, error
from lorabuild.recipe.keys import Loc, field_at, get_key, parse_key

SWEEP_MODES = ("product", "zip")
# Keys of [sweep] that configure it rather than name a recipe key.
SWEEP_SETTINGS = ("mode", "name")
# A sweep of more builds than this is almost surely a mistake (a list pasted twice).
MAX_BUILDS = 1000


def flatten_sweep(sweep: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``[sweep] network.dim = [...]`` (nested tables) and ``"network.dim" = [...]`` alike -> dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in sweep.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_sweep(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


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
        if key in SWEEP_SETTINGS:
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
