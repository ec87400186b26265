"""The grid's scores and the shortlist of epochs x weights they make, offline.

- :mod:`~lorabuild.score.hashes`: perceptual hashes (PyPI ``imagehash``, the ``score`` extra) of
  grid cells and training images, cached in ``.lorabuild/scores.json`` by content key.
- :mod:`~lorabuild.score.measures`: pure: memorisation, collapse, effect per cell and per epoch x
  weight, and what rules a pair out.
- :mod:`~lorabuild.score.likeness`: optional packaged models (``animeface``; ``dlib-bin`` with
  ``face-recognition-models``, the ``faces`` extra); absent, said.
- :mod:`~lorabuild.score.clip`: the user's own CLIP folder and aesthetic head (``[pick]
  clip_model``, ``aesthetic_model``), run by :mod:`lorabuild.kohya.clipscore` in kohya's Python.
- :mod:`~lorabuild.score.shortlist`: pure: the ranking, the reasons, the terminal's lines.
- :mod:`~lorabuild.score.collect`: :func:`score_build`, the one entry: a build's grid, training
  images and validation loss in, a :class:`Shortlist` out.

Shared by ``lorabuild pick`` (:mod:`lorabuild.stages.pick`), the report and ``install.epoch =
"suggested"``, which as stages may not import each other.

May import: :mod:`lorabuild.build` and the layers below it (not :mod:`lorabuild.stages`); never a
model download.
"""

from lorabuild.score.collect import Progress, score_build
from lorabuild.score.measures import Candidate, CellScore
from lorabuild.score.shortlist import Shortlist, label, lines, reason

__all__ = ["Candidate", "CellScore", "Progress", "Shortlist", "label", "lines", "reason", "score_build"]
