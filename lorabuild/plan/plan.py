"""The build plan: everything a build will stage, compile and produce, computed purely.

:func:`build_plan` takes a validated recipe and the probed :class:`~lorabuild.probe.facts.Facts` and
returns a frozen :class:`Plan`: the staged dataset layout with each image's caption and bucket,
kohya's step counts (its own bucketing and batch rounding), the ``--config_file`` and
``--dataset_config`` documents as data, the sample prompts, the launch command and the files
training will save. It does no I/O; rendering and writing live in :mod:`lorabuild.build.artefacts` and
:mod:`lorabuild.render.writer`.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from lorabuild import KOHYA_COMMIT, __version__
from lorabuild.kohya import families
from lorabuild.kohya.buckets import BucketSettings, batches_per_epoch, bucket_for, total_steps
from lorabuild.kohya.launch import SD_SCRIPTS_PREFIX, LaunchSpec, accelerate_argv
from lorabuild.probe.facts import Facts, Fingerprint
from lorabuild.probe.imagefix import Conversion, plan_conversion, staged_image_names
from lorabuild.probe.images import ImageInfo
from lorabuild.recipe.captions import CaptionFile, apply_rules, join_tags, split_tags
from lorabuild.recipe.load import LoadedRecipe
from lorabuild.recipe.schema import DeepSpeedSection, ImagesSection, Recipe, line_problem
from lorabuild.render.quoting import comment_text

PLAN_SCHEMA_VERSION = 1

# Default bucket granularity kohya uses (--bucket_reso_steps 64); SDXL accepts 32 too.
DEFAULT_BUCKET_STEPS = 64

STAGED_CAPTION_EXTENSION = ".txt"


@dataclass(frozen=True)
class StagedImage:
    """One image as it will sit in the staged dataset.

    Attributes:
        source: The user's image file (never modified).
        name: File name inside the staged folder.
        size: (width, height) as kohya reads the staged file (a converted copy's own size: an
            EXIF-rotated photo's sides are swapped).
        bucket: The (width, height) bucket kohya will put it in.
        caption: The staged caption text, after the rules.
        source_caption: The caption before the rules: the caption file's text (or what an
            auto-tagger gave, see :func:`with_raw_captions`).
        conversion: How the staged copy is converted; None when it is a link to the source (a
            copy where the file system cannot link).
        fingerprint: The source file's identity and hashes when it was probed (the stage
            manifest records it, so that unchanged files are neither re-probed nor re-staged).
        info: The source's header facts (recorded in the stage manifest for the next check).
        caption_file: The caption file as read (its text is recorded in the stage manifest, so
            that the next check does not read an unchanged caption again).
    """

    source: Path
    name: str
    size: tuple[int, int]
    bucket: tuple[int, int]
    caption: str
    source_caption: str = ""
    conversion: Conversion | None = None
    fingerprint: Fingerprint | None = None
    info: ImageInfo | None = None
    caption_file: CaptionFile | None = None

    @property
    def how(self) -> str:
        """``link`` (a hard link, or a copy across file systems) or ``convert``."""
        return "link" if self.conversion is None else "convert"


@dataclass(frozen=True)
class SubsetPlan:
    """One subset's staged folder and its images."""

    index: int
    source: Path
    folder: str
    trigger: str | None
    repeats: int
    is_reg: bool
    images: tuple[StagedImage, ...]


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
        outputs: Files training will save, relative to the build folder.
        config: kohya ``--config_file`` document (sections are cosmetic; kohya flattens them).
        dataset_config: kohya ``--dataset_config`` document.
        sample_prompts: Text of ``sample_prompts.txt``.
        launch: The command that trains.
        on_bad_image: ``images.on_bad_image``: what staging does with an image that fails to
            convert (``error`` or ``skip``).
        num_processes: Training processes (GPUs) accelerate launches; each takes its share of
            every epoch's batches, so ``total_steps`` counts the steps of one process.
    """

    name: str
    build_dir: Path
    recipe_file: Path
    recipe_hash: str
    family: str
    script: str
    subsets: tuple[SubsetPlan, ...]
    bucket_counts: tuple[tuple[tuple[int, int], int], ...]
    batches_per_epoch: int
    total_steps: int
    outputs: tuple[str, ...]
    config: dict[str, dict[str, Any]]
    dataset_config: dict[str, Any]
    sample_prompts: str
    launch: LaunchSpec
    on_bad_image: str = "error"
    num_processes: int = 1

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch."""
        return self.total_steps // max(1, int(self.config["training"]["max_train_epochs"]))

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
                    "staged": f"dataset/{s.folder}",
                    "trigger": s.trigger,
                    "images": len(s.images),
                    "repeats": s.repeats,
                    "is_reg": s.is_reg,
                }
                for s in self.subsets
            ],
            "buckets": [{"resolution": list(b), "samples": n} for b, n in self.bucket_counts],
            "batches_per_epoch": self.batches_per_epoch,
            "epochs": self.config["training"]["max_train_epochs"],
            "total_steps": self.total_steps,
            "outputs": list(self.outputs),
        } | ({"num_processes": self.num_processes} if self.num_processes > 1 else {})


