"""``[images.remove_background]``: masks from a local segmentation model, cut-outs staged, sources untouched.

The fast tests run :data:`tests.tiny_segmenter.FAKE_SEGMENT` in place of ``lorabuild/kohya/segment.py``
(the light venv has no onnxruntime); the ``real_trainer`` tests run the real script with
onnxruntime on the tiny ONNX models of :mod:`tests.tiny_segmenter`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from lorabuild import pipeline
from lorabuild.build import cutout
from lorabuild.probe.onnxfile import OnnxFileError, read_signature
from lorabuild.probe.segmentation import PRESETS, fit, probe
from lorabuild.problems import RecipeError
from lorabuild.recipe.schema import RemoveBackground
from lorabuild.stages.check import check
from tests.conftest import RECIPE, Project
from tests.tiny_segmenter import (
    FAKE_SEGMENT,
    SUBJECT,
    busy_dataset,
    runs,
    signature_model,
    u2net_signature,
    write_segmenter,
)

CUTOUT = """
[images]
background = "#00ff00"

[images.remove_background]
model = "models/u2net.onnx"
threshold = 0.5
"""

STAGED = Path("build/Test_v1/dataset/2_uiharu_kazari")


@pytest.fixture
def cut_project(project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Project:
    """The project's images replaced by red subjects on busy backgrounds, a u2net-shaped model
    file, and the fake segmenter in the script's place."""
    for path in (project.root / "data" / "char").iterdir():
        path.unlink()
    busy_dataset(project.root / "data" / "char")
    u2net_signature(project.root / "models" / "u2net.onnx")
    project.write_recipe(
        RECIPE.replace('remove = ["flower", "hair_ornament", "short_hair", "brown_hair"]\n', "") + CUTOUT
    )
    fake = tmp_path / "fake_segment.py"
    fake.write_text(FAKE_SEGMENT, encoding="utf-8")
    monkeypatch.setattr(cutout, "SEGMENT_SCRIPT", fake)
    monkeypatch.setattr(cutout, "SEGMENT_PACKAGES", ())
    return project


def prepare(project: Project, *overrides: str) -> pipeline.RunReport:
    return pipeline.run(check(project.recipe, list(overrides), project.build), until="prepare")


