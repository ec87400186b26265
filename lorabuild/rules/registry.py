"""The rule registry: :func:`rule` registers a check, :func:`run_rules` runs every one in order."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lorabuild.probe.facts import Facts
from lorabuild.problems import Problem
from lorabuild.recipe.schema import Recipe

Rule = Callable[[Recipe, Facts], Iterable[Problem]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    """Register a rule."""
    RULES.append(fn)
    return fn


def run_rules(recipe: Recipe, facts: Facts) -> list[Problem]:
    """Every problem every rule finds, in rule order."""
    return [p for r in RULES for p in r(recipe, facts)]


def _list(items: Iterable[object], limit: int = 5) -> str:
    texts = [str(i) for i in items]
    shown = ", ".join(texts[:limit])
    return shown + (f" and {len(texts) - limit} more" if len(texts) > limit else "")
