"""``lorabuild train`` against the real kohya sd-scripts (vendor/sd-scripts) on the CPU.

A tiny build: the cached random-weight SD1.5-shaped test model (lorabuild.demo.testmodel), 4
synthetic images at 64 px, batch 2, 2 epochs (4 steps), state saving on. One uninterrupted run
(shared by the tests of this module) is compared with a run that is SIGKILLed after its first
epoch's state was saved and then resumed by running ``lorabuild train`` again. Each kohya run
takes about a minute and 8 GB of memory; they run one after another, never at once.

Skipped, saying why, without the kohya checkout or kohya's Python stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.real_trainer

NAME = "Tiny"
EPOCH_FILES = [f"output/{NAME}-000001.safetensors", f"output/{NAME}-000002.safetensors"]
STEPS_PER_EPOCH = 2  # 4 images x 1 repeat / batch 2

RECIPE = """\
# A tiny CPU build for lorabuild's real-trainer tests.
name = "Tiny"

[model]
base = {model}
tokenizer_cache_dir = {tokenizers}
clip_skip = 2

[dataset]
resolution = 64
min_bucket_reso = 64
max_bucket_reso = 128
batch_size = 2

[[dataset.subsets]]
source = "data"
trigger = "tiny_trigger"

[network]
dim = 4
alpha = 2

[optimizer]
type = "AdamW"
lr = 1e-4
scheduler = "cosine"

[training]
epochs = 2
mixed_precision = "no"
attention = "sdpa"
save_state = true
seed = 7

