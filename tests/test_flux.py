"""FLUX.1 and Chroma recipes: the family's defaults, memory presets, model files and rules, before any model loads.

Each rule's message is checked as ``lorabuild check`` prints it, with the kohya failure it prevents
named in the rule's docstring (lorabuild/kohya/families/flux.py, chroma.py).
"""

from __future__ import annotations

import pytest

from lorabuild.plan.summary import plan_summary
from lorabuild.problems import format_problem
from lorabuild.stages.check import check, require_plan
from tests.conftest import Project, problems


def test_a_minimal_flux_recipe_gets_kohyas_documented_settings(flux_project: Project) -> None:
    checked = check(flux_project.recipe, [], flux_project.build)
    assert [format_problem(p) for p in checked.problems] == []
    plan = require_plan(checked)
    cfg = plan.config
    assert (plan.family, plan.script) == ("flux", "flux_train_network.py")
    assert cfg.network.network_module == "networks.lora_flux"
    assert cfg.model.model_type == "flux"
    assert (cfg.model.clip_l, cfg.model.t5xxl, cfg.model.ae) == (
        "../../models/clip_l.safetensors",
        "../../models/t5xxl_fp16.safetensors",
        "../../models/ae.safetensors",
    )
    assert (cfg.training.mixed_precision, cfg.saving.save_precision) == ("bf16", "bf16")
    assert (cfg.flow.guidance_scale, cfg.flow.timestep_sampling, cfg.flow.model_prediction_type) == (
        1.0,
        "flux_shift",
        "raw",
    )
    assert not cfg.flow.apply_t5_attn_mask
    summary = plan_summary(plan)
    assert "Flux_v1" in summary and "FLUX.1 -> kohya flux_train_network.py" in summary
    assert 'training.mixed_precision = "bf16"  (FLUX.1 default: FLUX is trained in bf16' in summary
    assert "flow.guidance_scale = 1.0  (FLUX.1 default: kohya docs/flux_train_network.md" in summary


def test_a_key_the_recipe_sets_keeps_its_value(flux_project: Project) -> None:
    plan = require_plan(
        check(
            flux_project.recipe,
            ["flow.guidance_scale=3.5", "training.mixed_precision=no"],
            flux_project.build,
        )
    )
    assert plan.config.flow.guidance_scale == 3.5
    assert plan.config.training.mixed_precision == "no"
    assert plan.defaults is not None
    applied = {a.key for a in plan.defaults.applied}
    assert "flow.guidance_scale" not in applied and "training.mixed_precision" not in applied
    assert "flow.timestep_sampling" in applied


def test_chroma_has_its_own_defaults_and_no_clip_l(flux_project: Project) -> None:
    chroma = ["model.base=models/chroma.safetensors"]
    assert problems(flux_project, *chroma) == [
        "recipe.toml: model.clip_l: Chroma models do not use the CLIP-L text encoder: remove model.clip_l"
    ]
    edit = (
        (flux_project.root / "recipe.toml").read_text().replace('clip_l = "models/clip_l.safetensors"\n', "")
    )
    (flux_project.root / "recipe.toml").write_text(edit)
    plan = require_plan(check(flux_project.recipe, chroma, flux_project.build))
    assert (plan.family, plan.config.model.model_type, plan.config.model.clip_l) == ("chroma", "chroma", None)
    flow = plan.config.flow
    assert (flow.guidance_scale, flow.timestep_sampling, flow.apply_t5_attn_mask) == (0.0, "sigmoid", True)
    assert problems(flux_project, *chroma, "flow.apply_t5_attn_mask=false") == [
        'recipe.toml: flow.apply_t5_attn_mask: must be true for Chroma (kohya stops: "apply_t5_attn_mask must be '
        'True for Chroma"): set it to true or remove it'
    ]


def test_fp16_is_refused_with_the_reason(flux_project: Project) -> None:
    assert problems(flux_project, "training.mixed_precision=fp16") == [
        "recipe.toml: training.mixed_precision: FLUX models overflow in fp16 (the loss turns NaN and samples come "
        'out black): use "bf16" (RTX 30xx and newer), or "no" on a CPU'
    ]


