"""The scores as the report shows them: the shortlist's rows and the browsable grid's data.

Plain values for ``templates/report.html.j2`` and its script: per sheet a table of cells (rows by
epoch, columns by weight, the baseline first), each with its thumbnail, its scores in a few words,
its flags and the exact ``lorabuild install`` command that installs it; and, once each, the large
pictures and the training images nearest to a cell. Pictures come through ``picture`` (the
report's embedding), so this module reads no file itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from lorabuild.build.gridmanifest import Sheet
from lorabuild.score.measures import CellScore
from lorabuild.score.shortlist import Shortlist, label, reason


def shortlist_rows(listed: Shortlist, install: str) -> dict[str, Any]:
    """The shortlist for the page: picks with reason and command, what was ruled out and why, the notes."""
    return {
        "picks": [
            {
                "label": label(c),
                "reason": reason(c, listed),
                "command": f"{install} --epoch {c.epoch} --weight {c.weight:g}",
            }
            for c in listed.picks
        ],
        "rest": [label(c) for c in listed.rest],
        "ruled_out": [{"label": label(c), "reasons": list(c.ruled_out)} for c in listed.ruled_out],
        "notes": list(listed.notes),
    }


def _words(s: CellScore) -> list[str]:
    words = []
    if s.nearest_distance is not None:
        words.append(f"train {s.nearest_distance}")
    if s.effect is not None:
        words.append(f"base {s.effect}")
    if s.variety is not None:
        words.append(f"seeds {s.variety:.0f}")
    if s.likeness is not None:
        words.append(f"face {s.likeness:.2f}")
    said = s.models
    if said.face is not None:
        words.append(f"identity {said.face:.2f}")
    if said.prompt_match is not None:
        words.append(f"prompt {said.prompt_match:.2f}")
    if said.style is not None:
        words.append(f"clip {said.style:.2f}")
    if said.aesthetic is not None:
        words.append(f"aesthetic {said.aesthetic:.1f}")
    return words


def browse_grid(
    sheets: Sequence[Sheet],
    listed: Shortlist,
    install: str,
    picture: Callable[[str, bool], dict[str, Any] | None],
) -> dict[str, Any]:
    """The browsable grid: ``sheets`` with each cell's scores; ``picture(rel, large)`` embeds a file.

    Returns ``{"sheets": [...], "images": {rel: uri}, "training": {rel: {"uri", "name"}}}``; the
    template lays out ``sheets`` and its script reads the rest.
    """
    by_file = {(s.cell.sheet, s.cell.file): s for s in listed.scores}
    picks = {(c.epoch, c.weight): n for n, c in enumerate(listed.picks, 1)}
    images: dict[str, str] = {}
    training: dict[str, dict[str, str]] = {}
    out = []
    for sheet in sheets:
        rows = []
        for r, row in enumerate(sheet.rows):
            files = sheet.cells[r] if r < len(sheet.cells) else ()
            cells = []
            for c, column in enumerate(sheet.columns):
                rel = files[c] if c < len(files) else None
                thumb = picture(rel, False) if rel else None
                if rel and thumb is not None and rel not in images:
                    large = picture(rel, True)
                    images[rel] = large["uri"] if large else thumb["uri"]
                score = by_file.get((sheet.id, rel)) if rel else None
                near = score.nearest if score is not None else None
                if near is not None and near.file not in training:
                    shown = picture(near.file, True)
                    if shown is not None:
                        training[near.file] = {"uri": shown["uri"], "name": near.name}
                weight = column.weight
                cells.append(
                    {
                        "file": rel if thumb is not None else None,
                        "thumb": thumb,
                        "label": f"{row.label}, {column.label}",
                        "words": _words(score) if score is not None else [],
                        "flags": list(score.flags) if score is not None else [],
                        "near": near.file if near is not None and near.file in training else None,
                        "near_distance": score.nearest_distance if score is not None else None,
                        "pick": picks.get((row.epoch, weight)) if weight is not None else None,
                        "command": ""
                        if weight is None or math.isnan(weight)
                        else f"{install} --epoch {row.epoch} --weight {weight:g}",
                    }
                )
            rows.append({"label": row.label, "epoch": row.epoch, "cells": cells})
        out.append(
            {
                "id": sheet.id,
                "prompt": sheet.prompt,
                "seed": sheet.seed,
                "columns": [c.label for c in sheet.columns],
                "rows": rows,
            }
        )
    return {"sheets": out, "images": images, "training": training}
