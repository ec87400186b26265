"""Perceptual hashes of grid cells and training images, cached in ``.lorabuild/scores.json``.

A pHash (PyPI ``imagehash``, the ``score`` extra) is 64 bits from the lowest frequencies of the
DCT of the picture shrunk to 32 x 32 grey pixels: the same picture at another size or JPEG
quality keeps nearly all its bits; two unrelated pictures differ in about 32. The distance
between two pictures is the number of bits their hashes differ in (:func:`distance`).

Hashing decodes the image (the cost of scoring); comparing two hashes is one XOR. So the hashes
are cached: a grid cell by its file name, which is its content key
(:func:`lorabuild.plan.gridcells.cell_key`), and its size; any other image (the staged training
images) by path, size and modification time. A second ``lorabuild pick`` or report decodes no
image it has seen. Features of the optional likeness models (:mod:`lorabuild.score.likeness`) are
kept in the same file, each under its model's name.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from lorabuild.plan.layout import BuildLayout
from lorabuild.render.writer import write_atomic

CACHE_VERSION = 1
HASH_KIND = "imagehash.phash/8"
"""What the cached hashes are; a cache of another kind is discarded."""

HASH_BITS = 64
SCORE_EXTRA = "pip install 'lorabuild[score]'"


def distance(a: int, b: int) -> int:
    """Bits in which two 64-bit hashes differ (0: the same picture; about 32: unrelated ones)."""
    return (a ^ b).bit_count()


def hashing_missing() -> str | None:
    """Why pictures cannot be hashed here (the ``score`` extra is not installed), or None."""
    if importlib.util.find_spec("imagehash") is None:
        return f"the grid's scores need PyPI imagehash, which is not installed ({SCORE_EXTRA})"
    return None


def phash_image(path: Path) -> int:
    """The pHash of the image at ``path`` as an int (the picture flattened onto white first).

    Raises:
        OSError: The file cannot be read or decoded.
    """
    import imagehash  # lazy: the optional score extra; hashing_missing() says when it is absent

    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, "white")
            flat.paste(rgba, mask=rgba.getchannel("A"))
            picture = flat
        else:
            picture = image.convert("RGB")
    return int(str(imagehash.phash(picture)), 16)


class HashCache:
    """The build's perceptual hashes and model features, read once and written back by :meth:`save`.

    Attributes:
        computed: Images decoded by this instance (0 when everything came from the cache).
    """

    def __init__(self, build: Path) -> None:
        self.build = build
        self.path = BuildLayout(build).scores
        self.computed = 0
        self._entries: dict[str, dict[str, Any]] = {}
        self._used: set[str] = set()
        self._dirty = False
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(doc, dict) and doc.get("version") == CACHE_VERSION and doc.get("hash") == HASH_KIND:
            entries = doc.get("entries")
            if isinstance(entries, dict):
                self._entries = {k: v for k, v in entries.items() if isinstance(v, dict)}

    def file_key(self, rel: str) -> str | None:
        """The cache key of the image ``rel`` (relative to the build); None when it is missing."""
        return self._key(rel)

    def get(self, key: str | None, kind: str) -> Any:
        """The value cached for ``key`` (a :meth:`file_key` or any other key) under ``kind``, or None."""
        if key is None:
            return None
        self._used.add(key)
        return self._entries.get(key, {}).get(kind)

    def put(self, key: str | None, kind: str, value: Any) -> None:
        """Cache ``value`` for ``key`` under ``kind`` (written by :meth:`save`)."""
        if key is None:
            return
        self._used.add(key)
        self._entries.setdefault(key, {})[kind] = value
        self.computed += 1
        self._dirty = True

    def _key(self, rel: str) -> str | None:
        path = self.build / rel
        try:
            stat = path.stat()
        except OSError:
            return None
        if rel.startswith(f"{BuildLayout.CELLS}/"):
            return f"cell:{path.name}:{stat.st_size}"  # content-addressed: the name is the key
        return f"file:{rel}:{stat.st_size}:{stat.st_mtime_ns}"

    def value(self, rel: str, kind: str, compute: Callable[[Path], Any]) -> Any:
        """``compute(path)`` for the image ``rel`` (relative to the build), cached under ``kind``.

        Returns None when the file is missing or cannot be decoded.
        """
        key = self._key(rel)
        if key is None:
            return None
        self._used.add(key)
        entry = self._entries.setdefault(key, {})
        if kind in entry:
            return entry[kind]
        try:
            result = compute(self.build / rel)
        except (OSError, ValueError, Image.DecompressionBombError):
            result = None
        self.computed += 1
        entry[kind] = result
        self._dirty = True
        return result

    def phash(self, rel: str) -> int | None:
        """The pHash of the image ``rel`` (relative to the build), or None when unreadable."""
        value = self.value(rel, "phash", lambda p: f"{phash_image(p):016x}")
        return int(value, 16) if isinstance(value, str) else None

    def save(self) -> None:
        """Write the cache back when something new was computed (entries not used this time are dropped)."""
        if not self._dirty:
            return
        entries = {k: v for k, v in sorted(self._entries.items()) if k in self._used}
        doc = {"version": CACHE_VERSION, "hash": HASH_KIND, "entries": entries}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(doc, separators=(",", ":")).encode("utf-8"), durable=False)
        except OSError:
            pass  # a cache that cannot be written costs time next run, never a result
        self._dirty = False
