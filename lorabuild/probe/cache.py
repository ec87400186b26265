"""The probe cache: what the stage manifest keeps about each source image, so that a check of an
unchanged dataset does not probe it again.

The stage manifest (``build/<name>/dataset/.stage.json``, written by :mod:`lorabuild.stages.prepare`)
records, for every staged image, the header facts and hashes of its source together with the
source's :class:`FileKey`; :func:`lorabuild.probe.facts.gather` reuses a record when the source's
size, mtime and inode are unchanged, so a check of an unchanged 10,000-image dataset costs a
``stat`` per image instead of a header parse (and, with ``images.duplicates = "near"``, a decode).
Nothing here writes: :func:`probe_record` makes the records that prepare writes,
:func:`load_probe_cache` reads them back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from lorabuild import __version__
from lorabuild.probe.images import ImageInfo
from lorabuild.recipe.captions import CaptionFile

STAGE_MANIFEST = ".stage.json"
"""The stage manifest's name inside ``build/<name>/dataset/`` (see the module docstring)."""

PROBE_CACHE_VERSION = 1
"""Bump when what a probe record holds, or how a probe reads a file, changes."""

PROBE_FIELDS = (
    "path",
    "size",
    "mtime_ns",
    "inode",
    "width",
    "height",
    "format",
    "has_alpha",
    "orientation",
    "decoded_size",
    "sha256",
    "dhash",
    "caption",
    "caption_key",
    "caption_text",
)
"""What a probe record holds, in order. Records are lists, not objects: the manifest of a
10,000-image stage is read on every check, and JSON lists parse about twice as fast."""

STAGED_FIELDS = ("how", "method", "staged")
"""What the stage manifest records about a staged image before its probe record: how it was
staged (``link``, ``copy``, ``convert`` or ``cutout``), what decides its bytes (``link``, the
conversion's key, or ``cutout;`` and the cut-out's key) and the staged file's ``[size, mtime_ns, inode]``. :mod:`lorabuild.stages.prepare` writes them."""

# Where each probe field sits in a manifest entry (the cache keeps whole entries, not copies).
_R = {name: len(STAGED_FIELDS) + index for index, name in enumerate(PROBE_FIELDS)}


