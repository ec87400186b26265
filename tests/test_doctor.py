"""``lorabuild doctor`` (judging recorded probes of several machines, and a live probe) and
``lorabuild setup --sd-scripts`` (installing kohya from a local clone, verifying the commit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lorabuild.build.state import git_head
from lorabuild.stages import doctor
from lorabuild.stages.doctor import (
    Finding,
    SetupError,
    check_kohya,
    findings,
    format_findings,
    setup_sd_scripts,
)
from tests.conftest import REPO, SD_SCRIPTS

PINS = {
    "torch": "2.14.1",
    "torchvision": "0.29.1",
    "accelerate": "1.6.0",
    "transformers": "4.54.1",
    "diffusers": "0.32.1",
    "bitsandbytes": "",
}
PINS = {k: v for k, v in PINS.items() if v}


def probe(**changes: Any) -> dict[str, Any]:
    """A probe of a CPU machine with kohya's stack installed (recorded on the project's CPU box)."""
    info: dict[str, Any] = {
        "python": "3.11.7",
        "executable": "/venv/bin/python",
        "packages": {
            "torch": "2.14.1+cu130",
            "torchvision": "0.29.1",
            "accelerate": "1.6.0",
            "transformers": "4.54.1",
            "diffusers": "0.32.1",
            "bitsandbytes": "0.50.2",
            "xformers": None,
        },
        "requires": {},
        "torch": {"version": "2.14.1+cu130", "cuda": "13.0", "cuda_available": False, "mps": False},
        "accelerate_config": {
            "path": "/root/.cache/huggingface/accelerate/default_config.yaml",
            "exists": False,
        },
    }
    info.update(changes)
    return info


def by_name(items: list[Finding]) -> dict[str, Finding]:
    return {f.name: f for f in items}


@pytest.fixture
def kohya_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kohya folder the doctor accepts (verified against a one-file manifest)."""
    folder = tmp_path / "sd-scripts"
    folder.mkdir()
    (folder / "train_network.py").write_text("print('kohya')\n")
    manifest = {"train_network.py": doctor.blob_id(folder / "train_network.py")}
    monkeypatch.setattr(doctor, "load_manifest", lambda: manifest)
    return folder


def test_a_cpu_machine_is_ready_with_a_warning_about_speed(kohya_ok: Path) -> None:
    items = by_name(findings(probe(), kohya_ok, PINS))
    assert [f.status for f in items.values()].count("fail") == 0
    assert items["CUDA"].status == "warn"
    assert (
        items["CUDA"].value
        == "no GPU (torch is built for CUDA 13.0 but sees no GPU): training runs on the CPU, very slowly"
    )
    assert 'training.mixed_precision = "no"' in items["CUDA"].fix
    assert items["kohya"].value.endswith("(all 1 source files match)")
    assert items["packages"].status == "ok"


def test_a_gpu_machine_with_a_mismatched_xformers_fails_with_a_fix(kohya_ok: Path) -> None:
    info = probe(
        torch={
            "version": "2.14.1+cu130",
            "cuda": "13.0",
            "cuda_available": True,
            "devices": ["NVIDIA H100"],
            "memory_gb": [79.2],
            "bf16": True,
        },
        requires={"xformers": ["numpy", "torch==2.13.0"]},
    )
    info["packages"]["xformers"] = "0.0.40"
    items = by_name(findings(info, kohya_ok, PINS))
    assert (
        items["CUDA"].status == "ok" and items["CUDA"].value == "13.0: NVIDIA H100 (79.2 GB); bf16 supported"
    )
    xformers = items["xformers"]
    assert (xformers.status, xformers.value) == (
        "fail",
        "0.0.40 was built for torch 2.13.0, but torch 2.14.1+cu130 is installed",
    )
    assert xformers.fix.startswith(
        'use training.attention = "sdpa", or install the xformers release built for torch 2.14.1'
    )


def test_missing_stack_and_version_drift_are_named(kohya_ok: Path) -> None:
    info = probe(torch=None, torch_error="ModuleNotFoundError: No module named 'torch'")
    del info["torch"]
    info["packages"].update(accelerate=None, transformers="4.50.0", bitsandbytes=None)
    items = by_name(findings(info, kohya_ok, PINS))
    assert (items["torch"].status, items["torch"].value) == (
        "fail",
        "ModuleNotFoundError: No module named 'torch'",
    )
    assert "pip install -e '.[train]'" in items["torch"].fix
    assert items["accelerate"].status == "fail"
    assert items["packages"].value == "kohya's stack is incomplete: accelerate not installed"
    assert items["bitsandbytes"].status == "warn" and items["bitsandbytes"].fix == "pip install bitsandbytes"
    info["packages"]["accelerate"] = "1.6.0"
    drift = by_name(findings(info, kohya_ok, PINS))["packages"]
    assert (drift.status, drift.value) == (
        "warn",
        "versions differ from kohya's pins: transformers 4.50.0 (pinned 4.54.1)",
    )


def test_a_distributed_accelerate_config_is_a_warning_with_a_fix(kohya_ok: Path) -> None:
    config = {
        "path": "/h/default_config.yaml",
        "exists": True,
        "values": {"distributed_type": "MULTI_GPU", "num_processes": 2},
    }
    item = by_name(findings(probe(accelerate_config=config), kohya_ok, PINS))["accelerate"]
    assert item.status == "warn"
    assert item.value == "1.6.0; config /h/default_config.yaml (distributed_type=MULTI_GPU, num_processes=2)"
    assert "run `accelerate config`" in item.fix


