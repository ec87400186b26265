"""`lorabuild prepare` with nothing changed: a listing of the folders, no check, no staging.

The prepare command records its inputs' fingerprint (:func:`lorabuild.probe.inputs.input_fingerprint`)
and the build's state in ``.lorabuild/stamps.json``; a second run with both unchanged repeats
the last run's warnings and summary without probing an image. Anything that could change what
prepare does or what it left behind makes it run for real.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lorabuild.build import state
from lorabuild.cli import app
from lorabuild.problems import RecipeError
from lorabuild.stages import check as checking
from tests.conftest import Project

FOLDER = Path("build/Test_v1/dataset/2_uiharu_kazari")
AN_HOUR_AGO = time.time_ns() - 3600 * 10**9


def age(*paths: Path, offset_s: int = 0) -> None:
    """Set the mtime of ``paths`` (and everything under folders) to an hour ago (+ ``offset_s``):
    files written just now are too recent for a fingerprint to vouch for."""
    when = AN_HOUR_AGO + offset_s * 10**9
    for path in paths:
        for item in [*(path.rglob("*") if path.is_dir() else []), path]:
            os.utime(item, ns=(when, when))


@pytest.fixture
def checks(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """How many times prepare checked the recipe (ran for real), one entry per check."""
    age(project.root / "data", project.root / "models")
    calls: list[str] = []
    real = checking.check_loaded

    def counted(loaded: object, root: Path) -> checking.Checked:
        calls.append("check")
        return real(loaded, root)  # type: ignore[arg-type]

    monkeypatch.setattr(checking, "check_loaded", counted)
    yield calls


def prepare(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["prepare", "recipe.toml", *args])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    return lines[-1], "\n".join(lines[:-1])


def test_a_second_prepare_checks_nothing_and_says_what_a_real_one_would(checks: list[str]) -> None:
    first, _ = prepare()
    assert first.endswith(
        "4 linked, 0 copied, 0 converted, 0 unchanged, 4 captions written, 0 removed; tags.csv create"
    )
    second, _ = prepare()
    assert checks == ["check"]  # the second run did not probe, check or stage anything
    assert second == (
        "staged build/Test_v1/dataset: 0 linked, 0 copied, 0 converted, 4 unchanged, 0 captions written, "
        "0 removed; tags.csv identical"
    )
    assert state.load_stamps(Path("build/Test_v1"))[state.PREPARED].status == "done"


def test_an_edited_caption_is_staged_again(project: Project, checks: list[str]) -> None:
    prepare()
    caption = project.root / "data/char/001.txt"
    caption.write_text("1girl, solo, school_uniform, black_background", encoding="utf-8")  # same size
    age(caption, offset_s=5)  # an older-looking edit: only its mtime tells
    line, _ = prepare()
    assert len(checks) == 2 and "1 captions written" in line
    assert (FOLDER / "001.txt").read_text("utf-8").endswith("school_uniform, black_background\n")
    prepare()
    assert len(checks) == 2  # up to date again


def test_added_and_removed_images_are_noticed(project: Project, checks: list[str]) -> None:
    prepare()
    (project.root / "data/char/003.png").unlink()
    line, _ = prepare()
    assert len(checks) == 2 and "3 unchanged" in line and "removed" in line
    assert not (FOLDER / "003.png").exists()


def test_a_changed_recipe_or_model_is_noticed(project: Project, checks: list[str]) -> None:
    prepare()
    prepare("--set", "dataset.subsets[0].repeats=3")
    assert len(checks) == 2
    assert Path("build/Test_v1/dataset/3_uiharu_kazari").is_dir()
    model = project.root / "models/base.safetensors"
    age(model, offset_s=9)
    prepare("--set", "dataset.subsets[0].repeats=3")
    assert len(checks) == 3


def test_a_damaged_stage_is_repaired(project: Project, checks: list[str]) -> None:
    prepare()
    (FOLDER / "002.txt").unlink()
    (FOLDER / "001.png").unlink()
    line, _ = prepare()
    assert len(checks) == 2 and "1 linked" in line and "1 captions written" in line
    (FOLDER / "000.txt").write_text("edited by hand\n", encoding="utf-8")  # in place: same inode
    prepare()
    assert len(checks) == 3
    assert (FOLDER / "000.txt").read_text("utf-8").startswith("uiharu_kazari, 1girl")
    Path("build/Test_v1/config.toml").unlink()  # a compiled file
    prepare()
    assert len(checks) == 4 and Path("build/Test_v1/config.toml").is_file()


def test_warnings_are_repeated_and_fail_strict(project: Project, checks: list[str]) -> None:
    (project.root / "data/char/002.txt").unlink()  # the trigger alone, with a warning
    age(project.root / "data")
    _, first = prepare()
    assert "have no .txt caption" in first
    _, second = prepare()
    assert len(checks) == 1 and second == first
    result = CliRunner().invoke(app, ["prepare", "recipe.toml", "--strict"])
    # The warning fails it, as it would have (cli.main makes the RecipeError exit status 2).
    assert isinstance(result.exception, RecipeError) and len(checks) == 2


def test_a_file_changed_moments_ago_is_not_trusted(project: Project, checks: list[str]) -> None:
    (project.root / "data/char/000.txt").write_text("1girl", encoding="utf-8")  # mtime: now
    prepare()
    prepare()
    assert len(checks) == 2  # its next edit might keep the same mtime: no fingerprint kept
