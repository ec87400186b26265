"""Anima recipes: the family's defaults, model files, rules, compiled config and grid renderer, before any model loads.

Each rule's message is checked as ``lorabuild check`` prints it, with the kohya failure it prevents
named in the rule's docstring (lorabuild/kohya/families/anima.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lorabuild.kohya.animainfer import AnimaInference
from lorabuild.kohya.families import anima
from lorabuild.kohya.gridrender import GridImage, GridJob
from lorabuild.kohya.prompts import PromptLine
from lorabuild.plan.summary import plan_summary
from lorabuild.problems import format_problem
from lorabuild.stages.check import check, require_plan
from tests.conftest import COMPONENT_KEYS, Project, problems, write_safetensors

ANIMA_RECIPE = """\
name = "Anima_v1"

[model]
base = "models/anima.safetensors"
qwen3 = "models/qwen_3_06b_base.safetensors"
vae = "models/qwen_image_vae.safetensors"

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


@pytest.fixture
def anima_project(project: Project) -> Project:
    """The ``project`` with an Anima DiT, its Qwen3 and Qwen-Image VAE headers and an Anima recipe."""
    project.write_recipe(ANIMA_RECIPE)
    project.write_models(
        {"anima": "anima"}, {"qwen_3_06b_base": "qwen3", "qwen_image_vae": "qwen_image_vae", "ae": "ae"}
    )
    return project


def test_a_minimal_anima_recipe_gets_kohyas_documented_settings(anima_project: Project) -> None:
    checked = check(anima_project.recipe, [], anima_project.build)
    assert [format_problem(p) for p in checked.problems] == []
    plan = require_plan(checked)
    cfg = plan.config
    assert (plan.family, plan.script) == ("anima", "anima_train_network.py")
    assert cfg.network.network_module == "networks.lora_anima"
    assert cfg.model.model_type is None and not cfg.model.v2
    assert (cfg.model.qwen3, cfg.model.vae) == (
        "../../models/qwen_3_06b_base.safetensors",
        "../../models/qwen_image_vae.safetensors",
    )
    assert (cfg.training.mixed_precision, cfg.saving.save_precision) == ("bf16", "bf16")
    assert cfg.training.sdpa and not cfg.training.xformers and cfg.training.gradient_checkpointing
    assert cfg.training.cache_text_encoder_outputs
    assert (cfg.flow.timestep_sampling, cfg.flow.vae_chunk_size, cfg.flow.vae_disable_cache) == (
        "sigmoid",
        64,
        True,
    )
    assert (cfg.flow.guidance_scale, cfg.flow.model_prediction_type, cfg.flow.attn_mode) == (None, None, None)
    summary = plan_summary(plan)
    assert "Anima -> kohya anima_train_network.py" in summary
    assert "flow.vae_chunk_size = 64  (Anima default: kohya docs/anima_train_network.md 4" in summary
    # No memory preset: kohya's docs give no figures per card size.
    assert plan.defaults is not None
    small = require_plan(check(anima_project.recipe, ["launch.vram_gb=12"], anima_project.build)).config
    assert (small.training, small.optimizer, small.flow) == (cfg.training, cfg.optimizer, cfg.flow)


def test_the_dit_is_checked_before_kohya_loads_it_lazily(anima_project: Project) -> None:
    """kohya loads Anima's DiT after caching the text encoder's outputs: a wrong DiT fails late there."""
    assert problems(anima_project, "model.base=models/missing.safetensors", "model.family=anima") == [
        f"recipe.toml: model.base: file or folder not found: {anima_project.root / 'models' / 'missing.safetensors'}"
    ]
    assert problems(anima_project, "model.base=models/ae.safetensors")[0].startswith(
        "recipe.toml: model.base: ae.safetensors is the FLUX autoencoder, not a base model"
    )


def test_the_model_files_are_set_and_in_their_slots(anima_project: Project) -> None:
    swapped = problems(
        anima_project,
        "model.qwen3=models/qwen_image_vae.safetensors",
        "model.vae=models/qwen_3_06b_base.safetensors",
    )
    assert swapped == [
        "recipe.toml: model.qwen3: qwen_image_vae.safetensors is the Qwen-Image VAE, not the Qwen3-0.6B text encoder "
        "(did you mean it for model.vae?): point model.qwen3 at the Qwen3-0.6B text encoder's file, e.g. "
        "qwen_3_06b_base.safetensors",
        "recipe.toml: model.vae: qwen_3_06b_base.safetensors is the Qwen3 text encoder, not the Qwen-Image VAE "
        "(did you mean it for model.qwen3?): point model.vae at the Qwen-Image VAE's file, e.g. "
        "qwen_image_vae.safetensors",
    ]
    assert problems(anima_project, "model.ae=models/ae.safetensors") == [
        "recipe.toml: model.ae: Anima models do not use the FLUX autoencoder: remove model.ae"
    ]


