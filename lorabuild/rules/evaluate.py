"""Rules on ``[evaluate]``: the prompts kohya samples and the grid renders."""

from __future__ import annotations

import re
from collections.abc import Iterator

from lorabuild.plan.plan import (
    first_trigger,
    prompt_text,
    prompt_text_problem,
)
from lorabuild.probe.facts import Facts
from lorabuild.problems import Problem, error
from lorabuild.recipe.schema import Recipe
from lorabuild.rules.registry import rule

# --- evaluate ---------------------------------------------------------------------------------


@rule
def prompt_placeholders(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """{trigger} needs a trigger, and each prompt must reach kohya as written.

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
