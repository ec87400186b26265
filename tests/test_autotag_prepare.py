"""``[captions.autotag]`` in ``lorabuild prepare`` / ``run``: tagged captions pass through the rules.

The fast tests stand kohya's tagger in with :class:`tests.test_autotag.FakeTagger`; the
``real_trainer`` test runs kohya's ``finetune/tag_images_by_wd14_tagger.py`` on the tiny ONNX
model of :mod:`tests.tiny_tagger` (run it with ``/work/kenv/bin/python -m pytest -m real_trainer``).
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest

from lorabuild import pipeline
from lorabuild.kohya import runner, tagging
from lorabuild.kohya import tagger as autotag
from lorabuild.kohya.tagger import AutotagError, preflight
from lorabuild.stages.check import check
from tests.conftest import SD_SCRIPTS, Project
from tests.test_autotag import FakeTagger, colour_images, kohya_tagger_stack, write_model_folder

AUTOTAG = '\n[captions.autotag]\nmodel_dir = "models/wd14"\n'


def staged_captions(project: Project) -> dict[str, str]:
    folder = project.build / "Test_v1" / "dataset" / "2_uiharu_kazari"
    return {p.stem: p.read_text(encoding="utf-8").strip() for p in sorted(folder.glob("*.txt"))}


def tags_rows(project: Project) -> dict[str, tuple[int, int]]:
    text = (project.build / "Test_v1" / "tags.csv").read_text(encoding="utf-8")
    return {row["tag"]: (int(row["before"]), int(row["after"])) for row in csv.DictReader(io.StringIO(text))}


def run_prepare(project: Project, *overrides: str) -> pipeline.RunReport:
    checked = check(project.recipe, list(overrides), project.build)
    return pipeline.run(checked, until="prepare")


@pytest.fixture
def fake(project: Project, monkeypatch: pytest.MonkeyPatch) -> FakeTagger:
    """A project with autotag on, two captions missing, and the fake tagger in kohya's place."""
    tagger = FakeTagger()
    monkeypatch.setattr(runner, "run", tagger)
    monkeypatch.setattr(autotag, "preflight", lambda *args: None)
    write_model_folder(project.root / "models" / "wd14")
    for name in ("001.txt", "003.txt"):
        (project.root / "data" / "char" / name).unlink()
    project.write_recipe((project.root / "recipe.toml").read_text(encoding="utf-8") + AUTOTAG)
    return tagger


def test_prepare_tags_images_without_captions(project: Project, fake: FakeTagger) -> None:
    before = project.tree_hash("data")
    report = run_prepare(project)
    assert [s.ran for s in report.stages] == [True, True]
    # The fake's tags (1girl, short_hair, then the character) after the rules: short_hair
    # removed, the trigger first. The captioned images keep their own ("missing").
    assert staged_captions(project) == {
        "000": "uiharu_kazari, 1girl, solo, smile, transparent_background",
        "001": "uiharu_kazari, 1girl, uiharu_kazari_(toaru)",
        "002": "uiharu_kazari, 1girl, smile",
        "003": "uiharu_kazari, 1girl, uiharu_kazari_(toaru)",
    }
    rows = tags_rows(project)
    assert rows["uiharu_kazari_(toaru)"] == (2, 2) and rows["short_hair"] == (3, 0)
    assert fake.images == [2, 2]  # two runs (general, characters), the two bare images each
    assert project.tree_hash("data") == before

    # Nothing changed: prepare is up to date and the tagger does not run.
    assert [s.ran for s in run_prepare(project).stages] == [False, False]
    assert len(fake.calls) == 2
    # A new threshold is a new prepare and a new tagging; the same images, tagged again.
    report = run_prepare(project, "captions.autotag.general_threshold=0.5")
    assert report.stages[1].ran and fake.images == [2, 2, 2, 2]
    # A new caption for 003: only it changes; no tagging (001's tags are cached by content).
    (project.root / "data" / "char" / "003.txt").write_text("1girl, sitting", encoding="utf-8")
    run_prepare(project, "captions.autotag.general_threshold=0.5")
    assert len(fake.calls) == 4
    assert staged_captions(project)["003"] == "uiharu_kazari, 1girl, sitting"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("all", "uiharu_kazari, 1girl, uiharu_kazari_(toaru)"),
        ("merge", "uiharu_kazari, 1girl, solo, smile, uiharu_kazari_(toaru), transparent_background"),
    ],
)
def test_prepare_all_and_merge(project: Project, fake: FakeTagger, mode: str, expected: str) -> None:
    run_prepare(project, f"captions.autotag.mode={mode}")
    captions = staged_captions(project)
    assert captions["000"] == expected
    assert captions["001"] == "uiharu_kazari, 1girl, uiharu_kazari_(toaru)"
    assert fake.images == [4, 4]


def test_prepare_command_and_tags_command(project: Project, fake: FakeTagger) -> None:
    from typer.testing import CliRunner

    from lorabuild.cli import app

    result = CliRunner().invoke(app, ["tags", str(project.recipe)])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.endswith(" uiharu_kazari_(toaru)"))
    assert line.split() == ["2", "2", "uiharu_kazari_(toaru)"]
    result = CliRunner().invoke(app, ["prepare", str(project.recipe)])
    assert result.exit_code == 0, result.output
    assert staged_captions(project)["001"] == "uiharu_kazari, 1girl, uiharu_kazari_(toaru)"
    assert len(fake.calls) == 2  # `tags` tagged them; prepare used the cache


