"""Whether an image decodes all the way through, checked once per new file, on every core.

:func:`lorabuild.probe.images.probe_image` reads headers and tails: a file cut short is caught there,
but one damaged in the middle (a bad sector, a broken download resumed at the wrong offset)
passes, and kohya stops on it minutes into a run (``OSError`` while caching latents). Staging
(:mod:`lorabuild.stages.prepare`) runs :func:`decode_problems` on the images it is about to link, that is
on sources that are new or changed since the last ``prepare``: an unchanged image keeps its
stage-manifest record and is never decoded again, so a warm ``prepare`` decodes nothing.
Converted images need no check of their own: converting decodes them.

How much decoding a check takes, by format:

* PNG: :meth:`PIL.Image.Image.verify` reads every chunk and checks its CRC (about 0.3 ms for a
  512 px image, against 6 ms to inflate it); a flipped byte anywhere fails its chunk's CRC, which
  is what makes kohya's load fail.
* JPEG: decoded at 1/8 scale (``draft``), which still walks all entropy-coded data: libjpeg
  fails on what it cannot decode and, like kohya's load, passes what it can.
* Others (WebP, BMP...): a full ``load()``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from PIL import Image

# Below this many images a process pool costs more to start than it saves.
_POOL_FROM = 64


def decode_problem(path: Path | str) -> str | None:
    """Why ``path`` does not decode as kohya's ``load_image`` will need it to, or None."""
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                image.verify()
            else:
                if image.format in ("JPEG", "MPO"):
                    image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on broken data
        return f"does not decode ({type(exc).__name__}: {exc}): the file is damaged"
    return None


def _decode_chunk(paths: Sequence[str]) -> list[str | None]:
    return [decode_problem(path) for path in paths]


class _Ahead:
    """Decodes started early (:func:`decode_ahead`), by path, until :func:`decode_problems` asks."""

    def __init__(self) -> None:
        self.pool: ProcessPoolExecutor | None = None
        self.pending: dict[str, tuple[Future[list[str | None]], int]] = {}


_ahead: _Ahead | None = None


@contextlib.contextmanager
def ahead() -> Iterator[None]:
    """Within this block, :func:`decode_ahead` starts checks in the background.

    ``lorabuild prepare`` wraps its check and staging in it: the images the check probes for the
    first time are the ones staging will decode, so their decoding overlaps the check, the
    plan and the caption writes instead of following them. Leaving the block drops what was
    not asked for (a check that failed stages nothing).
    """
    global _ahead
    outer, mine = _ahead, _Ahead()
    _ahead = mine
    try:
        yield
    finally:
        _ahead = outer
        if mine.pool is not None:
            mine.pool.shutdown(wait=True, cancel_futures=True)


def decode_ahead(paths: Sequence[Path | str]) -> None:
    """Start checking ``paths`` in a process pool, inside :func:`ahead` (else nothing happens)."""
    state = _ahead
    if state is None or len(paths) < _POOL_FROM:
        return
    if state.pool is None:
        state.pool = ProcessPoolExecutor(max_workers=os.cpu_count() or 1)
    names = [str(p) for p in paths]
    size = 64
    for start in range(0, len(names), size):
        chunk = names[start : start + size]
        future = state.pool.submit(_decode_chunk, chunk)
        for index, name in enumerate(chunk):
            state.pending[name] = (future, index)


def decode_problems(paths: Sequence[Path | str], workers: int | None = None) -> list[str | None]:
    """:func:`decode_problem` of each path, in order, in a process pool on every core.

    Pillow's PNG ``verify`` is mostly Python (chunk reading and CRCs under the GIL), so threads
    would not overlap it; processes do.

    Args:
        paths: Image files.
        workers: Processes (default: one per core); 1, or few paths, checks in this process.
    """
    if _ahead is not None and _ahead.pending:
        started = [_ahead.pending.pop(str(p), None) for p in paths]
        rest = [p for p, s in zip(paths, started, strict=True) if s is None]
        found = iter(_decode_now(rest, workers) if rest else [])
        return [next(found) if s is None else s[0].result()[s[1]] for s in started]
    return _decode_now(paths, workers)


def _decode_now(paths: Sequence[Path | str], workers: int | None) -> list[str | None]:
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) < _POOL_FROM:
        return [decode_problem(path) for path in paths]
    chunk = max(1, len(paths) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(decode_problem, [str(p) for p in paths], chunksize=chunk))
