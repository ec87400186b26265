"""kohya's bucketing and step counting (lorabuild.kohya.buckets), by hand and against kohya itself."""

from __future__ import annotations

import importlib
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lorabuild.kohya.buckets import (
    BucketChoice,
    BucketSettings,
    adjusted_settings,
    batches_per_epoch,
    bucket_for,
    bucket_resolutions,
    choose_bucket,
    total_steps,
)

SD_SCRIPTS = Path(__file__).resolve().parent.parent / "vendor" / "sd-scripts"

SD15_512 = BucketSettings((512, 512), enable_bucket=True, min_reso=256, max_reso=1024, reso_steps=64)
SD15_768 = BucketSettings((768, 768), enable_bucket=True, min_reso=256, max_reso=1024, reso_steps=64)


# --- predefined buckets (model_util.make_bucket_resolutions) ------------------------------------


def test_predefined_buckets_for_512_by_hand() -> None:
    # area 262144: square 512; for w = 256, 320, ... 1024: h = min(1024, floor(262144 / w / 64) * 64).
    assert bucket_resolutions(SD15_512) == (
        (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640),
        (448, 576), (512, 512), (576, 448), (640, 384), (704, 320), (768, 320), (832, 256),
        (896, 256), (960, 256), (1024, 256),
    )  # fmt: skip


def test_without_buckets_the_one_bucket_is_the_resolution() -> None:
    assert bucket_resolutions(BucketSettings((768, 512))) == ((768, 512),)


def test_no_upscale_has_no_predefined_buckets() -> None:
    assert bucket_resolutions(BucketSettings((512, 512), enable_bucket=True, no_upscale=True)) == ()


# --- select_bucket ---------------------------------------------------------------------------------


def test_portrait_photo_at_768_goes_to_the_nearest_aspect_ratio() -> None:
    # 1000x1500 has aspect 0.667; the nearest buckets are 640x896 (0.714, error 0.048) and
    # 576x960 (0.600, error 0.067). Narrower than 640x896, it is scaled to width 640 and the
    # height 960 is cropped to 896.
    assert choose_bucket(SD15_768, 1000, 1500) == BucketChoice((640, 896), (640, 960))
    assert bucket_for(SD15_768, 1000, 1500) == (640, 896)


def test_small_image_is_enlarged_to_cover_its_bucket() -> None:
    # 300x200 (1.5) at 512: 640x384 (1.667) beats 576x448 (1.286); wider bucket, so match the
    # width: scale 640/300, height 200 * 2.133 = 426.7 -> 427, cropped to 384.
    assert choose_bucket(SD15_512, 300, 200) == BucketChoice((640, 384), (640, 427))


def test_image_already_at_a_bucket_size_is_not_resized() -> None:
    assert choose_bucket(SD15_512, 448, 576) == BucketChoice((448, 576), (448, 576))


def test_no_upscale_shrinks_large_images_to_the_area() -> None:
    # 1000x1500 over 768x768: sqrt(589824 * 0.667) = 627.1 x 940.6. Width first: 576 and
    # 864 -> 832 (0.692); height first: 896 and 597 -> 576 (0.643). 0.643 is closer to 0.667,
    # so the image becomes 597x896 and the bucket 576x896.
    settings = BucketSettings((768, 768), enable_bucket=True, no_upscale=True)
    assert choose_bucket(settings, 1000, 1500) == BucketChoice((576, 896), (597, 896))


def test_no_upscale_keeps_small_images_and_rounds_the_bucket_down() -> None:
    settings = BucketSettings((512, 512), enable_bucket=True, no_upscale=True)
    assert choose_bucket(settings, 300, 200) == BucketChoice((256, 192), (300, 200))


def test_no_upscale_side_shorter_than_steps_is_a_problem() -> None:
    settings = BucketSettings((512, 512), enable_bucket=True, no_upscale=True)
    choice = choose_bucket(settings, 50, 1000)
    assert choice.bucket == (0, 960)
    assert choice.problem is not None
    assert "with bucket_no_upscale its bucket is 0x960" in choice.problem


