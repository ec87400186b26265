"""The one place that writes build artefacts to disk.

Rendering gives bytes in memory; :func:`write_files` compares them with what is on disk and
writes only what changed, each file atomically (a temporary file in the same folder, then
``os.replace``), so an interrupted compile never leaves half a file and an unchanged build is not
touched. It reports, per file, whether it was created, updated or identical.

A write that fails (a full disk, a quota, a read-only or forbidden folder) raises
:class:`WriteError`: one line naming the folder and, when space ran out, how much was still to
be written and how much is free; the temporary file is removed first.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lorabuild.problems import LorabuildError

NO_SPACE = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT") if hasattr(errno, name))
"""errnos that mean the disk (or the user's quota) is full: the error says how much space is needed."""


class WriteError(LorabuildError, OSError):
    """lorabuild could not write into a folder (full disk, quota, read-only, permission).

    Also an :class:`OSError`, so code that tolerates a failed write of a cache still does.

    Attributes:
        folder: The folder that could not be written.
        needed: Bytes still to be written there when it failed (an estimate), when known.
    """

    exit_code = 1

    def __init__(self, folder: Path, cause: OSError, needed: int | None = None) -> None:
        self.folder = folder
        self.needed = needed
        self.cause = cause
        super().__init__(cause.errno, _describe(folder, cause, needed))

    def __str__(self) -> str:
        return str(self.strerror)


def _size(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError  # pragma: no cover


def free_space(folder: Path) -> int | None:
    """Bytes free for this user on the file system of ``folder`` (or of its nearest existing parent)."""
    for candidate in (folder, *folder.absolute().parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _describe(folder: Path, cause: OSError, needed: int | None) -> str:
    reason = os.strerror(cause.errno) if cause.errno else str(cause)
    text = f"cannot write {folder.as_posix()}: {reason[:1].lower()}{reason[1:]}"
    if cause.errno in NO_SPACE:
        free = free_space(folder)
        space = []
        if needed is not None:
            space.append(f"about {_size(needed)} still to write")
        if free is not None:
            space.append(f"{_size(free)} free there")
        if space:
            text += f" ({', '.join(space)})"
        return text + ": free some space there (or build on another disk: --build-dir), then run this again"
    if cause.errno in (getattr(errno, "EROFS", None), errno.EACCES, errno.EPERM):
        return text + ": make it writable (or build elsewhere: --build-dir), then run this again"
    return text + ": fix that, then run this again"


def write_error(folder: Path, exc: OSError, needed: int | None = None) -> WriteError:
    """``exc`` (raised while writing into ``folder``) as a :class:`WriteError` saying what to do."""
    if isinstance(exc, WriteError):
        exc = exc.cause
    return WriteError(folder, exc, needed)


@contextmanager
def writing(folder: Path, needed: int | None = None) -> Iterator[None]:
    """Turn an :class:`OSError` raised inside into a :class:`WriteError` about ``folder``."""
    try:
        yield
    except OSError as exc:
        raise write_error(folder, exc, needed) from exc


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the open file ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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


    Raises:
        WriteError: The folder cannot be written (nothing is left behind).
    """
    with writing(path.parent, len(data)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            try:
                write_all(fd, data)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            mode = 0o755 if executable else 0o644
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_files(root: Path, files: Mapping[str, Artefact], dry_run: bool = False) -> list[Written]:
    """Write ``files`` (paths relative to ``root``) where their content differs from disk.

    Raises:
        WriteError: A file could not be written; it names ``root`` and the bytes still to
            write. Files written before it stay (each is whole); the failed one is untouched.
    """
    results = []
    todo: list[tuple[Path, Artefact]] = []
    for rel, artefact in files.items():
        path = root / rel
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            current = None
        if current == artefact.data and (not artefact.executable or _is_executable(path)):
            results.append(Written(path, "identical"))
            continue
        todo.append((path, artefact))
        results.append(Written(path, "create" if current is None else "update"))
    if not dry_run:
        for index, (path, artefact) in enumerate(todo):
            try:
                write_atomic(path, artefact.data, artefact.executable)
            except OSError as exc:
                raise write_error(root, exc, sum(len(a.data) for _, a in todo[index:])) from exc
    return results


def _is_executable(path: Path) -> bool:
    return os.name == "nt" or bool(path.stat().st_mode & stat.S_IXUSR)
