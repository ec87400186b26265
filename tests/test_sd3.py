"""SD3/SD3.5 recipes: the family's defaults, memory presets, model files, rules, compile and grid, before any model loads.

Each rule's message is checked as ``lorabuild check`` prints it, with the kohya failure it prevents
named in the rule's docstring (lorabuild/kohya/families/sd3.py).
"""

from __future__ import annotations

import pytest

from lorabuild.kohya import families
from lorabuild.kohya.sd3infer import Sd3Inference
from lorabuild.plan.summary import plan_summary
from lorabuild.probe.modelfile import probe_model
from lorabuild.problems import format_problem
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.install import card
from tests.conftest import FAMILY_KEYS, Project, problems, write_safetensors

SD3_RECIPE = """\
name = "Sd3_v1"

[model]
base = "models/sd3.5_large.safetensors"
clip_l = "models/clip_l.safetensors"
clip_g = "models/clip_g.safetensors"
t5xxl = "models/t5xxl_fp16.safetensors"

[dataset]
resolution = [512, 512]

[[dataset.subsets]]
source = "data/char"
trigger = "uiharu_kazari"
repeats = 2

[network]
dim = 8
alpha = 1
train = "unet"

[training]
epochs = 2
"""

# What a checkpoint holding its text encoders in SAI's layout also has (sd3_utils.load_clip_l/g, load_t5xxl).
BUNDLED_KEYS = [
    "text_encoders.clip_l.transformer.text_model.embeddings.position_embedding.weight",
    "text_encoders.clip_g.transformer.text_model.embeddings.position_embedding.weight",
    "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.k.weight",
]


@pytest.fixture
def sd3_project(project: Project) -> Project:
    """The ``project`` with an SD3.5 Large checkpoint header, its three text encoders' and an SD3 recipe."""
    project.write_recipe(SD3_RECIPE)
    project.write_models(
        {"sd3.5_large": "sd3"}, {"clip_l": "clip_l", "clip_g": "clip_g", "t5xxl_fp16": "t5xxl"}
    )
    write_safetensors(project.root / "models" / "sd3_incl_te.safetensors", FAMILY_KEYS["sd3"] + BUNDLED_KEYS)
    return project


def without(project: Project, *keys: str) -> None:
    recipe = project.root / "recipe.toml"
    lines = recipe.read_text().splitlines(keepends=True)
    recipe.write_text("".join(line for line in lines if line.split(" ", 1)[0] not in keys))


def test_a_minimal_sd3_recipe_compiles_to_kohyas_sd3_trainer(sd3_project: Project) -> None:
    checked = check(sd3_project.recipe, [], sd3_project.build)
    assert [format_problem(p) for p in checked.problems] == []
    plan = require_plan(checked)
    cfg = plan.config
    assert (plan.family, plan.script) == ("sd3", "sd3_train_network.py")
    assert cfg.network.network_module == "networks.lora_sd3"  # not the doc's networks.lora
    assert cfg.model.model_type is None and not cfg.model.v2
    assert (cfg.model.clip_l, cfg.model.clip_g, cfg.model.t5xxl) == (
        "../../models/clip_l.safetensors",
        "../../models/clip_g.safetensors",
        "../../models/t5xxl_fp16.safetensors",
    )
    assert (cfg.training.mixed_precision, cfg.saving.save_precision, cfg.training.sdpa) == (
        "bf16",
        "bf16",
        True,
    )
    # kohya's documented SD3 values are its argparse defaults: nothing is written for them.
    assert cfg.document()["model"].keys() == {"pretrained_model_name_or_path", "clip_l", "clip_g", "t5xxl"}
    assert "flow" not in cfg.document()
    assert plan.grid.cfg_scale == 5.0 and plan.grid.guidance is None
    summary = plan_summary(plan)
    assert "SD3 -> kohya sd3_train_network.py" in summary
    assert 'training.mixed_precision = "bf16"  (SD3 default:' in summary