[launch]
num_cpu_threads_per_process = 2
"""


def kohya_stack() -> None:
    for name in ("torch", "accelerate", "transformers", "diffusers", "voluptuous", "cv2"):
        pytest.importorskip(
            name, reason=f"kohya's Python stack is not installed ({name}): pip install -e '.[train]'"
        )


@dataclass(frozen=True)
class TinyProject:
    root: Path

    @property
    def build(self) -> Path:
        return self.root / "build" / NAME

    def lorabuild(self, *args: str, quiet: bool = False) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "lorabuild", *args],
            cwd=self.root,
            stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
        )


def make_tiny_project(root: Path) -> TinyProject:
    from lorabuild.demo.synthetic import make_dataset
    from lorabuild.demo.testmodel import ensure_test_model

    model = ensure_test_model()
    root.mkdir(parents=True, exist_ok=True)
    make_dataset(root / "data", n=4, size=128, trigger="tiny_trigger")
    (root / "recipe.toml").write_text(
        RECIPE.format(
            model=json.dumps(model.model_dir.as_posix()),
            tokenizers=json.dumps(model.tokenizer_cache_dir.as_posix()),
        ),
        encoding="utf-8",
    )
    return TinyProject(root)


def metadata(path: Path) -> dict[str, str]:
    from lorabuild.stages.train import read_metadata

    return read_metadata(path)


@dataclass(frozen=True)
class Trained:
    project: TinyProject
    output: str
    returncode: int
    seconds: float


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """One uninterrupted `lorabuild train` of the tiny build."""
    kohya_stack()
    project = make_tiny_project(tmp_path_factory.mktemp("uninterrupted"))
    started = time.monotonic()
    process = project.lorabuild("train", "recipe.toml")
    output, _ = process.communicate(timeout=900)
    yield Trained(project, output, process.returncode, time.monotonic() - started)


def test_train_runs_kohya_and_saves_every_epoch_under_its_number(trained: Trained) -> None:
    assert trained.returncode == 0, trained.output
    out = trained.output
    print(f"uninterrupted lorabuild train: {trained.seconds:.0f} s")
    build = trained.project.build
    # progress read from kohya's output; stdout is a pipe, so plain lines
    assert "progress: epoch 1/2  step 1/4 (25%)" in out, out
    assert "progress: epoch 2/2  step 4/4 (100%)  loss " in out
    assert not [line for line in out.splitlines() if line.startswith("steps:")]  # kohya's bar is replaced
    assert "saving checkpoint: output/Tiny-000001.safetensors" in out
    assert out.rstrip().splitlines()[-1] == (
        "trained Tiny: 3 LoRA file(s): output/Tiny-000001.safetensors, output/Tiny-000002.safetensors, "
        "output/Tiny.safetensors"
    )
    for epoch, name in enumerate(EPOCH_FILES, start=1):
        meta = metadata(build / name)
        assert (meta["ss_epoch"], meta["ss_steps"]) == (str(epoch), str(epoch * STEPS_PER_EPOCH))
    assert (build / "output/Tiny.safetensors").samefile(build / EPOCH_FILES[-1])
    assert (build / "output/Tiny-000001-state/train_state.json").is_file()
    # the recipe's identity travels in the LoRA's metadata
    meta = metadata(build / EPOCH_FILES[-1])
    plan = json.loads((build / "plan.json").read_text())
    assert plan["recipe_hash"] in meta["ss_training_comment"]
    assert (meta["modelspec.title"], meta["modelspec.trigger_phrase"]) == ("Tiny", "tiny_trigger")
    assert meta["ss_max_train_steps"] == "4" and meta["ss_num_epochs"] == "2"
    # the whole log, carriage returns included, is in logs/train.log
    log = (build / "logs/train.log").read_bytes()
    assert b"\rsteps:" in log and b"model saved." in log


def test_an_unchanged_rebuild_does_not_run_kohya(trained: Trained) -> None:
    assert trained.returncode == 0
    started = time.monotonic()
    process = trained.project.lorabuild("run", "recipe.toml")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "train    up to date" in output and output.rstrip().endswith(")")
    assert time.monotonic() - started < 5  # kohya would take a minute; the ≤ 1 s target is in bench/


def state_saved(build: Path, epoch: int) -> bool:
    from lorabuild.kohya.outputs import state_is_complete

    return state_is_complete(build / f"output/{NAME}-{epoch:06d}-state")


def kill_everything(process: subprocess.Popen[str], build: Path) -> None:
    """SIGKILL lorabuild and kohya's whole process group at once, as a power cut would."""
    info = json.loads((build / ".lorabuild" / "lock").read_text() or "{}")
    trainer = int(info["trainer_pid"])
    os.killpg(trainer, signal.SIGKILL)  # the runner started kohya's launcher as a group leader
    process.kill()
    process.wait()


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_killed_build_resumes_and_ends_with_the_same_epoch_files(trained: Trained, tmp_path: Path) -> None:
    assert trained.returncode == 0
    project = make_tiny_project(tmp_path / "killed")
    first = project.lorabuild("train", "recipe.toml", quiet=True)
    deadline = time.monotonic() + 900
    while not state_saved(project.build, 1):
        assert first.poll() is None, "training ended before its first state was saved"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kill_everything(first, project.build)
    assert not (project.build / f"output/{NAME}.safetensors").exists(), "killed too late to test a resume"

    started = time.monotonic()
    second = project.lorabuild("train", "recipe.toml")
    output, _ = second.communicate(timeout=900)
    print(f"resumed lorabuild train: {time.monotonic() - started:.0f} s")
    assert second.returncode == 0, output
    assert "resuming from output/Tiny-000001-state (epoch 1 of 2 done)" in output
    assert "epoch 1/2" not in output and "epoch 2/2" in output  # kohya skipped the finished epoch
    assert "progress: epoch 2/2  step 4/4 (100%)" in output  # steps counted on from the state

    uninterrupted = trained.project.build
    names = sorted(p.name for p in (project.build / "output").glob("*.safetensors"))
    assert names == sorted(p.name for p in (uninterrupted / "output").glob("*.safetensors"))
    keys = ("ss_epoch", "ss_steps", "ss_max_train_steps", "ss_num_epochs", "ss_lr_scheduler", "ss_seed")
    for name in [*EPOCH_FILES, f"output/{NAME}.safetensors"]:
        resumed, reference = metadata(project.build / name), metadata(uninterrupted / name)
        assert {k: resumed[k] for k in keys} == {k: reference[k] for k in keys}, name
    # epoch 1 comes from the killed run, epoch 2 from the resumed one
    assert (project.build / EPOCH_FILES[0]).stat().st_mtime < (project.build / EPOCH_FILES[1]).stat().st_mtime
    # kohya restarted its step count at 0; lorabuild put back what an uninterrupted run writes
    assert "corrected ss_steps in output/Tiny.safetensors" in output
    # The state restores weights, optimizer, LR schedule and RNG: on the CPU, with the same seed,
    # the resumed epoch's weights are the uninterrupted run's to the bit.
    from safetensors.torch import load_file

    for name in EPOCH_FILES:
        resumed_weights = load_file(project.build / name)
        reference_weights = load_file(uninterrupted / name)
        assert resumed_weights.keys() == reference_weights.keys()
        different = [k for k in reference_weights if not resumed_weights[k].equal(reference_weights[k])]
        assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:3]}"
