"""An :class:`~lorabuild.importer.model.Imported` as recipe text, checked by the schema, written atomically.

The text is laid out as the shipped recipes are: a header comment (what it was imported from, what
could not be carried over, what is left to do), the top-level keys, then the tables in the
schema's order (``[model]``, ``[dataset]`` with its ``[[dataset.subsets]]``, ``[network]``...), each
table's keys in the schema's field order, a short comment after a key where the source said it
differently (``# kohya networks.lora_flux``) and ``# TODO`` after a key the user must fill in.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from lorabuild.importer.model import Imported, NoteKind
from lorabuild.plan.layout import relpath
from lorabuild.problems import RecipeError
from lorabuild.recipe.load import problems_from_validation
from lorabuild.recipe.schema import Recipe
from lorabuild.render import toml as tomlout
from lorabuild.render.quoting import comment_text
from lorabuild.render.writer import write_atomic


def recipe_document(imp: Imported, recipe_path: Path) -> dict[str, Any]:
    """The recipe as a TOML document: nested tables, paths relative to ``recipe_path``'s folder."""
    folder = recipe_path.parent
    doc: dict[str, Any] = {}
    for key, value in imp.values.items():
        node = doc
        *tables, last = key.split(".")
        for table in tables:
            node = node.setdefault(table, {})
        node[last] = _plain(value, folder)
    return _ordered(doc, Recipe)


def _plain(value: object, folder: Path) -> Any:
    if isinstance(value, Path):
        # Relative to the recipe when the two share a folder below the root; else absolute (as
        # plan.layout.portable_path writes build files' paths), not a climb of ../ to the root.
        target, start = os.path.abspath(value), os.path.abspath(folder)
        if os.path.commonpath([target, start]) in (os.path.abspath(os.sep), ""):
            return Path(target).as_posix()
        return relpath(Path(target), Path(start))
    if isinstance(value, Mapping):
        return {str(k): _plain(v, folder) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v, folder) for v in value]
    return value


def _ordered(doc: dict[str, Any], model: type[BaseModel] | None) -> dict[str, Any]:
    """``doc`` with keys in the schema's field order (nested tables and subsets too)."""
    if model is None:
        return doc
    order = list(model.model_fields)
    keys = sorted(doc, key=lambda k: order.index(k) if k in order else len(order))
    out: dict[str, Any] = {}
    for key in keys:
        value = doc[key]
        sub = _submodel(model, key)
        if isinstance(value, dict) and sub is not None:
            value = _ordered(value, sub)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = [_ordered(v, sub) for v in value]
        out[key] = value
    return out


def _submodel(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    info = model.model_fields.get(key)
    if info is None:
        return None
    candidates = [info.annotation, *getattr(info.annotation, "__args__", ())]
    for candidate in candidates:
        for inner in (candidate, *getattr(candidate, "__args__", ())):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def recipe_text(imp: Imported, recipe_path: Path) -> str:
    """The recipe file's text: header comment, then the document with the import's comments."""
    doc = recipe_document(imp, recipe_path)
    lines = [
        f"# Imported by `lorabuild import` from {imp.source}"
        + (f" (kohya {imp.script})." if imp.script else "."),
        "# Check it, then build it:",
        f"#   lorabuild check {recipe_path.as_posix()}",
    ]
    groups = [
        ("TODO before training", [n for n in imp.notes if n.kind is NoteKind.TODO]),
        ("Not carried over", [n for n in imp.notes if n.kind is not NoteKind.TODO]),
    ]
    for title, notes in groups:
        if notes:
            lines.extend(["#", f"# {title}:"])
            lines.extend(f"#   {comment_text(n.line())}" for n in notes)
    todo_keys = {n.key for n in imp.notes if n.kind is NoteKind.TODO}
    comments = dict(imp.comments)
    for key in todo_keys:
        comments[key] = "TODO: " + next(n.why for n in imp.notes if n.kind is NoteKind.TODO and n.key == key)
    _emit(doc, (), lines, comments)
    return "\n".join(lines).rstrip("\n") + "\n"


def _emit(
    table: Mapping[str, Any], path: tuple[str, ...], lines: list[str], comments: Mapping[str, str]
) -> None:
    prefix = ".".join(path)
    for key, value in table.items():
        if isinstance(value, Mapping) and value and key not in ("args", "env", "accelerate_args", "replace"):
            continue
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            continue
        dotted = f"{prefix}.{key}" if prefix else key
        line = f"{tomlout.key(key)} = {tomlout.value(value)}"
        comment = comments.get(dotted)
        lines.append(f"{line}  # {comment_text(comment)}" if comment else line)
    for key, value in table.items():
        name = ".".join((*path, key))
        if isinstance(value, Mapping) and value and key not in ("args", "env", "accelerate_args", "replace"):
            lines.extend(["", f"[{name}]"])
            _emit(value, (*path, key), lines, comments)
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for index, item in enumerate(value):
                lines.extend(["", f"[[{name}]]"])
                _emit(item, (*path, f"{key}[{index}]"), lines, comments)


def validate(text: str, recipe_path: Path) -> Recipe:
    """The recipe ``text`` checked by the schema, its paths resolved against ``recipe_path``'s folder.

    Raises:
        RecipeError: The schema refuses it (every problem, each naming ``recipe_path`` and the key).
    """
    doc = tomllib.loads(text)
    try:
        return Recipe.model_validate(doc, context={"base": recipe_path.parent})
    except ValidationError as exc:
        problems = problems_from_validation(exc)
        raise RecipeError([p.at(recipe_path.as_posix()) for p in problems]) from None


def write_recipe(imp: Imported, recipe_path: Path) -> str:
    """Write the recipe to ``recipe_path`` (atomically, only once the schema accepts it); return its text."""
    text = recipe_text(imp, recipe_path)
    validate(text, recipe_path)
    write_atomic(recipe_path, text.encode("utf-8"))
    return text
