"""Lumina Image 2.0 (``model.family = "lumina"``): kohya's ``lumina_train_network.py`` with ``networks.lora_lumina``.

Everything here is from kohya's ``docs/lumina_train_network.md``, ``lumina_train_network.py``,
``library/lumina_train_util.py``, ``library/lumina_util.py``, ``library/strategy_lumina.py`` and
``lumina_minimal_inference.py`` at the pinned commit. The model is a NextDiT (2B, 26 layers, with
context and noise refiners: the header has ``context_refiner.*``), the Gemma-2 2B text encoder
(``--gemma2``) and the FLUX autoencoder (``--ae``). Each rule says which kohya failure it prevents;
most show only after the models have loaded, or not at all.

- **The network.** No ``*_train_network.py`` checks ``--network_module``; ``networks.lora`` would
  find none of the NextDiT's blocks (``JointTransformerBlock``) and lumina_minimal_inference.py
  loads only ``networks.lora_lumina`` files. The recipe's ``lora`` is always ``networks.lora_lumina``.
- **Defaults.** The docs (4, 6.1) recommend ``--timestep_sampling nextdit_shift`` (kohya's
  default is ``shift``), ``--discrete_flow_shift 6.0``, ``--model_prediction_type raw``, bf16
  and a system prompt (kohya's default is none); their command also has gradient checkpointing
  and cached text-encoder outputs. All are applied to the keys a recipe leaves out.
- **The tokenizer.** kohya loads ``google/gemma-2-2b``'s tokenizer, a gated repository
  (library/strategy_lumina.py ``GEMMA_ID``), with ``AutoTokenizer.from_pretrained(id,
  cache_dir=--tokenizer_cache_dir)``: the folder is a Hugging Face hub cache
  (``models--google--gemma-2-2b``), not kohya's ``ORG_NAME`` folders
  (:data:`TOKENIZER_CACHE`). Downloading it needs a Hugging Face login with the licence accepted.
- **Memory.** docs/lumina_train_network.md lists ``--blocks_to_swap``, ``--fp8_base`` and the
  caches under "Memory and Speed" but gives no figures per GPU size, so ``[launch] vram_gb``
  applies nothing for Lumina 2 (``memory=()``).

Traps found at the pinned commit (each a rule below, or the family's bucket step): the docs and
``lumina_train_network.py`` ask for buckets divisible by 16, but its ``assert_extra_args`` first
calls train_network.py's, which asserts 64 (``AssertionError: bucket_reso_steps is 16. it must be
divisible by 64``, found with the tiny model); the trainer does not check that cached Gemma
outputs can follow shuffled or dropped captions (other families' trainers stop; Lumina's trains on
the captions as first encoded); with ``nextdit_shift`` the training ignores
``discrete_flow_shift`` and the in-training sampler always uses 6.0; the in-training sampler
asserts every seed is above 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType

from lorabuild.kohya.families import flux
from lorabuild.kohya.families.base import (
    Default,
    Family,
    ModelFile,
    ModelHeader,
    NetworkModules,
    TokenizerCache,
)
from lorabuild.kohya.luminainfer import LuminaInference
from lorabuild.problems import Problem, error, warning
from lorabuild.recipe.schema import Recipe

NETWORK_MODULES: NetworkModules = MappingProxyType({"lora": ("networks.lora_lumina", None)})
"""kohya's Lumina LoRA (networks/lora_lumina.py); ``networks.lora`` would miss the NextDiT's blocks."""

# The NextDiT's caption refiner (library/lumina_models.py NextDiT.context_refiner), bare or under the
# prefix of Neta-Lumina's files (lumina_util.load_lumina_model strips "model.diffusion_model.").
SIGNATURES = ("context_refiner.", "model.diffusion_model.context_refiner.")

GEMMA2 = ModelFile("gemma2", "the Gemma-2 2B text encoder", "gemma2", "gemma_2_2b_fp16.safetensors")

# library/strategy_lumina.py: GEMMA_ID.
TOKENIZERS = ("google/gemma-2-2b",)

TOKENIZER_CACHE = TokenizerCache(
    hub=True,
    note=(
        " (google/gemma-2-2b is a gated repository: accept its licence on huggingface.co and log in with "
        "huggingface-cli login or HF_TOKEN first)"
    ),
)
"""kohya reads Gemma's tokenizer from ``--tokenizer_cache_dir`` as a hub cache (see the module's docstring)."""

SYSTEM_PROMPT = "You are an assistant designed to generate high-quality images based on user prompts."
"""docs/lumina_train_network.md 4.1 and 6.1: the general-purpose system prompt."""

MAX_BLOCKS_TO_SWAP = 24
"""lumina_models.NextDiT.enable_block_swap asserts ``blocks_to_swap <= len(self.layers) - 2`` (26 layers)."""

IN_TRAINING_SAMPLER_SHIFT = 6.0
"""lumina_train_util.sample_image_inference: ``FlowMatchEulerDiscreteScheduler(shift=6.0)``, whatever is set."""

_DOCS = "kohya docs/lumina_train_network.md"


# diffusers' Lumina2Transformer2DModel has the caption refiner too, under its time_caption_embed's
# names; kohya's loader reads Alpha-VLLM's only (probe/modelfile.py names that file for what it is).
DIFFUSERS_LAYOUT = ("time_caption_embed.",)


def recognise(header: ModelHeader) -> bool:
    """A Lumina 2 NextDiT file in Alpha-VLLM's layout (single-file only: kohya loads no diffusers model for it)."""
    return (
        header.pipeline is None and header.has_prefix(SIGNATURES) and not header.has_prefix(DIFFUSERS_LAYOUT)
    )


