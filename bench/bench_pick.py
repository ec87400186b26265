"""Time the grid's scores (``lorabuild pick``'s work) on a 10 epochs x 4 weights x 2 seeds grid.

The build is made once in ``.bench/pick/``: the test project's recipe with 20 training images
(512 px pictures of shapes), 10 saved epochs, and a grid of 512 px cells as kohya renders them
(2 no-LoRA baselines and 80 LoRA cells, each the baseline with shapes added). Then
:func:`lorabuild.score.score_build` runs in this process: ``cold`` with the hash cache removed
before each run (every cell and training image decoded and hashed), ``warm`` with it kept (what a
second ``lorabuild pick`` or report costs). Prints the median of several runs of each.

    python bench/bench_pick.py              # 5 runs each, likeness off
    python bench/bench_pick.py --runs 9 --likeness   # with animeface, where installed
    python bench/bench_pick.py --faces      # photos of faces, likeness on: dlib's descriptor (faces extra)

With ``--faces`` the training images and the cells are the photos of ``tests/data/faces`` placed on
512 px pictures (the training images: the trained person's two photos at ten places each; the
cells: the third photo of that person, or the other person's at weight 0.4, on the baseline with
shapes added), so that
dlib finds a face in every picture, as in a grid of a person's LoRA.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lorabuild.plan.layout import BuildLayout  # noqa: E402
from lorabuild.score import score_build  # noqa: E402
from tests.conftest import Project, write_checkpoint  # noqa: E402
from tests.finished_build import Finished, finished_build  # noqa: E402
from tests.test_pick import lora_effect, picture  # noqa: E402
from tests.test_pick_faces import FACES  # noqa: E402

EPOCHS = 10
WEIGHTS = (0.4, 0.6, 0.8, 1.0)
SEEDS = (1, 2)
IMAGES = 20
SIDE = 512


def on_picture(name: str, place: int, canvas: Image.Image | None = None) -> Image.Image:
    """The photo ``name`` of tests/data/faces on ``canvas`` (default: a picture of shapes), at a place of its own."""
    canvas = canvas.copy() if canvas is not None else picture(900 + place, (SIDE, SIDE))
    size = canvas.width
    with Image.open(FACES / name) as opened:
        photo = opened.convert("RGB")
    photo = photo.resize((photo.width * 3 // 2, photo.height * 3 // 2))
    x = (place * 37) % max(1, size - photo.width)
    y = (place * 53) % max(1, size - photo.height)
    canvas.paste(photo, (x, y))
    return canvas


def make_build(root: Path, likeness: bool, faces: bool = False) -> Finished:
    """The project and its finished build with the 10 x 4 x 2 grid (made anew each call)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    os.chdir(root)
    project = Project(root)
    project.recipe = Path("recipe.toml")
    project.write_recipe()
    write_checkpoint(root / "models" / "base.safetensors", "sd15")
    data = root / "data" / "char"
    data.mkdir(parents=True)
    for i in range(IMAGES):
        image = on_picture(f"obama_{i % 2 + 1}.jpg", i) if faces else picture(500 + i, (SIDE, SIDE))
        image.save(data / f"{i:03d}.png")
        (data / f"{i:03d}.txt").write_text("1girl, smile", encoding="utf-8")
    f = finished_build(
        project,
        epochs=tuple(range(1, EPOCHS + 1)),
        last=EPOCHS,
        grid=False,
        overrides=(
            f"training.epochs={EPOCHS}",
            f"evaluate.weights={list(WEIGHTS)}",
            f"evaluate.seeds={list(SEEDS)}",
            f"pick.likeness={str(likeness).lower()}",
        ),
    )
    cells = f.build / BuildLayout.CELLS
    cells.mkdir(parents=True)
    sheets = []
    for seed in SEEDS:
        baseline = picture(100 + seed, (SIDE, SIDE))
        base_rel = f"{BuildLayout.CELLS}/base_s{seed}.png"
        baseline.save(f.build / base_rel)
        rows = []
        for epoch in range(1, EPOCHS + 1):
            row = [base_rel]
            for weight in WEIGHTS:
                rel = f"{BuildLayout.CELLS}/e{epoch}_w{weight:g}_s{seed}.png"
                place = epoch * 100 + int(weight * 10) + seed
                if faces:
                    person = "biden_1.jpg" if weight == WEIGHTS[0] else "obama_3.jpg"
                    cell = on_picture(person, place, lora_effect(baseline, place))
                else:
                    cell = lora_effect(baseline, place)
                cell.save(f.build / rel)
                row.append(rel)
            rows.append(row)
        sheets.append(
            {
                "id": f"p00_s{seed}",
                "prompt": "uiharu_kazari, smile",
                "seed": seed,
                "rows": [{"epoch": e, "label": f"epoch {e}"} for e in range(1, EPOCHS + 1)],
                "columns": [{"weight": None, "label": "no LoRA"}]
                + [{"weight": w, "label": f"{w:g}"} for w in WEIGHTS],
                "cells": rows,
            }
        )
    doc = {"version": 1, "name": f.plan.name, "sheets": sheets}
    (f.build / BuildLayout.GRID_MANIFEST).write_text(json.dumps(doc), encoding="utf-8")
    return f


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--likeness", action="store_true", help="score anime faces too (animeface)")
    parser.add_argument("--faces", action="store_true", help="photos of faces, likeness on (dlib)")
    args = parser.parse_args()
    f = make_build(REPO / ".bench" / "pick", args.likeness or args.faces, args.faces)
    cache = BuildLayout(f.build).scores
    timings: dict[str, list[float]] = {"cold": [], "warm": []}
    listed = None
    for _ in range(args.runs):
        cache.unlink(missing_ok=True)
        start = time.perf_counter()
        listed = score_build(f.plan)
        timings["cold"].append(time.perf_counter() - start)
        start = time.perf_counter()
        score_build(f.plan)
        timings["warm"].append(time.perf_counter() - start)
    assert listed is not None
    cells = len(listed.scores)
    print(
        f"grid: {EPOCHS} epochs x {len(WEIGHTS)} weights x {len(SEEDS)} seeds = {cells} LoRA cells + "
        f"{len(SEEDS)} baselines, {IMAGES} training images, {SIDE} px; likeness {'on' if args.likeness or args.faces else 'off'}"
        + ("; photos of faces" if args.faces else "")
    )
    for name, values in timings.items():
        print(
            f"{name}: median {statistics.median(values):.3f} s over {len(values)} runs "
            f"(min {min(values):.3f}, max {max(values):.3f})"
        )
    print(f"shortlist: {', '.join(f'epoch {c.epoch} x {c.weight:g}' for c in listed.picks)}")
    if args.faces:
        faces = sum(1 for s in listed.scores if s.models.face is not None)
        print(f"faces found in {faces} of {cells} cells; ruled out: {len(listed.ruled_out)} pair(s)")
    for note in listed.notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
