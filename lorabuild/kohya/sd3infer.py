"""kohya's ``sd3_minimal_inference.py --interactive`` as the SD3/SD3.5 grid renderer: one model load per grid.

sd3_minimal_inference.py loads the MMDiT, CLIP-L, CLIP-G, T5-XXL, the VAE and every LoRA file once
(``--lora_weights path;1.0 ...``; it accepts only ``networks.lora_sd3`` files), then, with
``--interactive``, loops like FLUX's script: it prints ``Enter prompt ...``, reads one stdin line
(``PROMPT --w --h --s --d --c --m m1,m2,... [--n NEGATIVE]``), renders it, saves it as
``output_dir/%Y%m%d_%H%M%S.png`` and logs ``Saved image to PATH``; an empty line ends it
(sd3_minimal_inference.py, ``generate_image`` and the loop under ``args.interactive``). So the
whole epoch x weight x prompt x seed grid is one process and one model load, as for FLUX.1: the
conversation (each line sent when kohya asks, each saved image moved to its cell's file at once,
so two images of one second cannot overwrite each other) is FLUX's
(:data:`lorabuild.kohya.fluxinfer.DIALOGUE`, held by :mod:`lorabuild.kohya.interactive`).

What differs from FLUX's script: no ``--g`` (SD3 has no distilled guidance; the line leaves it
out, :attr:`lorabuild.plan.evaluate.GridSettings.guidance` is None), no ``--model_type``, no
``--vae`` (the VAE is always read from the checkpoint: ``load_vae(None, ..., state_dict)``, so a
base model without one cannot be rendered), precision by ``--fp16``/``--bf16`` (float32 without),
``--t5xxl_token_length`` instead of the trainer's ``--t5xxl_max_token_length``, and
``--apply_lg_attn_mask``. The seed (``--d``) and negative prompt are reset on every line; size,
steps, CFG scale and the multipliers are kept from the line before, so every line sets them all.

The tokenizers: like flux_minimal_inference.py it takes no ``--tokenizer_cache_dir``; it loads
``openai/clip-vit-large-patch14``, ``laion/CLIP-ViT-bigG-14-laion2B-39B-b160k`` and
``google/t5-v1_1-xxl`` from the Hugging Face hub cache (``HF_HOME``; library/strategy_sd3.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from lorabuild.kohya.fluxinfer import DIALOGUE, FluxDtype
from lorabuild.kohya.interactive import Dialogue, InteractiveRenderer

_PRECISION_FLAG: dict[FluxDtype, str | None] = {"float32": None, "bfloat16": "--bf16", "float16": "--fp16"}


class Sd3Settings(Protocol):
    """What :class:`Sd3Inference` reads from a grid's settings (paths as the command is given them)."""

    @property
    def base(self) -> str:
        """The checkpoint: MMDiT and VAE, maybe the text encoders (``--ckpt_path``)."""

    @property
    def clip_l(self) -> str | None:
        """CLIP-L (``--clip_l``); None when the checkpoint includes it."""

    @property
    def clip_g(self) -> str | None:
        """CLIP-G (``--clip_g``); None when the checkpoint includes it."""

    @property
    def t5xxl(self) -> str | None:
        """T5-XXL (``--t5xxl``); None when the checkpoint includes it."""

    @property
    def apply_t5_attn_mask(self) -> bool:
        """``--apply_t5_attn_mask``, as trained."""

    @property
    def apply_lg_attn_mask(self) -> bool:
        """``--apply_lg_attn_mask``, as trained."""

    @property
    def t5xxl_max_token_length(self) -> int | None:
        """The training's T5 length (``--t5xxl_token_length``); None for kohya's 256."""

    @property
    def flux_dtype(self) -> FluxDtype:
        """The precision, spelled as torch names it (``--fp16``/``--bf16``, or float32)."""


@dataclass(frozen=True)
class Sd3Inference(InteractiveRenderer[Sd3Settings]):
    """The SD3 grid, rendered by kohya's ``sd3_minimal_inference.py --interactive`` in one process."""

    SCRIPT: ClassVar[str] = "sd3_minimal_inference.py"
    """The script, inside the kohya checkout."""
    NAME: ClassVar[str] = "sd3_minimal_inference"
    """How messages name it."""
    DIALOGUE: ClassVar[Dialogue] = DIALOGUE  # flux_minimal_inference.py's loop, line for line

    def argv(
        self,
        settings: Sd3Settings,
        *,
        script: str,
        outdir: str,
        network_files: Sequence[str],
        python: str = sys.executable,
    ) -> list[str]:
        """The command (relative paths are relative to the build folder).

        Size, steps, seed, CFG scale and the LoRA multipliers are not given: every stdin line sets them.
        """
        argv = [python, script, "--ckpt_path", settings.base]
        for flag, path in (
            ("--clip_l", settings.clip_l),
            ("--clip_g", settings.clip_g),
            ("--t5xxl", settings.t5xxl),
        ):
            if path:
                argv += [flag, path]
        if settings.t5xxl_max_token_length is not None:
            argv += ["--t5xxl_token_length", str(settings.t5xxl_max_token_length)]
        if settings.apply_lg_attn_mask:
            argv.append("--apply_lg_attn_mask")
        if settings.apply_t5_attn_mask:
            argv.append("--apply_t5_attn_mask")
        precision = _PRECISION_FLAG[settings.flux_dtype]
        if precision:
            argv.append(precision)
        argv += ["--output_dir", outdir]
        if network_files:
            argv += ["--lora_weights", *(f"{file};1.0" for file in network_files)]
        argv.append("--interactive")
        return argv
