"""Rules on the base model, the files kohya reads beside it (VAE, tokenizers), and the build's output name."""

from __future__ import annotations

from collections.abc import Iterator

from lorabuild.kohya import families
from lorabuild.plan.plan import (
    family_of,
)
from lorabuild.probe.facts import Facts, PathFacts
from lorabuild.probe.modelfile import UNTRAINED_LABELS
from lorabuild.problems import Problem, error, warning
from lorabuild.recipe.schema import Recipe
from lorabuild.rules.registry import rule

SHARED_KEYS = frozenset({"vae"})
"""``[model]`` keys that are some families' required model file (Anima's and HunyuanImage's VAE) and
the other families' optional one (the SD families' replacement VAE, kohya --vae; checked by vae_exists)."""

MISSING = PathFacts("missing")  # a path the facts do not hold (they hold every path the recipe sets)

# --- model -------------------------------------------------------------------------------------


def _label(family: str) -> str:
    """How messages name a family, trained or only recognised."""
    return UNTRAINED_LABELS.get(family) or families.get(family).label


def _a(label: str) -> str:
    """``label`` with its article, as it is read out (an SDXL, a FLUX.1)."""
    return ("an " if label.startswith(("SD", "A", "E", "I", "O", "U")) else "a ") + label


def _spoken(items: list[str], last: str) -> str:
    """``a, b and c`` (``last`` is the word before the last item)."""
    return f"{', '.join(items[:-1])} {last} {items[-1]}" if len(items) > 1 else "".join(items)


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
    if facts.model.component is not None:
        slot = next(
            (f.key for fam in families.ALL for f in fam.model_files if f.component == facts.model.component),
            None,
        )
        fix = f"put it in model.{slot} and " if slot else ""
        yield error(
            "model.base",
            f"{facts.model.path.name} is {facts.model.what}, not a base model: {fix}point model.base at the "
            "model file itself (for FLUX.1, flux1-dev.safetensors)",
        )
        return
    if detected == "lora":
        yield error("model.base", "this file is a LoRA, not a base model: point model.base at a checkpoint")
        return
    if detected in UNTRAINED_LABELS:
        trained = _spoken([f.label for f in families.ALL], "and")
        yield error(
            "model.base", f"this is {_a(_label(detected))} checkpoint; lorabuild trains {trained} LoRAs"
        )
        return
    if declared and detected and declared != detected:
        yield error(
            "model.family",
            f'is "{declared}" but {facts.model.path.name} is {_a(_label(detected))} checkpoint '
            f'(kohya would fail after minutes of loading): set model.family = "{detected}" (or remove it to '
            f"detect it), or choose {_a(_label(declared))} model",
        )
    elif not declared and not detected and facts.model.kind in ("file", "diffusers"):
        yield error(
            "model.family",
            f"cannot be detected ({facts.model.detail}): set model.family to {_spoken(list(families.names()), 'or')}",
        )


