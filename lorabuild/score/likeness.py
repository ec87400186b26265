"""Likeness to the training images, with packaged models only: scored where installed, said where not.

- **anime faces** (PyPI ``animeface``, the ``likeness`` extra; its detector ``libnvxs`` is in the
  wheel): the most likely face of each picture, its hair colour and eye colour. The training
  images' faces give the reference (their mean colours); a cell's likeness is how far its face's
  colours are from it, 0 (the same) to 1 (black against white in every channel). A character
  whose hair turns from pink to brown at some epoch shows it here.
- **photoreal identity** (PyPI ``dlib-bin`` with ``face-recognition-models``, the ``faces`` extra:
  dlib's HOG face detector, its 5-point landmarks and its ResNet face descriptor, the models of
  the ``face_recognition`` package, called through dlib itself): the 128 numbers that describe the
  largest face of each picture. A cell's likeness is the Euclidean distance from its face's
  descriptor to the nearest training image's; over ``pick.face_distance`` (0.6: dlib's
  same-person threshold) it shows another person. Pictures are shrunk to at most
  :data:`FACE_SIDE` pixels and searched at twice that size: faces under about 40 pixels there
  (6 % of the picture's longer side) are not found.

No model is ever downloaded: a package that is not installed is named in a note, with the
command that installs it.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

LIKENESS_EXTRA = "pip install 'lorabuild[likeness]'"
FACES_EXTRA = "pip install 'lorabuild[faces]'"
ANIMEFACE = "animeface"
"""The feature's name in the hash cache."""
FACE_SIDE = 640
"""The longest side a picture is shrunk to before dlib looks for faces."""
DLIB_FACE = f"dlib.face/128@{FACE_SIDE}"
"""The face descriptors' name in the hash cache (another size finds other faces: computed anew)."""
FACE_MODELS = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")
"""The files of ``face_recognition_models/models/`` that are used: the landmarks and the descriptor."""


def anime_missing() -> str | None:
    """Why anime faces cannot be scored here, or None."""
    if importlib.util.find_spec("animeface") is None:
        return f"likeness of anime faces not scored: PyPI animeface is not installed ({LIKENESS_EXTRA})"
    return None


def face_models_dir() -> Path | None:
    """The ``models`` folder of the installed ``face_recognition_models`` package, or None.

    Found without importing the package: its ``__init__`` imports ``pkg_resources``, which
    setuptools 81 and later no longer have.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) / "models" if locations else None


def face_missing() -> str | None:
    """Why photoreal faces cannot be scored here, or None."""
    absent = [
        pip
        for module, pip in (("dlib", "dlib-bin"), ("face_recognition_models", "face-recognition-models"))
        if importlib.util.find_spec(module) is None
    ]
    if absent:
        verb = "is" if len(absent) == 1 else "are"
        return (
            f"likeness of photoreal faces not scored: PyPI {' and '.join(absent)} {verb} not installed "
            f"({FACES_EXTRA})"
        )
    models = face_models_dir()
    lacking = [name for name in FACE_MODELS if models is None or not (models / name).is_file()]
    if lacking:
        return (
            f"likeness of photoreal faces not scored: {models} lacks {', '.join(lacking)} "
            "(pip install --force-reinstall face-recognition-models)"
        )
    return None


@functools.cache
def _face_models() -> tuple[Any, Any, Any]:
    """dlib's detector, landmark predictor and descriptor, loaded once per process (about 0.4 s)."""
    import dlib  # lazy: the optional faces extra; face_missing() says when it is absent

    models = face_models_dir()
    assert models is not None  # face_missing() was asked first
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(models / FACE_MODELS[0])),
        dlib.face_recognition_model_v1(str(models / FACE_MODELS[1])),
    )


def face_features(path: Path) -> list[float] | None:
    """The 128-number dlib descriptor of the largest face in the picture, or None without a face."""
    import numpy  # lazy: comes with the faces extra (dlib's arrays); face_missing() says when absent

    detector, predictor, describer = _face_models()
    with Image.open(path) as image:
        image.load()
        picture = ImageOps.exif_transpose(image).convert("RGB")
    picture.thumbnail((FACE_SIDE, FACE_SIDE), Image.Resampling.LANCZOS)
    pixels = numpy.asarray(picture)
    faces = detector(pixels, 1)  # 1: searched at twice the size, for faces down to about 40 px
    if not faces:
        return None
    face = max(faces, key=lambda rect: rect.area())
    descriptor = describer.compute_face_descriptor(pixels, predictor(pixels, face))
    return [round(float(v), 6) for v in descriptor]


@dataclass(frozen=True)
class FaceMatch:
    """How close a cell's face is to the training images' faces.

    Attributes:
        distance: Euclidean distance of its descriptor to the nearest training face's.
        image: That training image, as messages name it.
    """

    distance: float
    image: str


def face_distances(
    cells: Mapping[str, Sequence[float] | None], training: Sequence[tuple[str, Sequence[float] | None]]
) -> dict[str, FaceMatch]:
    """Each cell's distance to the nearest training face (``training``: name and descriptor).

    Empty when no training image has a face; a cell without a face gets no value.
    """
    faces = [(name, d) for name, d in training if d]
    if not faces:
        return {}
    found = {}
    for file, features in cells.items():
        if features:
            distance, name = min((math.dist(features, d), name) for name, d in faces)
            found[file] = FaceMatch(distance, name)
    return found


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
