"""Photoreal face likeness (dlib's descriptor, PyPI dlib-bin + face-recognition-models) on real photos.

The training images are two photos of one person (``tests/data/faces/obama_1.jpg`` and
``obama_2.jpg``) and two pictures of shapes, which have no face. The grid (3 epochs x 3 weights x
2 seeds, a no-LoRA baseline of shapes per seed) is constructed cell by cell:

- epoch 1: shapes (no face: no likeness);
- epoch 2 x 0.6: both seeds a photo of another person (``biden_1.jpg``, ``biden_2.jpg``);
- epoch 2 x 0.8: seed 1 the other person, seed 2 the trained person;
- every other cell: a third photo of the trained person (``obama_3.jpg``), not in the training set,
  mirrored for seed 2 (so the seeds differ).

dlib puts the three photos of the trained person 0.39 to 0.40 apart and the other person 0.80 to
0.84 from them (``tests/data/faces/SOURCES.md``).
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from lorabuild.recipe.schema import PickSection
from lorabuild.score import collect as score_collect
from lorabuild.score import likeness as score_likeness
from lorabuild.score import score_build
from lorabuild.score.measures import OTHER_PERSON, GridCell, ModelScores, candidates, score_cells
from lorabuild.stages.report import write_report
from tests.conftest import Project, run_lorabuild
from tests.finished_build import Finished, finished_build
from tests.test_pick import lora_effect, picture
from tests.test_report import Page

pytest.importorskip("imagehash", reason="the score extra (PyPI imagehash) is not installed")

FACES = Path(__file__).parent / "data" / "faces"
WEIGHTS = (0.6, 0.8, 1.0)
SEEDS = (1, 2)
EPOCHS = (1, 2, 3)
CELL = (320, 320)

needs_dlib = pytest.mark.skipif(
    importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None,
    reason="photoreal likeness needs PyPI dlib-bin and face-recognition-models (pip install 'lorabuild[faces]', "
    "about 105 MB; CI installs only .[test])",
)


def photo(name: str, mirror: bool = False) -> Image.Image:
    """The photo ``name`` from tests/data/faces, centred on a grey cell of :data:`CELL`."""
    with Image.open(FACES / name) as opened:
        image = opened.convert("RGB")
    if mirror:
        image = ImageOps.mirror(image)
    cell = Image.new("RGB", CELL, (128, 128, 128))
    cell.paste(image, ((CELL[0] - image.width) // 2, (CELL[1] - image.height) // 2))
    return cell


def cell_picture(epoch: int, weight: float, seed: int, baseline: Image.Image) -> Image.Image:
    """The grid cell at ``epoch`` x ``weight`` x ``seed`` (see the module docstring)."""
    if epoch == 1:
        return lora_effect(baseline, epoch * 100 + int(weight * 10) + seed)
    if (epoch, weight) == (2, 0.6):
        return photo(f"biden_{seed}.jpg")
    if (epoch, weight, seed) == (2, 0.8, 1):
        return photo("biden_2.jpg")
    return photo("obama_3.jpg", mirror=seed == 2)


def faces_build(
    project: Project, *, training_faces: bool = True, overrides: tuple[str, ...] = ()
) -> Finished:
    """The finished build of the module docstring (``training_faces=False``: shapes only)."""
    data = project.root / "data" / "char"
    for i in range(4):
        if training_faces and i < 2:
            Image.open(FACES / f"obama_{i + 1}.jpg").convert("RGB").resize((512, 640)).save(
                data / f"{i:03d}.png"
            )
        else:
            picture(500 + i, (512, 512)).save(data / f"{i:03d}.png")
    # effect_max 64: a photo is as far from the baseline of shapes as two unrelated pictures.
    f = finished_build(
        project, grid=False, overrides=("evaluate.seeds=[1, 2]", "pick.effect_max=64", *overrides)
    )
    (f.build / "grid" / "cells").mkdir(parents=True)
    sheets = []
    for seed in SEEDS:
        baseline = picture(100 + seed, CELL)
        base_rel = f"grid/cells/base_s{seed}.png"
        baseline.save(f.build / base_rel)
        rows = []
        for epoch in EPOCHS:
            row = [base_rel]
            for weight in WEIGHTS:
                rel = f"grid/cells/e{epoch}_w{weight:g}_s{seed}.png"
                cell_picture(epoch, weight, seed, baseline).save(f.build / rel)
                row.append(rel)
            rows.append(row)
        sheets.append(
            {
                "id": f"p00_s{seed}",
                "prompt": "uiharu_kazari, portrait photo",
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


@needs_dlib
def test_cells_of_another_person_are_flagged_exactly(project: Project) -> None:
    f = faces_build(project)
    listed = score_build(f.plan)
    by_cell = {(s.cell.epoch, s.cell.weight, s.cell.seed): s for s in listed.scores}
    assert len(by_cell) == 18
    # Exactly the cells showing the other person carry the flag.
    flagged = {k for k, s in by_cell.items() if OTHER_PERSON in s.flags}
    assert flagged == {(2, 0.6, 1), (2, 0.6, 2), (2, 0.8, 1)}
    # No face, no likeness; the trained person's third photo is well within dlib's 0.6.
    for (epoch, weight, seed), s in by_cell.items():
        face = s.models.face
        if epoch == 1:
            assert face is None
        elif (epoch, weight, seed) in flagged:
            assert face is not None and face > 0.7
        else:
            assert face is not None and face < 0.5
            assert s.models.face_image in {"data/char/000.png", "data/char/001.png"}
    # The shapes among the training images have no face and are simply not references.
    assert not any("no face in the training images" in n for n in listed.notes)


@needs_dlib
def test_most_faces_of_another_person_rule_the_pair_out_some_warn(project: Project) -> None:
    f = faces_build(project)
    listed = score_build(f.plan)
    ruled = {(c.epoch, c.weight): c.ruled_out for c in listed.ruled_out}
    assert set(ruled) == {(2, 0.6)}
    assert ruled[(2, 0.6)][0].startswith(
        "shows another person: 2 of 2 face(s) further than 0.6 from every training face (dlib; 0."
    )
    warned = next(c for c in (*listed.picks, *listed.rest) if (c.epoch, c.weight) == (2, 0.8))
    assert warned.warnings[0].startswith("shows another person: 1 of 2 face(s) further than 0.6")
    # Ranked: no warning first, then the closer faces (epochs 2 and 3 show the same photos: the
    # later epoch first), epoch 1 (no face) after them, the warned pair last.
    order = [(c.epoch, c.weight) for c in (*listed.picks, *listed.rest)]
    assert order[-1] == (2, 0.8)
    assert order.index((3, 0.8)) < order.index((1, 0.8))
    from lorabuild.score import reason

    assert "from the nearest training face on average (dlib)" in reason(listed.picks[0], listed)


@needs_dlib
def test_face_distance_is_a_recipe_key(project: Project) -> None:
    # Stricter than any two photos of one person: every face is someone else.
    f = faces_build(project, overrides=("pick.face_distance=0.2",))
    listed = score_build(f.plan)
    ruled = {(c.epoch, c.weight) for c in listed.ruled_out}
    assert ruled == {(e, w) for e in (2, 3) for w in WEIGHTS}


@needs_dlib
def test_training_images_without_a_face_are_said(project: Project) -> None:
    f = faces_build(project, training_faces=False)
    listed = score_build(f.plan)
    assert "likeness of photoreal faces not scored: dlib found no face in the training images" in listed.notes
    assert all(s.models.face is None and OTHER_PERSON not in s.flags for s in listed.scores)


@needs_dlib
def test_faces_are_cached_with_the_hashes(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    f = faces_build(project)
    described: list[Path] = []
    real = score_likeness.face_features
    monkeypatch.setattr(score_collect, "face_features", lambda p: described.append(p) or real(p))
    first = score_build(f.plan)
    assert len(described) == 18 + 4  # the LoRA cells and the training images, not the baselines
    described.clear()
    second = score_build(f.plan)
    assert described == []
    assert [s.models.face for s in second.scores] == [s.models.face for s in first.scores]


@needs_dlib
def test_pick_and_report_show_the_faces(project: Project) -> None:
    f = faces_build(project)
    result = run_lorabuild(
        "pick",
        "recipe.toml",
        "--set",
        "evaluate.seeds=[1, 2]",
        "--set",
        "pick.effect_max=64",
        cwd=project.root,
    )
    assert result.returncode == 0, result.stderr
    assert "from the nearest training face on average (dlib)" in result.stdout
    assert "  epoch 2 × 0.6: shows another person: 2 of 2 face(s)" in result.stdout
    html = write_report(f.plan, f.build).read_text(encoding="utf-8")
    assert html.count("grid-cell flag-other-person") == 3
    assert any("shows another person: 2 of 2" in r for r in Page(html).text("ruled-out-row"))
    assert "identity 0." in html


def test_missing_face_packages_are_said_not_crashed_on(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = faces_build(project)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        score_likeness.importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("dlib", "face_recognition_models") else real(name, *a),
    )
    listed = score_build(f.plan)
    assert (
        "likeness of photoreal faces not scored: PyPI dlib-bin and face-recognition-models are not "
        "installed (pip install 'lorabuild[faces]')"
    ) in listed.notes
    assert all(s.models.face is None for s in listed.scores)
    assert {(c.epoch, c.weight) for c in listed.ruled_out} == set()


def test_face_distances_measure_the_nearest_training_face() -> None:
    found = score_likeness.face_distances(
        {"a": [0.0, 0.0], "b": [3.0, 4.0], "c": None},
        [("x.png", [0.0, 1.0]), ("none.png", None), ("y.png", [3.0, 4.5])],
    )
    assert found == {
        "a": score_likeness.FaceMatch(1.0, "x.png"),
        "b": score_likeness.FaceMatch(0.5, "y.png"),
    }
    assert score_likeness.face_distances({"a": [0.0]}, [("x.png", None)]) == {}


def test_most_other_faces_rule_out_some_warn_without_dlib() -> None:
    """The rule itself, on constructed distances (runs where dlib is not installed too)."""
    faces = {1: (0.7, 0.7, 0.3), 2: (0.7, 0.3, None), 3: (0.3, 0.3, 0.3)}
    rng = random.Random(7)
    cells, hashes, models = [], {}, {}
    for epoch, distances in faces.items():
        for seed, face in enumerate(distances, 1):
            cell = GridCell(f"s{seed}", "a photo", seed, epoch, 1.0, f"e{epoch}_s{seed}.png", None)
            cells.append(cell)
            hashes[cell.file] = rng.getrandbits(64)
            models[cell.file] = ModelScores(
                face=face, face_image=None if face is None else "data/char/000.png"
            )
    pick = PickSection()
    scored = score_cells(cells, hashes, [], pick, models)
    assert [s.cell.file for s in scored if OTHER_PERSON in s.flags] == ["e1_s1.png", "e1_s2.png", "e2_s1.png"]
    judged = {c.epoch: c for c in candidates(scored, pick)}
    assert judged[1].ruled_out == (
        "shows another person: 2 of 3 face(s) further than 0.6 from every training face (dlib; 0.57 on average)",
    )
    assert judged[2].ruled_out == () and judged[2].warnings == (
        "shows another person: 1 of 2 face(s) further than 0.6 from every training face (dlib; 0.50 on average)",
    )
    assert judged[3].ruled_out == () == judged[3].warnings and judged[3].face == pytest.approx(0.3)


@needs_dlib
def test_a_models_package_without_its_files_is_said(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    f = faces_build(project)
    monkeypatch.setattr(score_likeness, "face_models_dir", lambda: tmp_path / "models")
    listed = score_build(f.plan)
    assert (
        f"likeness of photoreal faces not scored: {tmp_path / 'models'} lacks shape_predictor_5_face_landmarks.dat, "
        "dlib_face_recognition_resnet_model_v1.dat (pip install --force-reinstall face-recognition-models)"
    ) in listed.notes
    assert all(s.models.face is None for s in listed.scores)
