"""The typed plan: kohya's options as typed fields written in one place, the build folder's layout,
the grid settings computed once, one writer of kohya's prompt lines, and no module-global caches.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from lorabuild.build import markers
from lorabuild.build.artefacts import ARTEFACTS
from lorabuild.kohya.config import SamplingOptions
from lorabuild.kohya.outputs import TrainingOutputs
from lorabuild.kohya.prompts import PromptLine, exact_number
from lorabuild.plan import subsets as subsets_module
from lorabuild.plan.layout import STATE_DIR, BuildLayout
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.install import default_weight
from tests.conftest import REPO, Project


def test_config_leaves_out_unset_options_and_false_flags(project: Project) -> None:
    plan = require_plan(check(project.recipe, ["training.gradient_checkpointing=false"], Path("build")))
    assert plan.config.training.gradient_checkpointing is False
    doc = plan.config.document()
    assert "gradient_checkpointing" not in doc["training"]  # False: kohya's default
    assert "noise_offset" not in doc["training"]  # None: unset
    assert "sampling" not in doc  # a section with nothing set is left out
    assert "deepspeed" not in doc and plan.config.deepspeed is None
    assert list(doc) == ["model", "network", "optimizer", "training", "saving", "logging", "metadata"]


def test_passthrough_and_dataset_tables_keep_false(project: Project) -> None:
    plan = require_plan(
        check(
            project.recipe,
            ["kohya={scale_weight_norms=1.0, weighted_captions=false}", "dataset.subsets[0].flip_aug=false"],
            Path("build"),
        )
    )
    assert plan.config.document()["kohya"] == {"scale_weight_norms": 1.0, "weighted_captions": False}
    dataset = plan.dataset_config.document()["datasets"][0]
    assert dataset["subsets"][0]["flip_aug"] is False  # overrides the dataset's value, so it is written
    assert dataset["enable_bucket"] is True and dataset["bucket_no_upscale"] is False
    assert dataset["subsets"][0]["image_dir"] == BuildLayout.staged(plan.subsets[0].folder)


def test_config_document_is_what_config_toml_holds(project: Project) -> None:
    import tomllib

    from lorabuild.build.artefacts import render

    plan = require_plan(check(project.recipe, [], Path("build")))
    files = render(plan, Path("vendor/sd-scripts"))
    assert tomllib.loads(files["config.toml"].data.decode()) == plan.config.document()
    assert tomllib.loads(files["dataset.toml"].data.decode()) == plan.dataset_config.document()


def test_train_key_ignores_sampling_and_the_training_comment(project: Project) -> None:
    from lorabuild.build.state import train_key

    plan = require_plan(check(project.recipe, [], Path("build")))
    key = train_key(plan, "d", Path("kohya"))
    sampled = replace(
        plan.config,
        sampling=SamplingOptions(sample_prompts="x.txt", sample_every_n_epochs=1, sample_sampler="ddim"),
        metadata=replace(plan.config.metadata, training_comment="another recipe hash"),
    )
    assert train_key(replace(plan, config=sampled), "d", Path("kohya")) == key
    retitled = replace(plan.config, metadata=replace(plan.config.metadata, metadata_title="other"))
    assert train_key(replace(plan, config=retitled), "d", Path("kohya")) != key


# --- the layout ----------------------------------------------------------------------------------


def test_layout_names_the_build_folder_files(project: Project) -> None:
    plan = require_plan(check(project.recipe, [], Path("build")))
    layout = plan.layout
    assert layout.root == plan.build_dir
    assert layout.output_dir == plan.build_dir / "output" and layout.logs_dir == plan.build_dir / "logs"
    assert layout.grid_manifest == plan.build_dir / "grid" / "grid.json"
    assert layout.state_dir == plan.build_dir / ".lorabuild" and markers.STATE_DIR == STATE_DIR
    assert plan.config.saving.output_dir == BuildLayout.OUTPUT
    assert plan.config.logging.logging_dir == BuildLayout.LOGS
    assert set(ARTEFACTS) == {
        BuildLayout.CONFIG_TOML,
        BuildLayout.DATASET_TOML,
        BuildLayout.SAMPLE_PROMPTS,
        BuildLayout.TRAIN_SH,
        BuildLayout.TRAIN_PS1,
        BuildLayout.PLAN_JSON,
    }
    # ARCHITECTURE.md's table of the build folder names each of them.
    table = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for name in (
        *ARTEFACTS,
        BuildLayout.REPORT,
        BuildLayout.LOSS_PNG,
        BuildLayout.TAGS_CSV,
        BuildLayout.HASHES,
    ):
        assert f"`{name}`" in table, name


def test_training_outputs_in_kohyas_names() -> None:
    saves = TrainingOutputs(name="N", ext="safetensors", epochs=4, saved=(2, 4), save_state=True)
    assert saves.epoch_file(2) == "output/N-000002.safetensors"
    assert saves.kohya_file(4) == "output/N.safetensors" and saves.kohya_file(2) == saves.epoch_file(2)
    assert saves.expected() == (
        "output/N-000002.safetensors",
        "output/N-000004.safetensors",
        "output/N.safetensors",
        "output/N-000002-state/",
        "output/N-state/",
    )


def test_layout_module_is_standard_library_only() -> None:
    import subprocess

    code = "import sys, lorabuild.plan.layout; print(sorted(m for m in sys.modules if m.startswith(('lorabuild', 'pydantic'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(
        ["lorabuild", "lorabuild.kohya", "lorabuild.kohya.outputs", "lorabuild.plan", "lorabuild.plan.layout"]
    )


# --- [evaluate] in the plan ----------------------------------------------------------------------


def test_grid_settings_are_computed_in_the_plan(project: Project) -> None:
    overrides = [
        'evaluate.prompts=["{trigger}, smile"]',
        "evaluate.weights=[0.2, 0.6, 1.0]",
        "evaluate.epochs=[1, 3]",
        'evaluate.negative_prompt="lowres"',
    ]
    plan = require_plan(check(project.recipe, overrides, Path("build")))
    grid = plan.grid
    assert grid.prompts == ("uiharu_kazari, smile",)
    assert (grid.weights, grid.epochs, grid.negative_prompt) == ((0.2, 0.6, 1.0), (1, 3), "lowres")
    assert grid.base == plan.config.model.pretrained_model_name_or_path
    assert grid.network_module == plan.config.network.network_module
    recipe = check(project.recipe, overrides, Path("build")).loaded.recipe
    assert default_weight(plan, recipe) == 0.6
    assert (
        default_weight(
            plan, recipe.model_copy(update={"install": recipe.install.model_copy(update={"weight": 0.9})})
        )
        == 0.9
    )


# --- prompt lines --------------------------------------------------------------------------------


def test_one_prompt_line_written_for_each_reader() -> None:
    line = PromptLine(
        prompt="kazari, smile",
        negative="lowres",
        width=512,
        height=768,
        seed=7,
        steps=20,
        cfg_scale=7.0,
        sampler="euler_a",
        multipliers=(0.0, 0.8),
        image_name="k.png",
    )
    assert (
        line.sample_prompts_line()
        == "kazari, smile --w 512 --h 768 --d 7 --s 20 --l 7 --ss euler_a --n lowres"
    )
    assert (
        line.gen_img_line()
        == "kazari, smile --n lowres --w 512 --h 768 --s 20 --l 7.0 --d 7 --am 0.0,0.8 --f k.png"
    )
    bare = replace(line, negative="", multipliers=(), image_name=None, sampler=None)
    assert bare.sample_prompts_line() == "kazari, smile --w 512 --h 768 --d 7 --s 20 --l 7"
    assert bare.gen_img_line() == "kazari, smile --w 512 --h 768 --s 20 --l 7.0 --d 7"
    assert exact_number(1e-05) == "0.00001"


def test_sample_prompts_file_is_written_from_the_grid_settings(project: Project) -> None:
    plan = require_plan(check(project.recipe, ["evaluate.seeds=[1, 2]"], Path("build")))
    lines = plan.sample_prompts.splitlines()[1:]
    assert lines == [
        plan.grid.prompt_line(p, s).sample_prompts_line() for p in plan.grid.prompts for s in plan.grid.seeds
    ]
    assert all(re.search(r" --d [12] ", line) for line in lines)


# --- no module-global caches ---------------------------------------------------------------------


def test_a_check_plans_the_subsets_once(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    captions: list[str] = []
    staged_caption = subsets_module.staged_caption

    def counting(recipe: object, index: int, text: str) -> str:
        captions.append(text)
        return staged_caption(recipe, index, text)  # type: ignore[arg-type]

    monkeypatch.setattr(subsets_module, "staged_caption", counting)
    checked = check(project.recipe, [], Path("build"))
    assert checked.plan is not None
    assert len(captions) == sum(len(s.images) for s in checked.plan.subsets) == 4
