"""What a staged image needs so that kohya trains on what the user sees, and the pixel work it takes.

kohya reads an image with ``Image.open(path).convert("RGB")`` (``load_image`` in
``library/train_util.py``) and lists only ``.png .jpg .jpeg .webp .bmp`` names
(:mod:`lorabuild.probe.images`). Three things therefore go wrong silently, and each is fixed in the
staged copy, never in the source:

* **EXIF orientation.** A camera's portrait photo is stored sideways with an orientation tag;
  kohya ignores the tag, so it trains (and buckets) the photo sideways. The staged copy is
  rotated; its size, and so its bucket, is the rotated size.
* **Transparency.** ``convert("RGB")`` drops the alpha channel without compositing: a cut-out's
  transparent background becomes whatever colour the file stores under it (often black, at
  times the remains of the original background). The staged copy is composited onto
  ``images.background``.
* **Formats kohya cannot list** (``.gif``, ``.tif``, ``.avif``, a ``.Jpg`` on Linux...). A file
  whose content kohya reads (PNG, JPEG, WebP, BMP) is only linked under a name kohya lists; any
  other format is converted.

:func:`plan_conversion` decides, from the header facts alone, and is pure. A converted image
is a new PNG in the stage (:func:`convert_image`), the same pixels ``convert("RGB")`` would give
apart from the fix. Everything else is a hard link to the source.

The module also computes the fingerprints duplicate detection needs: a content hash, and a
perceptual difference hash (:func:`dhash`) from a thumbnail, decoded as cheaply as the format
allows (JPEG decodes at 1/8 scale through ``Image.draft``; PNG has to inflate every row).

What each costs decides the defaults. Header facts (size, alpha, orientation) cost a header
parse, so every check has them. ``images.duplicates = "exact"`` (the default) hashes only files
whose size another image shares, since copies must; most datasets hash nothing. Near-duplicates
need pixels: on the 2-core machine of the benchmarks a 512-px JPEG thumbnail took 0.7 ms and a
512-px PNG 7 ms (no partial decode exists for PNG), so 10,000 mixed images cost about 20 s of
CPU, about 10 s on 2 cores. That is why ``near`` is opt-in, and why its hashes, like the header
facts, are kept in the stage manifest and computed once per version of a file. Conversions
decode and encode in full, on every core, and only for the images that need them.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Final

from PIL import Image, ImageColor

from lorabuild.probe.images import IMAGE_EXTENSIONS, ImageInfo, kohya_reads_name
from lorabuild.recipe.schema import ImagesSection

CONVERTED_EXTENSION: Final = ".png"
"""Converted images are PNG: lossless, and read by every kohya install."""

# Formats kohya decodes once the name is one it lists (Pillow reads by content, not by name),
# and the extension to give a file of that format whose own name kohya skips.
_KOHYA_FORMATS: Final[Mapping[str, str]] = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "WEBP": ".webp",
    "BMP": ".bmp",
}

# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_TRANSPOSE: Final[Mapping[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})

# Names kohya lists on every system (a cheap first test; kohya_reads_name decides the rest).
_COMMON_NAMES: Final = tuple(IMAGE_EXTENSIONS)

# PNG compression for converted copies: level 1 writes several times faster than the default 6
# for files about 10% larger; staged copies are build artefacts, rebuilt at will.
_PNG_COMPRESS_LEVEL: Final = 1

# Bump when convert_image's output for the same inputs changes, so stages made by an older
# lorabuild are converted again.
CONVERSION_VERSION: Final = 1

DHASH_BITS: Final = 64


@dataclass(frozen=True)
class Conversion:
    """How a staged copy is made from its source when a link would not do.

    Attributes:
        orientation: The EXIF orientation applied to the pixels (1: none).
        background: The RGB colour transparent pixels are composited onto; None keeps the alpha
            channel (``images.flatten_transparency = false``) or the image has none.
        size: ``(width, height)`` of the staged copy, which kohya buckets by.
        reasons: Why the copy is converted, in words (``EXIF orientation 6``).
    """

    orientation: int
    background: tuple[int, int, int] | None
    size: tuple[int, int]
    reasons: tuple[str, ...]

    @property
    def key(self) -> str:
        """What decides the converted file's bytes, for the stage manifest."""
        background = "keep" if self.background is None else "#{:02x}{:02x}{:02x}".format(*self.background)
        return f"png-v{CONVERSION_VERSION};orientation={self.orientation};background={background}"


