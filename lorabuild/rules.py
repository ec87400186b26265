"""The pre-flight rules: every trap kohya would only find after loading the model.

Each rule is one small function registered with :func:`rule`. A rule reads the validated
recipe and the probed facts and yields problems (errors or warnings) with the recipe key they
belong to; :func:`run_rules` runs them all so the user sees every problem at once. Rules that
mirror a kohya failure name the kohya message or behaviour they prevent.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib.util
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from lorabuild.kohya import families
from lorabuild.kohya import options as kohya_options
from lorabuild.kohya.buckets import adjusted_settings
from lorabuild.kohya.launch import script_value_errors
from lorabuild.kohya.prompts import prompt_text_problem
from lorabuild.kohya.tagger import MODEL_FILES, autotag_sections
from lorabuild.plan.evaluate import prompt_text
from lorabuild.plan.plan import family_of, launch_spec
from lorabuild.plan.subsets import (
    Subsets,
    bad_image,
    bucket_settings,
    epoch_bucket_counts,
    first_trigger,
    plan_subsets,
)
from lorabuild.probe.facts import Facts
from lorabuild.probe.imagefix import near_duplicates
from lorabuild.probe.modelfile import UNTRAINED_LABELS
from lorabuild.problems import Problem, did_you_mean, error, warning
from lorabuild.recipe.captions import normalise, split_tags
from lorabuild.recipe.schema import Recipe

Rule = Callable[[Recipe, Facts], Iterable[Problem]]
SubsetRule = Callable[[Recipe, Facts, Subsets], Iterable[Problem]]
"""A rule that also reads the planned subsets (staged captions, sizes, buckets)."""
RULES: list[SubsetRule] = []
"""Every rule in order, each called with the subsets (a :class:`Rule` is wrapped to ignore them)."""


def rule(fn: Rule) -> Rule:
    """Register a rule."""

    @functools.wraps(fn)
    def registered(recipe: Recipe, facts: Facts, subsets: Subsets) -> Iterable[Problem]:
        return fn(recipe, facts)

    RULES.append(registered)
    return fn


def subset_rule(fn: SubsetRule) -> SubsetRule:
    """Register a rule that reads the planned subsets."""
    RULES.append(fn)
    return fn


def run_rules(recipe: Recipe, facts: Facts, subsets: Subsets | None = None) -> list[Problem]:
    """Every problem every rule finds, in rule order.

    Args:
        recipe: The validated recipe.
        facts: Its probed facts.
        subsets: :func:`~lorabuild.plan.subsets.plan_subsets` of both, when the caller has them
            (the check plans them once for the rules and the plan); planned here otherwise.
    """
    planned = plan_subsets(recipe, facts) if subsets is None else subsets
    return [p for r in RULES for p in r(recipe, facts, planned)]


def _list(items: Iterable[object], limit: int = 5) -> str:
    texts = [str(i) for i in items]
    shown = ", ".join(texts[:limit])
    return shown + (f" and {len(texts) - limit} more" if len(texts) > limit else "")


# --- model -------------------------------------------------------------------------------------


def _label(family: str) -> str:
    """How messages name a family, trained or only recognised."""
    return UNTRAINED_LABELS.get(family) or families.get(family).label


def _spoken(items: list[str], last: str) -> str:
    """``a, b and c`` (``last`` is the word before the last item)."""
    return f"{', '.join(items[:-1])} {last} {items[-1]}" if len(items) > 1 else "".join(items)


@rule
def model_exists(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """The base model must exist and be a model (kohya: OSError after start-up)."""
    info = facts.model
    if info.kind == "missing":
        yield error("model.base", f"file or folder not found: {info.path}")
    elif info.kind == "unknown":
        yield error(
            "model.base",
            f"{info.path} is not a model ({info.detail}): point model.base at a .safetensors or .ckpt checkpoint "
            "or a diffusers folder",
        )


@rule
def model_family(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """The checkpoint's family must match the trainer (kohya: state_dict mismatch after loading)."""
    detected, declared = facts.model.family, recipe.model.family
    if detected == "lora":
        yield error("model.base", "this file is a LoRA, not a base model: point model.base at a checkpoint")
        return
    if detected in UNTRAINED_LABELS:
        trained = _spoken([f.label for f in families.ALL], "and")
        yield error(
            "model.base", f"this is a {_label(detected)} checkpoint; lorabuild trains {trained} LoRAs"
        )
        return
    if declared and detected and declared != detected:
        yield error(
            "model.family",
            f'is "{declared}" but {facts.model.path.name} is an {_label(detected)} checkpoint '
            f'(kohya would fail after minutes of loading): set model.family = "{detected}" (or remove it to '
            f"detect it), or choose an {_label(declared)} model",
        )
    elif not declared and not detected and facts.model.kind in ("file", "diffusers"):
        yield error(
            "model.family",
            f"cannot be detected ({facts.model.detail}): set model.family to {_spoken(list(families.names()), 'or')}",
        )


