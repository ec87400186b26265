"""kohya's aspect-ratio bucketing and step counting, computed up front from image sizes.

Everything here is pure: sizes in, buckets and counts out. It reimplements, and is tested
against, these parts of kohya sd-scripts at the pinned commit:

* ``BaseDataset.adjust_min_max_bucket_reso_by_steps`` (``library/train_util.py``): with buckets on,
  ``min_bucket_reso`` is rounded down and ``max_bucket_reso`` up to multiples of
  ``bucket_reso_steps``; then both must bracket the resolution. See :func:`adjusted_settings`.
* ``model_util.make_bucket_resolutions``: the predefined buckets. Starting from the resolution's
  area ``A``, one square bucket of side ``floor(sqrt(A) / steps) * steps``, and for every width
  ``w`` from ``min`` to ``max`` in ``steps`` the pair ``w x h`` and ``h x w`` with
  ``h = min(max, floor(A / w / steps) * steps)`` when ``h >= min``. See :func:`bucket_resolutions`.
* ``BucketManager.select_bucket``: an image whose size is itself a bucket goes there; otherwise to
  the bucket with the nearest aspect ratio (first in sorted order on ties), scaled to cover it and
  centre-cropped. With ``bucket_no_upscale``, an image larger than the resolution's area is scaled
  down to about that area, and the bucket is the (scaled) size rounded down to ``steps``; nothing
  is enlarged. Without bucketing there is one bucket, the resolution. See :func:`choose_bucket`.
* ``BaseDataset.make_buckets`` and ``train_network.py``: batches per epoch and ``max_train_steps``
  from ``max_train_epochs``. See :func:`batches_per_epoch` and :func:`total_steps`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

Size = tuple[int, int]
"""``(width, height)`` in pixels, kohya's order for resolutions and buckets."""


@dataclass(frozen=True)
class BucketSettings:
    """One dataset's bucketing options, named after kohya's dataset-config keys.

    Attributes:
        resolution: ``resolution`` as ``(width, height)``.
        enable_bucket: ``enable_bucket``; off, every image is trained at ``resolution``.
        min_reso: ``min_bucket_reso``.
        max_reso: ``max_bucket_reso``.
        reso_steps: ``bucket_reso_steps``.
        no_upscale: ``bucket_no_upscale``.
    """

    resolution: Size
    enable_bucket: bool = False
    min_reso: int = 256
    max_reso: int = 1024
    reso_steps: int = 64
    no_upscale: bool = False


@dataclass(frozen=True)
class AdjustedSettings:
    """Bucket settings as kohya ends up using them, with what it says about them.

    Attributes:
        settings: The settings after kohya's rounding of ``min_reso`` / ``max_reso``.
        warnings: kohya changes a setting and goes on (one sentence each).
        errors: kohya stops on these settings (one sentence each).
    """

    settings: BucketSettings
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


def adjusted_settings(settings: BucketSettings, *, steps_multiple: int | None = None) -> AdjustedSettings:
    """Round and check bucket settings as kohya does when it builds a dataset.

    Mirrors ``BaseDataset.adjust_min_max_bucket_reso_by_steps``, the asserts in ``BucketManager``
    and, when ``steps_multiple`` is given, ``verify_bucket_reso_steps``. kohya checks none of this
    with buckets off, and neither does this function, except that sizes must be positive.

    Args:
        settings: The dataset's settings as written.
        steps_multiple: What ``bucket_reso_steps`` must divide by for the model family (64 for
            SD 1/2 and FLUX, 32 for SDXL and SD3); None skips that check.

    Returns:
        The adjusted settings, warnings for what kohya changes, errors for what it stops on.
    """
    adjusted, _ = _adjust(settings, steps_multiple)
    return adjusted


