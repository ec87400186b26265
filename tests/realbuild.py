"""What the real-kohya build tests share: the stack check, ``lorabuild`` in a child process, and
kill-and-resume of a family's tiny-model demo build.

Each family's demo (:data:`lorabuild.demo.demo.TINY_DEMOS`) runs kohya's unmodified scripts through
its test-only launcher, which shrinks kohya's hard-coded sizes in kohya's process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

STACK = ("torch", "accelerate", "transformers", "safetensors", "sentencepiece", "open_clip")
"""What kohya's scripts import, from the train extra."""


def kohya_stack(*also: str, script: str = "train_network.py") -> None:
    """Skip, saying why, without kohya's Python stack (and ``also``) or without ``script`` in vendor/sd-scripts."""
    for name in (*STACK, *also):
        pytest.importorskip(
            name, reason=f"kohya's Python stack is not installed ({name}): pip install -e '.[train]'"
        )
    if not (REPO / "vendor" / "sd-scripts" / script).is_file():
        pytest.skip("kohya sd-scripts is not checked out in vendor/sd-scripts")


def lorabuild(
    *args: str, cwd: Path, wrapper: Path | None = None, quiet: bool = False
) -> subprocess.Popen[str]:
    """``lorabuild ARGS`` in this Python; kohya's scripts run through ``wrapper`` when given."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if wrapper is not None:
        env["LORABUILD_SCRIPT_WRAPPER"] = str(wrapper)
    return subprocess.Popen(
        [sys.executable, "-m", "lorabuild", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        env=env,
    )


def metadata(path: Path) -> dict[str, str]:
    from lorabuild.stages.train import read_metadata

    return read_metadata(path)


def epoch_file(build: Path, name: str, epoch: int, last: int) -> Path:
    """The LoRA kohya saves for ``epoch`` (the last epoch's file has no number)."""
    return build / "output" / (f"{name}-{epoch:06d}.safetensors" if epoch < last else f"{name}.safetensors")


def state_saved(build: Path, epoch: int, name: str) -> bool:
    from lorabuild.kohya.outputs import state_is_complete

    return state_is_complete(build / f"output/{name}-{epoch:06d}-state")


def demo_args(family: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """The family's demo: its recipe and ``--set`` arguments (the model built, the dataset drawn)."""
    from lorabuild.demo.demo import TINY_DEMOS

    monkeypatch.setenv("LORABUILD_SCRIPT_WRAPPER", "")  # prepare sets it; restored after the test
    recipe, overrides = TINY_DEMOS[family].prepare(root)
    return recipe, [arg for o in overrides for arg in ("--set", o)]


def kill_and_resume(family: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train the family's demo recipe whole, then again killed (SIGKILL to kohya's process group) once
    its first state is saved and resumed: every epoch's weights must be the uninterrupted run's."""
    from lorabuild.demo.demo import TINY_DEMOS

    recipe, overrides = demo_args(family, root, monkeypatch)
    args = ["train", str(recipe), *overrides, "--set", "training.save_state=true"]
    wrapper = TINY_DEMOS[family].launcher

    whole = root / "whole"
    started = time.monotonic()
    first = lorabuild(*args, "--build-dir", str(whole), cwd=root, wrapper=wrapper)
    output, _ = first.communicate(timeout=900)
    print(f"\n[tiny {family}] uninterrupted lorabuild train: {time.monotonic() - started:.1f} s")
    assert first.returncode == 0, output
    (reference_build,) = [p.parent for p in whole.glob("*/plan.json")]
    name = reference_build.name
    saved = sorted(p.relative_to(reference_build) for p in (reference_build / "output").glob("*.safetensors"))
    last = len([p for p in saved if p.stem != name])  # lorabuild keeps the last epoch under its number too
    assert last >= 2, f"{family}: the demo saves {last} epoch(s); a resume needs two or more"

    killed = root / "killed"
    build = killed / name
    second = lorabuild(*args, "--build-dir", str(killed), cwd=root, wrapper=wrapper, quiet=True)
    deadline = time.monotonic() + 900
    # Whole, not merely there: a random_states_0.pkl cut short makes accelerate skip the RNG state,
    # and the resumed epochs differ (kohya/outputs.state_is_complete; once seen here before it checked).
    while not state_saved(build, 1, name):
        assert second.poll() is None, "training ended before its first state was saved"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    info = json.loads((build / ".lorabuild" / "lock").read_text() or "{}")
    os.killpg(int(info["trainer_pid"]), signal.SIGKILL)  # kohya's whole process group, as a power cut
    second.kill()
    second.wait()
    assert not epoch_file(build, name, last, last).exists(), "killed too late to test a resume"

    started = time.monotonic()
    third = lorabuild(*args, "--build-dir", str(killed), cwd=root, wrapper=wrapper)
    output, _ = third.communicate(timeout=900)
    print(f"[tiny {family}] resumed lorabuild train: {time.monotonic() - started:.1f} s")
    assert third.returncode == 0, output
    assert f"resuming from output/{name}-00000" in output
    from safetensors.torch import load_file

    assert sorted(p.relative_to(build) for p in (build / "output").glob("*.safetensors")) == saved
    for file in saved:
        resumed, reference = load_file(build / file), load_file(reference_build / file)
        assert resumed.keys() == reference.keys()
        different = [k for k in reference if not resumed[k].equal(reference[k])]
        assert not different, f"{file}: {len(different)} tensors differ, e.g. {different[:3]}"
        epoch = last if file.stem == name else int(file.stem.rsplit("-", 1)[1])
        assert metadata(build / file)["ss_epoch"] == str(epoch)
