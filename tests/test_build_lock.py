"""Every command that writes into ``build/<name>/`` holds its lock; a second one stops at once,
naming the first (issue 10, defect 10). ``run`` and ``train`` have their lock tests in test_run.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lorabuild import cli
from lorabuild.build import state
from tests.conftest import REPO, Project, run_lorabuild
from tests.test_autotag import FakeTagger
from tests.test_autotag_prepare import fake

__all__ = ["fake"]  # the fixture

BUILD = Path("build/Test_v1")


def main(*args: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the command line in this process (so it meets this process's lock): status, stderr."""
    monkeypatch.setattr(sys, "argv", ["lorabuild", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.main()
    return int(exited.value.code or 0), capsys.readouterr().err


WRITERS = [
    ["compile", "recipe.toml"],
    ["prepare", "recipe.toml"],
    ["report", "recipe.toml"],
    ["loss", "recipe.toml"],
    ["grid", "recipe.toml"],
    ["install", "recipe.toml", "--webui", "webui"],
    ["install", "recipe.toml", "--webui", "webui", "--dry-run"],  # records the LoRA's hashes
    ["run", "recipe.toml"],
    ["train", "recipe.toml"],
]


def build_files(project: Project) -> dict[str, tuple[int, int]]:
    """Every file of the build but the lock file itself: size and mtime."""
    root = project.root / BUILD
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and p.name != "lock"
    }


@pytest.mark.parametrize(
    "args", WRITERS, ids=lambda args: " ".join(a for a in args if a.startswith("--d") or a == args[0])
)
def test_a_command_that_writes_into_a_locked_build_names_the_holder(
    project: Project, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main("prepare", "recipe.toml", monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    before = build_files(project)
    with state.build_lock(BUILD, "lorabuild prepare other.toml"):
        status, err = main(*args, monkeypatch=monkeypatch, capsys=capsys)
    assert status == 1, err
    assert err.startswith(f"error: build/Test_v1 is in use by another lorabuild (pid {os.getpid()}, ")
    assert '"lorabuild prepare other.toml"' in err and "Traceback" not in err
    assert build_files(project) == before  # nothing written


def test_commands_that_only_read_work_beside_a_holder(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with state.build_lock(BUILD, "lorabuild train recipe.toml"):
        for args in (
            ["check", "recipe.toml"],
            ["tags", "recipe.toml"],
            ["compile", "recipe.toml", "--dry-run"],
        ):
            status, err = main(*args, monkeypatch=monkeypatch, capsys=capsys)
            assert status == 0, (args, err)


def test_tags_locks_the_build_when_it_runs_the_tagger(
    project: Project, fake: FakeTagger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with state.build_lock(BUILD, "lorabuild run recipe.toml"):
        status, err = main("tags", "recipe.toml", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 1 and "is in use by another lorabuild" in err
    assert not fake.calls  # the tagger did not run
    assert main("tags", "recipe.toml", monkeypatch=monkeypatch, capsys=capsys)[0] == 0


HOLDER = """
import sys, time
from pathlib import Path
from lorabuild.build.state import build_lock
with build_lock(Path(sys.argv[1]), "lorabuild prepare recipe.toml"):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_second_prepare_is_refused_while_another_process_stages(project: Project) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(project.root / BUILD)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = run_lorabuild("prepare", "recipe.toml", cwd=project.root)
        assert result.returncode == 1
        assert result.stderr.startswith(
            f"error: build/Test_v1 is in use by another lorabuild (pid {holder.pid}, "
        )
        assert not (project.root / BUILD / "dataset").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert run_lorabuild("prepare", "recipe.toml", cwd=project.root).returncode == 0
