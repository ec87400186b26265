"""What the grid stage hands a family's grid renderer, and what it gets back: the renderer seam's vocabulary.

A renderer (:class:`lorabuild.kohya.genimg.GenImg` for SD1/SD2/SDXL,
:class:`lorabuild.kohya.fluxinfer.FluxInference` for FLUX.1 and Chroma) turns a :class:`GridJob` — the
images to render, in order, and the LoRA files to load — into a :class:`GridRun`: the command, its
environment, the input files it reads, how its output shows progress and, for a renderer that is
fed on stdin, the answers to its output lines. The grid stage runs it through
:func:`lorabuild.kohya.scriptrun.run_script` whichever renderer it is, then collects the images:
those the renderer left in the job's ``outdir`` under their names, and those it delivered into
``cells_dir`` itself (:attr:`GridRun.delivered`). The protocol a renderer implements is
:class:`lorabuild.kohya.families.base.GridRenderer`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from lorabuild.kohya.conversation import Answer
from lorabuild.kohya.prompts import PromptLine

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    """Whether ``path`` is a whole PNG file (its signature and its closing IEND chunk)."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            f.seek(-12, os.SEEK_END)
            tail = f.read(12)
    except OSError:
        return False
    return head == PNG_SIGNATURE and tail[4:8] == b"IEND"


@dataclass(frozen=True)
class GridImage:
    """One image to render.

    Attributes:
        line: Everything of the image: prompt, negative prompt, size, steps, CFG scale, guidance,
            seed, and the multiplier of each of the job's LoRA files (the cell's epoch gets its
            weight, every other file 0; all 0 for the no-LoRA baseline).
        name: The file name it must end up as (``<key>.png``).
    """

    line: PromptLine
    name: str


@dataclass(frozen=True)
class GridJob:
    """One renderer run: every image of it, and where things are.

    Attributes:
        images: The images, in render order.
        network_files: The LoRA files to load, in the order of each image's multipliers.
        script: The kohya script's path.
        workdir: A fresh temporary folder, relative to the working directory (the build folder):
            the renderer's input files go there.
        outdir: Where the renderer's process writes images (``workdir/out``, relative like it).
        cells_dir: Where finished images go (absolute), for a renderer that delivers them itself.
        cwd: The process's working directory (the build folder).
        python: The Python with kohya's stack.
        env: The training's ``[launch] env``: what the model needs to load (``HF_HOME``...).
        batch: gen_img's ``--batch_size`` (renderers that render one image at a time ignore it).
        pre_calc: gen_img's ``--network_pre_calc`` (likewise).
    """

    images: tuple[GridImage, ...]
    network_files: tuple[str, ...]
    script: str
    workdir: str
    outdir: str
    cells_dir: Path
    cwd: Path
    python: str
    env: Mapping[str, str]
    batch: int = 1
    pre_calc: bool = False


@dataclass
class GridRun:
    """A renderer's run of a :class:`GridJob`: the command as data, and how to talk to it.

    Attributes:
        argv: The command.
        env: Its extra environment variables.
        inputs: Files to write into the job's ``workdir`` before it starts (name -> text).
        progress: The 1-based number of the image the process starts, when an output line says so.
        answer: Answers output lines on the process's stdin, or None (its stdin is empty).
        delivered: The names of the images the renderer has moved into ``cells_dir`` itself (filled
            while it runs); the others are collected from ``outdir``.
    """

    argv: list[str]
    env: dict[str, str]
    inputs: dict[str, str]
    progress: Callable[[str], int | None]
    answer: Answer | None = None
    delivered: set[str] = field(default_factory=set)


@runtime_checkable
class SplitsJobs(Protocol):
    """A renderer that cannot render a whole job in one process, and cuts it into jobs that it can.

    :class:`lorabuild.kohya.animainfer.AnimaInference` is one: its script merges the LoRA files into
    the model at load time, so each LoRA setting needs a model load of its own. The grid stage runs
    the jobs one after the other and says how many model loads that took.
    """

    def split(self, job: GridJob) -> tuple[GridJob, ...]:
        """``job``'s images as jobs of one model load each, in render order."""
        ...