def test_the_sd3_flow_keys_compile_under_their_kohya_names(sd3_project: Project) -> None:
    plan = require_plan(
        check(
            sd3_project.recipe,
            [
                'flow.weighting_scheme="logit_normal"',
                "flow.logit_mean=0.1",
                "flow.logit_std=1.2",
                "flow.training_shift=3.0",
                "flow.apply_lg_attn_mask=true",
                "flow.apply_t5_attn_mask=true",
                "flow.t5xxl_max_token_length=154",
            ],
            sd3_project.build,
        )
    )
    assert plan.config.document()["flow"] == {
        "apply_t5_attn_mask": True,
        "t5xxl_max_token_length": 154,
        "weighting_scheme": "logit_normal",
        "logit_mean": 0.1,
        "logit_std": 1.2,
        "training_shift": 3.0,
        "apply_lg_attn_mask": True,
    }
    grid = plan.grid
    assert (grid.apply_lg_attn_mask, grid.apply_t5_attn_mask, grid.t5xxl_max_token_length) == (
        True,
        True,
        154,
    )


def test_text_encoders_inside_the_checkpoint_are_refused(sd3_project: Project) -> None:
    """kohya detects SAI's bundled text encoders but loads none of their weights (sd3_utils, pinned commit)."""
    assert probe_model(sd3_project.root / "models" / "sd3_incl_te.safetensors").bundled == {
        "clip_l",
        "clip_g",
        "t5xxl",
    }
    inside = "model.base=models/sd3_incl_te.safetensors"
    # CLIP-L's file wins over the checkpoint's copy; CLIP-G's and T5's do not.
    assert problems(sd3_project, inside) == [
        f"recipe.toml: model.{key}: sd3_incl_te.safetensors holds the {label} text encoder "
        f"(text_encoders.{key}.transformer.* tensors), which kohya takes instead of any file but loads none of (it "
        "strips only the part before transformer., so every weight stays empty and training stops after the main "
        f"model has loaded): use the release's file without text encoders and set model.{key} to {example}"
        for key, label, example in (
            ("t5xxl", "T5-XXL", "t5xxl_fp16.safetensors"),
            ("clip_g", "CLIP-G", "clip_g.safetensors"),
        )
    ]
    without(sd3_project, "clip_l")
    assert problems(sd3_project, inside)[0] == (
        "recipe.toml: model.clip_l: sd3_incl_te.safetensors holds the CLIP-L text encoder "
        "(text_encoders.clip_l.transformer.* tensors), which kohya takes when model.clip_l is not set but loads "
        "none of (it strips only the part before transformer., so every weight stays empty and training stops after "
        "the main model has loaded): use the release's file without text encoders and set model.clip_l to "
        "clip_l.safetensors"
    )


def test_each_text_encoder_file_is_required(sd3_project: Project) -> None:
    without(sd3_project, "clip_l", "clip_g", "t5xxl")
    assert problems(sd3_project) == [
        f"recipe.toml: model.{key}: SD3 training needs the {label} text encoder (kohya --{key}): set model.{key} "
        f"to its file, e.g. {example}"
        for key, label, example in (
            ("clip_l", "CLIP-L", "clip_l.safetensors"),
            ("t5xxl", "T5-XXL", "t5xxl_fp16.safetensors"),
            ("clip_g", "CLIP-G", "clip_g.safetensors"),
        )
    ]


def test_a_swapped_text_encoder_is_caught(sd3_project: Project) -> None:
    assert problems(sd3_project, "model.clip_g=models/clip_l.safetensors") == [
        "recipe.toml: model.clip_g: clip_l.safetensors is the CLIP-L text encoder, not the CLIP-G text encoder (did "
        "you mean it for model.clip_l?): point model.clip_g at the CLIP-G text encoder's file, e.g. clip_g.safetensors"
    ]


