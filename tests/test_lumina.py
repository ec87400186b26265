"""Lumina Image 2.0 recipes: the family's defaults, model files, rules, compiled config and grid renderer,
before any model loads.

Each rule's message is checked as ``lorabuild check`` prints it, with the kohya failure it prevents
named in the rule's docstring (lorabuild/kohya/families/lumina.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lorabuild.kohya import families
from lorabuild.kohya.families import lumina
from lorabuild.kohya.gridrender import GridImage, GridJob
from lorabuild.kohya.luminainfer import LuminaInference
from lorabuild.kohya.prompts import PromptLine
from lorabuild.plan.summary import plan_summary
from lorabuild.probe.modelfile import component_from_names, family_from_names, probe_model
from lorabuild.problems import format_problem
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.install import card
from tests.conftest import COMPONENT_KEYS, FAMILY_KEYS, Project, problems, write_safetensors

LUMINA_RECIPE = """\
name = "Lumina_v1"

[model]
base = "models/lumina-image-2.safetensors"
gemma2 = "models/gemma_2_2b_fp16.safetensors"
ae = "models/ae.safetensors"

[dataset]
resolution = [512, 512]

[[dataset.subsets]]
source = "data/char"
trigger = "uiharu_kazari"
repeats = 2

[network]
dim = 8
alpha = 8
train = "unet"

