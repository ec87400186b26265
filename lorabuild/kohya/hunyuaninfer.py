"""kohya's ``hunyuan_image_minimal_inference.py --from_file`` as the HunyuanImage 2.1 grid renderer.

The script merges its LoRA files into the DiT while loading it (hunyuan_image_minimal_inference.load_dit_model),
and its prompt lines cannot change them (``parse_prompt_line`` reads ``--w --h --d --s --g --fs --n``
only; ``--g`` is the CFG scale, 3.5 by default), so the grid takes one model load per LoRA setting:
the shared mechanism is :class:`lorabuild.kohya.mergedinfer.MergingInference`.

The tokenizers: the script takes no ``--tokenizer_cache_dir``; it loads ``Qwen/Qwen2.5-VL-7B-Instruct``
and ``google/byt5-small`` from the Hugging Face hub cache (``HF_HOME``), like the FLUX renderer.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from lorabuild.kohya.mergedinfer import MergingInference
from lorabuild.kohya.prompts import exact_number


class HunyuanSettings(Protocol):
    """What :class:`HunyuanInference` reads from a grid's settings (paths as the command is given them)."""

    @property
    def base(self) -> str:
        """The DiT (``--dit``)."""

    @property
    def vae(self) -> str | None:
        """The VAE (``--vae``)."""

    @property
    def text_encoder(self) -> str | None:
        """Qwen2.5-VL (``--text_encoder``)."""

    @property
    def byt5(self) -> str | None:
        """byT5 (``--byt5``)."""

    @property
    def flow_shift(self) -> float | None:
        """``--flow_shift`` (the training's ``discrete_flow_shift``), or None for the script's 5.0."""

    @property
    def attn_mode(self) -> str | None:
        """``--attn_mode``, or None for torch."""

    @property
    def fp8_scaled(self) -> bool:
        """``--fp8_scaled``."""

    @property
    def text_encoder_cpu(self) -> bool:
        """``--text_encoder_cpu``."""

    @property
    def vae_chunk_size(self) -> int | None:
        """``--vae_chunk_size``."""

    @property
    def blocks_to_swap(self) -> int | None:
        """``--blocks_to_swap``."""


@dataclass(frozen=True)
class HunyuanInference(MergingInference["HunyuanSettings"]):
    """HunyuanImage 2.1's grid: ``hunyuan_image_minimal_inference.py --from_file``, one process per LoRA setting."""

    SCRIPT: ClassVar[str] = "hunyuan_image_minimal_inference.py"
    """The script, inside the kohya checkout."""
    NAME: ClassVar[str] = "hunyuan_image_minimal_inference"
    """How messages name it."""

    def argv(
        self,
        settings: HunyuanSettings,
        *,
        script: str,
        outdir: str,
        prompt_file: str,
        network_files: Sequence[str],
        multipliers: Sequence[float],
        python: str = sys.executable,
    ) -> list[str]:
        """The command for one LoRA setting (relative paths are relative to the build folder)."""
        argv = [python, script, "--dit", settings.base]
        for option, path in (
            ("--text_encoder", settings.text_encoder),
            ("--byt5", settings.byt5),
            ("--vae", settings.vae),
        ):
            if path:
                argv += [option, path]
        argv += ["--save_path", outdir, "--from_file", prompt_file]
        argv += ["--attn_mode", settings.attn_mode or "torch"]
        if settings.flow_shift is not None:
            argv += ["--flow_shift", exact_number(settings.flow_shift)]
        if settings.fp8_scaled:
            argv.append("--fp8_scaled")
        if settings.text_encoder_cpu:
            argv.append("--text_encoder_cpu")
        if settings.vae_chunk_size:
            argv += ["--vae_chunk_size", str(settings.vae_chunk_size)]
        if settings.blocks_to_swap:
            argv += ["--blocks_to_swap", str(settings.blocks_to_swap)]
        if network_files:
            argv += ["--lora_weight", *network_files]
            argv += ["--lora_multiplier", *(exact_number(m) for m in multipliers)]
        return argv
