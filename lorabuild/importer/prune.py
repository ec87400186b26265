"""Dropping what lorabuild gives by itself, so an imported recipe reads like a hand-written one.

A reader sets every key to the value kohya would have used; :func:`prune` then drops each key
whose value equals what lorabuild gives a recipe that leaves it out (the schema's default, or the
family's: :func:`lorabuild.plan.defaults.apply_defaults`). :data:`ALWAYS_WRITTEN` stay, as the
shipped recipes state them.
"""

from __future__ import annotations

from lorabuild.importer.model import Imported
from lorabuild.kohya import families
from lorabuild.plan.defaults import apply_defaults
from lorabuild.plan.subsets import DEFAULT_BUCKET_STEPS
from lorabuild.recipe.schema import Recipe, Subset

# Recipe keys an imported recipe always states, even at their defaults: what a reader looks for first.
ALWAYS_WRITTEN = frozenset(
    {
        "name", "model.base", "model.family", "network.module", "network.dim", "network.alpha",
        "optimizer.type", "optimizer.lr", "optimizer.scheduler", "training.epochs",
        "training.mixed_precision", "dataset.resolution", "dataset.batch_size", "dataset.subsets",
    }
)  # fmt: skip

# Keys whose unset value (None) compiles to a value of lorabuild's own (plan/kohya_config.py).
_UNSET_MEANS = {"dataset.bucket_reso_steps": DEFAULT_BUCKET_STEPS}


def prune(imp: Imported) -> None:
    """Drop every key whose value lorabuild gives by itself: the schema's default or the family's."""
    family = imp.get("model.family")
    minimal = Recipe.model_validate(
        {"name": "x", "model": {"base": "x", "family": family}, "dataset": {"subsets": [{"source": "x"}]}}
    )
    resolved = apply_defaults(minimal, families.get(str(family) if family else families.FALLBACK)).recipe
    defaults = resolved.model_dump()
    for key in list(imp.values):
        if key in ALWAYS_WRITTEN or key.startswith("kohya."):
            continue
        node: object = defaults
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if _same(node, imp.values[key]) or (node is None and _UNSET_MEANS.get(key) == imp.values[key]):
            del imp.values[key]
            imp.comments.pop(key, None)
    subsets = imp.get("dataset.subsets")
    if isinstance(subsets, list):
        for subset in subsets:
            for field, info in Subset.model_fields.items():
                if (
                    field not in ("source", "trigger", "repeats")
                    and field in subset
                    and _same(info.default, subset[field])
                ):
                    del subset[field]


def _same(default: object, value: object) -> bool:
    if isinstance(default, tuple | list) and isinstance(value, tuple | list):
        return list(default) == list(value)
    if isinstance(default, bool) or isinstance(value, bool):
        return default is value
    return default == value and default is not None
