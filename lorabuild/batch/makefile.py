"""``python -m lorabuild.batch.makefile``: the helper a Makefile written by ``lorabuild makefile`` runs.

Every ``make`` runs ``python -m lorabuild.batch.makefile inputs Makefile`` once: it reads the
``# lorabuild-build: {json}`` lines the generator (:mod:`lorabuild.batch.makegen`, whose docstring
describes the Makefile) wrote, fingerprints each build's inputs by size and mtime and rewrites the
``inputs.stamp`` of those that changed; ``make clean-stamps`` runs ``... clean-stamps Makefile``.

Standard library and light lorabuild modules only (:mod:`lorabuild.build.markers`,
:mod:`lorabuild.plan.layout`, :mod:`lorabuild.render.writer`): it must start fast, so nothing here
loads pydantic, the planner or the recipes. Existing Makefiles name this module: it keeps its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lorabuild import __version__
from lorabuild.build.markers import path_state
from lorabuild.plan.layout import STATE_DIR
from lorabuild.render.writer import write_atomic

INPUTS_STAMP = "inputs.stamp"
# The Makefile lists each build's inputs on such a comment line, for `python -m lorabuild.batch.makefile`.
BUILD_LINE = "# lorabuild-build: "


# --- what make and lorabuild run share: markers and the inputs fingerprint ------------------------


def fingerprint(states: Sequence[object], key: str = "") -> str:
    """A hash of the :func:`path_state` of each input, lorabuild's version and settings.

    ``key`` stands for the build's command lines in the Makefile (recipe, ``--set``, build root).
    """
    doc = {
        "key": key,
        "lorabuild": __version__,
        "sd_scripts": os.environ.get("LORABUILD_SD_SCRIPTS", ""),
        "paths": states,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _mtimes(state: object) -> Iterator[int]:
    """The modification times inside a :func:`path_state`."""
    if isinstance(state, list) and len(state) == 2 and all(isinstance(v, int) for v in state):
        yield state[1]
    elif isinstance(state, list):
        for item in state:
            if isinstance(item, list) and len(item) == 3 and isinstance(item[2], int):
                yield item[2]


def refresh_inputs(stamp: Path, paths: Sequence[str], key: str = "", since: Sequence[Path] = ()) -> bool:
    """Rewrite ``stamp`` when the fingerprint of ``paths`` (and ``key``) changed; return whether it did.

    A stamp written for the first time gets the modification time of the newest input (or of a
    file in ``since``, the Makefile), not now: the build's stage markers are then newer when
    the build was made after its inputs last changed, as make itself would judge.
    """
    states = [path_state(Path(p)) for p in paths]
    new = fingerprint([[p, st] for p, st in zip(paths, states, strict=True)], key) + "\n"
    try:
        old: str | None = stamp.read_text(encoding="utf-8")
    except OSError:
        old = None
    if old == new:
        return False
    write_atomic(stamp, new.encode(), durable=False)
    if old is None:
        times = [t for st in states for t in _mtimes(st)]
        times += [f.stat().st_mtime_ns for f in since if f.exists()]
        newest = max(times, default=0)
        os.utime(stamp, ns=(newest, newest))
    return True


def clean_stamps(build_dirs: Sequence[Path]) -> int:
    """Delete make's stamps (inputs and stage markers) of ``build_dirs``; return how many."""
    removed = 0
    for build_dir in build_dirs:
        folder = build_dir / STATE_DIR
        for path in [folder / INPUTS_STAMP, *folder.glob("*.done")]:
            if path.is_file():
                path.unlink()
                removed += 1
    return removed


# --- python -m lorabuild.batch.makefile: the Makefile's fast helpers -------------------------------------

_USAGE = (
    "usage: python -m lorabuild.batch.makefile inputs MAKEFILE        (rewrite the inputs stamps that changed)\n"
    "       python -m lorabuild.batch.makefile clean-stamps MAKEFILE  (forget make's stamps)\n"
    "A Makefile that `lorabuild makefile` wrote runs these in its folder."
)


def manifest(makefile: Path) -> list[dict[str, Any]]:
    """The builds a generated Makefile lists: ``{"dir", "key", "paths"}`` each."""
    return [
        json.loads(line.removeprefix(BUILD_LINE))
        # Lines end at \n only, as make reads them: str.splitlines() would also split at U+2028,
        # U+0085 and others, which json.dumps(ensure_ascii=False) leaves in a path as they are.
        for line in makefile.read_bytes().decode("utf-8").split("\n")
        if line.startswith(BUILD_LINE)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m lorabuild.batch.makefile`` (no typer, no pydantic: it must start fast)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "inputs":
        for build in manifest(Path(args[1])):
            # A build not made yet gets no stamp (and no folder): make runs its stages anyway.
            if Path(build["dir"]).is_dir():
                stamp = Path(build["dir"]) / STATE_DIR / INPUTS_STAMP
                refresh_inputs(stamp, build["paths"], build["key"], since=[Path(args[1])])
        return 0
    if len(args) == 2 and args[0] == "clean-stamps":
        print(f"removed {clean_stamps([Path(b['dir']) for b in manifest(Path(args[1]))])} stamp(s)")
        return 0
    print(_USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