def test_other_families_refuse_clip_g(flux_project: Project) -> None:
    assert problems(flux_project, "model.clip_g=models/clip_l.safetensors") == [
        "recipe.toml: model.clip_g: FLUX.1 models do not use the CLIP-G text encoder: remove model.clip_g"
    ]


@pytest.mark.parametrize(
    ("vram", "swap", "optimizer"),
    [(24, None, "AdamW"), (16, 32, "AdamW8bit"), (8, 32, "AdamW8bit"), (6, 32, "AdamW8bit")],
)
def test_vram_gb_applies_the_documented_command(
    sd3_project: Project, vram: int, swap: int | None, optimizer: str
) -> None:
    plan = require_plan(check(sd3_project.recipe, [f"launch.vram_gb={vram}"], sd3_project.build))
    t = plan.config.training
    assert (t.gradient_checkpointing, t.cache_text_encoder_outputs, t.fp8_base) == (True, True, False)
    assert (t.blocks_to_swap, plan.config.optimizer.optimizer_type) == (swap, optimizer)
    assert "gives no VRAM figures" in plan_summary(plan)
    assert not [p for p in problems(sd3_project, f"launch.vram_gb={vram}") if "launch.vram_gb" in p]


def test_fp16(sd3_project: Project) -> None:
    assert problems(sd3_project, "training.mixed_precision=fp16") == [
        "recipe.toml: training.mixed_precision: warning: fp16 turns SD3 training NaN (kohya-ss/sd-scripts#1407; "
        'kohya does not stop, the LoRA is broken): use "bf16" (RTX 30xx and newer), or "no" on a CPU'
    ]
    assert problems(sd3_project, "training.full_fp16=true", "training.mixed_precision=fp16")[-1] == (
        "recipe.toml: training.full_fp16: turns SD3 training NaN on the second step (kohya-ss/sd-scripts#2116): "
        "turn it off (full_bf16 works)"
    )


def test_settings_sd3_ignores(sd3_project: Project) -> None:
    said = problems(
        sd3_project,
        "model.clip_skip=2",
        "training.max_token_length=225",
        "training.noise_offset=0.05",
        "model.v_parameterization=true",
    )
    assert said == [
        "recipe.toml: model.clip_skip: means nothing for SD3 (kohya's SD3 trainer always uses the second-to-last "
        "CLIP layers; kohya docs/sd3_train_network.md: not used): remove it",
        "recipe.toml: training.noise_offset: is for Stable Diffusion; kohya's SD3 trainer accepts it and silently "
        "ignores it: remove it",
        "recipe.toml: model.v_parameterization: is for Stable Diffusion; kohya's SD3 trainer accepts it and "
        "silently ignores it: remove it",
        "recipe.toml: training.max_token_length: warning: is not used by kohya's SD3 trainer (CLIP reads 77 tokens; "
        "the T5 caption length is flow.t5xxl_max_token_length, 256 when left out): remove it",
    ]


def test_weighting_parameters_without_their_scheme(sd3_project: Project) -> None:
    assert problems(sd3_project, "flow.mode_scale=1.5", "flow.logit_std=2") == [
        'recipe.toml: flow.logit_std: warning: is used only with flow.weighting_scheme = "logit_normal" (it is '
        '"uniform", so kohya ignores it): set weighting_scheme = "logit_normal" or remove logit_std',
        'recipe.toml: flow.mode_scale: warning: is used only with flow.weighting_scheme = "mode" (it is "uniform", '
        'so kohya ignores it): set weighting_scheme = "mode" or remove mode_scale',
    ]
    assert problems(sd3_project, 'flow.weighting_scheme="mode"', "flow.mode_scale=1.5") == []


def test_flux_keys_are_not_sd3s(sd3_project: Project) -> None:
    assert problems(sd3_project, "flow.guidance_scale=1.0") == [
        "recipe.toml: flow.guidance_scale: SD3 models are trained by kohya's sd3_train_network.py, which has no "
        "--guidance_scale: remove flow.guidance_scale"
    ]


