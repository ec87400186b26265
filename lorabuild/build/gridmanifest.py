"""``build/<name>/grid/grid.json``, the evaluation grid's manifest: written by the grid, read by the report and install.

:func:`manifest` makes the document (version 1) from a :class:`~lorabuild.plan.gridcells.GridPlan`;
:mod:`lorabuild.stages.grid` writes it::

    {"version": 1, "name": ..., "sheets": [{"id": "p00_s1234", "prompt": ..., "negative_prompt": ...,
     "seed": 1234, "rows": [{"epoch": 1, "label": "epoch 1"}, ...],
     "columns": [{"weight": null, "label": "no LoRA"}, {"weight": 0.6, "label": "0.6"}, ...],
     "cells": [["grid/cells/<key>.png" or null, ...], ...]}]}

Cell paths are relative to the build folder; ``cells[row][column]``. :func:`read_manifest` reads it,
tolerating what a newer or half-written manifest may lack: a sheet it cannot read is skipped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.plan.gridcells import GridPlan
from lorabuild.plan.layout import BuildLayout


@dataclass(frozen=True)
class Row:
    """A grid row: one saved epoch."""

    epoch: int
    label: str


@dataclass(frozen=True)
class Column:
    """A grid column: one LoRA weight (None: without the LoRA)."""

    weight: float | None
    label: str


@dataclass(frozen=True)
class Sheet:
    """One prompt and seed: a table of cells, rows by epoch and columns by weight."""

    id: str
    prompt: str
    negative_prompt: str
    seed: int | None
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    cells: tuple[tuple[str | None, ...], ...]

    @property
    def image(self) -> str:
        """The composed sheet (:mod:`lorabuild.render.sheets`), relative to the build folder."""
        return f"{BuildLayout.GRID}/sheet_{self.id}.png"

    def cell(self, epoch: int, weight: float) -> str | None:
        """The cell at ``epoch`` and ``weight`` (relative to the build folder), or None."""
        for r, row in enumerate(self.rows):
            if row.epoch != epoch:
                continue
            for c, column in enumerate(self.columns):
                if column.weight is not None and math.isclose(column.weight, weight, abs_tol=1e-6):
                    cells = self.cells[r] if r < len(self.cells) else ()
                    return cells[c] if c < len(cells) else None
        return None


def read_manifest(build_dir: Path) -> list[Sheet] | None:
    """The sheets of the build's grid, or None when there is no readable manifest."""
    try:
        doc = json.loads(BuildLayout(build_dir).grid_manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("sheets"), list):
        return None
    sheets = []
    for raw in doc["sheets"]:
        sheet = _sheet(raw)
        if sheet is not None:
            sheets.append(sheet)
    return sheets


def _sheet(raw: Any) -> Sheet | None:
    try:
        rows = tuple(Row(int(r["epoch"]), str(r.get("label") or f"epoch {r['epoch']}")) for r in raw["rows"])
        columns = tuple(
            Column(
                None if c.get("weight") is None else float(c["weight"]),
                str(c.get("label") or ("no LoRA" if c.get("weight") is None else f"{float(c['weight']):g}")),
            )
            for c in raw["columns"]
        )
        cells = tuple(tuple(None if x is None else str(x) for x in row) for row in raw.get("cells", []))
        seed = raw.get("seed")
        return Sheet(
            id=str(raw["id"]),
            prompt=str(raw.get("prompt", "")),
            negative_prompt=str(raw.get("negative_prompt") or ""),
            seed=None if seed is None else int(seed),
            rows=rows,
            columns=columns,
            cells=cells,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


# --- writing it ---------------------------------------------------------------------------------

MANIFEST_VERSION = 1


def manifest(grid: GridPlan, name: str) -> dict[str, Any]:
    """The ``grid/grid.json`` document of ``grid`` (version 1, as above), for the build ``name``."""
    s = grid.settings
    return {
        "version": MANIFEST_VERSION,
        "name": name,
        "settings": {
            "negative_prompt": s.negative_prompt,
            "lora_files": {str(e): grid.lora_files[e] for e in grid.epochs},
            **s.image_inputs(),
        },
        "sheets": [
            {
                "id": sheet.id,
                "prompt": sheet.prompt,
                "negative_prompt": s.negative_prompt,
                "seed": sheet.seed,
                "rows": [{"epoch": e, "label": f"epoch {e}"} for e in sheet.epochs],
                "columns": [
                    {"weight": w, "label": "no LoRA" if w is None else f"{w:g}"} for w in sheet.columns
                ],
                "cells": [[c.file for c in row] for row in sheet.cells],
            }
            for sheet in grid.sheets
        ],
    }
