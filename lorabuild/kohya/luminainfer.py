"""kohya's ``lumina_minimal_inference.py --interactive`` as the Lumina Image 2.0 grid renderer: one model load.

lumina_minimal_inference.py loads the NextDiT, Gemma-2, the FLUX autoencoder and every LoRA file
once (``--lora_weights path;1.0 ...``, each a ``networks.lora_lumina`` network applied to the model,
not merged), then, with ``--interactive``, loops like FLUX's script: it prints ``Enter prompt (or
'exit') ...``, reads one stdin line (``PROMPT --w --h --s --d --g --n --ctr --rcfg --m m1,m2,...``,
written by :meth:`lorabuild.kohya.prompts.PromptLine.lumina_line`), renders it, saves it as
``output_dir/image_%Y%m%d%H%M%S_{seed}.png`` and logs ``Image saved to PATH``. The conversation is
:mod:`lorabuild.kohya.interactive`'s, with Lumina's words (:data:`DIALOGUE`).

What differs from FLUX's script (lumina_minimal_inference.py, ``generate_image`` and the loop under
``args.interactive``, at the pinned commit):

- the loop ends on ``exit``; an empty line is skipped, not an end;
- ``--g`` is the CFG scale (Lumina 2 runs a negative pass on every step; there is no ``--c``);
- the model files are ``--pretrained_model_name_or_path``, ``--gemma2_path`` and ``--ae_path`` (the
  trainer's are ``--gemma2`` and ``--ae``); the precision is ``--dtype``, ``--gemma2_dtype`` and
  ``--ae_dtype``, each bf16 unless given, so all three are given the training's;
- ``--system_prompt`` (the training's, put before every prompt; not before the negative one) and
  ``--gemma2_max_token_length``, as trained; ``--discrete_flow_shift`` (the sampler's shift; 6.0);
- the tokenizer: it takes no ``--tokenizer_cache_dir`` and builds ``LuminaTokenizeStrategy``
  without one, so ``google/gemma-2-2b`` (gated) comes from the Hugging Face hub cache. The
  training's ``tokenizer_cache_dir`` is such a cache for Lumina 2 (``models--google--gemma-2-2b``),
  so the run is pointed at it with ``HF_HUB_CACHE``: the grid reads the tokenizer the training read.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from lorabuild.kohya.fluxinfer import FluxDtype
from lorabuild.kohya.interactive import Dialogue, InteractiveRenderer
from lorabuild.kohya.prompts import PromptLine, exact_number

DIALOGUE = Dialogue(
    asks="Enter prompt",
    saved=re.compile(r"Image saved to (\S+\.png)"),
    goodbye="exit",
    line=PromptLine.lumina_line,
)
"""lumina_minimal_inference.py's ``--interactive`` dialogue."""


class LuminaSettings(Protocol):
    """What :class:`LuminaInference` reads from a grid's settings (paths as the command is given them)."""

    @property
    def base(self) -> str:
        """The NextDiT (``--pretrained_model_name_or_path``)."""

    @property
    def gemma2(self) -> str | None:
        """Gemma-2 (``--gemma2_path``)."""

    @property
    def ae(self) -> str | None:
        """The FLUX autoencoder (``--ae_path``)."""

    @property
    def system_prompt(self) -> str | None:
        """The training's system prompt (``--system_prompt``), or None for none."""

    @property
    def gemma2_max_token_length(self) -> int | None:
        """The training's Gemma-2 length (``--gemma2_max_token_length``); None for kohya's 256."""

    @property
    def flow_shift(self) -> float | None:
        """The training's ``discrete_flow_shift`` (``--discrete_flow_shift``); None for kohya's 6.0."""

    @property
    def tokenizer_cache_dir(self) -> str | None:
        """The training's ``--tokenizer_cache_dir``: for Lumina 2 a hub cache, the grid's ``HF_HUB_CACHE``."""

    @property
    def flux_dtype(self) -> FluxDtype:
        """The precision, spelled as torch names it (``--dtype``, ``--gemma2_dtype``, ``--ae_dtype``)."""


@dataclass(frozen=True)
class LuminaInference(InteractiveRenderer[LuminaSettings]):
    """The Lumina 2 grid, rendered by kohya's ``lumina_minimal_inference.py --interactive`` in one process."""

    SCRIPT: ClassVar[str] = "lumina_minimal_inference.py"
    """The script, inside the kohya checkout."""
    NAME: ClassVar[str] = "lumina_minimal_inference"
    """How messages name it."""
    DIALOGUE: ClassVar[Dialogue] = DIALOGUE

    def argv(
        self,
        settings: LuminaSettings,
        *,
        script: str,
        outdir: str,
        network_files: Sequence[str],
        python: str = sys.executable,
    ) -> list[str]:
        """The command (relative paths are relative to the build folder).

        Size, steps, seed, CFG scale and the LoRA multipliers are not given: every stdin line sets them.
        """
        argv = [python, script, "--pretrained_model_name_or_path", settings.base]
        if settings.gemma2:
            argv += ["--gemma2_path", settings.gemma2]
        if settings.ae:
            argv += ["--ae_path", settings.ae]
        dtype = settings.flux_dtype
        argv += ["--dtype", dtype, "--gemma2_dtype", dtype, "--ae_dtype", dtype]
        if settings.system_prompt:
            argv += ["--system_prompt", settings.system_prompt]
        if settings.gemma2_max_token_length is not None:
            argv += ["--gemma2_max_token_length", str(settings.gemma2_max_token_length)]
        if settings.flow_shift is not None:
            argv += ["--discrete_flow_shift", exact_number(settings.flow_shift)]
        argv += ["--output_dir", outdir]
        if network_files:
            argv += ["--lora_weights", *(f"{file};1.0" for file in network_files)]
        argv.append("--interactive")
        return argv

    def env(self, base: Mapping[str, str], settings: LuminaSettings) -> dict[str, str]:
        """As FLUX's, and ``HF_HUB_CACHE`` at the training's tokenizer cache when it has one (see the module)."""
        env = super().env(base, settings)
        if settings.tokenizer_cache_dir:
            # Relative paths are relative to the build folder, the run's working directory; the hub
            # library reads the variable as given, so it is handed on as config.toml names it.
            env["HF_HUB_CACHE"] = str(Path(settings.tokenizer_cache_dir))
        return env
