"""The ``lorabuild`` command line: thin typed commands over :mod:`lorabuild.pipeline` and its stages.

Heavy modules (torch, diffusers) are never imported here, so ``lorabuild --help`` and
``lorabuild check`` stay fast. Each command imports the modules it uses when it runs (the imports
marked ``# lazy``): at the top they would make ``lorabuild --help`` four times as slow (the
pipeline alone loads pydantic and the planner, 0.05 s -> 0.2 s). Errors the user can fix are printed as ``file: key: message``
lines with exit status 2 and no traceback (:func:`main`).

Every command that writes into ``build/<name>/`` holds that build's lock while it does
(:func:`lorabuild.build.state.build_lock`; ``run``, ``train`` and ``grid`` take it in the pipeline), so
a second command on the same build stops at once, naming the one at work.

Why one module: it is the command table, one typed function per command, each a few lines over
the stages, and most of its length is typer's option declarations, which are the ``--help`` text.
The helpers the commands share (the option types, :func:`_checked`, :func:`_locked`, printing
problems) serve only these commands, and :func:`main` is the one place errors become exit
statuses. Spreading the commands over modules would scatter what a reader looks up in one place;
moving the helpers out would save a hundred lines, leave this module as long, and add a layer.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from lorabuild import KOHYA_COMMIT, __version__
from lorabuild.problems import LorabuildError, Problem, RecipeError, Severity, format_problem
from lorabuild.settings import build_root, sd_scripts_dir

if TYPE_CHECKING:
    from lorabuild.plan.plan import Plan
    from lorabuild.stages.check import Checked

app = typer.Typer(
    name="lorabuild",
    help="Build Stable Diffusion LoRAs with kohya sd-scripts from one declarative recipe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help is plain text: [pick] and [env ...] are words, not rich markup tags.
    rich_markup_mode=None,
)

RecipeArg = Annotated[Path, typer.Argument(help="The recipe TOML file.", show_default=False)]
SetOpt = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer needs Optional here
    typer.Option("--set", "-s", help="Override a recipe value: dotted.key=value (repeatable)."),
]
BuildDirOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option("--build-dir", help="Where builds go [env LORABUILD_BUILD_DIR, default ./build]."),
]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")]
OnlyOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--only",
        help="The build to use from a recipe whose [sweep] defines several (lorabuild ls lists them).",
    ),
]


def _build_root(option: Path | None) -> Path:
    return option if option is not None else build_root()


def _checked(
    recipe: Path,
    overrides: list[str] | None,
    build_dir: Path | None,
    strict: bool = False,
    only: str | None = None,
) -> tuple[Checked, Plan]:
    """Check the recipe, print its warnings and return the check with its plan; raises with every problem.

    ``only`` picks one build of a recipe whose ``[sweep]`` defines several (``--only NAME``);
    without it such a recipe is an error that lists the names.
    """
    from lorabuild.stages.check import check as check_recipe  # lazy: per command
    from lorabuild.stages.check import require_plan  # lazy: per command

    checked = check_recipe(recipe, overrides or [], _build_root(build_dir), only=only)
    plan = require_plan(checked, strict=strict)
    _echo_problems(checked.warnings)
    return checked, plan


@contextlib.contextmanager
def _locked(build: Path) -> Iterator[None]:
    """Hold ``build``'s lock (:func:`lorabuild.build.state.build_lock`) while writing into it."""
    from lorabuild.build.state import build_lock  # lazy: per command (it loads the planner)

    with build_lock(build):
        yield


def _echo_problems(problems: list[Problem]) -> None:
    for p in problems:
        typer.echo(format_problem(p), err=True)


@app.command()
def check(
    recipe: RecipeArg,
    set_: SetOpt = None,
    build_dir: BuildDirOpt = None,
    strict: StrictOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every image's bucket.")] = False,
    only: OnlyOpt = None,
) -> None:
    """Check a recipe and its files in under a second, then show what kohya will train.

    A recipe whose [sweep] defines several builds has each of them checked (or the one --only names).
    """
    from lorabuild.plan.summary import plan_summary  # lazy: per command
    from lorabuild.recipe.load import load_builds, load_recipe  # lazy: per command
    from lorabuild.stages.check import check_loaded, require_plan  # lazy: per command

    root = _build_root(build_dir)
    builds = [load_recipe(recipe, set_ or [], only)] if only is not None else load_builds(recipe, set_ or [])
    failed: list[Problem] = []
    warned = 0
    for loaded in builds:
        checked = check_loaded(loaded, root)
        if len(builds) > 1:
            typer.echo(f"== {loaded.recipe.name}")
        if checked.plan is not None:
            typer.echo(plan_summary(checked.plan, verbose=verbose))
        try:
            require_plan(checked, strict=strict)
        except RecipeError as exc:
            if len(builds) == 1:
                raise
            failed += exc.problems
            continue
        _echo_problems(checked.warnings)
        warned += len(checked.warnings)
    if failed:
        raise RecipeError(failed)
    count = f": {len(builds)} builds" if len(builds) > 1 else ""
    typer.echo(f"ok: {recipe.as_posix()}{count}" + (f" ({warned} warning(s))" if warned else ""))


