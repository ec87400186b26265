"""Stable Diffusion XL (``model.family = "sdxl"``): kohya's ``sdxl_train_network.py``, rendered with ``gen_img.py --sdxl``."""

from __future__ import annotations

from collections.abc import Iterator

from lorabuild.kohya.families.base import KOHYA_CACHE, SD_NETWORK_MODULES, Family, ModelHeader
from lorabuild.kohya.genimg import GenImg
from lorabuild.problems import Problem, error, warning
from lorabuild.recipe.schema import Recipe

# The second text encoder and the size-conditioning embedding, in the original ("ldm") layout.
SIGNATURES = ("conditioner.embedders.1.", "model.diffusion_model.label_emb.")


def recognise(header: ModelHeader) -> bool:
    """An SDXL checkpoint's second text encoder, or a diffusers SDXL pipeline (it has ``text_encoder_2``)."""
    if header.pipeline is not None:
        return "XL" in header.pipeline or "text_encoder_2" in header.components
    return header.has_prefix(SIGNATURES)


def clip_skip_ignored(recipe: Recipe) -> Iterator[Problem]:
    """kohya ignores clip_skip for SDXL with only a warning."""
    if recipe.model.clip_skip is not None:
        yield error(
            "model.clip_skip",
            "SDXL models ignore clip_skip (kohya only warns, so the setting would silently do nothing): remove it",
        )


def fp16_vae(recipe: Recipe) -> Iterator[Problem]:
    """The stock SDXL VAE overflows in fp16 and kohya stops with "NaN detected in latents"."""
    t = recipe.training
    if t.mixed_precision == "fp16" and not t.no_half_vae and not recipe.model.vae:
        yield warning(
            "training.no_half_vae",
            'SDXL\'s VAE overflows in fp16 (kohya stops with "NaN detected in latents"): set training.no_half_vae = true '
            'or training.mixed_precision = "bf16"',
        )


FAMILY = Family(
    name="sdxl",
    label="SDXL",
    train_script="sdxl_train_network.py",
    network_modules=SD_NETWORK_MODULES,
    recognise=recognise,
    v2=False,
    # kohya's verify_bucket_reso_steps: 32 in sdxl_train_network.py (64 in train_network.py).
    bucket_steps_multiple=32,
    vae_overflows_in_fp16=True,
    grid=GenImg(flags=("--sdxl",)),
    sd_version="SDXL",
    rules=(clip_skip_ignored, fp16_vae),
    model_files=(),
    # library/strategy_sd.py, strategy_sdxl.py.
    tokenizers=("openai/clip-vit-large-patch14", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"),
    tokenizer_cache=KOHYA_CACHE,
    model_type=None,
    defaults=(),
    memory=(),
)
