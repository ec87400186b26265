"""Labelled comparison sheets: one picture per prompt and seed, epochs down, LoRA weights across.

The grid stage writes its cells and a manifest, ``build/<name>/grid/grid.json``::

    {"version": 1, "name": "...", "sheets": [{"id": "p00_s1234", "prompt": "...",
      "negative_prompt": "...", "seed": 1234,
      "rows": [{"epoch": 1, "label": "epoch 1"}, ...],
      "columns": [{"weight": null, "label": "no LoRA"}, {"weight": 0.6, "label": "0.6"}, ...],
      "cells": [["grid/cells/<key>.png" or null, ...], ...]}]}

:func:`compose_sheets` turns each entry into ``grid/sheet_<id>.png``: the prompt (wrapped) and
seed as a title, the column labels above, the row labels on the left, and the cells at native
size (scaled down to ``max_cell``) with small gutters; a missing cell is a grey placeholder
saying so. :func:`compose_sheet` does the drawing from images and labels, without files.
Labels are drawn with a font that has every glyph they use (:mod:`lorabuild.render.fonts`), so
Japanese and Chinese prompts and trigger words read as text, not boxes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, ImageDraw, UnidentifiedImageError

from lorabuild.problems import Problem, RecipeError
from lorabuild.render.fonts import Font, FontBook, system_book
from lorabuild.render.writer import Artefact, write_files

MANIFEST_VERSION = 1
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
PLACEHOLDER = (200, 200, 200)
PLACEHOLDER_TEXT = (90, 90, 90)
SHEET_ID = re.compile(r"^[A-Za-z0-9_.-]+$")

#: A cell: an image, or the text of a placeholder drawn in its place (``None``: "missing").
Cell = Image.Image | str | None


@dataclass(frozen=True)
class SheetStyle:
    """Sizes of a sheet, in pixels.

    Attributes:
        max_cell: Longest side of a cell; larger images (SDXL's 1024) are scaled down to it.
        font_size: Label text size; a line of text takes ``line_height`` pixels.
        margin: Space around the sheet.
        gutter: Space between cells, and between labels and cells.
        placeholder: Cell size used when every cell of a sheet is missing.
        min_width: Narrowest sheet, so that the title stays readable over a small grid.
        max_label_width: Widest row label column; longer row labels wrap.
    """

    max_cell: int = 512
    font_size: int = 20
    margin: int = 16
    gutter: int = 8
    placeholder: tuple[int, int] = (256, 256)
    min_width: int = 480
    max_label_width: int = 240

    @property
    def line_height(self) -> int:
        """Height of one line of label text."""
        return round(self.font_size * 1.35)


@dataclass(frozen=True)
class SheetLayout:
    """Where everything of one sheet goes.

    ``width = 2*margin + max(min_width, label_width + gutter + cols*cell_w + (cols-1)*gutter)``;
    ``height = 2*margin + title_height + gutter + header_height + gutter + rows*cell_h + (rows-1)*gutter``.
    """

    rows: int
    cols: int
    cell_w: int
    cell_h: int
    label_width: int
    title_height: int
    header_height: int
    margin: int
    gutter: int
    width: int
    height: int

    @property
    def grid_top(self) -> int:
        """y of the first row of cells."""
        return self.margin + self.title_height + self.gutter + self.header_height + self.gutter

    @property
    def grid_left(self) -> int:
        """x of the first column of cells."""
        return self.margin + self.label_width + self.gutter

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of the box a cell sits in (right, bottom exclusive)."""
        x = self.grid_left + col * (self.cell_w + self.gutter)
        y = self.grid_top + row * (self.cell_h + self.gutter)
        return x, y, x + self.cell_w, y + self.cell_h

    def header_box(self, col: int) -> tuple[int, int, int, int]:
        """The box of a column's label."""
        left, _, right, _ = self.cell_box(0, col)
        top = self.margin + self.title_height + self.gutter
        return left, top, right, top + self.header_height

    def row_label_box(self, row: int) -> tuple[int, int, int, int]:
        """The box of a row's label."""
        _, top, _, bottom = self.cell_box(row, 0)
        return self.margin, top, self.margin + self.label_width, bottom

    def title_box(self) -> tuple[int, int, int, int]:
        """The box of the title lines."""
        return self.margin, self.margin, self.width - self.margin, self.margin + self.title_height


@dataclass(frozen=True)
class Sheet:
    """A composed sheet and its layout."""

    image: Image.Image
    layout: SheetLayout


def wrap_text(text: str, font: Font, width: float) -> list[str]:
    """``text`` broken into lines no wider than ``width``: at spaces, else between characters.

    Words longer than a line (and CJK text, which has no spaces) break between characters.
    """
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))

    def fits(candidate: str) -> bool:
        return measure.textlength(candidate.rstrip(), font=font) <= width

    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in re.findall(r"\S+\s*|\s+", paragraph):
            if fits(line + word):
                line += word
                continue
            if line.strip():
                lines.append(line.rstrip())
                line = ""
            if fits(word):
                line = word
                continue
            for ch in word:
                if line.strip() and not fits(line + ch):
                    lines.append(line.rstrip())
                    line = ""
                line += ch
        lines.append(line.rstrip())
    return lines