def test_an_sd_recipe_keeps_its_optional_vae(project: Project) -> None:
    """model.vae is Anima's required file and SD's optional one: an SD recipe with a VAE is no error."""
    write_safetensors(project.root / "models" / "vae.safetensors", COMPONENT_KEYS["ae"])
    assert not [p for p in problems(project, "model.vae=models/vae.safetensors") if "model.vae" in p]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["training.fp8_base=true"],
            "recipe.toml: training.fp8_base: is not supported by kohya's Anima trainer (it turns fp8_base off with a "
            "warning and trains the DiT in full precision, using more memory than planned): remove it",
        ),
        (
            ["training.noise_offset=0.05"],
            "recipe.toml: training.noise_offset: is for Stable Diffusion; kohya's Anima trainer accepts it and "
            "silently ignores it: remove it",
        ),
        (
            ["dataset.shuffle_caption=true", "training.cache_text_encoder_outputs=true"],
            "recipe.toml: training.cache_text_encoder_outputs: encodes each caption once, but dataset.shuffle_caption "
            'changes captions every epoch (kohya stops: "when caching Text Encoder output, shuffle_caption, '
            'token_warmup_step or caption_tag_dropout_rate cannot be used"): turn one of them off',
        ),
        (
            ["training.cache_text_encoder_outputs=true", "network.train=both"],
            "recipe.toml: training.cache_text_encoder_outputs: cannot be used while the text encoder is trained "
            '(network.train = "both"; kohya stops: "network for Text Encoder cannot be trained with caching Text '
            'Encoder outputs"): set network.train = "unet" or turn caching off',
        ),
        (
            ['flow.attn_mode="xformers"'],
            "recipe.toml: flow.attn_mode: xformers attention in kohya's Anima DiT needs split attention (kohya "
            '--attn_mode help: "xformers requires --split_attn"): set flow.split_attn = true, or use "sdpa"',
        ),
        (
            ['flow.attn_mode="sageattn"'],
            "recipe.toml: flow.attn_mode: sageattn is for inference only; kohya cannot train with it: use "
            '"torch" (or leave it out)',
        ),
        (
            ["training.blocks_to_swap=27"],
            "recipe.toml: training.blocks_to_swap: is at most 26 for Anima's 28-block DiT (kohya "
            "docs/anima_train_network.md 4.1; got 27)",
        ),
        (
            ["model.llm_adapter_path=models/ae.safetensors"],
            "recipe.toml: model.llm_adapter_path: warning: is accepted by kohya's Anima trainer but not used at the pinned "
            "commit (the LLM adapter is loaded from the DiT file, and a DiT without one fails to load): remove it",
        ),
        (
            ["flow.guidance_scale=1.0"],
            "recipe.toml: flow.guidance_scale: Anima models are trained by kohya's anima_train_network.py, which has "
            "no --guidance_scale: remove flow.guidance_scale",
        ),
    ],
)
def test_anima_rules(anima_project: Project, overrides: list[str], expected: str) -> None:
    assert expected in problems(anima_project, *overrides)


def test_caption_dropout_is_cacheable_for_anima(anima_project: Project) -> None:
    """Anima's cache supports caption dropout (is_text_encoder_output_cacheable(cache_supports_dropout=True))."""
    assert problems(anima_project, "dataset.caption_dropout_rate=0.1") == []
    both = problems(anima_project, "dataset.caption_dropout_rate=0.1", "dataset.caption_tag_dropout_rate=0.1")
    assert both == []  # the cache is left off (a tag dropout changes what is encoded), so nothing to refuse
    plan = require_plan(
        check(
            anima_project.recipe,
            ["dataset.caption_dropout_rate=0.1", "dataset.caption_tag_dropout_rate=0.1"],
            anima_project.build,
        )
    )
    assert not plan.config.training.cache_text_encoder_outputs
    plan = require_plan(
        check(anima_project.recipe, ["dataset.caption_dropout_rate=0.1"], anima_project.build)
    )
    assert plan.config.training.cache_text_encoder_outputs


