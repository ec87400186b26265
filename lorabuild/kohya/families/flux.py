"""FLUX.1 dev and schnell (``model.family = "flux"``): kohya's ``flux_train_network.py`` with ``networks.lora_flux``.

Everything here is from kohya's ``docs/flux_train_network.md`` and ``flux_train_network.py`` at the
pinned commit; :mod:`~lorabuild.kohya.families.chroma` reuses most of it. Each rule says which
kohya failure it prevents, and where kohya finds it: most only after the model has loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType

from lorabuild.kohya.families.base import (
    KOHYA_CACHE,
    Default,
    Family,
    FamilyRule,
    MemoryPreset,
    ModelFile,
    ModelHeader,
    NetworkModules,
)
from lorabuild.kohya.fluxinfer import FluxInference
from lorabuild.kohya.prompts import flux_text_problem
from lorabuild.problems import Problem, error, warning
from lorabuild.recipe.schema import Recipe

FLUX_NETWORK_MODULES: NetworkModules = MappingProxyType({"lora": ("networks.lora_flux", None)})
"""kohya's FLUX LoRA (networks/lora_flux.py); ``networks.lora`` would miss the transformer."""

# The DiT's double-stream blocks, in BFL's layout, bare or under ComfyUI's prefix.
SIGNATURES = ("double_blocks.", "model.diffusion_model.double_blocks.")
# What only Chroma has (library/chroma_models.py: the guidance approximator replaces vector_in).
CHROMA_SIGNATURES = ("distilled_guidance_layer.", "model.diffusion_model.distilled_guidance_layer.")
# HunyuanImage 2.1's DiT has double_blocks.* too, and a byT5 mapper FLUX has not.
NOT_FLUX = ("byt5_in.", "model.diffusion_model.byt5_in.")


def recognise(header: ModelHeader) -> bool:
    """A FLUX.1 DiT file (``double_blocks.*``, not Chroma's), or a diffusers FLUX pipeline folder."""
    if header.pipeline is not None:
        return "Flux" in header.pipeline
    return header.has_prefix(SIGNATURES) and not header.has_prefix((*CHROMA_SIGNATURES, *NOT_FLUX))


CLIP_L = ModelFile("clip_l", "the CLIP-L text encoder", "clip_l", "clip_l.safetensors")
T5XXL = ModelFile("t5xxl", "the T5-XXL text encoder", "t5xxl", "t5xxl_fp16.safetensors")
AE = ModelFile("ae", "the FLUX autoencoder", "ae", "ae.safetensors")

# strategy_flux.py: CLIP_L_TOKENIZER_ID, T5_XXL_TOKENIZER_ID (Chroma loads both too).
TOKENIZERS = ("openai/clip-vit-large-patch14", "google/t5-v1_1-xxl")

_DOCS = "kohya docs/flux_train_network.md"


def common_defaults(guidance: float, sampling: str) -> tuple[Default, ...]:
    """The defaults FLUX.1 and Chroma share, with their own guidance and timestep sampling."""
    return (
        Default(
            "training.mixed_precision",
            "bf16",
            "FLUX is trained in bf16; fp16 overflows into NaN (black images)",
        ),
        Default("training.save_precision", "bf16", "the precision the model was trained in"),
        Default(
            "flow.guidance_scale",
            guidance,
            f"{_DOCS}: kohya's default 3.5 is for inference; training wants {guidance}",
        ),
        Default("flow.timestep_sampling", sampling, f"{_DOCS}'s recommendation (kohya's default: sigma)"),
        Default(
            "flow.model_prediction_type", "raw", f"{_DOCS}'s recommendation (kohya's default: sigma_scaled)"
        ),
        Default("training.attention", "sdpa", "xformers is not used by kohya's FLUX model"),
    )


def inference_defaults(guidance: float, cfg_scale: float) -> tuple[Default, ...]:
    """The grid's and in-training samples' guidance (``--g``) and CFG scale for FLUX.1 or Chroma."""
    return (
        Default(
            "evaluate.guidance",
            guidance,
            f"{_DOCS}: the inference guidance (--g) for the grid and samples; [flow] guidance_scale is the training's",
        ),
        Default(
            "evaluate.cfg_scale",
            cfg_scale,
            "flux_minimal_inference.py's CFG scale (--c / sample --l); 1.0 runs no negative pass",
        ),
    )


