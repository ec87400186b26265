"""HunyuanImage 2.1 recipes: the family's defaults, memory presets, model files, rules and grid, before any model loads.

Each rule's message is checked as ``lorabuild check`` prints it, with the kohya failure it prevents
named in the rule's docstring (lorabuild/kohya/families/hunyuan.py). The facts come from kohya's
docs/hunyuan_image_train_network.md and hunyuan_image_train_network.py at the pinned commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lorabuild.kohya.families import hunyuan
from lorabuild.kohya.gridrender import GridImage, GridJob, GridRun
from lorabuild.kohya.hunyuaninfer import HunyuanInference
from lorabuild.kohya.prompts import PromptLine
from lorabuild.plan.summary import plan_summary
from lorabuild.probe.modelfile import component_from_names, probe_model
from lorabuild.problems import format_problem
from lorabuild.stages.check import check, require_plan
from tests.conftest import COMPONENT_KEYS, FAMILY_KEYS, Project, problems, write_safetensors

RECIPE = """\
name = "Hunyuan_v1"

[model]
base = "models/hunyuanimage2.1.safetensors"
text_encoder = "models/qwen_2.5_vl_7b.safetensors"
byt5 = "models/byt5_small_glyphxl_fp16.safetensors"
vae = "models/hunyuan_image_2.1_vae_fp16.safetensors"

[dataset]
resolution = [512, 512]

[[dataset.subsets]]
source = "data/char"
trigger = "uiharu_kazari"
repeats = 2

[network]
dim = 8
alpha = 1

[training]
epochs = 2

