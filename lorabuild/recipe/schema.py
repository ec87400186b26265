"""The recipe schema: one pydantic model per TOML table.

Key names follow kohya's option names where kohya has one (``clip_skip``, ``min_bucket_reso``,
``save_every_n_epochs``), except where the tutorial's concepts read better (``trigger``,
``repeats``, ``source``). Every model forbids unknown keys, so a typo is an error (the loader
adds a "did you mean"). Relative paths are resolved against the recipe file's folder by the
loader (see :data:`RecipePath`).

Rules that involve several fields, or that only warn, are not validators here: they live in
:mod:`lorabuild.rules`, one function each, so that every problem is reported at once and
warnings can be told apart from errors.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from lorabuild.problems import did_you_mean
from lorabuild.recipe.accelerate import check_accelerate_args
from lorabuild.render.quoting import QuotingError, env_name

# The names of lorabuild.kohya.families' registry (that package sits above this one; a test holds
# the two equal).
Family = Literal["sd15", "sd2", "sdxl"]

# kohya's scheduler names at the pinned commit (transformers' SchedulerType plus diffusers'
# piecewise_constant; KOHYA.md 6.9). reduce_lr_on_plateau and cosine_warmup_with_min_lr are
# listed by transformers but crash through kohya, so they are left out.
Scheduler = Literal[
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
    "piecewise_constant",
    "adafactor",
]

# Samplers kohya's in-training sampler and gen_img.py accept (``--sample_sampler`` choices).
Sampler = Literal[
    "ddim",
    "pndm",
    "lms",
    "euler",
    "euler_a",
    "heun",
    "dpm_2",
    "dpm_2_a",
    "dpmsolver",
    "dpmsolver++",
    "dpmsingle",
    "k_lms",
    "k_euler",
    "k_euler_a",
    "k_dpm_2",
    "k_dpm_2_a",
]

# A value kohya accepts in its --config_file TOML for an option the schema does not model.
KohyaValue = str | int | float | bool | list[str] | list[int] | list[float]

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\- ]*$"


def _resolve(path: Path, info: ValidationInfo) -> Path:
    """Resolve a relative recipe path against the recipe file's folder (``context['base']``)."""
    if "\0" in str(path):
        raise ValueError(
            f"must not contain a NUL character (U+0000), which no file path can hold (got {str(path)!r})"
        )
    base = (info.context or {}).get("base")
    try:
        path = path.expanduser()
    except RuntimeError:  # ~name of no user here, or no home folder
        raise ValueError(
            f"{str(path)!r} starts with ~ but names no user's home folder on this machine"
        ) from None
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    return Path(_normpath(path))


def _normpath(path: Path) -> str:
    # os.path.normpath keeps the path relative-free without touching the disk (unlike resolve()).
    return os.path.normpath(path)


RecipePath = Annotated[Path, AfterValidator(_resolve)]
"""A path written in a recipe: relative paths are relative to the recipe file."""

# What ends a line for one of kohya's readers: a caption or a sample-prompt file read with
# readlines() (\n, \r), gen_img's prompt file read with str.splitlines() (also \v, \f, \x1c-\x1e,
# \x85, U+2028, U+2029). Those and every other control character are refused in a line of text.
_LINE_NAMES = {"\n": "a line break (U+000A)", "\r": "a carriage return (U+000D)", "\t": "a tab (U+0009)"}


def line_problem(text: str) -> str | None:
    """Why ``text`` cannot be one line of a file kohya reads (a caption, a prompt line), or None.

    Refused: line breaks of any kind (``str.splitlines`` splits at each) and every other control
    character (Unicode category Cc: invisible, and a line break for some reader or other).
    """
    for index, ch in enumerate(text):
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            name = _LINE_NAMES.get(ch) or (
                f"{unicodedata.name(ch)} (U+{ord(ch):04X})"
                if unicodedata.category(ch) != "Cc"
                else f"a control character (U+{ord(ch):04X})"
            )
            return f"must be one line of text without control characters: it has {name} at position {index}"
    return None


