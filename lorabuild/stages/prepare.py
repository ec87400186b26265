"""Staging: the dataset in kohya's layout, made from the plan, never touching the sources.

Each subset becomes ``build/<name>/dataset/<repeats>_<trigger>/`` holding its images and one
``.txt`` caption per image, after the caption rules. An image is a hard link to the source
where the file system allows (no admin rights needed on Windows), else a copy; an image kohya
would misread (EXIF orientation, transparency, a format it cannot list) is a converted PNG
(:mod:`lorabuild.probe.imagefix`). An image is staged only once it decodes (:mod:`lorabuild.probe.decodecheck`;
checked for new and changed sources only). ``build/<name>/tags.csv`` gets the tag table of :mod:`lorabuild.plan.tags`.

Sources are never written to: every write goes to a temporary file in the stage and is renamed
into place (:func:`lorabuild.render.writer.write_atomic`), so replacing a staged hard link replaces the
link, never the file it shares with the source. A caption under a name not yet in the stage is
created exclusively instead (``O_EXCL``: it cannot be a link), saving the rename.

**Incremental.** ``dataset/.stage.json`` (the stage manifest) records every staged file: for an
image, its source's path and :class:`~lorabuild.probe.facts.FileKey` (size, mtime, inode) with its
header facts and hashes (the probe cache :func:`lorabuild.probe.facts.gather` reads), how it was staged
(link, copy, or the conversion's key) and the staged file's own key; for a caption, the sha256 of
its text and its key. A file whose record matches the plan and whose staged key is unchanged is
left alone, so a second ``prepare`` with nothing changed costs a ``stat`` per file and writes
nothing. A changed caption re-writes that caption; a changed source re-stages that image (and
deletes kohya's latent caches for it); a source that is gone leaves the stage.

**Interrupted runs converge.** The manifest is written at the end, and on Ctrl-C, with what was
finished. After a harder stop, files staged since the last manifest have no record: a link
already pointing at the source's inode is recognised as it is, a caption is compared byte for
byte, a conversion is done again. Temporary files left behind are removed with everything else
the plan does not name.

**A failed write stops cleanly.** When the build's disk is full (or read-only, or forbidden),
staging raises :class:`~lorabuild.render.writer.WriteError` naming the dataset folder, about how many
bytes it still had to write and how many are free; the file being written is removed, the
manifest keeps what was finished, and the rest of the stage is as the last run left it.

kohya's own files in the stage are kept while they are valid: ``cache_latents_to_disk`` writes
``<stem>.npz`` or ``<stem>_<W>x<H>_<arch>.npz`` next to each image and
``cache_text_encoder_outputs_to_disk`` ``<stem>_te_outputs.npz``; a re-staged image loses its
latent caches and a re-written caption its text-encoder caches, so kohya computes them again.

:func:`prepare` is the stage's verb: :func:`autotagged`, then :func:`stage`.

**Auto-tagging** comes first where ``[captions.autotag]`` is set: :func:`autotag_plan` merges the
tags of kohya's WD14 tagger (:mod:`lorabuild.kohya.tagger`, which runs and caches it) into the
plan's captions, before the caption rules.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from hashlib import sha256
from pathlib import Path
from typing import Any

from lorabuild import __version__
from lorabuild.kohya import tagger
from lorabuild.plan.layout import BuildLayout
from lorabuild.plan.plan import Plan, with_raw_captions
from lorabuild.plan.subsets import STAGED_CAPTION_EXTENSION, StagedImage
from lorabuild.plan.tags import tags_csv
from lorabuild.probe.decodecheck import decode_problems
from lorabuild.probe.facts import (
    PROBE_CACHE_VERSION,
    PROBE_FIELDS,
    STAGE_MANIFEST,
    STAGED_FIELDS,
    probe_record,
    read_stage_manifest,
)
from lorabuild.probe.imagefix import convert_image
from lorabuild.problems import Problem, RecipeError, error, warning
from lorabuild.recipe.captions import join_tags, split_tags
from lorabuild.recipe.schema import Recipe
from lorabuild.render.writer import Artefact, write_all, write_atomic, write_error, write_files, writing
from lorabuild.settings import sd_scripts_dir


def prepare(plan: Plan, recipe: Recipe | None = None) -> StageReport:
    """Stage the dataset into the build folder, auto-tagging first where ``recipe`` asks for it.

    Raises:
        AutotagError: kohya's WD14 tagger cannot run or failed (nothing is staged).
        RecipeError: As :func:`stage`.
        WriteError: As :func:`stage`.
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
    picks the images by ``mode`` (:func:`lorabuild.kohya.tagger.tag_captions`); the merged tags
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
        merged = tagger.tag_captions(
            own, section, plan.build_dir, sd_scripts=sd_scripts, python=python, on_line=on_line
        )
        raw = {source: join_tags(tags) for source, tags in merged.items() if tags != own[source]}
        # One subset at a time: the same source in two subsets may be tagged by two settings.
        subsets.append(with_raw_captions(replace(plan, subsets=(subset,)), recipe, raw).subsets[0])
    return replace(plan, subsets=tuple(subsets))
