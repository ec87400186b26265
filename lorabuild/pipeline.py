"""The build pipeline, its stages in one place.

recipe -> check (schema, facts, rules) -> plan -> render -> write -> stage dataset
(-> train -> collect -> grid -> install, in later stages).

Each function here is one stage's public verb; the CLI calls them and prints what they return.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lorabuild.facts import Facts, gather
from lorabuild.plan import Plan, build_plan
from lorabuild.problems import LorabuildError, Problem, RecipeError, Severity, errors_of
from lorabuild.recipe import LoadedRecipe, load_recipe
from lorabuild.rules import run_rules
from lorabuild.settings import sd_scripts_dir

if TYPE_CHECKING:
    from lorabuild.runner import RunResult
    from lorabuild.stage import StageReport
    from lorabuild.writer import Written

# Stages after the check import what they need when they run, so that `lorabuild check` loads
# only the check's modules (jinja2 and the process seam are not needed to check a recipe).


@dataclass(frozen=True)
class Checked:
    """A recipe that passed (or failed) the pre-flight check.

    Attributes:
        loaded: The validated recipe.
        facts: What was probed.
        problems: Every error and warning, attributed to files.
        plan: The build plan, when there were no errors.
    """

    loaded: LoadedRecipe
    facts: Facts
    problems: tuple[Problem, ...]
    plan: Plan | None

    @property
    def warnings(self) -> list[Problem]:
        """The warnings."""
        return [p for p in self.problems if p.severity is Severity.WARNING]


def check(recipe_file: Path, overrides: Sequence[str], build_root: Path) -> Checked:
    """Validate the recipe, probe its files and run every rule; plan when nothing is wrong.

    Raises:
        RecipeError: When the recipe itself does not validate (nothing else can be checked).
    """
    loaded = load_recipe(recipe_file, overrides)
    facts = gather(loaded.recipe, recipe_file, build_root)
    problems = tuple(p.at(loaded.display) for p in run_rules(loaded.recipe, facts))
    plan = None if errors_of(problems) else build_plan(loaded, facts, build_root)
    return Checked(loaded, facts, problems, plan)


def require_plan(checked: Checked, strict: bool = False) -> Plan:
    """The plan of a clean check; raises with every problem when an error (or, strict, a warning) fails it."""
    failing = [p for p in checked.problems if strict or p.severity is Severity.ERROR]
    if failing or checked.plan is None:
        raise RecipeError(list(checked.problems))
    return checked.plan


def compile_build(plan: Plan, dry_run: bool = False) -> list[Written]:
    """Write the build folder's artefacts (only those whose bytes changed)."""
    from lorabuild.render import render
    from lorabuild.writer import write_files

    return write_files(plan.build_dir, render(plan, sd_scripts_dir()), dry_run=dry_run)


def prepare(plan: Plan) -> StageReport:
    """Stage the dataset into the build folder."""
    from lorabuild.stage import stage

    return stage(plan)


class TrainingError(LorabuildError):
    """kohya did not produce what the plan expects."""


def train(plan: Plan, on_line: Callable[[str], None] | None = None) -> RunResult:
    """Run kohya for a compiled and staged build; fail unless every expected file exists.

    kohya's exit status alone is not trusted: it exits 0 after "No data found".
    """
    from lorabuild.runner import resolve_argv, run

    sd_scripts = sd_scripts_dir()
    argv = resolve_argv(plan.launch, sd_scripts)
    # kohya records `git rev-parse HEAD` run inside its folder in every LoRA's metadata; where that
    # folder is not a git checkout of its own, git would walk up and report lorabuild's commit.
    env = {**dict(plan.launch.env), "GIT_CEILING_DIRECTORIES": str(sd_scripts.resolve().parent)}
    result = run(argv, plan.build_dir, plan.build_dir / "logs" / "train.log", env, on_line)
    log = result.log.as_posix()
    if result.interrupted:
        raise TrainingError(f"training was interrupted; the log is in {log}")
    if result.returncode != 0:
        raise TrainingError(f"kohya stopped with exit status {result.returncode}; see {log}")
    missing = [f for f in plan.outputs if not (plan.build_dir / f).exists()]
    if missing:
        raise TrainingError(f"kohya exited without saving {', '.join(missing)}; see {log}")
    return result
