"""Whether an image decodes all the way through, checked once per new file, on every core.

:func:`lorabuild.probe.images.probe_image` reads headers and tails: a file cut short is caught there,
but one damaged in the middle (a bad sector, a broken download resumed at the wrong offset)
passes, and kohya stops on it minutes into a run (``OSError`` while caching latents). Staging
(:mod:`lorabuild.build.dataset`) runs :func:`decode_problems` on the images it is about to link, that is
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

**Workers die with lorabuild.** A worker process must never outlive the ``prepare`` that started
it, however that ends: it would hold the build lock's file and the caller's output pipe open
(a script reading ``prepare``'s output would wait forever). Each worker (:func:`_worker_init`)
reads and writes nothing of its parent's standard streams, ignores Ctrl-C (lorabuild decides
when to stop), asks Linux to kill it when its parent dies (``PR_SET_PDEATHSIG``) and, on every
POSIX system, watches its parent from a thread and exits once it is gone (``kill -9`` of
lorabuild). When lorabuild stops on an error, Ctrl-C or SIGTERM, it kills its workers instead
of waiting for their chunks. (On Windows, :mod:`multiprocessing` workers end when the pipes to
their parent break.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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


# How often a worker checks that its parent is still there (seconds).
_WATCH_EVERY = 0.2
_PR_SET_PDEATHSIG = 1


def _worker_init(parent: int, deathsig: bool) -> None:
    """Run in each worker as it starts: tie its life to ``parent`` (lorabuild's pid).

    ``deathsig``: the pool was started from the main thread. Linux sends the death signal when
    the *thread* that started a process ends, so a pool started from another thread relies on
    the watchdog alone.
    """
    if os.name != "posix":
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # let go of the caller's pipes: they reach EOF when lorabuild ends
        os.dup2(devnull, fd)
    os.close(devnull)
    if deathsig and sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # no libc to load: the watchdog below still works
            import ctypes  # lazy: Linux only, and a Python may lack it (suppressed)

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    watched = os.getppid()  # lorabuild, or the fork server that started this worker for it
    if not _alive(parent, watched):  # it died before the lines above could notice
        os._exit(1)
    threading.Thread(target=_watch, args=(parent, watched), name="parent-watch", daemon=True).start()


def _alive(parent: int, watched: int) -> bool:
    if os.getppid() != watched:  # re-parented: the process that started this one is gone
        return False
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else (cannot be ours, but do not guess)
        return True
    return True


def _watch(parent: int, watched: int) -> None:
    while _alive(parent, watched):
        time.sleep(_WATCH_EVERY)
    os._exit(1)


def _new_pool(workers: int) -> ProcessPoolExecutor:
    deathsig = threading.current_thread() is threading.main_thread()
    return ProcessPoolExecutor(
        max_workers=workers, initializer=_worker_init, initargs=(os.getpid(), deathsig)
    )


def _close(pool: ProcessPoolExecutor, failed: bool) -> None:
    """Shut ``pool`` down: after its running chunks, or (``failed``: an error, Ctrl-C, SIGTERM) at once."""
    if failed:
        # Nobody will read the results: do not wait for the chunks under way.
        processes = getattr(pool, "_processes", None) or {}
        for process in list(processes.values()):
            with contextlib.suppress(Exception):
                process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


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
    failed = True
    try:
        yield
        failed = False
    finally:
        _ahead = outer
        if mine.pool is not None:
            _close(mine.pool, failed)


def decode_ahead(paths: Sequence[Path | str]) -> None:
    """Start checking ``paths`` in a process pool, inside :func:`ahead` (else nothing happens)."""
    state = _ahead
    if state is None or len(paths) < _POOL_FROM:
        return
    if state.pool is None:
        state.pool = _new_pool(os.cpu_count() or 1)
    names = [str(p) for p in paths]
    size = 64
    for start in range(0, len(names), size):
        chunk = names[start : start + size]
        future = state.pool.submit(_decode_chunk, chunk)
        for index, name in enumerate(chunk):
            state.pending[name] = (future, index)


def decode_problems(
    paths: Sequence[Path | str],
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[str | None]:
    """:func:`decode_problem` of each path, in order, in a process pool on every core.

    Pillow's PNG ``verify`` is mostly Python (chunk reading and CRCs under the GIL), so threads
    would not overlap it; processes do.

    Args:
        paths: Image files.
        workers: Processes (default: one per core); 1, or few paths, checks in this process.
        progress: Told ``(done, total)`` as results come in.
    """
    if _ahead is not None and _ahead.pending:
        started = [_ahead.pending.pop(str(p), None) for p in paths]
        rest = [p for p, s in zip(paths, started, strict=True) if s is None]
        found = iter(_decode_now(rest, workers) if rest else [])
        results = []
        for s in started:
            results.append(next(found) if s is None else s[0].result()[s[1]])
            if progress is not None:
                progress(len(results), len(paths))
        return results
    return _decode_now(paths, workers, progress)


def _decode_now(
    paths: Sequence[Path | str], workers: int | None, progress: Callable[[int, int], None] | None = None
) -> list[str | None]:
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) < _POOL_FROM:
        found = []
        for path in paths:
            found.append(decode_problem(path))
            if progress is not None:
                progress(len(found), len(paths))
        return found
    chunk = max(1, len(paths) // (workers * 8))
    pool = _new_pool(workers)
    failed = True
    try:
        found = []
        for result in pool.map(decode_problem, [str(p) for p in paths], chunksize=chunk):
            found.append(result)
            if progress is not None:
                progress(len(found), len(paths))
        failed = False
    finally:
        _close(pool, failed)
    return found
