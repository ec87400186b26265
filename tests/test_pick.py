"""The grid's scores, lorabuild pick's shortlist, install.epoch = "suggested" and the report's browsable grid.

Each test builds a finished build (tests.finished_build) whose training images are real pictures
(shapes in colours, a picture per seed) and whose grid is constructed cell by cell, as kohya would
have rendered it: the no-LoRA baseline per prompt and seed, and LoRA cells that are the baseline
with a few shapes added, except for those made to trip a score:

- epoch 3 x 1.0, seed 1: the training image ``data/char/002.png`` shrunk to the cell's size (memorisation);
- epoch 2 x 0.8: both seeds one and the same picture, seed 1's (collapse);
- epoch 1 x 0.6: both seeds exactly their baseline (a weight that does nothing).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from lorabuild.problems import RecipeError, format_problem
from lorabuild.render.meter import Meter
from lorabuild.score import collect as score_collect
from lorabuild.score import hashes as score_hashes
from lorabuild.score import score_build
from lorabuild.score.likeness import likeness
from lorabuild.score.measures import COLLAPSE, COPY, NO_EFFECT
from lorabuild.stages.install import install, plan_install
from lorabuild.stages.pick import pick as pick_epochs
from lorabuild.stages.report import write_report
from tests.browser import CHROMIUM, browser, serve
from tests.conftest import Project, run_lorabuild
from tests.finished_build import Finished, finished_build
from tests.test_report import Page

pytest.importorskip("imagehash", reason="the score extra (PyPI imagehash) is not installed")

WEIGHTS = (0.6, 0.8, 1.0)
SEEDS = (1, 2)
EPOCHS = (1, 2, 3)
CELL = (96, 96)
SIZES = [(512, 512), (512, 768), (768, 512), (512, 512)]

EXPECTED = {
    (3, 1.0, 1): {COPY},
    (2, 0.8, 1): {COLLAPSE},
    (2, 0.8, 2): {COLLAPSE},
    (1, 0.6, 1): {NO_EFFECT},
    (1, 0.6, 2): {NO_EFFECT},
}


def picture(seed: int, size: tuple[int, int] = CELL) -> Image.Image:
    """A real picture: a dozen shapes in colours of their own on a background (one per seed)."""
    rng = random.Random(seed)
    w, h = size
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = (x0, y0, x0 + rng.randrange(w // 8, w // 2), y0 + rng.randrange(h // 8, h // 2))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)  # type: ignore[arg-type]
    return image


def lora_effect(image: Image.Image, seed: int) -> Image.Image:
    """What a working LoRA does here: the baseline with three shapes added."""
    rng = random.Random(seed)
    out = image.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    for _ in range(3):
        x0, y0 = rng.randrange(w * 2 // 3), rng.randrange(h * 2 // 3)
        draw.ellipse((x0, y0, x0 + w // 3, y0 + h // 3), fill=tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    return out


def scored_build(project: Project, *, overrides: tuple[str, ...] = (), likeness: bool = False) -> Finished:
    """The finished build with real training pictures and the constructed grid (see the module docstring).

    Likeness is off unless asked for: animeface, where installed, would only slow the other tests.
    """
    for i, size in enumerate(SIZES):
        picture(500 + i, size).save(project.root / "data" / "char" / f"{i:03d}.png")
    f = finished_build(
        project,
        grid=False,
        overrides=("evaluate.seeds=[1, 2]", f"pick.likeness={str(likeness).lower()}", *overrides),
    )
    cells = f.build / "grid" / "cells"
    cells.mkdir(parents=True)
    training = Image.open(project.root / "data" / "char" / "002.png").convert("RGB")
    collapsed = lora_effect(picture(100 + SEEDS[0]), 1)  # seed 1's picture, whatever the seed
    sheets = []
    for seed in SEEDS:
        baseline = picture(100 + seed)
        base_rel = f"grid/cells/base_s{seed}.png"
        baseline.save(f.build / base_rel)
        rows = []
        for epoch in EPOCHS:
            row: list[str | None] = [base_rel]
            for weight in WEIGHTS:
                if (epoch, weight, seed) == (3, 1.0, 1):
                    image = training.resize(CELL)
                elif (epoch, weight) == (2, 0.8):
                    image = collapsed
                elif (epoch, weight) == (1, 0.6):
                    image = baseline
                else:
                    image = lora_effect(baseline, hash((epoch, weight, seed)) % 10_000)
                rel = f"grid/cells/e{epoch}_w{weight:g}_s{seed}.png"
                image.save(f.build / rel)
                row.append(rel)
            rows.append(row)
        sheets.append(
            {
                "id": f"p00_s{seed}",
                "prompt": "uiharu_kazari, smile",
                "negative_prompt": "",
                "seed": seed,
                "rows": [{"epoch": e, "label": f"epoch {e}"} for e in EPOCHS],
                "columns": [{"weight": None, "label": "no LoRA"}]
                + [{"weight": w, "label": f"{w:g}"} for w in WEIGHTS],
                "cells": rows,
            }
        )
    manifest = {"version": 1, "name": f.plan.name, "sheets": sheets}
    (f.build / "grid" / "grid.json").write_text(json.dumps(manifest), encoding="utf-8")
    return f


def validation_logs(f: Finished, losses: dict[int, float]) -> None:
    """kohya-like TensorBoard logs with a validation loss per epoch."""
    from tests.test_losslog import event, simple_value, write_events  # lazy: a test module's helpers

    evs = [event(e, [simple_value("loss/validation/epoch_average", v)]) for e, v in losses.items()]
    write_events(f.build / "logs" / "Test_v1_20250101" / "network_train" / "events.out.tfevents.1.h.1.0", evs)


def test_each_score_flags_exactly_the_cells_made_to_trip_it(project: Project) -> None:
    f = scored_build(project)
    listed = score_build(f.plan)
    flags = {(s.cell.epoch, s.cell.weight, s.cell.seed): set(s.flags) for s in listed.scores}
    assert len(flags) == len(EPOCHS) * len(WEIGHTS) * len(SEEDS)
    assert {k: v for k, v in flags.items() if v} == EXPECTED
    copy = next(s for s in listed.scores if COPY in s.flags)
    assert copy.nearest is not None and copy.nearest.name == "data/char/002.png"
    assert copy.nearest_distance is not None and copy.nearest_distance <= f.plan.pick.copy_distance


def test_shortlist_ranks_what_no_score_rules_out_and_says_why(project: Project) -> None:
    f = scored_build(project)
    listed = score_build(f.plan)
    ruled = {(c.epoch, c.weight): c.ruled_out for c in listed.ruled_out}
    assert set(ruled) == {(1, 0.6), (2, 0.8), (3, 1.0)}
    assert ruled[(3, 1.0)][0].startswith("copies training image data/char/002.png (")
    assert ruled[(2, 0.8)][0].startswith(
        'collapses: the 2 seeds of "uiharu_kazari, smile" differ by 0.0 bits'
    )
    assert ruled[(1, 0.6)][0].startswith("does nothing: 0.0 bits from the no-LoRA baseline on average")
    # No validation split: the latest epoch first, the weight nearest 0.8; epoch 3 is warned about
    # (it copies at weight 1), so it comes after the others.
    assert [(c.epoch, c.weight) for c in listed.picks] == [(2, 0.6), (2, 1.0), (1, 0.8)]
    assert [(c.epoch, c.weight) for c in listed.rest] == [(1, 1.0), (3, 0.8), (3, 0.6)]
    warned = next(c for c in listed.rest if c.epoch == 3)
    assert warned.warnings == ("epoch 3 copies training image data/char/002.png at weight 1",)
    assert any("set dataset.validation_split" in n for n in listed.notes)


def test_validation_loss_ranks_the_epochs_when_logged(project: Project) -> None:
    f = scored_build(project)
    validation_logs(f, {1: 0.1, 2: 0.2, 3: 0.3})
    listed = score_build(f.plan)
    assert [(c.epoch, c.weight) for c in listed.picks] == [(1, 0.8), (1, 1.0), (2, 0.6)]
    from lorabuild.score import reason

    assert reason(listed.picks[0], listed).startswith("validation loss 0.1, the lowest of 3 epoch(s)")


def test_thresholds_are_recipe_keys(project: Project) -> None:
    f = scored_build(project, overrides=("pick.effect_max=2", "pick.shortlist=1"))
    listed = score_build(f.plan)
    assert len(listed.picks) == 1
    # Every LoRA now "takes over": a warning on each, which rules nothing out.
    assert listed.picks[0].warnings[0].startswith("takes over the picture:")
    assert {(c.epoch, c.weight) for c in listed.ruled_out} == {(1, 0.6), (2, 0.8), (3, 1.0)}


def test_second_run_decodes_no_image(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    f = scored_build(project)
    decoded: list[Path] = []
    real = score_hashes.phash_image
    monkeypatch.setattr(score_hashes, "phash_image", lambda p: decoded.append(p) or real(p))
    first = score_build(f.plan)
    assert len(decoded) == 2 + 18 + 4  # two baselines, 18 LoRA cells, 4 training images
    decoded.clear()
    second = score_build(f.plan)
    assert decoded == []
    assert [(c.epoch, c.weight) for c in second.picks] == [(c.epoch, c.weight) for c in first.picks]


def test_progress_counts_every_picture_hashed(project: Project) -> None:
    """`lorabuild pick` and `report` draw a progress line from these reports (render/meter.py)."""
    f = scored_build(project)
    told: list[tuple[str, int, int]] = []
    score_build(f.plan, progress=lambda step, done, total: told.append((step, done, total)))
    pictures = 2 + 18 + 4  # two baselines, 18 LoRA cells, 4 training images
    assert told == [("hashes", n, pictures) for n in range(1, pictures + 1)]


def test_pick_on_a_terminal_shows_the_scoring_progress(project: Project) -> None:
    f = scored_build(project)
    stream = io.StringIO()
    meter = Meter(stream, enabled=True)
    pick_epochs(f.plan, progress=meter)
    meter.close()
    assert "hashes  24/24  100%" in stream.getvalue()


def test_missing_score_extra_is_said_not_crashed_on(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = scored_build(project)
    validation_logs(f, {1: 0.3, 2: 0.1, 3: 0.2})
    monkeypatch.setattr(score_collect, "hashing_missing", lambda: "imagehash is not installed (test)")
    listed = score_build(f.plan)
    assert "imagehash is not installed (test): only the validation loss ranks the epochs" in listed.notes
    assert listed.scores == ()
    assert (listed.picks[0].epoch, listed.picks[0].weight) == (2, 0.8)
    html = write_report(f.plan, f.build).read_text(encoding="utf-8")
    assert "imagehash is not installed (test)" in html


def test_likeness_is_optional_and_its_absence_said(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    f = scored_build(project, likeness=True)
    monkeypatch.setattr(score_collect, "anime_missing", lambda: "likeness of anime faces not scored: (test)")
    listed = score_build(f.plan)
    assert "likeness of anime faces not scored: (test)" in listed.notes
    assert any("photoreal faces" in n for n in listed.notes)
    # The measure itself: distance of each cell's face colours from the training faces' mean.
    values = likeness({"a": [255.0] * 6, "b": [0.0] * 6, "c": None}, [[0.0] * 6, None])
    assert values == {"a": 1.0, "b": 0.0}
    assert likeness({"a": [1.0] * 6}, [None]) == {}


def test_cli_pick_prints_the_shortlist_and_the_ruled_out(project: Project) -> None:
    scored_build(project)
    result = run_lorabuild("pick", "recipe.toml", cwd=project.root)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == "shortlist (a suggestion: look at the grid before you choose):"
    assert out[1].startswith("  1. epoch 2 × 0.6: the latest epoch no score rules out")
    assert out[2] == "     lorabuild install recipe.toml --epoch 2 --weight 0.6"
    assert "ruled out:" in out
    assert any(line.startswith("  epoch 3 × 1: copies training image data/char/002.png") for line in out)


def test_install_suggested_installs_the_first_of_the_shortlist(project: Project) -> None:
    f = scored_build(project, overrides=('install.epoch="suggested"',))
    lora = project.root / "webui" / "models" / "Lora"
    lora.mkdir(parents=True)
    planned = plan_install(f.plan, f.checked.loaded.recipe, display="recipe.toml", webui=lora)
    assert (planned.epoch, planned.weight) == (2, 0.6)
    assert planned.notes[0].startswith(
        'note: install.epoch = "suggested": epoch 2 × 0.6, the first of lorabuild pick\'s shortlist:'
    )
    assert planned.preview == f.build / "grid/cells/e2_w0.6_s1.png"
    install(planned)
    assert json.loads((lora / "Test_v1.json").read_text(encoding="utf-8"))["preferred weight"] == 0.6
    # --epoch still wins.
    assert plan_install(f.plan, f.checked.loaded.recipe, epoch=3, webui=lora).epoch == 3


def test_install_suggested_with_an_empty_shortlist_says_why(project: Project) -> None:
    f = scored_build(project, overrides=('install.epoch="suggested"', "pick.effect_min=64"))
    lora = project.root / "webui" / "models" / "Lora"
    lora.mkdir(parents=True)
    with pytest.raises(RecipeError) as exc:
        plan_install(f.plan, f.checked.loaded.recipe, display="recipe.toml", webui=lora)
    message = format_problem(exc.value.problems[0])
    assert message.startswith(
        'recipe.toml: install.epoch: "suggested": the shortlist is empty: every epoch x weight was ruled out '
        "(epoch 1 × 0.6: "
    )
    assert message.endswith(
        "choose an epoch with --epoch N (lorabuild pick recipe.toml says why each was ruled out)"
    )


def test_report_has_the_shortlist_and_the_browsable_grid(project: Project) -> None:
    f = scored_build(project)
    html = write_report(f.plan, f.build).read_text(encoding="utf-8")
    page = Page(html)
    picks = page.text("pick-row")
    assert len(picks) == 3 and picks[0].startswith("epoch 2 × 0.6: the latest epoch no score rules out")
    assert "lorabuild install recipe.toml --epoch 2 --weight 0.6" in picks[0]
    assert len(page.text("ruled-out-row")) == 3
    cells = [i for i in page.images if i.get("class") == "cell"]
    assert len(cells) == 2 * 3 * 4  # two seeds' sheets, 3 epochs x (baseline + 3 weights)
    assert html.count("grid-cell flag-copy") == 1
    assert html.count("grid-cell flag-collapse") == 2
    assert html.count("grid-cell flag-no-effect") == 2
    assert 'data-command="lorabuild install recipe.toml --epoch 3 --weight 1"' in html
    assert page.tags.count("script") == 1  # the grid's data sits in the page's one script
    assert page.h2 == ["Recipe", "Dataset", "Tags", "Loss", "Grid", "Saved files", "Install"]


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH: `apt-get install chromium` (Debian) to run"
)
def test_browsing_the_grid_in_chromium_with_clicks_and_keys(project: Project, tmp_path: Path) -> None:
    f = scored_build(project)
    write_report(f.plan, f.build)
    with serve(f.build) as base, browser(tmp_path / "profile") as b:
        b.goto(f"{base}/report.html")
        b.send(
            "Browser.grantPermissions",
            origin=base,
            permissions=["clipboardReadWrite", "clipboardSanitizedWrite"],
        )
        viewer = "document.getElementById('viewer')"
        assert b.js(f"{viewer}.hidden") is True
        b.click('table.browse[data-sheet="p00_s1"] td[data-row="1"][data-col="2"]')  # epoch 2, 0.8
        assert b.js(f"{viewer}.hidden") is False
        assert b.js(f"{viewer}.getAttribute('data-cell')") == "epoch 2, 0.8"
        assert b.js("document.getElementById('viewer-flags').textContent") == "collapse"
        # The large cell and the nearest training image, both decoded.
        assert b.js("document.getElementById('viewer-cell').naturalWidth") == CELL[0]
        near = b.js("document.getElementById('viewer-near-caption').textContent")
        assert near.startswith("nearest training image: data/char/")
        b.press("ArrowRight")
        assert b.js(f"{viewer}.getAttribute('data-cell')") == "epoch 2, 1"
        b.press("ArrowDown")
        assert b.js(f"{viewer}.getAttribute('data-cell')") == "epoch 3, 1"
        assert b.js("document.getElementById('viewer-flags').textContent") == "copy"
        assert b.js("document.getElementById('viewer-near-caption').textContent").startswith(
            "nearest training image: data/char/002.png (0 of 64 bits apart)"
        )
        b.press("ArrowDown")  # the last epoch: stays
        assert b.js(f"{viewer}.getAttribute('data-cell')") == "epoch 3, 1"
        b.press("ArrowUp")
        b.press("ArrowUp")
        b.press("ArrowLeft")
        assert b.js(f"{viewer}.getAttribute('data-cell')") == "epoch 1, 0.8"
        b.click("#viewer-copy")
        copied = b.js("navigator.clipboard.readText()", await_promise=True)
        assert copied == "lorabuild install recipe.toml --epoch 1 --weight 0.8"
        b.press("Escape")
        assert b.js(f"{viewer}.hidden") is True
