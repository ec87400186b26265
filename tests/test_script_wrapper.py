"""The LORABUILD_SCRIPT_WRAPPER machine setting: the process seam runs kohya scripts through a wrapper.

The wrapper's path goes right before the kohya script's, in the trainer's command
(``runner.resolve_argv``) and in every command ``scriptrun.run_script`` runs (gen_img, the
tagger); the generated train.sh/train.ps1 never get it. No kohya needed: the "kohya scripts"
here are tiny Python files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lorabuild.kohya.launch import SD_SCRIPTS_PREFIX, LaunchSpec
from lorabuild.kohya.runner import resolve_argv, wrap_script
from lorabuild.kohya.scriptrun import run_script
from lorabuild.settings import script_wrapper
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.compile import compile_build
from tests.conftest import Project

WRAPPER = Path("/w/tinyflux.py")


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LORABUILD_SCRIPT_WRAPPER", raising=False)
    assert script_wrapper() is None
    monkeypatch.setenv("LORABUILD_SCRIPT_WRAPPER", "")
    assert script_wrapper() is None
    monkeypatch.setenv("LORABUILD_SCRIPT_WRAPPER", str(WRAPPER))
    assert script_wrapper() == WRAPPER


def test_the_wrapper_goes_right_before_the_kohya_script(tmp_path: Path) -> None:
    kohya = tmp_path / "sd-scripts"
    launch = ["/py", "-m", "accelerate.commands.launch", "--num_processes", "1"]
    script = f"{SD_SCRIPTS_PREFIX}flux_train_network.py"
    assert wrap_script([*launch, script, "--x"], kohya, WRAPPER) == [*launch, str(WRAPPER), script, "--x"]
    # A real path inside the checkout (gen_img, the tagger in a sub-folder); the first one only.
    gen_img = str(kohya / "gen_img.py")
    assert wrap_script(["/py", gen_img, "--a", gen_img], kohya, WRAPPER) == [
        "/py",
        str(WRAPPER),
        gen_img,
        "--a",
        gen_img,
    ]
    tagger = str(kohya / "finetune" / "tag_images_by_wd14_tagger.py")
    assert wrap_script(["/py", tagger], kohya, WRAPPER) == ["/py", str(WRAPPER), tagger]


def test_a_script_linked_into_the_checkout_is_still_kohyas(tmp_path: Path) -> None:
    """A checkout whose files are links to another copy (how a worktree borrows kohya's files)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "gen_img.py").write_text("", encoding="utf-8")
    kohya = tmp_path / "sd-scripts"
    kohya.mkdir()
    (kohya / "gen_img.py").symlink_to(elsewhere / "gen_img.py")
    gen_img = str(kohya / "gen_img.py")
    assert wrap_script(["/py", gen_img], kohya, WRAPPER) == ["/py", str(WRAPPER), gen_img]


def test_without_a_wrapper_or_a_kohya_script_nothing_changes_and_twice_is_once(tmp_path: Path) -> None:
    kohya = tmp_path / "sd-scripts"
    argv = ["/py", str(kohya / "gen_img.py"), "--x"]
    assert wrap_script(argv, kohya, None) == argv
    elsewhere = ["/py", str(tmp_path / "other.py"), "--prompt", "x.py"]
    assert wrap_script(elsewhere, kohya, WRAPPER) == elsewhere
    once = wrap_script(argv, kohya, WRAPPER)
    assert wrap_script(once, kohya, WRAPPER) == once


def test_resolve_argv_puts_the_wrapper_into_the_trainers_command(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = LaunchSpec(
        ("accelerate", "launch", "--num_processes", "1", "{sd_scripts}/flux_train_network.py", "--x")
    )
    monkeypatch.setenv("LORABUILD_SCRIPT_WRAPPER", str(WRAPPER))
    assert resolve_argv(spec, Path("/k"), python="/py") == [
        "/py",
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        str(WRAPPER),
        "/k/flux_train_network.py",
        "--x",
    ]
    monkeypatch.delenv("LORABUILD_SCRIPT_WRAPPER")
    assert str(WRAPPER) not in resolve_argv(spec, Path("/k"), python="/py")


def test_run_script_runs_the_kohya_script_through_the_wrapper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kohya = tmp_path / "sd-scripts"
    kohya.mkdir()
    (kohya / "gen_img.py").write_text("import sys; print('kohya', *sys.argv[1:])\n", encoding="utf-8")
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(
        "import runpy, sys\n"
        "print('wrapped', sys.argv[1].rsplit('/', 1)[-1])\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("LORABUILD_SCRIPT_WRAPPER", str(wrapper))
    lines: list[str] = []
    argv = [sys.executable, str(kohya / "gen_img.py"), "--n", "1"]
    run = run_script("gen_img", argv, tmp_path, tmp_path / "log", on_line=lines.append, sd_scripts=kohya)
    assert not run.failed
    assert lines == ["wrapped gen_img.py", "kohya --n 1"]


def test_the_generated_scripts_never_get_the_wrapper(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LORABUILD_SCRIPT_WRAPPER", str(WRAPPER))
    plan = require_plan(check(Path("recipe.toml"), [], Path("build")))
    compile_build(plan)
    assert str(WRAPPER) not in plan.launch.argv
    for name in ("train.sh", "train.ps1"):
        text = (plan.build_dir / name).read_text(encoding="utf-8")
        assert "tinyflux" not in text and "train_network.py" in text


def test_a_checkout_of_symlinked_files_is_still_wrapped(tmp_path: Path) -> None:
    """A kohya folder whose files are links elsewhere (as a test checkout can be): the script is found as written."""
    real = tmp_path / "elsewhere" / "flux_minimal_inference.py"
    real.parent.mkdir()
    real.write_text("")
    checkout = tmp_path / "sd-scripts"
    checkout.mkdir()
    (checkout / "flux_minimal_inference.py").symlink_to(real)
    script = str(checkout / "flux_minimal_inference.py")
    assert wrap_script(["py", script, "--x"], checkout, Path("/w.py")) == ["py", "/w.py", script, "--x"]
