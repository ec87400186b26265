"""The grid stage: render every epoch x weight x prompt x seed cell in one kohya process.

- **One model load.** One process renders every missing cell, whichever the family's renderer
  (:attr:`~lorabuild.kohya.families.Family.grid`, a
  :class:`~lorabuild.kohya.families.base.GridRenderer`): each needed epoch's LoRA file is loaded
  once, and each cell selects its epoch by multipliers (0 for every other file; all 0 is the
  no-LoRA baseline). For SD1/SD2/SDXL that is ``gen_img.py`` with a prompt file
  (:mod:`lorabuild.kohya.genimg`: ``--am``, ``--network_pre_calc`` merging per batch); for FLUX.1
  and Chroma ``flux_minimal_inference.py --interactive``, fed one line per cell as it asks and
  paced by its output (:mod:`lorabuild.kohya.fluxinfer`; SD3's and Lumina 2's scripts are the same
  kind, :mod:`lorabuild.kohya.interactive`). The stage never asks which: it hands the
  renderer a :class:`~lorabuild.kohya.gridrender.GridJob` and runs the
  :class:`~lorabuild.kohya.gridrender.GridRun` it gets back. The exception is a renderer whose
  script merges the LoRA into the model as it loads (Anima's ``anima_minimal_inference.py``,
  :mod:`lorabuild.kohya.animainfer`; HunyuanImage's ``hunyuan_image_minimal_inference.py``,
  :mod:`lorabuild.kohya.hunyuaninfer`): every renderer splits the job
  (:meth:`~lorabuild.kohya.families.base.GridRenderer.split`), these into one per LoRA setting, run
  one after the other; the stage says how many model loads that takes, and every load's output goes
  to the one ``logs/grid.log``, appended. The cells, their order and their lines
  are :mod:`lorabuild.plan.gridcells`' (pure); KOHYA.md section 8.2 has the gen_img facts they rely on.
- **Content-addressed cells.** A cell's file is ``grid/cells/<key>.png``, where the key hashes
  everything its pixels depend on (:func:`lorabuild.plan.gridcells.cell_key`). Only missing cells
  are rendered; a second ``lorabuild grid`` renders nothing.
- **Truthful results.** The renderer writes into a temporary folder under ``grid/``; every expected
  PNG must be there, whole, before it is moved into ``cells/`` (kohya's exit status alone is not
  trusted; the FLUX renderer moves each one as kohya logs saving it). ``grid/grid.json``
  (:mod:`lorabuild.build.gridmanifest`) lists each prompt and seed's sheet: rows by epoch, columns
  by weight; :mod:`lorabuild.render.sheets` draws them.

:func:`plan_build_grid` finds the build's epoch files and digests and plans its cells;
:func:`render_grid` is the stage's verb.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from lorabuild.build.gridmanifest import manifest
from lorabuild.build.state import Digests, Stamp, build_lock, kohya_revision, save_stamp
from lorabuild.kohya import families
from lorabuild.kohya.families.base import GridRenderer
from lorabuild.kohya.gridrender import GridJob, is_png
from lorabuild.kohya.scriptrun import ScriptInterrupted, ScriptRun, run_script
from lorabuild.plan.evaluate import GridSettings
from lorabuild.plan.gridcells import (
    Cell,
    GridPlan,
    batch_size,
    grid_image,
    json_digest,
    network_order,
    plan_grid,
    use_pre_calc,
)
from lorabuild.plan.layout import BuildLayout
from lorabuild.plan.plan import Plan
from lorabuild.problems import LorabuildError, Problem, RecipeError
from lorabuild.recipe.load import LoadedRecipe
from lorabuild.recipe.schema import Recipe
from lorabuild.render.sheets import compose_sheets
from lorabuild.render.writer import write_atomic
from lorabuild.rules.evaluate import epochs_not_saved
from lorabuild.rules.evaluate import prompt_problems as recipe_prompt_problems
from lorabuild.settings import sd_scripts_dir


class GridError(LorabuildError):
    """The grid cannot be rendered (nothing trained yet) or its renderer failed; the message says what to do."""

    exit_code = 2


class GridInterrupted(ScriptInterrupted):
    """The user stopped lorabuild while the grid rendered; the cells finished so far are kept."""


# --- the pure part -------------------------------------------------------------------------------


def prompt_problems(recipe: Recipe) -> list[Problem]:
    """What in the prompts gen_img's prompt file cannot carry (keys under ``evaluate``).

    No prompt at all, or what the check's own rule finds
    (:func:`lorabuild.rules.evaluate.prompt_problems`, on the text gen_img reads).
    """
    problems: list[Problem] = []
    if not recipe.evaluate.prompts:
        problems.append(
            Problem(
                "evaluate.prompts",
                'the grid needs at least one prompt: add `[evaluate] prompts = ["{trigger}, 1girl, smile"]` '
                "to the recipe",
            )
        )
    return [*problems, *recipe_prompt_problems(recipe)]


def choose_epochs(
    saved: Sequence[int],
    present: Sequence[int],
    wanted: Literal["all"] | Sequence[int],
    *,
    key: str = "evaluate.epochs",
) -> list[int]:
    """The grid's rows: the wanted epochs, which must be saved by the training and on disk.

    Args:
        saved: The epochs the training saves (:attr:`lorabuild.kohya.outputs.TrainingOutputs.saved`).
        present: The epochs whose LoRA file exists now.
        wanted: ``"all"`` (every present epoch) or a list.
        key: How messages name where ``wanted`` came from.

    Raises:
        RecipeError: A wanted epoch is never saved (problem at ``key``).
        GridError: Nothing is trained yet, or a wanted epoch's file is missing.
    """
    if wanted == "all":
        if not present:
            raise GridError("no LoRA file is saved yet: run lorabuild train first")
        return sorted(present)
    never = epochs_not_saved(saved, wanted, key)
    if never is not None:
        raise RecipeError([never])
    if not present:
        raise GridError("no LoRA file is saved yet: run lorabuild train first")
    absent = sorted({e for e in wanted if e not in present})
    if absent:
        raise GridError(
            f"the LoRA file(s) of epoch(s) {', '.join(map(str, absent))} are missing (training has not got "
            "there, or its output was removed): run lorabuild train first"
        )
    return sorted(set(wanted))


def parse_epochs(text: str) -> list[int]:
    """``--epochs 2,4,8`` as a list; raises ValueError saying what is wrong."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or not all(t.isdigit() and int(t) > 0 for t in items):
        raise ValueError(f"--epochs takes epoch numbers separated by commas, like 2,4,8 (got {text!r})")
    return [int(t) for t in items]


