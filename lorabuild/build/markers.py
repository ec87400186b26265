"""What make and lorabuild share in ``build/<name>/.lorabuild/``: the folder, the stage markers,
the stat fingerprint of an input.

``lorabuild run`` touches ``<stage>.done`` (:func:`mark_done`) each time it finds a stage done;
a Makefile written by :mod:`lorabuild.batch.makegen` compares those markers' mtimes with its
``inputs.stamp``, which fingerprints the build's inputs by :func:`path_state`. The stage stamps of
:mod:`lorabuild.build.state` live in the same folder and fingerprint model files the same way.

Standard library only: ``python -m lorabuild.batch.makefile`` imports this module and must start
fast (no pydantic, no planner): :mod:`lorabuild.plan.layout`, where :data:`STATE_DIR` is defined
with the rest of the build folder's layout, is standard library only too.
"""

from __future__ import annotations

import os
from pathlib import Path

from lorabuild.plan.layout import STATE_DIR


def marker(build_dir: Path, stage: str) -> Path:
    """``build/<name>/.lorabuild/<stage>.done``: touched whenever ``stage`` is found done."""
    return build_dir / STATE_DIR / f"{stage}.done"


def mark_done(build_dir: Path, stage: str) -> None:
    """Touch ``stage``'s marker (make compares its mtime with the previous stage's)."""
    path = marker(build_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def path_state(path: Path) -> list[object]:
    """(size, mtime) of a file, or of every file under a folder; ``["missing"]`` when absent.

    Hidden folders (``.git``, a build's ``.lorabuild``) are left out: they are not training
    inputs, and a dataset folder that holds the build folder would otherwise never be up to date.
    """
    try:
        st = path.stat()
    except OSError:
        return ["missing"]
    if not path.is_dir():
        return [st.st_size, st.st_mtime_ns]
    found: list[object] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            try:
                fst = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), path).replace(os.sep, "/")
            found.append([rel, fst.st_size, fst.st_mtime_ns])
    return found
