"""kohya's ``flux_minimal_inference.py --interactive`` as the FLUX.1 and Chroma grid renderer.

gen_img.py renders SD families only. flux_minimal_inference.py loads the DiT, text encoders, AE and
every LoRA file once (``--lora_weights path;1.0 ...``), then loops: it prints ``Enter prompt ...``,
reads one stdin line (``PROMPT --w --h --s --d --g --c --m m1,m2,... [--n NEGATIVE]``, written by
:meth:`lorabuild.kohya.prompts.PromptLine.flux_line`), renders it, saves it as
``output_dir/%Y%m%d_%H%M%S.png`` and logs ``Saved image to PATH``; an empty line ends it
(flux_minimal_inference.py, ``generate_image`` and the loop under ``args.interactive``).

Two images saved within one second get the same name, so the conversation is paced by kohya's
output, never by sleeps (:class:`_Conversation`, answering through the process seam's
``answer``): each line is sent only when kohya asks for one, and the image a ``Saved image to``
line names is checked and moved at once to its cell's file (``cells/<key>.png``) before the next
line goes out. Every line sets every option, because kohya keeps size, steps, guidance, CFG scale
and the multipliers from the line before; the cell's epoch is selected by ``--m`` (its LoRA file
at the cell's weight, every other one 0; all 0 for the baseline).

The tokenizers: flux_minimal_inference.py takes no ``--tokenizer_cache_dir`` and loads
``openai/clip-vit-large-patch14`` and ``google/t5-v1_1-xxl`` from the Hugging Face hub cache
(``HF_HOME``); the run gets the training's ``[launch] env``, so with ``HF_HUB_OFFLINE`` they must be
in that cache (the check says so), and online the hub fills it on the first grid.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from lorabuild.kohya.conversation import Reply
from lorabuild.kohya.gridrender import GridImage, GridJob, GridRun, is_png, one_job

FluxDtype = Literal["float32", "bfloat16", "float16"]
"""flux_minimal_inference.py ``--dtype`` (library.utils.str_to_dtype's spellings)."""

ASKS = "Enter prompt"
"""How flux_minimal_inference.py's interactive loop starts each prompt request."""

_SAVED = re.compile(r"Saved image to (\S+\.png)")


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
class FluxInference:
    """A family's grid, rendered by kohya's ``flux_minimal_inference.py --interactive`` in one process."""

    SCRIPT: ClassVar[str] = "flux_minimal_inference.py"
    """The script, inside the kohya checkout."""
    NAME: ClassVar[str] = "flux_minimal_inference"
    """How messages name it."""

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

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment: ``base`` (the training's ``[launch] env``, ``HF_HOME`` included) and what kohya needs."""
        return {
            **base,
            # Not forced offline, unlike gen_img: the training read its tokenizers from
            # --tokenizer_cache_dir, which this script cannot, so the hub cache may still lack them.
            # kohya's rich log handler wraps lines at 80 columns when not on a terminal.
            "COLUMNS": os.environ.get("COLUMNS", "200"),
        }

    def split(self, job: GridJob) -> tuple[GridJob, ...]:
        """The whole job: one process renders every LoRA setting."""
        return one_job(job)

    def prepare(self, settings: FluxSettings, job: GridJob) -> GridRun:
        """The run of ``job``: one process, fed a line per image as it asks (see the module's docstring)."""
        talk = _Conversation(job.images, job.cwd, job.cwd / job.outdir, job.cells_dir)
        run = GridRun(
            argv=self.argv(
                settings,
                script=job.script,
                outdir=job.outdir,
                network_files=job.network_files,
                python=job.python,
            ),
            env=self.env(job.env),
            inputs={},
            progress=talk.progress,
            answer=talk.answer,
            delivered=talk.delivered,
        )
        return run


class _Conversation:
    """Feeds flux_minimal_inference.py one image's line per ``Enter prompt`` and files each saved image."""

    def __init__(self, images: Sequence[GridImage], cwd: Path, outdir: Path, cells_dir: Path):
        self._images = tuple(images)
        self._cwd = cwd
        self._outdir = outdir
        self._cells = cells_dir
        self._sent = 0
        self.delivered: set[str] = set()

    def progress(self, line: str) -> int | None:
        """The number of the image kohya is about to be given, when it asks for one."""
        if line.startswith(ASKS) and self._sent < len(self._images):
            return self._sent + 1
        return None

    def answer(self, line: str) -> Reply | None:
        """The next image's line when kohya asks (an empty line, ending its loop, after the last)."""
        saved = _SAVED.search(line)
        if saved is not None and self._sent:
            self._deliver(self._images[self._sent - 1], saved[1])
            return None
        if not line.startswith(ASKS):
            return None
        if self._sent == len(self._images):
            return Reply("\n", close=True)
        image = self._images[self._sent]
        self._sent += 1
        return Reply(image.line.flux_line() + "\n")

    def _deliver(self, image: GridImage, logged: str) -> None:
        """Move the image kohya saved (``logged``, or the one PNG in its folder) to its cell's file."""
        source = Path(logged)
        source = source if source.is_absolute() else self._cwd / source
        if not source.is_file():  # the logged path was cut by the log's line wrapping
            found = sorted(self._outdir.glob("*.png"))
            if len(found) != 1:
                return
            source = found[0]
        if not is_png(source):
            return
        self._cells.mkdir(parents=True, exist_ok=True)
        os.replace(source, self._cells / image.name)
        self.delivered.add(image.name)
