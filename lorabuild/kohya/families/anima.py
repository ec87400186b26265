"""Anima (``model.family = "anima"``): kohya's ``anima_train_network.py`` with ``networks.lora_anima``.

A Cosmos-Predict2-style DiT with an LLM adapter, the Qwen3-0.6B text encoder and the Qwen-Image VAE.
Everything here is from kohya's ``docs/anima_train_network.md``, ``anima_train_network.py`` and
``library/anima_train_utils.py`` at the pinned commit. Each rule says which kohya failure it prevents.

kohya loads Anima's DiT lazily, after the text encoder's outputs are cached
(``AnimaNetworkTrainer.load_unet_lazily``): a wrong DiT file fails only then. lorabuild's model rules
(:func:`lorabuild.rules.model.model_exists`, ``model_family``) judge it before the launch.

The tokenizers ship with kohya: Qwen3's in ``configs/qwen3_06b`` and the T5 tokenizer of the LLM
adapter's target tokens in ``configs/t5_old`` (``library/anima_utils.py``), so nothing is downloaded.
The pinned checkout lorabuild is developed against lacks ``configs/qwen3_06b/tokenizer.json``;
transformers builds the same ``Qwen2TokenizerFast`` from ``vocab.json`` and ``merges.txt`` there.

Memory presets: none. docs/anima_train_network.md 7.1 ("VRAM Usage Optimization") lists options
(``--blocks_to_swap``, ``--unsloth_offload_checkpointing``, ``--cache_text_encoder_outputs``...) but
gives no figures per GPU size, so ``[launch] vram_gb`` applies nothing for Anima.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType

from lorabuild.kohya.animainfer import AnimaInference
from lorabuild.kohya.families import flux
from lorabuild.kohya.families.base import KOHYA_CACHE, Default, Family, ModelFile, ModelHeader, NetworkModules
from lorabuild.problems import Problem, error, warning
from lorabuild.recipe.schema import Recipe

NETWORK_MODULES: NetworkModules = MappingProxyType({"lora": ("networks.lora_anima", None)})
"""kohya's Anima LoRA (networks/lora_anima.py); ``networks.lora`` would miss the DiT's blocks."""

# The LLM adapter only Anima has (library/anima_models.py Anima.llm_adapter), bare or under the
# "net." prefix of the released files (anima_utils.load_anima_model strips it). kohya's loader
# raises on a DiT without it ("Missing keys in checkpoint"), so a Cosmos DiT without one is no Anima.
SIGNATURES = ("llm_adapter.", "net.llm_adapter.")

QWEN3 = ModelFile("qwen3", "the Qwen3-0.6B text encoder", "qwen3", "qwen_3_06b_base.safetensors")
VAE = ModelFile("vae", "the Qwen-Image VAE", "qwen_image_vae", "qwen_image_vae.safetensors")

MAX_BLOCKS_TO_SWAP = 26
"""docs/anima_train_network.md 4.1: a 28-block model (Anima-Preview) swaps at most 26 blocks."""

_DOCS = "kohya docs/anima_train_network.md"


def recognise(header: ModelHeader) -> bool:
    """An Anima DiT file: its LLM adapter's tensors."""
    return header.pipeline is None and header.has_prefix(SIGNATURES)


def _uncacheable(recipe: Recipe) -> str | None:
    changing = _caption_changes(recipe)
    if changing:
        return f"{changing} changes captions every epoch, and cached outputs cannot follow"
    if recipe.network.train != "unet":
        return "the text encoder is trained"
    return None


def _caption_changes(recipe: Recipe) -> str | None:
    """What changes a caption between epochs that Anima's cache cannot follow, as a recipe key, or None.

    anima_train_network.py asks ``is_text_encoder_output_cacheable(cache_supports_dropout=True)``:
    shuffled captions and tag dropout change what is encoded; whole-caption dropout it applies to the
    cached outputs (``drop_cached_text_encoder_outputs``).
    """
    return flux.caption_changes(recipe, cache_supports_dropout=True)


DEFAULTS = (
    Default("training.mixed_precision", "bf16", f"{_DOCS} 4 (the example command)"),
    Default("training.save_precision", "bf16", "the precision the model is trained in"),
    Default(
        "training.attention",
        "sdpa",
        "kohya's Anima DiT uses PyTorch's attention (attn_mode torch) unless told otherwise; xformers needs split_attn",
    ),
    Default("flow.timestep_sampling", "sigmoid", f"{_DOCS} 4 (the example command; also kohya's default)"),
    Default("flow.vae_chunk_size", 64, f"{_DOCS} 4 (the example command): saves the Qwen-Image VAE's memory"),
    Default(
        "flow.vae_disable_cache", True, f"{_DOCS} 4 (the example command): saves the Qwen-Image VAE's memory"
    ),
    Default("training.gradient_checkpointing", True, f"{_DOCS} 4 (the example command)"),
    Default(
        "training.cache_text_encoder_outputs",
        True,
        f"{_DOCS} 4.1: recommended when the text encoder is not trained",
        unless=_uncacheable,
    ),
)