class FileKey(NamedTuple):
    """One version of a file as ``stat`` tells it: what lorabuild's caches are keyed by.

    A file rewritten in place changes its size or mtime; one replaced through a rename (as
    editors save) changes its inode. (A named tuple: one is made per file on every check.)
    """

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: str | Path) -> FileKey | None:
        """The key of ``path`` now, or None when it cannot be read."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)

    def as_list(self) -> list[int]:
        """``[size, mtime_ns, inode]``, as the manifest stores it."""
        return [self.size, self.mtime_ns, self.inode]


@dataclass(frozen=True)
class Fingerprint:
    """What the caches, duplicate detection and the stage know about an image's files.

    Attributes:
        key: The image file's :class:`FileKey` when probed; None when it could not be read.
        sha256: Content hash; computed only where another image has the same size (an exact
            duplicate must), with ``images.duplicates`` on.
        dhash: 64-bit perceptual hash (:func:`lorabuild.probe.imagefix.dhash`), with
            ``images.duplicates = "near"``.
        caption_key: The caption file's key when it was read (None: no caption file).
    """

    key: FileKey | None = None
    sha256: str | None = None
    dhash: int | None = None
    caption_key: FileKey | None = None


def probe_record(
    info: ImageInfo, fingerprint: Fingerprint, caption: CaptionFile | None = None, path: str | None = None
) -> list[Any] | None:
    """The probe-cache record of an image (:data:`PROBE_FIELDS`), as the stage manifest keeps it.

    None when the image is not cacheable (unread, or with a problem). The caption's text is kept
    when it was read from a file, so that an unchanged caption is not read again. ``path`` is the
    image's absolute path when the caller knows it.
    """
    key = fingerprint.key
    if key is None or info.problem is not None:
        return None
    cached_caption = (
        caption is not None
        and caption.path is not None
        and caption.problem is None
        and fingerprint.caption_key
    )
    return [
        path or os.path.abspath(info.path),
        key.size,
        key.mtime_ns,
        key.inode,
        info.width,
        info.height,
        info.format,
        info.has_alpha,
        info.orientation,
        list(info.decoded_size) if info.decoded_size else None,
        fingerprint.sha256,
        fingerprint.dhash,
        caption.path.name if cached_caption and caption and caption.path else None,
        fingerprint.caption_key.as_list() if cached_caption and fingerprint.caption_key else None,
        caption.text if cached_caption and caption else None,
    ]


def cached_caption(record: list[Any] | None, name: str, key: FileKey) -> str | None:
    """The caption text ``record`` keeps for the caption file ``name``, when that file is still at ``key``."""
    if record is not None and record[_R["caption"]] == name and record[_R["caption_key"]] == key.as_list():
        return str(record[_R["caption_text"]])
    return None


def image_from_record(
    path: Path, key: FileKey | None, record: list[Any]
) -> tuple[ImageInfo, Fingerprint, list[Any]] | None:
    """An image's facts from its probe record, when the record is of this version of the file."""
    try:
        if key is None or record[_R["size"] : _R["inode"] + 1] != [key.size, key.mtime_ns, key.inode]:
            return None
        decoded = record[_R["decoded_size"]]
        orientation = int(record[_R["orientation"]])
        info = ImageInfo(
            path=path,
            width=int(record[_R["width"]]),
            height=int(record[_R["height"]]),
            format=str(record[_R["format"]]),
            has_alpha=bool(record[_R["has_alpha"]]),
            exif_transposed=orientation >= 5,
            problem=None,
            orientation=orientation,
            decoded_size=(int(decoded[0]), int(decoded[1])) if decoded else None,
        )
        sha, hashed = record[_R["sha256"]], record[_R["dhash"]]
        return (
            info,
            Fingerprint(
                key, str(sha) if sha is not None else None, int(hashed) if hashed is not None else None
            ),
            record,
        )
    except (TypeError, ValueError, IndexError):
        return None


_manifests: dict[Path, tuple[tuple[int, int, int], dict[str, Any] | None]] = {}


def read_stage_manifest(path: Path) -> dict[str, Any] | None:
    """The stage manifest's document, or None when missing, unreadable or written by another version.

    Parsed once per process for each version of the file (check and stage both read it).
    """
    key = FileKey.of(path)
    if key is None:
        return None
    stamp = (key.size, key.mtime_ns, key.inode)
    known = _manifests.get(path)
    if known is not None and known[0] == stamp:
        return known[1]
    try:
        parsed = json.loads(path.read_bytes())
    except (OSError, ValueError):
        parsed = None
    data: dict[str, Any] | None = parsed if isinstance(parsed, dict) else None
    if data is not None and (
        data.get("lorabuild_version") != __version__
        or data.get("probe_version") != PROBE_CACHE_VERSION
        or not isinstance(data.get("images"), dict)
        or not isinstance(data.get("captions"), dict)
    ):
        data = None
    _manifests.clear()  # one build at a time: keep only the latest
    _manifests[path] = (stamp, data)
    return data


def load_probe_cache(manifest: Path) -> dict[str, list[Any]]:
    """The image entries of a stage manifest, by absolute source path (empty when there is none)."""
    data = read_stage_manifest(manifest)
    if data is None:
        return {}
    column = len(STAGED_FIELDS)
    records: dict[str, list[Any]] = {}
    for entry in data["images"].values():
        if (
            isinstance(entry, list)
            and len(entry) == column + len(PROBE_FIELDS)
            and isinstance(entry[column], str)
        ):
            records[entry[column]] = entry
    return records