def test_no_upscale_extreme_aspect_ratio_is_a_problem_not_a_crash() -> None:
    # kohya: b_height_in_wr rounds to 0 and it divides by it (ZeroDivisionError).
    settings = BucketSettings((512, 512), enable_bucket=True, no_upscale=True)
    choice = choose_bucket(settings, 100_000, 20)
    assert choice.bucket == (0, 0)
    assert choice.problem is not None
    assert "ZeroDivisionError" in choice.problem


def test_unreadable_size_is_a_problem() -> None:
    choice = choose_bucket(SD15_512, 0, 0)
    assert choice.problem == (
        "its size cannot be read, and kohya stops with ZeroDivisionError: re-export or delete it"
    )


def test_no_upscale_is_ignored_without_buckets() -> None:
    settings = BucketSettings((512, 512), enable_bucket=False, no_upscale=True)
    assert choose_bucket(settings, 1000, 500) == BucketChoice((512, 512), (1024, 512))


# --- buckets off: kohya's size asserts for uncached images -----------------------------------------

FIXED = BucketSettings((512, 512))


def test_fixed_size_image_of_the_right_size_is_fine() -> None:
    assert choose_bucket(FIXED, 512, 512, cache_latents=False).problem is None


def test_fixed_size_image_too_large_without_random_crop() -> None:
    choice = choose_bucket(FIXED, 600, 512, cache_latents=False)
    assert choice.problem == (
        "is 600x512, larger than the resolution 512x512 with bucketing, latent caching and random_crop"
        " all off: kohya stops with 'image too large, but cropping and bucketing are disabled';"
        " turn on enable_bucket or resize the image to 512x512"
    )
    assert choose_bucket(FIXED, 600, 512, cache_latents=False, random_crop=True).problem is None


def test_fixed_size_image_too_small() -> None:
    choice = choose_bucket(FIXED, 400, 512, cache_latents=False)
    assert choice.problem is not None
    assert choice.problem.startswith("is 400x512, smaller than the resolution 512x512")
    assert "'image size is small'" in choice.problem
    # random_crop crops the long side but cannot grow the short one.
    assert choose_bucket(FIXED, 600, 400, cache_latents=False, random_crop=True).problem is not None


def test_fixed_size_checks_use_the_decoded_size() -> None:
    # An extended WebP of 512x512 that kohya measures as 511x511.
    assert choose_bucket(FIXED, 511, 511, cache_latents=False, pixel_size=(512, 512)).problem is None


def test_cached_latents_resize_any_size_without_buckets() -> None:
    assert choose_bucket(FIXED, 600, 400) == BucketChoice((512, 512), (768, 512))
    assert choose_bucket(FIXED, 100, 100).problem is None


# --- settings: adjust_min_max_bucket_reso_by_steps and the asserts -----------------------------------


def test_min_and_max_are_rounded_to_steps_with_warnings() -> None:
    result = adjusted_settings(BucketSettings((512, 512), True, min_reso=300, max_reso=1000, reso_steps=64))
    assert (result.settings.min_reso, result.settings.max_reso) == (256, 1024)
    assert result.warnings == (
        "min_bucket_reso 300 is not a multiple of bucket_reso_steps 64: kohya rounds it down to 256",
        "max_bucket_reso 1000 is not a multiple of bucket_reso_steps 64: kohya rounds it up to 1024",
    )
    assert result.errors == ()


def test_min_above_resolution_is_an_error() -> None:
    result = adjusted_settings(BucketSettings((768, 512), True, min_reso=640, max_reso=1024))
    assert result.errors == (
        "min_bucket_reso 640 is larger than the resolution's shorter side 512: kohya stops with"
        " 'min_bucket_reso must be equal or less than resolution';"
        " lower min_bucket_reso or raise the resolution",
    )


def test_max_below_resolution_is_an_error_after_rounding() -> None:
    # 700 rounds up to 704, still below 768.
    result = adjusted_settings(BucketSettings((768, 768), True, min_reso=256, max_reso=700))
    assert len(result.errors) == 1
    assert result.errors[0].startswith("max_bucket_reso 704 is smaller than the resolution's longer side 768")
    # 760 rounds up to 768, which is enough.
    assert adjusted_settings(BucketSettings((768, 768), True, min_reso=256, max_reso=760)).errors == ()