def test_a_probe_that_fails_is_reported(kohya_ok: Path) -> None:
    items = findings({"probe_error": "Segmentation fault"}, kohya_ok, PINS)
    assert items[0].status == "fail" and "Segmentation fault" in items[0].value


def test_format_puts_a_fix_under_each_problem() -> None:
    text = format_findings(
        [Finding("torch", "ok", "2.14.1"), Finding("accelerate", "fail", "not installed", "pip install x")]
    )
    assert text.splitlines() == [
        "  ok    torch         2.14.1",
        "  fail  accelerate    not installed",
        "                      fix: pip install x",
    ]


# --- the kohya checkout --------------------------------------------------------------------------


def test_kohya_missing_modified_or_at_another_commit(kohya_ok: Path, tmp_path: Path) -> None:
    assert check_kohya(kohya_ok).status == "ok"
    missing = check_kohya(tmp_path / "nowhere")
    assert missing.status == "fail" and "git submodule update --init vendor/sd-scripts" in missing.fix
    assert "lorabuild setup --sd-scripts PATH" in missing.fix
    (kohya_ok / "train_network.py").write_text("print('patched')\n")
    changed = check_kohya(kohya_ok)
    assert changed.status == "fail" and "1 changed (train_network.py)" in changed.value
    (kohya_ok / ".git").mkdir()
    (kohya_ok / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (kohya_ok / ".git" / "packed-refs").write_text("# pack-refs\n" + "ab" * 20 + " refs/heads/main\n")
    other = check_kohya(kohya_ok)
    assert other.status == "fail" and other.value.endswith("is at abababa, lorabuild drives 48d368f")


@pytest.mark.skipif(
    not (SD_SCRIPTS / "train_network.py").is_file(), reason="vendor/sd-scripts is not checked out"
)
def test_the_vendored_kohya_matches_the_pinned_commit() -> None:
    assert check_kohya(SD_SCRIPTS).status == "ok"


def test_git_head_reads_folders_files_and_refs(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    detached = tmp_path / "a"
    (detached / ".git").mkdir(parents=True)
    (detached / ".git" / "HEAD").write_text(commit + "\n")
    assert git_head(detached) == commit
    submodule = tmp_path / "b"
    submodule.mkdir()
    modules = tmp_path / "gitdir"
    (modules / "refs" / "heads").mkdir(parents=True)
    (modules / "HEAD").write_text("ref: refs/heads/main\n")
    (modules / "refs" / "heads" / "main").write_text(commit + "\n")
    (submodule / ".git").write_text("gitdir: ../gitdir\n")
    assert git_head(submodule) == commit
    assert git_head(tmp_path / "none") is None


# --- setup ---------------------------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A local "kohya" clone whose second-to-last commit stands in for the pinned one."""
    repo = tmp_path / "clone"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "train_network.py").write_text("print('pinned')\n")
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "pinned", cwd=repo)
    pinned = git("rev-parse", "HEAD", cwd=repo)
    (repo / "train_network.py").write_text("print('newer')\n")
    git("commit", "-q", "-am", "newer", cwd=repo)
    monkeypatch.setattr(doctor, "KOHYA_COMMIT", pinned)
    return repo, pinned


@pytest.mark.skipif(
    subprocess.run(["git", "--version"], capture_output=True).returncode != 0, reason="needs git"
)
def test_setup_checks_the_pinned_commit_out_of_a_local_clone(clone: tuple[Path, str], tmp_path: Path) -> None:
    repo, pinned = clone
    dest = tmp_path / "vendor" / "sd-scripts"
    dest.mkdir(parents=True)  # an uninitialised submodule is an empty folder
    message = setup_sd_scripts(repo, dest)
    assert message.startswith(f"installed kohya {pinned[:7]} into ")
    assert git_head(dest) == pinned
    assert (dest / "train_network.py").read_text() == "print('pinned')\n"
    assert setup_sd_scripts(repo, dest).endswith("nothing to do")


@pytest.mark.skipif(
    subprocess.run(["git", "--version"], capture_output=True).returncode != 0, reason="needs git"
)
def test_setup_refuses_a_clone_without_the_commit_and_a_folder_with_other_files(
    clone: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _ = clone
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    with pytest.raises(SetupError, match=r"already holds files that are not kohya .*--force"):
        setup_sd_scripts(repo, dest)
    assert (dest / "mine.txt").exists()
    assert setup_sd_scripts(repo, dest, force=True).startswith("installed kohya")
    monkeypatch.setattr(doctor, "KOHYA_COMMIT", "f" * 40)
    with pytest.raises(SetupError, match=r"is not a git clone holding kohya commit f{40}"):
        setup_sd_scripts(repo, tmp_path / "other")
    with pytest.raises(SetupError, match="is not a folder"):
        setup_sd_scripts(tmp_path / "nowhere", tmp_path / "other")


def test_doctor_command_probes_this_python() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lorabuild", "doctor"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"lorabuild doctor: probing {sys.executable} (importing torch takes a few seconds)"
    assert any(line.split()[1:2] == ["torch"] for line in lines[1:])
    try:
        import torch  # noqa: F401
    except ImportError:
        assert result.returncode == 1
        (summary,) = [line for line in result.stderr.splitlines() if "stop training here:" in line]
        assert "torch" in [name.strip() for name in summary.split("stop training here:")[1].split(",")]
