"""What ``[evaluate]`` asks for, computed once in :func:`~lorabuild.plan.plan.build_plan`.

:class:`GridSettings` is everything the grid's cells share (the model as ``config.toml`` names it,
the precision, the prompts with ``{trigger}`` replaced, seeds, weights, epochs, sampler settings);
:mod:`lorabuild.stages.grid` renders it with gen_img, :mod:`lorabuild.stages.install` takes its
default weight from it, and :func:`sample_prompts` writes the same prompts as kohya's
``sample_prompts.txt``. Nothing downstream goes back to the recipe's ``[evaluate]`` table.

Lumina 2 adds Gemma-2, the system prompt and the Gemma-2 length (``lumina_minimal_inference.py``).
SD3 adds CLIP-G, the CLIP attention mask and the T5 length (``sd3_minimal_inference.py``), Anima
its Qwen3 text encoder and VAE options, HunyuanImage its Qwen2.5-VL, byT5, flow shift and memory
options. The flow families (FLUX.1, Chroma) add their model files (``--clip_l``, ``--t5xxl``, ``--ae``),
``--model_type``, the T5 attention mask and the inference guidance (``--g``: FLUX.1-dev's distilled
guidance, 0 for Chroma, whose CFG scale and negative prompt do the guiding), all from the compiled
config and ``[evaluate]`` (the family's defaults fill ``evaluate.guidance`` and ``cfg_scale``).
``[flow] guidance_scale`` is the *training* guidance and is not used here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lorabuild.kohya import families
from lorabuild.kohya.config import KohyaConfig
from lorabuild.kohya.fluxinfer import FluxDtype
from lorabuild.kohya.genimg import EMBEDDINGS_MULTIPLES, Dtype
from lorabuild.kohya.prompts import PromptLine
from lorabuild.kohya.sd3infer import Sd3Inference
from lorabuild.plan.subsets import first_trigger
from lorabuild.recipe.schema import Recipe
from lorabuild.render.quoting import comment_text

_FLUX_DTYPES: dict[Dtype, FluxDtype] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class GridSettings:
    """What every cell of a build's grid shares, from the recipe and the compiled config.

    Paths are as gen_img is given them: relative to the build folder (its working directory)
    or absolute, as in ``config.toml``.

    Attributes:
        family: The model family (:mod:`lorabuild.kohya.families`; its ``grid`` renders the cells).
        base: The base model (``--ckpt``).
        vae: A replacement VAE (``--vae``), or None.
        tokenizer_cache_dir: ``--tokenizer_cache_dir``, or None.
        v_parameterization: ``--v_parameterization``.
        clip_skip: ``--clip_skip``, or None for kohya's default.
        embeddings_multiples: ``--max_embeddings_multiples`` (3 for max_token_length 225).
        network_module: The kohya network module the LoRA files were trained with.
        dtype: fp32 (CPU training or no mixed precision), fp16 or bf16.
        no_half_vae: ``--no_half_vae``.
        prompts: The prompts, ``{trigger}`` replaced.
        negative_prompt: The negative prompt ("" for none).
        seeds: One image per seed.
        weights: LoRA weights to compare.
        baseline: Add the no-LoRA column.
        sampler: gen_img ``--sampler``.
        steps: Sampling steps.
        cfg_scale: CFG scale.
        width: Image width.
        height: Image height.
        epochs: The rows ``[evaluate] epochs`` asks for: ``"all"`` (every saved epoch) or a list.
        clip_l: FLUX.1's CLIP-L (``--clip_l``); None for Chroma and the SD families.
        t5xxl: The flow families' T5-XXL (``--t5xxl``), or None.
        ae: The flow families' autoencoder (``--ae``), or None.
        model_type: ``--model_type`` (flux, chroma); None for the SD families.
        apply_t5_attn_mask: ``--apply_t5_attn_mask`` (from ``[flow]``; Chroma needs it).
        guidance: The inference guidance (``--g``) of FLUX.1 and Chroma; None for the SD families, SD3,
            Anima and HunyuanImage.
        clip_g: SD3's CLIP-G (``--clip_g``), or None (not SD3, or the checkpoint includes it).
        apply_lg_attn_mask: SD3's ``--apply_lg_attn_mask`` (from ``[flow]``), as trained.
        t5xxl_max_token_length: The T5 length trained with (``[flow]``), or None for kohya's default;
            SD3's grid is given it (``--t5xxl_token_length``).
        qwen3: Anima's Qwen3 text encoder (``--text_encoder``), or None.
        vae_chunk_size: Anima's and HunyuanImage's ``--vae_chunk_size`` (from ``[flow]``), or None.
        vae_disable_cache: Anima's ``--vae_disable_cache`` (from ``[flow]``).
        text_encoder: HunyuanImage's Qwen2.5-VL (``--text_encoder``), or None.
        byt5: HunyuanImage's byT5 (``--byt5``), or None.
        flow_shift: The training's ``discrete_flow_shift`` (HunyuanImage's ``--flow_shift``), or None.
        attn_mode: HunyuanImage's ``--attn_mode`` (from ``[flow]``), or None.
        fp8_scaled: HunyuanImage's ``--fp8_scaled`` (from ``[flow]``).
        text_encoder_cpu: HunyuanImage's ``--text_encoder_cpu`` (from ``[flow]``).
        blocks_to_swap: The training's ``blocks_to_swap``, for a renderer that takes it, or None.
        gemma2: Lumina 2's Gemma-2 text encoder (``--gemma2_path``), or None.
        system_prompt: Lumina 2's system prompt, as trained (``--system_prompt``), or None.
        gemma2_max_token_length: Lumina 2's Gemma-2 length, as trained, or None for kohya's 256.
    """

    family: str
    base: str
    vae: str | None
    tokenizer_cache_dir: str | None
    v_parameterization: bool
    clip_skip: int | None
    embeddings_multiples: int
    network_module: str
    dtype: Dtype
    no_half_vae: bool
    prompts: tuple[str, ...]
    negative_prompt: str
    seeds: tuple[int, ...]
    weights: tuple[float, ...]
    baseline: bool
    sampler: str
    steps: int
    cfg_scale: float
    width: int
    height: int
    epochs: Literal["all"] | tuple[int, ...] = "all"
    clip_l: str | None = None
    t5xxl: str | None = None
    ae: str | None = None
    model_type: str | None = None
    apply_t5_attn_mask: bool = False
    guidance: float | None = None
    clip_g: str | None = None
    apply_lg_attn_mask: bool = False
    t5xxl_max_token_length: int | None = None
    qwen3: str | None = None
    vae_chunk_size: int | None = None
    vae_disable_cache: bool = False
    text_encoder: str | None = None
    byt5: str | None = None
    flow_shift: float | None = None
    attn_mode: str | None = None
    fp8_scaled: bool = False
    text_encoder_cpu: bool = False
    blocks_to_swap: int | None = None
    gemma2: str | None = None
    system_prompt: str | None = None
    gemma2_max_token_length: int | None = None

    @property
    def flux_dtype(self) -> FluxDtype:
        """:attr:`dtype` as flux_minimal_inference.py's ``--dtype`` spells it."""
        return _FLUX_DTYPES[self.dtype]

    def model_files(self) -> dict[str, str]:
        """The model files besides :attr:`base` and :attr:`vae` that the renderer loads (key -> path)."""
        files = {
            "clip_l": self.clip_l,
            "clip_g": self.clip_g,
            "t5xxl": self.t5xxl,
            "ae": self.ae,
            "qwen3": self.qwen3,
            "text_encoder": self.text_encoder,
            "byt5": self.byt5,
            "gemma2": self.gemma2,
        }
        return {key: path for key, path in files.items() if path}

    def image_inputs(self) -> dict[str, Any]:
        """What every cell's pixels depend on besides its own model files, weight, prompt and seed."""
        if isinstance(families.get(self.family).grid, Sd3Inference):
            # sd3_minimal_inference.py: one sampler (SD3's flow schedule, shift 3.0), no CLIP skip.
            return {
                "family": self.family,
                "apply_lg_attn_mask": self.apply_lg_attn_mask,
                "apply_t5_attn_mask": self.apply_t5_attn_mask,
                "t5xxl_max_token_length": self.t5xxl_max_token_length,
                "dtype": self.dtype,
                "steps": self.steps,
                "cfg_scale": self.cfg_scale,
                "size": [self.width, self.height],
            }
        if self.gemma2 is not None:
            # lumina_minimal_inference.py: its own sampler (shift), CFG with a negative pass, the
            # system prompt and Gemma-2 length it was given; what it does read is here.
            return {
                "family": self.family,
                "system_prompt": self.system_prompt,
                "gemma2_max_token_length": self.gemma2_max_token_length,
                "flow_shift": self.flow_shift,
                "dtype": self.dtype,
                "steps": self.steps,
                "cfg_scale": self.cfg_scale,
                "size": [self.width, self.height],
            }
        if self.byt5 is not None:
            # hunyuan_image_minimal_inference.py: its own sampler and dtype; what it does read is here.
            return {
                "family": self.family,
                "flow_shift": self.flow_shift,
                "fp8_scaled": self.fp8_scaled,
                "steps": self.steps,
                "cfg_scale": self.cfg_scale,
                "size": [self.width, self.height],
            }
        if self.model_type is not None:
            # flux_minimal_inference.py: one sampler (FLUX's flow schedule), no CLIP skip, its own
            # T5 length; what it does read is here.
            return {
                "family": self.family,
                "model_type": self.model_type,
                "apply_t5_attn_mask": self.apply_t5_attn_mask,
                "dtype": self.dtype,
                "steps": self.steps,
                "guidance": self.guidance,
                "cfg_scale": self.cfg_scale,
                "size": [self.width, self.height],
            }
        return {
            "family": self.family,
            "v_parameterization": self.v_parameterization,
            "clip_skip": self.clip_skip,
            "embeddings_multiples": self.embeddings_multiples,
            "dtype": self.dtype,
            "no_half_vae": self.no_half_vae,
            "sampler": self.sampler,
            "steps": self.steps,
            "cfg_scale": self.cfg_scale,
            "size": [self.width, self.height],
        }

    def prompt_line(
        self, prompt: str, seed: int, *, multipliers: tuple[float, ...] = (), image_name: str | None = None
    ) -> PromptLine:
        """The prompt-file line of one image of ``prompt`` and ``seed``, in these settings.

        Args:
            prompt: One of :attr:`prompts`.
            seed: The seed.
            multipliers: gen_img's ``--am``: each loaded network's weight.
            image_name: gen_img's ``--f``: the file it saves the image as.
        """
        return PromptLine(
            prompt=prompt,
            negative=self.negative_prompt,
            width=self.width,
            height=self.height,
            seed=seed,
            steps=self.steps,
            cfg_scale=self.cfg_scale,
            sampler=self.sampler,
            multipliers=multipliers,
            image_name=image_name,
            guidance=self.guidance,
        )