def relpath(target: Path, start: Path) -> str:
    """``target`` relative to ``start`` with forward slashes (absolute if on another drive)."""
    try:
        return PurePosixPath(Path(os.path.relpath(target, start))).as_posix()
    except ValueError:  # Windows: different drives
        return target.resolve().as_posix()


def portable_path(target: Path, build_dir: Path) -> str:
    """How a build file refers to ``target``: relative inside the project, else absolute.

    The project is the folder holding the build root (``<project>/build/<name>``). Paths into it
    stay relative, so the project can be copied or moved whole; paths outside it (a model in a
    shared folder, a cache) are written absolute rather than as a long climb of ``../``.
    """
    project = build_dir.resolve().parent.parent
    resolved = target.resolve()
    if resolved == project or project in resolved.parents:
        return relpath(resolved, build_dir.resolve())
    return resolved.as_posix()


def is_rooted(path: str) -> bool:
    """Whether a path as :func:`portable_path` writes it names a place without a folder to start from.

    True for an absolute path on any system: ``/opt/sd-scripts``, ``C:/kohya``, ``D:\\kohya``,
    ``\\\\server\\share\\kohya``, ``//server/share``, and also for ``\\kohya`` and ``C:kohya``, which
    Windows resolves against the current drive or its current folder, never against a script's
    folder. A script uses a rooted path as it is; PowerShell's ``Join-Path`` would glue it onto
    the script's folder (``Join-Path C:\\build D:\\kohya`` is ``C:\\build\\D:\\kohya``).
    """
    windows = PureWindowsPath(path)
    return bool(windows.drive or windows.root) or PurePosixPath(path).is_absolute()


def family_of(recipe: Recipe, facts: Facts) -> str:
    """The recipe's family, else the detected one, else the fallback (rules report the ambiguity)."""
    if recipe.model.family:
        return recipe.model.family
    detected = facts.model.family
    return detected if detected in families.names() else families.FALLBACK


def bucket_settings(recipe: Recipe) -> BucketSettings:
    """kohya's bucket settings for the recipe's dataset."""
    ds = recipe.dataset
    return BucketSettings(
        resolution=ds.resolution,
        enable_bucket=ds.enable_bucket,
        min_reso=ds.min_bucket_reso,
        max_reso=ds.max_bucket_reso,
        reso_steps=ds.bucket_reso_steps or DEFAULT_BUCKET_STEPS,
        no_upscale=ds.bucket_no_upscale,
    )


def staged_folder_names(recipe: Recipe) -> list[str]:
    """Folder names in kohya's ``<repeats>_<trigger>`` style, made unique per subset."""
    names: list[str] = []
    for i, subset in enumerate(recipe.dataset.subsets):
        label = _safe_folder_part(subset.trigger) if subset.trigger else Path(subset.source).name or "images"
        base = f"{subset.repeats}_{'reg_' if subset.is_reg else ''}{label}"
        name = base if base not in names else f"{base}_{i}"
        names.append(name)
    return names


def _safe_folder_part(text: str) -> str:
    bad = '<>:"/\\|?*'
    cleaned = "".join("_" if c in bad or ord(c) < 32 else c for c in text).strip(" .")
    return cleaned or "images"


