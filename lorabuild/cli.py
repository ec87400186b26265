"""The ``lorabuild`` command line: thin typed commands over :mod:`lorabuild.pipeline`.

Heavy modules (torch, diffusers) are never imported here, so ``lorabuild --help`` and
``lorabuild check`` stay fast. Errors the user can fix are printed as ``file: key: message``
lines with exit status 2 and no traceback (:func:`main`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from lorabuild import __version__
from lorabuild.problems import LorabuildError, Problem, RecipeError, Severity, format_problem

if TYPE_CHECKING:
    from lorabuild.pipeline import Checked
    from lorabuild.plan import Plan

app = typer.Typer(
    name="lorabuild",
    help="Build Stable Diffusion LoRAs with kohya sd-scripts from one declarative recipe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


def _build_root(option: Path | None) -> Path:
    from lorabuild.settings import build_root

    return option if option is not None else build_root()


def _checked(
    recipe: Path, overrides: list[str] | None, build_dir: Path | None, strict: bool = False
) -> tuple[Checked, Plan]:
    """Check the recipe, print its warnings and return the check with its plan; raises with every problem."""
    from lorabuild import pipeline

    checked = pipeline.check(recipe, overrides or [], _build_root(build_dir))
    plan = pipeline.require_plan(checked, strict=strict)
    _echo_problems(checked.warnings)
    return checked, plan


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
) -> None:
    """Check a recipe and its files in under a second, then show what kohya will train."""
    from lorabuild import pipeline
    from lorabuild.summary import plan_summary

    checked = pipeline.check(recipe, set_ or [], _build_root(build_dir))
    if checked.plan is not None:
        typer.echo(plan_summary(checked.plan, verbose=verbose))
    pipeline.require_plan(checked, strict=strict)
    _echo_problems(checked.warnings)
    typer.echo(
        f"ok: {recipe.as_posix()}" + (f" ({len(checked.warnings)} warning(s))" if checked.warnings else "")
    )


@app.command("compile")
def compile_(
    recipe: RecipeArg,
    set_: SetOpt = None,
    build_dir: BuildDirOpt = None,
    strict: StrictOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be written.")] = False,
) -> None:
    """Write build/<name>/: dataset.toml, config.toml, sample prompts, train.sh, train.ps1, plan.json."""
    from lorabuild import pipeline

    _, plan = _checked(recipe, set_, build_dir, strict=strict)
    for written in pipeline.compile_build(plan, dry_run=dry_run):
        typer.echo(f"{written.action:>9}  {written.path.as_posix()}")


@app.command()
def prepare(
    recipe: RecipeArg,
    set_: SetOpt = None,
    build_dir: BuildDirOpt = None,
    strict: StrictOpt = False,
) -> None:
    """Stage the dataset (images and rule-edited captions) into build/<name>/dataset/."""
    from lorabuild import pipeline

    _, plan = _checked(recipe, set_, build_dir, strict=strict)
    pipeline.compile_build(plan)
    report = pipeline.prepare(plan)
    _echo_problems(list(report.problems))
    typer.echo(
        f"staged {plan.build_dir.as_posix()}/dataset: {report.linked} linked, {report.copied} copied, "
        f"{report.converted} converted, {report.unchanged} unchanged, {report.captions_written} captions "
        f"written, {report.removed} removed; tags.csv {report.tags}"
    )


@app.command()
def tags(
    recipe: RecipeArg,
    set_: SetOpt = None,
    build_dir: BuildDirOpt = None,
) -> None:
    """Print each subset's tag frequencies before and after the caption rules (what to remove or fix)."""
    from lorabuild.tags import tags_text

    _, plan = _checked(recipe, set_, build_dir)
    typer.echo(tags_text(plan))


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
    build_dir: BuildDirOpt = None,
    strict: StrictOpt = False,
    fresh: FreshOpt = False,
) -> None:
    """Compile and stage the build when stale, then train it with kohya (resuming a stopped run).

    Shows kohya's output with a progress line (epoch, step, loss, ETA) and tees it to
    build/<name>/logs/train.log. Fails (exit 1) unless every expected file was saved; Ctrl-C
    stops kohya cleanly (exit 130).
    """
    from lorabuild import pipeline

    checked, plan = _checked(recipe, set_, build_dir, strict=strict)
    pipeline.run(checked, force_train=True, fresh=fresh, say=typer.echo)
    typer.echo(f"trained {_outputs_line(plan.name, plan.outputs)}")