def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """Run the command line in this process (the fake segmenter stays patched): status, stdout, stderr."""
    from lorabuild import cli as command_line

    monkeypatch.setattr(sys, "argv", ["lorabuild", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        command_line.main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def model_runs(project: Project) -> list[int]:
    return runs(project.root / "models" / "u2net.onnx")


def test_cutouts_staged_flattened_sources_untouched(cut_project: Project) -> None:
    before = cut_project.tree_hash("data")
    report = prepare(cut_project)
    assert report.stages[1].ran and "4 cut out" in report.stages[1].summary
    staged = sorted(p.name for p in (cut_project.root / STAGED).glob("*.png"))
    assert staged == ["000.png", "001.png", "002.png", "003.png"]  # the JPEGs too: cut-outs are PNG
    for name in staged:
        with Image.open(cut_project.root / STAGED / name) as image:
            assert image.mode == "RGB"
            assert image.getpixel((1, 1)) == (0, 255, 0)  # the busy corner is the background now
            w, h = image.size
            red = image.getpixel((w // 2, h // 2))
            assert isinstance(red, tuple) and abs(red[0] - SUBJECT[0]) < 30 and red[1] < 60
    assert cut_project.tree_hash("data") == before
    assert model_runs(cut_project) == [4]

    # Nothing changed: prepare is up to date, the model does not run.
    assert [s.ran for s in prepare(cut_project).stages] == [False, False]
    assert model_runs(cut_project) == [4]
    # A new threshold re-renders from the cached masks: the model does not run again.
    report = prepare(cut_project, "images.remove_background.threshold=0.8")
    assert report.stages[1].ran and "4 cut out" in report.stages[1].summary
    assert model_runs(cut_project) == [4]
    # A new model runs the model again, on every image, and only that step's files change.
    captions = {p.name: p.stat().st_mtime_ns for p in (cut_project.root / STAGED).glob("*.txt")}
    model = cut_project.root / "models" / "u2net.onnx"
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a replaced model
    report = prepare(cut_project, "images.remove_background.threshold=0.8")
    assert report.stages[1].ran and model_runs(cut_project) == [4, 4]
    assert {p.name: p.stat().st_mtime_ns for p in (cut_project.root / STAGED).glob("*.txt")} == captions
    assert cut_project.tree_hash("data") == before


def test_second_prepare_command_runs_nothing(
    cut_project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(monkeypatch, capsys, "prepare", "recipe.toml")
    assert code == 0, err
    assert "4 cut out" in out
    assert model_runs(cut_project) == [4]
    code, out, err = cli(monkeypatch, capsys, "prepare", "recipe.toml")
    assert code == 0 and "4 unchanged" in out
    assert model_runs(cut_project) == [4]


def test_crop_to_the_subject(cut_project: Project) -> None:
    prepare(cut_project, "images.remove_background.crop=true", "images.remove_background.crop_margin=0")
    with Image.open(cut_project.root / STAGED / "000.png") as image:
        assert image.size[0] < 96 and image.size[1] < 128  # the subject's box, not the whole image
        assert image.getpixel((image.size[0] // 2, image.size[1] // 2)) == SUBJECT


def test_keep_alpha_without_flattening(cut_project: Project) -> None:
    prepare(cut_project, "images.flatten_transparency=false")
    with Image.open(cut_project.root / STAGED / "000.png") as image:
        assert image.mode == "RGBA"
        assert image.getpixel((1, 1))[3] == 0 and image.getpixel((48, 64))[3] == 255


def test_original_kept_when_the_mask_covers_nearly_everything(cut_project: Project) -> None:
    report = prepare(cut_project, "images.remove_background.max_coverage=0.1")
    assert report.stages[1].ran and "cut out" not in report.stages[1].summary
    with Image.open(cut_project.root / STAGED / "000.png") as image:
        assert image.getpixel((1, 1)) != (0, 255, 0)  # the original, busy background and all


def test_kept_images_are_named(
    cut_project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(
        monkeypatch, capsys, "prepare", "recipe.toml", "--set", "images.remove_background.min_coverage=0.9"
    )
    assert code == 0, err
    assert "data/char/000.png: warning: not cut out (dataset.subsets[0]): the subject covers" in err
    assert "under min_coverage (0.9): the original is staged" in err


def test_a_subset_turns_it_off(cut_project: Project) -> None:
    text = cut_project.recipe.read_text(encoding="utf-8").replace(
        "repeats = 2\n", "repeats = 2\nremove_background = false\n", 1
    )
    cut_project.write_recipe(text)
    report = prepare(cut_project)
    assert "cut out" not in report.stages[1].summary and model_runs(cut_project) == []


def test_check_reports_a_missing_model(cut_project: Project) -> None:
    (cut_project.root / "models" / "u2net.onnx").unlink()
    checked = check(cut_project.recipe, [], cut_project.build)
    (problem,) = [p for p in checked.problems if p.key.startswith("images.remove_background")]
    assert problem.key == "images.remove_background.model"
    assert (
        "models/u2net.onnx: not found: name a local .onnx segmentation model (lorabuild never downloads)"
        in problem.message
    )


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        (
            [("img", [1, 448, 448, 3])],
            [("out", [1, 1, 448, 448])],
            "takes img: float32[1, 448, 448, 3]; a segmentation model takes float32[1, 3, H, W]",
        ),
        ([("a", [1, 3, 320, 320]), ("b", [1])], [("out", [1, 1, 320, 320])], "has 2 inputs (a, b)"),
        (
            [("img", [1, 3, 320, 320])],
            [("out", [1, 5000])],
            "gives out: float32[1, 5000]; a segmentation model gives float[1, 1, H, W]",
        ),
        (
            [("img", [1, 3, 512, 512])],
            [("out", [1, 1, 512, 512])],
            "set model_kind to one of u2net, isnet-anime",
        ),
    ],
)
def test_check_reports_a_model_that_does_not_fit(
    cut_project: Project,
    inputs: list[tuple[str, list[int]]],
    outputs: list[tuple[str, list[int]]],
    message: str,
) -> None:
    signature_model(cut_project.root / "models" / "seg.onnx", inputs, outputs)
    text = cut_project.recipe.read_text(encoding="utf-8").replace("models/u2net.onnx", "models/seg.onnx")
    cut_project.write_recipe(text)
    checked = check(cut_project.recipe, [], cut_project.build)
    (problem,) = [p for p in checked.problems if p.key == "images.remove_background.model"]
    assert message in problem.message


def test_check_reports_a_file_that_is_not_onnx(cut_project: Project) -> None:
    (cut_project.root / "models" / "u2net.onnx").write_bytes(b"\x89PNG\r\n\x1a\n not a model")
    checked = check(cut_project.recipe, [], cut_project.build)
    (problem,) = [p for p in checked.problems if p.key == "images.remove_background.model"]
    assert "is not an ONNX model" in problem.message


def test_check_reports_missing_onnxruntime(cut_project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from lorabuild.probe import facts

    found = facts.installed_packages
    monkeypatch.setattr(
        facts,
        "installed_packages",
        lambda: {**found(), "accelerate": True, "torch": True, "onnxruntime": False},
    )
    checked = check(cut_project.recipe, [], cut_project.build)
    messages = [p.message for p in checked.problems if p.key == "images.remove_background"]
    assert any("onnxruntime" in m and "pip install" in m and "onnxruntime" in m for m in messages)


def test_prepare_stops_before_staging_without_onnxruntime(
    cut_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cutout, "SEGMENT_PACKAGES", ("surely_not_installed_pkg",))
    with pytest.raises(cutout.CutoutError, match="surely_not_installed_pkg is not installed"):
        prepare(cut_project)
    assert not (cut_project.root / STAGED).exists()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("threshold = 1.5", "images.remove_background.threshold: must be less than 1.0 (got 1.5)"),
        (
            "min_coverage = 0.5\nmax_coverage = 0.2",
            "images.remove_background: min_coverage (0.5) must be below max_coverage (0.2)",
        ),
        ("treshold = 0.5", "images.remove_background.treshold: unknown key"),
    ],
)
def test_schema_errors(project: Project, table: str, message: str) -> None:
    project.write_recipe(RECIPE + CUTOUT.replace("threshold = 0.5", table))
    with pytest.raises(RecipeError) as raised:
        check(project.recipe, [], project.build)
    assert message in str(raised.value)


# --- the ONNX reader and the kinds ------------------------------------------------------------


def test_read_signature_skips_weights(tmp_path: Path) -> None:
    path = signature_model(
        tmp_path / "m.onnx", [("input.1", [1, 3, 320, "h"])], [("d0", [1, 1, 320, 320])], weights=["w1", "w2"]
    )
    signature = read_signature(path)
    assert [t.name for t in signature.inputs] == ["input.1"]
    assert signature.inputs[0].shape == (1, 3, 320, "h")
    assert signature.outputs[0].describe() == "float32[1, 1, 320, 320]"


def test_read_signature_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.onnx").write_bytes(b"hello world, this is text")
    with pytest.raises(OnnxFileError):
        read_signature(tmp_path / "x.onnx")


@pytest.mark.parametrize(
    ("name", "side", "kind"),
    [
        ("u2net.onnx", 320, "u2net"),
        ("u2netp.onnx", 320, "u2net"),
        ("isnet-anime.onnx", 1024, "isnet-anime"),
        ("isnet-general-use.onnx", 1024, "isnet-general-use"),
        ("BiRefNet-general-epoch_244.onnx", 1024, "birefnet"),
        ("my_model.onnx", 320, "u2net"),
    ],
)
def test_kind_from_name_and_size(tmp_path: Path, name: str, side: int, kind: str) -> None:
    path = signature_model(tmp_path / name, [("img", [1, 3, side, side])], [("out", [1, 1, side, side])])
    fitted = probe(RemoveBackground(model=path))
    assert not isinstance(fitted, str)
    assert (
        fitted.kind == kind
        and fitted.preset == PRESETS[kind]
        and (fitted.height, fitted.width) == (side, side)
    )


def test_dynamic_input_uses_the_kinds_side(tmp_path: Path) -> None:
    path = signature_model(
        tmp_path / "m.onnx", [("x", ["batch", 3, "h", "w"])], [("y", ["batch", 1, "h", "w"])]
    )
    fitted = fit(RemoveBackground(model=path, model_kind="isnet-anime"), read_signature(path))
    assert not isinstance(fitted, str) and (fitted.height, fitted.width) == (1024, 1024)


def test_crop_box_margin_inside_the_image() -> None:
    assert cutout.crop_box((10, 20, 30, 60), (100, 100), 0.1) == (6, 16, 34, 64)
    assert cutout.crop_box((0, 0, 100, 50), (100, 50), 0.5) == (0, 0, 100, 50)


# --- the real script, with onnxruntime -----------------------------------------------------------

needs_onnxruntime = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="needs onnx and onnxruntime (kohya's Python stack)",
)


@pytest.mark.real_trainer
@needs_onnxruntime
@pytest.mark.parametrize(("kind", "side"), [("u2net", 320), ("isnet-anime", 1024), ("birefnet", 1024)])
def test_real_segmenter_cuts_out(project: Project, kind: str, side: int) -> None:
    for path in (project.root / "data" / "char").iterdir():
        path.unlink()
    busy_dataset(project.root / "data" / "char")
    name = {"u2net": "u2net.onnx", "isnet-anime": "isnet-anime.onnx", "birefnet": "BiRefNet.onnx"}[kind]
    write_segmenter(project.root / "models" / name, side, kind)
    project.write_recipe(RECIPE + CUTOUT.replace("u2net.onnx", name))
    before = project.tree_hash("data")
    report = prepare(project)
    assert "4 cut out" in report.stages[1].summary
    for staged in sorted((project.root / STAGED).glob("*.png")):
        with Image.open(staged) as image:
            assert image.getpixel((1, 1)) == (0, 255, 0)
            red = image.getpixel((image.width // 2, image.height // 2))
            assert isinstance(red, tuple) and red[0] > 180 and red[1] < 80
    assert project.tree_hash("data") == before
    assert (project.build / "Test_v1" / "cutout" / "segment.log").is_file()
    assert sys.executable  # the script ran with this Python


def test_tags_shows_the_cut_outs(
    cut_project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(monkeypatch, capsys, "tags", "recipe.toml")
    assert code == 0, err
    assert "data/char -> dataset/2_uiharu_kazari: 4 images, 4 tags, 4 cut out of their background" in out
    code, out, err = cli(
        monkeypatch, capsys, "tags", "recipe.toml", "--set", "images.remove_background.min_coverage=0.9"
    )
    assert "4 cut out" not in out and "not cut out (dataset.subsets[0])" in err
    assert model_runs(cut_project) == [4]  # the second run used the cached masks


def test_report_shows_before_and_after(cut_project: Project) -> None:
    from lorabuild.stages.report import collect, render_report

    checked = check(cut_project.recipe, [], cut_project.build)
    pipeline.run(checked, until="prepare")
    assert checked.plan is not None
    data = collect(checked.plan, checked.plan.build_dir)
    (row,) = data.cutouts
    assert row["folder"] == "dataset/2_uiharu_kazari" and row["count"] == 4 and len(row["pairs"]) == 4
    html = render_report(data)
    assert "Background removed" in html and 'alt="000.png before"' in html and 'alt="000.png after"' in html
