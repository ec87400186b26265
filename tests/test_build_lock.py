"""Every command that writes into ``build/<name>/`` holds its lock; a second one stops at once,
naming the first (issue 10, defect 10). ``run`` and ``train`` have their lock tests in test_run.py.
``loss`` reads the logs beside a holder and leaves ``loss.png`` for later (issue 11)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lorabuild.build import state
from tests.conftest import REPO, Project, run_cli_here, run_lorabuild
from tests.test_autotag import FakeTagger
from tests.test_autotag_prepare import fake
from tests.test_losslog import write_run

__all__ = ["fake"]  # the fixture

BUILD = Path("build/Test_v1")


main = run_cli_here  # in this process, so it meets this process's lock and patches


WRITERS = [
    ["compile", "recipe.toml"],
    ["prepare", "recipe.toml"],
    ["report", "recipe.toml"],
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


TRAINING = HOLDER.replace("lorabuild prepare recipe.toml", "lorabuild train recipe.toml")


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_loss_reads_the_live_log_while_a_training_holds_the_build(project: Project) -> None:
    """The table comes from the logs kohya is writing; loss.png waits for the build to be free."""
    logs = project.root / BUILD / "logs"
    write_run(logs, "Test_v1_20250101000000", range(1, 9), 0.5, 1_700_000_000.0, epochs=range(1, 3))
    holder = subprocess.Popen(
        [sys.executable, "-c", TRAINING, str(project.root / BUILD)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = build_files(project)
        result = run_lorabuild("loss", "recipe.toml", cwd=project.root)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert [line.split() for line in lines[:3]] == [["epoch", "loss"], ["1", "0.5100"], ["2", "0.5200"]]
        assert lines[3].startswith(
            f'the build is busy (pid {holder.pid}, "lorabuild train recipe.toml", since '
        )
        assert lines[3].endswith(
            "): loss.png is drawn when it is free; the table above is read from the live log"
        )
        assert len(lines) == 4 and "Traceback" not in result.stderr
        assert build_files(project) == before  # no loss.png, nothing else written

        # Before kohya's first log, the message says so instead of "train the build first".
        shutil.rmtree(logs)
        early = run_lorabuild("loss", "recipe.toml", cwd=project.root)
        assert early.returncode == 1
        assert early.stderr.startswith(
            "error: no TensorBoard logs under build/Test_v1/logs yet; the build is busy ("
        )
        assert "lorabuild train RECIPE" not in early.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    write_run(logs, "Test_v1_20250101000000", range(1, 9), 0.5, 1_700_000_000.0, epochs=range(1, 3))
    free = run_lorabuild("loss", "recipe.toml", cwd=project.root)
    assert free.returncode == 0 and free.stdout.splitlines()[-1] == "wrote build/Test_v1/loss.png"
    assert (project.root / BUILD / "loss.png").is_file()


def test_loss_beside_a_holder_in_this_process_exits_0(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(
        project.root / BUILD / "logs", "Test_v1_1", range(1, 5), 0.25, 1_700_000_000.0, epochs=range(1, 2)
    )
    with state.build_lock(BUILD, "lorabuild run recipe.toml"):
        status, err = main("loss", "recipe.toml", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0, err
    assert not (project.root / BUILD / "loss.png").exists()