def test_steps_multiple_for_the_model_family() -> None:
    settings = BucketSettings((1024, 1024), True, min_reso=256, max_reso=2048, reso_steps=32)
    assert adjusted_settings(settings, steps_multiple=32).errors == ()
    assert adjusted_settings(settings, steps_multiple=64).errors == (
        "bucket_reso_steps 32 is not a multiple of 64, which this model needs:"
        " kohya stops with 'bucket_reso_steps is 32. it must be divisible by 64'",
    )


def test_settings_are_not_checked_without_buckets() -> None:
    result = adjusted_settings(BucketSettings((512, 512), False, min_reso=900, max_reso=100, reso_steps=7))
    assert result == type(result)(BucketSettings((512, 512), False, min_reso=900, max_reso=100, reso_steps=7))


def test_nonsense_sizes_are_errors_and_refused_by_bucket_for() -> None:
    zero_steps = BucketSettings((512, 512), True, reso_steps=0)
    assert adjusted_settings(zero_steps).errors == ("bucket_reso_steps must be at least 1 (got 0)",)
    with pytest.raises(ValueError, match="bucket_reso_steps must be at least 1"):
        bucket_for(zero_steps, 100, 100)
    assert adjusted_settings(BucketSettings((0, 512))).errors == ("resolution must be positive (got 0x512)",)
    tiny_min = BucketSettings((512, 512), True, min_reso=32, reso_steps=64)
    assert "kohya stops with ZeroDivisionError" in adjusted_settings(tiny_min).errors[0]
    with pytest.raises(ValueError):
        bucket_resolutions(tiny_min)


def test_settings_kohya_rejects_still_give_buckets() -> None:
    # min 640 > 512 fails kohya's assert, but a report can still show where images would go.
    settings = BucketSettings((768, 512), True, min_reso=640, max_reso=1024)
    # Only the square bucket survives: floor(sqrt(393216) / 64) * 64 = 576.
    assert bucket_for(settings, 1000, 1000) == (576, 576)


# --- batches and steps --------------------------------------------------------------------------------


def test_batches_per_epoch_counts_a_partial_batch_per_bucket() -> None:
    counts = {(512, 512): 10, (448, 576): 3, (576, 448): 0}
    assert batches_per_epoch(counts, 4) == 3 + 1
    assert batches_per_epoch(counts, 1) == 13
    assert batches_per_epoch({}, 2) == 0
    with pytest.raises(ValueError):
        batches_per_epoch(counts, 0)


def test_total_steps_from_epochs() -> None:
    assert total_steps(10, 5) == 50
    assert total_steps(10, 5, gradient_accumulation_steps=3) == 5 * 4  # ceil(10 / 3)
    assert total_steps(10, 5, num_processes=2) == 5 * 5
    assert total_steps(10, 5, gradient_accumulation_steps=3, num_processes=2) == 5 * 2  # ceil(1.67)
    assert total_steps(0, 5) == 0
    with pytest.raises(ValueError):
        total_steps(10, 5, gradient_accumulation_steps=0)


# --- against kohya's own BucketManager -------------------------------------------------------------------


def import_kohya() -> ModuleType:
    """kohya's ``library.train_util`` from vendor/sd-scripts, or skip the test."""
    if not (SD_SCRIPTS / "train_network.py").is_file():
        pytest.skip(
            "kohya sd-scripts is not checked out at vendor/sd-scripts:"
            " run `git submodule update --init vendor/sd-scripts`"
        )
    for module in ("torch", "torchvision", "cv2", "transformers", "diffusers", "accelerate", "imagesize"):
        pytest.importorskip(module, reason=f"kohya's training code needs {module}: pip install -e '.[train]'")
    if str(SD_SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SD_SCRIPTS))
    return importlib.import_module("library.train_util")


