"""lorabuild builds an SD2 (v-prediction) LoRA with the real kohya, on the CPU: `lorabuild demo --family sd2`.

The tutorial's recipe on :func:`lorabuild.demo.testmodel.ensure_sd2_test_model`: SD2's full U-Net
(kohya reads its size from the diffusers folder: 1024-wide cross-attention, 5/10/20/20-channel
heads, linear projections) with random weights, a tiny 1024-wide text encoder and VAE, and SD2's
tokenizer rebuilt offline. Nothing of kohya is patched: train_network.py --v2 --v_parameterization
trains it, gen_img.py --v2 renders the grid in one process, lorabuild installs the chosen epoch.

Needs kohya's Python stack and vendor/sd-scripts; skips otherwise. About 6 minutes on 2 cores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.realbuild import kohya_stack, lorabuild, metadata

pytestmark = pytest.mark.real_trainer

NAME = "Kazari_v1"


def test_the_sd2_demo_trains_renders_and_installs(tmp_path: Path) -> None:
    kohya_stack("diffusers")
    started = time.monotonic()
    process = lorabuild("demo", "--family", "sd2", "--build-dir", str(tmp_path), cwd=tmp_path)
    output, _ = process.communicate(timeout=1800)
    print(f"\n[SD2] lorabuild demo: {time.monotonic() - started:.1f} s")
    assert process.returncode == 0, output[-4000:]
    build = tmp_path / NAME
    plan = json.loads((build / "plan.json").read_text(encoding="utf-8"))
    assert (plan["family"], plan["script"]) == ("sd2", "train_network.py")
    meta = metadata(build / "output" / f"{NAME}.safetensors")
    # What kohya writes for an SD2 768-v LoRA (library/train_util.py, sai_model_spec.py).
    assert (meta["ss_v2"], meta["ss_base_model_version"]) == ("True", "sd_v2_v")
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert plan["recipe_hash"] in meta["ss_training_comment"]
    log = (build / "logs" / "grid.log").read_text(encoding="utf-8")
    assert log.count("load Diffusers pretrained models") == 1, log[-2000:]  # one gen_img process, one load
    assert "grid     rendered 41 of 41 cell(s), 1 sheet(s)" in output
    card = json.loads((tmp_path / "webui" / "models" / "Lora" / f"{NAME}.json").read_text(encoding="utf-8"))
    assert card["sd version"] == "SD2"