def staged_caption(recipe: Recipe, subset_index: int, caption_text: str) -> str:
    """The caption lorabuild writes for one image of a subset (after the rules)."""
    subset = recipe.dataset.subsets[subset_index]
    tags = apply_rules(split_tags(caption_text), recipe.rules_for(subset), subset.trigger)
    return join_tags(tags)


# The last plan_subsets result: the rules and build_plan of one check ask for the same
# (recipe, facts) several times, and with 10,000 images the captions cost most of a check.
_last_subsets: tuple[Recipe, Facts, tuple[SubsetPlan, ...]] | None = None


def plan_subsets(recipe: Recipe, facts: Facts) -> tuple[SubsetPlan, ...]:
    """Each subset's staged folder, images, buckets and captions (memoised for the last inputs)."""
    global _last_subsets
    if _last_subsets is not None and _last_subsets[0] is recipe and _last_subsets[1] is facts:
        return _last_subsets[2]
    result = _plan_subsets(recipe, facts)
    _last_subsets = (recipe, facts, result)
    return result


def bad_image(info: ImageInfo, settings: ImagesSection) -> str | None:
    """Why an image cannot be trained on (it does not decode, or is below ``images.min_side``), or None."""
    if info.problem:
        return info.problem
    width, height = info.pixel_size
    if settings.min_side and min(width, height) < settings.min_side:
        return (
            f"is {width}x{height}, smaller than images.min_side ({settings.min_side}) on its shorter side: "
            "replace it with a larger image or delete it"
        )
    return None


# Datasets repeat a handful of sizes many times: kohya's bucket choice is worked out once per size.
_bucket_for = functools.lru_cache(maxsize=4096)(bucket_for)


def _plan_subsets(recipe: Recipe, facts: Facts) -> tuple[SubsetPlan, ...]:
    settings = bucket_settings(recipe)
    folders = staged_folder_names(recipe)
    plans = []
    for i, (subset, sfacts) in enumerate(zip(recipe.dataset.subsets, facts.subsets, strict=True)):
        kept = [
            (info, caption, sfacts.fingerprint(n), plan_conversion(info, recipe.images))
            for n, (info, caption) in enumerate(zip(sfacts.images, sfacts.captions, strict=True))
            if bad_image(info, recipe.images) is None
        ]
        names = staged_image_names([k[0] for k in kept], [k[3] for k in kept])
        images = []
        for name, (info, caption, fingerprint, conversion) in zip(names, kept, strict=True):
            size = conversion.size if conversion else (info.width, info.height)
            images.append(
                StagedImage(
                    source=info.path,
                    name=name,
                    size=size,
                    bucket=_bucket_for(settings, *size),
                    caption=staged_caption(recipe, i, caption.text),
                    source_caption=caption.text,
                    conversion=conversion,
                    fingerprint=fingerprint,
                    info=info,
                    caption_file=caption,
                )
            )
        # kohya lists the staged folder sorted by name: the order it cycles regularisation
        # images in and splits validation images by.
        images.sort(key=lambda image: image.name)
        plans.append(
            SubsetPlan(
                i, subset.source, folders[i], subset.trigger, subset.repeats, subset.is_reg, tuple(images)
            )
        )
    return tuple(plans)