@app.command("compile")
def compile_(
    recipes: Annotated[
        list[Path],
        typer.Argument(help="The recipe TOML file(s); several with --target slurm.", show_default=False),
    ],
    set_: SetOpt = None,
    only: OnlyOpt = None,
    build_dir: BuildDirOpt = None,
    strict: StrictOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be written.")] = False,
    target: Annotated[
        str, typer.Option("--target", help="local: the build folders; slurm: an sbatch array script.")
    ] = "local",
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--output", "-o", help="--target slurm: the script to write [lorabuild.sbatch]."),
    ] = None,
    slurm: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--slurm",
            help="--target slurm: stages=check,compile | partition=P | account=A | time=T | mem=M | "
            "cpus-per-task=N | gpus=N | job-name=J | sbatch=--opt=v | lorabuild=CMD (repeatable; "
            "overrides [launch.slurm]).",
        ),
    ] = None,
) -> None:
    """Write build/<name>/: dataset.toml, config.toml, sample prompts, train.sh, train.ps1, plan.json.

    With --target slurm, write instead an sbatch array script with one task per build (of every
    recipe given) that runs `lorabuild run` on the cluster; resubmitting skips finished builds.
    """
    if target == "slurm":
        _compile_slurm(recipes, output or Path("lorabuild.sbatch"), set_ or [], build_dir, slurm or [])
        return
    if target != "local":
        from lorabuild.batch.slurm import SlurmError  # lazy: per command

        raise SlurmError(f"--target {target!r} is not a target: use local or slurm")
    if output is not None or slurm:
        from lorabuild.batch.slurm import SlurmError  # lazy: per command

        raise SlurmError("-o and --slurm go with --target slurm")
    from lorabuild.stages.compile import compile_build  # lazy: per command

    for recipe in recipes:
        _, plan = _checked(recipe, set_, build_dir, strict=strict, only=only)
        with contextlib.nullcontext() if dry_run else _locked(plan.build_dir):
            written = compile_build(plan, dry_run=dry_run)
        for each in written:
            typer.echo(f"{each.action:>9}  {each.path.as_posix()}")


def _compile_slurm(
    recipes: list[Path], output: Path, overrides: list[str], build_dir: Path | None, items: list[str]
) -> None:
    from lorabuild.batch import slurm  # lazy: per command

    given: dict[str, str] = {}
    extra: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("_", "-")
        if not sep or key not in slurm.CLI_KEYS:
            raise slurm.SlurmError(
                f"--slurm {item!r}: write KEY=VALUE with KEY one of {', '.join(slurm.CLI_KEYS)}"
            )
        if key == "sbatch":
            extra.append(value)
        else:
            given[key] = value
    try:
        cpus = int(given["cpus-per-task"]) if "cpus-per-task" in given else None
        gpus = int(given["gpus"]) if "gpus" in given else None
    except ValueError:
        raise slurm.SlurmError("--slurm cpus-per-task and gpus take whole numbers, e.g. gpus=2") from None
    settings = slurm.SlurmSettings(
        partition=given.get("partition"),
        account=given.get("account"),
        time=given.get("time"),
        mem=given.get("mem"),
        cpus_per_task=cpus,
        gpus=gpus,
        job_name=given.get("job-name"),
        extra=tuple(extra),
    )
    builds, used, changed = slurm.write_sbatch(
        recipes,
        output,
        _build_root(build_dir),
        overrides=overrides,
        settings=settings,
        stages=slurm.parse_stages(given.get("stages", ",".join(slurm.DEFAULT_STAGES))),
        lorabuild=shlex.split(given["lorabuild"]) if "lorabuild" in given else None,
    )
    gres = f"{used.gpus} GPU(s)" if used.gpus else "no GPU"
    typer.echo(
        f"{'wrote' if changed else 'identical'} {output.as_posix()}: {len(builds)} array task(s) "
        f"({', '.join(b.name for b in builds)}), each {gres}, {used.cpus_per_task} CPU(s)"
    )
    typer.echo(f"submit: sbatch {output.as_posix()}  (logs in {(output.parent / 'logs').as_posix()}/)")


