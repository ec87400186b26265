"""Staging: the dataset in kohya's layout, made from the plan, never touching the sources.

Each subset becomes ``build/<name>/dataset/<repeats>_<trigger>/`` holding the images (hard links
where the file system allows, which needs no admin rights on Windows, else copies) and one
``.txt`` caption per image after the caption rules. Files already staged with the same content
are left alone; files no longer in the plan are removed from the stage.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lorabuild.plan import STAGED_CAPTION_EXTENSION, Plan
from lorabuild.writer import write_atomic


@dataclass(frozen=True)
class StageReport:
    """Counts of what staging did."""

    linked: int = 0
    copied: int = 0
    unchanged: int = 0
    captions_written: int = 0
    removed: int = 0


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = a.stat(), b.stat()
    except FileNotFoundError:
        return False
    if (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev):
        return True
    return sa.st_size == sb.st_size and int(sa.st_mtime) == int(sb.st_mtime)


def _place(source: Path, dest: Path) -> str:
    """Hard-link ``source`` to ``dest`` (copy when linking is impossible); return what was done."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
        how = "linked"
    except OSError:
        shutil.copy2(source, tmp)
        how = "copied"
    os.replace(tmp, dest)
    return how


def stage(plan: Plan) -> StageReport:
    """Stage every subset of ``plan`` into ``plan.build_dir / "dataset"``."""
    root = plan.build_dir / "dataset"
    linked = copied = unchanged = captions = removed = 0
    wanted_folders = {s.folder for s in plan.subsets}
    for subset in plan.subsets:
        folder = root / subset.folder
        folder.mkdir(parents=True, exist_ok=True)
        wanted: set[str] = set()
        for image in subset.images:
            dest = folder / image.name
            caption_path = dest.with_suffix(STAGED_CAPTION_EXTENSION)
            wanted.update({dest.name, caption_path.name})
            if _same_file(image.source, dest):
                unchanged += 1
            elif _place(image.source, dest) == "linked":
                linked += 1
            else:
                copied += 1
            data = (image.caption + "\n").encode()
            try:
                current = caption_path.read_bytes()
            except FileNotFoundError:
                current = None
            if current != data:
                write_atomic(caption_path, data)
                captions += 1
        for entry in folder.iterdir():
            if entry.is_file() and entry.name not in wanted and not entry.name.endswith(".npz"):
                entry.unlink()
                removed += 1
    if root.is_dir():
        for entry in root.iterdir():
            if entry.is_dir() and entry.name not in wanted_folders:
                shutil.rmtree(entry)
                removed += 1
    return StageReport(linked, copied, unchanged, captions, removed)
