"""Recipe files that extend others (``extends``), merged as plain TOML documents.

``extends = "base.toml"`` (or a list, later files winning) deep-merges the base under the file:
tables merge key by key; arrays (``dataset.subsets`` included) and scalars are replaced whole,
so a file never has to guess how its list combines with the base's. Chains are allowed; a cycle is
an error that shows it (``a.toml → b.toml → a.toml``). Relative paths written in a base stay
relative to the base: every value the schema types :data:`~lorabuild.recipe.schema.RecipePath` is rebased
onto the extending file's folder when the base is merged (:func:`rebase_paths`).

Each file's own keys are kept as a :class:`Layer`, so that a problem can name the file that
wrote the bad value (:meth:`lorabuild.recipe.expand.Expansion.file_of`).
"""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.problems import RecipeError, error
from lorabuild.recipe.keys import parse_key, rebase_at, rebase_tree
from lorabuild.recipe.schema import Recipe
from lorabuild.recipe.sweep import SWEEP_SETTINGS, flatten_sweep


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

    rebase_tree(doc, Recipe, fix)
    sweep = doc.get("sweep")
    if isinstance(sweep, dict):
        for key, values in sweep.items():
            loc = parse_key(key) if key not in SWEEP_SETTINGS else ""
            if isinstance(loc, tuple) and isinstance(values, list):
                sweep[key] = [rebase_at(loc, v, fix) for v in values]


@dataclass(frozen=True)
class Layer:
    """One file's own keys (paths already rebased onto the top file's folder)."""

    path: Path
    doc: dict[str, Any]


def _same(a: Path, b: Path) -> bool:
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def read_layers(path: Path, stack: tuple[Path, ...], top_dir: Path) -> list[Layer]:
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
        doc["sweep"] = flatten_sweep(doc["sweep"])
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
        layers += read_layers(base, chain, top_dir)
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
