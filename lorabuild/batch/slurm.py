"""``lorabuild compile --target slurm``: an ``sbatch`` array script with one task per build.

Each array task picks its build by ``$SLURM_ARRAY_TASK_ID`` and runs ``lorabuild run RECIPE
[--only NAME] --until STAGE`` with the lorabuild of the machine that compiled the script (its
Python's absolute path is written in; ``LORABUILD="..."`` in the environment overrides it). So a
resubmitted array trains nothing twice: ``lorabuild run`` skips every stage whose inputs did not
change, by content hash. Before that, a task whose build finished and whose inputs (recipe files,
dataset folders, model, kohya checkout, the script itself) are all older than the build's
``.lorabuild/<stage>.done`` marker says "already built" and exits without starting Python.

Resources are one set for the whole array (Slurm gives every task of an array the same): GPUs
from ``[launch] gpus`` (the most any build asks for; omitted when every build trains on the
CPU), CPUs, memory, time, partition and account from ``[launch.slurm]``, which must agree
across builds unless the command line sets them. Logs: one file per task,
``logs/<job name>-<job id>_<task>.out`` next to the script.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorabuild import __version__
from lorabuild.batch.makegen import kohya_head_files, named_paths, output_problem, recipe_files
from lorabuild.build.artefacts import _environment
from lorabuild.plan.layout import BuildLayout
from lorabuild.plan.plan import training_outputs
from lorabuild.problems import LorabuildError
from lorabuild.recipe.load import cwd_relative  # the rule --set paths follow everywhere
from lorabuild.recipe.many import load_many
from lorabuild.render.quoting import Quoted, sbatch_line_problem, utf8
from lorabuild.render.writer import write_atomic
from lorabuild.settings import sd_scripts_dir

STAGES = ("check", "compile", "prepare", "train", "grid", "report")
# What an array task runs unless --slurm stages=… says otherwise: the build up to its LoRA files
# (the grid and report can follow on the same allocation with stages=compile,…,report).
DEFAULT_STAGES = ("compile", "prepare", "train")
# ``lorabuild compile --target slurm --slurm KEY=VALUE`` keys.
CLI_KEYS = (
    "stages",
    "partition",
    "account",
    "time",
    "mem",
    "cpus-per-task",
    "gpus",
    "job-name",
    "sbatch",
    "lorabuild",
)
# The file whose presence says a stage's work exists (besides its .done marker).
_STAGE_OUTPUT = {"compile": BuildLayout.CONFIG_TOML, "prepare": BuildLayout.DATASET}


class SlurmError(LorabuildError):
    """The sbatch script cannot be written as asked (exit status 2)."""

    exit_code = 2


@dataclass(frozen=True)
class SlurmSettings:
    """sbatch resources for every task of the array; None: not given (the recipes decide, or Slurm's default)."""

    partition: str | None = None
    account: str | None = None
    time: str | None = None
    mem: str | None = None
    cpus_per_task: int | None = None
    gpus: int | None = None
    job_name: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class SlurmBuild:
    """One array task: a build, how to select it and what it depends on."""

    name: str
    recipe: Path
    select: bool
    build_dir: Path
    final: Path
    inputs: tuple[Path, ...]
    gpus: int
    gpu_ids: bool
    cpus: int
    slurm: Mapping[str, object]
    display: str


def parse_stages(text: str) -> tuple[str, ...]:
    """``check,compile`` -> the stages in pipeline order; raises SlurmError naming a bad one."""
    asked = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in asked if s not in STAGES]
    if bad or not asked:
        raise SlurmError(
            f"--slurm stages={text}: {repr(bad[0]) + ' is not a stage' if bad else 'name at least one stage'}; "
            f"use some of {', '.join(STAGES)}, e.g. --slurm stages=check,compile"
        )
    return tuple(s for s in STAGES if s in asked)