@rule
def model_files(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Each model file the family loads besides the base model is set, exists and is what its key says.

    kohya finds a missing, misplaced or wrong file only when it loads it, after the others: the
    FLUX trainer loads CLIP-L, T5-XXL and the autoencoder one by one, minutes apart.
    """
    family = families.get(family_of(recipe, facts))
    wanted = {f.key: f for f in family.model_files}
    if wanted and facts.model.kind == "diffusers":
        yield error(
            "model.base",
            f"is a diffusers folder; kohya's {family.label} trainer ({family.train_script}) takes the single-file "
            "model: point model.base at the .safetensors file (e.g. flux1-dev.safetensors)",
        )
    every = {f.key: f for fam in families.ALL for f in fam.model_files}
    for key, slot in every.items():
        path = getattr(recipe.model, key)
        if key not in wanted:
            # model.vae is also the SD families' optional replacement VAE, not only a required file.
            if path is not None and key not in SHARED_KEYS:
                yield error(
                    f"model.{key}", f"{family.label} models do not use {slot.label}: remove model.{key}"
                )
            continue
        slot = wanted[key]
        # kohya detects the base model's own copy by its prefix, prefers it to a file for some
        # slots, and at the pinned commit loads none of its weights (see ModelFile.bundled).
        if (
            slot.bundled is not None
            and key in facts.model.bundled
            and (path is None or slot.checkpoint_first)
        ):
            yield error(
                f"model.{key}",
                f"{facts.model.path.name} holds {slot.label} ({slot.bundled}* tensors), which kohya takes "
                f"{'instead of any file' if slot.checkpoint_first else 'when model.' + key + ' is not set'} but "
                "loads none of (it strips only the part before transformer., so every weight stays empty and "
                "training stops after the main model has loaded): use the release's file without text encoders "
                f"and set model.{key} to {slot.example}",
            )
            continue
        if path is None:
            yield error(
                f"model.{key}",
                f"{family.label} training needs {slot.label} (kohya --{key}): set model.{key} to its file, "
                f"e.g. {slot.example}",
            )
            continue
        info = facts.components.get(key)
        if info is None or info.kind == "missing":
            yield error(f"model.{key}", f"file not found: {path}")
        elif info.kind != "file":
            yield error(
                f"model.{key}", f"{path} is not a model file ({info.detail}): point it at {slot.example}"
            )
        elif info.component != slot.component and (info.component or info.family):
            # The family's own slots first: model.vae is another file for another family.
            slots = (*wanted.items(), *((f.key, f) for fam in families.ALL for f in fam.model_files))
            other = next((k for k, f in slots if f.component == info.component), None)
            swap = f" (did you mean it for model.{other}?)" if other and other != key else ""
            yield error(
                f"model.{key}",
                f"{path.name} is {info.what}, not {slot.label}{swap}: point model.{key} at {slot.label}'s file, "
                f"e.g. {slot.example}",
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
def family_rules(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """What only the model's family checks: a network it cannot train, its own rules (lorabuild.kohya.families)."""
    yield from families.get(family_of(recipe, facts)).problems(recipe)


@rule
def vae_exists(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya's ``load_vae`` takes a path it cannot find for a Hugging Face model id (after loading the model)."""
    path = recipe.model.vae
    if path is not None and facts.paths.get(path, MISSING).kind == "missing":
        yield error(
            "model.vae",
            f"file or folder not found: {path}: point model.vae at a VAE file (.safetensors, .ckpt, .pt) or "
            "a diffusers VAE folder, or remove it (kohya would take the path for a Hugging Face model id and "
            "stop after loading the base model)",
        )


@rule
def tokenizer_cache(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """A tokenizer missing from ``model.tokenizer_cache_dir`` is downloaded (offline: kohya stops).

    kohya creates the folder and saves what it downloads there, so a missing folder is only a
    warning: it fails on a machine without network access, which is what the setting is for.
    """
    path = recipe.model.tokenizer_cache_dir
    if path is None:
        return
    found = facts.paths.get(path, MISSING)
    key = "model.tokenizer_cache_dir"
    if found.kind == "file":
        yield error(
            key,
            f"{path} is a file, not a folder: kohya keeps each tokenizer in a folder of its own there: "
            "point it at a folder, or remove it",
        )
        return
    # With --tokenizer_cache_dir each tokenizer is read from, or downloaded and saved to,
    # <dir>/<id with "/" as "_"> (library/strategy_base.py TokenizeStrategy._load_tokenizer), or for
    # Lumina 2 the hub cache's <dir>/models--ORG--NAME (library/strategy_lumina.py).
    family = families.get(family_of(recipe, facts))
    layout = family.tokenizer_cache
    absent = [i for i in family.tokenizers if layout.folder(i) not in found.folders]
    if not absent:
        return
    folders = [layout.folder(i) for i in absent]
    download = (
        f"kohya downloads the tokenizer{'s' if len(absent) > 1 else ''} ({', '.join(absent)}) from Hugging "
        f"Face and saves it there, which fails without network access{layout.note}: run it once online, or copy"
    )
    # Told to stay offline, kohya cannot download: the run would stop after the model loads.
    offline = recipe.launch.env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    report = error if offline else warning
    if offline:
        download = download.replace(
            "which fails without network access", "which launch.env.HF_HUB_OFFLINE forbids"
        )
    if found.kind == "missing":
        yield report(
            key, f"{path} does not exist yet: {download} a folder holding {' and '.join(folders)} there"
        )
    else:
        what = "that folder" if len(absent) == 1 else "those folders"
        yield report(key, f"{path} has no {' or '.join(folders)} yet: {download} {what} there")


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