def _uncacheable(recipe: Recipe) -> str | None:
    changing = caption_changes(recipe)
    if changing:
        return f"{changing} changes captions every epoch, and cached outputs cannot follow"
    if recipe.network.train == "text_encoder":
        return "only the text encoder is trained"
    return None


def _figures(batch: int, swap: int | None, eight_bit: bool) -> tuple[Default, ...]:
    why = f"{_DOCS} 6.1 (VRAM usage optimization)"
    settings = [
        Default("training.fp8_base", True, f"{why}: every figure there is with --fp8_base"),
        Default("training.gradient_checkpointing", True, f"{why}: in the documented command"),
        Default(
            "training.cache_text_encoder_outputs",
            True,
            f"{why}: in the documented command",
            unless=_uncacheable,
        ),
        Default("dataset.batch_size", batch, why),
    ]
    if swap:
        settings.append(Default("training.blocks_to_swap", swap, why))
    if eight_bit:
        settings.append(Default("optimizer.type", "AdamW8bit", why))
    return tuple(settings)


MEMORY = (
    MemoryPreset(24, _figures(2, None, False), f"{_DOCS} 6.1: 24 GB, basic settings with batch size 2"),
    MemoryPreset(
        16,
        _figures(1, 8, False),
        f"{_DOCS} 6.1: 16 GB, batch size 1 and --blocks_to_swap (the table gives no count: "
        "8 here, half of its 12 GB figure)",
    ),
    MemoryPreset(12, _figures(1, 16, True), f"{_DOCS} 6.1: 12 GB, --blocks_to_swap 16 and 8-bit AdamW"),
    MemoryPreset(
        10,
        _figures(1, 22, True),
        f"{_DOCS} 6.1: 10 GB, --blocks_to_swap 22 and an fp8 T5-XXL file (t5xxl_fp8_e4m3fn.safetensors)",
    ),
    MemoryPreset(
        8,
        _figures(1, 28, True),
        f"{_DOCS} 6.1: 8 GB, --blocks_to_swap 28 and an fp8 T5-XXL file (t5xxl_fp8_e4m3fn.safetensors)",
    ),
)


def fp16(recipe: Recipe) -> Iterator[Problem]:
    """FLUX's activations overflow fp16: the loss turns NaN and every sample is black."""
    t = recipe.training
    if t.mixed_precision == "fp16":
        yield error(
            "training.mixed_precision",
            'FLUX models overflow in fp16 (the loss turns NaN and samples come out black): use "bf16" '
            '(RTX 30xx and newer), or "no" on a CPU',
        )
    if t.full_fp16:
        yield error(
            "training.full_fp16", "FLUX models overflow in fp16: turn full_fp16 off (full_bf16 works)"
        )


def clip_skip(recipe: Recipe) -> Iterator[Problem]:
    """kohya's FLUX trainer has no CLIP layer choice; clip_skip would do nothing."""
    if recipe.model.clip_skip is not None:
        yield error(
            "model.clip_skip",
            "means nothing for FLUX (its trainer always uses CLIP-L's pooled output and T5): remove it",
        )


MAX_BLOCKS_TO_SWAP = 35
"""flux_models.Flux.enable_block_swap: n // 2 of the 19 double and 2 * (n - n // 2) of the 38 single
blocks, each at most the count less 2 (docs/flux_train_network.md: "up to 35")."""


def blocks_to_swap(recipe: Recipe) -> Iterator[Problem]:
    """kohya asserts the swap fits FLUX's blocks, after loading the model."""
    swap = recipe.training.blocks_to_swap
    if swap is not None and swap > MAX_BLOCKS_TO_SWAP:
        yield error(
            "training.blocks_to_swap",
            f"is {swap}, but FLUX models can swap at most {MAX_BLOCKS_TO_SWAP} blocks (kohya stops after loading "
            f'the model: "Cannot swap more than 17 double blocks"): use {MAX_BLOCKS_TO_SWAP} or fewer',
        )


def flow_shift(recipe: Recipe) -> Iterator[Problem]:
    """kohya ignores discrete_flow_shift unless timestep_sampling is "shift"."""
    f = recipe.flow
    if f.discrete_flow_shift is not None and f.timestep_sampling not in (None, "shift"):
        yield warning(
            "flow.discrete_flow_shift",
            f'is used only with flow.timestep_sampling = "shift" (it is "{f.timestep_sampling}", so kohya '
            'ignores it): set timestep_sampling = "shift" or remove discrete_flow_shift',
        )
    if f.sigmoid_scale is not None and f.timestep_sampling in ("sigma", "uniform"):
        yield warning(
            "flow.sigmoid_scale",
            f'is used only with sigmoid, shift or flux_shift sampling (not "{f.timestep_sampling}"): remove it',
        )


