"""build/<name>/report.html: contents, escaping, hash cache, and what headless Chromium shows."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import types
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from lorabuild.build.saved import HashCache
from lorabuild.stages.report import collect, write_report
from tests.conftest import Project, run_lorabuild
from tests.finished_build import NASTY_PROMPT, cell_colour, finished_build


class Page(HTMLParser):
    """What a page shows: headings, text by class, images, rows and attributes of <body>."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.h2: list[str] = []
        self.title = ""
        self.texts: dict[str, list[str]] = {}
        self.images: list[dict[str, str]] = []
        self.rows: dict[str, int] = {}
        self.body: dict[str, str] = {}
        self.tags: list[str] = []
        self._open: list[tuple[str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "img":
            self.images.append(a)
            return
        if tag == "body":
            self.body = a
        if tag == "tr":
            for c in a.get("class", "").split():
                self.rows[c] = self.rows.get(c, 0) + 1
        if tag not in ("meta", "link", "br", "input"):
            self._open.append((tag, a.get("class", "")))
            if a.get("class"):
                self.texts.setdefault(a["class"], []).append("")

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self._open:
            return
        tag, _ = self._open[-1]
        if tag == "h2":
            self.h2.append(data.strip())
        if tag == "title":
            self.title += data
        for _, cls in self._open:
            if cls:
                self.texts[cls][-1] += data

    def text(self, cls: str) -> list[str]:
        return [" ".join(t.split()) for t in self.texts.get(cls, [])]


SECTIONS = ["Recipe", "Dataset", "Tags", "Loss", "Grid", "Saved files", "Install"]


@pytest.fixture
def no_losslog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make lorabuild.render.losslog unimportable (a None entry in sys.modules raises ImportError)."""
    monkeypatch.setitem(sys.modules, "lorabuild.render.losslog", None)


def fake_losslog(monkeypatch: pytest.MonkeyPatch, *, plot: bool, suggest: int | None) -> None:
    """Install a stand-in lorabuild.render.losslog with the agreed functions."""
    module = types.ModuleType("lorabuild.render.losslog")

    def read_scalars(logs_dir: Path) -> dict[str, list[tuple[int, float]]]:
        return {
            "loss/epoch": [(1, 0.2), (2, 0.15), (3, 0.17)],
            "loss/validation": [(1, 0.3), (2, 0.1), (3, 0.2)],
        }

    def plot_loss(scalars: object, out_png: Path, title: str = "") -> Path | None:
        if not plot:
            return None
        Image.new("RGB", (300, 120), (250, 250, 250)).save(out_png)
        return out_png

    module.read_scalars = read_scalars  # type: ignore[attr-defined]
    module.plot_loss = plot_loss  # type: ignore[attr-defined]
    module.suggest_epoch = lambda scalars: suggest  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lorabuild.render.losslog", module)


def test_report_shows_every_section_and_escapes_user_text(project: Project, no_losslog: None) -> None:
    f = finished_build(project)
    path = write_report(f.plan, f.build)
    assert path == f.build / "report.html"
    html = path.read_text(encoding="utf-8")
    page = Page(html)
    assert page.h2 == SECTIONS
    # The prompt reaches the page as text: no element made of it, the characters shown as typed.
    assert "<script>document.title" not in html
    assert page.tags.count("script") == 1  # only the page's own
    assert "<b>bold</b>" not in html
    assert NASTY_PROMPT in page.text("prompt")[0]
    assert "初春飾利" in html  # UTF-8, not entities
    assert "lowres, <bad>" in " ".join(page.text("prompt"))
    summary = " ".join(page.text("summary"))
    for expected in ("Test_v1", "uiharu_kazari", "sd15", "dim 8, alpha 4", "AdamW, lr 0.0001", "12 in all"):
        assert expected in summary
    # Tags: removed ones are marked, the trigger added by the rules too.
    assert page.rows["removed"] == 4  # flower, hair_ornament, short_hair, brown_hair
    assert page.rows["added"] == 1
    # No external resources: every src is a data: URI and nothing is linked in.
    assert all(img["src"].startswith("data:image/") for img in page.images)
    assert not re.search(r"<(link|script)[^>]+(href|src)=|url\(", html)


def test_saved_files_table_has_sizes_and_hashes(project: Project, no_losslog: None) -> None:
    f = finished_build(project)
    page = Page(write_report(f.plan, f.build).read_text(encoding="utf-8"))
    assert page.rows["file"] == 4  # three numbered epochs and kohya's unnumbered last file
    files = page.text("file")
    epoch2 = f.build / "output" / "Test_v1-000002.safetensors"
    row = next(t for t in files if "Test_v1-000002.safetensors" in t)
    data = epoch2.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert hashlib.sha256(data).hexdigest() in row
    assert hashlib.sha256(data[8 + header :]).hexdigest()[:12] in row  # the webui's LoRA hash
    assert f"{len(data)} B" in row
    assert any("kohya's name for the last epoch" in t for t in files)


def test_second_report_reads_no_model_file_and_writes_nothing(project: Project, no_losslog: None) -> None:
    f = finished_build(project)
    first = write_report(f.plan, f.build)
    stamp = first.stat().st_mtime_ns
    data = collect(f.plan, f.build)
    assert data.hashed == 0  # every hash came from the cache
    second = write_report(f.plan, f.build)
    assert second.stat().st_mtime_ns == stamp  # same bytes: not rewritten
    # A changed file is hashed again.
    epoch1 = f.build / "output" / "Test_v1-000001.safetensors"
    epoch1.write_bytes(epoch1.read_bytes() + b"\0" * 8)
    cache = HashCache(f.build)
    assert (
        cache.of("output/Test_v1-000001.safetensors").sha256
        == hashlib.sha256(epoch1.read_bytes()).hexdigest()
    )
    assert cache.hashed == 1


def test_sections_say_what_to_run_when_stages_are_missing(project: Project, no_losslog: None) -> None:
    f = finished_build(project, epochs=(), grid=False)
    (f.build / "tags.csv").unlink()
    html = write_report(f.plan, f.build).read_text(encoding="utf-8")
    notes = Page(html).text("note")
    assert "no tags.csv yet: run lorabuild prepare" in notes
    assert "no grid yet: run lorabuild grid" in notes
    assert "no LoRA file saved yet: run lorabuild train" in notes
    assert "nothing to install yet: run lorabuild train" in notes
    assert any(n.startswith("no loss plot") for n in notes)


def test_sheet_is_embedded_and_cells_stand_in_for_a_missing_sheet(project: Project, no_losslog: None) -> None:
    f = finished_build(project, sheet=True)
    page = Page(write_report(f.plan, f.build).read_text(encoding="utf-8"))
    sheet = [i for i in page.images if i.get("class") == "sheet-image"]
    assert len(sheet) == 1
    assert (
        base64.b64decode(sheet[0]["src"].split(",", 1)[1])
        == (f.build / "grid/sheet_p00_s1234.png").read_bytes()
    )
    assert "no pictures for this prompt yet: run lorabuild grid" in page.text("note")  # the second sheet
    (f.build / "grid/sheet_p00_s1234.png").unlink()
    page = Page(write_report(f.plan, f.build).read_text(encoding="utf-8"))
    assert len([i for i in page.images if i.get("class") == "cell"]) == 12  # 3 epochs x 4 columns


def test_loss_plot_and_suggested_epoch(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    f = finished_build(project)
    (f.build / "logs").mkdir()
    fake_losslog(monkeypatch, plot=True, suggest=2)
    html = write_report(f.plan, f.build).read_text(encoding="utf-8")
    page = Page(html)
    assert [i for i in page.images if i.get("class") == "loss"]
    assert "Lowest validation loss: epoch 2." in page.text("suggested-epoch")[0]
    assert page.rows["suggested"] == 1
    assert "lorabuild install recipe.toml --epoch 2" in html


def test_loss_svg_when_no_png(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    f = finished_build(project)
    (f.build / "logs").mkdir()
    fake_losslog(monkeypatch, plot=False, suggest=None)
    html = write_report(f.plan, f.build).read_text(encoding="utf-8")
    assert html.count("<polyline") == 2
    assert "lorabuild install recipe.toml --epoch 3" in html  # no suggestion: the last epoch


def test_cli_report(project: Project) -> None:
    finished_build(project)
    result = run_lorabuild("report", "recipe.toml", cwd=project.root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "wrote build/Test_v1/report.html"


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)


def chromium(*args: str) -> str:
    assert CHROMIUM
    result = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=90,
        env={**os.environ, "HOME": os.environ.get("HOME", "/tmp")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH: `apt-get install chromium` (Debian) to run"
)
def test_chromium_shows_the_report(project: Project, no_losslog: None, tmp_path: Path) -> None:
    f = finished_build(project, sheet=False)
    (f.build / "logs").mkdir()
    path = write_report(f.plan, f.build).resolve()
    page = Page(chromium("--dump-dom", path.as_uri()))
    assert page.h2 == SECTIONS
    assert page.title.startswith("Test_v1")  # the prompt's script did not run
    # Every picture decoded (the page's own script records naturalWidth after load).
    assert page.images and all(int(i["data-natural-width"]) > 0 for i in page.images)
    assert page.body["data-images-decoded"] == f"{len(page.images)}/{len(page.images)}"
    assert NASTY_PROMPT in page.text("prompt")[0]
    assert page.rows["file"] == 4
    # And on screen: a cell's colour is where the page put it.
    shot = tmp_path / "shot.png"
    chromium("--hide-scrollbars", "--window-size=1000,3600", f"--screenshot={shot}", path.as_uri())
    with Image.open(shot) as image:
        colours = {c for _, c in image.convert("RGB").getcolors(1 << 22) or []}
    # epoch 3, weight 0.8 (tests.finished_build.cell_colour), give or take the thumbnail's JPEG
    assert any(max(abs(x - y) for x, y in zip(c, cell_colour(3, 2), strict=True)) <= 4 for c in colours)


def test_real_losslog_plot_and_suggestion(project: Project) -> None:
    """With lorabuild.render.losslog itself: kohya-like event files give a plot and the suggested epoch."""
    losslog = pytest.importorskip("lorabuild.render.losslog")
    from tests.test_losslog import event, simple_value, write_events

    f = finished_build(project)
    evs = [event(s, [simple_value(losslog.STEP_LOSS, 0.2 - s / 100)]) for s in range(1, 13)]
    evs += [event(e, [simple_value(losslog.VALIDATION_EPOCH, v)]) for e, v in ((1, 0.3), (2, 0.1), (3, 0.2))]
    write_events(
        f.build / "logs" / "Test_v1_20250101" / "network_train" / "events.out.tfevents.1.host.1.0", evs
    )
    page = Page(write_report(f.plan, f.build).read_text(encoding="utf-8"))
    loss = [i for i in page.images if i.get("class") == "loss"]
    assert loss and base64.b64decode(loss[0]["src"].split(",", 1)[1]) == (f.build / "loss.png").read_bytes()
    assert "Lowest validation loss: epoch 2." in page.text("suggested-epoch")[0]