[training]
epochs = 2
"""


@pytest.fixture
def lumina_project(project: Project) -> Project:
    """The ``project`` with a Lumina 2 DiT, Gemma-2 and FLUX AE headers and a Lumina recipe."""
    project.write_recipe(LUMINA_RECIPE)
    project.write_models(
        {"lumina-image-2": "lumina"}, {"gemma_2_2b_fp16": "gemma2", "ae": "ae", "qwen3": "qwen3"}
    )
    return project


def test_a_minimal_lumina_recipe_gets_kohyas_documented_settings(lumina_project: Project) -> None:
    checked = check(lumina_project.recipe, [], lumina_project.build)
    assert [format_problem(p) for p in checked.problems] == []
    plan = require_plan(checked)
    cfg = plan.config
    assert (plan.family, plan.script) == ("lumina", "lumina_train_network.py")
    assert cfg.network.network_module == "networks.lora_lumina"
    assert cfg.model.model_type is None and not cfg.model.v2
    assert (cfg.model.gemma2, cfg.model.ae) == (
        "../../models/gemma_2_2b_fp16.safetensors",
        "../../models/ae.safetensors",
    )
    assert (cfg.training.mixed_precision, cfg.saving.save_precision) == ("bf16", "bf16")
    assert cfg.training.sdpa and not cfg.training.xformers and cfg.training.gradient_checkpointing
    assert cfg.training.cache_text_encoder_outputs
    f = cfg.flow
    # docs/lumina_train_network.md 6.1: nextdit_shift (kohya's default: shift), shift 6.0, raw.
    assert (f.timestep_sampling, f.discrete_flow_shift, f.model_prediction_type) == (
        "nextdit_shift",
        6.0,
        "raw",
    )
    assert f.system_prompt == lumina.SYSTEM_PROMPT
    assert (f.gemma2_max_token_length, f.guidance_scale, f.attn_mode) == (None, None, None)
    assert plan.grid.cfg_scale == 3.5 and plan.grid.guidance is None
    summary = plan_summary(plan)
    assert "Lumina 2 -> kohya lumina_train_network.py" in summary
    assert (
        'flow.timestep_sampling = "nextdit_shift"  (Lumina 2 default: kohya docs/lumina_train_network.md'
        in summary
    )
    # No memory preset: kohya's docs give no figures per card size.
    small = require_plan(check(lumina_project.recipe, ["launch.vram_gb=8"], lumina_project.build)).config
    assert (small.training, small.optimizer, small.flow) == (cfg.training, cfg.optimizer, cfg.flow)
    assert lumina.FAMILY.memory == ()


def test_the_dit_and_gemma_are_told_from_their_headers(tmp_path: Path) -> None:
    assert family_from_names(FAMILY_KEYS["lumina"]) == "lumina"
    # Neta-Lumina's single file: the DiT under model.diffusion_model. (lumina_util.load_lumina_model strips it).
    assert family_from_names(["model.diffusion_model.context_refiner.0.attention.qkv.weight"]) == "lumina"
    # Gemma-2 bare, under "model." (ComfyUI) or Neta-Lumina's prefix (lumina_util.load_gemma2 strips each).
    for prefix in ("", "model.", "text_encoders.gemma2_2b.transformer.model."):
        assert component_from_names([f"{prefix}layers.0.pre_feedforward_layernorm.weight"]) == "gemma2"
    # Qwen3 (Anima's) is not Gemma-2, and no other family's file is Lumina's.
    assert component_from_names(COMPONENT_KEYS["qwen3"]) == "qwen3"
    for family, names in FAMILY_KEYS.items():
        assert (family_from_names(names) == "lumina") == (family == "lumina")
    gemma = probe_model(write_safetensors(tmp_path / "g.safetensors", COMPONENT_KEYS["gemma2"]))
    assert (gemma.family, gemma.component, gemma.what) == (None, "gemma2", "the Gemma-2 text encoder")


def test_a_dit_in_diffusers_layout_is_refused(lumina_project: Project) -> None:
    """kohya's load_lumina_model reads Alpha-VLLM's names only (strict=False): a diffusers file would load empty."""
    diffusers = [
        "context_refiner.0.attn.to_q.weight",
        "time_caption_embed.caption_embedder.1.weight",
        "x_embedder.weight",
    ]
    write_safetensors(lumina_project.root / "models" / "lumina-image-2.safetensors", diffusers)
    said = problems(lumina_project, "model.family=lumina")
    assert said[0].startswith(
        "recipe.toml: model.base: this is a Lumina 2 DiT in diffusers' layout (kohya's Lumina loader reads only "
        "Alpha-VLLM's"
    )


def test_the_model_files_are_set_and_in_their_slots(lumina_project: Project) -> None:
    swapped = problems(
        lumina_project, "model.gemma2=models/ae.safetensors", "model.ae=models/gemma_2_2b_fp16.safetensors"
    )
    assert swapped == [
        "recipe.toml: model.ae: gemma_2_2b_fp16.safetensors is the Gemma-2 text encoder, not the FLUX autoencoder "
        "(did you mean it for model.gemma2?): point model.ae at the FLUX autoencoder's file, e.g. ae.safetensors",
        "recipe.toml: model.gemma2: ae.safetensors is the FLUX autoencoder, not the Gemma-2 2B text encoder (did you "
        "mean it for model.ae?): point model.gemma2 at the Gemma-2 2B text encoder's file, e.g. "
        "gemma_2_2b_fp16.safetensors",
    ]
    assert problems(lumina_project, "model.gemma2=models/qwen3.safetensors") == [
        "recipe.toml: model.gemma2: qwen3.safetensors is the Qwen3 text encoder, not the Gemma-2 2B text encoder "
        "(did you mean it for model.qwen3?): point model.gemma2 at the Gemma-2 2B text encoder's file, e.g. "
        "gemma_2_2b_fp16.safetensors"
    ]
    assert problems(lumina_project, "model.qwen3=models/qwen3.safetensors") == [
        "recipe.toml: model.qwen3: Lumina 2 models do not use the Qwen3-0.6B text encoder: remove model.qwen3"
    ]
    assert problems(lumina_project, "model.base=models/gemma_2_2b_fp16.safetensors")[0].startswith(
        "recipe.toml: model.base: gemma_2_2b_fp16.safetensors is the Gemma-2 text encoder, not a base model: put it "
        "in model.gemma2 and point model.base at the model file itself"
    )


def test_the_network_is_kohyas_lumina_lora(lumina_project: Project) -> None:
    assert problems(lumina_project, "network.module=locon") == [
        'recipe.toml: network.module: "locon" cannot train Lumina 2 models: use "lora"'
    ]


def test_buckets_divide_by_64_whatever_the_docs_say(lumina_project: Project) -> None:
    """lumina_train_network.py asserts 16, after train_network.py's assert_extra_args asserted 64."""
    said = problems(lumina_project, "dataset.bucket_reso_steps=16")
    assert len(said) == 1 and said[0].startswith("recipe.toml: dataset.bucket_reso_steps: ")
    assert "64" in said[0]
    assert problems(lumina_project, "dataset.bucket_reso_steps=64") == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["model.clip_skip=2"],
            "recipe.toml: model.clip_skip: is for Stable Diffusion; kohya's Lumina 2 trainer accepts it and silently "
            "ignores it: remove it",
        ),
        (
            ["training.noise_offset=0.05"],
            "recipe.toml: training.noise_offset: is for Stable Diffusion; kohya's Lumina 2 trainer accepts it and "
            "silently ignores it: remove it",
        ),
        (
            ["training.min_snr_gamma=5"],
            "recipe.toml: training.min_snr_gamma: is for Stable Diffusion; kohya's Lumina 2 trainer accepts it and "
            "silently ignores it: remove it",
        ),
        (
            ["training.max_token_length=225"],
            "recipe.toml: training.max_token_length: warning: is not used by kohya's Lumina 2 trainer (Gemma-2 reads "
            "flow.gemma2_max_token_length tokens, 256 when left out): remove it",
        ),
        (
            ["dataset.shuffle_caption=true", "training.cache_text_encoder_outputs=true"],
            "recipe.toml: training.cache_text_encoder_outputs: encodes each caption once, but dataset.shuffle_caption "
            "changes captions every epoch: kohya's Lumina 2 trainer does not check this and trains on every caption "
            "as first encoded (unshuffled, never dropped): turn one of them off",
        ),
        (
            ["flow.timestep_sampling=nextdit_shift", "flow.discrete_flow_shift=3.0"],
            "recipe.toml: flow.discrete_flow_shift: warning: is used in training only with flow.timestep_sampling = "
            '"shift" (it is "nextdit_shift") and never by kohya\'s in-training samples (always 6.0): only the grid '
            "(lumina_minimal_inference.py) uses 3.0; set it to 6.0 or remove it, or use shift sampling",
        ),
        (
            ['evaluate.prompts=["a"]', "evaluate.seeds=[3, 0]", "evaluate.sample_every_n_epochs=1"],
            "recipe.toml: evaluate.seeds[1]: is 0, which stops kohya's Lumina 2 trainer at its first in-training "
            'sample (lumina_train_util.py asserts "Invalid seed 0"): use seeds from 1, or turn '
            "evaluate.sample_every_n_epochs off",
        ),
        (
            ["training.blocks_to_swap=25"],
            "recipe.toml: training.blocks_to_swap: is 25, but Lumina 2's 26-layer NextDiT swaps at most 24 (kohya "
            "asserts it after loading the model): use 24 or fewer",
        ),
        (
            ["training.blocks_to_swap=8", "kohya.cpu_offload_checkpointing=true"],
            "recipe.toml: training.blocks_to_swap: cannot be combined with kohya.cpu_offload_checkpointing (kohya "
            "docs/lumina_train_network.md 4.1): keep one",
        ),
        (
            ["kohya.use_sage_attn=true"],
            "recipe.toml: kohya.use_sage_attn: is for inference only in kohya's Lumina 2 NextDiT (its backward pass "
            "is not supported): remove it, or use kohya.use_flash_attn",
        ),
        (
            ['evaluate.prompts=["a photo--b"]'],
            "recipe.toml: evaluate.prompts[0]: must not contain '--' for Lumina 2: lumina_minimal_inference.py splits "
            "its prompt lines at every '--'",
        ),
        (
            ['evaluate.prompts=["a"]', 'evaluate.negative_prompt="-"'],
            "recipe.toml: evaluate.negative_prompt: must not be '-' for Lumina 2: lumina_minimal_inference.py reads "
            "'--n -' as no negative prompt",
        ),
        (
            ["flow.guidance_scale=1.0"],
            "recipe.toml: flow.guidance_scale: Lumina 2 models are trained by kohya's lumina_train_network.py, which "
            "has no --guidance_scale: remove flow.guidance_scale",
        ),
        (
            ['launch.env.HF_HUB_OFFLINE="1"'],
            "recipe.toml: launch.env: warning: has HF_HUB_OFFLINE but neither model.tokenizer_cache_dir nor HF_HOME",
        ),
    ],
)
def test_lumina_rules(lumina_project: Project, overrides: list[str], expected: str) -> None:
    said = problems(lumina_project, *overrides)
    assert any(p.startswith(expected) for p in said), said