def _uncacheable(recipe: Recipe) -> str | None:
    if recipe.network.train != "unet":
        return "Gemma-2 is trained, so kohya encodes every caption each step anyway"
    changing = flux.caption_changes(recipe)
    return f"{changing} changes captions every epoch, and cached outputs cannot follow" if changing else None


DEFAULTS = (
    Default("training.mixed_precision", "bf16", f"{_DOCS} 6.1's recommended settings"),
    Default("training.save_precision", "bf16", "the precision the model is trained in"),
    Default(
        "training.attention",
        "sdpa",
        "kohya's NextDiT uses PyTorch's attention (or kohya.use_flash_attn); xformers is not used",
    ),
    Default(
        "flow.timestep_sampling",
        "nextdit_shift",
        f"{_DOCS} 4.1 and 6.1: recommended (kohya's default: shift)",
    ),
    Default("flow.discrete_flow_shift", 6.0, f"{_DOCS} 4 and 6.1 (kohya's default too)"),
    Default("flow.model_prediction_type", "raw", f"{_DOCS} 6.1: recommended (kohya's default too)"),
    Default(
        "flow.system_prompt",
        SYSTEM_PROMPT,
        f"{_DOCS} 4.1 and 6.1: the general-purpose system prompt (kohya's default: none)",
    ),
    Default("training.gradient_checkpointing", True, f"{_DOCS} 4: in the documented command"),
    Default(
        "training.cache_text_encoder_outputs",
        True,
        f"{_DOCS} 4: in the documented command (saves Gemma-2's memory)",
        unless=_uncacheable,
    ),
    Default(
        "evaluate.cfg_scale",
        3.5,
        "lumina_minimal_inference.py's --guidance_scale default (the grid's --g; Lumina 2 uses CFG)",
    ),
)


def text_encoder_cache(recipe: Recipe) -> Iterator[Problem]:
    """Cached Gemma outputs fix each caption once, and kohya's Lumina trainer does not say so.

    FLUX's and SD3's trainers stop on shuffled or dropped captions with a cache
    (:func:`lorabuild.kohya.families.flux.text_encoder_cache`, whose dataset check this reuses);
    lumina_train_network.py's assert_extra_args has no such check: it trains on every caption as
    first encoded, unshuffled and never dropped. While Gemma-2 is trained the cache is not read
    (train_network.py encodes the batch's captions every step), so only a frozen Gemma is judged.
    """
    t = recipe.training
    if not (t.cache_text_encoder_outputs or t.cache_text_encoder_outputs_to_disk):
        return
    changing = flux.caption_changes(recipe)
    if changing and recipe.network.train == "unet":
        yield error(
            "training.cache_text_encoder_outputs",
            f"encodes each caption once, but {changing} changes captions every epoch: kohya's Lumina 2 trainer "
            "does not check this and trains on every caption as first encoded (unshuffled, never dropped): turn "
            "one of them off",
        )


def flow_shift(recipe: Recipe) -> Iterator[Problem]:
    """discrete_flow_shift: ignored by nextdit_shift training and by kohya's in-training Lumina sampler.

    lumina_train_util.get_noisy_model_input_and_timesteps reads it only for ``shift`` sampling (the
    others draw their own shift, nextdit_shift from the image size), and sample_image_inference
    builds its scheduler with shift 6.0; only lumina_minimal_inference.py (the grid) is given it.
    """
    f = recipe.flow
    if f.discrete_flow_shift is None or f.discrete_flow_shift == IN_TRAINING_SAMPLER_SHIFT:
        return
    if f.timestep_sampling not in (None, "shift"):
        yield warning(
            "flow.discrete_flow_shift",
            f'is used in training only with flow.timestep_sampling = "shift" (it is "{f.timestep_sampling}") and '
            "never by kohya's in-training samples (always 6.0): only the grid (lumina_minimal_inference.py) uses "
            f"{f.discrete_flow_shift}; set it to 6.0 or remove it, or use shift sampling",
        )


def sample_seeds(recipe: Recipe) -> Iterator[Problem]:
    """kohya's in-training Lumina sampler asserts every seed is above 0 (lumina_train_util.sample_image_inference)."""
    e = recipe.evaluate
    if e.sample_every_n_epochs and e.prompts and 0 in e.seeds:
        i = e.seeds.index(0)
        yield error(
            f"evaluate.seeds[{i}]",
            "is 0, which stops kohya's Lumina 2 trainer at its first in-training sample (lumina_train_util.py "
            'asserts "Invalid seed 0"): use seeds from 1, or turn evaluate.sample_every_n_epochs off',
        )