def _adjust(settings: BucketSettings, steps_multiple: int | None) -> tuple[AdjustedSettings, bool]:
    """:func:`adjusted_settings`, and whether the settings are beyond computing buckets with."""
    width, height = settings.resolution
    if width < 1 or height < 1:
        return AdjustedSettings(
            settings, errors=(f"resolution must be positive (got {width}x{height})",)
        ), True
    if not settings.enable_bucket:
        return AdjustedSettings(settings), False
    steps = settings.reso_steps
    if steps < 1:
        return AdjustedSettings(
            settings, errors=(f"bucket_reso_steps must be at least 1 (got {steps})",)
        ), True
    warnings: list[str] = []
    errors: list[str] = []
    min_reso, max_reso = settings.min_reso, settings.max_reso
    if min_reso % steps:
        rounded = min_reso - min_reso % steps
        warnings.append(
            f"min_bucket_reso {min_reso} is not a multiple of bucket_reso_steps {steps}:"
            f" kohya rounds it down to {rounded}"
        )
        min_reso = rounded
    if max_reso % steps:
        rounded = max_reso + steps - max_reso % steps
        warnings.append(
            f"max_bucket_reso {max_reso} is not a multiple of bucket_reso_steps {steps}:"
            f" kohya rounds it up to {rounded}"
        )
        max_reso = rounded
    fatal = min_reso < 1 and not settings.no_upscale  # no_upscale never makes predefined buckets
    if min_reso < 1:
        # make_bucket_resolutions would divide by a bucket width of 0.
        errors.append(
            f"min_bucket_reso {settings.min_reso} must be at least bucket_reso_steps {steps}:"
            " kohya stops with ZeroDivisionError"
        )
    if min(width, height) < min_reso:
        errors.append(
            f"min_bucket_reso {min_reso} is larger than the resolution's shorter side {min(width, height)}:"
            " kohya stops with 'min_bucket_reso must be equal or less than resolution';"
            " lower min_bucket_reso or raise the resolution"
        )
    if max(width, height) > max_reso:
        errors.append(
            f"max_bucket_reso {max_reso} is smaller than the resolution's longer side {max(width, height)}:"
            " kohya stops with 'max_bucket_reso must be equal or greater than resolution';"
            " raise max_bucket_reso or lower the resolution"
        )
    if steps_multiple is not None and steps % steps_multiple:
        errors.append(
            f"bucket_reso_steps {steps} is not a multiple of {steps_multiple}, which this model needs:"
            f" kohya stops with 'bucket_reso_steps is {steps}. it must be divisible by {steps_multiple}'"
        )
    adjusted = replace(settings, min_reso=min_reso, max_reso=max_reso)
    return AdjustedSettings(adjusted, tuple(warnings), tuple(errors)), fatal


def bucket_resolutions(settings: BucketSettings) -> tuple[Size, ...]:
    """The predefined buckets kohya makes for these settings, sorted.

    Mirrors ``model_util.make_bucket_resolutions`` called with kohya's adjusted min and max.
    Settings that kohya rejects with an assert (min/max not bracketing the resolution) still
    give the buckets kohya would compute, so that a report can show them.

    Args:
        settings: The dataset's bucket settings as written.

    Returns:
        ``(width, height)`` pairs in ascending order: the resolution alone with buckets off,
        none with ``bucket_no_upscale`` (buckets then follow the image sizes).

    Raises:
        ValueError: Sizes kohya cannot compute buckets from at all (a resolution, step or
            minimum below 1).
    """
    return _predefined(_usable(settings))


@lru_cache(maxsize=64)
def _usable(settings: BucketSettings) -> BucketSettings:
    adjusted, fatal = _adjust(settings, None)
    if fatal:
        raise ValueError("; ".join(adjusted.errors))
    return adjusted.settings