def fp8(recipe: Recipe) -> Iterator[Problem]:
    """kohya's Anima trainer turns fp8_base off with a warning: the memory it was meant to save is not saved."""
    if recipe.training.fp8_base:
        yield error(
            "training.fp8_base",
            "is not supported by kohya's Anima trainer (it turns fp8_base off with a warning and trains the DiT in "
            "full precision, using more memory than planned): remove it",
        )


def text_encoder_cache(recipe: Recipe) -> Iterator[Problem]:
    """anima_train_network.py asserts a cacheable dataset and a frozen text encoder when caching its outputs."""
    t = recipe.training
    if not (t.cache_text_encoder_outputs or t.cache_text_encoder_outputs_to_disk):
        return
    key = "training.cache_text_encoder_outputs"
    changing = _caption_changes(recipe)
    if changing:
        yield error(
            key,
            f"encodes each caption once, but {changing} changes captions every epoch (kohya stops: "
            '"when caching Text Encoder output, shuffle_caption, token_warmup_step or caption_tag_dropout_rate '
            'cannot be used"): turn one of them off',
        )
    if recipe.network.train != "unet":
        yield error(
            key,
            f'cannot be used while the text encoder is trained (network.train = "{recipe.network.train}"; kohya '
            'stops: "network for Text Encoder cannot be trained with caching Text Encoder outputs"): set '
            'network.train = "unet" or turn caching off',
        )


def attention(recipe: Recipe) -> Iterator[Problem]:
    """xformers needs split_attn in kohya's Anima DiT, and sageattn cannot train."""
    mode = recipe.flow.attn_mode or ("xformers" if recipe.training.attention == "xformers" else None)
    key = "flow.attn_mode" if recipe.flow.attn_mode else "training.attention"
    if mode == "xformers" and not recipe.flow.split_attn:
        yield error(
            key,
            "xformers attention in kohya's Anima DiT needs split attention (kohya --attn_mode help: "
            '"xformers requires --split_attn"): set flow.split_attn = true, or use "sdpa"',
        )
    if mode == "sageattn":
        yield error(
            key, 'sageattn is for inference only; kohya cannot train with it: use "torch" (or leave it out)'
        )


def block_swap(recipe: Recipe) -> Iterator[Problem]:
    """Anima-Preview has 28 blocks; kohya's offloader cannot swap more than 26 (docs 4.1), nor beside offloading."""
    swap = recipe.training.blocks_to_swap
    if swap and swap > MAX_BLOCKS_TO_SWAP:
        yield error(
            "training.blocks_to_swap",
            f"is at most {MAX_BLOCKS_TO_SWAP} for Anima's 28-block DiT ({_DOCS} 4.1; got {swap})",
        )
    if swap and str(recipe.kohya.get("unsloth_offload_checkpointing", "")).lower() == "true":
        yield error(
            "training.blocks_to_swap",
            'cannot be combined with kohya.unsloth_offload_checkpointing (kohya asserts: "blocks_to_swap is not '
            'supported with unsloth_offload_checkpointing"): keep one',
        )


def llm_adapter(recipe: Recipe) -> Iterator[Problem]:
    """kohya defines --llm_adapter_path but never reads it at the pinned commit."""
    if recipe.model.llm_adapter_path is not None:
        yield warning(
            "model.llm_adapter_path",
            "is accepted by kohya's Anima trainer but not used at the pinned commit (the LLM adapter is loaded "
            "from the DiT file, and a DiT without one fails to load): remove it",
        )


sd_only_settings = flux.sd_only_rule("Anima", ("model.clip_skip", *flux.NOISE_SETTINGS))
max_token_length = flux.unused_max_token_length_rule(
    "Anima", "Qwen3 reads up to 512 tokens: kohya.qwen3_max_token_length"
)

FAMILY = Family(
    name="anima",
    label="Anima",
    train_script="anima_train_network.py",
    network_modules=NETWORK_MODULES,
    recognise=recognise,
    v2=False,
    # anima_train_network.py: verify_bucket_reso_steps(16) (VAE downscale 8, patch 2).
    bucket_steps_multiple=16,
    vae_overflows_in_fp16=False,
    grid=AnimaInference(),
    # A1111 knows SD1/SD2/SDXL/SD3 and Forge adds Flux: none of them is Anima.
    sd_version="Unknown",
    rules=(
        fp8,
        sd_only_settings,
        max_token_length,
        text_encoder_cache,
        attention,
        block_swap,
        llm_adapter,
    ),
    model_files=(QWEN3, VAE),
    tokenizers=(),
    tokenizer_cache=KOHYA_CACHE,
    model_type=None,
    defaults=DEFAULTS,
    memory=(),
)
