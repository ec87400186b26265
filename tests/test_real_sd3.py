"""lorabuild builds an SD3.5 LoRA with the real kohya, on the CPU, from the shipped recipe.

The tiny random-weight model of :mod:`lorabuild.demo.sd3model` (a one-block MMDiT, which kohya sizes
from the file) and kohya's scripts run unmodified through ``lorabuild/demo/tinysd3.py``
(``LORABUILD_SCRIPT_WRAPPER``), which shrinks what kohya hard-codes in its process: CLIP-L and
CLIP-G (width 32; 1 and 13 layers), T5-XXL (width 64, one layer), the VAE (32 channels) and the
4096-wide padding of the text encodings. Everything else is real: kohya's SD3 parser reads the
compiled files, its trainer saves every epoch, sd3_minimal_inference.py renders the grid in one
process, and lorabuild installs the chosen epoch. ``lorabuild demo --family sd3`` is the same build.

Needs kohya's Python stack and vendor/sd-scripts; skips otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.realbuild import kohya_stack, lorabuild, metadata
from tests.test_real_trainer import kohya_reads_back

pytestmark = pytest.mark.real_trainer

NAME = "Character_SD35L_v1"
EPOCHS = 4  # lorabuild.demo.demo.SD3_CPU_OVERRIDES
WRAPPER = str(REPO / "lorabuild" / "demo" / "tinysd3.py")


def test_kohyas_sd3_parser_reads_the_shipped_sd3_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sd3_train_network.py's own parser and config loader read the compiled SD3 options back."""
    overrides = ['flow.weighting_scheme="logit_normal"', "flow.logit_std=1.5", "flow.apply_lg_attn_mask=true"]
    args, _ = kohya_reads_back("sd3_train_network.py", "sd3_character.toml", tmp_path, monkeypatch, overrides)
    expected = {
        "pretrained_model_name_or_path": "../../models/sd3.5_large.safetensors",
        "clip_l": "../../models/clip_l.safetensors",
        "clip_g": "../../models/clip_g.safetensors",
        "t5xxl": "../../models/t5xxl_fp16.safetensors",
        "network_module": "networks.lora_sd3",
        "network_train_unet_only": True,
        "weighting_scheme": "logit_normal",
        "logit_std": 1.5,
        "training_shift": 1.0,
        "t5xxl_max_token_length": 256,
        "apply_lg_attn_mask": True,
        "apply_t5_attn_mask": False,
        "mixed_precision": "bf16",
        "save_precision": "bf16",
        # launch.vram_gb = 16: the command of kohya docs/sd3_train_network.md 4
        "blocks_to_swap": 32,
        "optimizer_type": "AdamW8bit",
        "gradient_checkpointing": True,
        "cache_text_encoder_outputs": True,
    }
    assert {k: getattr(args, k) for k in expected} == expected


def test_the_sd3_demo_trains_renders_and_installs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lorabuild demo --family sd3`: check, compile, prepare, train, one-process grid, report, install."""
    kohya_stack()
    monkeypatch.setenv("LORABUILD_SCRIPT_WRAPPER", WRAPPER)
    started = time.monotonic()
    process = lorabuild("demo", "--family", "sd3", "--build-dir", str(tmp_path), cwd=tmp_path)
    output, _ = process.communicate(timeout=900)
    print(f"\n[tiny SD3] lorabuild demo: {time.monotonic() - started:.1f} s")
    assert process.returncode == 0, output
    build = tmp_path / NAME
    plan = json.loads((build / "plan.json").read_text(encoding="utf-8"))
    assert (plan["family"], plan["script"]) == ("sd3", "sd3_train_network.py")
    for epoch in range(1, EPOCHS + 1):
        path = build / "output" / f"{NAME}-{epoch:06d}.safetensors"
        if epoch == EPOCHS:
            path = build / "output" / f"{NAME}.safetensors"
        meta = metadata(path)
        # sd3_utils.analyze_state_dict_state: qk-norm without a second x-block attention is 3.5 Large.
        assert meta["ss_base_model_version"] == "5-large"
        assert meta["modelspec.architecture"] == "stable-diffusion-3-5-large/lora"
        assert meta["ss_network_module"] == "networks.lora_sd3"
        assert meta["ss_weighting_scheme"] == "uniform"
        assert meta["ss_epoch"] == str(epoch)
        assert plan["recipe_hash"] in meta["ss_training_comment"]
        assert meta["modelspec.trigger_phrase"] == "my_character"
    train_log = (build / "logs" / "train.log").read_text(encoding="utf-8")
    assert "loss nan" not in train_log
    # The grid: every epoch x weight (and the no-LoRA column) x prompt from one model load.
    log = (build / "logs" / "grid.log").read_text(encoding="utf-8")
    cells = 2 * (EPOCHS * 3 + 1)  # 2 prompts; weights 0.6, 0.8, 1.0 and the baseline
    assert log.count("Loading SD3 models") == 1 and log.count("Saved image to") == cells, log[-2000:]
    assert "Invalid number of multipliers" not in log
    assert "in one process (one model load)" in output
    assert f"grid     rendered {cells} of {cells} cell(s), 2 sheet(s)" in output
    assert len(list((build / "grid" / "cells").glob("*.png"))) == cells
    card = json.loads((tmp_path / "webui" / "models" / "Lora" / f"{NAME}.json").read_text(encoding="utf-8"))
    assert card["sd version"] == "SD3" and card["activation text"] == "my_character"
    assert (tmp_path / "webui" / "models" / "Lora" / f"{NAME}.preview.png").is_file()


def test_kohya_loads_none_of_a_checkpoints_own_text_encoders() -> None:
    """Why lorabuild refuses SAI's bundled layout: sd3_utils detects the copy, strips only its first part, loads nothing."""
    kohya_stack()
    from lorabuild.demo.sd3model import ensure_sd3_test_model

    single = ensure_sd3_test_model().incl_te
    probe = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(REPO / 'lorabuild' / 'demo')!r})\n"
        "import tinysd3\n"
        f"tinysd3.shrink_kohya(__import__('pathlib').Path({str(REPO / 'vendor' / 'sd-scripts')!r}).resolve())\n"
        "from library import sd3_utils\n"
        "from safetensors.torch import load_file\n"
        f"sd = load_file({str(single)!r})\n"
        "clip_g = sd3_utils.load_clip_g('unused.safetensors', torch.float32, 'cpu', state_dict=sd)\n"
        "print('DEVICE', clip_g.text_model.final_layer_norm.weight.device)\n"
    )
    env = {**os.environ, "COLUMNS": "300"}  # kohya's rich log handler wraps lines at 80 columns
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env)
    assert "clip_g is included in the checkpoint" in done.stdout + done.stderr, done.stderr[-2000:]
    # A file was given, yet the checkpoint's copy was taken, and none of its weights were loaded.
    assert "DEVICE meta" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
