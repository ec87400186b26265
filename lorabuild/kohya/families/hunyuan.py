"""HunyuanImage 2.1 (``model.family = "hunyuan"``): kohya's ``hunyuan_image_train_network.py`` with
``networks.lora_hunyuan_image``, the grid rendered by ``hunyuan_image_minimal_inference.py``.

Everything here is from kohya's ``docs/hunyuan_image_train_network.md`` and
``hunyuan_image_train_network.py`` at the pinned commit. The model is a DiT (whose header has the
byT5 mapper, ``byt5_in.*``), two text encoders (Qwen2.5-VL 7B, ``--text_encoder``, and byT5,
``--byt5``) and its own 32x VAE (``--vae``). kohya loads the DiT only after caching the text
encoders' outputs, so a wrong DiT fails late; most settings below fail or are ignored only then.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType

from lorabuild.kohya.families.base import (
    KOHYA_CACHE,
    Default,
    Family,
    MemoryPreset,
    ModelFile,
    ModelHeader,
    NetworkModules,
)
from lorabuild.kohya.families.flux import caption_changes, grid_tokenizers_rule, text_encoder_cache
from lorabuild.kohya.hunyuaninfer import HunyuanInference
from lorabuild.problems import Problem, error, warning
from lorabuild.recipe.schema import Recipe

NETWORK_MODULES: NetworkModules = MappingProxyType({"lora": ("networks.lora_hunyuan_image", None)})
"""kohya's HunyuanImage LoRA (networks/lora_hunyuan_image.py); ``networks.lora`` would miss the DiT."""

# The DiT's byT5 mapper (library/hunyuan_image_models.py: byt5_in), bare or under ComfyUI's prefix.
# FLUX's double_blocks.* are in the file too: the registry asks this newer family first.
SIGNATURES = ("byt5_in.", "model.diffusion_model.byt5_in.")


def recognise(header: ModelHeader) -> bool:
    """A HunyuanImage 2.1 DiT file (single-file only: kohya loads no diffusers folder for it)."""
    return header.pipeline is None and header.has_prefix(SIGNATURES)


TEXT_ENCODER = ModelFile(
    "text_encoder", "the Qwen2.5-VL text encoder", "qwen2_5_vl", "qwen_2.5_vl_7b.safetensors"
)
BYT5 = ModelFile("byt5", "the byT5 text encoder", "byt5", "byt5_small_glyphxl_fp16.safetensors")
VAE = ModelFile("vae", "the HunyuanImage-2.1 VAE", "hunyuan_vae", "hunyuan_image_2.1_vae_fp16.safetensors")

# library/hunyuan_image_text_encoder.py: QWEN_2_5_VL_IMAGE_ID, BYT5_TOKENIZER_PATH.
TOKENIZERS = ("Qwen/Qwen2.5-VL-7B-Instruct", "google/byt5-small")

_DOCS = "kohya docs/hunyuan_image_train_network.md"

DEFAULTS = (
    Default(
        "network.train",
        "unet",
        f"{_DOCS}: --network_train_unet_only is required (kohya has no LoRA for HunyuanImage's text encoders)",
    ),
    Default(
        "training.mixed_precision",
        "bf16",
        f"{_DOCS}, section 4: the documented command's; kohya warns that bf16 is recommended when given fp16",
    ),
    Default("training.save_precision", "bf16", "the precision the model was trained in"),
    Default("flow.model_prediction_type", "raw", f"{_DOCS} 6.2's recommended settings (kohya's default too)"),
    Default("flow.discrete_flow_shift", 5.0, f"{_DOCS} 6.2's recommended settings (kohya's default too)"),
    Default(
        "evaluate.cfg_scale",
        3.5,
        "hunyuan_image_minimal_inference.py's --guidance_scale default (the grid's --g); HunyuanImage 2.1 uses CFG",
    ),
    Default("evaluate.steps", 50, f"{_DOCS} 8: the inference example's --infer_steps"),
)


def _uncacheable(recipe: Recipe) -> str | None:
    changing = caption_changes(recipe)
    return f"{changing} changes captions every epoch, and cached outputs cannot follow" if changing else None


def _figures(swap: int | None) -> tuple[Default, ...]:
    why = f"{_DOCS} 6.1 (VRAM usage optimization)"
    command = f"{_DOCS}, section 4: in the documented command"
    settings = [
        Default("training.gradient_checkpointing", True, command),
        Default(
            "training.cache_text_encoder_outputs_to_disk",
            True,
            f"{command} caches them; on disk, because the in-memory cache crashes at the pinned commit "
            "(see the rule text_encoder_cache_in_memory)",
            unless=_uncacheable,
        ),
    ]
    if swap:
        settings += [
            Default("flow.fp8_scaled", True, f"{why}: --fp8_scaled, essential below 40 GB"),
            Default("training.blocks_to_swap", swap, why),
        ]
    return tuple(settings)


