"""The real kohya, unmodified, trains and renders FLUX.1 and Chroma LoRAs on the CPU with the tiny model.

The model is :mod:`lorabuild.demo.fluxmodel`'s (built once, cached); kohya's scripts run through
``lorabuild/demo/tinyflux.py``, which shrinks kohya's hard-coded sizes to it in-process. The kohya
config files are written by hand here: lorabuild has no FLUX family yet, and this is the evidence
that one can be driven. Each run's wall time and peak RSS (the launcher's process tree) are
printed (``pytest -s``).

Needs kohya's Python stack (run pytest with that Python) and vendor/sd-scripts; skips otherwise.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from lorabuild.demo.fluxmodel import FluxTestModel, ensure_flux_test_model
from tests.conftest import REPO, SD_SCRIPTS

pytestmark = pytest.mark.real_trainer

LAUNCHER = REPO / "lorabuild" / "demo" / "tinyflux.py"
ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
    "COLUMNS": "400",  # kohya's rich log lines are not wrapped
}
TRAIN_TIMEOUT = 300.0
EPOCHS = 2
PROMPTS = (
    "a photo of a red square --w 64 --h 64 --s 2 --d 1 --g 3.5 --m 0.0,0.8",
    "a photo of a blue circle --w 64 --h 64 --s 2 --d 2 --g 3.5 --m 1.0,0.0",
)


@dataclass(frozen=True)
class Measured:
    """A finished process: its exit status, output, wall time and peak RSS."""

    returncode: int
    output: str
    seconds: float
    peak_rss_mib: float


def report(step: str, measured: Measured) -> None:
    print(f"\n[tiny FLUX] {step}: {measured.seconds:.1f} s wall, {measured.peak_rss_mib:.0f} MiB peak RSS")


@pytest.fixture(scope="module")
def model() -> FluxTestModel:
    for name in ("torch", "accelerate", "transformers", "safetensors", "sentencepiece", "PIL"):
        pytest.importorskip(
            name, reason=f"kohya's Python stack is not installed ({name}): pip install -e '.[train]'"
        )
    pytest.importorskip("open_clip", reason="open-clip-torch is not installed (pip install lorabuild[train])")
    start = time.monotonic()
    built = ensure_flux_test_model(sd_scripts=SD_SCRIPTS)
    print(f"\n[tiny FLUX] model ready in {time.monotonic() - start:.1f} s: {built.root}")
    return built


def start(
    argv: Sequence[str], cwd: Path, env: dict[str, str], *, stdin: bool = False
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env={**os.environ, **ENV, **env},
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )


def finish(process: subprocess.Popen[str], started: float, output: str) -> Measured:
    """Reap ``process`` with wait4, whose peak RSS covers the children it waited for (kohya)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(process.returncode, output, time.monotonic() - started, usage.ru_maxrss / 1024)


def run_measured(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> Measured:
    started = time.monotonic()
    process = start(argv, cwd, env or {})
    assert process.stdout is not None
    timer = threading.Timer(TRAIN_TIMEOUT, process.kill)
    timer.start()
    try:
        output = process.stdout.read()
    finally:
        timer.cancel()
    return finish(process, started, output)


def write_dataset(folder: Path) -> Path:
    image = pytest.importorskip("PIL.Image")
    images = folder / "images"
    images.mkdir(parents=True)
    colours = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
    for n, (name, colour) in enumerate(colours.items()):
        picture = image.new("RGB", (64, 64), (250, 250, 250))
        picture.paste(colour, (8 + 4 * n, 8, 48, 56))
        picture.save(images / f"{n}.png")
        (images / f"{n}.txt").write_text(f"tinyflux, a {name} square", encoding="utf-8")
    dataset = folder / "dataset.toml"
    dataset.write_text(
        "[general]\n"
        "resolution = 64\n"
        'caption_extension = ".txt"\n'
        "batch_size = 2\n"
        "enable_bucket = false\n\n"
        "[[datasets]]\n\n"
        "[[datasets.subsets]]\n"
        f"image_dir = {json.dumps(images.as_posix())}\n"
        "num_repeats = 1\n",
        encoding="utf-8",
    )
    return dataset


def toml_line(key: str, value: object) -> str:
    return f"{key} = {json.dumps(value)}"  # strings, numbers and booleans are the same in JSON and TOML


def write_config(folder: Path, options: dict[str, object]) -> Path:
    config = folder / "config.toml"
    config.write_text("\n".join(toml_line(k, v) for k, v in options.items()) + "\n", encoding="utf-8")
    return config


def common_options(model: FluxTestModel, output: Path) -> dict[str, object]:
    return {
        "t5xxl": model.t5xxl.as_posix(),
        "ae": model.ae.as_posix(),
        "tokenizer_cache_dir": model.tokenizer_cache_dir.as_posix(),
        "network_module": "networks.lora_flux",
        "network_dim": 4,
        "network_alpha": 4.0,
        "learning_rate": 1e-3,
        "optimizer_type": "AdamW",
        "max_train_epochs": EPOCHS,
        "save_every_n_epochs": 1,
        "save_model_as": "safetensors",
        "output_dir": output.as_posix(),
        "output_name": "tiny",
        "mixed_precision": "no",
        "sdpa": True,
        "seed": 1,
        "max_data_loader_n_workers": 0,
        "model_prediction_type": "raw",
    }


def train(folder: Path, options: dict[str, object]) -> tuple[list[Path], Measured]:
    dataset = write_dataset(folder)
    config = write_config(folder, options)
    argv = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_cpu_threads_per_process",
        "1",
        str(LAUNCHER),
        str(SD_SCRIPTS / "flux_train_network.py"),
        "--config_file",
        str(config),
        "--dataset_config",
        str(dataset),
    ]
    measured = run_measured(argv, folder)
    assert measured.returncode == 0, measured.output[-6000:]
    output = Path(str(options["output_dir"]))
    files = [output / "tiny-000001.safetensors", output / "tiny.safetensors"]  # the last epoch has no number
    assert [f.name for f in files if f.is_file()] == [f.name for f in files], measured.output[-3000:]
    return files, measured


