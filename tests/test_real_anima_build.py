"""lorabuild builds Anima LoRAs with the real kohya, on the CPU, from the shipped recipe.

The tiny random-weight model of :mod:`lorabuild.demo.animamodel`, and kohya's scripts run unmodified
through ``lorabuild/demo/tinyanima.py`` (``LORABUILD_SCRIPT_WRAPPER``), which shrinks kohya's
hard-coded Anima sizes in its process: the DiT (1 block, width 64, a 1-layer LLM adapter), Qwen3
(1 layer, width 32) and the Qwen-Image VAE (width 16). Everything else is real: kohya's own Qwen3
and T5 tokenizers, its parser reading the compiled files, its trainer saving every epoch,
anima_minimal_inference.py rendering the grid, and lorabuild installing the chosen epoch.
``lorabuild demo --family anima`` is the same build.

Needs kohya's Python stack and vendor/sd-scripts; skips otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.realbuild import epoch_file, kohya_stack, lorabuild, metadata

pytestmark = pytest.mark.real_trainer

NAME = "Character_Anima_v1"
EPOCHS = 4  # lorabuild.demo.demo.ANIMA_CPU_OVERRIDES


def test_the_demo_trains_renders_and_installs(tmp_path: Path) -> None:
    """`lorabuild demo --family anima`: check, compile, prepare, train, the grid (a load per epoch), report, install."""
    kohya_stack()
    started = time.monotonic()
    process = lorabuild("demo", "--family", "anima", "--build-dir", str(tmp_path), cwd=tmp_path)
    output, _ = process.communicate(timeout=1200)
    print(f"\n[tiny anima] lorabuild demo: {time.monotonic() - started:.1f} s")
    assert process.returncode == 0, output
    build = tmp_path / NAME
    plan = json.loads((build / "plan.json").read_text(encoding="utf-8"))
    assert (plan["family"], plan["script"]) == ("anima", "anima_train_network.py")
    for epoch in range(1, EPOCHS + 1):
        meta = metadata(epoch_file(build, NAME, epoch, EPOCHS))
        assert meta["ss_base_model_version"] == "anima"
        assert meta["ss_network_module"] == "networks.lora_anima"
        assert meta["modelspec.architecture"] == "anima-preview/lora"
        assert meta["ss_epoch"] == str(epoch)
        assert plan["recipe_hash"] in meta["ss_training_comment"]
        # kohya's Anima trainer drops metadata_trigger_phrase: its get_sai_model_spec_dataclass
        # (library/train_util.py) passes title, author, description, license and tags, not the trigger.
        assert "modelspec.trigger_phrase" not in meta
    # The grid: anima_minimal_inference.py merges the LoRA at load, so a load per epoch (one weight
    # in the demo) and one for the no-LoRA baseline, each rendering both prompts.
    loads = EPOCHS + 1
    cells = 2 * loads
    log = (build / "logs" / "grid.log").read_text(encoding="utf-8")
    assert log.count("Loading DiT model for batch generation") == loads, log[-2000:]
    assert log.count("Sample images saved to") == cells
    assert f"grid: {loads} model load(s) for {cells} cell(s)" in output
    assert f"grid     rendered {cells} of {cells} cell(s), 2 sheet(s)" in output
    assert len(list((build / "grid" / "cells").glob("*.png"))) == cells
    card = json.loads((tmp_path / "webui" / "models" / "Lora" / f"{NAME}.json").read_text(encoding="utf-8"))
    assert card["sd version"] == "Unknown" and card["activation text"] == "my_character"
    assert (tmp_path / "webui" / "models" / "Lora" / f"{NAME}.preview.png").is_file()
