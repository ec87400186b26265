"""lorabuild builds an SDXL LoRA with the real kohya, on the CPU, from the shipped recipe.

The tiny random-weight checkpoint of :mod:`lorabuild.demo.sdxlmodel`, and kohya's scripts run
unmodified through ``lorabuild/demo/tinysdxl.py`` (``LORABUILD_SCRIPT_WRAPPER``), which shrinks
kohya's hard-coded SDXL sizes in its process: the U-Net (32 base channels, one transformer layer per
block, 64-wide context), CLIP-L (12 layers) and CLIP-bigG (2 layers), both 32 wide, and the VAE
(32 channels). Everything else is real: kohya's parser reads the compiled files,
sdxl_train_network.py saves every epoch, ``gen_img.py --sdxl`` renders the grid in one process, and
lorabuild installs the chosen epoch. ``lorabuild demo --family sdxl`` is the same build.

Needs kohya's Python stack and vendor/sd-scripts; skips otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.realbuild import epoch_file, kohya_stack, lorabuild, metadata

pytestmark = pytest.mark.real_trainer

NAME = "Character_SDXL_v1"
EPOCHS = 4  # lorabuild.demo.demo.SDXL_CPU_OVERRIDES


def test_the_sdxl_demo_trains_renders_and_installs(tmp_path: Path) -> None:
    """`lorabuild demo --family sdxl`: check, compile, prepare, train, one-process grid, report, install."""
    kohya_stack("diffusers", script="sdxl_train_network.py")
    started = time.monotonic()
    process = lorabuild("demo", "--family", "sdxl", "--build-dir", str(tmp_path), cwd=tmp_path)
    output, _ = process.communicate(timeout=900)
    print(f"\n[tiny SDXL] lorabuild demo: {time.monotonic() - started:.1f} s")
    assert process.returncode == 0, output
    build = tmp_path / NAME
    plan = json.loads((build / "plan.json").read_text(encoding="utf-8"))
    assert (plan["family"], plan["script"]) == ("sdxl", "sdxl_train_network.py")
    for epoch in range(1, EPOCHS + 1):
        meta = metadata(epoch_file(build, NAME, epoch, EPOCHS))
        assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
        assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
        assert meta["ss_network_module"] == "networks.lora"
        assert meta["ss_epoch"] == str(epoch)
        assert plan["recipe_hash"] in meta["ss_training_comment"]
        assert meta["modelspec.trigger_phrase"] == "my_character"
    # The grid: every epoch x weight (and the no-LoRA column) x prompt from one gen_img process.
    log = (build / "logs" / "grid.log").read_text(encoding="utf-8")
    cells = 2 * (EPOCHS * 3 + 1)  # 2 prompts; weights 0.6, 0.8, 1.0 and the baseline
    assert log.count("building U-Net") == 1, log[-2000:]
    assert f"grid     rendered {cells} of {cells} cell(s), 2 sheet(s)" in output
    assert len(list((build / "grid" / "cells").glob("*.png"))) == cells
    lora = tmp_path / "webui" / "models" / "Lora"
    card = json.loads((lora / f"{NAME}.json").read_text(encoding="utf-8"))
    assert card["sd version"] == "SDXL" and card["activation text"] == "my_character"
    assert (lora / f"{NAME}.preview.png").is_file()
