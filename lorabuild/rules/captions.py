"""Rules on ``[captions]``: the caption rules' patterns and kohya's WD14 tagger (``[captions.autotag]``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

from lorabuild.kohya.tagger import MODEL_FILES, autotag_sections
from lorabuild.probe.facts import Facts
from lorabuild.problems import Problem, error, warning
from lorabuild.recipe.captions import normalise, split_tags
from lorabuild.recipe.schema import Recipe
from lorabuild.rules.registry import rule


@rule
def remove_patterns_match(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """A ``captions.remove`` pattern that matches no tag is probably misspelt."""
    style = recipe.captions.tag_style
    written: set[str] = set()
    for sf in facts.subsets:
        for c in sf.captions:
            written.update(split_tags(c.text))
    tags = {normalise(t, style) for t in written}  # once per distinct tag, not per caption
    if not tags:
        return
    for i, pattern in enumerate(recipe.captions.remove):
        wanted = normalise(pattern, style)
        if not any(fnmatch.fnmatchcase(t, wanted) for t in tags):
            yield warning(f"captions.remove[{i}]", f'"{pattern}" matches no tag in any caption')


# --- auto-tagging ------------------------------------------------------------------------------


@rule
def tagger_model_files(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya's WD14 tagger downloads a missing model folder and stops on an incomplete one."""
    for key, section in autotag_sections(recipe):
        model = facts.tagger_models.get(section.model_dir)
        if model is None or not model.missing:
            continue
        if not model.exists:
            yield error(
                f"{key}.model_dir",
                f"folder not found: {model.path}: put a WD14 tagger's {' and '.join(MODEL_FILES)} in it "
                "(from a SmilingWolf wd-*-tagger repository; lorabuild never downloads)",
            )
        else:
            yield error(
                f"{key}.model_dir",
                f"{model.path} has no {' or '.join(model.missing)}: kohya's WD14 tagger needs "
                f"{' and '.join(MODEL_FILES)} there (lorabuild never downloads)",
            )


@rule
def tagger_script(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """``[captions.autotag]`` runs kohya's own tagger script, from the kohya checkout.

    Like :func:`tagger_packages`, only on a machine with kohya's stack (one that only plans may
    lack the checkout; ``prepare`` says the same there before tagging).
    """
    sections = autotag_sections(recipe)
    if sections and facts.training_stack and facts.tagger_script is not None and not facts.tagger_script[1]:
        yield error(
            sections[0][0],
            f"kohya's WD14 tagger {facts.tagger_script[0].as_posix()} is not there: check out kohya "
            "sd-scripts at the pinned commit (git submodule update --init, or lorabuild setup --sd-scripts "
            "CLONE; LORABUILD_SD_SCRIPTS names another checkout)",
        )


@rule
def tagger_packages(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya's tagger imports onnx and onnxruntime in --onnx mode (ModuleNotFoundError otherwise)."""
    sections = autotag_sections(recipe)
    missing = [name for name in ("onnx", "onnxruntime") if not facts.packages.get(name)]
    if sections and missing and facts.training_stack:
        names = " and ".join(missing)
        yield error(
            sections[0][0],
            f"kohya's WD14 tagger needs {names}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed: pip install {' '.join(missing)}",
        )
