"""The one place that writes build artefacts to disk.

Rendering gives bytes in memory; :func:`write_files` compares them with what is on disk and
writes only what changed, each file atomically (a temporary file in the same folder, then
``os.replace``), so an interrupted compile never leaves half a file and an unchanged build is not
touched. It reports, per file, whether it was created, updated or identical.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Artefact:
    """One file to write: its bytes and whether it should be executable."""

    data: bytes
    executable: bool = False


@dataclass(frozen=True)
class Written:
    """What happened to one file: ``create``, ``update`` or ``identical``."""

    path: Path
    action: str


def write_atomic(path: Path, data: bytes, executable: bool = False, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Readers see the old file or the new one, never half of one. ``durable=False`` skips the
    ``fsync`` before the rename: a power cut may then leave the new file empty, so it is for files
    whose writer checks them again on its next run (the stage's captions, checked by size).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        mode = 0o755 if executable else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_files(root: Path, files: Mapping[str, Artefact], dry_run: bool = False) -> list[Written]:
    """Write ``files`` (paths relative to ``root``) where their content differs from disk."""
    results = []
    for rel, artefact in files.items():
        path = root / rel
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            current = None
        if current == artefact.data and (not artefact.executable or _is_executable(path)):
            results.append(Written(path, "identical"))
            continue
        if not dry_run:
            write_atomic(path, artefact.data, artefact.executable)
        results.append(Written(path, "create" if current is None else "update"))
    return results


def _is_executable(path: Path) -> bool:
    return os.name == "nt" or bool(path.stat().st_mode & stat.S_IXUSR)
