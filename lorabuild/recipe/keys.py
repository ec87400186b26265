"""Dotted recipe keys in plain TOML documents, and the schema field each names.

A key is written ``dataset.subsets[0].repeats``, the syntax of ``--set`` and of ``[sweep]``:
:func:`parse_key` turns it into a :data:`Loc`, :func:`get_key` and :func:`set_key` read and
write it in a document, :func:`field_at` finds the schema's field for it (or says "did you
mean"), and :func:`rebase_at` rebases every recipe path a value for it holds (the values of a
base recipe's sweep, a ``--set`` path written relative to the working folder).
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from lorabuild.problems import did_you_mean
from lorabuild.recipe.schema import Recipe, RecipePath

Loc = tuple[str | int, ...]


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
        rebase_tree(value, inner, fix)
    return value


def rebase_tree(node: dict[str, Any], model: type[BaseModel], fix: Callable[[str], str]) -> None:
    """Pass every recipe path in ``node``, a table of ``model``, through ``fix``, in place."""
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
