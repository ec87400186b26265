"""kohya's ``anima_minimal_inference.py --from_file`` as the Anima grid renderer.

anima_minimal_inference.py merges the LoRA files into the DiT (and the Qwen3 text encoder) while it
loads them (``anima_utils.load_anima_model(lora_weights_list=..., lora_multipliers=...)``), so the
grid loads the model once per (epoch, weight) column plus once for the no-LoRA baseline: the shared
mechanism is :class:`lorabuild.kohya.mergedinfer.MergingInference`. Kohya saves each image as
``save_path/%Y%m%d-%H%M%S-%f[:-3]_SEED_.png`` (milliseconds; the trailing ``_`` is kohya's, from an
empty base name).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from lorabuild.kohya.mergedinfer import MergingInference


class AnimaSettings(Protocol):
    """What :class:`AnimaInference` reads from a grid's settings (paths as the command is given them)."""

    @property
    def base(self) -> str:
        """The DiT (``--dit``)."""

    @property
    def vae(self) -> str | None:
        """The Qwen-Image VAE (``--vae``)."""

    @property
    def qwen3(self) -> str | None:
        """The Qwen3 text encoder (``--text_encoder``)."""

    @property
    def vae_chunk_size(self) -> int | None:
        """``--vae_chunk_size``, as training used it."""

    @property
    def vae_disable_cache(self) -> bool:
        """``--vae_disable_cache``, as training used it."""


@dataclass(frozen=True)
class AnimaInference(MergingInference["AnimaSettings"]):
    """Anima's grid, rendered by kohya's ``anima_minimal_inference.py --from_file``: a process per LoRA setting."""

    SCRIPT: ClassVar[str] = "anima_minimal_inference.py"
    """The script, inside the kohya checkout."""
    NAME: ClassVar[str] = "anima_minimal_inference"
    """How messages name it."""

    def argv(
        self,
        settings: AnimaSettings,
        *,
        script: str,
        outdir: str,
        prompt_file: str,
        network_files: Sequence[str],
        multipliers: Sequence[float],
        python: str = sys.executable,
    ) -> list[str]:
        """The command (relative paths are relative to the build folder)."""
        argv = [python, script, "--dit", settings.base]
        if settings.vae:
            argv += ["--vae", settings.vae]
        if settings.qwen3:
            argv += ["--text_encoder", settings.qwen3]
        if settings.vae_chunk_size:
            argv += ["--vae_chunk_size", str(settings.vae_chunk_size)]
        if settings.vae_disable_cache:
            argv.append("--vae_disable_cache")
        argv += ["--save_path", outdir, "--from_file", prompt_file]
        if network_files:
            argv += [
                "--lora_weight",
                *network_files,
                "--lora_multiplier",
                *(repr(float(m)) for m in multipliers),
            ]
        return argv