def _one_line(value: str) -> str:
    why = line_problem(value)
    if why:
        raise ValueError(f"{why} (got {value!r})")
    return value


Line = Annotated[str, AfterValidator(_one_line)]
"""Text that kohya reads as (part of) one line: a caption tag, a trigger, a prompt."""


class _Table(BaseModel):
    """Base of every recipe table: unknown keys are errors, values are immutable."""

    # No inf or nan: neither is a TOML value kohya's parser reads, nor a setting anyone means.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class ModelSection(_Table):
    """``[model]``: the base checkpoint to train the LoRA on."""

    base: RecipePath = Field(
        description="Base model: a .safetensors/.ckpt file or a diffusers folder "
        "(kohya --pretrained_model_name_or_path)."
    )
    family: Family | None = Field(
        None,
        description="Model family: sd15, sd2 or sdxl. Detected from the checkpoint's header when omitted. "
        "Decides the kohya script (train_network.py or sdxl_train_network.py) and --v2.",
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
    vae: RecipePath | None = Field(None, description="Replacement VAE file or folder (kohya --vae).")
    tokenizer_cache_dir: RecipePath | None = Field(
        None,
        description="Folder holding the CLIP tokenizer(s) for offline runs (kohya --tokenizer_cache_dir).",
    )


class AutotagSection(_Table):
    """``[captions.autotag]``: tag images with kohya's WD14 tagger (``finetune/tag_images_by_wd14_tagger.py
    --onnx``) before the caption rules run. The model is read from a local folder; nothing is downloaded.
    """

    model_dir: RecipePath = Field(
        description="Folder holding the tagger's model.onnx and selected_tags.csv, as in a SmilingWolf "
        "wd-* tagger repository (kohya --model_dir/--repo_id point at it; nothing is downloaded)."
    )
    mode: Literal["missing", "all", "merge"] = Field(
        "missing",
        description="Which images to tag: missing (only those without a caption or with an empty one), "
        "all (the tagger's tags replace every caption) or merge (the caption's tags, then the tagger's new ones).",
    )
    general_threshold: float = Field(
        0.35, ge=0, le=1, description="Confidence needed for a general tag (kohya --general_threshold)."
    )
    character_threshold: float = Field(
        0.85,
        ge=0,
        description="Confidence needed for a character tag; above 1 turns character tags off "
        "(kohya --character_threshold).",
    )
    undesired_tags: list[Line] = Field(
        default_factory=list,
        description="Tags the tagger never writes, exactly as the tagger spells them; short_hair and "
        "short hair both match (kohya --undesired_tags). Use captions.remove for glob patterns.",
    )
    character_tags_first: bool = Field(
        False, description="Put character tags before general tags (kohya --character_tags_first)."
    )
    batch_size: int = Field(
        1, ge=1, description="Images per inference batch; a model with a fixed batch size overrides it."
    )

    @field_validator("undesired_tags")
    @classmethod
    def _plain_tags(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("must not contain empty tags")
        commas = [item for item in value if "," in item]
        if commas:
            # kohya splits --undesired_tags on commas, so such a tag could never match.
            raise ValueError(f"tags cannot contain commas (got {commas[0]!r})")
        return value


class CaptionRules(_Table):
    """``[captions]``: rule-based tag editing applied to the staged copy of each caption.

    The rules run in this order: split on commas; normalise (trim, collapse spaces,
    ``tag_style``); ``replace``; ``remove``; ``dedupe``; ``move_to_front`` / ``move_to_end``;
    ``prepend_trigger``. With ``autotag`` set, the tagger's tags are merged into the caption
    (by its ``mode``) before all of these.
    """

    tag_style: Literal["keep", "underscore", "space"] = Field(
        "keep",
        description="Rewrite tags with underscores (short_hair) or spaces (short hair); keep leaves them.",
    )
    replace: dict[Line, Line] = Field(
        default_factory=dict, description='Tags to rename, as {wrong = "right"} (fix a tagger\'s mistakes).'
    )
    remove: list[Line] = Field(
        default_factory=list,
        description="Tags to delete: exact tags or glob patterns like '*_hair'. Remove the character's "
        "inherent traits so that the trigger learns them.",
    )
    dedupe: bool = Field(True, description="Drop repeated tags, keeping the first.")
    move_to_front: list[Line] = Field(
        default_factory=list, description="Tags (or globs) moved to the front, in this order."
    )
    move_to_end: list[Line] = Field(
        default_factory=list,
        description="Tags (or globs) pushed to the end, such as transparent_background.",
    )
    prepend_trigger: bool = Field(
        True, description="Put the subset's trigger first in every caption (pair with keep_tokens = 1)."
    )
    autotag: AutotagSection | None = Field(
        None,
        description="Tag images with kohya's WD14 tagger before these rules run (its tags pass through them).",
    )

    @field_validator("remove", "move_to_front", "move_to_end")
    @classmethod
    def _no_empty_patterns(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("must not contain empty tags")
        return value


class Subset(_Table):
    """``[[dataset.subsets]]``: one folder of images with captions."""

    source: RecipePath = Field(
        description="Folder with the images and their caption files, directly inside. Never modified."
    )
    trigger: Line | None = Field(
        None,
        min_length=1,
        description="Trigger word the LoRA learns (kohya class_tokens); also names the staged folder.",
    )
    repeats: int = Field(
        1, ge=1, description="How many times each image is seen per epoch (kohya num_repeats)."
    )
    caption_extension: str = Field(
        ".txt", pattern=r"^\.?[A-Za-z0-9_.\-]+$", description="Extension of the caption files in source."
    )
    is_reg: bool = Field(False, description="Regularisation (prior) images (kohya is_reg).")
    shuffle_caption: bool | None = Field(
        None, description="Override dataset.shuffle_caption for this subset."
    )
    keep_tokens: int | None = Field(None, ge=0, description="Override dataset.keep_tokens for this subset.")
    flip_aug: bool | None = Field(None, description="Override dataset.flip_aug for this subset.")
    color_aug: bool | None = Field(None, description="Override dataset.color_aug for this subset.")
    random_crop: bool | None = Field(None, description="Override dataset.random_crop for this subset.")
    captions: CaptionRules | None = Field(
        None, description="Caption rules for this subset; replaces the recipe's [captions] table for it."
    )

    @field_validator("trigger")
    @classmethod
    def _one_tag(cls, value: str | None) -> str | None:
        # The trigger is prepended to captions as one tag; kohya splits a caption into tags at
        # commas (shuffle_caption, keep_tokens) and lorabuild trims each tag, so anything else
        # would not be the word the LoRA learns.
        if value is None:
            return value
        if "," in value:
            raise ValueError(
                f"must be one caption tag, without a comma (got {value!r}): kohya splits captions into "
                "tags at commas; write it with spaces or underscores, e.g. uiharu_kazari"
            )
        if value != value.strip():
            raise ValueError(
                f"must not start or end with a space (got {value!r}): each caption tag is trimmed, so "
                "the captions would hold it without them"
            )
        return value

    @field_validator("caption_extension")
    @classmethod
    def _leading_dot(cls, value: str) -> str:
        return value if value.startswith(".") else "." + value


class DatasetSection(_Table):
    """``[dataset]``: resolution, batching, bucketing and caption handling (kohya dataset config)."""

    resolution: tuple[int, int] = Field(
        (512, 512),
        description="Training size as [width, height] or one number for a square (kohya resolution).",
    )
    batch_size: int = Field(1, ge=1, description="Images per step (kohya batch_size).")
    enable_bucket: bool = Field(True, description="Aspect-ratio buckets (kohya enable_bucket).")
    min_bucket_reso: int = Field(256, ge=64, description="Smallest bucket side (kohya min_bucket_reso).")
    max_bucket_reso: int = Field(1024, ge=64, description="Largest bucket side (kohya max_bucket_reso).")
    bucket_reso_steps: int | None = Field(
        None,
        ge=8,
        description="Bucket side granularity; 64 for SD1/2 and SDXL unless set (kohya bucket_reso_steps).",
    )
    bucket_no_upscale: bool = Field(False, description="Never upscale images into a bucket (kohya).")
    shuffle_caption: bool = Field(False, description="Shuffle tags each time an image is used.")
    keep_tokens: int = Field(0, ge=0, description="Leading tags kept in place while shuffling (kohya).")
    flip_aug: bool = Field(False, description="Random horizontal flips (kohya flip_aug).")
    color_aug: bool = Field(False, description="Random colour changes; incompatible with cache_latents.")
    random_crop: bool = Field(
        False, description="Random instead of centre crops; incompatible with cache_latents."
    )
    caption_dropout_rate: float = Field(
        0.0, ge=0, le=1, description="Chance of training an image uncaptioned."
    )
    caption_tag_dropout_rate: float = Field(0.0, ge=0, le=1, description="Chance of dropping each tag.")
    validation_split: float = Field(
        0.0, ge=0, lt=1, description="Fraction of each subset held out to measure validation loss."
    )
    validation_seed: int | None = Field(
        None, description="Seed of the validation split (defaults to training.seed)."
    )
    subsets: list[Subset] = Field(min_length=1, description="The image folders to train on.")

    @field_validator("resolution", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("resolution")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 64:
            raise ValueError(f"each side must be at least 64 (got {list(value)})")
        return value


class ImagesSection(_Table):
    """``[images]``: checks on every image, and the fixes made in its staged copy (never the source).

    kohya reads pixels with a plain ``Image.open(...).convert("RGB")``: it ignores EXIF orientation,
    drops the alpha channel without compositing, and lists only ``.png .jpg .jpeg .webp .bmp``
    names. Where that would train something other than what the user sees, ``lorabuild prepare``
    stages a converted PNG instead of a link to the source.
    """

    on_bad_image: Literal["error", "skip"] = Field(
        "error",
        description="An image that does not decode (truncated, corrupt, not an image) or is smaller than "
        "min_side: error stops the build; skip leaves it out of the stage with a warning.",
    )
    min_side: int = Field(
        0,
        ge=0,
        description="Smallest allowed shorter side, in pixels; smaller images are bad images (see "
        "on_bad_image). 0 turns the check off.",
    )
    exif_orientation: bool = Field(
        True,
        description="Apply EXIF orientation in the staged copy (kohya ignores the tag and trains a camera's "
        "sideways photo sideways).",
    )
    flatten_transparency: bool = Field(
        True,
        description="Composite images with transparency onto background in the staged copy (kohya's RGB "
        "conversion shows whatever colour the transparent pixels hide, often black). Turn it off to keep "
        "the alpha channel for kohya's alpha_mask.",
    )
    background: str = Field(
        "white",
        description='Colour that transparent areas are flattened onto: a name ("white", "black", "gray") or '
        '"#RRGGBB".',
    )
    duplicates: Literal["off", "exact", "near"] = Field(
        "exact",
        description="Report duplicate images: exact (identical files; only files of equal size are hashed), "
        "near (also look-alikes by a perceptual hash, which decodes a thumbnail of every image once; "
        "the hashes are kept in the stage manifest) or off.",
    )
    near_distance: int = Field(
        4,
        ge=0,
        le=16,
        description="How many of the 64 bits of two perceptual hashes may differ for the images to be reported "
        'as near-duplicates (duplicates = "near").',
    )

    @field_validator("background")
    @classmethod
    def _colour(cls, value: str) -> str:
        from PIL import ImageColor  # lazy: Pillow (~12 ms) only for a recipe that sets a background colour

        try:
            colour = ImageColor.getrgb(value)
        except ValueError:
            hint = did_you_mean(value.lower(), ImageColor.colormap)
            raise ValueError(
                f'is not a colour: use a name like "white" or a hex colour like "#RRGGBB" (got {value!r}){hint}'
            ) from None
        if len(colour) == 4 and colour[3] != 255:
            raise ValueError(
                f"must be an opaque colour: transparent pixels are flattened onto it (got {value!r})"
            )
        return value


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


class EvaluateSection(_Table):
    """``[evaluate]``: prompts for samples during training and for the epoch x weight grid."""

    prompts: list[Line] = Field(
        default_factory=list, description="Prompts; {trigger} is replaced by the first subset's trigger."
    )
    negative_prompt: Line = Field("", description="Negative prompt for every image.")
    seeds: list[Annotated[int, Field(ge=0, le=2**32 - 1)]] = Field(
        default_factory=lambda: [1234], min_length=1, description="Seeds, one image each."
    )
    weights: list[float] = Field(
        default_factory=lambda: [0.6, 0.8, 1.0], min_length=1, description="LoRA weights to compare."
    )
    epochs: Literal["all"] | list[int] = Field("all", description='Epochs to compare: "all" or a list.')
    sampler: Sampler = Field("euler_a", description="Sampler (kohya sample_sampler).")
    steps: int = Field(28, ge=1, le=1000, description="Sampling steps.")
    cfg_scale: float = Field(7.0, gt=0, description="CFG scale.")
    width: int | None = Field(
        None, ge=64, multiple_of=8, description="Image width; the training width if unset."
    )
    height: int | None = Field(
        None, ge=64, multiple_of=8, description="Image height; the training height if unset."
    )
    baseline: bool = Field(True, description="Add a column without the LoRA.")
    sample_every_n_epochs: int | None = Field(
        None,
        ge=1,
        description="Render the prompts during training every N epochs (kohya sample_every_n_epochs).",
    )


OffloadDevice = Literal["none", "cpu", "nvme"]

# accelerate launch options lorabuild writes itself, and the [launch] key that sets each.
MANAGED_ACCELERATE_OPTIONS = {
    "num_processes": "launch.gpus",
    "gpu_ids": "launch.gpus",
    "multi_gpu": "launch.gpus",
    "cpu": "launch.gpus (0 trains on the CPU)",
    "num_machines": "launch (one machine per build)",
    "num_cpu_threads_per_process": "launch.num_cpu_threads_per_process",
    "mixed_precision": "training.mixed_precision",
    "dynamo_backend": "launch (lorabuild launches with dynamo off)",
    "main_process_port": "launch.main_process_port",
    "config_file": "launch (the recipe replaces accelerate's config file)",
    "use_deepspeed": "[launch.deepspeed] (kohya starts DeepSpeed itself)",
}


class DeepSpeedSection(_Table):
    """``[launch.deepspeed]``: train with DeepSpeed ZeRO through kohya's own ``--deepspeed`` options."""

    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="ZeRO stage (kohya --zero_stage).")
    offload_optimizer_device: OffloadDevice = Field(
        "none",
        description="Where ZeRO stages 2 and 3 offload optimizer states (kohya --offload_optimizer_device).",
    )
    offload_optimizer_nvme_path: RecipePath | None = Field(
        None, description="NVMe folder for optimizer offload (kohya --offload_optimizer_nvme_path)."
    )
    offload_param_device: OffloadDevice = Field(
        "none", description="Where ZeRO stage 3 offloads parameters (kohya --offload_param_device)."
    )
    offload_param_nvme_path: RecipePath | None = Field(
        None, description="NVMe folder for parameter offload (kohya --offload_param_nvme_path)."
    )
    zero3_init_flag: bool = Field(False, description="Build the model under deepspeed.zero.Init (stage 3).")
    zero3_save_16bit_model: bool = Field(False, description="Save a 16-bit model under stage 3.")
    fp16_master_weights_and_gradients: bool = Field(
        False, description="fp16 master weights and gradients (ZeRO-2 with CPU optimizer offload only)."
    )


class SlurmSection(_Table):
    """``[launch.slurm]``: resources of each build's task in ``lorabuild compile --target slurm``."""

    partition: str | None = Field(None, description="sbatch --partition.")
    account: str | None = Field(None, description="sbatch --account.")
    time: str | None = Field(
        None,
        pattern=r"^(\d+-)?\d+(:\d{1,2}){0,2}$",
        description='Time limit per build (sbatch --time), e.g. "04:00:00" or "1-00:00:00".',
    )
    mem: str | None = Field(
        None, pattern=r"^\d+[KMGT]?$", description='Memory per build (sbatch --mem), e.g. "32G".'
    )
    cpus_per_task: int | None = Field(None, ge=1, description="CPU cores per build (sbatch --cpus-per-task).")
    extra: list[str] = Field(
        default_factory=list,
        description='More sbatch options, one per #SBATCH line, e.g. ["--qos=high", "--constraint=a100"].',
    )

    @field_validator("extra")
    @classmethod
    def _sbatch_options(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not v.startswith("-") or "\n" in v or "\r" in v]
        if bad:
            raise ValueError(
                f'{bad[0]!r} is not an sbatch option: write each as it follows #SBATCH, e.g. "--qos=high"'
            )
        return value


class LaunchSection(_Table):
    """``[launch]``: how ``accelerate launch`` starts the trainer."""

    num_cpu_threads_per_process: int = Field(
        2, ge=1, description="CPU threads per training process (accelerate --num_cpu_threads_per_process)."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description='Environment variables for the trainer, e.g. HF_HOME = "hf" (relative to the build folder).',
    )
    gpus: int | list[int] = Field(
        1,
        description="GPUs to train on: a count (2 launches 2 processes; 0 trains on the CPU) or the ids "
        "of the GPUs to use, e.g. [0, 1] (accelerate --num_processes, --gpu_ids, --multi_gpu).",
    )
    main_process_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port the processes of a multi-GPU run meet on (accelerate --main_process_port; "
        "default 29500): give builds that train at the same time on one machine different ports.",
    )
    accelerate_args: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="More accelerate launch options, e.g. { enable_cpu_affinity = true, dynamo_mode = "
        '"default" } (true writes a flag, false leaves it out).',
    )
    deepspeed: DeepSpeedSection | None = Field(
        None, description="Train with DeepSpeed ZeRO (needs the deepspeed package and 2 or more GPUs)."
    )
    slurm: SlurmSection = Field(
        default_factory=SlurmSection, description="Resources per build for lorabuild compile --target slurm."
    )

    @field_validator("gpus")
    @classmethod
    def _gpu_ids(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, int) and value < 0:
            raise ValueError(f"must be a GPU count of 0 or more, or a list of GPU ids (got {value})")
        if isinstance(value, list):
            negative = [i for i in value if i < 0]
            if negative:
                raise ValueError(f"GPU ids start at 0 (got {negative[0]}): see nvidia-smi for the ids")
            if not value:
                raise ValueError("is an empty list: give GPU ids, e.g. [0, 1], or a count (0 for the CPU)")
            repeated = sorted({i for i in value if value.count(i) > 1})
            if repeated:
                raise ValueError(f"GPU id {repeated[0]} is listed twice: each GPU can run one process")
        return value

    @field_validator("accelerate_args")
    @classmethod
    def _accelerate_args(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        check_accelerate_args(value, MANAGED_ACCELERATE_OPTIONS)
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        # The scripts' own test (train.sh's export NAME=, train.ps1's $env:NAME =), so that check
        # refuses exactly the names compile would.
        for name in value:
            try:
                env_name(name)
            except QuotingError as exc:
                raise ValueError(f"{name!r} {exc.problem}: {exc.fix}") from None
        return value

    @property
    def num_processes(self) -> int:
        """Training processes accelerate starts (1 on the CPU)."""
        return len(self.gpus) if isinstance(self.gpus, list) else max(1, self.gpus)


class InstallSection(_Table):
    """``[install]``: the epoch ``lorabuild install`` copies into the webui or ComfyUI, and its card.

    The webui reads ``NAME.json`` beside ``NAME.safetensors`` for a LoRA's card (description, SD
    version, activation text, preferred weight, negative text, notes) and ``NAME.preview.png`` as
    its picture. The install folders are machine settings: prefer ``--webui`` / ``--comfyui`` or
    ``LORABUILD_WEBUI`` / ``LORABUILD_COMFYUI`` over writing them into a shared recipe.
    """

    epoch: int | Literal["last"] = Field(
        "last",
        description='The epoch to install: a saved epoch\'s number (the tutorial chose 8 from its grid) or "last". '
        "lorabuild install --epoch N overrides it; lorabuild report suggests the lowest validation loss.",
    )
    weight: float | None = Field(
        None,
        gt=0,
        le=2,
        description="Preferred weight on the webui's card (its slider goes to 2); the preview is the grid "
        "cell at this weight. Unset: the middle of evaluate.weights (0.8 with the defaults).",
    )
    webui: RecipePath | None = Field(
        None,
        description="The AUTOMATIC1111 webui folder (holding models/Lora) or its Lora folder; "
        "--webui and this key win over LORABUILD_WEBUI.",
    )
    comfyui: RecipePath | None = Field(
        None,
        description="The ComfyUI folder (holding models/loras) or its loras folder; "
        "--comfyui and this key win over LORABUILD_COMFYUI.",
    )
    notes: str = Field("", description="Notes on the webui's card (the build's provenance is added below).")
    negative_text: str = Field(
        "", description="Negative prompt the webui adds with the LoRA (its card's negative text)."
    )
    preview: Literal["grid", "none"] | RecipePath = Field(
        "grid",
        description='The cover picture: "grid" (the grid cell of the first prompt and seed at the chosen '
        'epoch and weight), an image file, or "none".',
    )

    @field_validator("epoch", mode="before")
    @classmethod
    def _epoch(cls, value: Any) -> Any:
        # One message instead of one per member of the union.
        if value == "last" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f'must be a saved epoch\'s number (1 or more) or "last" (got {value!r})')

    @field_validator("preview", mode="before")
    @classmethod
    def _preview(cls, value: Any) -> Any:
        if isinstance(value, str | Path) and str(value).strip():
            return value
        raise ValueError(f'must be "grid", "none" or the path of an image file (got {value!r})')


class Recipe(_Table):
    """A lorabuild recipe: everything needed to build one LoRA."""

    name: str = Field(
        max_length=100,
        description="Output name (kohya output_name): files are saved as NAME-000001.safetensors … "
        "Letters, digits, '.', '_', '-' and spaces.",
    )
    title: str | None = Field(
        None, min_length=1, description="Human title written into the LoRA's metadata (the name when unset)."
    )
    description: str | None = Field(None, description="Description written into the LoRA's metadata.")
    author: str | None = Field(None, description="Author written into the LoRA's metadata.")
    model: ModelSection
    dataset: DatasetSection
    captions: CaptionRules = Field(
        default_factory=CaptionRules, description="Caption rules for every subset."
    )
    images: ImagesSection = Field(
        default_factory=ImagesSection,
        description="Image checks and the fixes made in staged copies (EXIF orientation, transparency, "
        "formats kohya cannot read).",
    )
    network: NetworkSection = Field(default_factory=NetworkSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    launch: LaunchSection = Field(default_factory=LaunchSection)
    install: InstallSection = Field(
        default_factory=InstallSection,
        description="What lorabuild install copies into the webui's or ComfyUI's LoRA folder, and its card.",
    )
    kohya: dict[str, KohyaValue] = Field(
        default_factory=dict,
        description="Any other kohya option as option = value; checked against the options the pinned "
        "kohya accepts.",
    )

    @field_validator("name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if not re.fullmatch(_NAME_PATTERN, value) or value != value.strip():
            raise ValueError(
                f"must be usable as a file name: letters, digits, '.', '_', '-' and inner spaces (got {value!r})"
            )
        return value

    def rules_for(self, subset: Subset) -> CaptionRules:
        """The caption rules that apply to ``subset``."""
        return subset.captions or self.captions
