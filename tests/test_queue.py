"""Several builds in a row: ``lorabuild run a.toml b.toml``, its summary, and queue.sh / queue.ps1.

Training is the stand-in trainer of tests/fakekohya.py; a build fails in it with
``[launch] env = { FAKE_KOHYA = "oom" }``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lorabuild import pipeline
from lorabuild.batch import queue as runqueue
from lorabuild.batch.queue import QueueRow, ScriptBuild
from lorabuild.problems import RecipeError, format_problem
from lorabuild.stages.check import Checked
from tests.conftest import RECIPE, Project
from tests.fakekohya import FakeKohya, fake_kohya
from tests.test_sweep import lorabuild

__all__ = ["fake_kohya"]  # the fixture

OOM = '\n[launch]\nenv = { FAKE_KOHYA = "oom" }\n'


def recipe(project: Project, file: str, name: str, extra: str = "") -> Path:
    project.write_recipe(RECIPE.replace('name = "Test_v1"', f'name = "{name}"') + extra, file)
    return Path(file)


def statuses(rows: list[QueueRow]) -> list[tuple[str, str]]:
    return [(r.build, r.status) for r in rows]


def test_run_goes_on_past_failures_and_prints_a_summary(
    project: Project, fake_kohya: FakeKohya, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe(project, "oom.toml", "Oom", OOM)
    recipe(project, "nodata.toml", "NoData").write_text(
        RECIPE.replace("Test_v1", "NoData").replace("data/char", "data/none"), encoding="utf-8"
    )
    code, out, err = lorabuild(capsys, "run", "oom.toml", "nodata.toml", "missing.toml", "recipe.toml")
    assert code == 1
    table = out[out.index("\nbuild ") + 1 :].splitlines()
    assert table[0].split() == ["build", "status", "time", "output"]
    rows = [line.split(None, 3) for line in table[1:-1]]
    assert [(r[0], r[1]) for r in rows] == [
        ("Oom", "failed"),
        ("NoData", "failed"),
        ("missing.toml", "failed"),
        ("Test_v1", "ok"),
    ]
    assert "out of memory" in rows[0][3].lower()
    assert rows[1][3].startswith("nodata.toml: dataset.subsets[0].source:")
    assert rows[2][3] == "missing.toml: recipe file not found"
    assert rows[3][3] == "build/Test_v1/output/Test_v1.safetensors"
    assert (project.root / rows[3][3]).is_file()
    assert table[-1] == "4 build(s): 1 ok, 3 failed"
    assert "nodata.toml: dataset.subsets[0].source:" in err  # every problem is shown as it happens

    # A second run trains nothing that is up to date.
    code, out, err = lorabuild(capsys, "run", "recipe.toml", "oom.toml")
    assert code == 1
    assert [line.split()[:2] for line in out.splitlines()[-3:-1]] == [
        ["Test_v1", "up"],
        ["Oom", "failed"],
    ]


def test_stop_on_error_leaves_the_rest_not_run(project: Project, fake_kohya: FakeKohya) -> None:
    recipe(project, "oom.toml", "Oom", OOM)
    entries = runqueue.collect([Path("oom.toml"), project.recipe], Path("build"))
    rows = runqueue.run_queue(
        entries, Path("build"), stop_on_error=True, say=lambda s: None, warn=lambda s: None
    )
    assert statuses(rows) == [("Oom", "failed"), ("Test_v1", "not run")]
    assert rows[1].seconds is None
    assert runqueue.exit_status(rows) == 1
    assert not (project.root / "build" / "Test_v1").exists()


def test_ctrl_c_stops_the_queue(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe(project, "b.toml", "B")
    calls = []

    def interrupted(checked: Checked, **kwargs: object) -> pipeline.RunReport:
        calls.append(checked.loaded.recipe.name)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run", interrupted)
    entries = runqueue.collect([project.recipe, Path("b.toml")], Path("build"))
    rows = runqueue.run_queue(entries, Path("build"), say=lambda s: None, warn=lambda s: None)
    assert calls == ["Test_v1"]
    assert statuses(rows) == [("Test_v1", "stopped"), ("B", "not run")]
    assert runqueue.exit_status(rows) == 130


def test_two_builds_may_not_share_a_name(project: Project) -> None:
    recipe(project, "copy.toml", "Test_v1")
    with pytest.raises(RecipeError) as info:
        runqueue.collect([project.recipe, Path("copy.toml")], Path("build"))
    assert [format_problem(p) for p in info.value.problems] == [
        "copy.toml: name: build 'Test_v1' has the same name as a build of recipe.toml: both would write "
        "build/Test_v1/; rename one of them"
    ]


def test_two_builds_may_not_share_a_folder(project: Project) -> None:
    recipe(project, "upper.toml", "TEST_V1")
    with pytest.raises(RecipeError) as info:
        runqueue.collect([project.recipe, Path("upper.toml")], Path("build"))
    (msg,) = [format_problem(p) for p in info.value.problems]
    assert msg.startswith(
        "upper.toml: name: build 'TEST_V1' has the same build folder ('Test_v1' and 'TEST_V1')"
    )


def test_a_file_named_twice_runs_once(project: Project) -> None:
    entries = runqueue.collect([project.recipe, Path("./recipe.toml")], Path("build"))
    assert [e.label for e in entries] == ["Test_v1"]


def test_a_sweep_queues_each_build_and_only_picks_one(project: Project) -> None:
    project.write_recipe(RECIPE + '\n[sweep]\n"network.dim" = [4, 8]\n', "sweep.toml")
    entries = runqueue.collect([Path("sweep.toml"), project.recipe], Path("build"))
    assert [e.label for e in entries] == ["Test_v1-dim4", "Test_v1-dim8", "Test_v1"]
    picked = runqueue.collect([Path("sweep.toml"), project.recipe], Path("build"), only="Test_v1-dim8")
    assert [e.label for e in picked] == ["Test_v1-dim8"]
    with pytest.raises(RecipeError) as info:
        runqueue.collect([Path("sweep.toml")], Path("build"), only="dim8")
    assert "no build is named 'dim8' in sweep.toml (builds: Test_v1-dim4, Test_v1-dim8)" in str(info.value)


def test_the_summary_table() -> None:
    rows = [
        QueueRow("Kazari_v1-dim16", "ok", 3725.2, "build/Kazari_v1-dim16/output/Kazari_v1-dim16.safetensors"),
        QueueRow("Style", "failed", 1.0, "style.toml: model.base: file or folder not found: x"),
        QueueRow("Last", "not run", None, ""),
    ]
    assert runqueue.summary_table(rows).splitlines() == [
        "build            status   time     output",
        "Kazari_v1-dim16  ok       1:02:05  build/Kazari_v1-dim16/output/Kazari_v1-dim16.safetensors",
        "Style            failed   0:00:01  style.toml: model.base: file or folder not found: x",
        "Last             not run  -",
        "3 build(s): 1 ok, 1 failed, 1 not run",
    ]


# --- queue.sh / queue.ps1 ----------------------------------------------------------------------

STAND_INS = {
    # name: train.sh body
    "Good_one": 'mkdir -p output && echo lora > output/Good_one.safetensors\necho "training Good_one"\n',
    "Broken": 'echo "CUDA out of memory" >&2\nexit 1\n',
    "No data": 'echo "No data found"\nexit 0\n',
    "Last": "mkdir -p output && : > output/Last.safetensors\n",
}


def write_stand_ins(root: Path) -> list[ScriptBuild]:
    builds = []
    for name, body in STAND_INS.items():
        folder = root / "build" / name
        folder.mkdir(parents=True)
        (folder / "train.sh").write_text(
            '#!/usr/bin/env bash\ncd "$(dirname "$0")"\n' + body, encoding="utf-8"
        )
        builds.append(ScriptBuild(name, f"build/{name}", f"output/{name}.safetensors"))
    return builds


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_queue_sh_runs_every_build_and_prints_the_summary(tmp_path: Path) -> None:
    builds = write_stand_ins(tmp_path)
    artefacts = runqueue.render_queue(builds, ["lorabuild", "queue", "a.toml"])
    (tmp_path / "queue.sh").write_bytes(artefacts["queue.sh"].data)
    result = subprocess.run(
        ["bash", str(tmp_path / "queue.sh")], cwd="/", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["== [1/4] Good_one", "training Good_one"]
    table = lines[lines.index("") + 1 :]
    assert [line.split()[:2] for line in table[:-1]] == [
        ["build", "status"],
        ["Good_one", "ok"],
        ["Broken", "failed"],
        ["No", "data"],
        ["Last", "ok"],
    ]
    assert table[1].endswith("build/Good_one/output/Good_one.safetensors")
    assert table[2].endswith("train.sh exited with status 1")
    assert table[3].split("  ")[0] == "No data" and "failed" in table[3]
    assert table[3].endswith("train.sh finished but build/No data/output/No data.safetensors is missing")
    assert table[-1] == "4 build(s): 2 ok, 2 not ok"
    assert "CUDA out of memory" in result.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_queue_sh_exits_0_when_every_build_trained(tmp_path: Path) -> None:
    builds = [b for b in write_stand_ins(tmp_path) if b.name in ("Good_one", "Last")]
    (tmp_path / "queue.sh").write_bytes(
        runqueue.render_queue(builds, ["lorabuild", "queue"])["queue.sh"].data
    )
    result = subprocess.run(["bash", "queue.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "2 build(s): 2 ok, 0 not ok"


def test_queue_ps1_is_utf8_with_bom_and_crlf_and_quotes_each_value() -> None:
    builds = [
        ScriptBuild("Kazari_v1", "build/Kazari_v1", "output/Kazari_v1.safetensors"),
        ScriptBuild("初春 it's", "../other build/初春 it's", "output/初春 it's.safetensors"),
    ]
    data = runqueue.render_queue(builds, ["lorabuild", "queue", "a.toml", "b.toml"])["queue.ps1"].data
    assert data.startswith(b"\xef\xbb\xbf")
    text = data[3:].decode("utf-8")
    assert "\n" not in text.replace("\r\n", "")
    text = text.replace("\r\n", "\n")
    assert "#   lorabuild queue a.toml b.toml\n" in text
    assert (
        "    @{ Name = 'Kazari_v1'; Folder = 'build/Kazari_v1'; Output = 'output/Kazari_v1.safetensors'; "
        "Path = (Join-Path $PSScriptRoot 'build/Kazari_v1') },\n" in text
    )
    assert (
        "@{ Name = '初春 it''s'; Folder = '../other build/初春 it''s'; Output = 'output/初春 it''s.safetensors'; "
        "Path = (Join-Path $PSScriptRoot '../other build/初春 it''s') }\n)" in text
    )
    assert "& $Shell -NoProfile -ExecutionPolicy Bypass -File (Join-Path $Folder 'train.ps1')" in text
    sh = runqueue.render_queue(builds, ["lorabuild", "queue"])["queue.sh"].data.decode()
    assert "  '../other build/初春 it'\\''s'\n" in sh


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="PowerShell (pwsh) is not installed")
def test_queue_ps1_runs_under_powershell(tmp_path: Path) -> None:
    builds = write_stand_ins(tmp_path)
    for build in builds:
        folder = tmp_path / build.folder
        body = {
            "Good_one": "New-Item -ItemType Directory -Force output | Out-Null; 'x' | Set-Content output/Good_one.safetensors",
            "Broken": "exit 1",
            "No data": "exit 0",
            "Last": "New-Item -ItemType Directory -Force output | Out-Null; 'x' | Set-Content output/Last.safetensors",
        }[build.name]
        (folder / "train.ps1").write_text(
            f"Set-Location -LiteralPath $PSScriptRoot\n{body}\n", encoding="utf-8"
        )
    (tmp_path / "queue.ps1").write_bytes(
        runqueue.render_queue(builds, ["lorabuild", "queue"])["queue.ps1"].data
    )
    result = subprocess.run(
        ["pwsh", "-NoProfile", "-File", str(tmp_path / "queue.ps1")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "4 build(s): 2 ok, 2 not ok" in result.stdout


def test_lorabuild_queue_stages_the_builds_and_writes_the_scripts(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.write_recipe(RECIPE + '\n[sweep]\n"network.dim" = [4, 8]\n', "sweep.toml")
    code, out, err = lorabuild(capsys, "queue", "sweep.toml", "recipe.toml")
    assert code == 0, err
    for name in ("Test_v1-dim4", "Test_v1-dim8", "Test_v1"):
        assert (project.root / "build" / name / "train.sh").is_file()
        assert any((project.root / "build" / name / "dataset").iterdir())  # staged, ready to train
    sh = (project.root / "build" / "queue.sh").read_text(encoding="utf-8")
    assert "names=(\n  Test_v1-dim4\n  Test_v1-dim8\n  Test_v1\n)" in sh
    assert "folders=(\n  Test_v1-dim4\n  Test_v1-dim8\n  Test_v1\n)" in sh
    assert "#   lorabuild queue sweep.toml recipe.toml\n" in sh
    assert os.access(project.root / "build" / "queue.sh", os.X_OK) or os.name == "nt"
    assert (project.root / "build" / "queue.ps1").read_bytes().startswith(b"\xef\xbb\xbf")
    assert out.rstrip().endswith("queue of 3 build(s): run build/queue.sh (or queue.ps1)")

    code, out, err = lorabuild(capsys, "queue", "sweep.toml", "nope.toml")
    assert code == 2 and "nope.toml: recipe file not found" in err