def block_swap(recipe: Recipe) -> Iterator[Problem]:
    """kohya asserts the swap leaves 2 of the NextDiT's 26 layers, and refuses it beside offloaded checkpointing."""
    swap = recipe.training.blocks_to_swap
    if swap and swap > MAX_BLOCKS_TO_SWAP:
        yield error(
            "training.blocks_to_swap",
            f"is {swap}, but Lumina 2's 26-layer NextDiT swaps at most {MAX_BLOCKS_TO_SWAP} (kohya asserts it after "
            f"loading the model): use {MAX_BLOCKS_TO_SWAP} or fewer",
        )
    if swap and str(recipe.kohya.get("cpu_offload_checkpointing", "")).lower() == "true":
        yield error(
            "training.blocks_to_swap",
            f"cannot be combined with kohya.cpu_offload_checkpointing ({_DOCS} 4.1): keep one",
        )


def attention(recipe: Recipe) -> Iterator[Problem]:
    """Sage attention is for inference only in kohya's NextDiT (lumina_models.NextDiT's docstring)."""
    if str(recipe.kohya.get("use_sage_attn", "")).lower() == "true":
        yield error(
            "kohya.use_sage_attn",
            "is for inference only in kohya's Lumina 2 NextDiT (its backward pass is not supported): remove it, "
            "or use kohya.use_flash_attn",
        )


def split_qkv(recipe: Recipe) -> Iterator[Problem]:
    """networks/lora_lumina.py never builds split q/k/v modules, yet with split_qkv its state_dict pops
    ``lora_down.0.weight``: kohya trains a whole epoch, then stops with a KeyError at the first save
    (seen with the real kohya on the tiny model). It reads only the exact string "True"."""
    value = recipe.network.args.get("split_qkv")
    if value is None:
        return
    said = ("True" if value else "False") if isinstance(value, bool) else str(value)
    if said == "True":
        yield error(
            "network.args.split_qkv",
            "crashes kohya's Lumina 2 LoRA at the pinned commit when it saves the first epoch (networks/lora_lumina.py "
            "state_dict: KeyError ...lora_down.0.weight, after a whole epoch of training): remove it",
        )
    elif said.lower() == "true":
        yield warning(
            "network.args.split_qkv",
            f"is {said!r}, which kohya's Lumina 2 LoRA ignores (it reads only 'True', and with 'True' it crashes at "
            "the first save at the pinned commit): remove it",
        )


def tokenizer_offline(recipe: Recipe) -> Iterator[Problem]:
    """Without a tokenizer folder, training and grid read the gated google/gemma-2-2b from the hub cache."""
    if (
        flux.offline(recipe)
        and recipe.model.tokenizer_cache_dir is None
        and "HF_HOME" not in recipe.launch.env
    ):
        yield warning(
            "launch.env",
            "has HF_HUB_OFFLINE but neither model.tokenizer_cache_dir nor HF_HOME: kohya's Lumina 2 trainer and its "
            "grid (lumina_minimal_inference.py) then read google/gemma-2-2b's tokenizer (a gated repository) from "
            "the Hugging Face cache (~/.cache/huggingface): download it there once (after accepting its licence and "
            "logging in), or set model.tokenizer_cache_dir to a hub cache that holds models--google--gemma-2-2b",
        )


prompt_dashes = flux.prompt_dashes_rule("Lumina 2", LuminaInference.SCRIPT)
"""lumina_minimal_inference.py splits each grid line at every "--" (as FLUX's script does)."""

sd_only_settings = flux.sd_only_rule("Lumina 2", ("model.clip_skip", *flux.NOISE_SETTINGS))
max_token_length = flux.unused_max_token_length_rule(
    "Lumina 2", "Gemma-2 reads flow.gemma2_max_token_length tokens, 256 when left out"
)

RULES = (
    sd_only_settings,
    max_token_length,
    text_encoder_cache,
    flow_shift,
    sample_seeds,
    block_swap,
    attention,
    split_qkv,
    prompt_dashes,
    tokenizer_offline,
)

FAMILY = Family(
    name="lumina",
    label="Lumina 2",
    train_script="lumina_train_network.py",
    network_modules=NETWORK_MODULES,
    recognise=recognise,
    v2=False,
    # lumina_train_network.py asks verify_bucket_reso_steps(16) (the AE's 8x downscale, 2x2 patches),
    # but only after calling train_network.py's assert_extra_args, which asks 64: kohya takes 64.
    bucket_steps_multiple=64,
    vae_overflows_in_fp16=False,
    grid=LuminaInference(),
    # A1111 knows SD1/SD2/SDXL/SD3 and Forge adds Flux: none of them is Lumina 2.
    sd_version="Unknown",
    rules=RULES,
    model_files=(GEMMA2, flux.AE),
    tokenizers=TOKENIZERS,
    tokenizer_cache=TOKENIZER_CACHE,
    model_type=None,
    defaults=DEFAULTS,
    memory=(),
)
