"""Grid renderers whose kohya script merges the LoRA files into the model as it loads them.

``anima_minimal_inference.py`` and ``hunyuan_image_minimal_inference.py`` (one template in kohya)
take their LoRA files and multipliers on the command line (``--lora_weight F... --lora_multiplier
M...``) and merge them into the DiT while loading it; a prompt line cannot change them. So one
process renders every image of one LoRA setting — one epoch at one weight, or the no-LoRA baseline —
read from a ``--from_file`` prompt file (:meth:`lorabuild.kohya.prompts.PromptLine.from_file_line`),
and a grid takes one model load per column: :meth:`MergingInference.split` cuts the grid's job into
those parts (:func:`lorabuild.kohya.gridrender.job_per_lora_setting`), the fewest loads the scripts allow.

In ``--from_file`` mode a script encodes every prompt, generates every latent (``Generating latent
for prompt I/N``), then decodes them in the file's order (``Decoding output I/N``, or ``Skipping
decoding for prompt I`` when its sampling failed), saving image I as
``save_path/%Y%m%d-%H%M%S-%f..._SEED....png`` and logging ``Sample images saved to: PATH`` (without
the ``.png``). Two images of one seed within a millisecond would share a name, so each saved image is
moved to its cell's file (``cells/<key>.png``) as soon as its line appears, before the next is
decoded (:class:`_Filing`, fed the output lines through the process seam's ``answer``).
"""

from __future__ import annotations

import os
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from lorabuild.kohya.conversation import Reply
from lorabuild.kohya.gridrender import GridImage, GridJob, GridRun, file_saved_image, job_per_lora_setting

PROMPT_FILE = "prompts.txt"
"""The ``--from_file`` prompt file's name in the job's ``workdir``."""

_DECODING = re.compile(r"Decoding output (\d+)/(\d+)")
_SKIPPED = re.compile(r"Skipping decoding for prompt \d+")
_GENERATING = re.compile(r"Generating latent for prompt (\d+)/(\d+)")
_SAVED = re.compile(r"Sample images saved to: (\S+)")

S = TypeVar("S")


@dataclass(frozen=True)
class MergingInference(ABC, Generic[S]):
    """A grid renderer whose script merges the LoRA at load: a process per LoRA setting, prompts from a file.

    A family's renderer gives its script (``SCRIPT``, ``NAME``) and its command (:meth:`argv`).
    """

    SCRIPT: ClassVar[str]
    """The script, inside the kohya checkout."""
    NAME: ClassVar[str]
    """How messages name it."""

    def split(self, job: GridJob) -> tuple[GridJob, ...]:
        """``job`` as one job per LoRA setting, in the order each first appears.

        Each part loads only the LoRA files its images use, at the images' multipliers; the
        baseline's part loads none.
        """
        return job_per_lora_setting(job)

    @abstractmethod
    def argv(
        self,
        settings: S,
        *,
        script: str,
        outdir: str,
        prompt_file: str,
        network_files: Sequence[str],
        multipliers: Sequence[float],
        python: str = sys.executable,
    ) -> list[str]:
        """The command for one LoRA setting (relative paths are relative to the build folder)."""

    def prepare(self, settings: S, job: GridJob) -> GridRun:
        """The run of one part of :meth:`split`: a prompt file, each saved image filed as it appears.

        Raises:
            ValueError: The job's images do not share one LoRA setting (it was not split).
        """
        settings_of = {image.line.multipliers for image in job.images}
        if len(settings_of) > 1:
            raise ValueError(f"a {self.NAME} grid job renders one LoRA setting: split it first")
        multipliers = next(iter(settings_of), ())
        filing = _Filing(job.images, job.cwd, job.cwd / job.outdir, job.cells_dir)
        return GridRun(
            argv=self.argv(
                settings,
                script=job.script,
                outdir=job.outdir,
                prompt_file=f"{job.workdir}/{PROMPT_FILE}",
                network_files=job.network_files,
                multipliers=multipliers,
                python=job.python,
            ),
            # kohya's rich log handler wraps lines at 80 columns when not on a terminal.
            env={**job.env, "COLUMNS": os.environ.get("COLUMNS", "200")},
            inputs={PROMPT_FILE: "".join(image.line.from_file_line() + "\n" for image in job.images)},
            progress=filing.progress,
            answer=filing.answer,
            delivered=filing.delivered,
        )


class _Filing:
    """Follows the script's output and moves each image it saves to its cell's file at once."""

    def __init__(self, images: Sequence[GridImage], cwd: Path, outdir: Path, cells_dir: Path):
        self._images = tuple(images)
        self._cwd = cwd
        self._outdir = outdir
        self._cells = cells_dir
        self._next = 0
        self.delivered: set[str] = set()

    def progress(self, line: str) -> int | None:
        """The number of the image whose latent the script starts generating."""
        match = _GENERATING.search(line)
        return int(match[1]) if match else None

    def answer(self, line: str) -> Reply | None:
        """Never a reply (the script reads no stdin): follows which image is decoded, files the one saved."""
        decoding = _DECODING.search(line)
        if decoding is not None:
            self._next = int(decoding[1]) - 1
        elif _SKIPPED.search(line):  # its sampling failed: the script decodes the next one
            self._next += 1
        else:
            saved = _SAVED.search(line)
            if saved is not None and self._next < len(self._images):
                self._deliver(self._images[self._next], saved[1])
                self._next += 1
        return None

    def _deliver(self, image: GridImage, logged: str) -> None:
        """Move the PNG the script saved (``logged`` without its suffix, else the one new PNG) to its cell."""
        if file_saved_image(Path(logged + ".png"), self._cwd, self._outdir, self._cells / image.name):
            self.delivered.add(image.name)
