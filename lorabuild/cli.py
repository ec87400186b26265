"""The ``lorabuild`` command line: thin typed commands over :mod:`lorabuild.pipeline`.

Heavy modules (torch, diffusers) are never imported here, so ``lorabuild --help`` and
``lorabuild check`` stay fast. Errors the user can fix are printed as ``file: key: message``
lines with exit status 2 and no traceback (:func:`main`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lorabuild import __version__
from lorabuild.problems import LorabuildError, Problem, RecipeError, Severity, format_problem

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

    checked = pipeline.check(recipe, set_ or [], _build_root(build_dir))
    plan = pipeline.require_plan(checked, strict=strict)
    _echo_problems(checked.warnings)
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

    checked = pipeline.check(recipe, set_ or [], _build_root(build_dir))
    plan = pipeline.require_plan(checked, strict=strict)
    _echo_problems(checked.warnings)
    pipeline.compile_build(plan)
    report = pipeline.prepare(plan)
    typer.echo(
        f"staged {plan.build_dir.as_posix()}/dataset: {report.linked} linked, {report.copied} copied, "
        f"{report.unchanged} unchanged, {report.captions_written} captions written, {report.removed} removed"
    )


@app.command()
def train(
    recipe: RecipeArg,
    set_: SetOpt = None,
    build_dir: BuildDirOpt = None,
    strict: StrictOpt = False,
) -> None:
    """Check, compile and stage the build, then train it with kohya."""
    from lorabuild import pipeline

    checked = pipeline.check(recipe, set_ or [], _build_root(build_dir))
    plan = pipeline.require_plan(checked, strict=strict)
    _echo_problems(checked.warnings)
    pipeline.compile_build(plan)
    pipeline.prepare(plan)
    pipeline.train(plan)
    typer.echo(f"trained {plan.name}: " + ", ".join(plan.outputs))


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
    typer.echo(f"demo done: {plan.build_dir.as_posix()}/" + ", ".join(plan.outputs))


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
