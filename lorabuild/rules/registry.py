"""The rule registry: :func:`rule` registers a check, :func:`run_rules` runs every one in order."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from lorabuild.plan.subsets import Subsets, plan_subsets
from lorabuild.probe.facts import Facts
from lorabuild.problems import Problem
from lorabuild.recipe.schema import Recipe

Rule = Callable[[Recipe, Facts], Iterable[Problem]]
SubsetRule = Callable[[Recipe, Facts, Subsets], Iterable[Problem]]
"""A rule that also reads the planned subsets (staged captions, sizes, buckets)."""
RULES: list[SubsetRule] = []
"""Every rule in order, each called with the subsets (a :class:`Rule` is wrapped to ignore them)."""


def rule(fn: Rule) -> Rule:
    """Register a rule."""

    @functools.wraps(fn)
    def registered(recipe: Recipe, facts: Facts, subsets: Subsets) -> Iterable[Problem]:
        return fn(recipe, facts)

    RULES.append(registered)
    return fn


def subset_rule(fn: SubsetRule) -> SubsetRule:
    """Register a rule that reads the planned subsets."""
    RULES.append(fn)
    return fn


def run_rules(recipe: Recipe, facts: Facts, subsets: Subsets | None = None) -> list[Problem]:
    """Every problem every rule finds, in rule order.

    Args:
        recipe: The validated recipe.
        facts: Its probed facts.
        subsets: :func:`~lorabuild.plan.subsets.plan_subsets` of both, when the caller has them
            (the check plans them once for the rules and the plan); planned here otherwise.
    """
    planned = plan_subsets(recipe, facts) if subsets is None else subsets
    return [p for r in RULES for p in r(recipe, facts, planned)]


def _list(items: Iterable[object], limit: int = 5) -> str:
    texts = [str(i) for i in items]
    shown = ", ".join(texts[:limit])
    return shown + (f" and {len(texts) - limit} more" if len(texts) > limit else "")
