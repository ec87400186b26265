"""Comparison sheets: layout, cells, labels (CJK included), placeholders, the manifest."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from lorabuild.problems import RecipeError
from lorabuild.render import fonts as fontmod
from lorabuild.render.fonts import UNMAPPED, FontBook, FontWarning, install_hint, sort_fonts
from lorabuild.render.sheets import (
    BACKGROUND,
    PLACEHOLDER,
    SheetStyle,
    compose_sheet,
    compose_sheets,
    sheet_path,
    wrap_text,
)

LATIN = FontBook([])  # Pillow's own font: the same on every machine
RED, GREEN, BLUE, GREY = (220, 20, 20), (20, 200, 20), (20, 20, 220), (120, 120, 120)


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.new("RGB", size, colour)


def ink(img: Image.Image, box: tuple[int, int, int, int]) -> int:
    """How many pixels of ``box`` are not background."""
    counts = img.crop(box).getcolors(1 << 24) or []
    return sum(n for n, c in counts if c != BACKGROUND)


def test_sheet_size_follows_rows_columns_cells_and_label_heights() -> None:
    style = SheetStyle(margin=10, gutter=6, min_width=100)
    cells = [[solid(RED), solid(GREEN), solid(BLUE)], [solid(BLUE), solid(RED), solid(GREEN)]]
    sheet = compose_sheet(
        cells, ["epoch 1", "epoch 2"], ["none", "0.6", "1"], ["a prompt", "seed 1"], style, LATIN
    )
    lay = sheet.layout
    assert (lay.rows, lay.cols, lay.cell_w, lay.cell_h) == (2, 3, 64, 64)
    assert lay.title_height == 2 * style.line_height  # two short paragraphs, one line each
    assert lay.header_height == style.line_height
    assert sheet.image.size == (lay.width, lay.height)
    assert lay.width == 2 * 10 + lay.label_width + 6 + 3 * 64 + 2 * 6
    assert lay.height == 2 * 10 + lay.title_height + 6 + lay.header_height + 6 + 2 * 64 + 6
    # a column label wider than its cell wraps, and the header grows by a line
    wide = compose_sheet(cells, ["epoch 1", "epoch 2"], ["no LoRA", "0.6", "1"], (), style, LATIN)
    assert wide.layout.header_height == 2 * style.line_height
    assert wide.image.height == lay.height - lay.title_height + style.line_height


def test_cells_land_at_their_offsets() -> None:
    colours = [[RED, GREEN], [BLUE, GREY]]
    sheet = compose_sheet(
        [[solid(c) for c in row] for row in colours], ["a", "b"], ["x", "y"], (), fonts=LATIN
    )
    for r, row in enumerate(colours):
        for c, colour in enumerate(row):
            left, top, right, bottom = sheet.layout.cell_box(r, c)
            crop = sheet.image.crop((left, top, right, bottom))
            assert crop.getcolors() == [(64 * 64, colour)], (r, c)
            # the gutter right of / below a cell stays background
            assert sheet.image.getpixel((right, top)) == BACKGROUND
            assert sheet.image.getpixel((left, bottom)) == BACKGROUND


def test_labels_are_drawn_in_their_areas() -> None:
    cells = [[solid(RED), solid(GREEN)], [solid(BLUE), solid(GREY)]]
    sheet = compose_sheet(
        cells, ["epoch 1", "epoch 2"], ["no LoRA", "0.8"], ["kazari, 1girl", "seed 7"], fonts=LATIN
    )
    lay, img = sheet.layout, sheet.image
    assert ink(img, lay.title_box()) > 50
    for c in range(2):
        assert ink(img, lay.header_box(c)) > 10
    for r in range(2):
        assert ink(img, lay.row_label_box(r)) > 10
    # an empty label draws nothing
    blank = compose_sheet([[solid(RED)]], [""], [""], (), fonts=LATIN)
    assert ink(blank.image, blank.layout.header_box(0)) == 0


def test_long_titles_wrap_to_the_sheet_width() -> None:
    prompt = "kazari, " * 40
    sheet = compose_sheet([[solid(RED)]], ["e1"], ["w"], [prompt, "seed 1"], SheetStyle(min_width=300), LATIN)
    lines = sheet.layout.title_height // SheetStyle().line_height
    assert lines >= 4
    assert sheet.layout.width == 2 * 16 + 300  # the title did not widen the sheet


def test_wrap_breaks_at_spaces_and_inside_cjk() -> None:
    font = LATIN.font("abc", 20)
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    lines = wrap_text("one two three four five six", font, 80)
    assert len(lines) > 1 and " ".join(lines) == "one two three four five six"
    assert all(measure.textlength(ln, font=font) <= 80 for ln in lines)
    long_word = wrap_text("x" * 50, font, 60)
    assert "".join(long_word) == "x" * 50 and len(long_word) > 1
    assert wrap_text("", font, 60) == [""]


def test_missing_cells_become_placeholders() -> None:
    cells: list[list[Image.Image | str | None]] = [[solid(RED), None], ["unreadable: x.png", solid(GREEN)]]
    sheet = compose_sheet(cells, ["e1", "e2"], ["a", "b"], (), fonts=LATIN)
    for r, c in ((0, 1), (1, 0)):
        left, top, right, bottom = sheet.layout.cell_box(r, c)
        assert sheet.image.getpixel((left + 1, top + 1)) == PLACEHOLDER
        assert sheet.image.getpixel((right - 2, bottom - 2)) == PLACEHOLDER
        colours = {col for _, col in sheet.image.crop((left, top, right, bottom)).getcolors(1 << 24) or []}
        assert len(colours) > 2  # the placeholder's label is drawn on it


def test_all_cells_missing_uses_the_placeholder_size() -> None:
    style = SheetStyle(placeholder=(100, 80))
    sheet = compose_sheet([[None, None]], ["e1"], ["a", "b"], (), style, LATIN)
    assert (sheet.layout.cell_w, sheet.layout.cell_h) == (100, 80)


def test_mixed_cell_sizes_scale_down_to_max_cell_and_centre() -> None:
    style = SheetStyle(max_cell=256)
    cells = [[solid(RED, (1024, 1024)), solid(GREEN, (512, 768))], [solid(BLUE, (128, 128)), None]]
    sheet = compose_sheet(cells, ["e1", "e2"], ["a", "b"], (), style, LATIN)
    lay = sheet.layout
    assert (lay.cell_w, lay.cell_h) == (256, 256)
    left, top, _, _ = lay.cell_box(0, 1)  # 512x768 -> 171x256, centred
    assert sheet.image.getpixel((left + 128, top + 128)) == GREEN
    assert sheet.image.getpixel((left + 20, top + 128)) == BACKGROUND
    assert sheet.image.getpixel((left + (256 - 171) // 2 + 2, top + 2)) == GREEN
    left, top, _, _ = lay.cell_box(1, 0)  # small cells are not scaled up
    assert sheet.image.getpixel((left + 128, top + 128)) == BLUE
    assert sheet.image.getpixel((left + 60, top + 60)) == BACKGROUND


def test_rgba_and_greyscale_cells_are_flattened() -> None:
    cells = [[Image.new("RGBA", (32, 32), (0, 0, 0, 0)), Image.new("L", (32, 32), 90)]]
    sheet = compose_sheet(cells, ["e"], ["a", "b"], (), fonts=LATIN)
    left, top, _, _ = sheet.layout.cell_box(0, 0)
    assert sheet.image.getpixel((left + 5, top + 5)) == BACKGROUND
    left, top, _, _ = sheet.layout.cell_box(0, 1)
    assert sheet.image.getpixel((left + 5, top + 5)) == (90, 90, 90)


def test_labels_must_match_the_cells() -> None:
    with pytest.raises(ValueError, match="2 row"):
        compose_sheet([[solid(RED)]], ["a", "b"], ["x"], (), fonts=LATIN)


# --- fonts ---------------------------------------------------------------------------------------

CJK_TEXT = "初春飾利 うい"


def _render(text: str, font: fontmod.Font) -> bytes:
    img = Image.new("L", (400, 60), 0)
    ImageDraw.Draw(img).text((5, 5), text, font=font, fill=255)
    return img.tobytes()


def test_cjk_labels_draw_real_glyphs_not_tofu() -> None:
    book = FontBook()
    path = book.font_path(CJK_TEXT)
    if path is None:
        pytest.skip("no font with CJK glyphs on this machine (Debian/Ubuntu: apt install fonts-noto-cjk)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FontWarning)
        font = book.font(CJK_TEXT, 24)
    for ch in "初春飾利うい":
        assert _render(ch, font) != _render(UNMAPPED, font), f"{ch} is drawn as the missing-glyph box"
    tofu = _render(UNMAPPED * len(CJK_TEXT), font)
    assert _render(CJK_TEXT, font) != tofu
    # and on a sheet: the row label with the trigger word has ink
    sheet = compose_sheet(
        [[solid(RED)]], ["初春飾利"], ["うい 0.8"], ["初春飾利, 1girl", "seed 1"], fonts=book
    )
    assert ink(sheet.image, sheet.layout.row_label_box(0)) > 50


def test_no_font_with_the_glyphs_falls_back_and_warns_once(tmp_path: Path) -> None:
    fake = tmp_path / "NotoSansCJK-Regular.ttc"
    fake.write_bytes(b"not a font")
    book = FontBook([fake, tmp_path / "gone.ttf"])
    assert book.font_path(CJK_TEXT) is None
    with pytest.warns(FontWarning, match="fonts-noto-cjk") as record:
        font = book.font(CJK_TEXT, 20)
    assert "初春飾利" in str(record[0].message)
    assert font is not None  # Pillow's own font, boxes and all
    with warnings.catch_warnings():
        warnings.simplefilter("error", FontWarning)
        book.font("うい", 20)  # warned once already
        compose_sheet([[solid(RED)]], ["初春"], ["x"], (), fonts=book)
        book.font("epoch 1", 20)  # Latin text is covered by Pillow's font: no warning


def test_font_order_prefers_cjk_regular_faces_and_skips_symbol_fonts() -> None:
    paths = [
        Path(p)
        for p in ("z/Webdings.ttf", "z/DejaVuSans-Bold.ttf", "z/arial.ttf", "z/msgothic.ttc", "z/Zed.ttf")
    ]
    ordered = [p.name for p in sort_fonts(paths)]
    assert ordered[:2] == ["msgothic.ttc", "arial.ttf"]
    assert "Webdings.ttf" not in ordered
    assert ordered.index("Zed.ttf") < ordered.index("DejaVuSans-Bold.ttf")  # styled faces last
    assert "fonts-noto-cjk" in install_hint("初")
    assert "fonts-noto-cjk" not in install_hint("ß")


# --- the manifest --------------------------------------------------------------------------------


def write_grid(build: Path, missing: tuple[int, int] | None = None) -> dict[str, object]:
    cols = [None, 0.6, 1.0]
    cells: list[list[str | None]] = []
    for e in (1, 2):
        row: list[str | None] = []
        for j in range(len(cols)):
            rel = f"grid/cells/e{e}_w{j}.png"
            (build / rel).parent.mkdir(parents=True, exist_ok=True)
            solid((60 * e, 70 * j, 100), (48, 48)).save(build / rel)
            row.append(None if (e, j) == missing else rel)
        cells.append(row)
    manifest = {
        "version": 1,
        "name": "Kazari_v1",
        "sheets": [
            {
                "id": "p00_s1234",
                "prompt": "初春飾利, 1girl",
                "negative_prompt": "lowres",
                "seed": 1234,
                "rows": [{"epoch": e, "label": f"epoch {e}"} for e in (1, 2)],
                "columns": [{"weight": w, "label": "no LoRA" if w is None else str(w)} for w in cols],
                "cells": cells,
            }
        ],
    }
    (build / "grid" / "grid.json").write_text(json.dumps(manifest), encoding="utf-8")
    return manifest


def test_compose_sheets_writes_one_png_per_sheet_once(tmp_path: Path) -> None:
    build = tmp_path / "build" / "Kazari_v1"
    manifest = write_grid(build, missing=(2, 1))
    (build / "grid" / "cells" / "e1_w2.png").unlink()  # listed but gone from disk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FontWarning)  # machines without a CJK font
        paths = compose_sheets(build, manifest, fonts=FontBook())
    assert paths == [sheet_path(build, "p00_s1234")] == [build / "grid" / "sheet_p00_s1234.png"]
    with Image.open(paths[0]) as img:
        sheet = img.convert("RGB")
    # find the cells by colour: epoch 1 / no LoRA is present, epoch 2 / 0.6 is a placeholder
    colours = {c for _, c in sheet.getcolors(1 << 24) or []}
    assert (60, 0, 100) in colours and (120, 140, 100) in colours
    assert (120, 70, 100) not in colours  # the null cell
    assert (60, 140, 100) not in colours  # the file that is gone
    assert PLACEHOLDER in colours
    os.utime(paths[0], ns=(1_000_000_000, 1_000_000_000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FontWarning)
        compose_sheets(build, manifest, fonts=FontBook())
    assert paths[0].stat().st_mtime_ns == 1_000_000_000  # identical bytes: not rewritten


def test_a_bad_manifest_names_file_and_key(tmp_path: Path) -> None:
    build = tmp_path / "b"
    manifest = write_grid(build)
    sheets = manifest["sheets"]
    assert isinstance(sheets, list)
    sheets[0]["cells"][1] = ["x.png"]
    sheets[0]["id"] = "../evil"
    with pytest.raises(RecipeError) as exc:
        compose_sheets(build, manifest, fonts=LATIN)
    found = {(p.key, p.file) for p in exc.value.problems}
    grid_json = (build / "grid" / "grid.json").as_posix()
    assert ("sheets[0].id", grid_json) in found
    assert ("sheets[0].cells[1]", grid_json) in found
    with pytest.raises(RecipeError) as exc:
        compose_sheets(build, {"version": 2, "sheets": []}, fonts=LATIN)
    assert "re-run `lorabuild grid`" in exc.value.problems[0].message