def collect(
    recipes: Sequence[Path], build_root: Path, overrides: Sequence[str], last_stage: str
) -> list[SlurmBuild]:
    """Every build of ``recipes``, in order (:func:`lorabuild.recipe.many.load_many`).

    Raises:
        RecipeError: With every recipe's problems, or when two builds share a name (or folder).
    """
    builds: list[SlurmBuild] = []
    kohya = [p for p in kohya_head_files(sd_scripts_dir()) if p.exists()]  # none without a .git
    for entry in load_many(recipes, build_root, overrides):
        loaded = entry.loaded
        if loaded is None:
            continue  # load_many raises first
        recipe = loaded.recipe
        build_dir = Path(os.path.abspath(build_root / recipe.name))
        if last_stage == "train":
            final = build_dir / next(f for f in training_outputs(recipe).expected() if not f.endswith("/"))
        else:
            final = build_dir / _STAGE_OUTPUT.get(last_stage, BuildLayout.CONFIG_TOML)
        launch = recipe.launch
        gpus = 0 if launch.gpus == 0 else launch.num_processes
        inputs = dict.fromkeys([*recipe_files(loaded), *named_paths(recipe), *kohya])
        builds.append(
            SlurmBuild(
                name=recipe.name,
                recipe=Path(os.path.abspath(entry.file)),
                select=entry.select,
                build_dir=build_dir,
                final=final,
                inputs=tuple(Path(os.path.abspath(p)) for p in inputs),
                gpus=gpus,
                gpu_ids=isinstance(launch.gpus, list),
                cpus=launch.num_cpu_threads_per_process * launch.num_processes,
                slurm=launch.slurm.model_dump(),
                display=loaded.display,
            )
        )
    return builds


def resolve_settings(builds: Sequence[SlurmBuild], given: SlurmSettings) -> SlurmSettings:
    """The array's resources: the command line's, else the recipes' ``[launch.slurm]`` (which must agree).

    Raises:
        SlurmError: When builds ask for different values the command line does not settle, or a
            build names GPU ids (Slurm chooses the GPUs of a task).
    """
    with_ids = [b.display for b in builds if b.gpu_ids]
    if with_ids:
        raise SlurmError(
            f"{with_ids[0]}: launch.gpus lists GPU ids, but Slurm chooses each task's GPUs: give a count "
            "instead (e.g. --set launch.gpus=2)"
        )

    def agreed(name: str) -> Any:
        seen: dict[str, tuple[object, str]] = {}
        for b in builds:
            value = b.slurm.get(name)
            if value is not None and value != []:
                seen.setdefault(repr(value), (value, b.display))
        if len(seen) > 1:
            flag = "--slurm " + ("sbatch=OPTION" if name == "extra" else name.replace("_", "-") + "=VALUE")
            (one, where), (other, elsewhere) = list(seen.values())[:2]
            raise SlurmError(
                f"the builds ask for different launch.slurm.{name}: {one!r} ({where}) and {other!r} "
                f"({elsewhere}); set the same value in each recipe, or pass {flag} for the whole array"
            )
        return next(iter(seen.values()))[0] if seen else None

    return SlurmSettings(
        partition=given.partition or agreed("partition"),
        account=given.account or agreed("account"),
        time=given.time or agreed("time"),
        mem=given.mem or agreed("mem"),
        cpus_per_task=given.cpus_per_task or agreed("cpus_per_task") or max(b.cpus for b in builds),
        gpus=given.gpus if given.gpus is not None else max(b.gpus for b in builds),
        job_name=given.job_name,
        extra=given.extra or tuple(agreed("extra") or ()),
    )


