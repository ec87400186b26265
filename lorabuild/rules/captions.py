"""Rules on ``[captions]``: the caption rules' patterns and kohya's WD14 tagger (``[captions.autotag]``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

from lorabuild.kohya.tagger import (
    FOLDER_FILES,
    NAMES,
    PACKAGES,
    autotag_sections,
    blip_problem,
)
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
        files = " and ".join(FOLDER_FILES[section.tagger])
        if not model.exists:
            source = "from a SmilingWolf wd-*-tagger repository; " if section.tagger == "wd14" else ""
            yield error(
                f"{key}.model_dir",
                f"folder not found: {model.path}: put {_WHERE[section.tagger].format(files=files)} in it "
                f"({source}lorabuild never downloads)",
            )
        else:
            yield error(
                f"{key}.model_dir",
                f"{model.path} has no {' or '.join(model.missing)}: {NAMES[section.tagger]} needs "
                f"{files} there (lorabuild never downloads)",
            )


# Where each captioner's files come from, for the message about a missing folder.
_WHERE = {
    "wd14": "a WD14 tagger's {files}",
    "blip": "BLIP's {files} (model_large_caption.pth from Salesforce's BLIP release, the tokenizer files of "
    "bert-base-uncased in a bert-base-uncased/ sub-folder)",
    "git": "a GIT model folder ({files} and its weights, e.g. microsoft/git-large-textcaps saved whole)",
}


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
            f"{NAMES[sections[0][1].tagger]} {facts.tagger_script[0].as_posix()} is not there: check out kohya "
            "sd-scripts at the pinned commit (git submodule update --init, or lorabuild setup --sd-scripts "
            "CLONE; LORABUILD_SD_SCRIPTS names another checkout)",
        )


@rule
def blip_transformers(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya's BLIP captioner stops after loading its model with the transformers kohya pins
    (:data:`lorabuild.kohya.tagger.BLIP_GENERATE_BROKEN`)."""
    problem = blip_problem(facts.transformers_version)
    if problem:
        key = next((key for key, section in autotag_sections(recipe) if section.tagger == "blip"), None)
        if key is not None:
            yield error(f"{key}.tagger", problem)


@rule
def tagger_packages(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya's tagger imports onnx and onnxruntime in --onnx mode, its BLIP captioner timm
    (ModuleNotFoundError otherwise)."""
    if not facts.training_stack:
        return
    for tagger in dict.fromkeys(section.tagger for _, section in autotag_sections(recipe)):
        missing = [name for name in PACKAGES[tagger] if not facts.packages.get(name)]
        if missing:
            key = next(key for key, section in autotag_sections(recipe) if section.tagger == tagger)
            names = " and ".join(missing)
            yield error(
                key,
                f"{NAMES[tagger]} needs {names}, which {'is' if len(missing) == 1 else 'are'} not "
                f"installed: pip install {' '.join(missing)}",
            )