def test_each_model_file_is_required_found_and_the_right_one(flux_project: Project) -> None:
    recipe = flux_project.root / "recipe.toml"
    text = recipe.read_text()
    recipe.write_text(text.replace('t5xxl = "models/t5xxl_fp16.safetensors"\n', ""))
    assert problems(flux_project) == [
        "recipe.toml: model.t5xxl: FLUX.1 training needs the T5-XXL text encoder (kohya --t5xxl): set model.t5xxl "
        "to its file, e.g. t5xxl_fp16.safetensors"
    ]
    recipe.write_text(text.replace("models/t5xxl_fp16.safetensors", "models/ae.safetensors"))
    assert problems(flux_project) == [
        "recipe.toml: model.t5xxl: ae.safetensors is the FLUX autoencoder, not the T5-XXL text encoder (did you "
        "mean it for model.ae?): point model.t5xxl at the T5-XXL text encoder's file, e.g. t5xxl_fp16.safetensors"
    ]
    recipe.write_text(text.replace("models/ae.safetensors", "models/nowhere.safetensors"))
    assert problems(flux_project) == ["recipe.toml: model.ae: file not found: models/nowhere.safetensors"]
    recipe.write_text(text.replace("models/flux1-dev.safetensors", "models/t5xxl_fp16.safetensors"))
    assert problems(flux_project, "model.family=flux") == [
        "recipe.toml: model.base: t5xxl_fp16.safetensors is the T5-XXL text encoder, not a base model: put it in "
        "model.t5xxl and point model.base at the model file itself (for FLUX.1, flux1-dev.safetensors)"
    ]


def test_sd_recipes_refuse_flux_files(project: Project) -> None:
    assert problems(project, 'model.t5xxl="x.safetensors"') == [
        "recipe.toml: model.t5xxl: SD1.x models do not use the T5-XXL text encoder: remove model.t5xxl"
    ]


@pytest.mark.parametrize(
    ("vram", "swap", "batch", "optimizer"),
    [(24, None, 2, "AdamW"), (16, 8, 1, "AdamW"), (12, 16, 1, "AdamW8bit"), (8, 28, 1, "AdamW8bit")],
)
def test_vram_gb_picks_kohyas_figures_for_the_card(
    flux_project: Project, vram: int, swap: int | None, batch: int, optimizer: str
) -> None:
    plan = require_plan(check(flux_project.recipe, [f"launch.vram_gb={vram}"], flux_project.build))
    t = plan.config.training
    assert (t.fp8_base, t.gradient_checkpointing, t.cache_text_encoder_outputs) == (True, True, True)
    assert (t.blocks_to_swap, plan.dataset_config.dataset.batch_size) == (swap, batch)
    assert plan.config.optimizer.optimizer_type == optimizer
    assert f"memory preset: kohya docs/flux_train_network.md 6.1: {vram} GB" in plan_summary(plan)


def test_vram_gb_leaves_what_the_recipe_sets_and_what_would_break(flux_project: Project) -> None:
    plan = require_plan(
        check(
            flux_project.recipe,
            ["launch.vram_gb=12", "training.blocks_to_swap=20", "dataset.shuffle_caption=true"],
            flux_project.build,
        )
    )
    assert plan.config.training.blocks_to_swap == 20
    assert not plan.config.training.cache_text_encoder_outputs  # shuffled captions cannot be cached
    assert (
        "not applied: training.cache_text_encoder_outputs: dataset.shuffle_caption changes captions every epoch"
        in plan_summary(plan)
    )


def test_vram_gb_below_the_documented_figures_warns(flux_project: Project, project: Project) -> None:
    assert problems(flux_project, "launch.vram_gb=6") == [
        "recipe.toml: launch.vram_gb: warning: kohya's docs give FLUX.1 settings down to 8 GB; 6 GB may run out of "
        "memory even with the 8 GB settings applied (try a smaller dataset.resolution)"
    ]


def test_vram_gb_means_nothing_yet_for_sd(project: Project) -> None:
    assert problems(project, "launch.vram_gb=12") == [
        "recipe.toml: launch.vram_gb: warning: lorabuild has no memory settings for SD1.x models, so it changes "
        "nothing: set training.gradient_checkpointing and dataset.batch_size yourself, or remove it"
    ]


def test_cached_text_encoder_outputs_cannot_follow_changing_captions(flux_project: Project) -> None:
    cache = "training.cache_text_encoder_outputs=true"
    assert problems(flux_project, cache, "dataset.shuffle_caption=true") == [
        "recipe.toml: training.cache_text_encoder_outputs: encodes each caption once, but dataset.shuffle_caption "
        'changes captions every epoch (kohya stops: "when caching Text Encoder output, either caption_dropout_rate, '
        'shuffle_caption ... cannot be used"): turn one of them off'
    ]
    assert problems(flux_project, cache, 'network.args.train_t5xxl="True"', "network.train=both") == [
        "recipe.toml: training.cache_text_encoder_outputs: cannot be used while T5-XXL is trained "
        "(network.args.train_t5xxl; kohya stops with a ValueError): turn one of them off"
    ]


def test_deprecated_and_broken_options(flux_project: Project) -> None:
    assert problems(flux_project, "kohya.split_mode=true") == [
        "recipe.toml: kohya.split_mode: is deprecated in kohya (it becomes --blocks_to_swap 18 with a warning): set "
        "training.blocks_to_swap instead (or launch.vram_gb for kohya's figures)"
    ]
    assert problems(flux_project, 'network.args.split_qkv="True"') == [
        "recipe.toml: network.args.split_qkv: crashes kohya's FLUX LoRA at the pinned commit "
        "(networks/lora_flux.py: too many values to unpack): remove it"
    ]