@app.command()
def run(
    recipe: RecipeArg,
    set_: SetOpt = None,
    build_dir: BuildDirOpt = None,
    strict: StrictOpt = False,
) -> None:
    """Bring the build up to date: compile, prepare and train, each only when its inputs changed.

    Editing only [evaluate] retrains nothing; with nothing changed this finishes in about a
    second. A stopped training resumes from its last saved state.
    """
    import time

    from lorabuild import pipeline

    start = time.perf_counter()
    checked, plan = _checked(recipe, set_, build_dir, strict=strict)
    report = pipeline.run(checked, say=typer.echo)
    took = time.perf_counter() - start
    if any(s.ran for s in report.stages):
        typer.echo(f"ok: {_outputs_line(plan.name, plan.outputs)} ({took:.1f} s)")
    else:
        typer.echo(f"ok: {plan.name} is up to date ({took:.2f} s)")


@app.command()
def doctor() -> None:
    """Check this machine for training, with a fix for each problem found.

    Looks at Python, torch and CUDA, xformers, bitsandbytes, accelerate and its config, kohya's
    packages and the kohya checkout's commit. Exit status 1 when something would stop training.
    """
    from lorabuild.doctor import findings, format_findings, probe, train_pins
    from lorabuild.settings import sd_scripts_dir

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
    from lorabuild.doctor import setup_sd_scripts
    from lorabuild.settings import sd_scripts_dir

    typer.echo(setup_sd_scripts(sd_scripts, sd_scripts_dir(), force=force))


@app.command()
def demo(
    build_dir: Annotated[Path, typer.Option("--build-dir", help="Where the demo builds.")] = Path(
        "build/demo"
    ),
) -> None:
    """Train the tutorial's recipe end to end on a CPU with a generated model and dataset (offline).

    It shows that the pipeline works, not image quality: the model's weights are random.
    """
    from lorabuild import pipeline
    from lorabuild.demo import DEMO_RECIPE, prepare_demo

    typer.echo(
        "lorabuild demo: trains recipes/kazari.toml on a random-weight SD1.5-shaped model (CPU, 64 px)."
    )
    typer.echo("It shows the pipeline, not image quality. First run builds the test model (~1 min, 3.5 GB).")
    overrides = prepare_demo(build_dir)
    checked = pipeline.check(DEMO_RECIPE, overrides, build_dir)
    plan = pipeline.require_plan(checked)
    from lorabuild.summary import plan_summary

    typer.echo(plan_summary(plan))
    pipeline.compile_build(plan)
    pipeline.prepare(plan)
    pipeline.train(plan)
    typer.echo(f"demo done, in {plan.build_dir.as_posix()}/: " + ", ".join(plan.outputs))


@app.command()
def schema() -> None:
    """Print the recipe's JSON Schema (for editor completion and validation)."""
    from lorabuild.schema import Recipe

    typer.echo(json.dumps(Recipe.model_json_schema(), indent=2, ensure_ascii=False))


@app.command()
def version() -> None:
    """Print lorabuild's version and the kohya commit it drives."""
    from lorabuild import KOHYA_COMMIT

    typer.echo(f"lorabuild {__version__} (kohya sd-scripts {KOHYA_COMMIT})")


def main() -> None:
    """Run the CLI, turning lorabuild's errors into messages and exit statuses.

    Typer handles usage errors itself (standalone mode); lorabuild's own errors pass through it
    and become ``file: key: message`` lines here, with no traceback.
    """
    try:
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


if __name__ == "__main__":
    main()
