"""lorabuild builds Lumina Image 2.0 LoRAs with the real kohya, on the CPU, from the shipped recipe.

The tiny random-weight model of :mod:`lorabuild.demo.luminamodel`, and kohya's scripts run unmodified
through ``lorabuild/demo/tinylumina.py`` (``LORABUILD_SCRIPT_WRAPPER``), which shrinks kohya's
hard-coded Lumina 2 sizes in its process: the NextDiT (64 wide, 2 layers, one refiner layer each),
Gemma-2 (2 layers, 32 wide, a 260-token vocabulary) and the FLUX autoencoder (32 channels). The
gated ``google/gemma-2-2b`` tokenizer is a stand-in built offline (a byte-level Gemma tokenizer in
the hub-cache layout kohya reads). Everything else is real: kohya's parser reading the compiled
files (its own test, with the other families', is in tests/test_real_trainer.py), its trainer saving every epoch, lumina_minimal_inference.py rendering the whole grid from
one model load, and lorabuild installing the chosen epoch. ``lorabuild demo --family lumina`` is
the same build; its kill-and-resume test is tests/test_real_resume.py's, with every family's.

Needs kohya's Python stack and vendor/sd-scripts; skips otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.realbuild import epoch_file, kohya_stack, lorabuild, metadata

pytestmark = pytest.mark.real_trainer

NAME = "Character_Lumina2_v1"
EPOCHS = 4  # lorabuild.demo.demo.LUMINA_CPU_OVERRIDES
WRAPPER = REPO / "lorabuild" / "demo" / "tinylumina.py"


def test_the_lumina_demo_trains_renders_and_installs(tmp_path: Path) -> None:
    """`lorabuild demo --family lumina`: check, compile, prepare, train, one-process grid, report, install."""
    kohya_stack("tokenizers", script="lumina_train_network.py")
    started = time.monotonic()
    process = lorabuild(
        "demo", "--family", "lumina", "--build-dir", str(tmp_path), cwd=tmp_path, wrapper=WRAPPER
    )
    output, _ = process.communicate(timeout=900)
    print(f"\n[tiny Lumina 2] lorabuild demo: {time.monotonic() - started:.1f} s")
    assert process.returncode == 0, output
    build = tmp_path / NAME
    plan = json.loads((build / "plan.json").read_text(encoding="utf-8"))
    assert (plan["family"], plan["script"]) == ("lumina", "lumina_train_network.py")
    for epoch in range(1, EPOCHS + 1):
        meta = metadata(epoch_file(build, NAME, epoch, EPOCHS))
        assert meta["ss_base_model_version"] == "lumina2"
        assert meta["modelspec.architecture"] == "lumina-2/lora"
        assert meta["ss_network_module"] == "networks.lora_lumina"
        assert meta["ss_timestep_sampling"] == "nextdit_shift"
        assert meta["ss_epoch"] == str(epoch)
        assert plan["recipe_hash"] in meta["ss_training_comment"]
    train_log = (build / "logs" / "train.log").read_text(encoding="utf-8")
    assert "loss nan" not in train_log
    # The grid: every epoch x weight (and the no-LoRA column) x prompt x seed from one model load.
    log = (build / "logs" / "grid.log").read_text(encoding="utf-8")
    cells = 2 * 2 * (EPOCHS * 3 + 1)  # 2 prompts, 2 seeds; weights 0.6, 0.8, 1.0 and the baseline
    assert log.count("Building Lumina") == 1 and log.count("Image saved to") == cells, log[-2000:]
    assert "Invalid number of multipliers" not in log and "Unknown option" not in log
    assert "invalid value encountered" not in log  # NaN images
    assert "in one process (one model load)" in output
    assert f"grid     rendered {cells} of {cells} cell(s), 4 sheet(s)" in output
    assert "flat colour" not in output
    assert len(list((build / "grid" / "cells").glob("*.png"))) == cells
    assert (build / "report.html").is_file()
    card = json.loads((tmp_path / "webui" / "models" / "Lora" / f"{NAME}.json").read_text(encoding="utf-8"))
    assert card["sd version"] == "Unknown" and card["activation text"] == "my_character"
    assert (tmp_path / "webui" / "models" / "Lora" / f"{NAME}.preview.png").is_file()