MEMORY = (
    MemoryPreset(40, _figures(None), f"{_DOCS} 6.1: 40 GB and more, the standard settings"),
    MemoryPreset(24, _figures(9), f"{_DOCS} 6.1: 24 GB, --fp8_scaled --blocks_to_swap 9"),
    MemoryPreset(12, _figures(32), f"{_DOCS} 6.1: 12 GB, --fp8_scaled --blocks_to_swap 32"),
    MemoryPreset(8, _figures(37), f"{_DOCS} 6.1: 8 GB, --fp8_scaled --blocks_to_swap 37 (the most it swaps)"),
)


def unet_only(recipe: Recipe) -> Iterator[Problem]:
    """kohya has no LoRA for HunyuanImage's text encoders: ``--network_train_unet_only`` is required."""
    if recipe.network.train != "unet":
        yield error(
            "network.train",
            f'must be "unet" for HunyuanImage 2.1 ({_DOCS}: --network_train_unet_only is required; kohya has no '
            "LoRA for its text encoders)",
        )


def fp8(recipe: Recipe) -> Iterator[Problem]:
    """kohya ignores fp8_base for HunyuanImage with a warning; its fp8 option is fp8_scaled."""
    if recipe.training.fp8_base:
        yield error(
            "training.fp8_base",
            "is not supported for HunyuanImage 2.1 (kohya only warns and trains in full precision): "
            "set flow.fp8_scaled = true instead",
        )


def sd_only_settings(recipe: Recipe) -> Iterator[Problem]:
    """Stable Diffusion settings the HunyuanImage trainer does not use (the docs: --v2, --clip_skip, --max_token_length)."""
    if recipe.model.clip_skip is not None:
        yield error(
            "model.clip_skip",
            "means nothing for HunyuanImage 2.1 (its text encoders are Qwen2.5-VL and byT5): remove it",
        )
    if recipe.model.v_parameterization:
        yield error(
            "model.v_parameterization",
            "is for Stable Diffusion; HunyuanImage 2.1 is a flow-matching model: remove it",
        )
    if recipe.training.max_token_length != 75:
        yield warning(
            "training.max_token_length",
            f"is not used by kohya's HunyuanImage trainer ({_DOCS}, section 2): remove it",
        )


def attention(recipe: Recipe) -> Iterator[Problem]:
    """sageattn cannot train, and xformers needs split_attn with batches over 1 (the docs, 4.1)."""
    f = recipe.flow
    if f.attn_mode == "sageattn":
        yield error(
            "flow.attn_mode",
            'cannot be sageattn for training (kohya --attn_mode: "sageattn does not support training (inference only)"): use "torch"',
        )
    if f.attn_mode == "xformers" and recipe.dataset.batch_size > 1 and not f.split_attn:
        yield error(
            "flow.split_attn",
            f"must be true with attn_mode xformers and batches over 1 ({_DOCS} 4.1): set flow.split_attn = true",
        )


def text_encoder_cache_in_memory(recipe: Recipe) -> Iterator[Problem]:
    """The in-memory text-encoder cache crashes HunyuanImage training at the pinned commit.

    strategy_hunyuan_image.cache_batch_outputs keeps each caption's ``ocr_mask`` as a numpy bool
    scalar, which train_util's ``none_or_stack_elements`` cannot turn into a tensor
    (``TypeError: new(): data must be a sequence (got numpy.bool)`` in the first step, after the
    model has loaded); the disk cache stores a 0-d array, which it can. Seen with the tiny model.
    """
    t = recipe.training
    if t.cache_text_encoder_outputs and not t.cache_text_encoder_outputs_to_disk:
        yield error(
            "training.cache_text_encoder_outputs",
            "crashes kohya's HunyuanImage trainer at the pinned commit when the cache is kept in memory "
            '(the first step stops with "TypeError: new(): data must be a sequence (got numpy.bool)"): set '
            "training.cache_text_encoder_outputs_to_disk = true",
        )


tokenizers_offline = grid_tokenizers_rule("HunyuanImage", HunyuanInference.SCRIPT, TOKENIZERS)


FAMILY = Family(
    name="hunyuan",
    label="HunyuanImage 2.1",
    train_script="hunyuan_image_train_network.py",
    network_modules=NETWORK_MODULES,
    recognise=recognise,
    v2=False,
    # hunyuan_image_train_network.py: verify_bucket_reso_steps(32).
    bucket_steps_multiple=32,
    vae_overflows_in_fp16=False,
    grid=HunyuanInference(),
    # No webui files LoRAs for HunyuanImage: A1111's choices are SD1/SD2/SDXL/SD3/Unknown.
    sd_version="Unknown",
    rules=(
        unet_only,
        fp8,
        sd_only_settings,
        attention,
        text_encoder_cache,
        text_encoder_cache_in_memory,
        tokenizers_offline,
    ),
    model_files=(TEXT_ENCODER, BYT5, VAE),
    tokenizers=TOKENIZERS,
    tokenizer_cache=KOHYA_CACHE,
    model_type=None,
    defaults=DEFAULTS,
    memory=MEMORY,
)
