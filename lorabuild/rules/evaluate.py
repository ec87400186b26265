"""Rules on ``[evaluate]``: the prompts kohya samples and the grid renders, and the grid's epochs.

:func:`prompt_problems` and :func:`epochs_not_saved` are also the grid's own checks
(:mod:`lorabuild.stages.grid`), so that ``check`` refuses what the grid would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Literal

from lorabuild.kohya.outputs import saved_epochs
from lorabuild.kohya.prompts import prompt_text_problem
from lorabuild.plan.evaluate import prompt_text
from lorabuild.plan.subsets import first_trigger
from lorabuild.probe.facts import Facts
from lorabuild.problems import Problem, error
from lorabuild.recipe.schema import Recipe
from lorabuild.rules.registry import rule

# --- evaluate ---------------------------------------------------------------------------------


@rule
def prompt_placeholders(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """{trigger} needs a trigger, and each prompt must reach kohya as written (:func:`prompt_problems`)."""
    yield from prompt_problems(recipe)


def prompt_problems(recipe: Recipe) -> Iterator[Problem]:
    """Why a prompt or the negative prompt would not reach kohya's sampler or gen_img as written.

    The text checked is the one kohya reads, ``{trigger}`` replaced: a trigger such as
    ``kazari --w 4096`` would turn ``"{trigger}, smile"`` into the prompt ``kazari`` and two options.
    """
    trigger = first_trigger(recipe)
    trigger_key = next(
        (f"dataset.subsets[{i}].trigger" for i, s in enumerate(recipe.dataset.subsets) if s.trigger), ""
    )
    for i, prompt in enumerate(recipe.evaluate.prompts):
        key = f"evaluate.prompts[{i}]"
        if "{trigger}" in prompt and not trigger:
            yield error(
                key, "uses {trigger} but no subset has a trigger: set a subset's trigger or write the word"
            )
            continue
        unknown = sorted(set(re.findall(r"\{[^{}]*\}", prompt)) - {"{trigger}"})
        if unknown:
            yield error(
                key,
                f"{', '.join(unknown)} {'is not a placeholder' if len(unknown) == 1 else 'are not placeholders'}: "
                "only {trigger} is replaced",
            )
            continue
        text = prompt_text(recipe, prompt)
        why = prompt_text_problem(text)
        if why is None:
            continue
        if "{trigger}" in prompt and prompt_text_problem(prompt.replace("{trigger}", "trigger")) is None:
            # The prompt is fine as written: the trigger put in its place breaks it.
            yield error(
                trigger_key,
                f"replaces {{trigger}} in {key}, and the prompt kohya would read, {text!r}, {why}",
            )
        else:
            shown = f" (with {{trigger}} replaced: {text!r})" if "{trigger}" in prompt else ""
            yield error(key, f"{why}{shown}")
    why = prompt_text_problem(recipe.evaluate.negative_prompt, negative=True)
    if why:
        yield error("evaluate.negative_prompt", why)


@rule
def grid_epochs_saved(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """``evaluate.epochs`` may list only saved epochs: the grid refuses the others, after training."""
    t = recipe.training
    problem = epochs_not_saved(saved_epochs(t.epochs, t.save_every_n_epochs), recipe.evaluate.epochs)
    if problem is not None:
        yield problem


def epochs_not_saved(
    saved: Sequence[int], wanted: Literal["all"] | Sequence[int], key: str = "evaluate.epochs"
) -> Problem | None:
    """The problem with ``wanted`` epochs that the training never saves, or None.

    Args:
        saved: The epochs the training saves (:func:`lorabuild.kohya.outputs.saved_epochs`).
        wanted: ``"all"`` or the epochs asked for.
        key: Where ``wanted`` came from (``evaluate.epochs``, or ``--epochs`` on the command line).
    """
    never = [] if wanted == "all" else sorted({e for e in wanted if e not in saved})
    if not never:
        return None
    return error(
        key,
        f"epoch(s) {', '.join(map(str, never))} are not saved by this training: it saves epochs "
        f"{_ranges(saved)} (training.epochs and training.save_every_n_epochs); "
        'list some of those, or use "all"',
    )


def _ranges(values: Sequence[int]) -> str:
    values = sorted(values)
    if len(values) > 6:
        return f"{', '.join(map(str, values[:3]))}, ..., {values[-1]}"
    return ", ".join(map(str, values))
