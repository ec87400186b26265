"""Chroma (``model.family = "chroma"``): FLUX.1-schnell's successor, trained by kohya's ``flux_train_network.py``
with ``--model_type chroma``.

What differs from :mod:`~lorabuild.kohya.families.flux` (kohya's ``docs/flux_train_network.md``,
"Training Chroma Models"): no CLIP-L, guidance 0.0, sigmoid timestep sampling, and the T5 attention
mask, which kohya asserts (after loading the model).
"""

from __future__ import annotations

from collections.abc import Iterator

from lorabuild.kohya.families import flux
from lorabuild.kohya.families.base import KOHYA_CACHE, Default, Family, ModelHeader
from lorabuild.problems import Problem, error
from lorabuild.recipe.schema import Recipe

NEGATIVE_PROMPT = (
    "low quality, ugly, unfinished, out of focus, deformed, disfigure, blurry, smudged, restricted palette, "
    "flat colors"
)
"""The negative prompt of kohya's Chroma sample line (docs/flux_train_network.md)."""


def recognise(header: ModelHeader) -> bool:
    """A Chroma DiT file: FLUX's blocks with Chroma's guidance approximator."""
    return header.pipeline is None and header.has_prefix(flux.CHROMA_SIGNATURES)


def t5_attention_mask(recipe: Recipe) -> Iterator[Problem]:
    """flux_train_network.py asserts apply_t5_attn_mask for Chroma."""
    if recipe.flow.apply_t5_attn_mask is False:
        yield error(
            "flow.apply_t5_attn_mask",
            'must be true for Chroma (kohya stops: "apply_t5_attn_mask must be True for Chroma"): '
            "set it to true or remove it",
        )


def no_clip_l(recipe: Recipe) -> Iterator[Problem]:
    """Chroma has no CLIP-L text encoder, so there is none to train."""
    if recipe.network.train == "text_encoder":
        yield error(
            "network.train",
            "Chroma has no CLIP-L text encoder to train (kohya trains T5 only with network.args "
            'train_t5xxl = "True"): use "unet" or "both"',
        )


FAMILY = Family(
    name="chroma",
    label="Chroma",
    train_script="flux_train_network.py",
    network_modules=flux.FLUX_NETWORK_MODULES,
    recognise=recognise,
    v2=False,
    bucket_steps_multiple=32,
    vae_overflows_in_fp16=False,
    grid=flux.FAMILY.grid,
    sd_version="Flux",
    rules=(*flux.RULES, t5_attention_mask, no_clip_l, flux.tokenizers_offline),
    model_files=(flux.T5XXL, flux.AE),
    tokenizers=flux.TOKENIZERS,
    tokenizer_cache=KOHYA_CACHE,
    model_type="chroma",
    defaults=(
        *flux.common_defaults(0.0, "sigmoid"),
        Default("flow.apply_t5_attn_mask", True, "kohya requires it for Chroma"),
        *flux.inference_defaults(0.0, 4.0),
        Default(
            "evaluate.negative_prompt",
            NEGATIVE_PROMPT,
            'kohya docs/flux_train_network.md "Training Chroma Models": Chroma samples need a negative prompt '
            "(its example's)",
        ),
    ),
    memory=flux.MEMORY,
)
