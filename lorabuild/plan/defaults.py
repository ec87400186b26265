"""The family's defaults and memory preset, applied to the keys a recipe leaves out.

kohya's argparse defaults are wrong for some families (FLUX's guidance 3.5, its sigma timestep
sampling), and a GPU's size decides half a dozen memory settings that kohya's docs give in a
table. :func:`apply_defaults` writes both into the recipe, for the keys the recipe (with its bases,
sweep and ``--set``) does not set, and says what it applied and why: ``lorabuild check`` shows the
list. A key the recipe sets is never changed; rules then judge the recipe as it will be trained.
"""

from __future__ import annotations

from dataclasses import dataclass

from lorabuild.kohya.families import Default, Family
from lorabuild.recipe.schema import KohyaValue, Recipe


@dataclass(frozen=True)
class Applied:
    """One value given to a key the recipe left out.

    Attributes:
        key: The dotted recipe key.
        value: The value.
        why: Why this value.
        source: Who chose it: the family (``FLUX.1 default``) or ``launch.vram_gb = 12``.
    """

    key: str
    value: KohyaValue
    why: str
    source: str


@dataclass(frozen=True)
class Resolved:
    """A recipe with its family's defaults applied.

    Attributes:
        recipe: The recipe as it will be trained.
        applied: What was applied, in order.
        skipped: Preset values left out, each with the reason (``key: why``).
        preset: The memory preset's source line, or None when none applies.
    """

    recipe: Recipe
    applied: tuple[Applied, ...] = ()
    skipped: tuple[str, ...] = ()
    preset: str | None = None


def apply_defaults(recipe: Recipe, family: Family) -> Resolved:
    """``recipe`` with ``family``'s defaults and, for ``[launch] vram_gb``, its memory preset applied."""
    applied: list[Applied] = []
    skipped: list[str] = []

    def give(default: Default, source: str) -> None:
        nonlocal recipe
        why_not = default.unless(recipe) if default.unless is not None else None
        if why_not:
            skipped.append(f"{default.key}: {why_not}")
            return
        changed = _with(recipe, default.key, default.value)
        if changed is not None:
            recipe = changed
            applied.append(Applied(default.key, default.value, default.why, source))

    for default in family.defaults:
        give(default, f"{family.label} default")
    vram = recipe.launch.vram_gb
    # The largest card's settings the GPU has room for; below the smallest, the smallest (the
    # check warns that kohya's docs give no figures that low).
    fits = [p for p in family.memory if vram is not None and vram >= p.min_gb]
    preset = fits[0] if fits else (family.memory[-1] if vram is not None and family.memory else None)
    if preset is not None:
        for default in preset.settings:
            give(default, f"launch.vram_gb = {vram}")
    return Resolved(recipe, tuple(applied), tuple(skipped), preset.source if preset else None)


def _with(recipe: Recipe, key: str, value: KohyaValue) -> Recipe | None:
    """``recipe`` with ``key`` (``table.field``) set to ``value``; None when the recipe sets it already."""
    table_name, field = key.split(".")
    table = getattr(recipe, table_name)
    if field in table.model_fields_set or getattr(table, field) == value:
        return None
    return recipe.model_copy(update={table_name: table.model_copy(update={field: value})})