# --- the imperative part -------------------------------------------------------------------------


@dataclass(frozen=True)
class GridReport:
    """What :func:`render_grid` did.

    Attributes:
        cells: Cells in the grid.
        rendered: Cells rendered by this run.
        manifest: ``grid/grid.json``.
        sheets: The composed sheets (``grid/sheet_<id>.png``).
        blank: Cells whose image is a single colour (NaN in sampling gives black images).
        seconds: How long the renderer ran (0 when nothing was rendered).
        log: the renderer's output, when it ran.
    """

    cells: int
    rendered: int
    manifest: Path
    sheets: tuple[Path, ...] = ()
    blank: tuple[str, ...] = ()
    seconds: float = 0.0
    log: Path | None = None


def epoch_files(plan: Plan) -> tuple[list[int], dict[int, str]]:
    """The epochs the training saves, and those whose LoRA file exists (-> its path, build-relative).

    The last epoch's numbered file is a link ``lorabuild train`` makes; a build trained with
    ``train.sh`` has only kohya's ``NAME.ext``, which is used then.
    """
    saves = plan.saves
    present: dict[int, str] = {}
    for epoch in saves.saved:
        for rel in dict.fromkeys((saves.epoch_file(epoch), saves.kohya_file(epoch))):
            if (plan.build_dir / rel).is_file():
                present[epoch] = rel
                break
    return list(saves.saved), present


