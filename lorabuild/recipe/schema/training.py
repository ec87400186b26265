"""What is trained and how: ``[model]``, ``[network]``, ``[optimizer]`` and ``[training]``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from lorabuild.recipe.schema.fields import Family, RecipePath, Scheduler, _Table


class ModelSection(_Table):
    """``[model]``: the base checkpoint to train the LoRA on."""

    base: RecipePath = Field(
        description="Base model: a .safetensors/.ckpt file or a diffusers folder "
        "(kohya --pretrained_model_name_or_path)."
    )
    family: Family | None = Field(
        None,
        description="Model family: sd15, sd2, sdxl, flux (FLUX.1 dev/schnell), chroma, sd3 (SD3 and SD3.5 "
        "Medium/Large), anima, hunyuan (HunyuanImage 2.1) or lumina (Lumina Image 2.0). Detected from the "
        "checkpoint's header when omitted. Decides the kohya script (train_network.py, sdxl_train_network.py, "
        "flux_train_network.py, sd3_train_network.py, anima_train_network.py, hunyuan_image_train_network.py, "
        "lumina_train_network.py), its defaults and the model files it needs.",
    )
    v_parameterization: bool = Field(
        False,
        description="The model predicts v (SD2 768-v and v-pred finetunes; kohya --v_parameterization).",
    )
    clip_skip: int | None = Field(
        None,
        ge=1,
        le=12,
        description="Use the Nth-from-last CLIP layer: 2 for anime models, 1 for realistic ones "
        "(kohya --clip_skip; SD1/2 only).",
    )
    vae: RecipePath | None = Field(
        None,
        description="Replacement VAE file or folder (kohya --vae); required for Anima (its Qwen-Image VAE file, "
        "e.g. qwen_image_vae.safetensors) and HunyuanImage 2.1 (its VAE file, e.g. "
        "hunyuan_image_2.1_vae_fp16.safetensors).",
    )
    tokenizer_cache_dir: RecipePath | None = Field(
        None,
        description="Folder holding the tokenizers (CLIP, T5) for offline runs (kohya --tokenizer_cache_dir); "
        "Lumina 2 reads its Gemma-2 tokenizer from it as a Hugging Face hub cache (models--google--gemma-2-2b).",
    )
    clip_l: RecipePath | None = Field(
        None,
        description="FLUX.1 and SD3: the CLIP-L text encoder file, e.g. clip_l.safetensors (kohya --clip_l; SD3: "
        "may be left out when the checkpoint includes it).",
    )
    clip_g: RecipePath | None = Field(
        None,
        description="SD3: the CLIP-G text encoder file, e.g. clip_g.safetensors (kohya --clip_g; may be left out "
        "when the checkpoint includes it).",
    )
    t5xxl: RecipePath | None = Field(
        None,
        description="FLUX.1, Chroma and SD3: the T5-XXL text encoder file, e.g. t5xxl_fp16.safetensors (kohya "
        "--t5xxl; SD3: may be left out when the checkpoint includes it).",
    )
    ae: RecipePath | None = Field(
        None,
        description="FLUX.1, Chroma and Lumina 2: the FLUX autoencoder file, e.g. ae.safetensors (kohya --ae).",
    )
    qwen3: RecipePath | None = Field(
        None,
        description="Anima: the Qwen3-0.6B text encoder file, e.g. qwen_3_06b_base.safetensors (kohya --qwen3).",
    )
    llm_adapter_path: RecipePath | None = Field(
        None,
        description="Anima: a separate LLM adapter file (kohya --llm_adapter_path; unused by kohya at the pinned "
        "commit: the adapter is read from the DiT file).",
    )
    t5_tokenizer_path: RecipePath | None = Field(
        None,
        description="Anima: a T5 tokenizer folder for the LLM adapter's target tokens; kohya's own configs/t5_old "
        "when left out (kohya --t5_tokenizer_path).",
    )
    text_encoder: RecipePath | None = Field(
        None,
        description="HunyuanImage 2.1: the Qwen2.5-VL 7B text encoder file, e.g. qwen_2.5_vl_7b.safetensors "
        "(kohya --text_encoder).",
    )
    byt5: RecipePath | None = Field(
        None,
        description="HunyuanImage 2.1: the byT5 text encoder file, e.g. byt5_small_glyphxl_fp16.safetensors "
        "(kohya --byt5).",
    )
    gemma2: RecipePath | None = Field(
        None,
        description="Lumina Image 2.0: the Gemma-2 2B text encoder file, e.g. gemma_2_2b_fp16.safetensors "
        "(kohya --gemma2).",
    )


class NetworkSection(_Table):
    """``[network]``: the LoRA's kind and size."""

    module: Literal["lora", "locon", "loha", "lokr", "dylora"] = Field(
        "lora",
        description="lora and dylora use kohya's networks.lora / networks.dylora; locon, loha and lokr use "
        "LyCORIS (pip install lycoris-lora).",
    )
    dim: int = Field(16, ge=1, le=1024, description="Rank of the LoRA: 4-128; smaller resists overfitting.")
    alpha: float = Field(
        8.0, gt=0, description="Scale is alpha/dim: equal to dim or half of it (kohya network_alpha)."
    )
    conv_dim: int | None = Field(
        None, ge=1, description="Rank for 3x3 convolutions (LoCon; network_args conv_dim)."
    )
    conv_alpha: float | None = Field(
        None, gt=0, description="Alpha for 3x3 convolutions (network_args conv_alpha)."
    )
    dropout: float | None = Field(None, ge=0, lt=1, description="Neuron dropout (kohya network_dropout).")
    train: Literal["both", "unet", "text_encoder"] = Field(
        "both", description="Which parts get a LoRA: both, unet only or text_encoder only."
    )
    weights: RecipePath | None = Field(None, description="Start from this LoRA file (kohya network_weights).")
    args: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description='More network_args as key = value (e.g. for LyCORIS: preset = "attn-mlp").',
    )

    @field_validator("args")
    @classmethod
    def _network_args(cls, value: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
        # kohya reads each network_args item as key, value = item.split("=", 1) (train_network.py).
        bad = [k for k in value if "=" in k or not k.strip()]
        if bad:
            raise ValueError(
                f"key {bad[0]!r} must be a name without '=': kohya splits each network_args item at "
                "the first '=' into key and value"
            )
        return value


class OptimizerSection(_Table):
    """``[optimizer]``: optimizer, learning rates and schedule."""

    type: str = Field(
        "AdamW",
        min_length=1,
        description="kohya optimizer_type: AdamW, AdamW8bit, Lion, Lion8bit, Prodigy, Adafactor, DAdaptAdam… "
        "or a dotted module.Class.",
    )
    lr: float = Field(1e-4, gt=0, description="Base learning rate (kohya learning_rate).")
    unet_lr: float | None = Field(None, ge=0, description="Learning rate of the U-Net LoRA (kohya unet_lr).")
    text_encoder_lr: float | None = Field(
        None, ge=0, description="Learning rate of the text-encoder LoRA (kohya text_encoder_lr)."
    )
    scheduler: Scheduler = Field("cosine", description="Learning-rate schedule (kohya lr_scheduler).")
    warmup_steps: int | float | str = Field(
        0,
        description='Warm-up: steps (integer), a fraction of all steps below 1, or a percentage like "5%" '
        "(kohya lr_warmup_steps).",
    )
    restart_cycles: int = Field(
        1, ge=1, description="Restarts of cosine_with_restarts (kohya lr_scheduler_num_cycles)."
    )
    power: float | None = Field(
        None, description="Power of the polynomial schedule (kohya lr_scheduler_power)."
    )
    min_lr_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Final LR ratio for cosine_with_min_lr (kohya lr_scheduler_min_lr_ratio).",
    )
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping; 0 turns it off.")
    args: dict[str, str | int | float | bool | list[float]] = Field(
        default_factory=dict,
        description="Optimizer keyword arguments, e.g. weight_decay = 0.01 (kohya optimizer_args).",
    )

    @field_validator("args")
    @classmethod
    def _optimizer_args(
        cls, value: dict[str, str | int | float | bool | list[float]]
    ) -> dict[str, str | int | float | bool | list[float]]:
        # kohya reads each optimizer_args item as key, value = item.split("=") and then
        # ast.literal_eval(value) (train_util.get_optimizer): a second '=' stops it with a ValueError.
        for key, item in value.items():
            if "=" in key or not key.strip():
                raise ValueError(
                    f"key {key!r} must be a name without '=': kohya splits each optimizer_args item at '='"
                )
            if isinstance(item, str) and "=" in item:
                raise ValueError(
                    f"{key} = {item!r}: a value must not contain '=': kohya splits each optimizer_args item "
                    "at every '=' and stops on a second one"
                )
        return value

    @field_validator("warmup_steps")
    @classmethod
    def _warmup(cls, value: int | float | str) -> int | float | str:
        if isinstance(value, str):
            if not re.fullmatch(r"\d+(\.\d+)?%", value):
                raise ValueError(
                    f"must be a number of steps, a fraction below 1 or a percentage like '5%' (got {value!r})"
                )
            if float(value[:-1]) >= 100:
                raise ValueError(f"a percentage must be below 100% (got {value!r})")
        elif isinstance(value, float) and value >= 1 and not value.is_integer():
            raise ValueError(f"a fraction must be below 1; whole steps must be an integer (got {value})")
        elif value < 0:
            raise ValueError(f"must not be negative (got {value})")
        if isinstance(value, float) and value >= 1:
            return int(value)
        return value


