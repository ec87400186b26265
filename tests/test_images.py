"""Image facts (lorabuild.probe.images) on files made with Pillow, and against kohya's own readers."""

from __future__ import annotations

import importlib
import os
import struct
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from lorabuild.kohya.buckets import BucketSettings, batches_per_epoch, bucket_for
from lorabuild.probe.images import (
    IMAGE_EXTENSIONS,
    ImageInfo,
    kohya_reads_name,
    list_folder,
    probe_image,
    probe_images,
    why_kohya_skips,
)

SD_SCRIPTS = Path(__file__).resolve().parent.parent / "vendor" / "sd-scripts"
KOHYA_NEEDS = ("torch", "torchvision", "cv2", "transformers", "diffusers", "accelerate", "imagesize")


def save(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB", **params: object) -> Path:
    """Write a small image; the format follows the extension unless ``format`` is given."""
    colour: object = (200, 30, 30, 128) if mode in ("RGBA", "LA") else 100
    if mode == "RGB":
        colour = (200, 30, 30)
    image = Image.new(mode, size, colour)  # type: ignore[arg-type]
    image.save(path, **params)  # type: ignore[arg-type]
    return path


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def chop(path: Path, keep: int) -> Path:
    """Cut the file down: ``keep`` > 0 keeps that many bytes, < 0 drops that many from the end."""
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    return path


# --- listing ----------------------------------------------------------------------------------------


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    for name in ("a.png", "B.PNG", "c.Jpg", ".hidden.png", "d.jpeg", "e.webp", "f.bmp", "g.avif", "h.jxl"):
        (tmp_path / name).write_bytes(b"")
    for name in ("i.gif", "a.txt", ".DS_Store"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.png").write_bytes(b"")
    (tmp_path / "dir.png").mkdir()
    return tmp_path


def test_listing_matches_kohya_on_linux(mixed_folder: Path) -> None:
    listing = list_folder(mixed_folder, case_sensitive=True)

    def names(paths: tuple[Path, ...]) -> list[str]:
        return [p.name for p in paths]

    # Sorted by code point, as kohya sorts: upper case first; a folder named like an image counts.
    assert names(listing.images) == ["B.PNG", "a.png", "d.jpeg", "dir.png", "e.webp", "f.bmp"]
    assert names(listing.optional_images) == ["g.avif", "h.jxl"]
    assert names(listing.other_files) == [".DS_Store", ".hidden.png", "a.txt", "c.Jpg", "i.gif"]
    assert names(listing.subfolders) == ["sub"]
    assert all(p.parent == mixed_folder for p in listing.images)


def test_listing_on_windows_takes_any_case(mixed_folder: Path) -> None:
    listing = list_folder(mixed_folder, case_sensitive=False)
    assert "c.Jpg" in [p.name for p in listing.images]
    assert ".hidden.png" not in [p.name for p in listing.images]


def test_kohya_reads_name() -> None:
    assert IMAGE_EXTENSIONS == (".png", ".jpg", ".jpeg", ".webp", ".bmp")
    assert kohya_reads_name("x.JPEG", case_sensitive=True)
    assert not kohya_reads_name("x.Jpeg", case_sensitive=True)
    assert kohya_reads_name("x.Jpeg", case_sensitive=False)
    assert not kohya_reads_name("x.gif", case_sensitive=False)
    assert kohya_reads_name("x.avif", optional=True, case_sensitive=True)


def test_why_kohya_skips(mixed_folder: Path) -> None:
    assert why_kohya_skips(mixed_folder / "c.Jpg", case_sensitive=True) == (
        "kohya skips it on Linux and macOS: it matches only '.jpg' or '.JPG', not '.Jpg': rename it"
    )
    assert why_kohya_skips(mixed_folder / "c.Jpg", case_sensitive=False) is None
    assert why_kohya_skips(mixed_folder / ".hidden.png") == (
        "kohya skips hidden files (the name starts with '.'): rename it, or delete it if it is a leftover"
    )
    assert (
        why_kohya_skips(mixed_folder / "i.gif") == "kohya does not read .gif files: convert it to PNG or JPEG"
    )
    avif = why_kohya_skips(mixed_folder / "g.avif")
    assert avif is not None
    assert "pillow-avif-plugin" in avif
    assert why_kohya_skips(mixed_folder / "a.txt") is None


def test_listing_a_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list_folder(tmp_path / "nope")


# --- probing good files -----------------------------------------------------------------------------


def test_png_rgb(tmp_path: Path) -> None:
    path = save(tmp_path / "a.png", (640, 480))
    assert probe_image(path) == ImageInfo(path, 640, 480, "PNG", False, False, None)


def test_png_rgba_and_palette_transparency_have_alpha(tmp_path: Path) -> None:
    rgba = probe_image(save(tmp_path / "rgba.png", (30, 20), "RGBA"))
    assert (rgba.width, rgba.height, rgba.has_alpha, rgba.problem) == (30, 20, True, None)
    palette = probe_image(save(tmp_path / "p.png", (30, 20), "P", transparency=0))
    assert palette.has_alpha
    assert not probe_image(save(tmp_path / "l.png", (30, 20), "L")).has_alpha


def test_jpeg(tmp_path: Path) -> None:
    path = save(tmp_path / "a.jpg", (300, 200), quality=90)
    assert probe_image(path) == ImageInfo(path, 300, 200, "JPEG", False, False, None)


def test_jpeg_named_png_is_read_by_content(tmp_path: Path) -> None:
    info = probe_image(save(tmp_path / "a.png", (300, 200), format="JPEG"))
    assert (info.format, info.width, info.problem) == ("JPEG", 300, None)


def test_bmp(tmp_path: Path) -> None:
    path = save(tmp_path / "a.bmp", (101, 33))
    assert probe_image(path) == ImageInfo(path, 101, 33, "BMP", False, False, None)


def test_webp_simple_formats_keep_their_size(tmp_path: Path) -> None:
    lossy = probe_image(save(tmp_path / "lossy.webp", (100, 50), quality=80))
    lossless = probe_image(save(tmp_path / "lossless.webp", (100, 50), lossless=True))
    assert (lossy.width, lossy.height, lossy.decoded_size, lossy.problem) == (100, 50, None, None)
    assert (lossless.width, lossless.height, lossless.decoded_size) == (100, 50, None)


def test_extended_webp_is_one_pixel_short_as_kohya_reads_it(tmp_path: Path) -> None:
    # kohya's imagesize reads the VP8X canvas fields (size - 1) without adding 1.
    info = probe_image(save(tmp_path / "alpha.webp", (100, 50), "RGBA"))
    assert (info.width, info.height, info.has_alpha) == (99, 49, True)
    assert info.decoded_size == (100, 50)
    assert info.pixel_size == (100, 50)


@pytest.mark.parametrize(("orientation", "transposed"), [(1, False), (3, False), (6, True), (8, True)])
def test_exif_orientation_is_reported_not_applied(tmp_path: Path, orientation: int, transposed: bool) -> None:
    path = save(tmp_path / "photo.jpg", (300, 200), exif=exif_with_orientation(orientation))
    info = probe_image(path)
    # Sizes stay as stored: kohya neither reads nor applies the tag.
    assert (info.width, info.height) == (300, 200)
    assert (info.orientation, info.exif_transposed, info.problem) == (orientation, transposed, None)


def test_exif_orientation_in_webp(tmp_path: Path) -> None:
    info = probe_image(save(tmp_path / "photo.webp", (30, 20), exif=exif_with_orientation(6)))
    assert info.exif_transposed


def test_trailing_bytes_after_the_end_are_fine(tmp_path: Path) -> None:
    png = save(tmp_path / "a.png", (64, 64))
    png.write_bytes(png.read_bytes() + b"\0" * 100)
    jpeg = save(tmp_path / "a.jpg", (64, 64))
    jpeg.write_bytes(jpeg.read_bytes() + b"trailer from a phone" * 200)  # beyond the tail read
    assert probe_image(png).problem is None
    assert probe_image(jpeg).problem is None


def pillow_decodes(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.convert("RGB")  # what kohya's load_image does
    except OSError:
        return False
    return True


def test_missing_end_marker_alone_is_a_problem_only_if_pillow_fails(tmp_path: Path) -> None:
    # A file whose tail looks wrong is decoded to decide, as kohya's load_image would.
    png = chop(save(tmp_path / "a.png", (64, 64)), -12)
    assert pillow_decodes(png)
    assert probe_image(png).problem is None
    small_jpeg = chop(save(tmp_path / "small.jpg", (64, 64)), -2)
    assert not pillow_decodes(small_jpeg)  # libjpeg wants more data than is left
    assert (
        probe_image(small_jpeg).problem
        == "the file is truncated (no JPEG end marker): re-export or delete it"
    )
    large_jpeg = tmp_path / "large.jpg"
    noisy((400, 300)).save(large_jpeg)
    chop(large_jpeg, -2)
    assert (probe_image(large_jpeg).problem is None) == pillow_decodes(large_jpeg)


# --- probing bad files ------------------------------------------------------------------------------


def noisy(size: tuple[int, int]) -> Image.Image:
    """An image that compresses badly, so that cutting the file cuts pixel data."""
    return Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))


def test_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    noisy((200, 150)).save(path)
    info = probe_image(chop(path, path.stat().st_size // 2))
    # The header is intact, so kohya reads the size and fails only when it loads the pixels.
    assert (info.width, info.height, info.format) == (200, 150, "PNG")
    assert info.problem == "the file is truncated (no PNG end chunk): re-export or delete it"


def test_truncated_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    noisy((200, 150)).save(path, quality=95)
    info = probe_image(chop(path, path.stat().st_size // 2))
    assert info.problem == "the file is truncated (no JPEG end marker): re-export or delete it"


def test_truncated_webp(tmp_path: Path) -> None:
    path = tmp_path / "cut.webp"
    noisy((200, 150)).save(path, quality=95)
    size = path.stat().st_size
    info = probe_image(chop(path, size // 2))
    assert info.problem == (
        f"the file is truncated (its header says {size} bytes, the file has {size // 2}):"
        " re-export or delete it"
    )


def test_truncated_bmp(tmp_path: Path) -> None:
    path = save(tmp_path / "cut.bmp", (200, 150))
    size = path.stat().st_size
    info = probe_image(chop(path, size - 1000))
    assert info.problem == (
        f"the file is truncated (its header says {size} bytes, the file has {size - 1000}):"
        " re-export or delete it"
    )


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are my captions\n")
    assert probe_image(path) == ImageInfo(
        path,
        0,
        0,
        "",
        False,
        False,
        "cannot be read as an image (Pillow does not recognise its contents): re-export it as PNG or JPEG,"
        " or delete it",
    )


def test_png_cut_inside_its_header(tmp_path: Path) -> None:
    info = probe_image(chop(save(tmp_path / "a.png", (64, 64)), 20))
    assert info.problem is not None
    assert info.problem.startswith("cannot be read as an image")


def test_empty_file_folder_and_broken_link(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    problems = [probe_image(tmp_path / name).problem for name in ("empty.png", "folder.png", "link.png")]
    assert problems == [
        "the file is empty (0 bytes): re-export or delete it",
        "is a folder, not an image, yet kohya takes it for one by its name: rename it",
        "cannot be opened: the file does not exist (a broken link?)",
    ]


# --- many files ---------------------------------------------------------------------------------------


@pytest.fixture
def twenty_images(tmp_path: Path) -> list[Path]:
    paths = []
    for index in range(20):
        suffix = (".png", ".jpg", ".webp", ".bmp")[index % 4]
        paths.append(save(tmp_path / f"{index:02d}{suffix}", (64 + index, 48)))
    return paths


def test_probe_images_keeps_order_with_and_without_threads(twenty_images: list[Path]) -> None:
    serial = probe_images(twenty_images)
    assert [i.path for i in serial] == twenty_images
    assert [i.width for i in serial] == [64 + n for n in range(20)]
    assert probe_images(twenty_images, workers=4) == serial


def test_twenty_images_probe_fast(twenty_images: list[Path]) -> None:
    probe_images(twenty_images[:4])  # Pillow loads its plugins on first use
    start = time.perf_counter()
    probe_images(twenty_images)
    assert time.perf_counter() - start < 0.5


# --- against kohya --------------------------------------------------------------------------------------


def import_kohya(*also: str) -> ModuleType:
    """kohya's ``library.train_util`` from vendor/sd-scripts (and modules ``also``), or skip."""
    if not (SD_SCRIPTS / "train_network.py").is_file():
        pytest.skip(
            "kohya sd-scripts is not checked out at vendor/sd-scripts:"
            " run `git submodule update --init vendor/sd-scripts`"
        )
    for module in (*KOHYA_NEEDS, *also):
        pytest.importorskip(module, reason=f"kohya's training code needs {module}: pip install -e '.[train]'")
    if str(SD_SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SD_SCRIPTS))
    return importlib.import_module("library.train_util")


def varied_images(folder: Path, count: int, seed: int) -> None:
    """Images of assorted sizes and formats, WebP with alpha included."""
    folder.mkdir()
    kinds = [("png", "RGB"), ("jpg", "RGB"), ("webp", "RGBA"), ("bmp", "RGB"), ("webp", "RGB")]
    for index in range(count):
        suffix, mode = kinds[index % len(kinds)]
        width = 64 + (index * 7919 + seed * 104729) % 1900
        height = 64 + (index * 6271 + seed * 7) % 1900
        save(folder / f"{index:03d}.{suffix}", (width, height), mode)
    save(folder / "rotated.jpg", (900, 600), exif=exif_with_orientation(6))
    save(folder / "Mixed.Png", (500, 500))  # kohya skips it on Linux
    save(folder / ".hidden.png", (500, 500))
    save(folder / "anim.gif", (500, 500))


@pytest.mark.real_trainer
def test_sizes_match_kohyas_get_image_size(tmp_path: Path) -> None:
    train_util = import_kohya()
    varied_images(tmp_path / "img", 30, seed=1)
    for info in probe_images(list_folder(tmp_path / "img").images):
        assert (info.width, info.height) == train_util.BaseDataset.get_image_size(None, str(info.path)), info
        with Image.open(info.path) as image:
            assert info.pixel_size == image.size


@pytest.mark.real_trainer
@pytest.mark.skipif(os.name == "nt", reason="the listing differs on Windows by design")
@pytest.mark.parametrize(
    "settings",
    [
        BucketSettings((512, 512), True, min_reso=256, max_reso=1024, reso_steps=64),
        BucketSettings((1024, 1024), True, min_reso=256, max_reso=2048, reso_steps=32),
        BucketSettings((768, 768), True, min_reso=256, max_reso=1024, reso_steps=64, no_upscale=True),
        BucketSettings((512, 512)),
    ],
    ids=["sd15-512", "sdxl-1024-steps32", "no-upscale-768", "no-buckets"],
)
def test_dataset_matches_kohyas_dreambooth_dataset(tmp_path: Path, settings: BucketSettings) -> None:
    """Folder listing, sizes, buckets and batches per epoch against kohya's own dataset code."""
    train_util = import_kohya("voluptuous")
    import library.config_util as config_util  # type: ignore[import-not-found]
    import train_network  # type: ignore[import-not-found]

    repeats = {"one": 3, "two": 1}
    for seed, name in enumerate(repeats):
        varied_images(tmp_path / name, 24, seed)
    batch_size = 3
    dataset_config = {
        "resolution": list(settings.resolution),
        "batch_size": batch_size,
        "enable_bucket": settings.enable_bucket,
        "min_bucket_reso": settings.min_reso,
        "max_bucket_reso": settings.max_reso,
        "bucket_reso_steps": settings.reso_steps,
        "bucket_no_upscale": settings.no_upscale,
        "subsets": [
            {"image_dir": str(tmp_path / name), "num_repeats": count, "class_tokens": "thing"}
            for name, count in repeats.items()
        ],
    }
    args = train_network.setup_parser().parse_args([])
    generator = config_util.BlueprintGenerator(config_util.ConfigSanitizer(True, True, False, True))
    blueprint = generator.generate({"datasets": [dataset_config]}, args)
    group, _ = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
    dataset = group.datasets[0]
    assert isinstance(dataset, train_util.DreamBoothDataset)

    counts: Counter[tuple[int, int]] = Counter()
    ours: dict[str, tuple[int, int]] = {}
    for name, count in repeats.items():
        for info in probe_images(list_folder(tmp_path / name).images):
            assert info.problem is None
            bucket = bucket_for(settings, info.width, info.height)
            ours[str(info.path)] = bucket
            counts[bucket] += count
    theirs = {key: tuple(data.bucket_reso) for key, data in dataset.image_data.items()}
    assert ours == theirs
    assert batches_per_epoch(counts, batch_size) == len(group)


def test_exif_parser_reads_big_endian_blocks() -> None:
    from lorabuild.probe.images import _exif_orientation

    entry = struct.pack(">HHI", 0x0112, 3, 1) + struct.pack(">H", 8) + b"\0\0"
    block = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + b"\0\0\0\0"
    assert _exif_orientation(b"Exif\x00\x00" + block) == 8
    assert _exif_orientation(b"garbage") == 1