def test_rules_that_stay_quiet(lumina_project: Project) -> None:
    # The docs' shift 6.0 with nextdit_shift is what kohya's sampler uses anyway; seed 0 without in-training
    # samples reaches only lumina_minimal_inference.py, which takes it.
    assert problems(lumina_project, "flow.discrete_flow_shift=6.0", "evaluate.seeds=[0]") == []
    # While Gemma-2 is trained the cache is not read (train_network.py encodes every step): nothing to refuse.
    cache = ["training.cache_text_encoder_outputs=true", "dataset.shuffle_caption=true"]
    assert problems(lumina_project, *cache, "network.train=both") == []


def test_the_text_encoder_cache_default_follows_the_recipe(lumina_project: Project) -> None:
    def cached(*overrides: str) -> bool:
        plan = require_plan(check(lumina_project.recipe, list(overrides), lumina_project.build))
        return plan.config.training.cache_text_encoder_outputs

    assert cached()
    assert not cached("dataset.shuffle_caption=true")
    assert not cached("dataset.caption_dropout_rate=0.1")
    assert not cached("network.train=both")


def test_the_gated_tokenizer_is_said_before_launch(lumina_project: Project) -> None:
    """kohya reads google/gemma-2-2b from --tokenizer_cache_dir as a hub cache (models--google--gemma-2-2b)."""
    cache = lumina_project.root / "hub"
    (cache / "google_gemma-2-2b").mkdir(parents=True)  # kohya's layout for the other families: not Lumina's
    offline = ['model.tokenizer_cache_dir="hub"', 'launch.env.HF_HUB_OFFLINE="1"']
    assert problems(lumina_project, *offline) == [
        f"recipe.toml: model.tokenizer_cache_dir: {cache} has no models--google--gemma-2-2b yet: kohya downloads the "
        "tokenizer (google/gemma-2-2b) from Hugging Face and saves it there, which launch.env.HF_HUB_OFFLINE forbids "
        "(google/gemma-2-2b is a gated repository: accept its licence on huggingface.co and log in with "
        "huggingface-cli login or HF_TOKEN first): run it once online, or copy that folder there"
    ]
    online = problems(lumina_project, 'model.tokenizer_cache_dir="hub"')
    assert len(online) == 1 and online[0].startswith("recipe.toml: model.tokenizer_cache_dir: warning: ")
    (cache / "models--google--gemma-2-2b").mkdir()
    assert problems(lumina_project, *offline) == []


