"""lorabuild builds a HunyuanImage 2.1 LoRA with the real kohya, on the CPU, from the shipped recipe.

The tiny random-weight model of :mod:`lorabuild.demo.hunyuanmodel`, and kohya's scripts run
unmodified through ``lorabuild/demo/tinyhunyuan.py`` (``LORABUILD_SCRIPT_WRAPPER``), which shrinks
kohya's hard-coded sizes in its process: the DiT (one double and one single block, width 64),
Qwen2.5-VL (3 layers, width 64, a one-block vision tower), byT5 (12 narrow layers) and the VAE
(32-128 channels). Everything else is real: hunyuan_image_train_network.py caches the text
encoders' outputs on disk, trains and saves every epoch; hunyuan_image_minimal_inference.py renders
the grid, one DiT load per LoRA setting; lorabuild installs the chosen epoch.

Needs kohya's Python stack and vendor/sd-scripts; skips otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.realbuild import epoch_file, kohya_stack, lorabuild, metadata

pytestmark = pytest.mark.real_trainer

NAME = "Character_HunyuanImage_v1"
EPOCHS = 2  # lorabuild.demo.demo.HUNYUAN_CPU_OVERRIDES
WEIGHTS = 2  # recipes/hunyuan_character.toml: 0.8, 1.0


def test_the_hunyuan_demo_trains_renders_and_installs(tmp_path: Path) -> None:
    kohya_stack(script="hunyuan_image_train_network.py")
    started = time.monotonic()
    process = lorabuild("demo", "--family", "hunyuan", "--build-dir", str(tmp_path), cwd=tmp_path)
    output, _ = process.communicate(timeout=1200)
    print(f"\n[tiny HunyuanImage] lorabuild demo: {time.monotonic() - started:.1f} s")
    assert process.returncode == 0, output[-4000:]
    build = tmp_path / NAME
    plan = json.loads((build / "plan.json").read_text(encoding="utf-8"))
    assert (plan["family"], plan["script"]) == ("hunyuan", "hunyuan_image_train_network.py")
    for epoch in range(1, EPOCHS + 1):
        meta = metadata(epoch_file(build, NAME, epoch, EPOCHS))
        assert meta["ss_base_model_version"] == "hunyuan-image-2.1"
        assert meta["modelspec.architecture"] == "hunyuan-image-2.1/lora"
        assert meta["ss_network_module"] == "networks.lora_hunyuan_image"
        assert meta["ss_epoch"] == str(epoch)
        assert plan["recipe_hash"] in meta["ss_training_comment"]
    # One DiT load per LoRA setting (every epoch x weight, and the baseline), each rendering both prompts.
    settings = EPOCHS * WEIGHTS + 1
    # Every load's output is appended to the one logs/grid.log.
    assert sorted(p.name for p in (build / "logs").glob("grid*")) == ["grid.log"]
    log = (build / "logs" / "grid.log").read_text(encoding="utf-8")
    assert log.count("Loading DiT model from") == settings, log[-2000:]
    cells = 2 * settings
    assert f"grid: {settings} model load(s) for {cells} cell(s)" in output
    assert f"grid     rendered {cells} of {cells} cell(s), 2 sheet(s)" in output
    assert len(list((build / "grid" / "cells").glob("*.png"))) == cells
    lora = tmp_path / "webui" / "models" / "Lora"
    card = json.loads((lora / f"{NAME}.json").read_text(encoding="utf-8"))
    assert card["sd version"] == "Unknown" and card["activation text"] == "my_character"
    assert (lora / f"{NAME}.preview.png").is_file()