def with_raw_captions(plan: Plan, recipe: Recipe, raw: Mapping[Path, str]) -> Plan:
    """The plan with new captions, before the rules, for some images (by source path).

    The hook for a caption source other than the caption files, such as an auto-tagger: the
    rules run on ``raw`` exactly as on a caption file's text, and :func:`lorabuild.stages.prepare.stage`
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


def epoch_bucket_counts(subsets: tuple[SubsetPlan, ...]) -> Counter[tuple[int, int]]:
    """Samples per bucket in one epoch, as kohya's DreamBooth dataset registers them.

    Training images count ``repeats`` times. Regularisation images are cycled to match the
    number of training samples: one full pass with their repeats, then one more repeat per
    image in order until the count is reached (kohya's ``DreamBoothDataset.__init__``).
    """
    counts: Counter[tuple[int, int]] = Counter()
    num_train = 0
    for subset in subsets:
        if subset.is_reg:
            continue
        for image in subset.images:
            counts[image.bucket] += subset.repeats
            num_train += subset.repeats
    reg = [(image, subset.repeats) for subset in subsets if subset.is_reg for image in subset.images]
    if reg:
        n = 0
        first = True
        while n < num_train:
            for image, repeats in reg:
                add = repeats if first else 1
                counts[image.bucket] += add
                n += add
                if n >= num_train:
                    break
            first = False
    return counts


def saved_epochs(epochs: int, save_every_n_epochs: int | None) -> list[int]:
    """The epochs whose LoRA file a run keeps: every Nth, and always the last."""
    every = save_every_n_epochs or epochs
    return [e for e in range(1, epochs) if e % every == 0] + [epochs]


def epoch_file(name: str, epoch: int, ext: str) -> str:
    """An epoch's LoRA file as kohya names intermediate saves: ``output/NAME-0000EE.ext``."""
    return f"output/{name}-{epoch:06d}.{ext}"


def expected_outputs(recipe: Recipe) -> tuple[str, ...]:
    """Files a training run leaves, relative to the build folder.

    Every saved epoch as ``NAME-0000EE.ext``, the last included: kohya saves the last epoch only
    as ``NAME.ext``, and ``lorabuild train`` links it to its numbered name once training
    succeeded, so both names are listed. With ``save_state``, each intermediate save's state
    folder (what a resume starts from) and the final state.
    """
    t = recipe.training
    ext = t.save_model_as
    epochs = saved_epochs(t.epochs, t.save_every_n_epochs)
    files = [epoch_file(recipe.name, e, ext) for e in epochs]
    files.append(f"output/{recipe.name}.{ext}")
    if t.save_state:
        files.extend(f"output/{recipe.name}-{e:06d}-state/" for e in epochs[:-1])
        files.append(f"output/{recipe.name}-state/")
    return tuple(files)


def build_plan(loaded: LoadedRecipe, facts: Facts, build_root: Path) -> Plan:
    """Compute the whole build plan for a validated recipe and its probed facts."""
    recipe = loaded.recipe
    build_dir = build_root / recipe.name
    family = family_of(recipe, facts)
    subsets = plan_subsets(recipe, facts)
    counts = epoch_bucket_counts(subsets)
    batches = batches_per_epoch(counts, recipe.dataset.batch_size)
    steps = total_steps(
        batches,
        recipe.training.epochs,
        recipe.training.gradient_accumulation_steps,
        recipe.launch.num_processes,
    )
    script = families.get(family).train_script
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
        outputs=expected_outputs(recipe),
        config=kohya_config(recipe, family, build_dir, loaded.section_hash()),
        dataset_config=kohya_dataset_config(recipe, subsets),
        sample_prompts=sample_prompts(recipe),
        launch=launch_spec(recipe, script),
        on_bad_image=recipe.images.on_bad_image,
        num_processes=recipe.launch.num_processes,
    )


def _drop_none(table: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if v is not None and v is not False}