@rule
def v_prediction(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """A v-prediction model trained without v_parameterization learns garbage silently."""
    if facts.model.v_prediction and not recipe.model.v_parameterization:
        yield warning(
            "model.v_parameterization",
            "the model's scheduler predicts v: set model.v_parameterization = true",
        )


@rule
def family_rules(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """What only the model's family checks: a network it cannot train, its own rules (lorabuild.kohya.families)."""
    yield from families.get(family_of(recipe, facts)).problems(recipe)


# --- dataset and buckets -----------------------------------------------------------------------


@rule
def resolution_and_buckets(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Resolution and bucket bounds that kohya rounds or asserts on."""
    ds = recipe.dataset
    settings = bucket_settings(recipe)
    steps = settings.reso_steps
    if ds.enable_bucket and any(side % steps for side in ds.resolution):
        yield error(
            "dataset.resolution",
            f"each side must be a multiple of the bucket step {steps} (got {list(ds.resolution)}); "
            f"try {[max(steps, round(s / steps) * steps) for s in ds.resolution]}",
        )
    elif not ds.enable_bucket and any(side % 8 for side in ds.resolution):
        yield error("dataset.resolution", f"each side must be a multiple of 8 (got {list(ds.resolution)})")
    need = families.get(family_of(recipe, facts)).bucket_steps_multiple
    adjusted = adjusted_settings(settings, steps_multiple=need if ds.bucket_reso_steps is not None else None)
    for message in adjusted.errors:
        yield error(_bucket_key(message), message)
    for message in adjusted.warnings:
        yield warning(_bucket_key(message), message)


def _bucket_key(message: str) -> str:
    """The recipe key a bucket message (which starts with kohya's key name) is about."""
    first = message.split(" ", 1)[0]
    return (
        f"dataset.{first}"
        if first in {"min_bucket_reso", "max_bucket_reso", "bucket_reso_steps"}
        else "dataset"
    )


@rule
def keep_tokens_without_shuffle(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """keep_tokens does nothing unless captions are shuffled or tags dropped."""
    ds = recipe.dataset
    for i, s in enumerate(ds.subsets):
        keep = s.keep_tokens if s.keep_tokens is not None else ds.keep_tokens
        shuffle = s.shuffle_caption if s.shuffle_caption is not None else ds.shuffle_caption
        if keep and not shuffle and not ds.caption_tag_dropout_rate:
            key = f"dataset.subsets[{i}].keep_tokens" if s.keep_tokens is not None else "dataset.keep_tokens"
            yield warning(
                key, "has no effect without shuffle_caption = true (kohya only keeps tokens while shuffling)"
            )
            if s.keep_tokens is None:
                return  # the dataset-level setting: one warning is enough


@rule
def latents_cache_with_augmentation(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya asserts: "when caching latents, either color_aug or random_crop cannot be used"."""
    if not (recipe.training.cache_latents or recipe.training.cache_latents_to_disk):
        return
    ds = recipe.dataset
    for name in ("color_aug", "random_crop"):
        message = (
            "cannot be used with cached latents: set training.cache_latents and training.cache_latents_to_disk "
            f"to false, or turn {name} off"
        )
        # kohya reads each subset's own value; the dataset's applies only where a subset sets none.
        if getattr(ds, name) and any(getattr(s, name) is None for s in ds.subsets):
            yield error(f"dataset.{name}", message)
        for i, s in enumerate(ds.subsets):
            if getattr(s, name):
                yield error(f"dataset.subsets[{i}].{name}", message)


@rule
def duplicate_sources(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """The same folder twice is almost always a copy-paste slip."""
    seen: dict[tuple[Path, bool], int] = {}
    for i, s in enumerate(recipe.dataset.subsets):
        first = seen.setdefault((s.source, s.is_reg), i)
        if first != i:
            yield warning(
                f"dataset.subsets[{i}].source",
                f"is the same folder as dataset.subsets[{first}]: remove one of the two subsets",
            )


@rule
def source_folders(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Folders that would give kohya's "No data found" (it exits 0 without training)."""
    for i, sf in enumerate(facts.subsets):
        key = f"dataset.subsets[{i}].source"
        if sf.state == "missing":
            yield error(key, f"folder not found: {sf.source}")
        elif sf.state == "not_a_folder":
            yield error(key, f"is a file, not a folder: {sf.source}")
        elif not sf.images and sf.subfolders_with_images:
            yield error(
                key,
                f"has no images directly inside, but its sub-folders {_list(sf.subfolders_with_images)} do "
                '(kohya would stop with "No data found"): point source at the folder that holds the images, '
                "one subset per folder",
            )
        elif not sf.images:
            yield error(
                key,
                f"has no images directly inside {sf.source} (kohya reads .png .jpg .jpeg .webp .bmp): "
                'kohya would stop with "No data found": put the images directly in that folder',
            )
        for path, reason in sf.skipped:
            yield warning(str(path), reason)


@rule
def images_in_subfolders(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Images in sub-folders of a folder that has images of its own are never trained: kohya's
    ``glob_images`` reads only the top of an image folder, and lorabuild stages only that."""
    for i, (subset, sf) in enumerate(zip(recipe.dataset.subsets, facts.subsets, strict=True)):
        if not sf.images or not sf.images_below:
            continue  # no images at the top: source_folders says what to do
        total = sum(sf.images_below.values())
        folders = _list(f"{name}/ ({count})" for name, count in sf.images_below.items())
        top = subset.source.as_posix()
        first = f"{subset.source.name}/{next(iter(sf.images_below))}"
        yield warning(
            f"dataset.subsets[{i}].source",
            f"{total} image(s) in sub-folders will not be trained: {folders}: kohya reads only the images "
            f"directly in {top}: add each sub-folder as a subset of its own (a [[dataset.subsets]] whose "
            f'source ends in "{first}"), or move the images up into {top}',
        )


@rule
def image_files(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Unreadable or truncated images (kohya: OSError while caching latents, minutes in)."""
    for sf in facts.subsets:
        for info in sf.images:
            if info.problem:
                yield _bad_image_problem(recipe, str(info.path), info.problem)


def _bad_image_problem(recipe: Recipe, key: str, reason: str) -> Problem:
    """An error, or with ``images.on_bad_image = "skip"`` a warning that the image is left out."""
    if recipe.images.on_bad_image == "skip":
        return warning(key, f'left out of the stage (images.on_bad_image = "skip"): {reason}')
    return error(key, reason)


@rule
def image_min_side(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Images below ``images.min_side``: kohya would upscale them into their bucket, blurred."""
    if not recipe.images.min_side:
        return
    for sf in facts.subsets:
        for info in sf.images:
            reason = None if info.problem else bad_image(info, recipe.images)
            if reason:
                yield _bad_image_problem(recipe, str(info.path), reason)


@subset_rule
def every_image_left_out(recipe: Recipe, facts: Facts, subsets: Subsets) -> Iterator[Problem]:
    """A subset whose every image is skipped would stage nothing (kohya: "No data found")."""
    if recipe.images.on_bad_image != "skip":
        return  # every bad image is an error already
    for i, (sf, planned) in enumerate(zip(facts.subsets, subsets, strict=True)):
        if sf.images and not planned.images:
            yield error(
                f"dataset.subsets[{i}].source",
                f'all {len(sf.images)} image(s) are left out of the stage (images.on_bad_image = "skip"), so kohya '
                "would find no data: fix or replace them (see the warnings above)",
            )


# Beyond this many duplicates of one kind, one line counts the rest (a scraped folder can hold thousands).
DUPLICATES_SHOWN = 20


@rule
def duplicate_images(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """The same picture twice is trained twice as often as the others (``images.duplicates``)."""
    mode = recipe.images.duplicates
    if mode == "off":
        return
    near = mode == "near"
    seen: set[str] = set()
    images = []
    for sf in facts.subsets:
        for index, info in enumerate(sf.images):
            fingerprint = sf.fingerprint(index)
            # Only hashed images can be duplicates: with "exact", those that share their size.
            if info.problem is None and (near or fingerprint.sha256) and str(info.path) not in seen:
                seen.add(str(info.path))
                images.append((info.path, fingerprint))
    first: dict[str, Path] = {}
    exact: list[tuple[int, Path]] = []
    for index, (path, fingerprint) in enumerate(images):
        if fingerprint.sha256 is not None:
            original = first.setdefault(fingerprint.sha256, path)
            if original != path:
                exact.append((index, original))
    for index, original in exact[:DUPLICATES_SHOWN]:
        yield warning(
            str(images[index][0]),
            f"is an exact copy of {original}: delete one (a duplicate is trained twice as often as the "
            'other images), or set images.duplicates = "off"',
        )
    if len(exact) > DUPLICATES_SHOWN:
        yield warning(
            "images.duplicates",
            f"{len(exact) - DUPLICATES_SHOWN} more image(s) are exact copies of others: delete them",
        )
    if not near:
        return
    # Exact copies are reported above; comparing them again would only repeat it.
    copies = {index for index, _ in exact}
    hashes = [None if i in copies else fingerprint.dhash for i, (_, fingerprint) in enumerate(images)]
    alike = near_duplicates(hashes, recipe.images.near_distance)
    for index, match in alike[:DUPLICATES_SHOWN]:
        bits = ((hashes[index] or 0) ^ (hashes[match] or 0)).bit_count()
        yield warning(
            str(images[index][0]),
            f"looks almost the same as {images[match][0]} ({bits} of 64 perceptual-hash bits differ): "
            "delete one unless both are wanted (images.near_distance sets how alike is too alike)",
        )
    if len(alike) > DUPLICATES_SHOWN:
        yield warning(
            "images.duplicates",
            f"{len(alike) - DUPLICATES_SHOWN} more image(s) look almost the same as others: delete the ones "
            "you do not want, or lower images.near_distance",
        )


@rule
def caption_files(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Captions in another extension, missing captions, non-UTF-8 or empty caption files."""
    for i, (subset, sf) in enumerate(zip(recipe.dataset.subsets, facts.subsets, strict=True)):
        if sf.state != "ok" or not sf.images:
            continue
        key = f"dataset.subsets[{i}]"
        have = sum(1 for c in sf.captions if c.path is not None)
        for ext, count in sf.other_caption_files.items():
            if count > have:
                yield error(
                    f"{key}.caption_extension",
                    f'is "{subset.caption_extension}" but {count} image(s) have "{ext}" captions '
                    f'(and {have} have "{subset.caption_extension}"): set caption_extension = "{ext}"',
                )
        missing = [info.path.name for info, c in zip(sf.images, sf.captions, strict=True) if c.path is None]
        # With [captions.autotag], every mode tags the images without a caption (or an empty one).
        tagged = recipe.rules_for(subset).autotag is not None
        # When every caption is missing but another extension has them, the error above says why.
        if missing and not tagged and not (len(missing) == len(sf.images) and sf.other_caption_files):
            rules_ = recipe.rules_for(subset)
            what = "the trigger alone" if subset.trigger and rules_.prepend_trigger else "an empty caption"
            yield warning(
                f"{key}.source",
                f"{len(missing)} of {len(sf.images)} image(s) have no {subset.caption_extension} caption "
                f"and will get {what}: {_list(missing)}",
            )
        for c in sf.captions:
            if c.problem and c.path is not None:
                yield error(str(c.path), c.problem)
            elif c.path is not None and not c.text.strip() and not tagged:
                holds = (
                    "only the trigger"
                    if subset.trigger and recipe.rules_for(subset).prepend_trigger
                    else "nothing"
                )
                yield warning(str(c.path), f"is empty: the staged caption will hold {holds}")


@subset_rule
def trigger_in_captions(recipe: Recipe, facts: Facts, subsets: Subsets) -> Iterator[Problem]:
    """A trigger that no staged caption contains is never learnt as a word."""
    for i, (subset, planned) in enumerate(zip(recipe.dataset.subsets, subsets, strict=True)):
        if not subset.trigger or not planned.images or subset.is_reg:
            continue
        rules_ = recipe.rules_for(subset)
        staged = [image.caption for image in planned.images]
        tagger_only = 0
        if rules_.autotag is not None and not rules_.prepend_trigger:
            # The tagger's tags replace a caption ("all") or fill an empty one: they hold the
            # trigger only through a captions.replace entry that maps a tagger tag to it.
            mode = rules_.autotag.mode
            from_tagger = [mode == "all" or not split_tags(image.source_caption) for image in planned.images]
            tagger_only = sum(from_tagger)
            wanted = normalise(subset.trigger, rules_.tag_style)
            if any(normalise(v, rules_.tag_style) == wanted for v in rules_.replace.values()):
                staged = [text for text, tagged in zip(staged, from_tagger, strict=True) if not tagged]
            else:
                staged = ["" if tagged else text for text, tagged in zip(staged, from_tagger, strict=True)]
            if not staged:
                continue  # every caption comes from the tagger: which tags it gives is not known yet
        with_trigger = sum(1 for text in staged if subset.trigger in [t.strip() for t in text.split(",")])
        key = f"dataset.subsets[{i}].trigger"
        why = f" (the WD14 tagger's tags, in {tagger_only} caption(s), never hold it)" if tagger_only else ""
        # The advice names the captions table that applies to this subset, and only what would help.
        table = f"dataset.subsets[{i}].captions" if subset.captions is not None else "captions"
        prepend = "" if rules_.prepend_trigger else f"{table}.prepend_trigger = true"
        if with_trigger == 0:
            fix = f"set {prepend} or add it to the captions" if prepend else "add it to the captions"
            yield error(key, f'"{subset.trigger}" is in none of the staged captions{why}: {fix}')
        elif with_trigger < len(staged):
            fix = f"add it to the others or set {prepend}" if prepend else "add it to the others"
            yield warning(
                key,
                f'"{subset.trigger}" is in only {with_trigger} of {len(staged)} staged captions{why}: {fix}',
            )


@subset_rule
def small_buckets(recipe: Recipe, facts: Facts, subsets: Subsets) -> Iterator[Problem]:
    """Buckets with fewer samples than the batch size give short, noisier batches."""
    if not recipe.dataset.enable_bucket or any(sf.state != "ok" for sf in facts.subsets):
        return
    counts = epoch_bucket_counts(subsets)
    small = [f"{w}x{h} ({n})" for (w, h), n in sorted(counts.items()) if n < recipe.dataset.batch_size]
    if small:
        yield warning(
            "dataset.batch_size",
            f"{len(small)} bucket(s) hold fewer samples than the batch size {recipe.dataset.batch_size}: "
            f"{_list(small)}; crop images to common aspect ratios or lower the batch size",
        )


@subset_rule
def image_fits_without_buckets(recipe: Recipe, facts: Facts, subsets: Subsets) -> Iterator[Problem]:
    """Without buckets kohya asserts each image already fits the resolution."""
    ds = recipe.dataset
    if ds.enable_bucket:
        return
    width, height = ds.resolution
    # The staged sizes: an EXIF-rotated photo is staged upright, its sides swapped.
    for subset in subsets:
        for image in subset.images:
            w, h = image.size
            if w < width or h < height:
                yield error(
                    str(image.source),
                    f"is {w}x{h}, smaller than the resolution "
                    f"{width}x{height} while dataset.enable_bucket is false (kohya: image size is small)",
                )
            elif (w > width or h > height) and not ds.random_crop:
                yield error(
                    str(image.source),
                    f"is {w}x{h}, larger than {width}x{height} "
                    "with buckets off: set dataset.enable_bucket = true or resize it",
                )


@rule
def regularisation_balance(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya: "some of reg images are not used"."""
    train = sum(
        len(sf.images) * s.repeats
        for s, sf in zip(recipe.dataset.subsets, facts.subsets, strict=True)
        if not s.is_reg
    )
    reg = sum(
        len(sf.images) * s.repeats
        for s, sf in zip(recipe.dataset.subsets, facts.subsets, strict=True)
        if s.is_reg
    )
    if reg > train > 0:
        yield warning(
            "dataset.subsets",
            f"{reg} regularisation samples but only {train} training samples: "
            f"{reg - train} regularisation samples are never used: lower the regularisation repeats or add training images",
        )


@rule
def no_training_subset(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Only regularisation subsets means nothing to learn."""
    if all(s.is_reg for s in recipe.dataset.subsets):
        yield error("dataset.subsets", "every subset has is_reg = true: add at least one training subset")


# --- network ----------------------------------------------------------------------------------


@rule
def network_package(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """LyCORIS modules need lycoris-lora (kohya: ModuleNotFoundError after loading the model)."""
    module, _ = families.get(family_of(recipe, facts)).network_modules.get(recipe.network.module, ("", None))
    if module.startswith("lycoris") and facts.training_stack and not facts.packages.get("lycoris"):
        yield error(
            "network.module",
            f'"{recipe.network.module}" needs LyCORIS, which is not installed: pip install lycoris-lora',
        )


@rule
def dylora_shape(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """networks.dylora asserts rank % unit == 0 and conv_dim == dim."""
    n = recipe.network
    if n.module != "dylora":
        return
    unit = n.args.get("unit", 1)
    if isinstance(unit, int) and unit > 0 and n.dim % unit:
        yield error(
            "network.dim", f"must be a multiple of network.args.unit ({unit}) for dylora (got {n.dim})"
        )
    if n.conv_dim is not None and n.conv_dim != n.dim:
        yield error("network.conv_dim", f"must equal network.dim ({n.dim}) for dylora (got {n.conv_dim})")


@rule
def learning_rates_for_trained_parts(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """A learning rate for a part that is not trained is silently unused by kohya."""
    n, o = recipe.network, recipe.optimizer
    if n.train == "unet" and o.text_encoder_lr is not None:
        yield error(
            "optimizer.text_encoder_lr",
            'is set but network.train = "unet" trains no text encoder: remove it or train "both"',
        )
    if n.train == "text_encoder" and o.unet_lr is not None:
        yield error(
            "optimizer.unet_lr",
            'is set but network.train = "text_encoder" trains no U-Net: remove it or train "both"',
        )


# --- optimizer and schedule -------------------------------------------------------------------

# kohya's built-in optimizer names (case-insensitive) and the package each needs (KOHYA.md 6.8).
OPTIMIZERS: dict[str, str | None] = {
    "adamw": None,
    "adamw8bit": "bitsandbytes",
    "sgdnesterov8bit": "bitsandbytes",
    "lion8bit": "bitsandbytes",
    "pagedadamw8bit": "bitsandbytes",
    "pagedlion8bit": "bitsandbytes",
    "pagedadamw": "bitsandbytes",
    "pagedadamw32bit": "bitsandbytes",
    "lion": "lion_pytorch",
    "sgdnesterov": None,
    "dadaptation": "dadaptation",
    "dadaptadampreprint": "dadaptation",
    "dadaptadagrad": "dadaptation",
    "dadaptadam": "dadaptation",
    "dadaptadan": "dadaptation",
    "dadaptadanip": "dadaptation",
    "dadaptlion": "dadaptation",
    "dadaptsgd": "dadaptation",
    "prodigy": "prodigyopt",
    "adafactor": "transformers",
    "radamschedulefree": "schedulefree",
    "adamwschedulefree": "schedulefree",
    "sgdschedulefree": "schedulefree",
}
_OPTIMIZER_SPELLING = [
    "AdamW", "AdamW8bit", "SGDNesterov8bit", "Lion8bit", "PagedAdamW8bit", "PagedLion8bit", "PagedAdamW",
    "PagedAdamW32bit", "Lion", "SGDNesterov", "DAdaptation", "DAdaptAdamPreprint", "DAdaptAdaGrad",
    "DAdaptAdam", "DAdaptAdan", "DAdaptAdanIP", "DAdaptLion", "DAdaptSGD", "Prodigy", "Adafactor",
    "RAdamScheduleFree", "AdamWScheduleFree", "SGDScheduleFree",
]  # fmt: skip
# torch.optim classes kohya also accepts by bare name (case-sensitive lookup in torch.optim).
_TORCH_OPTIM = {
    "Adam",
    "SGD",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "Adamax",
    "NAdam",
    "RAdam",
    "ASGD",
    "Rprop",
    "LBFGS",
}


@rule
def optimizer_known(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Unknown optimizer names or missing packages (kohya: error after loading the model)."""
    name = recipe.optimizer.type
    if "." in name:
        module = name.rsplit(".", 1)[0].split(".")[0]
        installed = facts.packages.get(module) if module in facts.packages else None
        if facts.training_stack and not (installed if installed is not None else _importable(module)):
            yield error("optimizer.type", f"module '{module}' of \"{name}\" is not installed")
        return
    if name.lower() not in OPTIMIZERS and name not in _TORCH_OPTIM:
        yield error(
            "optimizer.type",
            f'"{name}" is not an optimizer kohya knows{did_you_mean(name, _OPTIMIZER_SPELLING)}; '
            "use one of AdamW, AdamW8bit, Lion, Lion8bit, Prodigy, Adafactor, DAdaptAdam… or a module.Class path",
        )
        return
    package = OPTIMIZERS.get(name.lower())
    if package and facts.training_stack and not facts.packages.get(package):
        pip = {"lion_pytorch": "lion-pytorch"}.get(package, package)
        yield error(
            "optimizer.type", f'"{name}" needs the package {pip}, which is not installed: pip install {pip}'
        )


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@rule
def adaptive_optimizer_lr(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """D-Adaptation and Prodigy expect a learning rate around 1.0."""
    name = recipe.optimizer.type.lower()
    if (name.startswith("dadapt") or name == "prodigy") and recipe.optimizer.lr <= 0.1:
        yield warning(
            "optimizer.lr",
            f"{recipe.optimizer.type} adapts the step size itself: set optimizer.lr = 1.0 (got {recipe.optimizer.lr})",
        )


@rule
def scheduler_warmup(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya raises "constant does not require num_warmup_steps" after loading the model."""
    o = recipe.optimizer
    if o.scheduler in ("constant", "adafactor") and o.warmup_steps:
        yield error(
            "optimizer.warmup_steps",
            f'must be 0 with scheduler "{o.scheduler}" (kohya stops after loading the model): remove it'
            + (' or use scheduler "constant_with_warmup"' if o.scheduler == "constant" else ""),
        )


@rule
def scheduler_needs(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Schedulers that need a partner setting."""
    o = recipe.optimizer
    if o.scheduler == "adafactor" and o.type.lower() != "adafactor":
        yield error("optimizer.scheduler", '"adafactor" works only with optimizer.type = "Adafactor"')
    if o.scheduler == "cosine_with_min_lr" and o.min_lr_ratio is None:
        yield error("optimizer.min_lr_ratio", 'is required by scheduler "cosine_with_min_lr" (e.g. 0.1)')
    # kohya's lr_scheduler_args is a list of "key=value" strings.
    scheduler_args = recipe.kohya.get("lr_scheduler_args", [])
    items = scheduler_args if isinstance(scheduler_args, list) else [scheduler_args]
    if o.scheduler == "piecewise_constant" and not any("step_rules" in str(a) for a in items):
        yield error(
            "optimizer.scheduler", '"piecewise_constant" needs kohya.lr_scheduler_args with step_rules'
        )


# --- training ---------------------------------------------------------------------------------


@rule
def precision_pairs(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya asserts full_fp16/full_bf16 match mixed_precision (after loading the model)."""
    t = recipe.training
    if t.full_fp16 and t.mixed_precision != "fp16":
        yield error(
            "training.full_fp16",
            f'needs training.mixed_precision = "fp16" (got "{t.mixed_precision}"): change it or turn full_fp16 off',
        )
    if t.full_bf16 and t.mixed_precision != "bf16":
        yield error(
            "training.full_bf16",
            f'needs training.mixed_precision = "bf16" (got "{t.mixed_precision}"): change it or turn full_bf16 off',
        )


@rule
def xformers_package(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya: ImportError "No xformers" after loading the model."""
    if (
        recipe.training.attention == "xformers"
        and facts.training_stack
        and not facts.packages.get("xformers")
    ):
        yield error(
            "training.attention",
            '"xformers" is not installed here (it needs an NVIDIA GPU): pip install xformers, '
            'or use attention = "sdpa"',
        )


@rule
def save_interval(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """A save interval longer than the run saves only the last epoch."""
    t = recipe.training
    if t.save_every_n_epochs and t.save_every_n_epochs > t.epochs:
        yield warning(
            "training.save_every_n_epochs",
            f"is {t.save_every_n_epochs}, more than training.epochs ({t.epochs}): only the last epoch is saved",
        )


# --- evaluate ---------------------------------------------------------------------------------


@rule
def prompt_placeholders(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """{trigger} needs a trigger, and each prompt must reach kohya as written.

    The text checked is the one kohya reads, ``{trigger}`` replaced: a trigger such as
    ``kazari --w 4096`` would turn ``"{trigger}, smile"`` into the prompt ``kazari`` and two options.
    """
    trigger = first_trigger(recipe)
    trigger_key = next(
        (f"dataset.subsets[{i}].trigger" for i, s in enumerate(recipe.dataset.subsets) if s.trigger), ""
    )
    for i, prompt in enumerate(recipe.evaluate.prompts):
        key = f"evaluate.prompts[{i}]"
        if "{trigger}" in prompt and not trigger:
            yield error(
                key, "uses {trigger} but no subset has a trigger: set a subset's trigger or write the word"
            )
            continue
        unknown = sorted(set(re.findall(r"\{[^{}]*\}", prompt)) - {"{trigger}"})
        if unknown:
            yield error(
                key,
                f"{', '.join(unknown)} {'is not a placeholder' if len(unknown) == 1 else 'are not placeholders'}: "
                "only {trigger} is replaced",
            )
            continue
        text = prompt_text(recipe, prompt)
        why = prompt_text_problem(text)
        if why is None:
            continue
        if "{trigger}" in prompt and prompt_text_problem(prompt.replace("{trigger}", "trigger")) is None:
            # The prompt is fine as written: the trigger put in its place breaks it.
            yield error(
                trigger_key,
                f"replaces {{trigger}} in {key}, and the prompt kohya would read, {text!r}, {why}",
            )
        else:
            shown = f" (with {{trigger}} replaced: {text!r})" if "{trigger}" in prompt else ""
            yield error(key, f"{why}{shown}")
    why = prompt_text_problem(recipe.evaluate.negative_prompt, negative=True)
    if why:
        yield error("evaluate.negative_prompt", why)


# --- [kohya] passthrough ----------------------------------------------------------------------

# kohya options the recipe models: setting them in [kohya] would silently fight the recipe.
MODELLED = {
    "pretrained_model_name_or_path": "model.base", "v2": "model.family", "v_parameterization": "model.v_parameterization",
    "clip_skip": "model.clip_skip", "vae": "model.vae", "tokenizer_cache_dir": "model.tokenizer_cache_dir",
    "network_module": "network.module", "network_dim": "network.dim", "network_alpha": "network.alpha",
    "network_dropout": "network.dropout", "network_args": "network.args", "network_weights": "network.weights",
    "network_train_unet_only": "network.train", "network_train_text_encoder_only": "network.train",
    "optimizer_type": "optimizer.type", "learning_rate": "optimizer.lr", "unet_lr": "optimizer.unet_lr",
    "text_encoder_lr": "optimizer.text_encoder_lr", "lr_scheduler": "optimizer.scheduler",
    "lr_warmup_steps": "optimizer.warmup_steps", "lr_scheduler_num_cycles": "optimizer.restart_cycles",
    "lr_scheduler_power": "optimizer.power", "lr_scheduler_min_lr_ratio": "optimizer.min_lr_ratio",
    "max_grad_norm": "optimizer.max_grad_norm", "optimizer_args": "optimizer.args",
    "max_train_epochs": "training.epochs", "max_train_steps": "training.epochs",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "mixed_precision": "training.mixed_precision", "full_fp16": "training.full_fp16", "full_bf16": "training.full_bf16",
    "no_half_vae": "training.no_half_vae", "seed": "training.seed", "cache_latents": "training.cache_latents",
    "cache_latents_to_disk": "training.cache_latents_to_disk", "max_token_length": "training.max_token_length",
    "xformers": "training.attention", "sdpa": "training.attention", "mem_eff_attn": "training.attention",
    "gradient_checkpointing": "training.gradient_checkpointing", "prior_loss_weight": "training.prior_loss_weight",
    "noise_offset": "training.noise_offset", "min_snr_gamma": "training.min_snr_gamma",
    "max_data_loader_n_workers": "training.max_data_loader_n_workers", "save_model_as": "training.save_model_as",
    "save_precision": "training.save_precision", "save_every_n_epochs": "training.save_every_n_epochs",
    "save_state": "training.save_state", "output_name": "name", "output_dir": "(the build folder)",
    "logging_dir": "(the build folder)", "sample_prompts": "evaluate.prompts",
    "sample_every_n_epochs": "evaluate.sample_every_n_epochs", "sample_sampler": "evaluate.sampler",
    "metadata_title": "title", "metadata_author": "author", "metadata_description": "description",
    "metadata_trigger_phrase": "dataset.subsets[].trigger", "config_file": "(compiled by lorabuild)",
    "dataset_config": "(compiled by lorabuild)", "output_config": "(compiled by lorabuild)",
    "train_data_dir": "dataset.subsets", "reg_data_dir": "dataset.subsets", "in_json": "dataset.subsets",
    "resolution": "dataset.resolution", "train_batch_size": "dataset.batch_size", "enable_bucket": "dataset.enable_bucket",
    "min_bucket_reso": "dataset.min_bucket_reso", "max_bucket_reso": "dataset.max_bucket_reso",
    "bucket_reso_steps": "dataset.bucket_reso_steps", "bucket_no_upscale": "dataset.bucket_no_upscale",
    "shuffle_caption": "dataset.shuffle_caption", "keep_tokens": "dataset.keep_tokens",
    "caption_extension": "dataset.subsets[].caption_extension", "flip_aug": "dataset.flip_aug",
    "color_aug": "dataset.color_aug", "random_crop": "dataset.random_crop",
    "caption_dropout_rate": "dataset.caption_dropout_rate", "caption_tag_dropout_rate": "dataset.caption_tag_dropout_rate",
    "validation_split": "dataset.validation_split", "validation_seed": "dataset.validation_seed",
    "dataset_repeats": "dataset.subsets[].repeats",
    # Managed by lorabuild itself: resume, log format and the recipe hash, and kohya's file rotation
    # (which would delete epoch files lorabuild checks for).
    "resume": "(lorabuild train resumes by itself)", "initial_epoch": "(lorabuild train resumes by itself)",
    "initial_step": "(lorabuild train resumes by itself)", "skip_until_initial_step": "(lorabuild train resumes by itself)",
    "console_log_simple": "(compiled by lorabuild)", "console_log_file": "(compiled by lorabuild)",
    "console_log_level": "(compiled by lorabuild)", "training_comment": "(compiled by lorabuild)",
    "save_last_n_epochs": "(lorabuild keeps every epoch)", "save_last_n_epochs_state": "(lorabuild keeps every epoch)",
}  # fmt: skip


@rule
def kohya_passthrough(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Raw kohya options: known to the family's script, well-typed, not modelled by the recipe."""
    script = families.get(family_of(recipe, facts)).train_script
    for name, value in recipe.kohya.items():
        key = f"kohya.{name}"
        if name in MODELLED:
            where = MODELLED[name]
            if where.startswith("("):
                yield error(key, f"is managed by lorabuild {where}: remove it from [kohya]")
            else:
                yield error(key, f"is set by the recipe as {where}: set it there instead")
            continue
        message = kohya_options.check_config_value(script, name, value)
        if message:
            yield error(key, message)


@rule
def other_builds(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Two recipes with one output name would overwrite each other's files."""
    owner = facts.other_builds.get(recipe.name)
    if owner is not None:
        yield error(
            "name",
            f'"{recipe.name}" is already the output name of another recipe ({owner}); building this one '
            "would overwrite its files: choose another name",
        )


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


# --- launch ------------------------------------------------------------------------------------


@rule
def deepspeed_package(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya's ``--deepspeed`` imports deepspeed at start-up (kohya: "deepspeed is not installed", exit 1)."""
    if recipe.launch.deepspeed is not None and facts.training_stack and not facts.packages.get("deepspeed"):
        yield error(
            "launch.deepspeed",
            "DeepSpeed is not installed here: DS_BUILD_OPS=0 pip install deepspeed "
            "(or remove [launch.deepspeed])",
        )


@rule
def deepspeed_processes(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya's DeepSpeed reads WORLD_SIZE, which accelerate sets only for a multi-process launch.

    With one process ``prepare_deepspeed_plugin`` fails with ``KeyError: 'WORLD_SIZE'``; on the
    CPU (``gpus = 0``) accelerate has no DeepSpeed at all.
    """
    if recipe.launch.deepspeed is not None and (recipe.launch.gpus == 0 or recipe.launch.num_processes < 2):
        yield error(
            "launch.deepspeed",
            "kohya's DeepSpeed runs only in a multi-GPU launch (it reads WORLD_SIZE, which accelerate sets "
            "for 2 or more processes): set [launch] gpus = 2 or more, or remove [launch.deepspeed]",
        )


@rule
def deepspeed_offload(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Offload targets only apply to some ZeRO stages; nvme needs a path (accelerate: ignored or error)."""
    ds = recipe.launch.deepspeed
    if ds is None:
        return
    if ds.offload_optimizer_device != "none" and ds.zero_stage < 2:
        yield warning(
            "launch.deepspeed.offload_optimizer_device",
            f"optimizer offload applies to ZeRO stages 2 and 3 only (zero_stage = {ds.zero_stage}): "
            "it is ignored; set zero_stage = 2",
        )
    if ds.offload_param_device != "none" and ds.zero_stage != 3:
        yield warning(
            "launch.deepspeed.offload_param_device",
            f"parameter offload applies to ZeRO stage 3 only (zero_stage = {ds.zero_stage}): it is ignored",
        )
    for what in ("optimizer", "param"):
        if (
            getattr(ds, f"offload_{what}_device") == "nvme"
            and getattr(ds, f"offload_{what}_nvme_path") is None
        ):
            yield error(
                f"launch.deepspeed.offload_{what}_nvme_path",
                f'offload_{what}_device = "nvme" needs the NVMe folder: set offload_{what}_nvme_path',
            )


@rule
def launch_values_quote(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Values ``train.sh`` and ``train.ps1`` cannot pass exactly: compiling would refuse them.

    The check is the scripts' own quoting (:func:`lorabuild.launch.script_value_errors`), so
    ``check`` and ``compile`` refuse the same values; only the advice is the recipe's.
    """
    spec = launch_spec(recipe, families.get(family_of(recipe, facts)).train_script)
    for key, exc in script_value_errors(spec):
        fix = exc.fix
        if key.startswith("launch.accelerate_args."):
            # accelerate reads its options only from its command line: config.toml cannot carry them.
            fix = "accelerate_args are passed on accelerate's command line: change the value or leave the option out"
        yield error(key, str(exc).removesuffix(exc.fix) + fix)


@rule
def multi_gpu_windows(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """NCCL is Linux-only: on Windows kohya falls back to the gloo backend (train_util.py, prepare_accelerator)."""
    if facts.platform == "win32" and recipe.launch.num_processes > 1:
        yield warning(
            "launch.gpus",
            f"{recipe.launch.num_processes} GPUs on Windows: NCCL does not exist there, so the processes "
            "synchronise through gloo, which is much slower; PyTorch 2.4+ may also need "
            'USE_LIBUV = "0" in [launch.env]. WSL2 has NCCL',
        )
