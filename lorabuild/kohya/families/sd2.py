"""Stable Diffusion 2.x (``model.family = "sd2"``): kohya's ``train_network.py --v2``, rendered with ``gen_img.py --v2``."""

from __future__ import annotations

from collections.abc import Iterator

from lorabuild.kohya.families.base import KOHYA_CACHE, SD_NETWORK_MODULES, Family, ModelHeader
from lorabuild.kohya.genimg import GenImg
from lorabuild.problems import Problem, warning
from lorabuild.recipe.schema import Recipe

# The OpenCLIP ViT-H text encoder's tensor names in the original ("ldm") layout.
SIGNATURES = ("cond_stage_model.model.transformer.", "cond_stage_model.model.token_embedding")


def recognise(header: ModelHeader) -> bool:
    """An SD2 checkpoint's OpenCLIP names, or a diffusers folder whose text encoder is 1024 wide."""
    if header.pipeline is not None:
        return header.text_encoder_width == 1024
    return header.has_prefix(SIGNATURES)


def clip_skip(recipe: Recipe) -> Iterator[Problem]:
    """kohya: "v2 with clip_skip will be unexpected"."""
    if recipe.model.clip_skip and recipe.model.clip_skip > 1:
        yield warning(
            "model.clip_skip",
            "SD2 models are not trained with clip_skip (kohya: unexpected results): set model.clip_skip = 1 or remove it",
        )


FAMILY = Family(
    name="sd2",
    label="SD2.x",
    train_script="train_network.py",
    network_modules=SD_NETWORK_MODULES,
    recognise=recognise,
    v2=True,
    bucket_steps_multiple=64,
    vae_overflows_in_fp16=False,
    grid=GenImg(flags=("--v2",)),
    sd_version="SD2",
    rules=(clip_skip,),
    model_files=(),
    # library/strategy_sd.py, strategy_sdxl.py.
    tokenizers=("stabilityai/stable-diffusion-2",),
    tokenizer_cache=KOHYA_CACHE,
    model_type=None,
    defaults=(),
    memory=(),
)
