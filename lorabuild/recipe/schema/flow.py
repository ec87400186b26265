"""``[flow]``: how a flow-matching model (FLUX.1, Chroma, SD3, Anima, HunyuanImage 2.1, Lumina 2) is trained.

Every key is optional: left out, the family's default applies (kohya's documented settings, which
differ from kohya's own argparse defaults; :mod:`lorabuild.kohya.families` holds them), and
``lorabuild check`` lists the defaults it applied.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lorabuild.recipe.schema.fields import _Table

TimestepSampling = Literal["sigma", "uniform", "sigmoid", "shift", "flux_shift", "nextdit_shift"]
"""kohya's ``--timestep_sampling`` choices (library/flux_train_utils.py, library/anima_train_utils.py;
``nextdit_shift`` is Lumina 2's only, library/lumina_train_util.py)."""

AttnMode = Literal["torch", "xformers", "flash", "sageattn"]
"""kohya's ``--attn_mode`` choices for Anima and HunyuanImage 2.1 (library/anima_train_utils.py,
hunyuan_image_train_network.py; their "sdpa" is "torch"; sageattn cannot train)."""

PredictionType = Literal["raw", "additive", "sigma_scaled"]
"""kohya's ``--model_prediction_type`` choices."""

WeightingScheme = Literal["sigma_sqrt", "logit_normal", "mode", "cosmap", "none", "uniform"]
"""kohya's ``--weighting_scheme`` choices (library/train_util.py add_dit_training_arguments)."""


class FlowSection(_Table):
    """``[flow]``: the flow-matching families' training settings (kohya's FLUX, SD3, Anima and HunyuanImage options).

    The FLUX.1/Chroma keys are ``flux_train_network.py``'s, the SD3 keys (``weighting_scheme`` to
    ``apply_lg_attn_mask``) ``sd3_train_network.py``'s, the Anima and HunyuanImage keys their scripts';
    a key the family's script lacks is an error.
    """

    guidance_scale: float | None = Field(
        None,
        ge=0,
        description="Guidance the DiT is given while training: 1.0 for FLUX.1 (kohya's default 3.5 is "
        "wrong for LoRA training), 0.0 for Chroma (kohya --guidance_scale).",
    )
    timestep_sampling: TimestepSampling | None = Field(
        None,
        description="How noise levels are drawn: flux_shift for FLUX.1, sigmoid for Chroma "
        "(kohya --timestep_sampling).",
    )
    sigmoid_scale: float | None = Field(
        None,
        gt=0,
        description="Scale of sigmoid, shift and flux_shift sampling (kohya --sigmoid_scale; 1.0).",
    )
    model_prediction_type: PredictionType | None = Field(
        None,
        description="How the prediction is read: raw is kohya's recommendation (kohya --model_prediction_type).",
    )
    discrete_flow_shift: float | None = Field(
        None,
        gt=0,
        description='Shift of the noise schedule; used only with timestep_sampling = "shift" '
        "(kohya --discrete_flow_shift; 3.0).",
    )
    apply_t5_attn_mask: bool | None = Field(
        None,
        description="Mask T5's padding in its encoding and the DiT's attention: required for Chroma "
        "(kohya --apply_t5_attn_mask).",
    )
    t5xxl_max_token_length: int | None = Field(
        None,
        ge=1,
        le=512,
        description="T5 tokens per caption: 512 for FLUX.1 dev and Chroma, 256 for schnell and SD3 when left "
        "out (kohya --t5xxl_max_token_length).",
    )
    weighting_scheme: WeightingScheme | None = Field(
        None,
        description="SD3: how training noise levels are drawn and the loss weighted: uniform (kohya's default; "
        "none is the same), logit_normal, mode, sigma_sqrt or cosmap (kohya --weighting_scheme).",
    )
    logit_mean: float | None = Field(
        None, description='SD3: mean of weighting_scheme = "logit_normal" (kohya --logit_mean; 0.0).'
    )
    logit_std: float | None = Field(
        None,
        gt=0,
        description='SD3: standard deviation of weighting_scheme = "logit_normal" (kohya --logit_std; 1.0).',
    )
    mode_scale: float | None = Field(
        None, description='SD3: scale of weighting_scheme = "mode" (kohya --mode_scale; 1.29).'
    )
    training_shift: float | None = Field(
        None,
        gt=0,
        description="SD3: shift of the training noise levels, on top of the weighting scheme: above 1 towards "
        "noise (composition), below 1 towards detail (kohya --training_shift; 1.0).",
    )
    apply_lg_attn_mask: bool | None = Field(
        None,
        description="SD3: zero CLIP-L and CLIP-G's outputs past the caption's tokens (kohya --apply_lg_attn_mask).",
    )
    attn_mode: AttnMode | None = Field(
        None,
        description="Anima, HunyuanImage 2.1: the DiT's attention implementation; torch (PyTorch's SDPA) when left "
        "out. xformers needs split_attn = true (for HunyuanImage with batches over 1); sageattn cannot train "
        "(kohya --attn_mode).",
    )
    split_attn: bool | None = Field(
        None,
        description="Anima, HunyuanImage 2.1: attention one image of the batch at a time (kohya --split_attn).",
    )
    vae_chunk_size: int | None = Field(
        None,
        ge=1,
        description="Anima, HunyuanImage 2.1: the VAE works in spatial chunks of this size, to save memory "
        "(kohya --vae_chunk_size; no chunking when left out). Anima: kohya rounds odd values up; "
        "HunyuanImage: 16 is kohya's suggestion.",
    )
    vae_disable_cache: bool | None = Field(
        None,
        description="Anima: turn the Qwen-Image VAE's internal cache off, to save memory (kohya --vae_disable_cache).",
    )
    # HunyuanImage 2.1 (hunyuan_image_train_network.py's own options; docs/hunyuan_image_train_network.md).
    fp8_scaled: bool | None = Field(
        None,
        description="HunyuanImage 2.1: train the DiT in scaled fp8, its fp8 option (fp8_base is ignored with a "
        "warning) (kohya --fp8_scaled).",
    )
    fp8_vl: bool | None = Field(
        None, description="HunyuanImage 2.1: the Qwen2.5-VL text encoder in fp8 (kohya --fp8_vl)."
    )
    text_encoder_cpu: bool | None = Field(
        None,
        description="HunyuanImage 2.1: run the text encoders on the CPU (kohya --text_encoder_cpu).",
    )
    # Lumina Image 2.0 (library/lumina_train_util.py add_lumina_train_arguments; docs/lumina_train_network.md).
    system_prompt: str | None = Field(
        None,
        description="Lumina 2: the system prompt put before every caption and prompt, in training and in the grid "
        '(kohya --system_prompt; the docs recommend "You are an assistant designed to generate high-quality '
        'images based on user prompts.").',
    )
    gemma2_max_token_length: int | None = Field(
        None,
        ge=1,
        description="Lumina 2: Gemma-2 tokens per caption, the system prompt included (kohya "
        "--gemma2_max_token_length; 256 when left out).",
    )
