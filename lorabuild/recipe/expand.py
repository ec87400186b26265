"""A recipe file expanded: its bases merged, its sweep's builds listed, ``--set`` applied on top.

Runs before validation: :func:`lorabuild.recipe.load.load_builds` validates the builds this module
returns. :func:`expand` merges the file with the files it extends (:mod:`~lorabuild.recipe.extends`)
and parses its ``[sweep]`` (:mod:`~lorabuild.recipe.sweep`); :func:`builds_of` makes a :class:`Build`
of each point of the sweep, with the ``--set`` values (:class:`Override`) on top.

The merged document keeps its layers (which file wrote what), so a problem can name the file
that wrote the bad value (:meth:`Expansion.file_of`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorabuild.problems import Problem, error
from lorabuild.recipe.extends import Layer, deep_merge, read_layers
from lorabuild.recipe.keys import Loc, parse_key, set_key
from lorabuild.recipe.sweep import Point, Sweep, default_name, parse_sweep, render_name


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
    layers = read_layers(path, (), path.parent)
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
