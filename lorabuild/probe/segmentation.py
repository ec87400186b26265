"""Which segmentation model ``[images.remove_background]`` names, and how it wants to be fed.

The models people use to cut subjects out are rembg's ONNX files, each trained with its own
input size and normalisation (rembg's ``sessions/``): the image is resized to the model's side,
scaled to 0..1 by its brightest value, then ``(x - mean) / std`` per RGB channel, as a float32
``[1, 3, H, W]`` batch; output 0 is ``[1, 1, H, W]`` (or ``[1, H, W]``), min-max normalised into the
mask (BiRefNet's logits go through a sigmoid first). :data:`PRESETS` holds those numbers;
:func:`fit` tells the kind from ``model_kind``, the file name or the input size, and checks the
model's signature (:mod:`lorabuild.probe.onnxfile`) against it, so that ``lorabuild check``
reports a model that would not fit before anything is staged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from lorabuild.probe.onnxfile import ELEMENT_TYPES, OnnxFileError, Signature, read_signature
from lorabuild.recipe.schema import ImagesSection, Recipe, RemoveBackground

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_FLOAT32 = 1


@dataclass(frozen=True)
class Preset:
    """How one kind of model is fed and read (rembg's numbers).

    Attributes:
        side: The square input size it was trained at (used when the model's own is dynamic).
        mean: Subtracted from each RGB channel in 0..1.
        std: Each channel is divided by it.
        sigmoid: Output 0 is logits (BiRefNet); else it is already a probability map.
    """

    side: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    sigmoid: bool


PRESETS: dict[str, Preset] = {
    "u2net": Preset(320, _IMAGENET_MEAN, _IMAGENET_STD, False),
    "isnet-anime": Preset(1024, _IMAGENET_MEAN, (1.0, 1.0, 1.0), False),
    "isnet-general-use": Preset(1024, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), False),
    "birefnet": Preset(1024, _IMAGENET_MEAN, _IMAGENET_STD, True),
}

# File-name fragments rembg's models are published under, most specific first.
_NAMES = (
    ("isnet-anime", "isnet-anime"),
    ("isnet_anime", "isnet-anime"),
    ("isnet", "isnet-general-use"),
    ("birefnet", "birefnet"),
    ("u2net", "u2net"),  # u2net, u2netp, u2net_human_seg: one preset
)


@dataclass(frozen=True)
class Segmenter:
    """A model that fits: what the segmentation script needs to run it.

    Attributes:
        kind: One of :data:`PRESETS`.
        preset: Its numbers.
        input_name: The graph input to feed.
        height: Input height (the model's, or the preset's side when dynamic).
        width: Input width.
    """

    kind: str
    preset: Preset
    input_name: str
    height: int
    width: int


def fit(settings: RemoveBackground, signature: Signature) -> Segmenter | str:
    """The segmenter for ``settings``' model, or why the model does not fit (a sentence)."""
    inputs, output = signature.inputs, signature.outputs[0]
    if len(inputs) != 1:
        names = ", ".join(t.name for t in inputs)
        return f"has {len(inputs)} inputs ({names}); a segmentation model takes one image batch"
    image = inputs[0]
    shape = image.shape
    if image.element_type != _FLOAT32 or len(shape) != 4 or shape[1] not in (3, *_dynamic(shape[1])):
        return (
            f"takes {image.name}: {image.describe()}; a segmentation model takes float32[1, 3, H, W] "
            "(RGB, channels first)"
        )
    if len(output.shape) not in (3, 4) or (
        len(output.shape) == 4 and output.shape[1] not in (1, *_dynamic(output.shape[1]))
    ):
        return f"gives {output.name}: {output.describe()}; a segmentation model gives float[1, 1, H, W], one mask"
    if output.element_type not in (1, 10, 11):
        kind = ELEMENT_TYPES.get(output.element_type, f"type {output.element_type}")
        return f"gives {output.name} as {kind}; a mask is float"
    kind = settings.model_kind
    if kind == "auto":
        detected = _kind_from(settings.model.name, shape[2])
        if detected is None:
            return (
                f"is not one lorabuild can tell from its name or its input {image.describe()}: set "
                f"model_kind to one of {', '.join(PRESETS)}"
            )
        kind = detected
    preset = PRESETS[kind]
    height = shape[2] if isinstance(shape[2], int) else preset.side
    width = shape[3] if isinstance(shape[3], int) else preset.side
    return Segmenter(kind, preset, image.name, height, width)


def probe(settings: RemoveBackground) -> Segmenter | str:
    """Read ``settings.model``'s signature and :func:`fit` it; a sentence saying what is wrong otherwise."""
    try:
        signature = read_signature(settings.model)
    except FileNotFoundError:
        return "not found: name a local .onnx segmentation model (lorabuild never downloads)"
    except IsADirectoryError:
        return "is a folder: name the .onnx file itself"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except OnnxFileError as exc:
        return f"is {exc}"
    return fit(settings, signature)


def _dynamic(dim: int | str) -> tuple[int | str, ...]:
    return (dim,) if isinstance(dim, str) else ()


def _kind_from(name: str, side: int | str) -> str | None:
    lower = name.lower()
    for fragment, kind in _NAMES:
        if fragment in lower:
            return kind
    return "u2net" if side == PRESETS["u2net"].side else None


def options_key(settings: RemoveBackground, images: ImagesSection) -> dict[str, Any]:
    """The options that decide a cut-out from its mask (part of the render key)."""
    return {
        "threshold": settings.threshold,
        "crop": settings.crop,
        "crop_margin": settings.crop_margin if settings.crop else None,
        "coverage": [settings.min_coverage, settings.max_coverage],
        "background": images.background if images.flatten_transparency else None,
    }


def settings_key(settings: RemoveBackground, images: ImagesSection) -> str:
    """A hash of the model file's identity and every option (the prepare stamp's part).

    A model that cannot be read counts as a setting of its own (the check reports it).
    """
    try:
        stat = settings.model.stat()
        model: Any = [stat.st_size, stat.st_mtime_ns]
    except OSError as exc:
        model = f"unreadable: {exc.strerror}"
    data = {"model": model, "settings": settings.model_dump(mode="json"), **options_key(settings, images)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def remove_background_sections(recipe: Recipe) -> list[tuple[str, RemoveBackground]]:
    """Every ``remove_background`` table in force, with its key path (the recipe's, then each subset's own)."""
    sections = []
    if recipe.images.remove_background is not None and any(
        s.remove_background is None for s in recipe.dataset.subsets
    ):
        sections.append(("images.remove_background", recipe.images.remove_background))
    for i, subset in enumerate(recipe.dataset.subsets):
        if subset.remove_background:
            sections.append((f"dataset.subsets[{i}].remove_background", subset.remove_background))
    return sections