def kohya_config(recipe: Recipe, family: str, build_dir: Path, recipe_hash: str) -> dict[str, dict[str, Any]]:
    """The ``--config_file`` document. Sections only group keys for readers; kohya flattens them.

    Flags set to false and unset values are left out, so the file reads like a hand-written one
    and kohya's own defaults apply.
    """
    m, n, o, t, e = recipe.model, recipe.network, recipe.optimizer, recipe.training, recipe.evaluate
    fam = families.get(family)

    def rel(path: Path) -> str:
        return portable_path(path, build_dir)

    module, algo = fam.network_modules[n.module]
    network_args = []
    if algo:
        network_args.append(f"algo={algo}")
    if n.conv_dim is not None:
        network_args.append(f"conv_dim={n.conv_dim}")
    if n.conv_alpha is not None:
        network_args.append(f"conv_alpha={_arg(n.conv_alpha)}")
    network_args.extend(f"{k}={_arg(v)}" for k, v in n.args.items())
    config: dict[str, dict[str, Any]] = {
        "model": _drop_none(
            {
                "pretrained_model_name_or_path": rel(m.base),
                "v2": fam.v2,
                "v_parameterization": m.v_parameterization,
                "clip_skip": m.clip_skip,
                "vae": rel(m.vae) if m.vae else None,
                "tokenizer_cache_dir": rel(m.tokenizer_cache_dir) if m.tokenizer_cache_dir else None,
            }
        ),
        "network": _drop_none(
            {
                "network_module": module,
                "network_dim": n.dim,
                "network_alpha": float(n.alpha),
                "network_dropout": n.dropout,
                "network_args": network_args or None,
                "network_train_unet_only": n.train == "unet",
                "network_train_text_encoder_only": n.train == "text_encoder",
                "network_weights": rel(n.weights) if n.weights else None,
            }
        ),
        "optimizer": _drop_none(
            {
                "optimizer_type": o.type,
                "learning_rate": o.lr,
                "unet_lr": o.unet_lr,
                "text_encoder_lr": o.text_encoder_lr,
                "lr_scheduler": o.scheduler,
                "lr_warmup_steps": warmup_value(o.warmup_steps) or None,
                "lr_scheduler_num_cycles": o.restart_cycles
                if o.scheduler == "cosine_with_restarts"
                else None,
                "lr_scheduler_power": o.power,
                "lr_scheduler_min_lr_ratio": o.min_lr_ratio,
                "max_grad_norm": o.max_grad_norm if o.max_grad_norm != 1.0 else None,
                "optimizer_args": [f"{k}={_literal(v)}" for k, v in o.args.items()] or None,
            }
        ),
        "training": _drop_none(
            {
                "max_train_epochs": t.epochs,
                "gradient_accumulation_steps": t.gradient_accumulation_steps
                if t.gradient_accumulation_steps > 1
                else None,
                "mixed_precision": t.mixed_precision,
                "full_fp16": t.full_fp16,
                "full_bf16": t.full_bf16,
                "no_half_vae": t.no_half_vae,
                "seed": t.seed,
                "cache_latents": t.cache_latents,
                "cache_latents_to_disk": t.cache_latents_to_disk,
                "max_token_length": t.max_token_length if t.max_token_length != 75 else None,
                "xformers": t.attention == "xformers",
                "sdpa": t.attention == "sdpa",
                "gradient_checkpointing": t.gradient_checkpointing,
                "prior_loss_weight": t.prior_loss_weight,
                "noise_offset": t.noise_offset,
                "min_snr_gamma": t.min_snr_gamma,
                "max_data_loader_n_workers": t.max_data_loader_n_workers,
            }
        ),
        "saving": _drop_none(
            {
                "output_dir": "output",
                "output_name": recipe.name,
                "save_model_as": t.save_model_as,
                "save_precision": t.save_precision,
                "save_every_n_epochs": t.save_every_n_epochs,
                "save_state": t.save_state,
            }
        ),
        # console_log_simple: plain, unwrapped log lines on stdout (kohya's rich handler wraps them
        # at 80 columns when not on a terminal), so lorabuild can read them (KOHYA.md section 9).
        "logging": {"logging_dir": "logs", "log_prefix": recipe.name + "_", "console_log_simple": True},
        "sampling": _drop_none(
            {
                "sample_prompts": "sample_prompts.txt" if e.sample_every_n_epochs and e.prompts else None,
                "sample_every_n_epochs": e.sample_every_n_epochs if e.prompts else None,
                "sample_sampler": e.sampler if e.sample_every_n_epochs and e.prompts else None,
            }
        ),
        "metadata": _drop_none(
            {
                "metadata_title": recipe.title or recipe.name,
                "metadata_author": recipe.author,
                "metadata_description": recipe.description,
                "metadata_trigger_phrase": first_trigger(recipe),
                "training_comment": f"lorabuild {__version__}; recipe sha256 {recipe_hash}",
            }
        ),
    }
    if recipe.launch.deepspeed is not None:
        config["deepspeed"] = deepspeed_options(recipe.launch.deepspeed, rel)
    if recipe.kohya:
        config["kohya"] = dict(recipe.kohya)
    return {k: v for k, v in config.items() if v}


def _device(name: str) -> str | None:
    return None if name == "none" else name


