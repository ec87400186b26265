"""The check: validate the recipe, probe its files and run every rule; plan when nothing is wrong.

:func:`check` (a recipe file) and :func:`check_loaded` (a loaded build) are the verb;
:func:`require_plan` turns a failed check into the :class:`~lorabuild.problems.RecipeError` that
carries every problem. Only what checking needs is imported here: ``lorabuild check`` loads no
other stage, nor the build folder's, writer's or process modules (``tests/test_layout.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lorabuild.plan.plan import Plan, build_plan, resolve
from lorabuild.plan.subsets import plan_subsets
from lorabuild.probe.facts import Facts, gather
from lorabuild.problems import Problem, RecipeError, Severity, errors_of
from lorabuild.recipe.load import LoadedRecipe, load_recipe
from lorabuild.rules import run_rules


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


def check(recipe_file: Path, overrides: Sequence[str], build_root: Path, only: str | None = None) -> Checked:
    """Validate the recipe, probe its files and run every rule; plan when nothing is wrong.

    ``only`` picks one build of a file whose ``[sweep]`` expands to several (``--only NAME``).

    Raises:
        RecipeError: When the recipe itself does not validate (nothing else can be checked).
    """
    return check_loaded(load_recipe(recipe_file, overrides, only), build_root)


def check_loaded(loaded: LoadedRecipe, build_root: Path) -> Checked:
    """Probe a loaded build's files and run every rule; plan when nothing is wrong."""
    facts = gather(loaded.recipe, loaded.path, build_root)
    recipe = resolve(loaded.recipe, facts).recipe  # the rules judge what will be trained
    subsets = plan_subsets(recipe, facts)  # once, for the rules and the plan
    problems = tuple(p.at(loaded.file_of(p.key)) for p in run_rules(recipe, facts, subsets))
    plan = None if errors_of(problems) else build_plan(loaded, facts, build_root, subsets)
    return Checked(loaded, facts, problems, plan)


def require_plan(checked: Checked, strict: bool = False) -> Plan:
    """The plan of a clean check; raises with every problem when an error (or, strict, a warning) fails it."""
    failing = [p for p in checked.problems if strict or p.severity is Severity.ERROR]
    if failing or checked.plan is None:
        raise RecipeError(list(checked.problems))
    return checked.plan
