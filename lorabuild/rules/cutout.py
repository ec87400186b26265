"""Rules on ``[images.remove_background]``: the segmentation model and what runs it."""

from __future__ import annotations

from collections.abc import Iterator

from lorabuild.probe.facts import Facts
from lorabuild.probe.segmentation import remove_background_sections
from lorabuild.problems import Problem, error
from lorabuild.recipe.schema import Recipe
from lorabuild.rules.registry import rule


@rule
def segmentation_model(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """A missing model, a file that is not ONNX, or a model that takes or gives the wrong tensors
    would stop ``prepare`` after the first images; nothing is downloaded in their place."""
    for key, table in remove_background_sections(recipe):
        found = facts.segmenters.get(key)
        if isinstance(found, str):
            yield error(f"{key}.model", f"{table.model}: {found}")


@rule
def segmentation_packages(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """The segmentation model runs with onnxruntime and numpy (lorabuild/kohya/segment.py in kohya's Python)."""
    sections = remove_background_sections(recipe)
    missing = [name for name in ("numpy", "onnxruntime") if not facts.packages.get(name)]
    if sections and missing and facts.training_stack:
        names = " and ".join(missing)
        yield error(
            sections[0][0],
            f"the segmentation model runs with onnxruntime, and {names} {'is' if len(missing) == 1 else 'are'} "
            f"not installed: pip install {' '.join(missing)}",
        )