[evaluate]
prompts = ["a photo of {trigger}"]
weights = [0.5, 1.0]
"""


@pytest.fixture
def hunyuan_project(project: Project) -> Project:
    """The ``project`` with a HunyuanImage DiT, its Qwen2.5-VL, byT5 and VAE headers and a recipe."""
    project.write_recipe(RECIPE)
    project.write_models(
        {"hunyuanimage2.1": "hunyuan"},
        {
            "qwen_2.5_vl_7b": "text_encoder",
            "byt5_small_glyphxl_fp16": "byt5",
            "hunyuan_image_2.1_vae_fp16": "hunyuan_vae",
        },
    )
    return project


def test_a_minimal_recipe_gets_kohyas_documented_settings(hunyuan_project: Project) -> None:
    checked = check(hunyuan_project.recipe, [], hunyuan_project.build)
    assert [format_problem(p) for p in checked.problems] == []
    plan = require_plan(checked)
    cfg = plan.config
    assert (plan.family, plan.script) == ("hunyuan", "hunyuan_image_train_network.py")
    assert cfg.network.network_module == "networks.lora_hunyuan_image"
    # Required by kohya's docs; the recipe left network.train out, so the family's default applies.
    assert cfg.network.network_train_unet_only and not cfg.network.network_train_text_encoder_only
    assert (cfg.model.text_encoder, cfg.model.byt5, cfg.model.vae) == (
        "../../models/qwen_2.5_vl_7b.safetensors",
        "../../models/byt5_small_glyphxl_fp16.safetensors",
        "../../models/hunyuan_image_2.1_vae_fp16.safetensors",
    )
    assert (cfg.model.model_type, cfg.model.clip_l, cfg.model.t5xxl, cfg.model.ae) == (None, None, None, None)
    assert (cfg.training.mixed_precision, cfg.saving.save_precision) == ("bf16", "bf16")
    assert (cfg.flow.model_prediction_type, cfg.flow.discrete_flow_shift) == ("raw", 5.0)
    assert not cfg.flow.fp8_scaled and cfg.training.blocks_to_swap is None  # no vram_gb: no preset
    summary = plan_summary(plan)
    assert "HunyuanImage 2.1 -> kohya hunyuan_image_train_network.py" in summary
    assert (
        'network.train = "unet"  (HunyuanImage 2.1 default: kohya docs/hunyuan_image_train_network.md'
        in summary
    )


def test_the_compiled_config_names_kohyas_options(hunyuan_project: Project) -> None:
    overrides = ["flow.attn_mode=xformers", "flow.split_attn=true", "flow.vae_chunk_size=16"]
    overrides += ["flow.text_encoder_cpu=true", "flow.fp8_vl=true"]
    doc = require_plan(check(hunyuan_project.recipe, overrides, hunyuan_project.build)).config.document()
    assert doc["model"]["text_encoder"] == "../../models/qwen_2.5_vl_7b.safetensors"
    assert doc["model"]["byt5"] == "../../models/byt5_small_glyphxl_fp16.safetensors"
    assert doc["flow"] == {
        "model_prediction_type": "raw",
        "discrete_flow_shift": 5.0,
        "fp8_vl": True,
        "attn_mode": "xformers",
        "split_attn": True,
        "vae_chunk_size": 16,
        "text_encoder_cpu": True,
    }


@pytest.mark.parametrize(
    ("vram", "swap"),
    [(80, None), (40, None), (24, 9), (16, 32), (12, 32), (8, 37), (6, 37)],
)
def test_memory_presets_follow_kohyas_table(hunyuan_project: Project, vram: int, swap: int | None) -> None:
    cfg = require_plan(
        check(hunyuan_project.recipe, [f"launch.vram_gb={vram}"], hunyuan_project.build)
    ).config
    assert cfg.training.blocks_to_swap == swap
    assert cfg.flow.fp8_scaled == (swap is not None)
    # On disk: the in-memory cache crashes kohya's HunyuanImage trainer (the rule below).
    assert cfg.training.gradient_checkpointing and cfg.training.cache_text_encoder_outputs_to_disk
    assert not cfg.training.cache_text_encoder_outputs


def test_text_encoder_outputs_are_not_cached_when_captions_change(hunyuan_project: Project) -> None:
    checked = check(
        hunyuan_project.recipe, ["launch.vram_gb=24", "dataset.shuffle_caption=true"], hunyuan_project.build
    )
    assert [format_problem(p) for p in checked.problems] == []
    assert not require_plan(checked).config.training.cache_text_encoder_outputs_to_disk


def test_the_rules(hunyuan_project: Project) -> None:
    assert problems(hunyuan_project, 'network.train="both"') == [
        'recipe.toml: network.train: must be "unet" for HunyuanImage 2.1 (kohya docs/hunyuan_image_train_network.md: '
        "--network_train_unet_only is required; kohya has no LoRA for its text encoders)"
    ]
    assert problems(hunyuan_project, "training.fp8_base=true") == [
        "recipe.toml: training.fp8_base: is not supported for HunyuanImage 2.1 (kohya only warns and trains in full "
        "precision): set flow.fp8_scaled = true instead"
    ]
    assert problems(hunyuan_project, "model.clip_skip=2", "flow.guidance_scale=1.0") == [
        "recipe.toml: model.clip_skip: means nothing for HunyuanImage 2.1 (its text encoders are Qwen2.5-VL and "
        "byT5): remove it",
        # The option check (rules/passthrough.py) knows the script has none.
        "recipe.toml: flow.guidance_scale: HunyuanImage 2.1 models are trained by kohya's "
        "hunyuan_image_train_network.py, which has no --guidance_scale: remove flow.guidance_scale",
    ]
    assert problems(hunyuan_project, "flow.attn_mode=xformers", "dataset.batch_size=2") == [
        "recipe.toml: flow.split_attn: must be true with attn_mode xformers and batches over 1 (kohya "
        "docs/hunyuan_image_train_network.md 4.1): set flow.split_attn = true"
    ]
    assert problems(hunyuan_project, "training.cache_text_encoder_outputs=true") == [
        "recipe.toml: training.cache_text_encoder_outputs: crashes kohya's HunyuanImage trainer at the pinned commit "
        'when the cache is kept in memory (the first step stops with "TypeError: new(): data must be a sequence '
        '(got numpy.bool)"): set training.cache_text_encoder_outputs_to_disk = true'
    ]
    assert problems(hunyuan_project, "training.cache_text_encoder_outputs_to_disk=true") == []
    assert problems(hunyuan_project, 'network.module="loha"') == [
        'recipe.toml: network.module: "loha" cannot train HunyuanImage 2.1 models: use "lora"'
    ]


def test_model_files_are_required_and_told_apart(hunyuan_project: Project) -> None:
    recipe = hunyuan_project.root / "recipe.toml"
    recipe.write_text(recipe.read_text().replace('byt5 = "models/byt5_small_glyphxl_fp16.safetensors"\n', ""))
    assert problems(hunyuan_project) == [
        "recipe.toml: model.byt5: HunyuanImage 2.1 training needs the byT5 text encoder (kohya --byt5): set "
        "model.byt5 to its file, e.g. byt5_small_glyphxl_fp16.safetensors"
    ]
    # The Qwen2.5-VL file where byT5's goes.
    swapped = ['model.byt5="models/qwen_2.5_vl_7b.safetensors"']
    assert problems(hunyuan_project, *swapped) == [
        "recipe.toml: model.byt5: qwen_2.5_vl_7b.safetensors is the Qwen2.5-VL text encoder, not the byT5 text "
        "encoder (did you mean it for model.text_encoder?): point model.byt5 at the byT5 text encoder's file, e.g. "
        "byt5_small_glyphxl_fp16.safetensors"
    ]


def test_an_sd_recipe_may_still_name_a_replacement_vae(project: Project) -> None:
    write_safetensors(project.root / "models" / "vae.safetensors", ["encoder.down.0.block.0.conv1.weight"])
    assert problems(project, 'model.vae="models/vae.safetensors"') == []


def test_headers_are_told_apart() -> None:
    assert component_from_names(COMPONENT_KEYS["text_encoder"]) == "qwen2_5_vl"
    assert component_from_names(COMPONENT_KEYS["byt5"]) == "byt5"
    assert component_from_names(COMPONENT_KEYS["t5xxl"]) == "t5xxl"  # FLUX's T5-XXL (24 blocks; one here)
    assert (
        component_from_names([f"encoder.block.{i}.layer.0.SelfAttention.q.weight" for i in range(24)])
        == "t5xxl"
    )
    assert component_from_names(COMPONENT_KEYS["hunyuan_vae"]) == "hunyuan_vae"
    assert component_from_names(COMPONENT_KEYS["ae"]) == "ae"
    # FLUX's DiT has double_blocks too; HunyuanImage's byT5 mapper tells them apart.
    assert hunyuan.FAMILY.name == "hunyuan"


def test_the_dit_is_recognised_from_its_header(tmp_path: Path) -> None:
    info = probe_model(write_safetensors(tmp_path / "dit.safetensors", FAMILY_KEYS["hunyuan"]))
    assert (info.family, info.what) == ("hunyuan", "a HunyuanImage 2.1 model")


def image(prompt: str, seed: int, multipliers: tuple[float, ...], name: str) -> GridImage:
    line = PromptLine(
        prompt=prompt, width=1024, height=768, seed=seed, steps=30, cfg_scale=3.5, multipliers=multipliers
    )
    return GridImage(line, name)


def test_the_grid_loads_the_dit_once_per_lora_setting(hunyuan_project: Project, tmp_path: Path) -> None:
    settings = require_plan(
        check(hunyuan_project.recipe, ["flow.fp8_scaled=true"], hunyuan_project.build)
    ).grid
    renderer = HunyuanInference()
    job = GridJob(
        images=(
            image("a", 1, (0.0, 0.0), "base_a.png"),
            image("a", 1, (0.5, 0.0), "e1_05_a.png"),
            image("b", 2, (0.5, 0.0), "e1_05_b.png"),
            image("a", 1, (0.0, 1.0), "e2_10_a.png"),
        ),
        network_files=("output/e1.safetensors", "output/e2.safetensors"),
        script="/k/hunyuan_image_minimal_inference.py",
        workdir="grid/.render",
        outdir="grid/.render/out",
        cells_dir=tmp_path / "cells",
        cwd=tmp_path,
        python="/py",
        env={},
    )
    parts = renderer.split(job)
    assert [[i.name for i in p.images] for p in parts] == [
        ["base_a.png"],
        ["e1_05_a.png", "e1_05_b.png"],
        ["e2_10_a.png"],
    ]
    assert [p.network_files for p in parts] == [(), ("output/e1.safetensors",), ("output/e2.safetensors",)]
    run = renderer.prepare(settings, parts[1])
    assert run.argv == [
        "/py",
        "/k/hunyuan_image_minimal_inference.py",
        "--dit",
        "../../models/hunyuanimage2.1.safetensors",
        "--text_encoder",
        "../../models/qwen_2.5_vl_7b.safetensors",
        "--byt5",
        "../../models/byt5_small_glyphxl_fp16.safetensors",
        "--vae",
        "../../models/hunyuan_image_2.1_vae_fp16.safetensors",
        "--save_path",
        "grid/.render/out",
        "--from_file",
        "grid/.render/prompts.txt",
        "--attn_mode",
        "torch",
        "--flow_shift",
        "5.0",
        "--fp8_scaled",
        "--lora_weight",
        "output/e1.safetensors",
        "--lora_multiplier",
        "0.5",
    ]
    assert run.inputs == {
        "prompts.txt": "a --w 1024 --h 768 --d 1 --s 30 --g 3.5\nb --w 1024 --h 768 --d 2 --s 30 --g 3.5\n"
    }
    with pytest.raises(ValueError, match="split it first"):
        renderer.prepare(settings, job)
    line = PromptLine(prompt="p", negative="bad", width=64, height=64, seed=3, steps=4, cfg_scale=1.0)
    assert line.from_file_line() == "p --w 64 --h 64 --d 3 --s 4 --g 1.0 --n bad"


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 8 + b"\0\0\0\0IEND\xaeB`\x82"
"""The smallest bytes that pass as a whole PNG (signature and IEND)."""


def two_image_run(project: Project, tmp_path: Path) -> tuple[GridRun, Path]:
    """The renderer's run of a job of two images (k1.png, k2.png) rendered in ``tmp_path``, and its out folder."""
    settings = require_plan(check(project.recipe, [], project.build)).grid
    out = tmp_path / "grid" / ".render" / "out"
    out.mkdir(parents=True)
    job = GridJob(
        images=(image("a", 1, (), "k1.png"), image("b", 2, (), "k2.png")),
        network_files=(),
        script="s",
        workdir="grid/.render",
        outdir="grid/.render/out",
        cells_dir=tmp_path / "cells",
        cwd=tmp_path,
        python="/py",
        env={},
    )
    return HunyuanInference().prepare(settings, job), out


