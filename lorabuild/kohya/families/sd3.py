"""SD3 and SD3.5 Medium/Large (``model.family = "sd3"``): kohya's ``sd3_train_network.py`` with ``networks.lora_sd3``.

Everything here is from kohya's ``docs/sd3_train_network.md``, ``sd3_train_network.py``,
``library/sd3_utils.py`` and ``sd3_minimal_inference.py`` at the pinned commit. Each rule says
which kohya failure it prevents; most show only after the model has loaded.

- **The network.** kohya's own SD3 doc runs ``--network_module=networks.lora``, whose targets
  (``Transformer2DModel``, CLIP attention; networks/lora.py) miss the MMDiT, and no
  ``*_train_network.py`` checks the module; ``sd3_minimal_inference.py`` loads only
  ``networks.lora_sd3`` files. The recipe's ``lora`` is therefore always ``networks.lora_sd3``.
- **The model files.** kohya reads the MMDiT from the checkpoint's ``model.diffusion_model.*``
  tensors only (``sd3_utils.load_mmdit``) and the VAE from its ``first_stage_model.*`` unless
  ``--vae`` is given. The text encoders must be files (``--clip_l``, ``--clip_g``, ``--t5xxl``; the
  SD3.5 releases ship them in ``text_encoders/``): a checkpoint that holds them in SAI's layout
  (``text_encoders.clip_l.transformer.text_model.*``, the ``sd3_medium_incl_clips*`` files) is
  detected by ``sd3_utils.load_clip_l``/``load_clip_g``/``load_t5xxl``, which strip only
  ``text_encoders.clip_l.`` and so load none of the weights (checked at the pinned commit: they stay
  on the meta device), and for CLIP-G and T5-XXL that copy is taken even when a file is given. A text
  encoder given nowhere makes its loader return None and the trainer stop at ``.eval()``. Both
  fail only after the MMDiT has loaded; the check names them first.
- **Defaults.** docs/sd3_train_network.md's values for ``weighting_scheme`` (uniform),
  ``training_shift`` (1.0), ``t5xxl_max_token_length`` (256) and the attention masks (off) are
  kohya's argparse defaults, so nothing is applied for them; what is applied is bf16 (the doc's
  example says fp16, which goes NaN for SD3: kohya-ss/sd-scripts#1407) and the grid's CFG scale.
- **Memory.** The doc gives no VRAM figures, only one command (section 4: gradient checkpointing,
  8-bit AdamW, ``--blocks_to_swap 32``); the presets say so.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType

from lorabuild.kohya.families import flux
from lorabuild.kohya.families.base import (
    KOHYA_CACHE,
    Default,
    Family,
    MemoryPreset,
    ModelFile,
    ModelHeader,
    NetworkModules,
)
from lorabuild.kohya.sd3infer import Sd3Inference
from lorabuild.problems import Problem, error, warning
from lorabuild.recipe.schema import Recipe

SD3_NETWORK_MODULES: NetworkModules = MappingProxyType({"lora": ("networks.lora_sd3", None)})
"""kohya's SD3 LoRA (networks/lora_sd3.py); ``networks.lora``, in kohya's own doc, would miss the MMDiT."""

# The MMDiT's joint blocks under the prefix kohya's loader reads (sd3_utils.load_mmdit).
SIGNATURES = ("model.diffusion_model.joint_blocks.",)


def recognise(header: ModelHeader) -> bool:
    """An SD3 single-file checkpoint (``model.diffusion_model.joint_blocks.*``), or a diffusers SD3 folder."""
    if header.pipeline is not None:
        return "StableDiffusion3" in header.pipeline
    return header.has_prefix(SIGNATURES)


# The prefixes are those sd3_utils.load_clip_l/load_clip_g/load_t5xxl detect in the checkpoint (and
# then load nothing from); load_clip_l prefers --clip_l, the other two the checkpoint's copy.
CLIP_L = ModelFile(
    "clip_l",
    "the CLIP-L text encoder",
    "clip_l",
    "clip_l.safetensors",
    bundled="text_encoders.clip_l.transformer.",
)
CLIP_G = ModelFile(
    "clip_g",
    "the CLIP-G text encoder",
    "clip_g",
    "clip_g.safetensors",
    bundled="text_encoders.clip_g.transformer.",
    checkpoint_first=True,
)
T5XXL = ModelFile(
    "t5xxl",
    "the T5-XXL text encoder",
    "t5xxl",
    "t5xxl_fp16.safetensors",
    bundled="text_encoders.t5xxl.transformer.",
    checkpoint_first=True,
)

# strategy_sd3.py: CLIP_L_TOKENIZER_ID, CLIP_G_TOKENIZER_ID, T5_XXL_TOKENIZER_ID.
TOKENIZERS = (
    "openai/clip-vit-large-patch14",
    "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
    "google/t5-v1_1-xxl",
)

_DOCS = "kohya docs/sd3_train_network.md"

DEFAULTS = (
    Default(
        "training.mixed_precision",
        "bf16",
        f"{_DOCS}'s example says fp16, but SD3 training turns NaN in fp16 (kohya-ss/sd-scripts#1407)",
    ),
    Default("training.save_precision", "bf16", "the precision the model is trained in"),
    Default(
        "training.attention",
        "sdpa",
        f"{_DOCS} 4: the documented command (kohya's MMDiT always uses PyTorch's attention)",
    ),
    Default(
        "evaluate.cfg_scale",
        5.0,
        "sd3_minimal_inference.py's default --cfg_scale (the grid's; SD3.5 Large's model card suggests 3.5-4.5)",
    ),
)


def _uncacheable(recipe: Recipe) -> str | None:
    changing = flux.caption_changes(recipe)
    if changing:
        return f"{changing} changes captions every epoch, and cached outputs cannot follow"
    if recipe.network.train == "text_encoder":
        return "only the text encoders are trained"
    # network.train = "both" caches T5 and runs CLIP-L/G each step (sd3_train_network.py: is_partial).
    return None


_NO_FIGURES = f"{_DOCS} gives no VRAM figures"

MEMORY = (
    MemoryPreset(
        24,
        (
            Default("training.gradient_checkpointing", True, f"{_DOCS} 4: in the documented command"),
            Default(
                "training.cache_text_encoder_outputs",
                True,
                f"{_DOCS} 4.1: recommended for SD3's three text encoders when they are not trained",
                unless=_uncacheable,
            ),
        ),
        f"{_DOCS} 4 and 4.1: gradient checkpointing and cached text-encoder outputs ({_NO_FIGURES}; "
        "24 GB and up is lorabuild's line for no block swap)",
    ),
    MemoryPreset(
        # vram_gb's smallest value: the doc names no card, so no size is "below the documented figures".
        4,
        (
            Default("training.gradient_checkpointing", True, f"{_DOCS} 4: in the documented command"),
            Default(
                "training.cache_text_encoder_outputs",
                True,
                f"{_DOCS} 4.1: recommended for SD3's three text encoders when they are not trained",
                unless=_uncacheable,
            ),
            Default(
                "training.blocks_to_swap",
                32,
                f"{_DOCS} 4: the documented command's value, for SD3.5 Large (38 blocks; kohya allows at most "
                "blocks - 2, so SD3/SD3.5 Medium's 24 blocks take at most 22)",
            ),
            Default("optimizer.type", "AdamW8bit", f"{_DOCS} 4: in the documented command"),
        ),
        f"{_DOCS} 4: the documented command's memory settings (--blocks_to_swap 32, 8-bit AdamW); "
        f"{_NO_FIGURES}, so below 24 GB lorabuild applies that whole command",
    ),
)


def fp16(recipe: Recipe) -> Iterator[Problem]:
    """SD3 in fp16 goes NaN from the first steps (kohya-ss/sd-scripts#1407; full fp16: #2116), silently."""
    t = recipe.training
    if t.mixed_precision == "fp16":
        yield warning(
            "training.mixed_precision",
            'fp16 turns SD3 training NaN (kohya-ss/sd-scripts#1407; kohya does not stop, the LoRA is broken): use "bf16" '
            '(RTX 30xx and newer), or "no" on a CPU',
        )
    if t.full_fp16:
        yield error(
            "training.full_fp16",
            "turns SD3 training NaN on the second step (kohya-ss/sd-scripts#2116): turn it off (full_bf16 works)",
        )


def clip_skip(recipe: Recipe) -> Iterator[Problem]:
    """docs/sd3_train_network.md: ``--clip_skip`` is not used for SD3 (kohya accepts it and ignores it)."""
    if recipe.model.clip_skip is not None:
        yield error(
            "model.clip_skip",
            "means nothing for SD3 (kohya's SD3 trainer always uses the second-to-last CLIP layers; "
            f"{_DOCS}: not used): remove it",
        )


def weighting(recipe: Recipe) -> Iterator[Problem]:
    """logit_mean/logit_std are read only by logit_normal, mode_scale only by mode (sd3_train_utils)."""
    f = recipe.flow
    scheme = f.weighting_scheme or "uniform"
    for key, value, reader in (
        ("logit_mean", f.logit_mean, "logit_normal"),
        ("logit_std", f.logit_std, "logit_normal"),
        ("mode_scale", f.mode_scale, "mode"),
    ):
        if value is not None and scheme != reader:
            yield warning(
                f"flow.{key}",
                f'is used only with flow.weighting_scheme = "{reader}" (it is "{scheme}", so kohya ignores it): '
                f'set weighting_scheme = "{reader}" or remove {key}',
            )


def grid_vae(recipe: Recipe) -> Iterator[Problem]:
    """sd3_minimal_inference.py has no ``--vae``: the grid decodes with the checkpoint's own VAE."""
    if recipe.model.vae is not None and recipe.evaluate.prompts:
        yield warning(
            "model.vae",
            "is used for training only: the SD3 grid (sd3_minimal_inference.py) has no --vae and decodes with the "
            "checkpoint's own VAE, so a checkpoint without one cannot render the grid",
        )


prompt_dashes = flux.prompt_dashes_rule("SD3", Sd3Inference.SCRIPT)
"""sd3_minimal_inference.py splits each grid line at every "--" (as FLUX's script does)."""


tokenizers_offline = flux.grid_tokenizers_rule("SD3", Sd3Inference.SCRIPT, TOKENIZERS)


def text_encoder_cache(recipe: Recipe) -> Iterator[Problem]:
    """Cached text-encoder outputs: kohya's caption assert and T5 ValueError, as for FLUX (sd3_train_network.py)."""
    yield from flux.text_encoder_cache(recipe)


sd_only_settings = flux.sd_only_rule("SD3")
max_token_length = flux.unused_max_token_length_rule(
    "SD3", "CLIP reads 77 tokens; the T5 caption length is flow.t5xxl_max_token_length, 256 when left out"
)

RULES = (
    fp16,
    clip_skip,
    sd_only_settings,
    max_token_length,
    weighting,
    text_encoder_cache,
    grid_vae,
    prompt_dashes,
    tokenizers_offline,
)

FAMILY = Family(
    name="sd3",
    label="SD3",
    train_script="sd3_train_network.py",
    network_modules=SD3_NETWORK_MODULES,
    recognise=recognise,
    v2=False,
    # sd3_train_network.py: verify_bucket_reso_steps(32).
    bucket_steps_multiple=32,
    vae_overflows_in_fp16=False,
    grid=Sd3Inference(),
    # A1111's SdVersion has SD3 (extensions-builtin/Lora/network.py).
    sd_version="SD3",
    rules=RULES,
    model_files=(CLIP_L, CLIP_G, T5XXL),
    tokenizers=TOKENIZERS,
    tokenizer_cache=KOHYA_CACHE,
    model_type=None,
    defaults=DEFAULTS,
    memory=MEMORY,
)
