"""kohya's ``hunyuan_image_minimal_inference.py --from_file`` as the HunyuanImage 2.1 grid renderer.

The script merges its LoRA files into the DiT while loading it (``--lora_weight F ... --lora_multiplier
M ...``; hunyuan_image_minimal_inference.load_dit_model), and its prompt lines cannot change them
(``parse_prompt_line`` reads ``--w --h --d --s --g --fs --n`` only). So one process renders every
image of one LoRA setting — one epoch at one weight, or the no-LoRA baseline — and a grid takes one
model load per column: :meth:`HunyuanInference.split` cuts the grid's job into those parts, the
fewest loads the script allows.

In ``--from_file`` mode the script encodes every prompt, then generates every latent, then decodes
them in the file's order, logging ``Decoding output I/N`` before it saves image I as
``save_path/%Y%m%d-%H%M%S-%f_SEED.png`` and logs ``Sample images saved to: PATH`` (without the
``.png``). Two images within a millisecond would share a name, so each saved image is moved to its
cell's file (``cells/<key>.png``) as soon as its line appears, before the next is decoded
(:class:`_Filing`, fed the output lines through the process seam's ``answer``).

The tokenizers: the script takes no ``--tokenizer_cache_dir``; it loads ``Qwen/Qwen2.5-VL-7B-Instruct``
and ``google/byt5-small`` from the Hugging Face hub cache (``HF_HOME``), like the FLUX renderer.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from lorabuild.kohya.conversation import Reply
from lorabuild.kohya.gridrender import GridImage, GridJob, GridRun, is_png, job_per_lora_setting
from lorabuild.kohya.prompts import PromptLine, exact_number

PROMPT_FILE = "prompts.txt"
"""The ``--from_file`` prompt file's name in the job's folder."""

_DECODING = re.compile(r"Decoding output (\d+)/(\d+)")
_GENERATING = re.compile(r"Generating latent for prompt (\d+)/(\d+)")
_SAVED = re.compile(r"Sample images saved to: (\S+)")


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


def hunyuan_line(line: PromptLine) -> str:
    """The ``--from_file`` line of one image: every setting on it, each number exact.

    ``--g`` is the CFG scale (hunyuan_image_minimal_inference.py's ``guidance_scale``, 3.5 by default).
    The script splits lines at every ``" --"`` and skips lines starting with ``#``: the prompt rules
    every family has (rules/evaluate.py) keep both out of prompts.
    """
    options = [
        ("w", str(line.width)),
        ("h", str(line.height)),
        ("s", str(line.steps)),
        ("d", str(line.seed)),
        ("g", exact_number(line.cfg_scale)),
    ]
    if line.negative:
        options.append(("n", line.negative))
    return " --".join([line.prompt, *(f"{name} {value}" for name, value in options)])


@dataclass(frozen=True)
class HunyuanInference:
    """HunyuanImage 2.1's grid: ``hunyuan_image_minimal_inference.py --from_file``, one process per LoRA setting."""

    SCRIPT: ClassVar[str] = "hunyuan_image_minimal_inference.py"
    """The script, inside the kohya checkout."""
    NAME: ClassVar[str] = "hunyuan_image_minimal_inference"
    """How messages name it."""

    def split(self, job: GridJob) -> tuple[GridJob, ...]:
        """``job`` as one job per LoRA setting, in the order each first appears.

        Each part loads only the LoRA files its images use, at the images' multipliers; the
        baseline's part loads none.
        """
        return job_per_lora_setting(job)

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

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment: ``base`` (the training's ``[launch] env``, ``HF_HOME`` included) and what kohya needs."""
        # kohya's rich log handler wraps lines at 80 columns when not on a terminal.
        return {**base, "COLUMNS": os.environ.get("COLUMNS", "200")}

    def prepare(self, settings: HunyuanSettings, job: GridJob) -> GridRun:
        """The run of one part of :meth:`split`: a prompt file, each saved image filed as it appears.

        Raises:
            ValueError: The job's images do not share one LoRA setting (it was not split).
        """
        settings_of = {image.line.multipliers for image in job.images}
        if len(settings_of) > 1:
            raise ValueError("a HunyuanImage grid job renders one LoRA setting: split it first")
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
            env=self.env(job.env),
            inputs={PROMPT_FILE: "".join(hunyuan_line(image.line) + "\n" for image in job.images)},
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
        self._decoding: int | None = None
        self.delivered: set[str] = set()

    def progress(self, line: str) -> int | None:
        """The number of the image whose latent the script starts generating."""
        match = _GENERATING.search(line)
        return int(match[1]) if match else None

    def answer(self, line: str) -> Reply | None:
        """Never a reply (the script reads no stdin): notes the image being decoded, files the one saved."""
        decoding = _DECODING.search(line)
        if decoding is not None:
            self._decoding = int(decoding[1]) - 1
            return None
        saved = _SAVED.search(line)
        if saved is not None and self._decoding is not None and self._decoding < len(self._images):
            self._deliver(self._images[self._decoding], saved[1])
            self._decoding = None
        return None

    def _deliver(self, image: GridImage, logged: str) -> None:
        """Move the PNG the script saved (``logged`` without its suffix, else the one new PNG) to its cell."""
        source = Path(logged + ".png")
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