def test_the_grid(lumina_project: Project) -> None:
    prompts = 'evaluate.prompts=["a photo of {trigger}"]'
    plan = require_plan(
        check(
            lumina_project.recipe,
            [prompts, "flow.gemma2_max_token_length=128", 'model.tokenizer_cache_dir="hub"'],
            lumina_project.build,
        )
    )
    grid = families.get(plan.grid.family).grid
    assert isinstance(grid, LuminaInference)
    argv = grid.argv(
        plan.grid, script="s.py", outdir="o", network_files=["a.safetensors", "b.safetensors"], python="py"
    )
    assert argv == [
        "py",
        "s.py",
        "--pretrained_model_name_or_path",
        "../../models/lumina-image-2.safetensors",
        "--gemma2_path",
        "../../models/gemma_2_2b_fp16.safetensors",
        "--ae_path",
        "../../models/ae.safetensors",
        "--dtype",
        "bfloat16",
        "--gemma2_dtype",
        "bfloat16",
        "--ae_dtype",
        "bfloat16",
        "--system_prompt",
        lumina.SYSTEM_PROMPT,
        "--gemma2_max_token_length",
        "128",
        "--discrete_flow_shift",
        "6.0",
        "--output_dir",
        "o",
        "--lora_weights",
        "a.safetensors;1.0",
        "b.safetensors;1.0",
        "--interactive",
    ]  # every dtype given: the script's default for each is bf16
    # The grid reads the gated tokenizer from the training's hub cache.
    assert grid.env({"HF_HUB_OFFLINE": "1"}, plan.grid)["HF_HUB_CACHE"] == "../../hub"
    line = plan.grid.prompt_line("a photo", 7, multipliers=(0.0, 0.8)).lumina_line()
    assert line == "a photo --w 512 --h 512 --s 28 --d 7 --g 3.5 --m 0.0,0.8"  # --g is Lumina's CFG scale
    inputs = plan.grid.image_inputs()
    assert inputs["family"] == "lumina" and inputs["system_prompt"] == lumina.SYSTEM_PROMPT
    assert "sampler" not in inputs
    loaded = check(lumina_project.recipe, [], lumina_project.build).loaded.recipe
    assert card(plan, loaded, 2, 1.0, "0" * 64)["sd version"] == "Unknown"


