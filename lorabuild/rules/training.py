"""Rules on the network, the optimizer and its schedule, and the training settings."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

from lorabuild.kohya import families
from lorabuild.plan.plan import (
    family_of,
)
from lorabuild.probe.facts import Facts, PathFacts
from lorabuild.problems import Problem, did_you_mean, error, warning
from lorabuild.recipe.schema import Recipe
from lorabuild.rules.registry import rule

# --- network ----------------------------------------------------------------------------------


@rule
def network_package(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """LyCORIS modules need lycoris-lora (kohya: ModuleNotFoundError after loading the model)."""
    module, _ = families.get(family_of(recipe, facts)).network_modules.get(recipe.network.module, ("", None))
    if module.startswith("lycoris") and facts.training_stack and not facts.packages.get("lycoris"):
        yield error(
            "network.module",
            f'"{recipe.network.module}" needs LyCORIS, which is not installed: pip install lycoris-lora',
        )


@rule
def dylora_shape(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """networks.dylora asserts rank % unit == 0 and conv_dim == dim."""
    n = recipe.network
    if n.module != "dylora":
        return
    unit = n.args.get("unit", 1)
    if isinstance(unit, int) and unit > 0 and n.dim % unit:
        yield error(
            "network.dim", f"must be a multiple of network.args.unit ({unit}) for dylora (got {n.dim})"
        )
    if n.conv_dim is not None and n.conv_dim != n.dim:
        yield error("network.conv_dim", f"must equal network.dim ({n.dim}) for dylora (got {n.conv_dim})")


@rule
def network_weights_exist(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya's ``network.load_weights`` opens ``network.weights`` only after loading the model."""
    path = recipe.network.weights
    if path is None:
        return
    kind = facts.paths.get(path, PathFacts("missing")).kind
    fix = "point network.weights at the LoRA file to start from, or remove it (kohya would stop after loading the model)"
    if kind == "missing":
        yield error("network.weights", f"file not found: {path}: {fix}")
    elif kind == "folder":
        yield error("network.weights", f"{path} is a folder, not a LoRA file: {fix}")


