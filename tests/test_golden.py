"""Golden files: every shipped recipe, checked and compiled, gives exactly the reviewed artefacts.

The recipes are compiled inside a throwaway project laid out like the repository (recipes/,
models/, data/, vendor/sd-scripts) with generated images and model headers, so the paths the
recipes name really exist. After an intended change, regenerate with ``make golden`` (or
``LORABUILD_UPDATE_GOLDEN=1 pytest tests/test_golden.py``) and review the diff.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

import pytest
import toml

from lorabuild.build.artefacts import ARTEFACTS
from lorabuild.kohya import options as kohya_options
from lorabuild.plan.plan import Plan
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.compile import compile_build
from tests.conftest import CAPTIONS, REPO, component_names, write_checkpoint, write_image, write_safetensors

GOLDEN = REPO / "tests" / "golden"
# recipes/batch/ (files extending a shared base, a sweep) is checked and compiled build by build
# in tests/test_extends.py::test_every_batch_recipe_builds; golden files cover single-file recipes.
RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.toml") if "batch" not in p.relative_to(REPO).parts)
UPDATE = os.environ.get("LORABUILD_UPDATE_GOLDEN") == "1"
pytestmark = pytest.mark.usefixtures("gpu_packages")  # the recipes ask for xformers


def shipped_project(root: Path, recipe: Path) -> Path:
    """Lay out ``root`` like the repository with what ``recipe`` points at; return the recipe copy."""
    (root / "recipes").mkdir(parents=True)
    (root / "vendor" / "sd-scripts").mkdir(parents=True)
    copy = root / "recipes" / recipe.relative_to(REPO / "recipes")
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(recipe, copy)
    doc = tomllib.loads(recipe.read_text(encoding="utf-8"))
    family = doc["model"].get("family", "sd15")
    write_checkpoint((copy.parent / doc["model"]["base"]).resolve(), family)
    for key, value in doc["model"].items():
        names = component_names(family, key)
        if names is not None:
            write_safetensors((copy.parent / value).resolve(), names)
    sizes = [(512, 512), (512, 768), (768, 512), (1024, 1024), (640, 896), (512, 512)]
    for subset in doc["dataset"]["subsets"]:
        folder = (copy.parent / subset["source"]).resolve()
        for i, size in enumerate(sizes):
            image = write_image(folder / f"{i:03d}.png", size)
            image.with_suffix(subset.get("caption_extension", ".txt")).write_text(CAPTIONS[i % len(CAPTIONS)])
    return copy


def test_every_shipped_recipe_is_covered() -> None:
    assert {r.name for r in RECIPES} >= {"kazari.toml", "sdxl_character.toml", "style.toml"}


def compile_shipped(recipe: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> Plan:
    """Check and compile a shipped recipe inside a throwaway project at ``root``."""
    copy = shipped_project(root, recipe)
    monkeypatch.chdir(root)
    monkeypatch.setenv("LORABUILD_SD_SCRIPTS", str(root / "vendor" / "sd-scripts"))
    plan = require_plan(check(copy.relative_to(root), [], Path("build")))
    compile_build(plan)
    return plan


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_compiles_to_golden_files(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = compile_shipped(recipe, tmp_path, monkeypatch)
    golden = GOLDEN / recipe.stem
    for name in ARTEFACTS:
        produced = (plan.build_dir / name).read_bytes()
        if UPDATE:
            golden.mkdir(parents=True, exist_ok=True)
            (golden / name).write_bytes(produced)
        assert produced == (golden / name).read_bytes(), f"{recipe.stem}/{name} differs from tests/golden"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_compiled_files_are_what_kohya_accepts(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = compile_shipped(recipe, tmp_path, monkeypatch)
    # kohya reads both files with the toml package; every option must be one the script accepts.
    config = toml.loads((plan.build_dir / "config.toml").read_text(encoding="utf-8"))
    flat = {k: v for section in config.values() for k, v in section.items()}
    problems = [
        f"{k}: {m}" for k, v in flat.items() if (m := kohya_options.check_config_value(plan.script, k, v))
    ]
    assert problems == []
    dataset = toml.loads((plan.build_dir / "dataset.toml").read_text(encoding="utf-8"))
    assert kohya_options.check_dataset_config(dataset) == []
    assert dataset == plan.dataset_config.document()