@app.command()
def prepare(
    recipe: RecipeArg,
    set_: SetOpt = None,
    only: OnlyOpt = None,
    build_dir: BuildDirOpt = None,
    strict: StrictOpt = False,
) -> None:
    """Stage the dataset (images and rule-edited captions) into build/<name>/dataset/.

    With nothing changed since the last prepare (recipe, source folders, build folder) it only
    lists the folders and repeats that run's warnings.
    """
    from lorabuild.build import state  # lazy: per command
    from lorabuild.probe.decodecheck import ahead  # lazy: per command
    from lorabuild.recipe.load import load_recipe  # lazy: per command

    root = _build_root(build_dir)
    loaded = load_recipe(recipe, set_ or [], only)
    with _locked(root / loaded.recipe.name):
        key = state.prepare_fingerprint(loaded, root)
        done = state.already_prepared(loaded, root, key, strict=strict)
        if done is not None:
            for line in done.detail["lines"]:
                typer.echo(line, err=True)
            typer.echo(done.detail["summary"])
            return
        from lorabuild.render.meter import Meter  # lazy: per command
        from lorabuild.stages.check import check_loaded, require_plan  # lazy: per command
        from lorabuild.stages.compile import compile_build  # lazy: per command
        from lorabuild.stages.prepare import prepare as stage_dataset  # lazy: per command

        meter = Meter()  # count, rate and ETA of each long step, on a terminal only
        with ahead():  # the images the check probes first are decoded while it goes on
            checked = check_loaded(loaded, root)
            plan = require_plan(checked, strict=strict)
            _echo_problems(checked.warnings)
            written = compile_build(plan)
            try:
                report = stage_dataset(plan, checked.loaded.recipe, progress=meter)
            finally:
                meter.close()
        _echo_problems(list(report.problems))
        dataset = f"staged {plan.build_dir.as_posix()}/dataset: "
        cut = f"{report.cut_out} cut out, " if report.cut_out else ""
        typer.echo(
            f"{dataset}{report.linked} linked, {report.copied} copied, "
            f"{report.converted} converted, {cut}{report.unchanged} unchanged, {report.captions_written} captions "
            f"written, {report.removed} removed; tags.csv {report.tags}"
        )
        staged = report.linked + report.copied + report.converted + report.cut_out + report.unchanged
        again = (
            f"{dataset}0 linked, 0 copied, 0 converted, {staged} unchanged, 0 captions written, 0 removed; "
        )
        lines = [format_problem(p) for p in (*checked.warnings, *report.problems)]
        state.record_prepared(plan, key, written, lines, again + "tags.csv identical")


@app.command()
def tags(
    recipe: RecipeArg,
    set_: SetOpt = None,
    only: OnlyOpt = None,
    build_dir: BuildDirOpt = None,
) -> None:
    """Print each subset's tag frequencies before and after the caption rules (what to remove or fix)."""
    from lorabuild.kohya.tagger import autotag_sections  # lazy: per command
    from lorabuild.plan.tags import tags_text  # lazy: per command
    from lorabuild.probe.segmentation import remove_background_sections  # lazy: per command
    from lorabuild.stages.prepare import autotagged, cut_out_plan  # lazy: per command

    checked, plan = _checked(recipe, set_, build_dir, only=only)
    loaded = checked.loaded.recipe
    # The tagger caches its output in build/<name>/autotag/, the cut-outs theirs in cutout/;
    # without them nothing is written.
    writing = bool(autotag_sections(loaded) or remove_background_sections(loaded))
    with _locked(plan.build_dir) if writing else contextlib.nullcontext():
        cut, kept = cut_out_plan(plan, loaded)
        tagged = autotagged(cut, loaded)
    _echo_problems(kept)
    typer.echo(tags_text(tagged))  # tags as prepare stages them


FreshOpt = Annotated[
    bool, typer.Option("--fresh", help="Start training over instead of resuming from a saved state.")
]


def _outputs_line(name: str, outputs: tuple[str, ...]) -> str:
    files = [f for f in outputs if not f.endswith("/")]
    return f"{name}: {len(files)} LoRA file(s): " + ", ".join(files)


@app.command()
def train(
    recipe: RecipeArg,
    set_: SetOpt = None,
    only: OnlyOpt = None,
    build_dir: BuildDirOpt = None,
    strict: StrictOpt = False,
    fresh: FreshOpt = False,
) -> None:
    """Compile and stage the build when stale, then train it with kohya (resuming a stopped run).

    Shows kohya's output with a progress line (epoch, step, loss, ETA) and tees it to
    build/<name>/logs/train.log. Fails (exit 1) unless every expected file was saved; Ctrl-C
    stops kohya cleanly (exit 130).
    """
    from lorabuild import pipeline  # lazy: per command

    checked, plan = _checked(recipe, set_, build_dir, strict=strict, only=only)
    pipeline.run(checked, force_train=True, fresh=fresh, say=typer.echo)
    typer.echo(f"trained {_outputs_line(plan.name, plan.outputs)}")