def _image(prompt: str, multipliers: tuple[float, ...], name: str) -> GridImage:
    line = PromptLine(
        prompt=prompt, width=64, height=64, seed=3, steps=4, cfg_scale=4.0, multipliers=multipliers
    )
    return GridImage(line, name)


def test_the_conversation_files_each_image_and_says_exit(tmp_path: Path) -> None:
    """lumina_minimal_inference.py asks 'Enter prompt (or 'exit')', logs 'Image saved to PATH', ends on exit."""
    job = GridJob(
        images=(_image("a", (0.0,), "one.png"), _image("b", (1.0,), "two.png")),
        network_files=("output/a.safetensors",),
        script="/k/lumina_minimal_inference.py",
        workdir="grid/.render",
        outdir="grid/.render/out",
        cells_dir=tmp_path / "grid" / "cells",
        cwd=tmp_path,
        python="py",
        env={},
    )

    class Settings:
        base = "m.safetensors"
        gemma2 = "g.safetensors"
        ae = "ae.safetensors"
        system_prompt = None
        gemma2_max_token_length = None
        flow_shift = None
        tokenizer_cache_dir = None
        flux_dtype = "float32"

    run = LuminaInference().prepare(Settings(), job)
    assert run.argv[-1] == "--interactive" and "HF_HUB_CACHE" not in run.env
    assert run.answer is not None
    asks = "Enter prompt (or 'exit'). Options: --w <int> --h <int> --s <int> --d <int> --g <float> --n <str>"
    out = tmp_path / "grid" / ".render" / "out"
    out.mkdir(parents=True)
    replies = []
    for colour in ((255, 0, 0), (0, 255, 0)):
        reply = run.answer(asks)
        assert reply is not None
        replies.append(reply.text)
        saved = out / "image_20250101120000_3.png"  # both named by the second: the first is moved first
        Image.new("RGB", (8, 8), colour).save(saved)
        assert run.answer(f"INFO     Image saved to grid/.render/out/{saved.name}") is None
    last = run.answer(asks)
    assert last is not None and last.text == "exit\n" and last.close
    assert replies == [
        "a --w 64 --h 64 --s 4 --d 3 --g 4.0 --m 0.0\n",
        "b --w 64 --h 64 --s 4 --d 3 --g 4.0 --m 1.0\n",
    ]
    assert run.delivered == {"one.png", "two.png"}
    assert Image.open(tmp_path / "grid" / "cells" / "one.png").getpixel((0, 0)) == (255, 0, 0)
    assert Image.open(tmp_path / "grid" / "cells" / "two.png").getpixel((0, 0)) == (0, 255, 0)


