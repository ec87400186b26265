"""kohya's ``gen_img.py`` as a grid renderer: its command line, built from the grid's settings.

gen_img renders SD1.x, SD2.x and SDXL models; the family says which with one flag (``--v1``,
``--v2``, ``--sdxl``), so each of those families' :attr:`~lorabuild.kohya.families.Family.grid` is a
:class:`GenImg` with its flags. The settings are whatever object has the attributes of
:class:`GenImgSettings` (the grid stage's ``GridSettings``). :meth:`GenImg.prepare` is its side of the
renderer seam (:mod:`lorabuild.kohya.gridrender`): one prompt file, each line naming its image with
``--f``. KOHYA.md section 8.2 has the gen_img facts relied on here.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from lorabuild.kohya.gridrender import GridJob, GridRun, one_job
from lorabuild.kohya.prompts import exact_number

EMBEDDINGS_MULTIPLES = {75: 1, 150: 2, 225: 3}
"""``[training] max_token_length`` -> gen_img ``--max_embeddings_multiples`` (75 tokens each)."""

Dtype = Literal["fp32", "fp16", "bf16"]

PROMPT_FILE = "prompts.txt"
"""The ``--from_file`` prompt file's name in the job's folder."""

# gen_img's line as it starts each prompt of its prompt file.
_PROMPT_PROGRESS = re.compile(r"prompt (\d+)/(\d+):")


class GenImgSettings(Protocol):
    """What :meth:`GenImg.argv` reads from a grid's settings (paths as gen_img is given them)."""

    @property
    def base(self) -> str:
        """The base model (``--ckpt``)."""

    @property
    def vae(self) -> str | None:
        """A replacement VAE (``--vae``), or None."""

    @property
    def tokenizer_cache_dir(self) -> str | None:
        """``--tokenizer_cache_dir``, or None."""

    @property
    def v_parameterization(self) -> bool:
        """``--v_parameterization``."""

    @property
    def clip_skip(self) -> int | None:
        """``--clip_skip``, or None for kohya's default."""

    @property
    def embeddings_multiples(self) -> int:
        """``--max_embeddings_multiples``."""

    @property
    def network_module(self) -> str:
        """The kohya network module the LoRA files were trained with."""

    @property
    def dtype(self) -> Dtype:
        """fp32, fp16 (``--fp16``) or bf16 (``--bf16``)."""

    @property
    def no_half_vae(self) -> bool:
        """``--no_half_vae``."""

    @property
    def sampler(self) -> str:
        """``--sampler``."""

    @property
    def steps(self) -> int:
        """``--steps``."""

    @property
    def cfg_scale(self) -> float:
        """``--scale``."""

    @property
    def width(self) -> int:
        """``--W``."""

    @property
    def height(self) -> int:
        """``--H``."""


@dataclass(frozen=True)
class GenImg:
    """A family's grid, rendered by kohya's ``gen_img.py`` with the family's model flags.

    Attributes:
        flags: What tells gen_img the model's family (``--v1``, ``--v2``, ``--sdxl``).
    """

    flags: tuple[str, ...]

    SCRIPT: ClassVar[str] = "gen_img.py"
    """The script, inside the kohya checkout."""
    NAME: ClassVar[str] = "gen_img"
    """How messages name it."""

    def argv(
        self,
        settings: GenImgSettings,
        *,
        script: str,
        outdir: str,
        prompt_file: str,
        network_files: Sequence[str],
        batch: int = 1,
        pre_calc: bool = True,
        python: str = sys.executable,
    ) -> list[str]:
        """The gen_img command (relative paths are relative to the build folder).

        Args:
            settings: The grid's settings.
            script: gen_img.py's path.
            outdir: Where gen_img writes the cells (``--outdir``).
            prompt_file: The prompt file (``--from_file``).
            network_files: The LoRA files, one network each (the order of ``--am``).
            batch: ``--batch_size``.
            pre_calc: ``--network_pre_calc``: merge each batch's selected weights into the model.
            python: The Python that runs gen_img (kohya's stack).
        """
        argv = [python, script, *self.flags]
        if settings.v_parameterization:
            argv.append("--v_parameterization")
        argv += ["--ckpt", settings.base]
        if settings.vae:
            argv += ["--vae", settings.vae]
        if settings.tokenizer_cache_dir:
            argv += ["--tokenizer_cache_dir", settings.tokenizer_cache_dir]
        argv += [
            "--outdir",
            outdir,
            "--from_file",
            prompt_file,
            "--sampler",
            settings.sampler,
            "--steps",
            str(settings.steps),
            "--scale",
            exact_number(settings.cfg_scale),
            "--W",
            str(settings.width),
            "--H",
            str(settings.height),
            "--max_embeddings_multiples",
            str(settings.embeddings_multiples),
            "--batch_size",
            str(batch),
            # sdpa works on every device (xformers only on CUDA) and gives the same images.
            "--sdpa",
        ]
        if settings.clip_skip is not None:
            argv += ["--clip_skip", str(settings.clip_skip)]
        if settings.dtype != "fp32":
            argv.append(f"--{settings.dtype}")
        if settings.no_half_vae:
            argv.append("--no_half_vae")
        if network_files:
            argv += ["--network_module", *([settings.network_module] * len(network_files))]
            argv += ["--network_weights", *network_files]
            if pre_calc:
                argv.append("--network_pre_calc")
        return argv

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """gen_img's environment: ``base`` (the training's ``[launch] env``) and what gen_img needs."""
        return {
            **base,
            # The model and tokenizer were used (downloaded, if ever) by the training: stay offline.
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            # gen_img sets up kohya's rich log handler before it reads --console_log_simple, and rich
            # wraps lines at 80 columns when not on a terminal: wider lines keep messages whole.
            "COLUMNS": os.environ.get("COLUMNS", "200"),
        }

    def split(self, job: GridJob) -> tuple[GridJob, ...]:
        """The whole job: one process renders every LoRA setting."""
        return one_job(job)

    def prepare(self, settings: GenImgSettings, job: GridJob) -> GridRun:
        """The run of ``job``: every image a line of one ``--from_file`` prompt file, saved by its ``--f``."""
        return GridRun(
            argv=self.argv(
                settings,
                script=job.script,
                outdir=job.outdir,
                prompt_file=f"{job.workdir}/{PROMPT_FILE}",
                network_files=job.network_files,
                batch=job.batch,
                pre_calc=job.pre_calc,
                python=job.python,
            ),
            env=self.env(job.env),
            inputs={PROMPT_FILE: "".join(image.line.gen_img_line() + "\n" for image in job.images)},
            progress=self.progress,
        )

    def progress(self, line: str) -> int | None:
        """The number of the prompt-file line gen_img starts rendering, when ``line`` says one."""
        match = _PROMPT_PROGRESS.search(line)
        return int(match[1]) if match else None