def test_prepare_without_kohya_says_so_before_staging(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lorabuild.cli import main

    write_model_folder(project.root / "models" / "wd14")
    (project.root / "data" / "char" / "001.txt").unlink()
    project.write_recipe((project.root / "recipe.toml").read_text(encoding="utf-8") + AUTOTAG)
    monkeypatch.setenv("LORABUILD_SD_SCRIPTS", str(tmp_path / "no-kohya"))
    monkeypatch.setattr(sys, "argv", ["lorabuild", "prepare", str(project.recipe)])
    with pytest.raises(SystemExit) as caught:
        main()
    err = capsys.readouterr().err
    if caught.value.code == 2:  # kohya's stack is installed: the check (rule tagger_script) says it
        assert "recipe.toml: captions.autotag: kohya's WD14 tagger " in err
    else:  # a machine that only plans: prepare's preflight says it, as `lorabuild doctor` would
        assert caught.value.code == 1
        assert err.startswith("error: [captions.autotag]: kohya's WD14 tagger ")
    assert "no-kohya/finetune/tag_images_by_wd14_tagger.py is not there: check out kohya" in err
    assert "Traceback" not in err
    assert not (project.build / "Test_v1" / "dataset").exists()  # nothing staged half-tagged


def test_preflight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AutotagError, match=r"tag_images_by_wd14_tagger\.py is not there: check out kohya"):
        preflight(tmp_path)
    script = tmp_path / autotag.TAGGER_SCRIPT
    script.parent.mkdir()
    script.write_text("", encoding="utf-8")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    if real("torch") is not None and real("onnx") is not None:
        with pytest.raises(
            AutotagError, match=r"needs onnxruntime, not installed for .*: pip install onnxruntime$"
        ):
            preflight(tmp_path)
    else:
        with pytest.raises(AutotagError, match=r"pip install -e '\.\[train\]' .*onnxruntime$"):
            preflight(tmp_path)
    preflight(tmp_path, python="/other/python")  # another interpreter: only the script is checked


# --- kohya's tagger, for real ------------------------------------------------------------------


@pytest.mark.real_trainer
@pytest.mark.parametrize("mode", ["missing", "all", "merge"])
def test_real_tagger_in_prepare(project: Project, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """kohya's WD14 tagger on a generated dataset, through `lorabuild run --until prepare`."""
    kohya_tagger_stack()
    from tests.tiny_tagger import write_tagger

    assert (SD_SCRIPTS / autotag.TAGGER_SCRIPT).is_file()
    write_tagger(project.root / "models" / "wd14")
    images = colour_images(project.root / "data" / "colours")
    (images["red.png"].with_suffix(".txt")).write_text("smile, watermark, solo", encoding="utf-8")
    project.write_recipe(
        (project.root / "recipe.toml")
        .read_text(encoding="utf-8")
        .replace("data/char", "data/colours")
        .replace('trigger = "uiharu_kazari"', 'trigger = "kazari"')
        .replace('remove = ["flower"', 'remove = ["watermark", "flower"')
        + f'\n[captions.autotag]\nmodel_dir = "models/wd14"\nmode = "{mode}"\n'
    )
    before = project.tree_hash("data")
    lines: list[str] = []
    monkeypatch.setattr(tagging, "tag_captions", _quiet(tagging.tag_captions, lines))
    report = run_prepare(project)
    assert report.stages[1].ran
    folder = project.build / "Test_v1" / "dataset" / "2_kazari"
    staged = {p.stem: p.read_text(encoding="utf-8").strip() for p in folder.glob("*.txt")}
    # The tiny tagger: 1girl, short_hair (removed by the rules), watermark (removed), a colour
    # theme, the character uiharu_kazari (0.9 > 0.85). The trigger first, after the rules.
    tagged = {
        "red": "kazari, 1girl, red_theme, uiharu_kazari",
        "blue": "kazari, 1girl, blue_theme, uiharu_kazari",
        "green": "kazari, 1girl, uiharu_kazari",
    }
    own_red = {
        "missing": "kazari, smile, solo",
        "all": tagged["red"],
        "merge": "kazari, smile, solo, 1girl, red_theme, uiharu_kazari",
    }
    assert staged == {**tagged, "red": own_red[mode]}
    rows = tags_rows(project)
    assert rows["uiharu_kazari"] == (3 if mode != "missing" else 2,) * 2
    assert rows["short_hair"][1] == 0 and "watermark" not in {t for t, (_, a) in rows.items() if a}
    assert project.tree_hash("data") == before
    # A second run: up to date, no tagger.
    assert [s.ran for s in run_prepare(project).stages] == [False, False]


def _quiet(tag_captions, lines):  # type: ignore[no-untyped-def]
    def quiet(*args, **kw):  # type: ignore[no-untyped-def]
        kw["on_line"] = lines.append
        return tag_captions(*args, **kw)

    return quiet