def tree_digest(path: Path, digests: Any) -> str:
    """sha256 of a file, or of a folder's files (names and digests); ``digests`` caches them."""
    if path.is_file():
        return str(digests.of(path))
    entries = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            file = Path(dirpath) / name
            entries.append([file.relative_to(path).as_posix(), digests.of(file)])
    if not entries:
        raise GridError(f"{path.as_posix()} does not exist or is empty: check model.base (lorabuild check)")
    return json_digest(entries)


def is_blank(path: Path) -> bool:
    """Whether an image is one flat colour (gen_img saves NaN pixels as black)."""
    try:
        with Image.open(path) as im:
            extrema: Any = im.convert("RGB").getextrema()
    except OSError:
        return False
    return all(low == high for low, high in extrema)


def _relative(build: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else build / path


def plan_build_grid(
    plan: Plan,
    loaded: LoadedRecipe,
    *,
    epochs: Sequence[int] | None = None,
    sd_scripts: Path | None = None,
    digests: Any = None,
) -> GridPlan:
    """The grid of a build as it stands now: its settings, the epoch files on disk and their digests.

    ``loaded`` names the file of each problem's key; the settings are the plan's.

    Raises:
        RecipeError: No prompts, a prompt gen_img cannot carry, or an epoch that is never saved.
        GridError: Nothing trained yet, or a wanted epoch's file missing.
    """
    settings = plan.grid
    problems = prompt_problems(loaded.recipe)
    if problems:
        raise RecipeError([p.at(loaded.file_of(p.key)) for p in problems])
    saved, present = epoch_files(plan)
    wanted: Literal["all"] | Sequence[int] = epochs if epochs is not None else settings.epochs
    try:
        rows = choose_epochs(
            saved, sorted(present), wanted, key="evaluate.epochs" if epochs is None else "--epochs"
        )
    except RecipeError as exc:
        if epochs is not None:
            raise
        raise RecipeError([p.at(loaded.file_of(p.key)) for p in exc.problems]) from None
    build = plan.build_dir
    digests = digests if digests is not None else Digests(plan.layout.grid_dir)
    lora_digests = {e: str(digests.of(build / present[e])) for e in rows}
    base_digest = tree_digest(_relative(build, settings.base), digests)
    vae_digest = tree_digest(_relative(build, settings.vae), digests) if settings.vae else None
    model_digests = {
        key: tree_digest(_relative(build, path), digests) for key, path in settings.model_files().items()
    }
    if isinstance(digests, Digests):
        digests.save()
    return plan_grid(
        settings,
        rows,
        {e: present[e] for e in rows},
        lora_digests,
        base_digest=base_digest,
        vae_digest=vae_digest,
        kohya=kohya_revision(sd_scripts or sd_scripts_dir()),
        model_digests=model_digests,
    )


# Cells per gen_img batch at most: several images of one epoch and weight share a merge of the
# weights (--network_pre_calc), and a batch runs faster than its images one by one.
MAX_BATCH = 4


def render_grid(
    plan: Plan,
    loaded: LoadedRecipe,
    *,
    epochs: Sequence[int] | None = None,
    force: bool = False,
    say: Callable[[str], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    sd_scripts: Path | None = None,
    python: str = sys.executable,
    pre_calc: bool | None = None,
    max_batch: int = MAX_BATCH,
    lock: bool = True,
) -> GridReport:
    """Render the build's missing grid cells with one run of the family's renderer, then write the manifest and sheets.

    Args:
        plan: A compiled, trained build.
        loaded: Its recipe, whose files the ``[evaluate]`` problems are attributed to (the settings
            are the plan's, :attr:`~lorabuild.plan.plan.Plan.grid`).
        epochs: The rows (``--epochs``); ``[evaluate] epochs`` when None.
        force: Render every cell again.
        say: Receives lorabuild's own messages (what is cached, progress).
        on_line: Receives the renderer's output lines (it is always written to ``logs/grid.log``).
        sd_scripts: The kohya checkout (``LORABUILD_SD_SCRIPTS`` or vendor/sd-scripts by default).
        python: The Python with kohya's stack.
        pre_calc: Use ``--network_pre_calc``; None chooses by cost (:func:`use_pre_calc`).
        max_batch: Largest ``--batch_size``.
        lock: Hold the build's lock (False when the caller holds it, as ``lorabuild run`` does).

    Raises:
        RecipeError: The recipe's ``[evaluate]`` table cannot make a grid (exit 2).
        GridError: Nothing trained yet, or the renderer failed or left cells unwritten (exit 2).
        GridInterrupted: Ctrl-C; the finished cells are kept for the next run.
    """
    kohya = sd_scripts or sd_scripts_dir()
    tell = say or (lambda text: None)
    build = plan.build_dir
    with build_lock(build) if lock else contextlib.nullcontext():
        grid = plan_build_grid(plan, loaded, epochs=epochs, sd_scripts=kohya)
        cells_dir = plan.layout.cells_dir
        todo = [c for c in grid.cells if force or not is_png(build / c.file)]
        cached = len(grid.cells) - len(todo)
        seconds = 0.0
        log: Path | None = None
        if not todo:
            tell(
                f"grid: all {len(grid.cells)} cell(s) are up to date in {cells_dir.as_posix()}; nothing to render"
            )
        else:
            tell(
                f"grid: rendering {len(todo)} cell(s) with {families.get(plan.grid.family).grid.NAME}"
                + (f" ({cached} already rendered)" if cached else "")
                + f"; its output goes to {plan.layout.grid_log.as_posix()}"
            )
            seconds, log = _render(grid, todo, plan, kohya, python, tell, on_line, pre_calc, max_batch)
        doc = manifest(grid, plan.name)
        manifest_path = plan.layout.grid_manifest
        write_atomic(manifest_path, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        rendered = {c.key for c in todo}
        blank = tuple(c.file for c in grid.cells if c.key in rendered and is_blank(build / c.file))
        if blank:
            tell(
                f"grid: warning: {len(blank)} cell(s) came out as one flat colour (NaN while sampling gives "
                f"black images), e.g. {blank[0]}"
            )
        sheets = _compose(build, doc, tell)
        save_stamp(build, "grid", Stamp(grid.key, "done", detail={"cells": len(grid.cells)}))
    return GridReport(len(grid.cells), len(todo), manifest_path, sheets, blank, seconds, log)


def _compose(build: Path, doc: Mapping[str, Any], tell: Callable[[str], None]) -> tuple[Path, ...]:
    paths = tuple(compose_sheets(build, doc))
    if paths:
        tell(f"grid: {len(paths)} sheet(s): " + ", ".join(p.relative_to(build).as_posix() for p in paths))
    return paths


def _render(
    grid: GridPlan,
    todo: Sequence[Cell],
    plan: Plan,
    sd_scripts: Path,
    python: str,
    tell: Callable[[str], None],
    on_line: Callable[[str], None] | None,
    pre_calc: bool | None,
    max_batch: int,
) -> tuple[float, Path]:
    """Run the family's renderer for ``todo`` (a process per part of its split); raise on anything missing."""
    build = plan.build_dir
    settings = grid.settings
    networks = network_order(todo)
    work = plan.layout.grid_dir / f".render-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "out").mkdir(parents=True)
    rel = work.relative_to(build).as_posix()
    batch = batch_size(todo, max_batch)
    if pre_calc is None:
        pre_calc = use_pre_calc(settings, batch, len(networks))
    renderer = families.get(settings.family).grid
    job = GridJob(
        images=tuple(grid_image(settings, c, networks) for c in todo),
        network_files=tuple(grid.lora_files[e] for e in networks),
        script=str(sd_scripts.resolve() / renderer.SCRIPT),  # the folder resolved: its files may be links
        workdir=rel,
        outdir=f"{rel}/out",
        cells_dir=plan.layout.cells_dir,
        cwd=build,
        python=python,
        env=dict(plan.launch.env),
        batch=batch,
        pre_calc=pre_calc,
    )
    total = len(todo)
    log = plan.layout.grid_log
    # Every renderer splits the job into the jobs one process each renders: the whole job when one
    # process renders every LoRA setting, a job per setting when the script merges the LoRA at load.
    parts = renderer.split(job)
    if len(parts) == 1:
        tell(f"grid: {total} cell(s) in one process (one model load)")
    else:
        tell(f"grid: {len(parts)} model load(s) for {total} cell(s), one process each, one after the other")
    seconds, started, done = 0.0, 0, set[str]()
    by_name = {f"{c.key}.png": c for c in todo}
    try:
        for number, part in enumerate(parts, 1):
            cells = [by_name[image.name] for image in part.images]
            say, at = (tell, on_line), (started, total)
            run, rendered = _run_part(
                renderer, settings, part, cells, work, (log, number > 1), sd_scripts, say, at
            )
            done |= rendered
            seconds += run.result.seconds
            started += len(part.images)
            if run.interrupted:
                raise GridInterrupted(
                    run.interrupted_message(
                        "grid",
                        f": {len(done)} of {total} cell(s) rendered and kept; run lorabuild grid again to render the rest",
                    ),
                    run.signum,
                )
            if run.failed:
                raise GridError(
                    f"{renderer.NAME} failed ({len(done)} of {total} cell(s) rendered): {run.failure_message()}"
                )
            missing = [c for c in cells if c.key not in done]
            if missing:
                listed = ", ".join([f"{c.key}.png" for c in missing[:3]] + ["..."] * (len(missing) > 3))
                raise GridError(run.missing_message(f"{len(missing)} of {total} cell(s) ({listed})"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return seconds, log


def _run_part(
    renderer: GridRenderer,
    settings: GridSettings,
    job: GridJob,
    cells: Sequence[Cell],
    work: Path,
    log_to: tuple[Path, bool],
    sd_scripts: Path,
    say: tuple[Callable[[str], None], Callable[[str], None] | None],
    at: tuple[int, int],
) -> tuple[ScriptRun, set[str]]:
    """Run one process of the renderer for ``job`` (its images are ``cells``); move each verified PNG into
    ``cells/``; the run and the keys moved. ``log_to``: the grid's log, and whether to append to it (the
    parts after the first: one ``logs/grid.log``); ``say``: the grid's ``tell`` and ``on_line``; ``at``:
    the images the parts before rendered, and the grid's total."""
    (tell, on_line), (started, total), (log, append) = say, at, log_to
    build = job.cwd
    run_of = renderer.prepare(settings, job)
    for name, text in run_of.inputs.items():
        (work / name).write_text(text, encoding="utf-8", newline="\n")

    def handle(line: str) -> None:
        if on_line is not None:
            on_line(line)
            return
        cell = run_of.progress(line)
        if cell is not None:
            tell(f"grid: cell {started + cell}/{total}")

    # The runner truncates the log it writes: a later part writes its own, appended to the grid's after.
    part_log = log.with_name(log.name + ".part") if append else log
    try:
        run = run_script(
            renderer.NAME,
            run_of.argv,
            build,
            part_log,
            run_of.env,
            handle,
            sd_scripts=sd_scripts,
            answer=run_of.answer,
        )
    finally:
        if append and (build / part_log).exists():
            with (build / log).open("ab") as whole, (build / part_log).open("rb") as part:
                shutil.copyfileobj(part, whole)
            (build / part_log).unlink()
    done = _collect(build, work / "out", cells) | {c.key for c in cells if f"{c.key}.png" in run_of.delivered}
    return (replace(run, result=replace(run.result, log=log)) if append else run), done


def _collect(build: Path, outdir: Path, todo: Sequence[Cell]) -> set[str]:
    """Move every whole PNG the renderer wrote for ``todo`` into ``cells/``; return the keys moved."""
    cells = BuildLayout(build).cells_dir
    cells.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    for cell in todo:
        source = outdir / f"{cell.key}.png"
        if is_png(source):
            os.replace(source, build / cell.file)
            done.add(cell.key)
    return done