@app.command()
def run(
    recipes: Annotated[
        list[Path],
        typer.Argument(
            help="Recipe TOML files, run in order (a sweep runs each of its builds).", show_default=False
        ),
    ],
    set_: SetOpt = None,
    build_dir: BuildDirOpt = None,
    strict: StrictOpt = False,
    until: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--until", help="Stop after this stage: compile, prepare or train.", show_default=False),
    ] = None,
    only: OnlyOpt = None,
    stop_on_error: Annotated[
        bool, typer.Option("--stop-on-error", help="With several builds, stop at the first that fails.")
    ] = False,
) -> None:
    """Bring the build up to date: compile, prepare and train, each only when its inputs changed.

    Editing only [evaluate] retrains nothing; with nothing changed this finishes in about a
    second. A stopped training resumes from its last saved state.

    With several builds (several files, or a [sweep]) they run in order as a queue: a failed
    build is reported and the next one starts, and a table at the end lists each build's status,
    time and LoRA file (exit 1 if one failed). Two builds sharing a name or folder stop it before
    anything runs; Ctrl-C stops the queue.
    """
    from lorabuild import pipeline  # lazy: per command
    from lorabuild.batch import queue as runqueue  # lazy: per command

    if until is not None and until not in pipeline.RUN_STAGES:
        raise typer.BadParameter(f"{until!r} is not a stage: use one of {', '.join(pipeline.RUN_STAGES)}")
    start = time.perf_counter()
    root = _build_root(build_dir)
    entries = runqueue.collect(recipes, root, set_ or [], only, keep_going=len(recipes) > 1)
    if len(entries) != 1 or entries[0].loaded is None:
        rows = runqueue.run_queue(
            entries,
            root,
            strict=strict,
            stop_on_error=stop_on_error,
            until=until,
            say=typer.echo,
            warn=lambda line: typer.echo(line, err=True),
        )
        typer.echo("")
        typer.echo(runqueue.summary_table(rows))
        raise typer.Exit(runqueue.exit_status(rows))
    from lorabuild.stages.check import check_loaded, require_plan  # lazy: per command

    checked = check_loaded(entries[0].loaded, root)
    plan = require_plan(checked, strict=strict)
    _echo_problems(checked.warnings)
    report = pipeline.run(checked, say=typer.echo, until=until)
    took = time.perf_counter() - start
    if until is not None and until != pipeline.RUN_STAGES[-1]:
        typer.echo(f"ok: {plan.name}: {', '.join(s.stage for s in report.stages)} up to date ({took:.2f} s)")
    elif any(s.ran for s in report.stages):
        typer.echo(f"ok: {_outputs_line(plan.name, plan.outputs)} ({took:.1f} s)")
    else:
        typer.echo(f"ok: {plan.name} is up to date ({took:.2f} s)")


@app.command()
def doctor() -> None:
    """Check this machine for training, with a fix for each problem found.

    Looks at Python, torch and CUDA, xformers, bitsandbytes, accelerate and its config, kohya's
    packages and the kohya checkout's commit. Exit status 1 when something would stop training.
    """
    from lorabuild.stages.doctor import findings, format_findings, probe, train_pins  # lazy: per command

    typer.echo(f"lorabuild doctor: probing {sys.executable} (importing torch takes a few seconds)")
    items = findings(probe(), sd_scripts_dir(), train_pins())
    typer.echo(format_findings(items))
    failed = [i.name for i in items if i.status == "fail"]
    if failed:
        typer.echo(f"{len(failed)} problem(s) stop training here: {', '.join(failed)}", err=True)
        raise typer.Exit(1)
    typer.echo("ok: ready to train")


@app.command()
def setup(
    sd_scripts: Annotated[
        Path,
        typer.Option(
            "--sd-scripts",
            help="A local git clone of kohya-ss/sd-scripts that holds the pinned commit (no network needed).",
        ),
    ],
    force: Annotated[bool, typer.Option("--force", help="Replace what the kohya folder holds now.")] = False,
) -> None:
    """Install kohya sd-scripts at the pinned commit from a local clone, for machines without GitHub.

    Checks the commit out into vendor/sd-scripts (or LORABUILD_SD_SCRIPTS) and verifies it.
    """
    from lorabuild.stages.doctor import setup_sd_scripts  # lazy: per command

    typer.echo(setup_sd_scripts(sd_scripts, sd_scripts_dir(), force=force))