def deepspeed_options(ds: DeepSpeedSection, rel: Callable[[Path], str]) -> dict[str, Any]:
    """kohya's own DeepSpeed options (``deepspeed_utils.add_deepspeed_arguments``) for the config file.

    kohya builds accelerate's ``DeepSpeedPlugin`` from these itself, so accelerate gets no DeepSpeed
    options. ``none`` offload devices are left out (kohya's default, None).
    """
    optimizer_path, param_path = ds.offload_optimizer_nvme_path, ds.offload_param_nvme_path
    return _drop_none(
        {
            "deepspeed": True,
            "zero_stage": ds.zero_stage,
            "offload_optimizer_device": _device(ds.offload_optimizer_device),
            "offload_optimizer_nvme_path": rel(optimizer_path) if optimizer_path else None,
            "offload_param_device": _device(ds.offload_param_device),
            "offload_param_nvme_path": rel(param_path) if param_path else None,
            "zero3_init_flag": ds.zero3_init_flag,
            "zero3_save_16bit_model": ds.zero3_save_16bit_model,
            "fp16_master_weights_and_gradients": ds.fp16_master_weights_and_gradients,
        }
    )


def warmup_value(warmup: int | float | str) -> int | float:
    """kohya's lr_warmup_steps in a config file: steps (int) or a fraction of all steps (float < 1).

    kohya understands "5%" only on its command line; in a config file the string would reach the
    scheduler unconverted, so a percentage is written as the fraction it means.
    """
    if isinstance(warmup, str):
        return float(warmup.rstrip("%")) / 100
    return warmup


def _arg(value: object) -> str:
    """A network_args value: kohya passes them to the network as strings."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _literal(value: object) -> str:
    """An optimizer_args value: kohya evaluates it as a Python literal (strings need quotes)."""
    return repr(value)


def first_trigger(recipe: Recipe) -> str | None:
    """The first subset trigger, used for {trigger} in prompts and the metadata."""
    return next((s.trigger for s in recipe.dataset.subsets if s.trigger), None)


def kohya_dataset_config(recipe: Recipe, subsets: tuple[SubsetPlan, ...]) -> dict[str, Any]:
    """The ``--dataset_config`` document, pointing at the staged folders."""
    ds = recipe.dataset
    general = _drop_none(
        {
            "caption_extension": STAGED_CAPTION_EXTENSION,
            "shuffle_caption": ds.shuffle_caption,
            "keep_tokens": ds.keep_tokens or None,
            "flip_aug": ds.flip_aug,
            "color_aug": ds.color_aug,
            "random_crop": ds.random_crop,
            "caption_dropout_rate": ds.caption_dropout_rate or None,
            "caption_tag_dropout_rate": ds.caption_tag_dropout_rate or None,
        }
    )
    dataset: dict[str, Any] = {
        "resolution": list(ds.resolution),
        "batch_size": ds.batch_size,
        "enable_bucket": ds.enable_bucket,
    }
    if ds.enable_bucket:
        dataset.update(
            {
                "min_bucket_reso": ds.min_bucket_reso,
                "max_bucket_reso": ds.max_bucket_reso,
                "bucket_reso_steps": ds.bucket_reso_steps or DEFAULT_BUCKET_STEPS,
                "bucket_no_upscale": ds.bucket_no_upscale,
            }
        )
    if ds.validation_split:
        dataset["validation_split"] = float(ds.validation_split)
        dataset["validation_seed"] = (
            ds.validation_seed if ds.validation_seed is not None else recipe.training.seed
        )
    subset_tables = []
    for plan, subset in zip(subsets, ds.subsets, strict=True):
        table: dict[str, Any] = {"image_dir": f"dataset/{plan.folder}", "num_repeats": subset.repeats}
        if subset.trigger:
            table["class_tokens"] = subset.trigger
        overrides = {
            "is_reg": subset.is_reg or None,
            "shuffle_caption": subset.shuffle_caption,
            "keep_tokens": subset.keep_tokens,
            "flip_aug": subset.flip_aug,
            "color_aug": subset.color_aug,
            "random_crop": subset.random_crop,
        }
        table.update({k: v for k, v in overrides.items() if v is not None})
        subset_tables.append(table)
    dataset["subsets"] = subset_tables
    return {"general": general, "datasets": [dataset]}


def prompt_text(recipe: Recipe, prompt: str) -> str:
    """The prompt as kohya is given it: ``{trigger}`` replaced by the first subset's trigger."""
    return prompt.replace("{trigger}", first_trigger(recipe) or "")