def test_sd3_keys_are_not_fluxs(flux_project: Project) -> None:
    assert problems(flux_project, "flow.training_shift=3.0") == [
        "recipe.toml: flow.training_shift: FLUX.1 models are trained by kohya's flux_train_network.py, which has no "
        "--training_shift: remove flow.training_shift"
    ]


def test_sd3_options_in_the_passthrough_name_their_recipe_key(sd3_project: Project) -> None:
    said = problems(sd3_project, "kohya.training_shift=3.0")
    assert len(said) == 1 and "flow.training_shift" in said[0]


def test_cached_text_encoder_outputs(sd3_project: Project) -> None:
    cache = "training.cache_text_encoder_outputs=true"
    assert problems(sd3_project, cache, "dataset.shuffle_caption=true")[0].startswith(
        "recipe.toml: training.cache_text_encoder_outputs: encodes each caption once, but dataset.shuffle_caption"
    )
    # CLIP-L/G trained with T5 cached is kohya's partial cache: allowed.
    assert problems(sd3_project, cache, "network.train=both") == []


def test_the_grid(sd3_project: Project) -> None:
    prompts = 'evaluate.prompts=["a photo of {trigger}--x"]'
    assert problems(sd3_project, prompts) == [
        "recipe.toml: evaluate.prompts[0]: must not contain '--' for SD3: sd3_minimal_inference.py splits its prompt "
        "lines at every '--'"
    ]
    prompts = 'evaluate.prompts=["a photo of {trigger}"]'
    assert problems(sd3_project, prompts, "model.vae=models/clip_l.safetensors") == [
        "recipe.toml: model.vae: warning: is used for training only: the SD3 grid (sd3_minimal_inference.py) has no "
        "--vae and decodes with the checkpoint's own VAE, so a checkpoint without one cannot render the grid"
    ]
    said = problems(sd3_project, prompts, 'launch.env.HF_HUB_OFFLINE="1"')
    assert len(said) == 1 and "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k" in said[0]
    plan = require_plan(
        check(sd3_project.recipe, [prompts, "training.mixed_precision=fp16"], sd3_project.build)
    )
    grid = families.get(plan.grid.family).grid
    assert isinstance(grid, Sd3Inference)
    argv = grid.argv(
        plan.grid, script="s.py", outdir="o", network_files=["a.safetensors", "b.safetensors"], python="py"
    )
    assert argv == [
        "py",
        "s.py",
        "--ckpt_path",
        "../../models/sd3.5_large.safetensors",
        "--clip_l",
        "../../models/clip_l.safetensors",
        "--clip_g",
        "../../models/clip_g.safetensors",
        "--t5xxl",
        "../../models/t5xxl_fp16.safetensors",
        "--fp16",
        "--output_dir",
        "o",
        "--lora_weights",
        "a.safetensors;1.0",
        "b.safetensors;1.0",
        "--interactive",
    ]  # trained in fp16: rendered in fp16 (float32, the script's default, takes no flag)
    line = plan.grid.prompt_line("a photo", 7, multipliers=(0.0, 0.8)).flux_line()
    assert line == "a photo --w 512 --h 512 --s 28 --d 7 --c 5.0 --m 0.0,0.8"  # no --g: SD3 has no guidance
    assert plan.grid.image_inputs()["family"] == "sd3" and "sampler" not in plan.grid.image_inputs()
    assert (
        card(plan, check(sd3_project.recipe, [], sd3_project.build).loaded.recipe, 2, 1.0, "0" * 64)[
            "sd version"
        ]
        == "SD3"
    )


def test_a_diffusers_sd3_folder_is_refused(sd3_project: Project) -> None:
    folder = sd3_project.root / "models" / "sd35"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusion3Pipeline"}')
    said = problems(sd3_project, "model.base=models/sd35")
    assert said[0].startswith(
        "recipe.toml: model.base: is a diffusers folder; kohya's SD3 trainer (sd3_train_network.py) takes the "
        "single-file model"
    )