def prompt_text(recipe: Recipe, prompt: str) -> str:
    """The prompt as kohya is given it: ``{trigger}`` replaced by the first subset's trigger."""
    return prompt.replace("{trigger}", first_trigger(recipe) or "")


def grid_settings(recipe: Recipe, config: KohyaConfig, family: str) -> GridSettings:
    """The grid's shared settings: ``[evaluate]``, and the model and precision training used."""
    model, training, e = config.model, recipe.training, recipe.evaluate
    cpu = recipe.launch.gpus == 0
    dtype: Dtype = "fp32" if cpu or training.mixed_precision == "no" else training.mixed_precision
    return GridSettings(
        family=family,
        base=model.pretrained_model_name_or_path,
        vae=model.vae,
        tokenizer_cache_dir=model.tokenizer_cache_dir,
        v_parameterization=model.v_parameterization,
        clip_skip=model.clip_skip,
        embeddings_multiples=EMBEDDINGS_MULTIPLES[training.max_token_length],
        network_module=config.network.network_module,
        dtype=dtype,
        # A VAE that overflows in fp16 (SDXL's: black images) stays in fp32, as training keeps it.
        no_half_vae=training.no_half_vae or (families.get(family).vae_overflows_in_fp16 and dtype == "fp16"),
        prompts=tuple(prompt_text(recipe, p) for p in e.prompts),
        negative_prompt=e.negative_prompt,
        seeds=tuple(e.seeds),
        weights=tuple(e.weights),
        baseline=e.baseline,
        sampler=e.sampler,
        steps=e.steps,
        cfg_scale=e.cfg_scale,
        width=e.width or recipe.dataset.resolution[0],
        height=e.height or recipe.dataset.resolution[1],
        epochs=e.epochs if e.epochs == "all" else tuple(e.epochs),
        clip_l=model.clip_l,
        t5xxl=model.t5xxl,
        ae=model.ae,
        model_type=model.model_type,
        apply_t5_attn_mask=config.flow.apply_t5_attn_mask,
        guidance=e.guidance if model.model_type is not None else None,
        clip_g=model.clip_g,
        apply_lg_attn_mask=config.flow.apply_lg_attn_mask,
        t5xxl_max_token_length=config.flow.t5xxl_max_token_length,
        qwen3=model.qwen3,
        vae_chunk_size=config.flow.vae_chunk_size,
        vae_disable_cache=config.flow.vae_disable_cache,
        text_encoder=model.text_encoder,
        byt5=model.byt5,
        flow_shift=config.flow.discrete_flow_shift,
        attn_mode=config.flow.attn_mode,
        fp8_scaled=config.flow.fp8_scaled,
        text_encoder_cpu=config.flow.text_encoder_cpu,
        blocks_to_swap=config.training.blocks_to_swap,
        gemma2=model.gemma2,
        system_prompt=config.flow.system_prompt,
        gemma2_max_token_length=config.flow.gemma2_max_token_length,
    )


def sample_prompts(name: str, grid: GridSettings) -> str:
    """``sample_prompts.txt`` in kohya's text format: one line per prompt and seed."""
    lines = [
        f"# Sample prompts for {comment_text(name)}, generated by lorabuild from the recipe's "
        "[evaluate] table."
    ]
    for prompt in grid.prompts:
        for seed in grid.seeds:
            lines.append(grid.prompt_line(prompt, seed).sample_prompts_line())
    return "\n".join(lines) + "\n"