def test_the_cards_sd_version_is_unknown() -> None:
    """A1111 files LoRAs under SD1/SD2/SDXL/SD3 and Forge adds Flux: Anima is none of them."""
    assert anima.FAMILY.sd_version == "Unknown"
    assert anima.FAMILY.memory == ()


def image(prompt: str, multipliers: tuple[float, ...], name: str) -> GridImage:
    line = PromptLine(
        prompt=prompt, width=64, height=64, seed=3, steps=4, cfg_scale=3.5, multipliers=multipliers
    )
    return GridImage(line, name)


def job(images: tuple[GridImage, ...]) -> GridJob:
    return GridJob(
        images=images,
        network_files=("output/a-000001.safetensors", "output/a.safetensors"),
        script="/k/anima_minimal_inference.py",
        workdir="grid/.render",
        outdir="grid/.render/out",
        cells_dir=Path("/b/grid/cells"),
        cwd=Path("/b"),
        python="py",
        env={"HF_HUB_OFFLINE": "1"},
    )


class Settings:
    base = "../m/anima.safetensors"
    vae = "../m/vae.safetensors"
    qwen3 = "../m/qwen3.safetensors"
    vae_chunk_size = 64
    vae_disable_cache = True


def test_the_grid_loads_the_model_once_per_lora_setting() -> None:
    """anima_minimal_inference.py merges the LoRA at load time: one process per (epoch, weight), one for the baseline."""
    renderer = AnimaInference()
    whole = job(
        (
            image("a", (0.0, 0.0), "base-a.png"),
            image("a", (0.8, 0.0), "e1-a.png"),
            image("b", (0.8, 0.0), "e1-b.png"),
            image("a", (0.0, 1.0), "e2-a.png"),
        )
    )
    parts = renderer.split(whole)
    assert [[i.name for i in p.images] for p in parts] == [
        ["base-a.png"],
        ["e1-a.png", "e1-b.png"],
        ["e2-a.png"],
    ]
    assert [p.network_files for p in parts] == [
        (),
        ("output/a-000001.safetensors",),
        ("output/a.safetensors",),
    ]
    run = renderer.prepare(Settings(), parts[1])
    assert run.argv == [
        "py",
        "/k/anima_minimal_inference.py",
        "--dit",
        "../m/anima.safetensors",
        "--vae",
        "../m/vae.safetensors",
        "--text_encoder",
        "../m/qwen3.safetensors",
        "--vae_chunk_size",
        "64",
        "--vae_disable_cache",
        "--save_path",
        "grid/.render/out",
        "--from_file",
        "grid/.render/prompts.txt",
        "--lora_weight",
        "output/a-000001.safetensors",
        "--lora_multiplier",
        "0.8",
    ]
    assert run.inputs == {
        "prompts.txt": "a --w 64 --h 64 --d 3 --s 4 --g 3.5\nb --w 64 --h 64 --d 3 --s 4 --g 3.5\n"
    }
    assert "--lora_weight" not in renderer.prepare(Settings(), parts[0]).argv


def test_each_saved_image_is_moved_to_its_cell_as_it_appears(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "grid" / ".render" / "out"
    out.mkdir(parents=True)
    the_job = job((image("a", (0.8, 0.0), "one.png"), image("b", (0.8, 0.0), "two.png")))
    the_job = GridJob(**{**the_job.__dict__, "cwd": tmp_path, "cells_dir": tmp_path / "grid" / "cells"})
    run = AnimaInference().prepare(Settings(), the_job)
    assert run.answer is not None
    # Both saved within one millisecond, one seed: kohya would overwrite the first with the second.
    name = "grid/.render/out/20250101-120000-001_3_"
    Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    line = f"   INFO     Sample images saved to: {name}        anima_minimal_inference.py:651"
    assert run.answer(line) is None
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / f"{name}.png")
    run.answer(line)
    assert run.delivered == {"one.png", "two.png"}
    assert Image.open(tmp_path / "grid" / "cells" / "two.png").getpixel((0, 0)) == (255, 0, 0)
    assert run.progress("INFO Generating latent for prompt 2/2: b") == 2


def test_prompts_kohya_would_cut_or_skip_are_refused(anima_project: Project) -> None:
    """anima_minimal_inference.py cuts --from_file lines at " --" and skips "#" lines: the rules every family has refuse both."""
    found = problems(anima_project, 'evaluate.prompts=["a --b", "# c"]')
    assert [f.split(":")[1] for f in found] == [" evaluate.prompts[0]", " evaluate.prompts[1]"]