@lru_cache(maxsize=64)
def _predefined(settings: BucketSettings) -> tuple[Size, ...]:
    if not settings.enable_bucket:
        return (settings.resolution,)
    if settings.no_upscale:
        return ()
    steps = settings.reso_steps
    area = settings.resolution[0] * settings.resolution[1]
    side = int(math.sqrt(area) // steps) * steps
    resos = {(side, side)}
    width = settings.min_reso
    while width <= settings.max_reso:
        height = min(settings.max_reso, (area // width) // steps * steps)
        if height >= settings.min_reso:
            resos.add((width, height))
            resos.add((height, width))
        width += steps
    return tuple(sorted(resos))


@dataclass(frozen=True)
class BucketChoice:
    """Where kohya puts one image.

    Attributes:
        bucket: The bucket ``(width, height)``: the size the image is trained at.
        resized_size: The size kohya resizes the image to before centre-cropping it to the bucket.
        problem: None when kohya can use the image; otherwise why it fails on it and what to do.
    """

    bucket: Size
    resized_size: Size
    problem: str | None = None


def choose_bucket(
    settings: BucketSettings,
    width: int,
    height: int,
    *,
    cache_latents: bool = True,
    random_crop: bool = False,
    pixel_size: Size | None = None,
) -> BucketChoice:
    """The bucket kohya assigns to an image, and whether kohya can train on it.

    Mirrors ``BucketManager.select_bucket`` as ``BaseDataset.make_buckets`` sets it up; with
    buckets off, also the size asserts in ``BaseDataset.__getitem__`` that apply when latents
    are not cached.

    Args:
        settings: The dataset's bucket settings as written (kohya's rounding is applied here).
        width: Image width as kohya reads it for bucketing (:attr:`ImageInfo.width`).
        height: Image height as kohya reads it for bucketing.
        cache_latents: ``cache_latents`` (or ``cache_latents_to_disk``) is on. Only matters with
            buckets off: uncached images must then already be the resolution's size.
        random_crop: The subset's ``random_crop``; with buckets off and no latent cache it lets
            an oversized image be cropped.
        pixel_size: The decoded size when it differs from ``(width, height)``
            (:attr:`ImageInfo.pixel_size`); kohya's size asserts look at decoded pixels.

    Returns:
        The bucket, the resized size and any problem.

    Raises:
        ValueError: Sizes kohya cannot compute buckets from at all (see :func:`bucket_resolutions`).
    """
    usable = _usable(settings)
    if width < 1 or height < 1:
        # kohya divides by the height it read (0 for an unreadable file): ZeroDivisionError.
        return BucketChoice(
            (0, 0),
            (0, 0),
            "its size cannot be read, and kohya stops with ZeroDivisionError: re-export or delete it",
        )
    if usable.enable_bucket and usable.no_upscale:  # kohya ignores no_upscale with buckets off
        choice = _select_no_upscale(usable, width, height)
    else:
        choice = _select_predefined(_predefined(usable), width, height)
    if choice.problem is None and not usable.enable_bucket and not cache_latents:
        problem = _fixed_size_problem(usable.resolution, pixel_size or (width, height), random_crop)
        choice = replace(choice, problem=problem)
    return choice


def bucket_for(settings: BucketSettings, width: int, height: int) -> Size:
    """The bucket ``(width, height)`` kohya assigns to an image of this size.

    Args:
        settings: The dataset's bucket settings as written.
        width: Image width as kohya reads it (:attr:`ImageInfo.width`).
        height: Image height as kohya reads it.

    Returns:
        The bucket; ``(0, 0)`` or a zero side where kohya fails (see :func:`choose_bucket`).

    Raises:
        ValueError: Sizes kohya cannot compute buckets from at all (see :func:`bucket_resolutions`).
    """
    return choose_bucket(settings, width, height).bucket


def _select_predefined(resos: tuple[Size, ...], width: int, height: int) -> BucketChoice:
    """``select_bucket`` without ``no_upscale``: nearest aspect ratio, scaled to cover it."""
    aspect = width / height
    if (width, height) in resos:
        reso = (width, height)
    else:
        # np.abs(ar_errors).argmin(): the first bucket with the smallest error, same float64 maths.
        reso = min(resos, key=lambda r: abs(r[0] / r[1] - aspect))
    # Wider than the bucket: match the heights and crop the sides; otherwise match the widths.
    scale = reso[1] / height if aspect > reso[0] / reso[1] else reso[0] / width
    resized = (int(width * scale + 0.5), int(height * scale + 0.5))
    return BucketChoice(reso, resized)


def _select_no_upscale(settings: BucketSettings, width: int, height: int) -> BucketChoice:
    """``select_bucket`` with ``no_upscale``: shrink to the resolution's area, never enlarge."""
    steps = settings.reso_steps
    area = settings.resolution[0] * settings.resolution[1]
    aspect = width / height

    def round_to_steps(x: float) -> int:  # BucketManager.round_to_steps
        rounded = int(x + 0.5)
        return rounded - rounded % steps

    try:
        if width * height > area:
            resized_width = math.sqrt(area * aspect)
            resized_height = area / resized_width
            # Round the width, or the height, to steps and derive the other side from the
            # aspect ratio; keep whichever pair is closer to the image's aspect ratio.
            width_rounded = round_to_steps(resized_width)
            aspect_by_width = width_rounded / round_to_steps(width_rounded / aspect)
            height_rounded = round_to_steps(resized_height)
            aspect_by_height = round_to_steps(height_rounded * aspect) / height_rounded
            if abs(aspect_by_width - aspect) < abs(aspect_by_height - aspect):
                resized = (width_rounded, int(width_rounded / aspect + 0.5))
            else:
                resized = (int(height_rounded * aspect + 0.5), height_rounded)
        else:
            resized = (width, height)
    except ZeroDivisionError:
        return BucketChoice(
            (0, 0),
            (0, 0),
            f"is {width}x{height}, too narrow for bucket_no_upscale: scaled to the resolution's area,"
            f" its short side rounds down to less than bucket_reso_steps ({steps}) and kohya stops"
            " with ZeroDivisionError; crop it or turn off bucket_no_upscale",
        )
    bucket = (resized[0] - resized[0] % steps, resized[1] - resized[1] % steps)
    problem = None
    if bucket[0] == 0 or bucket[1] == 0:
        problem = (
            f"is {width}x{height}: with bucket_no_upscale its bucket is {bucket[0]}x{bucket[1]},"
            f" because a side shorter than bucket_reso_steps ({steps}) rounds down to 0,"
            " and kohya fails on it; enlarge or crop the image, or turn off bucket_no_upscale"
        )
    return BucketChoice(bucket, resized, problem)


def _fixed_size_problem(resolution: Size, pixel_size: Size, random_crop: bool) -> str | None:
    """kohya's asserts for uncached images with buckets off (``BaseDataset.__getitem__``)."""
    res_w, res_h = resolution
    width, height = pixel_size
    if (width > res_w or height > res_h) and not random_crop:  # cropping is the only way down
        return (
            f"is {width}x{height}, larger than the resolution {res_w}x{res_h} with bucketing, latent caching"
            " and random_crop all off: kohya stops with 'image too large, but cropping and bucketing are"
            f" disabled'; turn on enable_bucket or resize the image to {res_w}x{res_h}"
        )
    if width < res_w or height < res_h:  # nothing enlarges it
        return (
            f"is {width}x{height}, smaller than the resolution {res_w}x{res_h} with bucketing and latent"
            f" caching off: kohya stops with 'image size is small'; turn on enable_bucket or resize the"
            f" image to {res_w}x{res_h}"
        )
    return None


def batches_per_epoch(bucket_counts: Mapping[Size, int], batch_size: int) -> int:
    """Batches in one epoch of one dataset.

    Mirrors the batch index ``BaseDataset.make_buckets`` builds: each bucket contributes
    ``ceil(images / batch_size)`` batches, so a part-filled batch per bucket is the rule. A run's
    ``len(train_dataloader)`` is the sum over its datasets, each with its own batch size.

    Args:
        bucket_counts: Images per bucket, repeats and regularization images included.
        batch_size: The dataset's ``batch_size`` (``train_batch_size``).

    Returns:
        The number of batches.

    Raises:
        ValueError: ``batch_size`` is below 1 or a count is negative.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    if any(count < 0 for count in bucket_counts.values()):
        raise ValueError("bucket counts must not be negative")
    return sum(-(-count // batch_size) for count in bucket_counts.values())


def total_steps(
    batches: int, epochs: int, gradient_accumulation_steps: int = 1, num_processes: int = 1
) -> int:
    """``max_train_steps`` as ``train_network.py`` derives it from ``max_train_epochs``.

    kohya computes ``epochs * ceil(batches / num_processes / gradient_accumulation_steps)``,
    with ``batches`` the length of the whole (unsharded) data loader; the float division is
    kept here so that the result matches kohya's to the step.

    Args:
        batches: Batches per epoch, summed over datasets (:func:`batches_per_epoch`).
        epochs: ``max_train_epochs``.
        gradient_accumulation_steps: ``gradient_accumulation_steps``.
        num_processes: Processes (GPUs) ``accelerate`` launches.

    Returns:
        The optimizer steps the run takes.

    Raises:
        ValueError: An argument is out of range.
    """
    if batches < 0 or epochs < 0:
        raise ValueError(f"batches and epochs must not be negative (got {batches}, {epochs})")
    if gradient_accumulation_steps < 1 or num_processes < 1:
        raise ValueError(
            "gradient_accumulation_steps and num_processes must be at least 1"
            f" (got {gradient_accumulation_steps}, {num_processes})"
        )
    return epochs * math.ceil(batches / num_processes / gradient_accumulation_steps)