SETTINGS_VS_KOHYA = [
    SD15_512,
    SD15_768,
    BucketSettings((768, 512), True, min_reso=320, max_reso=960, reso_steps=64),
    BucketSettings((512, 512), True, min_reso=300, max_reso=1000, reso_steps=64),  # rounded by kohya
    BucketSettings((1024, 1024), True, min_reso=256, max_reso=2048, reso_steps=32),  # SDXL-like
    BucketSettings((832, 1216), True, min_reso=512, max_reso=1536, reso_steps=32),
    BucketSettings((768, 768), True, min_reso=256, max_reso=1024, reso_steps=64, no_upscale=True),
    BucketSettings((1024, 1024), True, min_reso=256, max_reso=2048, reso_steps=32, no_upscale=True),
    BucketSettings((512, 512)),
    BucketSettings((768, 512)),
]


def random_sizes(seed: int, count: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    sizes = [(rng.randint(16, 4096), rng.randint(16, 4096)) for _ in range(count)]
    sizes += [(rng.randint(1, 80), rng.randint(200, 3000)) for _ in range(20)]  # slivers
    sizes += [(rng.randint(5000, 60000), rng.randint(8, 40)) for _ in range(10)]  # panoramas
    sizes += [(512, 512), (768, 768), (1024, 1024), (448, 576), (1000, 1500), (1500, 1000), (1, 1)]
    return sizes


def kohya_manager(train_util: ModuleType, settings: BucketSettings) -> object:
    """A BucketManager set up as BaseDataset.make_buckets sets it up."""
    width, height = settings.resolution
    if not settings.enable_bucket:
        manager = train_util.BucketManager(False, (width, height), None, None, None)
        manager.set_predefined_resos([(width, height)])
        return manager
    min_reso, max_reso = train_util.BaseDataset.adjust_min_max_bucket_reso_by_steps(
        None, settings.resolution, settings.min_reso, settings.max_reso, settings.reso_steps
    )
    manager = train_util.BucketManager(
        settings.no_upscale, (width, height), min_reso, max_reso, settings.reso_steps
    )
    if not settings.no_upscale:
        manager.make_buckets()
    return manager


@pytest.mark.real_trainer
@pytest.mark.parametrize("settings", SETTINGS_VS_KOHYA, ids=str)
def test_bucket_for_matches_kohya(settings: BucketSettings) -> None:
    train_util = import_kohya()
    manager = kohya_manager(train_util, settings)
    if settings.enable_bucket and not settings.no_upscale:
        assert list(bucket_resolutions(settings)) == manager.predefined_resos  # type: ignore[attr-defined]
    mismatches: list[object] = []
    for width, height in random_sizes(SETTINGS_VS_KOHYA.index(settings), 300):
        ours = choose_bucket(settings, width, height)
        try:
            reso, resized, _ = manager.select_bucket(width, height)  # type: ignore[attr-defined]
        except ZeroDivisionError:
            if ours.problem is None:
                mismatches.append(((width, height), "kohya: ZeroDivisionError", ours))
            continue
        theirs = (tuple(reso), tuple(resized))
        if (ours.bucket, ours.resized_size) != theirs:
            mismatches.append(((width, height), theirs, ours))
        elif (0 in reso) != (ours.problem is not None):
            mismatches.append(((width, height), "problem expected iff a zero side", ours))
    assert mismatches == []


@pytest.mark.real_trainer
@pytest.mark.parametrize(
    ("resolution", "min_reso", "max_reso", "steps"),
    [
        ((512, 512), 256, 1024, 64),
        ((512, 512), 300, 1000, 64),
        ((768, 512), 640, 1024, 64),
        ((768, 768), 256, 700, 64),
        ((768, 768), 256, 760, 64),
        ((1024, 1024), 200, 1100, 32),
        ((832, 1216), 832, 1216, 32),
    ],
)
def test_adjusted_settings_match_kohya(
    resolution: tuple[int, int], min_reso: int, max_reso: int, steps: int
) -> None:
    train_util = import_kohya()
    ours = adjusted_settings(BucketSettings(resolution, True, min_reso, max_reso, steps))
    try:
        theirs = train_util.BaseDataset.adjust_min_max_bucket_reso_by_steps(
            None, resolution, min_reso, max_reso, steps
        )
    except AssertionError:
        assert ours.errors
        return
    assert ours.errors == ()
    assert (ours.settings.min_reso, ours.settings.max_reso) == tuple(theirs)
