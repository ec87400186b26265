"""A build as training and the grid leave it, made without kohya: for report and install tests.

:func:`finished_build` checks, compiles and stages the ``project`` fixture's recipe (so
``plan.json`` and ``tags.csv`` are real), then writes what later stages would: a small real
safetensors file per epoch in ``output/`` (kohya's unnumbered last file too), and a grid
manifest ``grid/grid.json`` with one PNG per cell, each cell a colour of its own, and optionally
the composed sheet.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lorabuild.plan.plan import Plan
from lorabuild.stages.check import Checked, check, require_plan
from lorabuild.stages.compile import compile_build
from lorabuild.stages.prepare import prepare
from tests.conftest import Project, write_safetensors

WEIGHTS = (0.6, 0.8, 1.0)

# A prompt that must reach the page as text: markup, an entity, quotes and CJK.
NASTY_PROMPT = '<script>document.title="pwned"</script> 初春飾利, 1girl & "smile" <b>bold</b>'


@dataclass(frozen=True)
class Finished:
    """The finished build: its check, plan and folder."""

    checked: Checked
    plan: Plan
    build: Path


def cell_colour(epoch: int, column: int) -> tuple[int, int, int]:
    """The colour of the grid cell at ``epoch`` and ``column`` (0 is the no-LoRA column)."""
    return (40 * epoch % 256, 60 * column, 200)


def finished_build(
    project: Project,
    *,
    epochs: tuple[int, ...] = (1, 2, 3),
    last: int = 3,
    grid: bool = True,
    sheet: bool = True,
    overrides: tuple[str, ...] = (),
) -> Finished:
    """Compile and stage ``project``'s recipe, then fake its training outputs and grid."""
    checked = check(project.recipe, list(overrides), Path("build"))
    plan = require_plan(checked)
    compile_build(plan)
    prepare(plan, checked.loaded.recipe)
    build = plan.build_dir
    for epoch in epochs:
        # Tensor names differ per epoch, so each file's bytes (and hashes) do.
        write_safetensors(
            build / "output" / f"{plan.name}-{epoch:06d}.safetensors", [f"lora_e{epoch}.w", "b"]
        )
    if last in epochs:
        shutil.copyfile(
            build / "output" / f"{plan.name}-{last:06d}.safetensors",
            build / "output" / f"{plan.name}.safetensors",
        )
    if grid:
        write_grid(build, plan.name, epochs, sheet=sheet)
    return Finished(checked, plan, build)


def write_grid(build: Path, name: str, epochs: tuple[int, ...], *, sheet: bool = True) -> None:
    """``grid/grid.json`` with one sheet (and cells) as lorabuild.stages.grid writes it."""
    columns = [{"weight": None, "label": "no LoRA"}] + [{"weight": w, "label": f"{w:g}"} for w in WEIGHTS]
    cells = []
    for epoch in epochs:
        row = []
        for c in range(len(columns)):
            rel = f"grid/cells/e{epoch}_c{c}.png"
            (build / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), cell_colour(epoch, c)).save(build / rel)
            row.append(rel)
        cells.append(row)
    manifest = {
        "version": 1,
        "name": name,
        "sheets": [
            {
                "id": "p00_s1234",
                "prompt": NASTY_PROMPT,
                "negative_prompt": "lowres, <bad>",
                "seed": 1234,
                "rows": [{"epoch": e, "label": f"epoch {e}"} for e in epochs],
                "columns": columns,
                "cells": cells,
            },
            {
                "id": "p01_s1234",
                "prompt": "uiharu_kazari, school uniform",
                "negative_prompt": "",
                "seed": 1234,
                "rows": [{"epoch": e, "label": f"epoch {e}"} for e in epochs],
                "columns": columns,
                "cells": [[None] * len(columns) for _ in epochs],
            },
        ],
    }
    (build / "grid" / "grid.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    if sheet:
        Image.new("RGB", (200, 150), (10, 120, 30)).save(build / "grid" / "sheet_p00_s1234.png")
