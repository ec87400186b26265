"""Rules on ``[launch]``: DeepSpeed, the values the launch scripts carry, multi-GPU on Windows."""

from __future__ import annotations

from collections.abc import Iterator

from lorabuild.kohya import families
from lorabuild.kohya.launch import script_value_errors
from lorabuild.plan.plan import (
    family_of,
    launch_spec,
)
from lorabuild.probe.facts import Facts
from lorabuild.problems import Problem, error, warning
from lorabuild.recipe.schema import Recipe
from lorabuild.rules.registry import rule

# --- launch ------------------------------------------------------------------------------------


@rule
def deepspeed_package(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya's ``--deepspeed`` imports deepspeed at start-up (kohya: "deepspeed is not installed", exit 1)."""
    if recipe.launch.deepspeed is not None and facts.training_stack and not facts.packages.get("deepspeed"):
        yield error(
            "launch.deepspeed",
            "DeepSpeed is not installed here: DS_BUILD_OPS=0 pip install deepspeed "
            "(or remove [launch.deepspeed])",
        )


@rule
def deepspeed_processes(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya's DeepSpeed reads WORLD_SIZE, which accelerate sets only for a multi-process launch.

    With one process ``prepare_deepspeed_plugin`` fails with ``KeyError: 'WORLD_SIZE'``; on the
    CPU (``gpus = 0``) accelerate has no DeepSpeed at all.
    """
    if recipe.launch.deepspeed is not None and (recipe.launch.gpus == 0 or recipe.launch.num_processes < 2):
        yield error(
            "launch.deepspeed",
            "kohya's DeepSpeed runs only in a multi-GPU launch (it reads WORLD_SIZE, which accelerate sets "
            "for 2 or more processes): set [launch] gpus = 2 or more, or remove [launch.deepspeed]",
        )


@rule
def deepspeed_offload(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Offload targets only apply to some ZeRO stages; nvme needs a path (accelerate: ignored or error)."""
    ds = recipe.launch.deepspeed
    if ds is None:
        return
    if ds.offload_optimizer_device != "none" and ds.zero_stage < 2:
        yield warning(
            "launch.deepspeed.offload_optimizer_device",
            f"optimizer offload applies to ZeRO stages 2 and 3 only (zero_stage = {ds.zero_stage}): "
            "it is ignored; set zero_stage = 2",
        )
    if ds.offload_param_device != "none" and ds.zero_stage != 3:
        yield warning(
            "launch.deepspeed.offload_param_device",
            f"parameter offload applies to ZeRO stage 3 only (zero_stage = {ds.zero_stage}): it is ignored",
        )
    for what in ("optimizer", "param"):
        if (
            getattr(ds, f"offload_{what}_device") == "nvme"
            and getattr(ds, f"offload_{what}_nvme_path") is None
        ):
            yield error(
                f"launch.deepspeed.offload_{what}_nvme_path",
                f'offload_{what}_device = "nvme" needs the NVMe folder: set offload_{what}_nvme_path',
            )


@rule
def launch_values_quote(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Values ``train.sh`` and ``train.ps1`` cannot pass exactly: compiling would refuse them.

    The check is the scripts' own quoting (:func:`lorabuild.launch.script_value_errors`), so
    ``check`` and ``compile`` refuse the same values; only the advice is the recipe's.
    """
    spec = launch_spec(recipe, families.get(family_of(recipe, facts)).train_script)
    for key, exc in script_value_errors(spec):
        fix = exc.fix
        if key.startswith("launch.accelerate_args."):
            # accelerate reads its options only from its command line: config.toml cannot carry them.
            fix = "accelerate_args are passed on accelerate's command line: change the value or leave the option out"
        yield error(key, str(exc).removesuffix(exc.fix) + fix)


@rule
def multi_gpu_windows(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """NCCL is Linux-only: on Windows kohya falls back to the gloo backend (train_util.py, prepare_accelerator)."""
    if facts.platform == "win32" and recipe.launch.num_processes > 1:
        yield warning(
            "launch.gpus",
            f"{recipe.launch.num_processes} GPUs on Windows: NCCL does not exist there, so the processes "
            "synchronise through gloo, which is much slower; PyTorch 2.4+ may also need "
            'USE_LIBUV = "0" in [launch.env]. WSL2 has NCCL',
        )