def test_the_tiny_sizes_are_coupled() -> None:
    """NextDiT asserts its head width is sum(axes_dims); its caption embedder reads Gemma-2's hidden states."""
    from lorabuild.demo import luminasizes as sizes

    dit, gemma = sizes.NEXTDIT, sizes.GEMMA2
    assert dit["dim"] // dit["n_heads"] == sum(dit["axes_dims"]) and all(a % 2 == 0 for a in dit["axes_dims"])
    assert dit["cap_feat_dim"] == gemma["hidden_size"]
    assert dit["in_channels"] == 16 and dit["patch_size"] == 2  # the FLUX AE's latents, kohya's 2x2 patches
    assert gemma["vocab_size"] == sizes.VOCAB_SIZE
    assert gemma["num_hidden_layers"] >= 2  # kohya reads hidden_states[-2]


def test_the_stand_in_gemma_tokenizer_loads_as_kohya_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AutoTokenizer.from_pretrained("google/gemma-2-2b", cache_dir=...) offline, as strategy_lumina.py calls it."""
    transformers = pytest.importorskip("transformers", reason="kohya's Python stack is not installed")
    pytest.importorskip("tokenizers", reason="kohya's Python stack is not installed")
    from lorabuild.demo import luminasizes
    from lorabuild.demo.fluxmodel import write_hub_cache
    from lorabuild.demo.luminamodel import GEMMA_TOKENIZER_ID, build_gemma_tokenizer

    build_gemma_tokenizer(tmp_path / "tok")
    write_hub_cache(tmp_path / "hf_home", GEMMA_TOKENIZER_ID, tmp_path / "tok")
    cache = tmp_path / "hf_home" / "hub"
    assert (cache / lumina.TOKENIZER_CACHE.folder(GEMMA_TOKENIZER_ID)).is_dir()
    # kohya runs with HF_HUB_OFFLINE=1 (read when huggingface_hub is imported): here, local_files_only.
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        GEMMA_TOKENIZER_ID, cache_dir=str(cache), local_files_only=True
    )
    assert type(tokenizer).__name__ == "GemmaTokenizerFast"
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (0, 1, 2)
    tokenizer.padding_side = "right"
    text = f"{lumina.SYSTEM_PROMPT} <Prompt Start> my_character, ein Mädchen"
    ids = tokenizer(
        [text], max_length=256, padding="max_length", truncation=True, pad_to_multiple_of=8
    ).input_ids[0]
    assert ids[0] == 2 and len(ids) == 256 and max(ids) < luminasizes.VOCAB_SIZE
    assert tokenizer.decode([i for i in ids if i > 3]) == text


def test_split_qkv_is_refused_before_an_epoch_is_spent(lumina_project: Project) -> None:
    """kohya trains a whole epoch with split_qkv, then stops at the first save (a KeyError, seen on the tiny model)."""
    assert problems(lumina_project, "network.args.split_qkv=true") == [
        "recipe.toml: network.args.split_qkv: crashes kohya's Lumina 2 LoRA at the pinned commit when it saves the "
        "first epoch (networks/lora_lumina.py state_dict: KeyError ...lora_down.0.weight, after a whole epoch of "
        "training): remove it"
    ]
    assert problems(lumina_project, 'network.args.split_qkv="true"') == [
        "recipe.toml: network.args.split_qkv: warning: is 'true', which kohya's Lumina 2 LoRA ignores (it reads only 'True', "
        "and with 'True' it crashes at the first save at the pinned commit): remove it"
    ]
    assert problems(lumina_project, "network.args.split_qkv=false") == []
