"""The staged subsets: each image's staged name, size, bucket and caption, computed purely.

:func:`plan_subsets` turns a recipe and its facts into one :class:`SubsetPlan` per
``[[dataset.subsets]]``: the images that will be staged (bad ones left out), each with the caption
the rules give it and the bucket kohya will put it in. The pre-flight check computes them once and
hands them to both the rules (:func:`lorabuild.rules.run_rules`) and
:func:`lorabuild.plan.plan.build_plan`: with 10,000 images the captions cost most of a check.
:func:`epoch_bucket_counts` counts one epoch's samples per bucket as kohya registers them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lorabuild.kohya.buckets import BucketSettings, bucket_for
from lorabuild.probe.cache import Fingerprint
from lorabuild.probe.facts import Facts
from lorabuild.probe.imagefix import Conversion, plan_conversion, staged_image_names
from lorabuild.probe.images import ImageInfo
from lorabuild.recipe.captions import CaptionFile, apply_rules, join_tags, split_tags
from lorabuild.recipe.schema import ImagesSection, Recipe

# Default bucket granularity kohya uses (--bucket_reso_steps 64); SDXL accepts 32 too.
DEFAULT_BUCKET_STEPS = 64

STAGED_CAPTION_EXTENSION = ".txt"


@dataclass(frozen=True)
class CutOut:
    """The cut-out staged in place of an image (``[images.remove_background]``).

    Attributes:
        file: The rendered cut-out in ``build/<name>/cutout/`` (mask applied, cropped, flattened),
            hard-linked into the stage.
        key: What decides its bytes (the model, the image's content, the options), for the
            stage manifest.
        size: Its ``(width, height)`` (a cropped cut-out's own size, which kohya buckets by).
        coverage: The fraction of the image the subject covers.
    """

    file: Path
    key: str
    size: tuple[int, int]
    coverage: float


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
        cutout: The cut-out staged instead of the source (set by prepare once the segmentation
            model has run, :func:`lorabuild.plan.plan.with_cutouts`); None: the source, linked or
            converted.
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
    cutout: CutOut | None = None

    @property
    def how(self) -> str:
        """``link`` (a hard link, or a copy across file systems), ``convert`` or ``cutout``."""
        if self.cutout is not None:
            return "cutout"
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


Subsets = tuple[SubsetPlan, ...]
"""Every subset's plan, in recipe order."""


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


def plan_subsets(recipe: Recipe, facts: Facts) -> Subsets:
    """Each subset's staged folder, images, buckets and captions."""
    settings = bucket_settings(recipe)
    # Datasets repeat a handful of sizes many times: kohya's bucket choice is worked out once per size.
    buckets: dict[tuple[int, int], tuple[int, int]] = {}
    folders = staged_folder_names(recipe)
    plans = []
    for i, (subset, sfacts) in enumerate(zip(recipe.dataset.subsets, facts.subsets, strict=True)):
        kept = [
            (info, caption, sfacts.fingerprint(n), plan_conversion(info, recipe.images))
            for n, (info, caption) in enumerate(zip(sfacts.images, sfacts.captions, strict=True))
            if bad_image(info, recipe.images) is None
        ]
        # A cut-out is a PNG rendered by prepare: its name is chosen as a converted image's.
        cut = recipe.remove_background_for(subset) is not None
        names = staged_image_names([k[0] for k in kept], [k[3] for k in kept], png=cut)
        images = []
        for name, (info, caption, fingerprint, conversion) in zip(names, kept, strict=True):
            size = conversion.size if conversion else (info.width, info.height)
            if size not in buckets:
                buckets[size] = bucket_for(settings, *size)
            images.append(
                StagedImage(
                    source=info.path,
                    name=name,
                    size=size,
                    bucket=buckets[size],
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


def epoch_bucket_counts(subsets: Subsets) -> Counter[tuple[int, int]]:
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


def first_trigger(recipe: Recipe) -> str | None:
    """The first subset trigger, used for {trigger} in prompts and the metadata."""
    return next((s.trigger for s in recipe.dataset.subsets if s.trigger), None)
