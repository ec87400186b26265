"""What the grid stage hands a family's grid renderer, and what it gets back: the renderer seam's vocabulary.

A renderer (:class:`lorabuild.kohya.genimg.GenImg` for SD1/SD2/SDXL,
:class:`lorabuild.kohya.fluxinfer.FluxInference` for FLUX.1 and Chroma, and the others of
:mod:`lorabuild.kohya.families`) first splits a :class:`GridJob` — the images to render, in order, and
the LoRA files to load — into the jobs one process each renders: :func:`one_job` when one process
renders every LoRA setting, :func:`job_per_lora_setting` when the script merges the LoRA into the
model as it loads (Anima, HunyuanImage). It turns each into a :class:`GridRun`: the command, its
environment, the input files it reads, how its output shows progress and, for a renderer that is
fed on stdin, the answers to its output lines. The grid stage runs them one after the other through
:func:`lorabuild.kohya.scriptrun.run_script` whichever renderer it is, then collects the images:
those the renderer left in the job's ``outdir`` under their names, and those it delivered into
``cells_dir`` itself (:attr:`GridRun.delivered`). The protocol a renderer implements is
:class:`lorabuild.kohya.families.base.GridRenderer`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

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


def file_saved_image(logged: Path, cwd: Path, outdir: Path, cell: Path) -> bool:
    """Move the PNG a script logged as saved to ``cell``; whether it was moved.

    ``logged`` is relative to ``cwd`` unless absolute. When it is no file (the logged path was cut by
    the log's line wrapping), the one PNG in ``outdir`` is taken; none or several: nothing is moved.
    A PNG not yet whole is left where it is.
    """
    source = logged if logged.is_absolute() else cwd / logged
    if not source.is_file():
        found = sorted(outdir.glob("*.png"))
        if len(found) != 1:
            return False
        source = found[0]
    if not is_png(source):
        return False
    cell.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, cell)
    return True


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


def one_job(job: GridJob) -> tuple[GridJob, ...]:
    """``job`` whole: the split of a renderer whose one process renders every LoRA setting."""
    return (job,)


def job_per_lora_setting(job: GridJob) -> tuple[GridJob, ...]:
    """``job`` as one job per LoRA setting, in the order each first appears.

    The split of a renderer whose script merges the LoRA files into the model as it loads them
    (:class:`lorabuild.kohya.animainfer.AnimaInference`,
    :class:`lorabuild.kohya.hunyuaninfer.HunyuanInference`): a prompt line cannot change the
    multipliers, so each (epoch, weight) and the no-LoRA baseline needs a model load of its own. A
    job's images all load the same files at the same multipliers: only the files they use (none for
    the baseline), each image's multipliers cut to those files.
    """
    groups: dict[tuple[float, ...], list[GridImage]] = {}
    for image in job.images:
        groups.setdefault(image.line.multipliers, []).append(image)
    jobs = []
    for multipliers, images in groups.items():
        used = [i for i, m in enumerate(multipliers) if m != 0]
        kept = tuple(multipliers[i] for i in used)
        jobs.append(
            replace(
                job,
                images=tuple(replace(image, line=replace(image.line, multipliers=kept)) for image in images),
                network_files=tuple(job.network_files[i] for i in used),
            )
        )
    return tuple(jobs)
