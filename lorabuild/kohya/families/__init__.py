"""The model families lorabuild trains, one module each, and their registry: the one list of them.

Each module (:mod:`~lorabuild.kohya.families.sd15`, :mod:`~lorabuild.kohya.families.sd2`,
:mod:`~lorabuild.kohya.families.sdxl`, :mod:`~lorabuild.kohya.families.flux`,
:mod:`~lorabuild.kohya.families.chroma`, :mod:`~lorabuild.kohya.families.sd3`,
:mod:`~lorabuild.kohya.families.anima`, :mod:`~lorabuild.kohya.families.hunyuan`,
:mod:`~lorabuild.kohya.families.lumina`) builds a
:class:`~lorabuild.kohya.families.base.Family`: its
training script, the networks it trains, how its model header is recognised, its kohya defaults,
its grid renderer, its webui card, the model files and tokenizers it needs, its defaults and
memory presets, and the rules only it has. Everything else asks the registry
(:func:`get`, :func:`detect`, :data:`ALL`) instead of comparing family names.

Adding a family: write its module, add its ``FAMILY`` to :data:`ALL`, add its name to
``recipe.schema.Family`` (a test holds the two equal; the schema sits below this package) and a
header of its model to ``tests/conftest.py``'s ``FAMILY_KEYS``; ``tests/test_families.py`` says what
else is missing (its scripts in the kohya option data, for one).

May import: the grid renderers (:mod:`lorabuild.kohya.genimg`, :mod:`lorabuild.kohya.fluxinfer`,
:mod:`lorabuild.kohya.animainfer`, :mod:`lorabuild.kohya.sd3infer`, :mod:`lorabuild.kohya.hunyuaninfer`,
:mod:`lorabuild.kohya.luminainfer`, :mod:`lorabuild.kohya.interactive`,
:mod:`lorabuild.kohya.gridrender`), :mod:`lorabuild.recipe` and the layers below it.
"""

from __future__ import annotations

from lorabuild.kohya.families import anima, chroma, flux, hunyuan, lumina, sd2, sd3, sd15, sdxl
from lorabuild.kohya.families.base import Default, Family, MemoryPreset, ModelFile, ModelHeader

ALL: tuple[Family, ...] = (
    sd15.FAMILY,
    sd2.FAMILY,
    sdxl.FAMILY,
    flux.FAMILY,
    chroma.FAMILY,
    sd3.FAMILY,
    anima.FAMILY,
    hunyuan.FAMILY,
    lumina.FAMILY,
)
"""Every family, oldest first: the order messages list them in."""

FALLBACK = sd15.FAMILY.name
"""The family a plan assumes when the recipe names none and the header tells none (the check
reports that as an error before anything is trained)."""


def names() -> tuple[str, ...]:
    """Every family's name, in :data:`ALL`'s order."""
    return tuple(f.name for f in ALL)


def get(name: str) -> Family:
    """The family called ``name``.

    Raises:
        KeyError: No family has that name.
    """
    for family in ALL:
        if family.name == name:
            return family
    raise KeyError(f"no model family {name!r}; known: {', '.join(names())}")


def detect(header: ModelHeader) -> Family | None:
    """The family whose model ``header`` is, or None.

    The newest family is asked first: a newer model may carry an older one's signs (an SDXL
    diffusers folder has SD1's 768-wide text encoder), not the other way round.
    """
    return next((f for f in reversed(ALL) if f.recognise(header)), None)


__all__ = [
    "ALL",
    "FALLBACK",
    "Default",
    "Family",
    "MemoryPreset",
    "ModelFile",
    "ModelHeader",
    "detect",
    "get",
    "names",
]