def fit_cell(image: Image.Image, max_cell: int) -> Image.Image:
    """``image`` as RGB, scaled down (keeping its aspect) so its longest side is at most ``max_cell``."""
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, BACKGROUND)
            flat.paste(rgba, mask=rgba.getchannel("A"))
            image = flat
        else:
            image = image.convert("RGB")
    longest = max(image.size)
    if longest > max_cell:
        scale = max_cell / longest
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def compose_sheet(
    cells: Sequence[Sequence[Cell]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: Sequence[str] = (),
    style: SheetStyle | None = None,
    fonts: FontBook | None = None,
) -> Sheet:
    """Draw one comparison sheet.

    Args:
        cells: ``cells[row][col]``: an image, or a placeholder's text (``None``: "missing").
        row_labels: One label per row (drawn left of the row).
        col_labels: One label per column (drawn above it).
        title: Paragraphs drawn above the grid, each wrapped to the sheet's width.
        style: Sizes (:class:`SheetStyle` defaults when ``None``).
        fonts: Where fonts come from (this machine's fonts when ``None``).

    Raises:
        ValueError: When the labels do not match the shape of ``cells``.
    """
    style = style or SheetStyle()
    fonts = fonts or system_book()
    rows, cols = len(row_labels), len(col_labels)
    if len(cells) != rows or any(len(r) != cols for r in cells):
        raise ValueError(f"cells must be {rows} row(s) of {cols} column(s) to match the labels")
    fitted = [
        [fit_cell(c, style.max_cell) if isinstance(c, Image.Image) else c for c in row] for row in cells
    ]
    images = [c for row in fitted for c in row if isinstance(c, Image.Image)]
    if images:
        cell_w, cell_h = max(i.width for i in images), max(i.height for i in images)
    else:
        cell_w, cell_h = style.placeholder
    line = style.line_height
    pad = style.gutter

    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    row_fonts = [fonts.font(t, style.font_size) for t in row_labels]
    widest = max(
        (measure.textlength(t, font=f) for t, f in zip(row_labels, row_fonts, strict=True)), default=0
    )
    label_width = min(style.max_label_width, int(widest) + pad)
    row_lines = [wrap_text(t, f, label_width) for t, f in zip(row_labels, row_fonts, strict=True)]
    col_fonts = [fonts.font(t, style.font_size) for t in col_labels]
    col_lines = [wrap_text(t, f, cell_w) for t, f in zip(col_labels, col_fonts, strict=True)]
    header_height = max((len(lines) for lines in col_lines), default=1) * line

    grid_w = label_width + pad + cols * cell_w + max(cols - 1, 0) * pad
    width = 2 * style.margin + max(style.min_width, grid_w)
    title_fonts = [fonts.font(t, style.font_size) for t in title]
    title_lines = [
        (ln, f)
        for t, f in zip(title, title_fonts, strict=True)
        for ln in wrap_text(t, f, width - 2 * style.margin)
    ]
    title_height = len(title_lines) * line
    height = (
        2 * style.margin + title_height + pad + header_height + pad + rows * cell_h + max(rows - 1, 0) * pad
    )
    layout = SheetLayout(
        rows, cols, cell_w, cell_h, label_width, title_height, header_height, style.margin, pad, width, height
    )

    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    x0, y0, _, _ = layout.title_box()
    for i, (text, font) in enumerate(title_lines):
        draw.text((x0, y0 + i * line + line / 2), text, font=font, fill=TEXT, anchor="lm")
    for c, (lines, font) in enumerate(zip(col_lines, col_fonts, strict=True)):
        left, top, right, bottom = layout.header_box(c)
        first = float(bottom - len(lines) * line)  # bottom-aligned, just above the cells
        for i, text in enumerate(lines):
            draw.text(
                ((left + right) / 2, first + i * line + line / 2), text, font=font, fill=TEXT, anchor="mm"
            )
    for r, (lines, font) in enumerate(zip(row_lines, row_fonts, strict=True)):
        left, top, right, bottom = layout.row_label_box(r)
        first = (top + bottom) / 2 - len(lines) * line / 2
        for i, text in enumerate(lines):
            draw.text((left, first + i * line + line / 2), text, font=font, fill=TEXT, anchor="lm")
    for r, row in enumerate(fitted):
        for c, cell in enumerate(row):
            left, top, right, bottom = layout.cell_box(r, c)
            if isinstance(cell, Image.Image):
                sheet.paste(cell, (left + (cell_w - cell.width) // 2, top + (cell_h - cell.height) // 2))
                continue
            draw.rectangle([left, top, right - 1, bottom - 1], fill=PLACEHOLDER)
            text = cell or "missing"
            font = fonts.font(text, style.font_size)
            lines = wrap_text(text, font, cell_w - 2 * pad)
            first = (top + bottom) / 2 - len(lines) * line / 2
            for i, ln in enumerate(lines):
                draw.text(
                    ((left + right) / 2, first + i * line + line / 2),
                    ln,
                    font=font,
                    fill=PLACEHOLDER_TEXT,
                    anchor="mm",
                )
    return Sheet(sheet, layout)


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as PNG bytes (deterministic: no timestamps)."""
    out = BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def sheet_title(sheet: Mapping[str, Any]) -> list[str]:
    """The title paragraphs of a manifest sheet: the prompt, the negative prompt, the seed."""
    title = [str(sheet.get("prompt", ""))]
    negative = str(sheet.get("negative_prompt") or "")
    if negative:
        title.append(f"negative: {negative}")
    title.append(f"seed {sheet.get('seed')}")
    return title


def _check_manifest(manifest: Mapping[str, Any], file: str) -> list[Problem]:
    problems: list[Problem] = []

    def bad(key: str, message: str) -> None:
        problems.append(Problem(key, message, file=file))

    if manifest.get("version") != MANIFEST_VERSION:
        bad(
            "version",
            f"this lorabuild reads grid manifest version {MANIFEST_VERSION} (got {manifest.get('version')!r}); re-run `lorabuild grid` to rewrite it",
        )
        return problems
    sheets = manifest.get("sheets")
    if not isinstance(sheets, list):
        bad("sheets", "must be a list of sheets; re-run `lorabuild grid` to rewrite the manifest")
        return problems
    for i, sheet in enumerate(sheets):
        key = f"sheets[{i}]"
        if not isinstance(sheet, dict):
            bad(key, "must be a table (JSON object)")
            continue
        sid = sheet.get("id")
        if not isinstance(sid, str) or not SHEET_ID.match(sid):
            bad(
                f"{key}.id",
                f"must be letters, digits, '_', '.' or '-' (it names the sheet's file; got {sid!r})",
            )
        rows, cols, cells = sheet.get("rows"), sheet.get("columns"), sheet.get("cells")
        if not isinstance(rows, list) or not isinstance(cols, list):
            bad(key, "needs lists 'rows' and 'columns'")
            continue
        if not isinstance(cells, list) or len(cells) != len(rows):
            bad(f"{key}.cells", f"must have one list per row ({len(rows)})")
            continue
        for r, row in enumerate(cells):
            if not isinstance(row, list) or len(row) != len(cols):
                bad(f"{key}.cells[{r}]", f"must have one entry per column ({len(cols)})")
            elif any(c is not None and not isinstance(c, str) for c in row):
                bad(f"{key}.cells[{r}]", "entries must be paths (relative to the build folder) or null")
    return problems


def _label(entry: Any, fallback: str) -> str:
    if isinstance(entry, dict) and entry.get("label") is not None:
        return str(entry["label"])
    return fallback


def _weight_label(weight: Any) -> str:
    return "no LoRA" if weight is None else f"{weight:g}" if isinstance(weight, float) else str(weight)


def _load_cell(build_dir: Path, rel: str | None) -> Cell:
    if rel is None:
        return None
    path = build_dir.joinpath(*PurePosixPath(rel).parts)
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        return f"missing: {PurePosixPath(rel).name}"
    except (OSError, UnidentifiedImageError):
        return f"unreadable: {PurePosixPath(rel).name}"


def sheet_path(build_dir: Path, sheet_id: str) -> Path:
    """Where the sheet ``sheet_id`` is written: ``grid/sheet_<id>.png``."""
    return build_dir / "grid" / f"sheet_{sheet_id}.png"


def compose_sheets(
    build_dir: Path,
    manifest: Mapping[str, Any],
    style: SheetStyle | None = None,
    fonts: FontBook | None = None,
) -> list[Path]:
    """Write one ``grid/sheet_<id>.png`` per sheet of a grid manifest.

    Each file is written atomically and only when its bytes change. A cell that is ``null``, or
    whose file is missing or unreadable, becomes a labelled grey placeholder.

    Args:
        build_dir: The build folder (``build/<name>``); cell paths are relative to it.
        manifest: The parsed ``grid/grid.json``.
        style: Sheet sizes, e.g. ``SheetStyle(max_cell=768)``.
        fonts: Where fonts come from (this machine's when ``None``).

    Returns:
        The sheet files, in manifest order.

    Raises:
        RecipeError: The manifest is malformed (every problem, keyed like ``sheets[0].cells[2]``).
    """
    file = (build_dir / "grid" / "grid.json").as_posix()
    problems = _check_manifest(manifest, file)
    if problems:
        raise RecipeError(problems)
    fonts = fonts or system_book()
    paths = []
    for sheet in manifest["sheets"]:
        rows, cols = sheet["rows"], sheet["columns"]
        cells = [[_load_cell(build_dir, rel) for rel in row] for row in sheet["cells"]]
        composed = compose_sheet(
            cells,
            [_label(r, f"epoch {r.get('epoch')}" if isinstance(r, dict) else str(r)) for r in rows],
            [_label(c, _weight_label(c.get("weight")) if isinstance(c, dict) else str(c)) for c in cols],
            sheet_title(sheet),
            style,
            fonts,
        )
        path = sheet_path(build_dir, sheet["id"])
        write_files(build_dir, {path.relative_to(build_dir).as_posix(): Artefact(png_bytes(composed.image))})
        paths.append(path)
    return paths
