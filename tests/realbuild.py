"""What the real-trainer build tests of every tiny-model family share: run lorabuild as a user does,
read a LoRA's header, and kill a training to check that it resumes to the uninterrupted weights.

Each family's test (``tests/test_real_*.py``) names its launcher (``lorabuild/demo/tiny*.py``, run
before every kohya script through ``LORABUILD_SCRIPT_WRAPPER``), its demo's recipe and overrides, and
what its files must hold; the mechanics are here, once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO


def run_lorabuild(*args: str, cwd: Path, wrapper: Path, quiet: bool = False) -> subprocess.Popen[str]:
    """``lorabuild ARGS`` in a fresh process of kohya's Python, running kohya's scripts through ``wrapper``."""
    return subprocess.Popen(
        [sys.executable, "-m", "lorabuild", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONPATH": str(REPO), "LORABUILD_SCRIPT_WRAPPER": str(wrapper)},
    )


def metadata(path: Path) -> dict[str, str]:
    """A LoRA file's ``__metadata__``."""
    from lorabuild.stages.train import read_metadata

    return read_metadata(path)


def epoch_file(build: Path, name: str, epoch: int, epochs: int) -> Path:
    """Where kohya saves ``epoch`` of ``epochs``: the last without a number."""
    return build / "output" / (f"{name}-{epoch:06d}.safetensors" if epoch < epochs else f"{name}.safetensors")


def state_saved(build: Path, name: str, epoch: int) -> bool:
    """Whether kohya has finished saving ``epoch``'s training state."""
    from lorabuild.kohya.outputs import state_is_complete

    return state_is_complete(build / f"output/{name}-{epoch:06d}-state")


def assert_a_killed_build_resumes_to_the_same_weights(
    root: Path, train_args: list[str], *, wrapper: Path, name: str, epochs: int, label: str
) -> None:
    """Train once whole; train again, kill kohya's process group after epoch 1's state, resume; compare.

    Args:
        root: The test's folder (the two builds go to ``whole/`` and ``killed/``).
        train_args: ``train RECIPE --set ...`` with ``training.save_state=true``.
        wrapper: The family's launcher.
        name: The build's output name.
        epochs: How many epochs it trains.
        label: How the printed timings name the family.
    """
    whole = root / "whole"
    started = time.monotonic()
    first = run_lorabuild(*train_args, "--build-dir", str(whole), cwd=root, wrapper=wrapper)
    output, _ = first.communicate(timeout=600)
    print(f"\n[{label}] uninterrupted lorabuild train: {time.monotonic() - started:.1f} s")
    assert first.returncode == 0, output

    killed = root / "killed"
    build = killed / name
    second = run_lorabuild(*train_args, "--build-dir", str(killed), cwd=root, wrapper=wrapper, quiet=True)
    deadline = time.monotonic() + 600
    # Whole, not merely there: a random_states_0.pkl cut short makes accelerate skip the RNG state,
    # and the resumed epochs differ (kohya/outputs.state_is_complete; once seen here before it checked).
    while not state_saved(build, name, 1):
        assert second.poll() is None, "training ended before its first state was saved"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    info = json.loads((build / ".lorabuild" / "lock").read_text() or "{}")
    os.killpg(int(info["trainer_pid"]), signal.SIGKILL)  # kohya's whole process group, as a power cut
    second.kill()
    second.wait()
    assert not epoch_file(build, name, epochs, epochs).exists(), "killed too late to test a resume"

    started = time.monotonic()
    third = run_lorabuild(*train_args, "--build-dir", str(killed), cwd=root, wrapper=wrapper)
    output, _ = third.communicate(timeout=600)
    print(f"[{label}] resumed lorabuild train: {time.monotonic() - started:.1f} s")
    assert third.returncode == 0, output
    assert f"resuming from output/{name}-00000" in output
    from safetensors.torch import load_file

    for epoch in range(1, epochs + 1):
        path = epoch_file(build, name, epoch, epochs)
        resumed, reference = load_file(path), load_file(epoch_file(whole / name, name, epoch, epochs))
        assert resumed.keys() == reference.keys()
        different = [k for k in reference if not resumed[k].equal(reference[k])]
        assert not different, f"epoch {epoch}: {len(different)} tensors differ, e.g. {different[:3]}"
        assert metadata(path)["ss_epoch"] == str(epoch)
