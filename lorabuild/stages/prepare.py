"""The prepare stage: the dataset in kohya's layout, auto-tagged first where the recipe asks.

:func:`prepare` is the stage's verb: :func:`autotagged`, then :func:`lorabuild.build.dataset.stage`,
which stages each subset into ``build/<name>/dataset/<repeats>_<trigger>/`` (links, converted
images, rule-edited captions; incremental, never touching the sources) and writes ``tags.csv``.

**Auto-tagging** comes first where ``[captions.autotag]`` is set: :func:`autotag_plan` merges the
tags of kohya's WD14 tagger (:mod:`lorabuild.kohya.tagging` runs and caches it) into the
plan's captions, before the caption rules.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from lorabuild.build.dataset import StageReport, stage
from lorabuild.kohya import tagger, tagging
from lorabuild.plan.plan import Plan, with_raw_captions
from lorabuild.recipe.captions import join_tags, split_tags
from lorabuild.recipe.schema import Recipe
from lorabuild.settings import sd_scripts_dir


def prepare(plan: Plan, recipe: Recipe | None = None) -> StageReport:
    """Stage the dataset into the build folder, auto-tagging first where ``recipe`` asks for it.

    Raises:
        AutotagError: kohya's WD14 tagger cannot run or failed (nothing is staged).
        RecipeError: As :func:`~lorabuild.build.dataset.stage`.
        WriteError: As :func:`~lorabuild.build.dataset.stage`.
    """
    return stage(autotagged(plan, recipe))


def autotagged(plan: Plan, recipe: Recipe | None) -> Plan:
    """``plan`` with ``[captions.autotag]`` applied (the tagger runs only for images it has not seen)."""
    if recipe is None or not tagger.autotag_sections(recipe):
        return plan
    return autotag_plan(plan, recipe, sd_scripts=sd_scripts_dir())


# --- auto-tagging: the tagger's tags merged into the plan's captions before staging ----------------


def autotag_plan(
    plan: Plan,
    recipe: Recipe,
    *,
    sd_scripts: Path | None = None,
    python: str = sys.executable,
    on_line: Callable[[str], None] | None = None,
) -> Plan:
    """``plan`` with the tagger's tags merged into the captions of every subset with autotag set.

    Each subset's ``[captions.autotag]`` (its own ``[captions]`` table's, else the recipe's)
    picks the images by ``mode`` (:func:`lorabuild.kohya.tagging.tag_captions`); the merged tags
    become the caption before the rules (:func:`lorabuild.plan.plan.with_raw_captions`), so the
    staged captions, ``tags.csv`` and ``lorabuild tags`` all show the tagger's tags after the
    rules. Images the mode leaves alone keep their plan entries.

    Raises:
        AutotagError: The tagger cannot run, or failed.
    """
    if sd_scripts is None:
        sd_scripts = sd_scripts_dir()
    if tagger.autotag_sections(recipe):
        tagger.preflight(sd_scripts, python)
    subsets = []
    for subset in plan.subsets:
        section = recipe.rules_for(recipe.dataset.subsets[subset.index]).autotag
        if section is None or not subset.images:
            subsets.append(subset)
            continue
        own = {image.source: split_tags(image.source_caption) for image in subset.images}
        merged = tagging.tag_captions(
            own, section, plan.build_dir, sd_scripts=sd_scripts, python=python, on_line=on_line
        )
        raw = {source: join_tags(tags) for source, tags in merged.items() if tags != own[source]}
        # One subset at a time: the same source in two subsets may be tagged by two settings.
        subsets.append(with_raw_captions(replace(plan, subsets=(subset,)), recipe, raw).subsets[0])
    return replace(plan, subsets=tuple(subsets))
