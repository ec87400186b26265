"""Stable Diffusion 1.x (``model.family = "sd15"``): kohya's ``train_network.py``, rendered with ``gen_img.py --v1``."""

from __future__ import annotations

from lorabuild.kohya.families.base import KOHYA_CACHE, SD_NETWORK_MODULES, Family, ModelHeader
from lorabuild.kohya.genimg import GenImg

# The CLIP-L text encoder's tensor names in the original ("ldm") layout.
SIGNATURES = ("cond_stage_model.transformer.",)


def recognise(header: ModelHeader) -> bool:
    """An SD1 checkpoint's CLIP-L names, or a diffusers folder whose text encoder is 768 wide."""
    if header.pipeline is not None:
        return header.text_encoder_width == 768
    return header.has_prefix(SIGNATURES)


FAMILY = Family(
    name="sd15",
    label="SD1.x",
    train_script="train_network.py",
    network_modules=SD_NETWORK_MODULES,
    recognise=recognise,
    v2=False,
    bucket_steps_multiple=64,
    vae_overflows_in_fp16=False,
    grid=GenImg(flags=("--v1",)),
    sd_version="SD1",
    rules=(),
    model_files=(),
    # library/strategy_sd.py, strategy_sdxl.py.
    tokenizers=("openai/clip-vit-large-patch14",),
    tokenizer_cache=KOHYA_CACHE,
    model_type=None,
    defaults=(),
    memory=(),
)
