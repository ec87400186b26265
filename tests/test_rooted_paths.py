"""A path the scripts name may be absolute (a kohya checkout outside the project, a build folder on
another drive): every script uses it as it is, and joins only a relative one to its own folder.

Windows paths are the point (``C:\\``, ``D:/``, UNC ``\\\\server\\share``), so the PowerShell
scripts are evaluated with the tree-sitter grammar and a model of ``Join-Path`` on Windows
(tests/powershell.py), and the bash scripts run for real against recording stand-ins. The sbatch
script is left out: Slurm runs on Linux, and every path in it is absolute by construction (its
paths reach the program byte for byte in tests/test_script_injection.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lorabuild.batch import queue as runqueue
from lorabuild.batch.queue import ScriptBuild
from lorabuild.build import artefacts as render
from lorabuild.plan.plan import Plan
from tests.conftest import Project
from tests.powershell import Script, join_path
from tests.test_script_injection import compile_recipe, expected_argv, recorded, run_bash, stand_in

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")

ROOTED = {
    "drive, backslashes": "C:\\kohya\\sd-scripts",
    "other drive, slashes": "D:/kohya/sd-scripts",
    "UNC": "\\\\server\\share\\sd-scripts",
    "UNC, slashes": "//server/share/sd-scripts",
    "POSIX": "/opt/sd-scripts",
    "drive root": "\\sd-scripts",
}
RELATIVE = {"inside the project": "../../vendor/sd-scripts", "plain": "sd-scripts"}
PATHS = {**ROOTED, **RELATIVE}
# $PSScriptRoot in the model: the build folder on a Windows machine.
SCRIPT_ROOT = "C:\\project\\build\\Test_v1"


def where_powershell_finds(path: str, root: str = SCRIPT_ROOT) -> str:
    """Where a script in ``root`` should find ``path``: rooted as it is, else from ``root``."""
    return path if path in ROOTED.values() else join_path(root, path)


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_is_rooted_on_any_system(path: str) -> None:
    from lorabuild.plan.layout import is_rooted

    assert is_rooted(path) == (path in ROOTED.values())


def script_with_kohya_at(monkeypatch: pytest.MonkeyPatch, plan: Plan, template: str, kohya: str) -> str:
    """``template`` rendered for ``plan`` as if the kohya folder were written ``kohya`` (as
    plan.portable_path writes a folder outside the project on Windows: absolute)."""
    monkeypatch.setattr(render, "portable_path", lambda target, build_dir: kohya)
    return render.render_script(template, plan, Path("unused"))


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_train_ps1_joins_only_a_relative_kohya_folder(
    project: Project, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Issue 10, defect 6: ``Join-Path $PSScriptRoot 'D:\\kohya\\sd-scripts'`` is
    ``<build>\\D:\\kohya\\sd-scripts``."""
    plan = compile_recipe("recipe.toml")
    script = Script(script_with_kohya_at(monkeypatch, plan, "train.ps1.j2", path).encode("utf-8"))
    assert script.errors() == []
    (block,) = [n for n in script.nodes() if n.type == "if_statement" and "-not $SdScripts" in script.text(n)]
    (value,) = script.assignments("$SdScripts", within=block)
    assert script.evaluate(value, {"$PSScriptRoot": SCRIPT_ROOT}) == where_powershell_finds(path)


@needs_bash
@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_train_sh_uses_the_kohya_folder_as_written(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, path: str
) -> None:
    """bash takes a rooted path as it is and a relative one from the build folder, where train.sh
    changes to first (``C:\\...`` and ``//server/...`` are how Git Bash and MSYS name them)."""
    plan = compile_recipe("recipe.toml")
    script = plan.build_dir / "train.sh"
    script.write_text(script_with_kohya_at(monkeypatch, plan, "train.sh.j2", path), encoding="utf-8")
    bin_dir, record = tmp_path / "bin", tmp_path / "calls.jsonl"
    stand_in(bin_dir, "accelerate")
    monkeypatch.delenv("LORABUILD_SD_SCRIPTS", raising=False)
    result = run_bash(script, tmp_path, bin_dir, record)
    assert result.returncode == 0, result.stderr
    assert recorded(record) == [expected_argv(plan, path)]


QUEUE_FOLDERS = {**{k: v + "/build/A" for k, v in ROOTED.items()}, "relative": "build/A", "up": "../b/A"}


def queue_builds() -> list[ScriptBuild]:
    return [
        ScriptBuild(f"B{i}", folder, "output/x.safetensors")
        for i, folder in enumerate(QUEUE_FOLDERS.values())
    ]


def test_queue_ps1_joins_only_relative_build_folders() -> None:
    """The same trap in queue.ps1: a build folder on another drive is absolute (plan.relpath)."""
    script = Script(runqueue.render_queue(queue_builds(), ["lorabuild", "queue"])["queue.ps1"].data)
    assert script.errors() == []
    scope: dict[str, object] = {"$PSScriptRoot": "C:\\project"}
    (builds,) = script.assignments("$Builds")
    (loop,) = [n for n in script.nodes() if n.type == "foreach_statement"]
    (folder,) = script.assignments("$Folder", within=loop)
    found = [script.evaluate(folder, {**scope, "$Build": b}) for b in script.evaluate(builds, scope)]
    expected = [f if k in ROOTED else join_path("C:\\project", f) for k, f in QUEUE_FOLDERS.items()]
    assert found == expected


@needs_bash
def test_queue_sh_uses_each_build_folder_as_written(tmp_path: Path) -> None:
    """queue.sh changes to its own folder, then runs ``bash FOLDER/train.sh``: a stand-in bash
    on PATH records the paths (the queue itself runs under the real bash)."""
    real_bash = shutil.which("bash")
    assert real_bash is not None
    (tmp_path / "queue.sh").write_bytes(
        runqueue.render_queue(queue_builds(), ["lorabuild", "queue"])["queue.sh"].data
    )
    bin_dir, record = tmp_path / "bin", tmp_path / "calls.jsonl"
    stand_in(bin_dir, "bash")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record)}
    done = subprocess.run([real_bash, "queue.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 1  # the stand-in trains nothing
    assert recorded(record) == [[folder + "/train.sh"] for folder in QUEUE_FOLDERS.values()]
