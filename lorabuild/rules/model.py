"""Rules on the base model and the build's output name."""

from __future__ import annotations

from collections.abc import Iterator

from lorabuild.plan.plan import (
    family_of,
)
from lorabuild.probe.facts import Facts
from lorabuild.problems import Problem, error, warning
from lorabuild.recipe.schema import Recipe
from lorabuild.rules.registry import rule

# --- model -------------------------------------------------------------------------------------

_FAMILY_NAMES = {"sd15": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL", "flux": "FLUX", "sd3": "SD3"}


@rule
def model_exists(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """The base model must exist and be a model (kohya: OSError after start-up)."""
    info = facts.model
    if info.kind == "missing":
        yield error("model.base", f"file or folder not found: {info.path}")
    elif info.kind == "unknown":
        yield error(
            "model.base",
            f"{info.path} is not a model ({info.detail}): point model.base at a .safetensors or .ckpt checkpoint "
            "or a diffusers folder",
        )


@rule
def model_family(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """The checkpoint's family must match the trainer (kohya: state_dict mismatch after loading)."""
    detected, declared = facts.model.family, recipe.model.family
    if detected == "lora":
        yield error("model.base", "this file is a LoRA, not a base model: point model.base at a checkpoint")
        return
    if detected in ("flux", "sd3"):
        yield error(
            "model.base",
            f"this is a {_FAMILY_NAMES[detected]} checkpoint; lorabuild trains SD1.x, SD2.x and SDXL LoRAs",
        )
        return
    if declared and detected and declared != detected:
        yield error(
            "model.family",
            f'is "{declared}" but {facts.model.path.name} is an {_FAMILY_NAMES[detected]} checkpoint '
            f'(kohya would fail after minutes of loading): set model.family = "{detected}" (or remove it to '
            f"detect it), or choose an {_FAMILY_NAMES[declared]} model",
        )
    elif not declared and not detected and facts.model.kind in ("file", "diffusers"):
        yield error(
            "model.family",
            f"cannot be detected ({facts.model.detail}): set model.family to sd15, sd2 or sdxl",
        )


@rule
def v_prediction(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """A v-prediction model trained without v_parameterization learns garbage silently."""
    if facts.model.v_prediction and not recipe.model.v_parameterization:
        yield warning(
            "model.v_parameterization",
            "the model's scheduler predicts v: set model.v_parameterization = true",
        )


@rule
def clip_skip_sdxl(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya ignores clip_skip for SDXL with only a warning."""
    if family_of(recipe, facts) == "sdxl" and recipe.model.clip_skip is not None:
        yield error(
            "model.clip_skip",
            "SDXL models ignore clip_skip (kohya only warns, so the setting would silently do nothing): remove it",
        )


@rule
def v2_clip_skip(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya: "v2 with clip_skip will be unexpected"."""
    if family_of(recipe, facts) == "sd2" and recipe.model.clip_skip and recipe.model.clip_skip > 1:
        yield warning(
            "model.clip_skip",
            "SD2 models are not trained with clip_skip (kohya: unexpected results): set model.clip_skip = 1 or remove it",
        )


@rule
def other_builds(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Two recipes with one output name would overwrite each other's files."""
    owner = facts.other_builds.get(recipe.name)
    if owner is not None:
        yield error(
            "name",
            f'"{recipe.name}" is already the output name of another recipe ({owner}); building this one '
            "would overwrite its files: choose another name",
        )
