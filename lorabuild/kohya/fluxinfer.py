"""kohya's ``flux_minimal_inference.py --interactive`` as the FLUX.1 and Chroma grid renderer.

gen_img.py renders SD families only. flux_minimal_inference.py loads the DiT, text encoders, AE and
every LoRA file once (``--lora_weights path;1.0 ...``), then loops: it prints ``Enter prompt ...``,
reads one stdin line (``PROMPT --w --h --s --d --g --c --m m1,m2,... [--n NEGATIVE]``, written by
:meth:`lorabuild.kohya.prompts.PromptLine.flux_line`), renders it, saves it as
``output_dir/%Y%m%d_%H%M%S.png`` and logs ``Saved image to PATH``; an empty line ends it
(flux_minimal_inference.py, ``generate_image`` and the loop under ``args.interactive``).

Two images saved within one second get the same name, so the conversation is paced by kohya's
output (:class:`lorabuild.kohya.interactive.Conversation`, shared with the SD3 and Lumina 2
renderers): each line is sent only when kohya asks for one, and the image a ``Saved image to``
line names is moved at once to its cell's file. Every line sets every option, because kohya keeps
size, steps, guidance, CFG scale and the multipliers from the line before; the cell's epoch is
selected by ``--m`` (its LoRA file at the cell's weight, every other one 0; all 0 for the baseline).

The tokenizers: flux_minimal_inference.py takes no ``--tokenizer_cache_dir`` and loads
``openai/clip-vit-large-patch14`` and ``google/t5-v1_1-xxl`` from the Hugging Face hub cache
(``HF_HOME``); the run gets the training's ``[launch] env``, so with ``HF_HUB_OFFLINE`` they must be
in that cache (the check says so), and online the hub fills it on the first grid.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from lorabuild.kohya.interactive import Dialogue, InteractiveRenderer
from lorabuild.kohya.prompts import PromptLine

FluxDtype = Literal["float32", "bfloat16", "float16"]
"""flux_minimal_inference.py ``--dtype`` (library.utils.str_to_dtype's spellings)."""

ASKS = "Enter prompt"
"""How flux_minimal_inference.py's (and sd3_minimal_inference.py's) interactive loop starts each prompt request."""

DIALOGUE = Dialogue(
    asks=ASKS,
    saved=re.compile(r"Saved image to (\S+\.png)"),
    # An empty line ends the loop (flux_minimal_inference.py, sd3_minimal_inference.py: `if prompt == "": break`).
    goodbye="",
    line=PromptLine.flux_line,
)
"""flux_minimal_inference.py's and sd3_minimal_inference.py's ``--interactive`` dialogue."""


class FluxSettings(Protocol):
    """What :class:`FluxInference` reads from a grid's settings (paths as the command is given them)."""

    @property
    def base(self) -> str:
        """The DiT (``--ckpt_path``)."""

    @property
    def clip_l(self) -> str | None:
        """CLIP-L (``--clip_l``); None for Chroma, which has none."""

    @property
    def t5xxl(self) -> str | None:
        """T5-XXL (``--t5xxl``)."""

    @property
    def ae(self) -> str | None:
        """The autoencoder (``--ae``)."""

    @property
    def model_type(self) -> str | None:
        """``--model_type``: flux or chroma."""

    @property
    def apply_t5_attn_mask(self) -> bool:
        """``--apply_t5_attn_mask`` (Chroma needs it)."""

    @property
    def flux_dtype(self) -> FluxDtype:
        """``--dtype``."""


@dataclass(frozen=True)
class FluxInference(InteractiveRenderer[FluxSettings]):
    """A family's grid, rendered by kohya's ``flux_minimal_inference.py --interactive`` in one process."""

    SCRIPT: ClassVar[str] = "flux_minimal_inference.py"
    """The script, inside the kohya checkout."""
    NAME: ClassVar[str] = "flux_minimal_inference"
    """How messages name it."""
    DIALOGUE: ClassVar[Dialogue] = DIALOGUE

    def argv(
        self,
        settings: FluxSettings,
        *,
        script: str,
        outdir: str,
        network_files: Sequence[str],
        python: str = sys.executable,
    ) -> list[str]:
        """The command (relative paths are relative to the build folder).

        ``--width``/``--height``, ``--steps``, ``--guidance``, ``--seed`` and the LoRA multipliers
        are not given: the interactive loop ignores or overrides them, and every stdin line sets them.
        """
        argv = [python, script, "--ckpt_path", settings.base]
        if settings.model_type:
            argv += ["--model_type", settings.model_type]
        if settings.clip_l:
            argv += ["--clip_l", settings.clip_l]
        if settings.t5xxl:
            argv += ["--t5xxl", settings.t5xxl]
        if settings.ae:
            argv += ["--ae", settings.ae]
        if settings.apply_t5_attn_mask:
            argv.append("--apply_t5_attn_mask")
        argv += ["--dtype", settings.flux_dtype, "--output_dir", outdir]
        if network_files:
            argv += ["--lora_weights", *(f"{file};1.0" for file in network_files)]
        argv.append("--interactive")
        return argv