# kohya's in-training sampler tries its option patterns on every " --" segment of a prompt line, the
# prompt itself included (train_util.line_to_prompt_dict: re.match(r"w (\d+)", parg, re.IGNORECASE)
# and so on), so a prompt that starts like an option also sets that option.
_SAMPLER_OPTION = re.compile(r"[whds] \d|[lg] [\d.]|(?:n|ss|cn|ctr|rcfg|fs) .", re.IGNORECASE)


def prompt_text_problem(text: str, negative: bool = False) -> str | None:
    """Why kohya would not read ``text`` back exactly as the prompt of a prompt-file line, or None.

    Both readers of lorabuild's prompt lines are covered: kohya's in-training sampler
    (``sample_prompts.txt``: ``readlines()``, each line stripped, lines starting with ``#`` skipped,
    split at ``" --"``, option patterns tried on every part) and ``gen_img.py`` for the grid
    (``--from_file``: ``str.splitlines()``, the same stripping, skipping and splitting, and
    ``{a|b}`` dynamic prompts).

    Args:
        text: The final text, placeholders replaced.
        negative: ``text`` is a negative prompt (written after `` --n ``; may be empty).
    """
    why = line_problem(text)
    if why:
        return why
    if " --" in text:
        return "must not contain ' --': kohya reads ' --' as the start of an option (--w, --n, --d…)"
    if negative and text.startswith("--"):
        # Written after "--n ", it would start with " --" itself.
        return "must not start with '--': written after --n, kohya would read it as the next option"
    if text != text.strip():
        return "must not start or end with a space: kohya strips the spaces off each prompt line"
    if "{" in text or "}" in text:
        return (
            "must not contain { or } (other than {trigger}): gen_img reads braces as a dynamic prompt "
            "({a|b}); use ( ) for emphasis"
        )
    if negative:
        return None
    if not text:
        return "must not be empty: kohya would read the line's first option as the prompt"
    if text.startswith("#"):
        return "must not start with '#': kohya skips such lines as comments"
    option = _SAMPLER_OPTION.match(text)
    if option:
        return (
            f"must not start with {option.group(0)!r}: kohya's sampler reads the start of a prompt line "
            f"as the option --{option.group(0).split(' ')[0]} too"
        )
    return None


def plain_number(number: str) -> str:
    """A formatted number without an exponent: kohya reads ``--l`` with ``[\\d.]+`` (1e-05 would be 1)."""
    return format(Decimal(number), "f") if "e" in number.lower() else number


def sample_prompts(recipe: Recipe) -> str:
    """``sample_prompts.txt`` in kohya's text format: one line per prompt and seed."""
    e = recipe.evaluate
    width = e.width or recipe.dataset.resolution[0]
    height = e.height or recipe.dataset.resolution[1]
    lines = [
        f"# Sample prompts for {comment_text(recipe.name)}, generated by lorabuild from the recipe's "
        "[evaluate] table."
    ]
    for prompt in e.prompts:
        text = prompt_text(recipe, prompt)
        for seed in e.seeds:
            line = f"{text} --w {width} --h {height} --d {seed} --s {e.steps} --l {plain_number(f'{e.cfg_scale:g}')} --ss {e.sampler}"
            if e.negative_prompt:
                line += f" --n {e.negative_prompt}"
            lines.append(line)
    return "\n".join(lines) + "\n"


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
    tail = (SD_SCRIPTS_PREFIX + script, "--config_file", "config.toml", "--dataset_config", "dataset.toml")
    return LaunchSpec(
        argv=(*head, *(item for item, _ in extra), *tail),
        env=tuple(sorted(recipe.launch.env.items())),
        origins=(*[""] * len(head), *(key for _, key in extra), *[""] * len(tail)),
    )
