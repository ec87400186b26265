"""Likeness to the training images, with packaged models only: scored where installed, said where not.

- **anime faces** (PyPI ``animeface``, the ``likeness`` extra; its detector ``libnvxs`` is in the
  wheel): the most likely face of each picture, its hair colour and eye colour. The training
  images' faces give the reference (their mean colours); a cell's likeness is how far its face's
  colours are from it, 0 (the same) to 1 (black against white in every channel). A character
  whose hair turns from pink to brown at some epoch shows it here.
- **photoreal identity** (``face_recognition`` with ``face-recognition-models``): not scored by
  this version; its absence is said.

No model is ever downloaded: a package that is not installed is named in a note, with the
command that installs it.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

LIKENESS_EXTRA = "pip install 'lorabuild[likeness]'"
ANIMEFACE = "animeface"
"""The feature's name in the hash cache."""


def anime_missing() -> str | None:
    """Why anime faces cannot be scored here, or None."""
    if importlib.util.find_spec("animeface") is None:
        return f"likeness of anime faces not scored: PyPI animeface is not installed ({LIKENESS_EXTRA})"
    return None


def other_models_note() -> str:
    """What this version does not score, whatever is installed."""
    return "likeness of photoreal faces (face_recognition) is not scored by this version"


def anime_features(path: Path) -> list[float] | None:
    """Hair and eye colour (six numbers, 0-255) of the most likely anime face in the picture, or None."""
    import animeface  # lazy: the optional likeness extra; anime_missing() says when it is absent

    with Image.open(path) as image:
        image.load()
        faces = animeface.detect(image.convert("RGB"))
    if not faces:
        return None
    face = max(faces, key=lambda f: f.likelihood)
    left, right = face.left_eye.color, face.right_eye.color
    hair = face.hair.color
    return [
        float(hair.r),
        float(hair.g),
        float(hair.b),
        (left.r + right.r) / 2,
        (left.g + right.g) / 2,
        (left.b + right.b) / 2,
    ]


def likeness(
    cells: Mapping[str, Sequence[float] | None], training: Sequence[Sequence[float] | None]
) -> dict[str, float]:
    """Each cell's distance (0 to 1) from the mean face colours of the training images.

    Empty when no training image has a face; a cell without a face gets no value.
    """
    faces = [t for t in training if t]
    if not faces:
        return {}
    reference = [statistics.fmean(f[i] for f in faces) for i in range(6)]
    scale = 255 * math.sqrt(6)
    return {file: math.dist(features, reference) / scale for file, features in cells.items() if features}
