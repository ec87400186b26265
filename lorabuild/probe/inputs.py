"""The input fingerprint: a cheap hash of everything a check reads, made of ``stat`` calls.

:func:`input_fingerprint` hashes the recipe, this machine's settings and packages and the
:func:`tree_state` of every file and folder the recipe names; :mod:`lorabuild.build.state` keeps it
in the ``prepare-command`` stamp, which makes an unchanged ``lorabuild prepare`` a folder listing.
No image or caption is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from lorabuild import __version__
from lorabuild.kohya.tagger import autotag_sections
from lorabuild.probe.cache import PROBE_CACHE_VERSION
from lorabuild.probe.environment import existing_builds, installed_packages, tagger_script
from lorabuild.recipe.schema import Recipe
from lorabuild.settings import TEMPLATES_DIR, sd_scripts_dir


def recipe_paths(value: object) -> Iterator[Path]:
    """Every path a validated recipe (or any part of it) names, depth first."""
    if isinstance(value, Path):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from recipe_paths(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from recipe_paths(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from recipe_paths(item)


def tree_state(path: str | Path, depth: int = 1, newest: list[int] | None = None) -> str:
    """A line per entry of ``path`` and of its folders down to ``depth``: name, type, size,
    mtime and inode as ``stat`` tells them (a file: its own line; absent: ``missing``).

    What changes when a file is added, removed, renamed, replaced or written to; no file is read.
    ``newest``, when given, gets the latest mtime seen appended.
    """
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}\tmissing\n"
    lines = [f"{path}\t{st.st_mode}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ino}\n"]
    latest = [st.st_mtime_ns]
    if depth > 0 and stat.S_ISDIR(st.st_mode):
        _tree_lines(os.fspath(path), depth, lines, latest)
    if newest is not None:
        newest.append(max(latest))
    return "".join(lines)


def _tree_lines(folder: str, depth: int, lines: list[str], latest: list[int]) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        lines.append(f"{folder}\tunreadable {exc.errno}\n")
        return
    newest = latest[0]
    for entry in entries:
        try:
            st = entry.stat()
        except OSError:  # a broken link
            lines.append(f"{entry.path}\tbroken\n")
            continue
        lines.append(f"{entry.path}\t{st.st_mode}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ino}\n")
        newest = max(newest, st.st_mtime_ns)
        if depth > 1 and stat.S_ISDIR(st.st_mode):
            _tree_lines(entry.path, depth - 1, lines, latest)
    latest[0] = max(latest[0], newest)


RACY_NS = 2_000_000_000
"""A file modified this close to a fingerprint may change again within its mtime's resolution
(a second on some file systems) without its ``stat`` showing it: such a fingerprint is not kept."""


def input_fingerprint(recipe: Recipe, recipe_hash: str, recipe_file: Path, build_root: Path) -> str | None:
    """A cheap hash of everything :func:`gather`, the rules, the plan and the compiled files read.

    The merged recipe (``recipe_hash``), lorabuild's version, this machine's settings and
    installed packages, the other builds, and ``stat`` of every file and folder the recipe names
    (a folder with every entry of its top level: a subset's images and captions, a model folder's
    files, a sub-folder's own mtime). No image or caption is opened, so a 10,000-image dataset
    costs one folder listing; any added, removed, replaced or edited file changes the hash.
    None when a file was modified in the last :data:`RACY_NS` (its next edit might not show).
    """
    digest = hashlib.sha256()
    mine = recipe_file.resolve()
    head = {
        "lorabuild": __version__,
        "probe": PROBE_CACHE_VERSION,
        "recipe": recipe_hash,
        "recipe_file": str(mine),
        "build_root": str(build_root.resolve()),
        "cwd": os.getcwd(),
        "platform": sys.platform,
        "python": sys.executable,
        "packages": installed_packages(),
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith("LORABUILD_")},
        "sd_scripts": str(sd_scripts_dir()),
        "tagger_script": list(map(str, tagger_script())) if autotag_sections(recipe) else None,
        "other_builds": {n: str(p) for n, p in sorted(existing_builds(build_root).items()) if p != mine},
    }
    digest.update(json.dumps(head, sort_keys=True).encode())
    now = time.time_ns()
    newest: list[int] = []
    digest.update(tree_state(TEMPLATES_DIR, newest=newest).encode("utf-8", "surrogateescape"))
    for path in dict.fromkeys(recipe_paths(recipe)):
        digest.update(tree_state(path, newest=newest).encode("utf-8", "surrogateescape"))
    return None if max(newest) > now - RACY_NS else digest.hexdigest()