def metadata(path: Path) -> dict[str, str]:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return dict(header.get("__metadata__", {}))


@pytest.fixture(scope="module")
def flux_dev_loras(
    model: FluxTestModel, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[Path], Measured]:
    """The two epochs of a FLUX.1-dev LoRA (the DiT's and CLIP-L's parts), trained once for the module."""
    folder = tmp_path_factory.mktemp("flux-dev")
    options = {
        "pretrained_model_name_or_path": model.flux_dev.as_posix(),
        "clip_l": model.clip_l.as_posix(),
        **common_options(model, folder / "output"),
        "guidance_scale": 1.0,
        "timestep_sampling": "flux_shift",
    }
    files, measured = train(folder, options)
    report("FLUX.1-dev LoRA, 2 epochs", measured)
    return files, measured


def test_kohya_trains_a_flux_dev_lora_through_the_launcher(
    flux_dev_loras: tuple[list[Path], Measured],
) -> None:
    files, measured = flux_dev_loras
    for file in files:
        meta = metadata(file)
        assert meta["ss_base_model_version"] == "flux1"
        assert meta["ss_network_module"] == "networks.lora_flux"
    # Every key of every file matched: the launcher's sizes and the built files agree.
    for part in ("Flux", "CLIP-L", "T5xxl", "AE"):
        assert f"Loaded {part}: <All keys matched successfully>" in measured.output


def test_kohya_trains_a_chroma_lora_through_the_launcher(model: FluxTestModel, tmp_path: Path) -> None:
    output = tmp_path / "output"
    options = {
        "pretrained_model_name_or_path": model.chroma.as_posix(),
        "model_type": "chroma",
        **common_options(model, output),
        "guidance_scale": 0.0,
        "apply_t5_attn_mask": True,
        "timestep_sampling": "sigmoid",
    }
    files, measured = train(tmp_path, options)
    report("Chroma LoRA, 2 epochs", measured)
    for file in files:
        meta = metadata(file)
        assert meta["ss_base_model_version"] == "chroma"  # flux_utils.MODEL_VERSION_CHROMA
        assert meta["ss_network_module"] == "networks.lora_flux"
    assert "Loaded Chroma: <All keys matched successfully>" in measured.output


def lines_of(process: subprocess.Popen[str]) -> Iterator[str | None]:
    """The process's output lines as they come (None after each second of silence), until it ends."""
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put("")  # end of output (a line read is never empty)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            yield None
            continue
        if line == "":
            return
        if line is not None:
            yield line


def test_minimal_inference_renders_with_both_epoch_loras(
    model: FluxTestModel, flux_dev_loras: tuple[list[Path], Measured], tmp_path: Path
) -> None:
    """flux_minimal_inference.py --interactive renders a PNG per prompt line, the two epochs as LoRAs.

    Files are named by the second and overwrite each other, so each line is sent only after kohya
    logged saving the previous image, which is then moved away: paced by the output, not by sleeps.
    """
    loras, _ = flux_dev_loras
    rendered = tmp_path / "rendered"
    out = tmp_path / "out"
    rendered.mkdir()
    out.mkdir()
    argv = [
        sys.executable,
        str(LAUNCHER),
        str(SD_SCRIPTS / "flux_minimal_inference.py"),
        "--ckpt_path",
        str(model.flux_dev),
        "--clip_l",
        str(model.clip_l),
        "--t5xxl",
        str(model.t5xxl),
        "--ae",
        str(model.ae),
        "--dtype",
        "float32",
        "--output_dir",
        str(out),
        "--lora_weights",
        *(f"{lora};1.0" for lora in loras),
        "--interactive",
    ]
    started = time.monotonic()
    process = start(argv, tmp_path, {"HF_HOME": str(model.hf_home)}, stdin=True)
    assert process.stdin is not None
    pending = list(PROMPTS)
    seen: list[str] = []
    deadline = started + TRAIN_TIMEOUT
    finished = False
    try:
        for line in lines_of(process):
            assert time.monotonic() < deadline, "".join(seen[-80:])
            if line is None:
                continue
            seen.append(line)
            if "Saved image to" in line:
                images = sorted(out.glob("*.png"))
                assert len(images) == 1, images
                shutil.move(images[0], rendered / f"{len(list(rendered.iterdir()))}.png")
            if line.startswith("Enter prompt"):
                process.stdin.write((pending.pop(0) if pending else "") + "\n")  # empty: exit
                process.stdin.flush()
        finished = True
    finally:
        if not finished:
            process.kill()  # not poll(): it would reap the process before wait4 measures it
    measured = finish(process, started, "".join(seen))
    report(f"minimal inference, {len(PROMPTS)} prompts at 64 px, 2 steps", measured)
    assert measured.returncode == 0, measured.output[-6000:]
    pngs = sorted(rendered.glob("*.png"))
    assert len(pngs) == len(PROMPTS)
    image = pytest.importorskip("PIL.Image")
    for png in pngs:
        with image.open(png) as picture:
            assert picture.size == (64, 64)