def background_rgb(colour: str) -> tuple[int, int, int]:
    """The RGB value of an ``images.background`` colour (validated by the schema)."""
    rgb = ImageColor.getrgb(colour)
    return (rgb[0], rgb[1], rgb[2])


def plan_conversion(info: ImageInfo, settings: ImagesSection) -> Conversion | None:
    """The conversion an image needs in the stage, or None when a link to it is what kohya should read.

    Args:
        info: The image's header facts (a readable image).
        settings: The recipe's ``[images]`` table.

    Returns:
        The conversion, or None.
    """
    name = info.path.name
    orientation = info.orientation if settings.exif_orientation else 1
    alpha = info.has_alpha and settings.flatten_transparency
    if orientation == 1 and not alpha and name.endswith(_COMMON_NAMES):
        return None  # the common case, decided without the checks below
    reasons: list[str] = []
    if not kohya_reads_name(name, case_sensitive=True) and info.format not in _KOHYA_FORMATS:
        reasons.append(f"kohya does not read {PurePath(name).suffix.lower() or info.format} files")
    if orientation != 1:
        reasons.append(f"EXIF orientation {orientation}")
    background = None
    if alpha:
        background = background_rgb(settings.background)
        reasons.append(f"transparency flattened onto {settings.background}")
    if not reasons:
        return None
    width, height = info.pixel_size
    size = (height, width) if orientation >= 5 else (width, height)
    return Conversion(orientation, background, size, tuple(reasons))


def staged_image_names(
    infos: list[ImageInfo], conversions: list[Conversion | None], png: bool = False
) -> list[str]:
    """The file name of each image in its staged folder, unique within the folder.

    A linked image keeps its name when kohya lists it on every system (``.png``, or ``.PNG``);
    otherwise it gets the lower-case extension, or one for its format (``photo.Jpg`` ->
    ``photo.jpg``, ``scan.jfif`` -> ``scan.jpg``). A converted image is ``<stem>.png``. A name
    already taken (``a.gif`` next to ``a.png``) becomes ``<source name>.png`` (``a.gif.png``,
    whose caption kohya looks for in ``a.gif.txt``).

    Args:
        infos: The images of one subset.
        conversions: Each image's conversion (None: linked).
        png: Every image is named as a converted one (``<stem>.png``): the subset's images are
            cut-outs that prepare renders (``[images.remove_background]``).

    Returns:
        One name per image, in the same order.
    """
    names: list[str | None] = []
    taken: set[str] = set()
    for info, conversion in zip(infos, conversions, strict=True):
        name = info.path.name
        if conversion is None and not png and kohya_reads_name(name, case_sensitive=True):
            names.append(name)
            taken.add(name.lower())
        else:
            names.append(None)
    for index, (info, conversion) in enumerate(zip(infos, conversions, strict=True)):
        if names[index] is not None:
            continue
        path = PurePath(info.path.name)
        if conversion is not None or png:
            extension = CONVERTED_EXTENSION
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            extension = path.suffix.lower()
        else:
            extension = _KOHYA_FORMATS[info.format]
        candidates = [path.stem + extension, path.name + extension]
        candidates += [f"{path.stem}_{n}{extension}" for n in range(2, len(infos) + 2)]
        name = next(c for c in candidates if c.lower() not in taken)
        names[index] = name
        taken.add(name.lower())
    return [name for name in names if name is not None]


