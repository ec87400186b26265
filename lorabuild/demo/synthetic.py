"""A tiny synthetic training set (coloured shapes plus booru-style captions) for demos and tests.

Pillow only and deterministic: the same arguments always give byte-identical files.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

# Named colours (RGB) used both for drawing and in the captions.
_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 50),
    "blue": (40, 80, 220),
    "green": (40, 170, 70),
    "yellow": (240, 210, 40),
    "pink": (240, 130, 180),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "brown": (130, 80, 40),
}
# Drawn hair colour -> its caption tag.
_HAIR = {"brown": "brown_hair", "purple": "purple_hair", "yellow": "blonde_hair", "pink": "pink_hair"}
_LENGTH = ("short_hair", "long_hair", "medium_hair")
_EXPRESSION = ("smile", "open_mouth", "closed_eyes", "blush")
_EXTRA = ("looking_at_viewer", "upper_body", "hairband", "school_uniform", "bangs")


def _flower(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    """Five petals around a yellow centre."""
    petal = r * 0.45
    for k in range(5):
        angle = k * 72.0
        px = cx + r * 0.55 * _cos(angle)
        py = cy + r * 0.55 * _sin(angle)
        draw.ellipse((px - petal, py - petal, px + petal, py + petal), fill=(*colour, 255))
    centre = r * 0.3
    draw.ellipse((cx - centre, cy - centre, cx + centre, cy + centre), fill=(*_COLOURS["yellow"], 255))


def _cos(degrees: float) -> float:
    return math.cos(math.radians(degrees))


def _sin(degrees: float) -> float:
    return math.sin(math.radians(degrees))


def _render(
    rng: random.Random, size: int, transparent: bool, background: str
) -> tuple[Image.Image, list[str]]:
    """One image and the shape tags it shows."""
    fill = (0, 0, 0, 0) if transparent else (*_COLOURS[background], 255)
    image = Image.new("RGBA", (size, size), fill)
    draw = ImageDraw.Draw(image)
    s = float(size)
    tags: list[str] = []

    # One or two shapes behind the head, some half-transparent (partial alpha survives only on a
    # transparent canvas; opaque images are saved as RGB).
    for _ in range(rng.randint(1, 2)):
        colour = _COLOURS[rng.choice([c for c in ("red", "blue", "green", "purple") if c != background])]
        alpha = rng.choice((255, 160, 96))
        corner = rng.randrange(4)  # in a corner, so the head does not hide it
        x0 = s * (0.03 if corner % 2 == 0 else 0.72)
        y0 = s * (0.03 if corner < 2 else 0.72)
        w = s * rng.uniform(0.18, 0.25)
        kind = rng.choice(("circle", "square", "triangle", "star"))
        if kind == "circle":
            draw.ellipse((x0, y0, x0 + w, y0 + w), fill=(*colour, alpha))
        elif kind == "square":
            draw.rectangle((x0, y0, x0 + w, y0 + w), fill=(*colour, alpha))
        elif kind == "triangle":
            draw.polygon([(x0, y0 + w), (x0 + w / 2, y0), (x0 + w, y0 + w)], fill=(*colour, alpha))
        else:
            points = [
                (
                    x0 + w / 2 + (w / 2 if k % 2 == 0 else w / 5) * _cos(90 + 36 * k),
                    y0 + w / 2 - (w / 2 if k % 2 == 0 else w / 5) * _sin(90 + 36 * k),
                )
                for k in range(10)
            ]
            draw.polygon(points, fill=(*colour, alpha))
            tags.append("star_(symbol)")

    # A "head": a skin-toned circle with a hair-coloured cap, roughly centred.
    cx, cy = s * rng.uniform(0.42, 0.58), s * rng.uniform(0.45, 0.6)
    r = s * rng.uniform(0.22, 0.3)
    hair = rng.choice(sorted(_HAIR))
    draw.ellipse((cx - r * 1.1, cy - r * 1.15, cx + r * 1.1, cy + r * 0.6), fill=(*_COLOURS[hair], 255))
    draw.ellipse((cx - r, cy - r * 0.8, cx + r, cy + r), fill=(250, 215, 185, 255))
    eye = r * 0.12
    for dx in (-0.35, 0.35):
        ex, ey = cx + dx * r, cy + 0.05 * r
        draw.ellipse((ex - eye, ey - eye, ex + eye, ey + eye), fill=(30, 30, 60, 255))

    # The "hair ornament": a flower on one side of the head.
    flower_colour = rng.choice(("red", "pink", "white", "blue"))
    side = rng.choice((-1.0, 1.0))
    _flower(draw, cx + side * r * 0.8, cy - r * 0.75, r * 0.45, _COLOURS[flower_colour])
    tags += ["flower", "hair_ornament", "hair_flower", f"{flower_colour}_flower", _HAIR[hair]]
    return image, tags


def make_dataset(
    dest: Path,
    n: int = 4,
    size: int = 128,
    trigger: str = "uiharu_kazari",
    seed: int = 0,
) -> list[Path]:
    """Write ``n`` synthetic PNG images with booru-style ``.txt`` captions into ``dest``.

    Every image is a simple cartoon head with a flower hair ornament and a few coloured shapes;
    every other image (the first included) has a transparent background, the others a flat colour.
    Captions start with the trigger word, then tags such as ``1girl, solo, flower,
    hair_ornament, short_hair, brown_hair, smile, transparent_background``, varying per image.
    Files are named ``0000.png`` / ``0000.txt`` and so on; existing files of those names are
    overwritten, other files are left alone.

    Args:
        dest: Folder to write into; created if missing.
        n: Number of images.
        size: Width and height of each image in pixels.
        trigger: The trigger word, written as the first caption tag (left out when empty).
        seed: Seed of the random choices; the same arguments always give the same files.

    Returns:
        The image paths, in order.

    Raises:
        ValueError: ``n`` is negative or ``size`` is smaller than 16.
    """
    if n < 0:
        raise ValueError(f"n must be at least 0, not {n}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, not {size}")
    dest.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    backgrounds = ("white", "blue", "pink", "green")
    images: list[Path] = []
    for index in range(n):
        transparent = index % 2 == 0
        background = backgrounds[(index // 2) % len(backgrounds)]
        image, shape_tags = _render(rng, size, transparent, background)

        tags = [trigger] if trigger else []
        tags += ["1girl", "solo"]
        tags += shape_tags
        tags += [rng.choice(_LENGTH), rng.choice(_EXPRESSION)]
        tags += rng.sample(_EXTRA, rng.randint(0, 2))
        if transparent:
            tags.append("transparent_background")
        else:
            tags += ["simple_background", f"{background}_background"]

        stem = f"{index:04d}"
        path = dest / f"{stem}.png"
        if transparent:
            image.save(path, format="PNG")
        else:
            image.convert("RGB").save(path, format="PNG")
        (dest / f"{stem}.txt").write_text(", ".join(dict.fromkeys(tags)) + "\n", encoding="utf-8")
        images.append(path)
    return images
