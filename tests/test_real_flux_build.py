"""lorabuild builds FLUX.1 and Chroma LoRAs with the real kohya, on the CPU, from the shipped recipes.

The tiny random-weight model of :mod:`lorabuild.demo.fluxmodel`, and kohya's scripts run unmodified
through ``lorabuild/demo/tinyflux.py`` (``LORABUILD_SCRIPT_WRAPPER``), which shrinks kohya's
hard-coded FLUX sizes in its process: the DiT (1 double + 1 single block, width 64), CLIP-L and
T5 (width 32, one layer) and the autoencoder (32 channels). Everything else is real: kohya's
parser reads the compiled files, its trainer saves every epoch, flux_minimal_inference.py renders
the grid, and lorabuild installs the chosen epoch. ``lorabuild demo --family`` is the same build.

Needs kohya's Python stack and vendor/sd-scripts; skips otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.realbuild import kohya_stack, lorabuild, metadata

pytestmark = pytest.mark.real_trainer

# What kohya writes as ss_base_model_version (library/train_util.py, flux_train_network.py).
BASE_MODEL_VERSION = {"flux": "flux1", "chroma": "chroma"}
NAMES = {"flux": "Character_FLUX_v1", "chroma": "Character_Chroma_v1"}
EPOCHS = 4  # lorabuild.demo.demo.FLUX_CPU_OVERRIDES


@pytest.mark.parametrize("family", ["flux", "chroma"])
def test_the_demo_trains_renders_and_installs(family: str, tmp_path: Path) -> None:
    """`lorabuild demo --family`: check, compile, prepare, train, one-process grid, report, install."""
    kohya_stack()
    started = time.monotonic()
    process = lorabuild("demo", "--family", family, "--build-dir", str(tmp_path), cwd=tmp_path)
    output, _ = process.communicate(timeout=900)
    print(f"\n[tiny {family}] lorabuild demo: {time.monotonic() - started:.1f} s")
    assert process.returncode == 0, output
    name = NAMES[family]
    build = tmp_path / name
    plan = json.loads((build / "plan.json").read_text(encoding="utf-8"))
    assert (plan["family"], plan["script"]) == (family, "flux_train_network.py")
    for epoch in range(1, EPOCHS + 1):
        path = build / "output" / f"{name}-{epoch:06d}.safetensors"
        if epoch == EPOCHS:
            path = build / "output" / f"{name}.safetensors"
        meta = metadata(path)
        assert meta["ss_base_model_version"] == BASE_MODEL_VERSION[family]
        assert meta["ss_network_module"] == "networks.lora_flux"
        assert meta["ss_epoch"] == str(epoch)
        assert plan["recipe_hash"] in meta["ss_training_comment"]
        assert meta["modelspec.trigger_phrase"] == "my_character"
    # The grid: every epoch x weight (and the no-LoRA column) x prompt from one model load.
    log = (build / "logs" / "grid.log").read_text(encoding="utf-8")
    cells = 2 * (EPOCHS * 3 + 1)  # 2 prompts; weights 0.6, 0.8, 1.0 and the baseline
    assert log.count("Loading t5xxl") == 1 and log.count("Saved image to") == cells, log[-2000:]
    assert f"grid     rendered {cells} of {cells} cell(s), 2 sheet(s)" in output
    assert len(list((build / "grid" / "cells").glob("*.png"))) == cells
    card = json.loads((tmp_path / "webui" / "models" / "Lora" / f"{name}.json").read_text(encoding="utf-8"))
    assert card["sd version"] == "Flux" and card["activation text"] == "my_character"
    assert (tmp_path / "webui" / "models" / "Lora" / f"{name}.preview.png").is_file()
