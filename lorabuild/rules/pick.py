"""Rules on ``[pick]``: the user's own scoring weights (a CLIP folder, an aesthetic head)."""

from __future__ import annotations

from collections.abc import Iterator

from lorabuild.probe.clipfolder import AestheticHead, ClipFolder
from lorabuild.probe.facts import Facts
from lorabuild.problems import Problem, error
from lorabuild.recipe.schema import Recipe
from lorabuild.rules.registry import rule


@rule
def scoring_weights(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """A CLIP folder without its tokenizer, or a head that takes another width than the CLIP gives,
    would stop ``lorabuild pick`` and the report after kohya's Python had loaded torch; nothing is
    downloaded in their place."""
    pick = recipe.pick
    clip, head = facts.clip_model, facts.aesthetic_model
    if pick.clip_model is not None and isinstance(clip, str):
        yield error("pick.clip_model", f"{pick.clip_model}: {clip}")
    if pick.aesthetic_model is None:
        return
    if isinstance(head, str):
        yield error("pick.aesthetic_model", f"{pick.aesthetic_model}: {head}")
    elif pick.clip_model is None:
        yield error(
            "pick.aesthetic_model",
            f"{pick.aesthetic_model}: scores CLIP image embeddings, and pick.clip_model names no CLIP "
            "folder: set pick.clip_model to the CLIP the head was trained on (ViT-L/14 for LAION's heads)",
        )
    elif (
        isinstance(head, AestheticHead)
        and isinstance(clip, ClipFolder)
        and head.input_width != clip.embed_dim
    ):
        yield error(
            "pick.aesthetic_model",
            f"{pick.aesthetic_model}: takes {head.input_width}-number embeddings, but pick.clip_model's CLIP "
            f"({clip.folder}) gives {clip.embed_dim}: use the head trained on that CLIP, or the CLIP the head "
            "was trained on (768: ViT-L/14)",
        )


@rule
def scoring_packages(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """The CLIP folder is loaded by lorabuild/kohya/clipscore.py in kohya's Python, with transformers."""
    if recipe.pick.clip_model is not None and facts.training_stack and not facts.packages.get("transformers"):
        yield error(
            "pick.clip_model",
            "the CLIP folder is loaded with transformers, which is not installed: pip install -e '.[train]'",
        )
