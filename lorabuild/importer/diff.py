"""Where an existing recipe and a source disagree, by dotted recipe key.

Both sides are compared as they will be trained (the family's defaults applied), over the tables a
source can speak to: the top-level keys, ``[model]``, ``[dataset]`` and its subsets (their folders
only where the source names real ones), ``[network]``, ``[optimizer]``, ``[training]``, ``[flow]``,
``[launch]``'s process keys and ``[kohya]``. Captions, image checks, the grid and install are the
recipe's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.importer.model import Imported, NoteKind
from lorabuild.importer.write import recipe_text, validate
from lorabuild.kohya import families
from lorabuild.plan.defaults import apply_defaults
from lorabuild.recipe.load import load_recipe
from lorabuild.recipe.schema import Recipe

_COMPARED = (
    "name",
    "title",
    "description",
    "author",
    "model",
    "dataset",
    "network",
    "optimizer",
    "training",
    "flow",
    "kohya",
)
_LAUNCH = ("num_cpu_threads_per_process", "gpus", "main_process_port", "accelerate_args")


@dataclass(frozen=True)
class Difference:
    """One key the two sides set differently (None: left out)."""

    key: str
    recipe: Any
    source: Any

    def line(self) -> str:
        """``key: recipe X, source Y``."""
        return f"{self.key}: recipe {_show(self.recipe)}, source {_show(self.source)}"


def diff(recipe_path: Path, imp: Imported) -> list[Difference]:
    """The keys where the recipe at ``recipe_path`` and the import disagree, in key order.

    Raises:
        RecipeError: The recipe, or the import as a recipe, does not pass the schema.
    """
    ours = load_recipe(recipe_path).recipe
    theirs = validate(recipe_text(imp, recipe_path), recipe_path)
    todo = {n.key for n in imp.notes if n.kind is NoteKind.TODO}
    a, b = _flat(_resolved(ours)), _flat(_resolved(theirs))
    differences = []
    for key in sorted(set(a) | set(b)):
        if key.endswith(".source") and key.rpartition(".")[0] + ".source" in todo:
            continue
        if key in todo:
            continue
        if a.get(key) != b.get(key):
            differences.append(Difference(key, a.get(key), b.get(key)))
    return differences


def _resolved(recipe: Recipe) -> dict[str, Any]:
    family = recipe.model.family or families.FALLBACK
    doc: dict[str, Any] = apply_defaults(recipe, families.get(family)).recipe.model_dump(mode="json")
    out = {k: v for k, v in doc.items() if k in _COMPARED}
    out["launch"] = {k: v for k, v in doc["launch"].items() if k in _LAUNCH}
    for subset in out["dataset"]["subsets"]:
        subset.pop("captions", None)
    return out


def _flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, dict):
        out: dict[str, Any] = {}
        for key, value in doc.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
        return out or ({prefix: {}} if prefix else {})
    if isinstance(doc, list) and doc and all(isinstance(v, dict) for v in doc):
        out = {}
        for index, value in enumerate(doc):
            out.update(_flat(value, f"{prefix}[{index}]"))
        return out
    return {prefix: doc}


def _show(value: Any) -> str:
    return "(not set)" if value is None else repr(value)