def deprecated(recipe: Recipe) -> Iterator[Problem]:
    """split_mode is deprecated (kohya turns it into blocks_to_swap 18); split_qkv crashes at the pinned commit."""
    if recipe.kohya.get("split_mode"):
        yield error(
            "kohya.split_mode",
            "is deprecated in kohya (it becomes --blocks_to_swap 18 with a warning): set "
            "training.blocks_to_swap instead (or launch.vram_gb for kohya's figures)",
        )
    if str(recipe.network.args.get("split_qkv", "")).lower() == "true":
        yield error(
            "network.args.split_qkv",
            "crashes kohya's FLUX LoRA at the pinned commit (networks/lora_flux.py: too many values to unpack): "
            "remove it",
        )


def text_encoder_cache(recipe: Recipe) -> Iterator[Problem]:
    """Cached text-encoder outputs fix each caption once: kohya asserts nothing shuffles or drops tags."""
    t = recipe.training
    if not (t.cache_text_encoder_outputs or t.cache_text_encoder_outputs_to_disk):
        return
    key = "training.cache_text_encoder_outputs"
    changing = caption_changes(recipe)
    if changing:
        yield error(
            key,
            f"encodes each caption once, but {changing} changes captions every epoch (kohya stops: "
            '"when caching Text Encoder output, either caption_dropout_rate, shuffle_caption ... cannot be used"): '
            "turn one of them off",
        )
    if recipe.network.train == "text_encoder":
        yield error(
            key, 'cannot be used while only the text encoder is trained (network.train = "text_encoder")'
        )
    if str(recipe.network.args.get("train_t5xxl", "")).lower() == "true":
        yield error(
            key,
            "cannot be used while T5-XXL is trained (network.args.train_t5xxl; kohya stops with a ValueError): "
            "turn one of them off",
        )


def caption_changes(recipe: Recipe, *, cache_supports_dropout: bool = False) -> str | None:
    """The first dataset setting that changes a caption between epochs, as a recipe key, or None.

    Args:
        recipe: The recipe.
        cache_supports_dropout: The family's cache drops whole captions itself (kohya's
            ``is_text_encoder_output_cacheable(cache_supports_dropout=True)``: Anima's), so
            ``caption_dropout_rate`` does not count.
    """
    ds = recipe.dataset
    for i, subset in enumerate(ds.subsets):
        if subset.shuffle_caption:
            return f"dataset.subsets[{i}].shuffle_caption"
        if subset.shuffle_caption is None and ds.shuffle_caption:
            return "dataset.shuffle_caption"
    if ds.caption_dropout_rate and not cache_supports_dropout:
        return "dataset.caption_dropout_rate"
    if ds.caption_tag_dropout_rate:
        return "dataset.caption_tag_dropout_rate"
    return None


NOISE_SETTINGS = ("training.noise_offset", "training.min_snr_gamma", "model.v_parameterization")
"""SD noise-schedule settings a flow-matching trainer accepts and ignores: its get_noise_pred_and_target
draws plain noise (no noise offset), its post_process_loss returns the loss as it is (no min-SNR
weighting), and a flow-matching model has no v-prediction."""


def sd_only_rule(label: str, keys: tuple[str, ...] = NOISE_SETTINGS) -> FamilyRule:
    """The rule that ``keys`` (Stable Diffusion settings kohya's ``label`` trainer accepts, then ignores) are unset."""

    def sd_only_settings(recipe: Recipe) -> Iterator[Problem]:
        values = {
            "model.clip_skip": recipe.model.clip_skip,
            "model.v_parameterization": recipe.model.v_parameterization or None,
            "training.noise_offset": recipe.training.noise_offset,
            "training.min_snr_gamma": recipe.training.min_snr_gamma,
        }
        for key in keys:
            if values[key] is not None:
                yield error(
                    key,
                    f"is for Stable Diffusion; kohya's {label} trainer accepts it and silently ignores it: remove it",
                )

    sd_only_settings.__doc__ = f"Settings kohya's {label} trainer accepts and ignores: {', '.join(keys)}."
    return sd_only_settings