def render_sbatch(
    builds: Sequence[SlurmBuild],
    settings: SlurmSettings,
    *,
    script: Path,
    build_root: Path,
    stages: Sequence[str],
    lorabuild: Sequence[str],
    overrides: Sequence[str] = (),
) -> str:
    """The sbatch array script (see the module docstring).

    Args:
        builds: One per array task, in task order.
        settings: The resolved resources.
        script: Where the script goes (its folder holds ``logs/``; paths in it are absolute).
        build_root: The build root.
        stages: The stages each task runs, in order (``check`` runs ``lorabuild check`` first).
        lorabuild: The command that runs lorabuild on the cluster's nodes.
        overrides: ``--set`` values for every build.
    """
    run_stages = [s for s in stages if s != "check"]
    folder = Path(os.path.abspath(script.parent))
    job_name = settings.job_name or "lorabuild"
    sbatch = [
        f"--job-name={job_name}",
        f"--array=0-{len(builds) - 1}",
        f"--output={(folder / 'logs').as_posix()}/%x-%A_%a.out",
        f"--chdir={folder.as_posix()}",
        f"--cpus-per-task={settings.cpus_per_task}",
    ]
    if settings.gpus:
        sbatch.append(f"--gres=gpu:{settings.gpus}")
    sbatch += [
        f"--{k.replace('_', '-')}={getattr(settings, k)}"
        for k in ("mem", "time", "partition", "account")
        if getattr(settings, k) is not None
    ]
    sbatch += list(settings.extra)
    for line in sbatch:
        why = sbatch_line_problem(line)  # the check's own test of [launch.slurm] (recipe/schema/launch.py)
        if why:
            raise SlurmError(f"sbatch option {line!r} cannot be written on an #SBATCH line: it {why}")
    # sbatch reads a double-quoted value with spaces as one argument; for bash the line is a comment,
    # and nothing but a newline (refused above) ends one.
    directives = [Quoted(_quoted(line) if " " in line else line) for line in sbatch]
    sets = [w for item in overrides for w in ("--set", item)]
    tasks = [
        {
            "name": b.name,
            "recipe": b.recipe.as_posix(),
            "only": ["--only", b.name] if b.select else [],
            "build_dir": b.build_dir.as_posix(),
            "final": b.final.as_posix(),
            "inputs": [p.as_posix() for p in (*b.inputs, Path(os.path.abspath(script)))],
        }
        for b in builds
    ]
    return (
        _environment()
        .get_template("slurm.sbatch.j2")
        .render(
            version=__version__,
            sbatch=directives,
            tasks=tasks,
            count=len(builds),
            lorabuild=list(lorabuild),
            common=[*sets, "--build-dir", Path(os.path.abspath(build_root)).as_posix()],
            check="check" in stages,
            until=run_stages[-1] if run_stages else None,
            marker_stage=run_stages[-1] if run_stages else None,
            stages=", ".join(stages),
            gpus=settings.gpus,
        )
    )


def _quoted(option: str) -> str:
    name, sep, value = option.partition("=")
    return f'{name}="{value}"' if sep else f'"{option}"'


def default_lorabuild() -> tuple[str, ...]:
    """This machine's lorabuild: its Python, absolute, with ``-m lorabuild``."""
    return (Path(os.path.abspath(sys.executable)).as_posix(), "-m", "lorabuild")


def write_sbatch(
    recipes: Sequence[Path],
    output: Path,
    build_root: Path,
    *,
    overrides: Sequence[str] = (),
    settings: SlurmSettings = SlurmSettings(),
    stages: Sequence[str] = DEFAULT_STAGES,
    lorabuild: Sequence[str] | None = None,
) -> tuple[list[SlurmBuild], SlurmSettings, bool]:
    """Write the sbatch script for ``recipes`` to ``output`` (only when its bytes change) and make ``logs/``.

    Returns:
        The builds (one per array task), the resources used, and whether the file was written.

    Raises:
        RecipeError: When a recipe does not load, or two builds share a name.
        SlurmError: When the script cannot be written as asked.
    """
    problem = output_problem(output, recipes, "the script's file name, e.g. -o train.sbatch")
    if problem:
        raise SlurmError(problem)
    overrides = [cwd_relative(item) for item in overrides]
    run_stages = [s for s in stages if s != "check"]
    builds = collect(recipes, build_root, overrides, run_stages[-1] if run_stages else "compile")
    if not builds:
        raise SlurmError("no builds: name at least one recipe file")
    resolved = resolve_settings(builds, settings)
    text = render_sbatch(
        builds,
        resolved,
        script=output,
        build_root=build_root,
        stages=stages,
        lorabuild=lorabuild or default_lorabuild(),
        overrides=overrides,
    )
    data = utf8(text, output.name)
    (output.parent / "logs").mkdir(parents=True, exist_ok=True)  # sbatch does not create it
    try:
        changed = output.read_bytes() != data
    except OSError:
        changed = True
    if changed:  # an unchanged script keeps its mtime: tasks compare their markers with it
        write_atomic(output, data, executable=True)
    return builds, resolved, changed
