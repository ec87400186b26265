"""The prepare stage: the dataset in kohya's layout, cut out and auto-tagged first where the recipe asks.

:func:`prepare` is the stage's verb: :func:`cut_out_plan`, :func:`autotagged`, then :func:`lorabuild.build.dataset.stage`,
which stages each subset into ``build/<name>/dataset/<repeats>_<trigger>/`` (links, converted
images, rule-edited captions; incremental, never touching the sources) and writes ``tags.csv``.

**Auto-tagging** comes first where ``[captions.autotag]`` is set: :func:`autotag_plan` merges the
tags of kohya's WD14 tagger (:mod:`lorabuild.kohya.tagging` runs and caches it) into the
plan's captions, before the caption rules.

**Background removal** comes before both where ``[images.remove_background]`` applies:
:func:`cut_out_plan` has :mod:`lorabuild.build.cutout` make each image's cut-out (cached masks from
the segmentation model, then the rendering), and stages it in place of the source; the tagger
then tags the cut-outs, as the tutorial tags cleaned images.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from lorabuild.build import cutout
from lorabuild.build.dataset import StageReport, stage
from lorabuild.kohya import tagger, tagging
from lorabuild.plan.plan import Plan, with_cutouts, with_raw_captions
from lorabuild.plan.subsets import CutOut
from lorabuild.problems import Problem
from lorabuild.recipe.captions import join_tags, split_tags
from lorabuild.recipe.schema import Recipe
from lorabuild.render.meter import Progress
from lorabuild.settings import sd_scripts_dir


def prepare(plan: Plan, recipe: Recipe | None = None, progress: Progress | None = None) -> StageReport:
    """Stage the dataset into the build folder, cutting out and auto-tagging first where ``recipe``
    asks for it; ``progress`` is told how each long step advances.

    Raises:
        CutoutError: The segmentation model cannot run or failed (nothing is staged).
        AutotagError: kohya's WD14 tagger cannot run or failed (nothing is staged).
        RecipeError: As :func:`~lorabuild.build.dataset.stage`.
        WriteError: As :func:`~lorabuild.build.dataset.stage`.
    """
    cut, kept = cut_out_plan(plan, recipe, progress=progress)
    report = stage(autotagged(cut, recipe), progress)
    return replace(report, problems=(*kept, *report.problems)) if kept else report


def cut_out_plan(
    plan: Plan,
    recipe: Recipe | None,
    *,
    python: str = sys.executable,
    on_line: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> tuple[Plan, list[Problem]]:
    """``plan`` with each image of a subset with ``[images.remove_background]`` staged as its cut-out,
    and a warning for each image kept as it was (its subject covered almost nothing or everything).

    Raises:
        CutoutError: The model does not fit, cannot run, or failed.
    """
    if recipe is None:
        return plan, []
    tables = {
        subset.index: table
        for subset in plan.subsets
        if subset.images and (table := recipe.remove_background_for(recipe.dataset.subsets[subset.index]))
    }
    if not tables:
        return plan, []
    cutout.preflight(list(tables.values()), python)
    runs: dict[str, cutout.CutoutRun] = {}
    found: dict[tuple[int, Path], CutOut | None] = {}
    for subset in plan.subsets:
        table = tables.get(subset.index)
        if table is None:
            continue
        jobs = {
            image.source: cutout.CutoutJob(
                image.source, image.conversion.orientation if image.conversion else 1
            )
            for image in subset.images
        }
        run = cutout.cut_out(
            list(jobs.values()),
            table,
            recipe.images,
            plan.build_dir,
            python=python,
            on_line=on_line,
            progress=progress,
        )
        runs[f"dataset.subsets[{subset.index}]"] = run
        for source, job in jobs.items():
            result = run.results[job]
            found[(subset.index, source)] = (
                None if result.file is None else CutOut(result.file, result.key, result.size, result.coverage)
            )
    cutout.save_decisions(plan.build_dir, list(runs.values()))
    return with_cutouts(plan, recipe, found), cutout.kept_warnings(runs)


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
    for name in dict.fromkeys(section.tagger for _, section in tagger.autotag_sections(recipe)):
        tagger.preflight(sd_scripts, python, name)
    subsets = []
    for subset in plan.subsets:
        section = recipe.rules_for(recipe.dataset.subsets[subset.index]).autotag
        if section is None or not subset.images:
            subsets.append(subset)
            continue
        # A cut-out is tagged as staged (the tutorial tags the cleaned images).
        pixels: dict[Path, Path] = {}
        for image in subset.images:
            shown = image.cutout.file if image.cutout else image.source
            # Identical images share one cut-out file: the second is tagged by its source's path.
            pixels[image.source] = image.source if shown in pixels.values() else shown
        own = {pixels[image.source]: split_tags(image.source_caption) for image in subset.images}
        merged = tagging.tag_captions(
            own, section, plan.build_dir, sd_scripts=sd_scripts, python=python, on_line=on_line
        )
        raw = {
            source: join_tags(merged[shown])
            for source, shown in pixels.items()
            if merged[shown] != own[shown]
        }
        # One subset at a time: the same source in two subsets may be tagged by two settings.
        subsets.append(with_raw_captions(replace(plan, subsets=(subset,)), recipe, raw).subsets[0])
    return replace(plan, subsets=tuple(subsets))
