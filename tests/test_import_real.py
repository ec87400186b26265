"""The header of a LoRA the real kohya trained (the tiny FLUX demo, CPU) imports to the recipe it was trained from.

The demo recipe is trained with ``lorabuild train``; the last saved file's header is imported; the
answers to the import's TODOs (the model files' paths, the data folder: a header holds names only)
are filled in from the build; the recipe is compiled again. The two ``config.toml`` and
``dataset.toml`` documents must be equal but for :data:`NOT_IN_HEADER`, each with its reason.

Needs kohya's Python stack (run pytest with that Python) and vendor/sd-scripts; skips otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import toml

from lorabuild.importer.model import NoteKind
from lorabuild.importer.sources import import_sources
from lorabuild.importer.write import write_recipe
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.compile import compile_build
from tests.conftest import REPO, SD_SCRIPTS

pytestmark = pytest.mark.real_trainer

NAME = "Character_FLUX_v1"

NOT_IN_HEADER: dict[str, str] = {
    "training.cache_text_encoder_outputs": "kohya writes no ss_ key for the text-encoder cache",
    "metadata.training_comment": "lorabuild writes the recipe file's hash: the imported recipe is another file",
}
"""config.toml options the header of the trained LoRA cannot give back, and why. Every other option
of config.toml and dataset.toml round-trips, once the TODOs' paths are filled in."""

TODO_ANSWERS = ("model.base", "model.clip_l", "model.t5xxl", "model.ae", "dataset.subsets[0].source")


def _without(doc: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    out = {section: dict(table) for section, table in doc.items()}
    for key in keys:
        section, _, name = key.partition(".")
        out.get(section, {}).pop(name, None)
    return out


def test_flux_lora_header_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("torch", "accelerate", "transformers", "safetensors", "sentencepiece", "open_clip"):
        pytest.importorskip(name, reason=f"kohya's Python stack is not installed ({name})")
    from lorabuild.demo.demo import prepare_flux_demo

    monkeypatch.setenv("LORABUILD_SCRIPT_WRAPPER", "")  # prepare_flux_demo sets it; restored after the test
    monkeypatch.setenv("LORABUILD_SD_SCRIPTS", str(SD_SCRIPTS))
    recipe, overrides = prepare_flux_demo(tmp_path, "flux")
    sets = [arg for o in overrides for arg in ("--set", o)]
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "lorabuild",
            "train",
            str(recipe),
            *sets,
            "--build-dir",
            str(tmp_path / "build"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "LORABUILD_SCRIPT_WRAPPER": str(REPO / "lorabuild" / "demo" / "tinyflux.py"),
        },
    )
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    build = tmp_path / "build" / NAME
    config = toml.loads((build / "config.toml").read_text(encoding="utf-8"))

    imported = import_sources([build / "output" / f"{NAME}.safetensors"])
    todo = {n.key for n in imported.notes if n.kind is NoteKind.TODO}
    assert set(TODO_ANSWERS) <= todo
    model = config["model"]
    for key in ("clip_l", "t5xxl", "ae", "tokenizer_cache_dir"):
        imported.set(f"model.{key}", Path(model[key]))
    imported.set("model.base", Path(model["pretrained_model_name_or_path"]))
    subsets = imported.values["dataset.subsets"]
    assert isinstance(subsets, list)
    subsets[0]["source"] = tmp_path / "data" / "character"

    out = tmp_path / "imported.toml"
    write_recipe(imported, out)
    again = require_plan(check(out, [], tmp_path / "build2"))
    compile_build(again)
    after = toml.loads((again.build_dir / "config.toml").read_text(encoding="utf-8"))
    assert _without(after, NOT_IN_HEADER) == _without(config, NOT_IN_HEADER)
    for key in NOT_IN_HEADER:  # the table holds only what really differs
        section, _, option = key.partition(".")
        assert after.get(section, {}).get(option) != config.get(section, {}).get(option), key
    before_ds = toml.loads((build / "dataset.toml").read_text(encoding="utf-8"))
    after_ds = toml.loads((again.build_dir / "dataset.toml").read_text(encoding="utf-8"))
    assert after_ds == before_ds