@app.command()
def demo(
    build_dir: Annotated[Path, typer.Option("--build-dir", help="Where the demo builds.")] = Path(
        "build/demo"
    ),
    family: Annotated[
        str,
        typer.Option(
            "--family",
            help="sd15: the tutorial's recipe (recipes/kazari.toml) on a random-weight SD1.5-shaped model; sd2: "
            "the same recipe on an SD2-shaped one (v-prediction); "
            "sdxl, flux, chroma, sd3, anima, hunyuan or lumina: that family's recipes/*_character.toml on a tiny "
            "model of the family's shape.",
        ),
    ] = "sd15",
) -> None:
    """Train a shipped recipe end to end on a CPU with a generated model and dataset (offline).

    It shows that the pipeline works, not image quality: the model's weights are random.
    """
    from lorabuild import pipeline  # lazy: per command
    from lorabuild.demo.demo import DEMO_RECIPE, TINY_DEMOS, prepare_demo  # lazy: per command
    from lorabuild.stages.check import check as check_recipe  # lazy: per command
    from lorabuild.stages.check import require_plan  # lazy: per command

    if family in ("sd15", "sd2"):
        shape = "SD2 (v-prediction)" if family == "sd2" else "SD1.5"
        typer.echo(
            f"lorabuild demo: trains recipes/kazari.toml on a random-weight {shape}-shaped model (CPU, 64 px)."
        )
        typer.echo(
            "It shows the pipeline, not image quality. First run builds the test model (~1 min, 3.5 GB)."
        )
        recipe, overrides = DEMO_RECIPE, prepare_demo(build_dir, family=family)
    elif family in TINY_DEMOS:
        tiny = TINY_DEMOS[family]
        typer.echo(tiny.banner())
        recipe, overrides = tiny.prepare(build_dir)
    else:
        raise typer.BadParameter(
            f"{family!r}: choose sd15, sd2, {', '.join(TINY_DEMOS)}", param_hint="--family"
        )
    checked = check_recipe(recipe, overrides, build_dir)
    plan = require_plan(checked)
    from lorabuild.plan.summary import plan_summary  # lazy: per command

    typer.echo(plan_summary(plan))
    pipeline.run(checked, say=typer.echo)

    # Install the chosen epoch into a webui tree inside the demo folder, as `lorabuild install` does.
    from lorabuild.stages.install import describe, install, plan_install  # lazy: per command

    webui = build_dir / "webui"
    (webui / "models" / "Lora").mkdir(parents=True, exist_ok=True)
    with _locked(plan.build_dir):  # plan_install records the LoRA's hashes in the build
        planned = plan_install(plan, checked.loaded.recipe, display=checked.loaded.display, webui=webui)
        installed = install(planned, force=True)
    for line in describe(installed, dry_run=False):
        typer.echo(line)
    typer.echo(
        f"demo done: open {plan.layout.report.as_posix()} for the loss and the epoch x weight "
        f"grid; epoch {planned.epoch} is installed in {(webui / 'models' / 'Lora').as_posix()}"
    )


@app.command()
def schema() -> None:
    """Print the recipe's JSON Schema (for editor completion and validation)."""
    from lorabuild.recipe.schema import Recipe  # lazy: per command

    typer.echo(json.dumps(Recipe.model_json_schema(), indent=2, ensure_ascii=False))


@app.command()
def version() -> None:
    """Print lorabuild's version and the kohya commit it drives."""
    typer.echo(f"lorabuild {__version__} (kohya sd-scripts {KOHYA_COMMIT})")