@rule
def learning_rates_for_trained_parts(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """A learning rate for a part that is not trained is silently unused by kohya."""
    n, o = recipe.network, recipe.optimizer
    if n.train == "unet" and o.text_encoder_lr is not None:
        yield error(
            "optimizer.text_encoder_lr",
            'is set but network.train = "unet" trains no text encoder: remove it or train "both"',
        )
    if n.train == "text_encoder" and o.unet_lr is not None:
        yield error(
            "optimizer.unet_lr",
            'is set but network.train = "text_encoder" trains no U-Net: remove it or train "both"',
        )


# --- optimizer and schedule -------------------------------------------------------------------

# kohya's built-in optimizer names (case-insensitive) and the package each needs (KOHYA.md 6.8).
OPTIMIZERS: dict[str, str | None] = {
    "adamw": None,
    "adamw8bit": "bitsandbytes",
    "sgdnesterov8bit": "bitsandbytes",
    "lion8bit": "bitsandbytes",
    "pagedadamw8bit": "bitsandbytes",
    "pagedlion8bit": "bitsandbytes",
    "pagedadamw": "bitsandbytes",
    "pagedadamw32bit": "bitsandbytes",
    "lion": "lion_pytorch",
    "sgdnesterov": None,
    "dadaptation": "dadaptation",
    "dadaptadampreprint": "dadaptation",
    "dadaptadagrad": "dadaptation",
    "dadaptadam": "dadaptation",
    "dadaptadan": "dadaptation",
    "dadaptadanip": "dadaptation",
    "dadaptlion": "dadaptation",
    "dadaptsgd": "dadaptation",
    "prodigy": "prodigyopt",
    "adafactor": "transformers",
    "radamschedulefree": "schedulefree",
    "adamwschedulefree": "schedulefree",
    "sgdschedulefree": "schedulefree",
}
_OPTIMIZER_SPELLING = [
    "AdamW", "AdamW8bit", "SGDNesterov8bit", "Lion8bit", "PagedAdamW8bit", "PagedLion8bit", "PagedAdamW",
    "PagedAdamW32bit", "Lion", "SGDNesterov", "DAdaptation", "DAdaptAdamPreprint", "DAdaptAdaGrad",
    "DAdaptAdam", "DAdaptAdan", "DAdaptAdanIP", "DAdaptLion", "DAdaptSGD", "Prodigy", "Adafactor",
    "RAdamScheduleFree", "AdamWScheduleFree", "SGDScheduleFree",
]  # fmt: skip
# torch.optim classes kohya also accepts by bare name (case-sensitive lookup in torch.optim).
_TORCH_OPTIM = {
    "Adam",
    "SGD",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "Adamax",
    "NAdam",
    "RAdam",
    "ASGD",
    "Rprop",
    "LBFGS",
}


@rule
def optimizer_known(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Unknown optimizer names or missing packages (kohya: error after loading the model)."""
    name = recipe.optimizer.type
    if "." in name:
        module = name.rsplit(".", 1)[0].split(".")[0]
        installed = facts.packages.get(module) if module in facts.packages else None
        if facts.training_stack and not (installed if installed is not None else _importable(module)):
            yield error("optimizer.type", f"module '{module}' of \"{name}\" is not installed")
        return
    if name.lower() not in OPTIMIZERS and name not in _TORCH_OPTIM:
        yield error(
            "optimizer.type",
            f'"{name}" is not an optimizer kohya knows{did_you_mean(name, _OPTIMIZER_SPELLING)}; '
            "use one of AdamW, AdamW8bit, Lion, Lion8bit, Prodigy, Adafactor, DAdaptAdam… or a module.Class path",
        )
        return
    package = OPTIMIZERS.get(name.lower())
    if package and facts.training_stack and not facts.packages.get(package):
        pip = {"lion_pytorch": "lion-pytorch"}.get(package, package)
        yield error(
            "optimizer.type", f'"{name}" needs the package {pip}, which is not installed: pip install {pip}'
        )


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@rule
def adaptive_optimizer_lr(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """D-Adaptation and Prodigy expect a learning rate around 1.0."""
    name = recipe.optimizer.type.lower()
    if (name.startswith("dadapt") or name == "prodigy") and recipe.optimizer.lr <= 0.1:
        yield warning(
            "optimizer.lr",
            f"{recipe.optimizer.type} adapts the step size itself: set optimizer.lr = 1.0 (got {recipe.optimizer.lr})",
        )


@rule
def scheduler_warmup(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya raises "constant does not require num_warmup_steps" after loading the model."""
    o = recipe.optimizer
    if o.scheduler in ("constant", "adafactor") and o.warmup_steps:
        yield error(
            "optimizer.warmup_steps",
            f'must be 0 with scheduler "{o.scheduler}" (kohya stops after loading the model): remove it'
            + (' or use scheduler "constant_with_warmup"' if o.scheduler == "constant" else ""),
        )


@rule
def scheduler_needs(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Schedulers that need a partner setting."""
    o = recipe.optimizer
    if o.scheduler == "adafactor" and o.type.lower() != "adafactor":
        yield error("optimizer.scheduler", '"adafactor" works only with optimizer.type = "Adafactor"')
    if o.scheduler == "cosine_with_min_lr" and o.min_lr_ratio is None:
        yield error("optimizer.min_lr_ratio", 'is required by scheduler "cosine_with_min_lr" (e.g. 0.1)')
    # kohya's lr_scheduler_args is a list of "key=value" strings.
    scheduler_args = recipe.kohya.get("lr_scheduler_args", [])
    items = scheduler_args if isinstance(scheduler_args, list) else [scheduler_args]
    if o.scheduler == "piecewise_constant" and not any("step_rules" in str(a) for a in items):
        yield error(
            "optimizer.scheduler", '"piecewise_constant" needs kohya.lr_scheduler_args with step_rules'
        )


# --- training ---------------------------------------------------------------------------------


@rule
def precision_pairs(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya asserts full_fp16/full_bf16 match mixed_precision (after loading the model)."""
    t = recipe.training
    if t.full_fp16 and t.mixed_precision != "fp16":
        yield error(
            "training.full_fp16",
            f'needs training.mixed_precision = "fp16" (got "{t.mixed_precision}"): change it or turn full_fp16 off',
        )
    if t.full_bf16 and t.mixed_precision != "bf16":
        yield error(
            "training.full_bf16",
            f'needs training.mixed_precision = "bf16" (got "{t.mixed_precision}"): change it or turn full_bf16 off',
        )


@rule
def xformers_package(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya: ImportError "No xformers" after loading the model."""
    if (
        recipe.training.attention == "xformers"
        and facts.training_stack
        and not facts.packages.get("xformers")
    ):
        yield error(
            "training.attention",
            '"xformers" is not installed here (it needs an NVIDIA GPU): pip install xformers, '
            'or use attention = "sdpa"',
        )


@rule
def save_interval(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """A save interval longer than the run saves only the last epoch."""
    t = recipe.training
    if t.save_every_n_epochs and t.save_every_n_epochs > t.epochs:
        yield warning(
            "training.save_every_n_epochs",
            f"is {t.save_every_n_epochs}, more than training.epochs ({t.epochs}): only the last epoch is saved",
        )


@rule
def memory_preset(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """``[launch] vram_gb`` picks kohya's documented settings; say when there are none for the card."""
    vram = recipe.launch.vram_gb
    if vram is None:
        return
    family = families.get(family_of(recipe, facts))
    if not family.memory:
        yield warning(
            "launch.vram_gb",
            f"lorabuild has no memory settings for {family.label} models, so it changes nothing: set "
            "training.gradient_checkpointing and dataset.batch_size yourself, or remove it",
        )
        return
    smallest = family.memory[-1].min_gb
    if vram < smallest:
        yield warning(
            "launch.vram_gb",
            f"kohya's docs give {family.label} settings down to {smallest} GB; {vram} GB may run out of memory "
            f"even with the {smallest} GB settings applied (try a smaller dataset.resolution)",
        )