def test_each_saved_image_is_filed_as_it_is_logged(hunyuan_project: Project, tmp_path: Path) -> None:
    run, out = two_image_run(hunyuan_project, tmp_path)
    assert run.answer is not None
    for n in (1, 2):
        assert run.progress(f"INFO Generating latent for prompt {n}/2: x") == n
    for n, stamp in ((1, "20250101-000000-001_1"), (2, "20250101-000000-002_2")):
        run.answer(f"INFO Decoding output {n}/2 for prompt: x")
        (out / f"{stamp}.png").write_bytes(PNG)
        assert run.answer(f"INFO Sample images saved to: grid/.render/out/{stamp}") is None
    assert run.delivered == {"k1.png", "k2.png"}
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == ["k1.png", "k2.png"]
    assert list(out.iterdir()) == []


def test_an_image_whose_sampling_failed_is_skipped_not_filed_under_the_next(
    hunyuan_project: Project, tmp_path: Path
) -> None:
    """kohya logs "Skipping decoding for prompt I" and decodes the next: that next image keeps its own cell."""
    run, out = two_image_run(hunyuan_project, tmp_path)
    assert run.answer is not None
    run.answer("WARNING Skipping decoding for prompt 1 due to previous error.")
    (out / "20250101-000000-002_2.png").write_bytes(PNG)
    run.answer("INFO Sample images saved to: grid/.render/out/20250101-000000-002_2")
    assert run.delivered == {"k2.png"}
    assert [p.name for p in (tmp_path / "cells").iterdir()] == ["k2.png"]