class TrainingSection(_Table):
    """``[training]``: length, precision, saving and memory settings."""

    epochs: int = Field(10, ge=1, description="Epochs to train (kohya max_train_epochs).")
    save_every_n_epochs: int | None = Field(
        1, ge=1, description="Save a LoRA file every N epochs; the last epoch is always saved."
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "fp16", description="Training precision: fp16 (most GPUs), bf16 (RTX 30xx and newer) or no (CPU)."
    )
    save_precision: Literal["float", "fp16", "bf16"] = Field(
        "fp16", description="Precision of the saved files."
    )
    seed: int = Field(42, ge=0, description="Random seed, for repeatable runs.")
    cache_latents: bool = Field(True, description="Encode images once with the VAE: faster, less VRAM.")
    cache_latents_to_disk: bool = Field(
        False, description="Keep cached latents on disk (in the staged copy)."
    )
    max_token_length: Literal[75, 150, 225] = Field(
        75, description="Caption length in tokens: 75, 150 or 225."
    )
    attention: Literal["xformers", "sdpa", "none"] = Field(
        "sdpa", description="Attention kernel: xformers (CUDA), sdpa (PyTorch, any device) or none."
    )
    gradient_checkpointing: bool = Field(
        False, description="Trade speed for VRAM (kohya gradient_checkpointing)."
    )
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches per optimizer step.")
    prior_loss_weight: float = Field(1.0, ge=0, description="Loss weight of regularisation images.")
    noise_offset: float | None = Field(None, ge=0, le=1, description="Noise offset (about 0.05-0.1).")
    min_snr_gamma: float | None = Field(None, gt=0, description="Min-SNR loss weighting; 5 is usual.")
    save_model_as: Literal["safetensors", "ckpt", "pt"] = Field("safetensors", description="File format.")
    save_state: bool = Field(False, description="Also save the training state at each save, for resuming.")
    full_fp16: bool = Field(False, description="Keep the LoRA itself in fp16 (needs mixed_precision fp16).")
    full_bf16: bool = Field(False, description="Keep the LoRA itself in bf16 (needs mixed_precision bf16).")
    no_half_vae: bool = Field(False, description="Keep the VAE in fp32 (SDXL's VAE overflows in fp16).")
    max_data_loader_n_workers: int | None = Field(None, ge=0, description="DataLoader worker processes.")
    fp8_base: bool = Field(
        False, description="Keep the base model in fp8 (FLUX: about half the VRAM; kohya --fp8_base)."
    )
    blocks_to_swap: int | None = Field(
        None,
        ge=1,
        description="Transformer blocks kept in CPU memory and swapped in when needed: less VRAM, slower "
        "(FLUX: up to 35; kohya --blocks_to_swap).",
    )
    cache_text_encoder_outputs: bool = Field(
        False,
        description="Encode every caption once before training: less VRAM, but captions can no longer be "
        "shuffled or dropped and the text encoder is not trained (kohya --cache_text_encoder_outputs).",
    )
    cache_text_encoder_outputs_to_disk: bool = Field(
        False, description="Keep the cached text-encoder outputs on disk, beside the staged images."
    )
