"""The build plan: everything a build will stage, compile and produce, computed purely.

:func:`build_plan` takes a validated recipe and the probed :class:`~lorabuild.probe.facts.Facts` and
returns a frozen :class:`Plan`: the staged subsets (:mod:`lorabuild.plan.subsets`), kohya's step
counts (its own bucketing and batch rounding), the typed ``--config_file`` and ``--dataset_config``
(:mod:`lorabuild.plan.kohya_config`), the grid's settings and the sample prompts
(:mod:`lorabuild.plan.evaluate`), the launch command and the files training will save
(:mod:`lorabuild.plan.layout`). It does no I/O; rendering and writing live in
:mod:`lorabuild.build.artefacts` and :mod:`lorabuild.render.writer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lorabuild import KOHYA_COMMIT, __version__
from lorabuild.kohya import families
from lorabuild.kohya.buckets import batches_per_epoch, bucket_for, total_steps
from lorabuild.kohya.config import DatasetConfig, KohyaConfig
from lorabuild.kohya.launch import SD_SCRIPTS_PREFIX, LaunchSpec, accelerate_argv
from lorabuild.kohya.outputs import TrainingOutputs, saved_epochs
from lorabuild.plan.defaults import Resolved, apply_defaults
from lorabuild.plan.evaluate import GridSettings, grid_settings, sample_prompts
from lorabuild.plan.kohya_config import kohya_config, kohya_dataset_config
from lorabuild.plan.layout import BuildLayout, relpath
from lorabuild.plan.subsets import (
    CutOut,
    Subsets,
    bucket_settings,
    epoch_bucket_counts,
    plan_subsets,
    staged_caption,
)
from lorabuild.probe.facts import Facts
from lorabuild.recipe.load import LoadedRecipe
from lorabuild.recipe.schema import PickSection, Recipe

PLAN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """Everything one build compiles to.

    Attributes:
        name: Output name.
        build_dir: ``<build root>/<name>``.
        recipe_file: The recipe file (for messages and plan.json).
        recipe_hash: sha256 of the recipe document after overrides.
        family: Model family (sd15, sd2, sdxl).
        script: The kohya training script.
        subsets: The staged subsets.
        bucket_counts: Samples per bucket in one epoch (repeats and regularisation included).
        batches_per_epoch: kohya's ``num batches per epoch``.
        total_steps: kohya's ``total optimization steps``.
        config: kohya's ``--config_file`` options.
        dataset_config: kohya's ``--dataset_config`` options.
        saves: The files training saves, by epoch.
        grid: What ``[evaluate]`` asks of the grid (and of kohya's samples).
        sample_prompts: Text of ``sample_prompts.txt``.
        launch: The command that trains.
        on_bad_image: ``images.on_bad_image``: what staging does with an image that fails to
            convert (``error`` or ``skip``).
        num_processes: Training processes (GPUs) accelerate launches; each takes its share of
            every epoch's batches, so ``total_steps`` counts the steps of one process.
        defaults: The family's defaults and memory preset applied to keys the recipe leaves out.
        pick: ``[pick]``: the thresholds of the grid's scores and the shortlist's length.
    """

    name: str
    build_dir: Path
    recipe_file: Path
    recipe_hash: str
    family: str
    script: str
    subsets: Subsets
    bucket_counts: tuple[tuple[tuple[int, int], int], ...]
    batches_per_epoch: int
    total_steps: int
    config: KohyaConfig
    dataset_config: DatasetConfig
    saves: TrainingOutputs
    grid: GridSettings
    sample_prompts: str
    launch: LaunchSpec
    on_bad_image: str = "error"
    num_processes: int = 1
    defaults: Resolved | None = None
    pick: PickSection = field(default_factory=PickSection)

    @property
    def layout(self) -> BuildLayout:
        """Where each file of the build folder sits."""
        return BuildLayout(self.build_dir)

    @property
    def outputs(self) -> tuple[str, ...]:
        """Files training will save, relative to the build folder."""
        return self.saves.expected()

    @property
    def epochs(self) -> int:
        """Epochs to train (kohya's ``max_train_epochs``)."""
        return self.config.training.max_train_epochs

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch."""
        return self.total_steps // max(1, self.epochs)

    def manifest(self) -> dict[str, Any]:
        """The versioned ``plan.json`` document (no timestamps: same inputs, same bytes)."""
        return {
            "schema_version": PLAN_SCHEMA_VERSION,
            "lorabuild_version": __version__,
            "kohya_commit": KOHYA_COMMIT,
            "name": self.name,
            "recipe": relpath(self.recipe_file, self.build_dir),
            "recipe_hash": self.recipe_hash,
            "family": self.family,
            "script": self.script,
            "subsets": [
                {
                    "source": relpath(s.source, self.build_dir),
                    "staged": BuildLayout.staged(s.folder),
                    "trigger": s.trigger,
                    "images": len(s.images),
                    "repeats": s.repeats,
                    "is_reg": s.is_reg,
                }
                for s in self.subsets
            ],
            "buckets": [{"resolution": list(b), "samples": n} for b, n in self.bucket_counts],
            "batches_per_epoch": self.batches_per_epoch,
            "epochs": self.epochs,
            "total_steps": self.total_steps,
            "outputs": list(self.outputs),
        } | ({"num_processes": self.num_processes} if self.num_processes > 1 else {})


def resolve(recipe: Recipe, facts: Facts) -> Resolved:
    """``recipe`` as it will be trained: its family's defaults (and memory preset) applied."""
    return apply_defaults(recipe, families.get(family_of(recipe, facts)))


def family_of(recipe: Recipe, facts: Facts) -> str:
    """The recipe's family, else the detected one, else the fallback (rules report the ambiguity)."""
    if recipe.model.family:
        return recipe.model.family
    detected = facts.model.family
    return detected if detected in families.names() else families.FALLBACK


def with_raw_captions(plan: Plan, recipe: Recipe, raw: Mapping[Path, str]) -> Plan:
    """The plan with new captions, before the rules, for some images (by source path).

    The hook for a caption source other than the caption files, such as an auto-tagger: the
    rules run on ``raw`` exactly as on a caption file's text, and :func:`lorabuild.build.dataset.stage`
    then writes what changed.
    """
    subsets = []
    for subset in plan.subsets:
        images = tuple(
            replace(
                image,
                source_caption=raw[image.source],
                caption=staged_caption(recipe, subset.index, raw[image.source]),
            )
            if image.source in raw
            else image
            for image in subset.images
        )
        subsets.append(replace(subset, images=images))
    return replace(plan, subsets=tuple(subsets))


def with_cutouts(plan: Plan, recipe: Recipe, cutouts: Mapping[tuple[int, Path], CutOut | None]) -> Plan:
    """The plan with cut-outs staged in place of some images, by (subset index, source path).

    The hook for ``[images.remove_background]``: a cut-out replaces the image's conversion (it is
    already oriented and flattened), and a cropped one gets its own size and bucket. An image
    mapped to None keeps its plan entry (the mask covered almost nothing or everything).
    """
    settings = bucket_settings(recipe)
    subsets = []
    for subset in plan.subsets:
        images = []
        for image in subset.images:
            cutout = cutouts.get((subset.index, image.source))
            if cutout is None:
                images.append(image)
                continue
            size = cutout.size
            bucket = image.bucket if size == image.size else bucket_for(settings, *size)
            images.append(replace(image, cutout=cutout, conversion=None, size=size, bucket=bucket))
        subsets.append(replace(subset, images=tuple(images)))
    return replace(plan, subsets=tuple(subsets))


def build_plan(loaded: LoadedRecipe, facts: Facts, build_root: Path, subsets: Subsets | None = None) -> Plan:
    """Compute the whole build plan for a validated recipe and its probed facts.

    Args:
        loaded: The validated recipe.
        facts: Its probed facts.
        build_root: The folder holding the build folders.
        subsets: :func:`~lorabuild.plan.subsets.plan_subsets` of ``loaded.recipe`` and ``facts``
            when the caller has them already (the check computes them once for the rules too).
    """
    resolved = resolve(loaded.recipe, facts)
    recipe = resolved.recipe
    build_dir = build_root / recipe.name
    family = family_of(recipe, facts)
    subsets = plan_subsets(recipe, facts) if subsets is None else subsets
    counts = epoch_bucket_counts(subsets)
    batches = batches_per_epoch(counts, recipe.dataset.batch_size)
    steps = total_steps(
        batches,
        recipe.training.epochs,
        recipe.training.gradient_accumulation_steps,
        recipe.launch.num_processes,
    )
    script = families.get(family).train_script
    config = kohya_config(recipe, family, build_dir, loaded.section_hash())
    grid = grid_settings(recipe, config, family)
    return Plan(
        name=recipe.name,
        build_dir=build_dir,
        recipe_file=loaded.path,
        recipe_hash=loaded.section_hash(),
        family=family,
        script=script,
        subsets=subsets,
        bucket_counts=tuple(sorted(counts.items())),
        batches_per_epoch=batches,
        total_steps=steps,
        config=config,
        dataset_config=kohya_dataset_config(recipe, subsets),
        saves=training_outputs(recipe),
        grid=grid,
        sample_prompts=sample_prompts(recipe.name, grid),
        launch=launch_spec(recipe, script),
        on_bad_image=recipe.images.on_bad_image,
        num_processes=recipe.launch.num_processes,
        defaults=resolved,
        pick=recipe.pick,
    )


def training_outputs(recipe: Recipe) -> TrainingOutputs:
    """What training the recipe saves (``[training]``; kohya's ``output_name`` is the recipe's name)."""
    t = recipe.training
    return TrainingOutputs(
        name=recipe.name,
        ext=t.save_model_as,
        epochs=t.epochs,
        saved=tuple(saved_epochs(t.epochs, t.save_every_n_epochs)),
        save_state=t.save_state,
    )


def launch_spec(recipe: Recipe, script: str) -> LaunchSpec:
    """``accelerate launch`` of the family's kohya script with the two compiled TOML files.

    ``[launch] gpus`` becomes accelerate's hardware options: a count above 1 adds ``--multi_gpu``,
    a list of ids adds ``--gpu_ids`` (and ``--multi_gpu`` for two or more), 0 adds ``--cpu``; the
    default (one GPU, whichever accelerate picks) adds none of them.
    """
    launch = recipe.launch
    hardware: tuple[str, ...] = ()
    if launch.gpus == 0:
        hardware = ("--cpu",)
    elif launch.num_processes > 1:
        hardware = ("--multi_gpu",)
    gpu_ids = ("--gpu_ids", ",".join(map(str, launch.gpus))) if isinstance(launch.gpus, list) else ()
    port = ("--main_process_port", str(launch.main_process_port)) if launch.main_process_port else ()
    extra = accelerate_argv(launch.accelerate_args)
    head = (
        "accelerate",
        "launch",
        *hardware,
        "--num_cpu_threads_per_process",
        str(launch.num_cpu_threads_per_process),
        "--num_processes",
        str(launch.num_processes),
        *gpu_ids,
        "--num_machines",
        "1",
        "--mixed_precision",
        recipe.training.mixed_precision,
        "--dynamo_backend",
        "no",
        *port,
    )
    tail = (
        SD_SCRIPTS_PREFIX + script,
        "--config_file",
        BuildLayout.CONFIG_TOML,
        "--dataset_config",
        BuildLayout.DATASET_TOML,
    )
    return LaunchSpec(
        argv=(*head, *(item for item, _ in extra), *tail),
        env=tuple(sorted(recipe.launch.env.items())),
        origins=(*[""] * len(head), *(key for _, key in extra), *[""] * len(tail)),
    )