def test_settings_flux_ignores(flux_project: Project) -> None:
    assert problems(flux_project, "model.clip_skip=2", "training.max_token_length=225") == [
        "recipe.toml: model.clip_skip: means nothing for FLUX (its trainer always uses CLIP-L's pooled output and "
        "T5): remove it",
        "recipe.toml: training.max_token_length: warning: is not used by kohya's FLUX trainer (the T5 caption "
        "length is flow.t5xxl_max_token_length, 512 for dev and Chroma, 256 for schnell when left out): remove it",
    ]
    assert problems(flux_project, "flow.discrete_flow_shift=3.1") == [
        'recipe.toml: flow.discrete_flow_shift: warning: is used only with flow.timestep_sampling = "shift" (it is '
        '"flux_shift", so kohya ignores it): set timestep_sampling = "shift" or remove discrete_flow_shift'
    ]


def test_sd_networks_are_refused(flux_project: Project) -> None:
    assert problems(flux_project, "network.module=loha") == [
        'recipe.toml: network.module: "loha" cannot train FLUX.1 models: use "lora"'
    ]


def test_an_option_the_script_lacks_is_named_by_its_recipe_key(project: Project) -> None:
    assert problems(project, "training.blocks_to_swap=8") == [
        "recipe.toml: training.blocks_to_swap: SD1.x models are trained by kohya's train_network.py, which has no "
        "--blocks_to_swap: remove training.blocks_to_swap"
    ]
    assert problems(project, "flow.guidance_scale=1.0") == [
        "recipe.toml: flow.guidance_scale: SD1.x models are trained by kohya's train_network.py, which has no "
        "--guidance_scale: remove flow.guidance_scale"
    ]


def test_sd_noise_settings_flux_ignores(flux_project: Project) -> None:
    said = problems(
        flux_project,
        "training.noise_offset=0.05",
        "training.min_snr_gamma=5",
        "model.v_parameterization=true",
    )
    assert said == [
        f"recipe.toml: {key}: is for Stable Diffusion; kohya's FLUX trainer accepts it and silently ignores it: "
        "remove it"
        for key in ("training.noise_offset", "training.min_snr_gamma", "model.v_parameterization")
    ]


def test_flux_tokenizers_missing_offline_is_an_error(flux_project: Project) -> None:
    """FLUX loads CLIP-L's and T5's tokenizers; told to stay offline, kohya could not fetch a missing one."""
    (flux_project.root / "tok" / "openai_clip-vit-large-patch14").mkdir(parents=True)
    recipe = flux_project.root / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("[model]\n", '[model]\ntokenizer_cache_dir = "tok"\n'))
    assert problems(flux_project) == [
        "recipe.toml: model.tokenizer_cache_dir: warning: tok has no google_t5-v1_1-xxl yet: kohya downloads the "
        "tokenizer (google/t5-v1_1-xxl) from Hugging Face and saves it there, which fails without network access: "
        "run it once online, or copy that folder there"
    ]
    assert problems(flux_project, 'launch.env.HF_HUB_OFFLINE="1"') == [
        "recipe.toml: model.tokenizer_cache_dir: tok has no google_t5-v1_1-xxl yet: kohya downloads the "
        "tokenizer (google/t5-v1_1-xxl) from Hugging Face and saves it there, which launch.env.HF_HUB_OFFLINE "
        "forbids: run it once online, or copy that folder there"
    ]


def test_an_offline_flux_grid_needs_a_hub_cache(flux_project: Project) -> None:
    """flux_minimal_inference.py takes no tokenizer folder: offline, they must be in HF_HOME's hub cache."""
    prompts = 'evaluate.prompts=["a photo of {trigger}"]'
    assert problems(flux_project, prompts) == []
    said = problems(flux_project, prompts, 'launch.env.HF_HUB_OFFLINE="1"')
    assert len(said) == 1 and said[0].startswith(
        "recipe.toml: launch.env: warning: has HF_HUB_OFFLINE but no HF_HOME: the FLUX grid"
    )
    assert problems(flux_project, prompts, 'launch.env={HF_HUB_OFFLINE = "1", HF_HOME = "hf"}') == []


def test_blocks_to_swap_fits_flux(flux_project: Project) -> None:
    assert problems(flux_project, "training.blocks_to_swap=35") == []
    assert problems(flux_project, "training.blocks_to_swap=36") == [
        "recipe.toml: training.blocks_to_swap: is 36, but FLUX models can swap at most 35 blocks (kohya stops after "
        'loading the model: "Cannot swap more than 17 double blocks"): use 35 or fewer'
    ]
