"""The LoRA files a build saved, and their hashes (cached, so that a report or install is fast).

kohya saves each epoch as ``output/NAME-0000EE.ext`` and the last one as ``output/NAME.ext``
(``lorabuild train`` links the last to its numbered name too; see :mod:`lorabuild.stages.train`);
the plan's :attr:`~lorabuild.plan.plan.Plan.saves` says which names a build's training writes.
:func:`saved_files` lists them by epoch. :class:`HashCache` gives each file's SHA-256 and, for
``.safetensors``, the hash the AUTOMATIC1111 webui shows for a LoRA: the SHA-256 of the bytes
after the safetensors header (kohya writes the same value into the file as
``sshs_model_hash``; the webui's short hash is its first 12 digits). Both come from one read of
the file and are kept in ``build/<name>/.lorabuild/hashes.json`` by (path, size, mtime), so a
second report reads no model file again.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.plan.layout import BuildLayout
from lorabuild.plan.plan import Plan
from lorabuild.render.writer import write_atomic

_CACHE_VERSION = 1
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SavedFile:
    """One LoRA file in ``output/``.

    Attributes:
        path: The file.
        rel: Its path relative to the build folder, with forward slashes.
        epoch: The epoch it holds.
        numbered: False for kohya's ``NAME.ext`` (the last epoch, without a number).
        size: Size in bytes.
        mtime_ns: Modification time.
    """

    path: Path
    rel: str
    epoch: int
    numbered: bool
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FileHash:
    """A file's hashes.

    Attributes:
        sha256: SHA-256 of the whole file.
        model_hash: SHA-256 of the bytes after a safetensors header (kohya's ``sshs_model_hash``,
            the webui's LoRA hash); None for other formats.
    """

    sha256: str
    model_hash: str | None

    @property
    def short_hash(self) -> str | None:
        """What the webui shows as a LoRA's hash (``Lora hashes: NAME: <12 digits>``)."""
        return self.model_hash[:12] if self.model_hash else None


def saved_files(plan: Plan, build_dir: Path | None = None) -> list[SavedFile]:
    """The LoRA files in the build's ``output/``, by epoch, numbered before unnumbered.

    Temporary files (names starting with a dot) and state folders are left out.
    """
    build = build_dir if build_dir is not None else plan.build_dir
    saves = plan.saves
    name, ext, epochs = saves.name, saves.ext, saves.epochs
    folder = BuildLayout(build).output_dir
    pattern = re.compile(re.escape(name) + r"-(\d{6})\." + re.escape(ext))
    found: list[SavedFile] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        match = pattern.fullmatch(entry.name)
        if match:
            epoch, numbered = int(match.group(1)), True
        elif entry.name == f"{name}.{ext}":
            epoch, numbered = epochs, False
        else:
            continue
        try:
            st = entry.stat()
        except OSError:
            continue
        if not entry.is_file():
            continue
        found.append(
            SavedFile(
                entry, f"{BuildLayout.OUTPUT}/{entry.name}", epoch, numbered, st.st_size, st.st_mtime_ns
            )
        )
    found.sort(key=lambda f: (f.epoch, not f.numbered))
    return found


def epoch_files(plan: Plan, build_dir: Path | None = None) -> dict[int, SavedFile]:
    """One file per saved epoch (the numbered name when there is one)."""
    files: dict[int, SavedFile] = {}
    for f in saved_files(plan, build_dir):
        files.setdefault(f.epoch, f)
    return files


def hash_file(path: Path) -> FileHash:
    """SHA-256 of the file and, for safetensors, of its tensor data, in one read."""
    whole = hashlib.sha256()
    data = hashlib.sha256() if path.suffix == ".safetensors" else None
    with path.open("rb") as f:
        head = f.read(8)
        whole.update(head)
        if data is not None:
            # A header that claims more bytes than the file has is not a safetensors file.
            skip = int.from_bytes(head, "little") if len(head) == 8 else None
            if skip is None or skip + 8 > path.stat().st_size:
                data = None
            else:
                header = f.read(skip)
                whole.update(header)
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            whole.update(chunk)
            if data is not None:
                data.update(chunk)
    return FileHash(whole.hexdigest(), data.hexdigest() if data is not None else None)


class HashCache:
    """Hashes of a build's files, remembered by (relative path, size, mtime).

    Args:
        build_dir: The build folder (the cache lives in its ``.lorabuild/``).
    """

    def __init__(self, build_dir: Path):
        self.build_dir = build_dir
        self.path = BuildLayout(build_dir).hashes
        self._entries: dict[str, dict[str, Any]] = {}
        self._dirty = False
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("version") == _CACHE_VERSION and isinstance(doc.get("files"), dict):
                self._entries = doc["files"]
        except (OSError, ValueError, AttributeError):
            pass  # no cache, or an unreadable one: hash again
        self.hashed = 0
        """How many files this instance actually read (the rest came from the cache)."""

    def of(self, rel: str) -> FileHash:
        """The hashes of ``build_dir/rel``, from the cache when its size and mtime are unchanged."""
        path = self.build_dir / rel
        st = path.stat()
        entry = self._entries.get(rel)
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return FileHash(str(entry["sha256"]), entry.get("model_hash"))
        result = hash_file(path)
        self.hashed += 1
        self._entries[rel] = {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": result.sha256,
            "model_hash": result.model_hash,
        }
        self._dirty = True
        return result

    def save(self) -> None:
        """Write the cache when something new was hashed (dropping files that are gone)."""
        if not self._dirty:
            return
        kept = {rel: e for rel, e in sorted(self._entries.items()) if (self.build_dir / rel).is_file()}
        doc = {"version": _CACHE_VERSION, "files": kept}
        write_atomic(self.path, (json.dumps(doc, indent=1) + "\n").encode(), durable=False)
        self._dirty = False
