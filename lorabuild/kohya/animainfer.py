"""kohya's ``anima_minimal_inference.py --from_file`` as the Anima grid renderer.

anima_minimal_inference.py merges the LoRA files into the DiT (and the Qwen3 text encoder) while it
loads them, at the multipliers of its command line (``--lora_weight FILE... --lora_multiplier
M...``; ``anima_utils.load_anima_model(lora_weights_list=..., lora_multipliers=...)``). A prompt line
cannot change them, so one process renders one (epoch, weight) column: every prompt x seed of it,
read from a ``--from_file`` prompt file (``PROMPT --w --h --d --s --g [--n NEGATIVE]``, written by
:meth:`lorabuild.kohya.prompts.PromptLine.anima_line`). :meth:`AnimaInference.split` cuts a grid
job into those columns, and the grid stage runs them one after the other: the grid loads the model
once per (epoch, weight) cell column, plus once for the no-LoRA baseline. Within a process kohya
loads the DiT once, encodes every prompt, samples every latent, then decodes them in order
(``process_batch_prompts``).

Each image is saved as ``save_path/%Y%m%d-%H%M%S-%f[:-3]_SEED_.png`` (milliseconds; the trailing
``_`` is kohya's, from an empty base name) and logged as ``Sample images saved to: PATH`` (without
``.png``). Two images of one seed decoded within one
millisecond would share a name, so each is moved to its cell's file (``cells/<key>.png``) as soon
as its line appears, before the next is decoded, as the FLUX renderer does.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from lorabuild.kohya.conversation import Reply
from lorabuild.kohya.gridrender import GridImage, GridJob, GridRun, is_png, job_per_lora_setting

PROMPT_FILE = "prompts.txt"
"""The ``--from_file`` prompt file, in the job's ``workdir``."""

_SAVED = re.compile(r"Sample images saved to: (\S+)")
_PROGRESS = re.compile(r"Generating latent for prompt (\d+)/(\d+)")
_SKIPPED = re.compile(r"Skipping decoding for prompt \d+")


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
class AnimaInference:
    """Anima's grid, rendered by kohya's ``anima_minimal_inference.py --from_file``: a process per LoRA setting."""

    SCRIPT: ClassVar[str] = "anima_minimal_inference.py"
    """The script, inside the kohya checkout."""
    NAME: ClassVar[str] = "anima_minimal_inference"
    """How messages name it."""

    def split(self, job: GridJob) -> tuple[GridJob, ...]:
        """``job`` as one job per model load: the images of each LoRA setting, with only its files loaded."""
        return job_per_lora_setting(job)

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

    def prepare(self, settings: AnimaSettings, job: GridJob) -> GridRun:
        """The run of ``job``, whose images share one LoRA setting (:meth:`split` makes such jobs)."""
        multipliers = job.images[0].line.multipliers if job.images else ()
        files = [f for f, m in zip(job.network_files, multipliers, strict=False) if m]
        watch = _Watcher(job.images, job.cwd, job.cells_dir)
        return GridRun(
            argv=self.argv(
                settings,
                script=job.script,
                outdir=job.outdir,
                prompt_file=f"{job.workdir}/{PROMPT_FILE}",
                network_files=files,
                multipliers=[m for m in multipliers if m],
                python=job.python,
            ),
            env={**job.env, "COLUMNS": os.environ.get("COLUMNS", "200")},
            inputs={PROMPT_FILE: "".join(image.line.anima_line() + "\n" for image in job.images)},
            progress=watch.progress,
            answer=watch.answer,
            delivered=watch.delivered,
        )


class _Watcher:
    """Moves each image anima_minimal_inference.py logs as saved to its cell's file, in render order."""

    def __init__(self, images: Sequence[GridImage], cwd: Path, cells_dir: Path):
        self._images = tuple(images)
        self._cwd = cwd
        self._cells = cells_dir
        self._saved = 0
        self.delivered: set[str] = set()

    def progress(self, line: str) -> int | None:
        """The number of the image whose latent kohya starts sampling."""
        found = _PROGRESS.search(line)
        return int(found[1]) if found else None

    def answer(self, line: str) -> Reply | None:
        """Never answers (the prompts are in the file); moves the image a ``Sample images saved to`` line names."""
        if _SKIPPED.search(line):  # its sampling failed: kohya decodes the next one
            self._saved += 1
            return None
        saved = _SAVED.search(line)
        if saved is None or self._saved >= len(self._images):
            return None
        image = self._images[self._saved]
        self._saved += 1
        source = Path(saved[1] + ".png")
        source = source if source.is_absolute() else self._cwd / source
        if is_png(source):
            self._cells.mkdir(parents=True, exist_ok=True)
            os.replace(source, self._cells / image.name)
            self.delivered.add(image.name)
        return None