@app.command()
def makefile(
    recipes: Annotated[
        list[Path],
        typer.Argument(help="Recipe TOML files (a sweep's builds each get targets).", show_default=False),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The Makefile to write.")] = Path("Makefile"),
    set_: SetOpt = None,
    build_dir: BuildDirOpt = None,
) -> None:
    """Write a GNU Makefile with a target per build and stage: `make -j2` runs only stale stages.

    `make` builds everything, `make NAME` one build, `make NAME/prepare` one stage; `make -k`
    carries on past a failed build. Stamps use the same hashes as `lorabuild run`, so a second
    `make` with nothing changed trains nothing. Run make in the Makefile's folder.
    """
    from lorabuild.batch.makegen import write_makefile  # lazy: per command

    builds = write_makefile(recipes, output, _build_root(build_dir), set_ or [])
    targets = ", ".join(b.target for b in builds)
    typer.echo(f"wrote {output.as_posix()}: {len(builds)} build(s): {targets}")
    typer.echo("run: make -j2  (or make NAME, make -k; in the Makefile's folder)")


@app.command("ls")
def ls(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe TOML files.", show_default=False)],
    set_: SetOpt = None,
    build_dir: BuildDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List the builds recipe files define: name, the files each reads, swept values, build folder.

    A file that extends others reads them too; a file with a [sweep] defines one build per
    point (pick one in other commands with --only NAME).
    """
    from lorabuild.recipe.load import LoadedRecipe, load_builds  # lazy: per command
    from lorabuild.recipe.sweep import format_value  # lazy: per command

    root = _build_root(build_dir)
    found: list[LoadedRecipe] = []
    problems: list[Problem] = []
    for path in recipes:
        try:
            found += load_builds(path, set_ or [])
        except RecipeError as exc:
            problems += exc.problems
    if problems:
        raise RecipeError(problems)
    if as_json:
        listing = [
            {
                "name": b.recipe.name,
                "recipe": b.path.as_posix(),
                "sources": [p.as_posix() for p in b.sources or (b.path,)],
                "sweep": b.sweep_values,
                "build_dir": (root / b.recipe.name).as_posix(),
            }
            for b in found
        ]
        typer.echo(json.dumps(listing, indent=2, ensure_ascii=False))
        return
    rows = [
        (
            b.recipe.name,
            " < ".join(p.as_posix() for p in b.sources or (b.path,)),
            " ".join(f"{k}={format_value(v)}" for k, v in b.sweep_values.items()) or "-",
            (root / b.recipe.name).as_posix() + "/",
        )
        for b in found
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join([*(row[i].ljust(widths[i]) for i in range(3)), row[3]]))


@app.command()
def queue(
    recipes: Annotated[
        list[Path], typer.Argument(help="Recipe TOML files, in the order to train them.", show_default=False)
    ],
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--output", "-o", help="The folder for queue.sh and queue.ps1 [default: the build root]."
        ),
    ] = None,
    set_: SetOpt = None,
    build_dir: BuildDirOpt = None,
    strict: StrictOpt = False,
    only: OnlyOpt = None,
) -> None:
    """Compile and stage builds, and write queue.sh and queue.ps1 that train them in order.

    For a machine without lorabuild: copy the project there and run build/queue.sh (or
    queue.ps1). Each build's train.sh runs in turn; a failed build is reported and the next one
    starts; a table at the end lists each build's status, time and LoRA file.
    """
    from lorabuild import pipeline  # lazy: per command
    from lorabuild.batch import queue as runqueue  # lazy: per command
    from lorabuild.render.writer import write_files  # lazy: per command
    from lorabuild.stages.check import check_loaded, require_plan  # lazy: per command

    root = _build_root(build_dir)
    entries = runqueue.collect(recipes, root, set_ or [], only, keep_going=False)
    checks = [check_loaded(e.loaded, root) for e in entries if e.loaded is not None]
    problems: list[Problem] = []
    for checked in checks:
        try:
            require_plan(checked, strict=strict)
        except RecipeError as exc:
            problems += exc.problems
    if problems:
        raise RecipeError(problems)
    plans = []
    for checked in checks:
        _echo_problems(checked.warnings)
        typer.echo(f"== {checked.loaded.recipe.name}")
        pipeline.run(checked, say=typer.echo, until="prepare")
        plans.append(require_plan(checked))
    folder = output if output is not None else root
    command = ["lorabuild", "queue", *(p.as_posix() for p in recipes)]
    artefacts = runqueue.render_queue(runqueue.script_builds(plans, folder), command)
    for written in write_files(folder, artefacts):
        typer.echo(f"{written.action:>9}  {written.path.as_posix()}")
    typer.echo(f"queue of {len(plans)} build(s): run {(folder / 'queue.sh').as_posix()} (or queue.ps1)")


@app.command()
def report(
    recipe: RecipeArg,
    set_: SetOpt = None,
    only: OnlyOpt = None,
    build_dir: BuildDirOpt = None,
) -> None:
    """Write build/<name>/report.html: one self-contained page to open in a browser.

    Recipe summary, dataset (subsets, buckets, tag frequencies), loss plot, grid sheets, the saved
    files with sizes and hashes, the suggested epoch and the install command.
    """
    from lorabuild.render.meter import Meter  # lazy: per command
    from lorabuild.stages.report import write_report  # lazy: per command

    _, plan = _checked(recipe, set_, build_dir, only=only)
    meter = Meter()  # count, rate and ETA of the grid's pictures scored, on a terminal only
    with _locked(plan.build_dir):
        try:
            path = write_report(plan, plan.build_dir, progress=meter)
        finally:
            meter.close()
    typer.echo(f"wrote {path.as_posix()}")


@app.command()
def install(
    recipe: RecipeArg,
    epoch: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--epoch",
            min=1,
            help='The saved epoch to install (else install.epoch: a number, "last" or "suggested", the first of '
            "lorabuild pick's shortlist; default: the last).",
            show_default=False,
        ),
    ] = None,
    weight: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--weight",
            help="Preferred weight on the card and the preview's grid column (else install.weight).",
            show_default=False,
        ),
    ] = None,
    webui: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--webui",
            help="The AUTOMATIC1111 webui folder (containing models/Lora) or its Lora folder "
            "(else install.webui, else env LORABUILD_WEBUI).",
            show_default=False,
        ),
    ] = None,
    comfyui: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--comfyui",
            help="The ComfyUI folder (containing models/loras) or its loras folder "
            "(else install.comfyui, else env LORABUILD_COMFYUI).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace files that differ from what would be installed.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be written; write nothing.")
    ] = False,
    set_: SetOpt = None,
    only: OnlyOpt = None,
    build_dir: BuildDirOpt = None,
) -> None:
    """Copy a chosen epoch into the webui's models/Lora (or ComfyUI's models/loras) with its card.

    Writes NAME.safetensors, NAME.preview.png (the grid cell at the chosen epoch and weight) and
    NAME.json (the webui's card: activation text = the trigger, preferred weight, notes). A file
    that differs is never replaced without --force; an identical one is left alone.
    """
    from lorabuild.stages.install import describe, plan_install  # lazy: per command
    from lorabuild.stages.install import install as install_files  # lazy: per command

    checked, plan = _checked(recipe, set_, build_dir, only=only)
    # The build's lock: its LoRA files must not change while they are hashed and copied, and
    # the hashes are recorded in the build (.lorabuild/hashes.json).
    with _locked(plan.build_dir):
        planned = plan_install(
            plan,
            checked.loaded.recipe,
            display=checked.loaded.display,
            epoch=epoch,
            weight=weight,
            webui=webui,
            comfyui=comfyui,
        )
        for note in planned.notes:
            typer.echo(note, err=True)
        done = install_files(planned, force=force, dry_run=dry_run)
    for line in describe(done, dry_run):
        typer.echo(line)
    if planned.embedded:
        typer.echo(
            f"the copies' header holds {', '.join(planned.embedded)} (the build's own file is unchanged)"
        )
    where = f"epoch {planned.epoch} ({planned.source.rel}), weight {planned.weight:g}"
    if dry_run:
        typer.echo("card (NAME.json) would read:")
        typer.echo(json.dumps(planned.card, indent=4, ensure_ascii=False))
        typer.echo(f"dry run: nothing written; would install {plan.name} {where}")
    elif all(f.action == "identical" for f in done):
        typer.echo(f"{plan.name} {where} is already installed")
    else:
        typer.echo(f"installed {plan.name} {where}")


@app.command()
def pick(
    recipe: RecipeArg,
    set_: SetOpt = None,
    only: OnlyOpt = None,
    build_dir: BuildDirOpt = None,
) -> None:
    """Print a shortlist of epochs x weights from the grid's scores, with the reason for each.

    Scores every grid cell offline (memorisation: a copy of a training image; collapse: seeds that
    converge on one picture; effect: distance from the no-LoRA baseline; likeness: photoreal or
    anime faces against the training images', where their packages are installed; CLIP prompt match
    and aesthetic score with your own pick.clip_model) with the validation loss per epoch; says what
    ruled the others out. Thresholds: the recipe's [pick] table.
    """
    from lorabuild.render.meter import Meter  # lazy: per command
    from lorabuild.stages.pick import pick as pick_epochs  # lazy: per command

    _, plan = _checked(recipe, set_, build_dir, only=only)
    meter = Meter()  # count, rate and ETA of the pictures scored, on a terminal only
    with _locked(plan.build_dir):  # the scores' cache is written into the build
        try:
            _, lines = pick_epochs(plan, progress=meter)
        finally:
            meter.close()
    for line in lines:
        typer.echo(line)


@app.command()
def loss(
    recipe: RecipeArg,
    set_: SetOpt = None,
    only: OnlyOpt = None,
    build_dir: BuildDirOpt = None,
) -> None:
    """Print the loss per epoch from kohya's TensorBoard logs and draw build/<name>/loss.png.

    While another lorabuild works on the build (a training), the table is read from the live log
    and loss.png is left for a later `lorabuild loss`.
    """
    from lorabuild.build.state import BuildLocked  # lazy: per command
    from lorabuild.render.losslog import NoLossLogs, summarise  # lazy: per command

    _, plan = _checked(recipe, set_, build_dir, only=only)
    busy: str | None = None
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(_locked(plan.build_dir))  # to write loss.png
        except BuildLocked as exc:
            busy = exc.holder  # reading the logs is safe beside it; writing is not
        try:
            summary = summarise(plan.build_dir, title=f"{plan.name}: training loss", draw=busy is None)
        except NoLossLogs:
            if busy is None:
                raise
            raise NoLossLogs(
                f"no TensorBoard logs under {plan.layout.logs_dir.as_posix()} yet; the build is busy ({busy}): "
                "kohya writes them once training steps begin, run lorabuild loss again then"
            ) from None
    _echo_problems([Problem("", note, Severity.WARNING) for note in summary.notes])
    typer.echo(summary.table())
    plot = summary.plot
    if busy is not None:
        typer.echo(
            f"the build is busy ({busy}): loss.png is drawn when it is free; the table above is read "
            "from the live log"
        )
    else:
        typer.echo(f"wrote {plot.path.as_posix()}" if plot.path else f"no loss plot: {plot.reason}")


@app.command()
def grid(
    recipe: RecipeArg,
    set_: SetOpt = None,
    only: OnlyOpt = None,
    build_dir: BuildDirOpt = None,
    epochs: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--epochs", help="Epochs to compare, like 2,4,8 [default: evaluate.epochs].", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Render every cell again.")] = False,
) -> None:
    """Render the epoch x weight comparison grid with kohya's gen_img (one model load), then its sheets.

    Only cells whose inputs changed are rendered (build/<name>/grid/cells/); writes grid/grid.json
    and one labelled sheet per prompt and seed (grid/sheet_<id>.png). gen_img's output goes to
    build/<name>/logs/grid.log.
    """
    from lorabuild.build.markers import mark_done  # lazy: per command
    from lorabuild.stages.grid import parse_epochs, render_grid  # lazy: per command

    try:
        rows = parse_epochs(epochs) if epochs is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    checked, plan = _checked(recipe, set_, build_dir, only=only)
    with _locked(plan.build_dir):
        report = render_grid(plan, checked.loaded, epochs=rows, force=force, say=typer.echo, lock=False)
        mark_done(plan.build_dir, "grid")  # for make (lorabuild.build.markers)
    how = f"rendered {report.rendered}" if report.rendered else "rendered nothing (all up to date)"
    typer.echo(f"ok: {plan.name}: {report.cells} cell(s), {how}; {report.manifest.as_posix()}")


@app.command("import")
def import_(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="kohya config.toml / dataset.toml, a train script (.sh, .ps1, .bat) or a LoRA .safetensors; "
            "several make one recipe (a later one wins where they disagree).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--output", "-o", help="The recipe to write [NAME.toml in this folder]."),
    ] = None,
    diff: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--diff", help="Show where this recipe and the sources disagree; write nothing."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing recipe file.")] = False,
) -> None:
    """Turn kohya configs, training scripts or a LoRA file's metadata into a recipe.

    Prints what could not be carried over (options kohya does not know, secrets removed, what the
    source cannot hold). With --diff RECIPE, lists the keys where RECIPE and the sources disagree
    (exit status 1 when they do).
    """
    from lorabuild.importer.diff import diff as diff_recipe  # lazy: per command
    from lorabuild.importer.sources import import_sources  # lazy: per command
    from lorabuild.importer.write import write_recipe  # lazy: per command

    imported = import_sources(sources)
    if diff is not None:
        differences = diff_recipe(diff, imported)
        for difference in differences:
            typer.echo(difference.line())
        typer.echo(f"{len(differences)} difference(s) between {diff.as_posix()} and {imported.source}")
        raise typer.Exit(1 if differences else 0)
    path = output or Path(f"{imported.values['name']}.toml")
    if path.exists() and not force:
        raise RecipeError(
            [
                Problem(
                    "",
                    "exists: pass --force to overwrite it, or -o another file",
                    Severity.ERROR,
                    path.as_posix(),
                )
            ]
        )
    write_recipe(imported, path)
    for note in imported.notes:
        typer.echo(f"  {note.line()}")
    typer.echo(f"ok: wrote {path.as_posix()} from {imported.source} ({len(imported.notes)} note(s))")


class Terminated(BaseException):
    """lorabuild was asked to stop (SIGTERM, SIGHUP): raised in the main thread so that every
    ``finally`` runs (the stage records what it finished, worker processes are stopped, the build
    lock is released). Not an :class:`Exception`, so no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _stop_cleanly() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` while the command runs; a second signal
    ends the process at once (the default action). The trainer's process seam forwards them to
    kohya instead, while kohya runs (:mod:`lorabuild.kohya.runner`)."""

    def stop(signum: int, frame: Any) -> None:
        for each in _STOP_SIGNALS:
            signal.signal(each, signal.SIG_DFL)
        raise Terminated(signum)

    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        for signum in _STOP_SIGNALS:
            previous[signum] = signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _unwritable(exc: OSError) -> str | None:
    """The one-line message for an :class:`OSError` that only a write can raise (a full disk, a
    read-only file system) and no stage turned into a :class:`~lorabuild.render.writer.WriteError`."""
    from lorabuild.render.writer import NO_SPACE, write_error  # lazy: only after a failed write

    if exc.errno not in (*NO_SPACE, getattr(errno, "EROFS", None), getattr(errno, "EFBIG", None)):
        return None
    folder = Path(str(exc.filename)).parent if exc.filename else Path.cwd()
    return str(write_error(folder, exc))


def main() -> None:
    """Run the CLI, turning lorabuild's errors into messages and exit statuses.

    Typer handles usage errors itself (standalone mode); lorabuild's own errors pass through it
    and become ``file: key: message`` lines here, with no traceback. SIGTERM and SIGHUP stop
    the command cleanly with the shell's status for them (143, 129).
    """
    try:
        with _stop_cleanly():
            app()
    except RecipeError as exc:
        problems = exc.problems
        _echo_problems(problems)
        errors = sum(1 for p in problems if p.severity is Severity.ERROR)
        typer.echo(f"{errors} error(s), {len(problems) - errors} warning(s)", err=True)
        sys.exit(exc.exit_code)
    except LorabuildError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Terminated as exc:
        name = signal.Signals(exc.signum).name
        typer.echo(f"lorabuild stopped ({name}): what was finished is kept; run it again to go on", err=True)
        sys.exit(128 + exc.signum)
    except OSError as exc:
        message = _unwritable(exc)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