def unused_max_token_length_rule(label: str, instead: str) -> FamilyRule:
    """The rule that SD's ``training.max_token_length``, which kohya's ``label`` trainer does not read, is left out.

    Args:
        label: The family, as messages name it.
        instead: What sets its caption length, for the message.
    """

    def max_token_length(recipe: Recipe) -> Iterator[Problem]:
        if recipe.training.max_token_length != 75:
            yield warning(
                "training.max_token_length",
                f"is not used by kohya's {label} trainer ({instead}): remove it",
            )

    max_token_length.__doc__ = f"kohya's {label} trainer does not read max_token_length; {instead}."
    return max_token_length


def prompt_dashes_rule(label: str, script: str) -> FamilyRule:
    """The rule that an ``--interactive`` grid script (``script``, of ``label``) reads every prompt back whole.

    flux_minimal_inference.py, sd3_minimal_inference.py and lumina_minimal_inference.py split each
    grid line at every "--": a prompt holding one would lose its end, and a negative prompt "-" is none.
    """

    def prompt_dashes(recipe: Recipe) -> Iterator[Problem]:
        e = recipe.evaluate
        for i, prompt in enumerate(e.prompts):
            why = flux_text_problem(prompt, label=label, script=script)
            if why:
                yield error(f"evaluate.prompts[{i}]", why)
        why = flux_text_problem(e.negative_prompt, negative=True, label=label, script=script)
        if why:
            yield error("evaluate.negative_prompt", why)

    prompt_dashes.__doc__ = (
        f"{script} splits each grid line at every '--': a prompt holding one would lose its end."
    )
    return prompt_dashes


prompt_dashes = prompt_dashes_rule("FLUX.1/Chroma", FluxInference.SCRIPT)
sd_only_settings = sd_only_rule("FLUX")
max_token_length = unused_max_token_length_rule(
    "FLUX",
    "the T5 caption length is flow.t5xxl_max_token_length, 512 for dev and Chroma, 256 for schnell when left out",
)


def offline(recipe: Recipe) -> bool:
    """Whether ``[launch] env`` keeps kohya off the Hugging Face hub (``HF_HUB_OFFLINE``)."""
    return recipe.launch.env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def grid_tokenizers_rule(label: str, script: str, ids: tuple[str, ...]) -> FamilyRule:
    """The rule that an offline grid script with no tokenizer folder finds its tokenizers in the hub cache.

    flux_minimal_inference.py, sd3_minimal_inference.py and hunyuan_image_minimal_inference.py take
    no ``--tokenizer_cache_dir``: they read ``ids`` from the Hugging Face cache only (``HF_HOME``).
    """
    spoken = ", ".join(ids[:-1]) + f" and {ids[-1]}" if len(ids) > 1 else ids[0]

    def tokenizers_offline(recipe: Recipe) -> Iterator[Problem]:
        if recipe.evaluate.prompts and offline(recipe) and "HF_HOME" not in recipe.launch.env:
            yield warning(
                "launch.env",
                f"has HF_HUB_OFFLINE but no HF_HOME: the {label} grid ({script}) takes no tokenizer folder and "
                f"reads {spoken} from the Hugging Face cache (~/.cache/huggingface, or HF_HOME); download them "
                "there once (huggingface-cli download ID, for each) or set [launch] env HF_HOME to a cache that "
                "has them",
            )

    tokenizers_offline.__doc__ = (
        f"{script} reads its tokenizers from the Hugging Face cache only (no tokenizer folder)."
    )
    return tokenizers_offline


tokenizers_offline = grid_tokenizers_rule("FLUX", FluxInference.SCRIPT, TOKENIZERS)


RULES = (
    fp16,
    clip_skip,
    sd_only_settings,
    blocks_to_swap,
    max_token_length,
    flow_shift,
    deprecated,
    text_encoder_cache,
    prompt_dashes,
)

FAMILY = Family(
    name="flux",
    label="FLUX.1",
    train_script="flux_train_network.py",
    network_modules=FLUX_NETWORK_MODULES,
    recognise=recognise,
    v2=False,
    # flux_train_network.py: verify_bucket_reso_steps(32).
    bucket_steps_multiple=32,
    vae_overflows_in_fp16=False,
    grid=FluxInference(),
    # Forge filters LoRAs by the card's sd version; "Flux" is its FLUX preset.
    sd_version="Flux",
    rules=(*RULES, tokenizers_offline),
    model_files=(CLIP_L, T5XXL, AE),
    tokenizers=TOKENIZERS,
    tokenizer_cache=KOHYA_CACHE,
    model_type="flux",
    defaults=(*common_defaults(1.0, "flux_shift"), *inference_defaults(3.5, 1.0)),
    memory=MEMORY,
)