def convert_image(source: Path, conversion: Conversion) -> bytes:
    """Decode ``source``, apply ``conversion`` and return the staged copy's PNG bytes.

    The pixels are those kohya's ``convert("RGB")`` would give (``RGBA`` when the alpha channel is
    kept), apart from the orientation and the flattening. An ICC profile is kept for viewers;
    kohya ignores it either way.

    Raises:
        OSError: The image does not decode (truncated or corrupt past its header).
        ValueError: Pillow cannot handle the image's mode.
    """
    with Image.open(source) as opened:
        opened.load()
        image: Image.Image = opened
        icc = opened.info.get("icc_profile")
        transpose = _TRANSPOSE.get(conversion.orientation)
        if transpose is not None:
            image = image.transpose(transpose)
        has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
        if has_alpha and conversion.background is not None:
            flat = Image.new("RGBA", image.size, (*conversion.background, 255))
            flat.alpha_composite(image.convert("RGBA"))
            image = flat.convert("RGB")
        elif has_alpha:
            image = image.convert("RGBA")
        elif image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        out = io.BytesIO()
        params: dict[str, object] = {"compress_level": _PNG_COMPRESS_LEVEL}
        if isinstance(icc, bytes):
            params["icc_profile"] = icc
        image.save(out, format="PNG", **params)
    return out.getvalue()


def content_hash(path: Path) -> str:
    """sha256 of a file's bytes (exact-duplicate detection)."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def dhash(path: Path) -> int | None:
    """A 64-bit difference hash of an image, or None when it does not decode.

    The image is shrunk to 9x8 grey pixels and each bit says whether a pixel is darker than its
    right-hand neighbour: re-encodes, resizes and small edits change few bits. A JPEG is decoded
    at 1/8 scale (``Image.draft``); other formats decode in full, then shrink by box reduction.
    Transparent areas are taken as white, as the staged copy flattens them by default.
    """
    try:
        with Image.open(path) as image:
            image.draft("L", (64, 64))
            image.load()
            if image.mode in _ALPHA_MODES or "transparency" in image.info:
                rgba = image.convert("RGBA")
                grey = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                grey.alpha_composite(rgba)
                small = grey.convert("L")
            else:
                small = image.convert("L")
    except Exception:  # a plugin can raise anything on a broken file; the probe reports it
        return None
    factor = min(small.size) // 32
    if factor > 1:
        small = small.reduce(factor)
    pixels = small.resize((9, 8), Image.Resampling.BILINEAR).tobytes()
    value = 0
    for row in range(8):
        for column in range(8):
            left, right = pixels[row * 9 + column], pixels[row * 9 + column + 1]
            value = (value << 1) | (left < right)
    return value


def hamming(a: int, b: int) -> int:
    """How many bits differ between two hashes."""
    return (a ^ b).bit_count()


def near_duplicates(hashes: list[int | None], distance: int) -> list[tuple[int, int]]:
    """Images that look like an earlier one: ``(index, index of the earlier image)`` pairs.

    Each image is compared with the earlier images that were not themselves near-duplicates,
    and paired with the first within ``distance`` bits. Comparing every pair would take 50 million
    comparisons for 10,000 images; by the pigeonhole principle, two hashes at most ``distance``
    bits apart agree exactly on at least one of ``distance + 1`` disjoint bit ranges, so an image
    is only compared with those sharing one (and a folder of near-identical images costs one
    comparison each, against the first of them).

    Args:
        hashes: Each image's :func:`dhash` (None: not hashed; 0, a flat image whose pixels never
            darken to the right, says nothing about its content: neither is paired).
        distance: The most bits that may differ.

    Returns:
        The pairs, by index.
    """
    parts = distance + 1
    bounds = [DHASH_BITS * k // parts for k in range(parts + 1)]
    ranges = [(bounds[k], (1 << (bounds[k + 1] - bounds[k])) - 1) for k in range(parts)]
    buckets: list[dict[int, list[int]]] = [{} for _ in range(parts)]
    pairs: list[tuple[int, int]] = []
    for index, value in enumerate(hashes):
        if not value:  # None (not hashed) or 0: a flat image, with no structure to compare
            continue
        keys = [(value >> low) & mask for low, mask in ranges]
        candidates = sorted(
            {i for bucket, key in zip(buckets, keys, strict=True) for i in bucket.get(key, ())}
        )
        match = next((i for i in candidates if hamming(value, hashes[i] or 0) <= distance), None)
        if match is not None:
            pairs.append((index, match))
            continue
        for bucket, key in zip(buckets, keys, strict=True):
            bucket.setdefault(key, []).append(index)
    return pairs
