"""How training is started: ``[launch]``, ``[launch.deepspeed]`` and ``[launch.slurm]``.

Also :data:`MANAGED_ACCELERATE_OPTIONS`, the ``accelerate launch`` options lorabuild writes itself
(``[launch] accelerate_args`` may not set them).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lorabuild.recipe.accelerate import check_accelerate_args
from lorabuild.recipe.schema.fields import RecipePath, _Table
from lorabuild.render.quoting import QuotingError, env_name, sbatch_line_problem

OffloadDevice = Literal["none", "cpu", "nvme"]

# accelerate launch options lorabuild writes itself, and the [launch] key that sets each.
MANAGED_ACCELERATE_OPTIONS = {
    "num_processes": "launch.gpus",
    "gpu_ids": "launch.gpus",
    "multi_gpu": "launch.gpus",
    "cpu": "launch.gpus (0 trains on the CPU)",
    "num_machines": "launch (one machine per build)",
    "num_cpu_threads_per_process": "launch.num_cpu_threads_per_process",
    "mixed_precision": "training.mixed_precision",
    "dynamo_backend": "launch (lorabuild launches with dynamo off)",
    "main_process_port": "launch.main_process_port",
    "config_file": "launch (the recipe replaces accelerate's config file)",
    "use_deepspeed": "[launch.deepspeed] (kohya starts DeepSpeed itself)",
}


class DeepSpeedSection(_Table):
    """``[launch.deepspeed]``: train with DeepSpeed ZeRO through kohya's own ``--deepspeed`` options."""

    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="ZeRO stage (kohya --zero_stage).")
    offload_optimizer_device: OffloadDevice = Field(
        "none",
        description="Where ZeRO stages 2 and 3 offload optimizer states (kohya --offload_optimizer_device).",
    )
    offload_optimizer_nvme_path: RecipePath | None = Field(
        None, description="NVMe folder for optimizer offload (kohya --offload_optimizer_nvme_path)."
    )
    offload_param_device: OffloadDevice = Field(
        "none", description="Where ZeRO stage 3 offloads parameters (kohya --offload_param_device)."
    )
    offload_param_nvme_path: RecipePath | None = Field(
        None, description="NVMe folder for parameter offload (kohya --offload_param_nvme_path)."
    )
    zero3_init_flag: bool = Field(False, description="Build the model under deepspeed.zero.Init (stage 3).")
    zero3_save_16bit_model: bool = Field(False, description="Save a 16-bit model under stage 3.")
    fp16_master_weights_and_gradients: bool = Field(
        False, description="fp16 master weights and gradients (ZeRO-2 with CPU optimizer offload only)."
    )


class SlurmSection(_Table):
    """``[launch.slurm]``: resources of each build's task in ``lorabuild compile --target slurm``."""

    partition: str | None = Field(None, description="sbatch --partition.")
    account: str | None = Field(None, description="sbatch --account.")
    time: str | None = Field(
        None,
        pattern=r"^(\d+-)?\d+(:\d{1,2}){0,2}$",
        description='Time limit per build (sbatch --time), e.g. "04:00:00" or "1-00:00:00".',
    )
    mem: str | None = Field(
        None, pattern=r"^\d+[KMGT]?$", description='Memory per build (sbatch --mem), e.g. "32G".'
    )
    cpus_per_task: int | None = Field(None, ge=1, description="CPU cores per build (sbatch --cpus-per-task).")
    extra: list[str] = Field(
        default_factory=list,
        description='More sbatch options, one per #SBATCH line, e.g. ["--qos=high", "--constraint=a100"].',
    )

    @field_validator("partition", "account")
    @classmethod
    def _sbatch_value(cls, value: str | None) -> str | None:
        # The script's own test (batch/slurm.py), so that check refuses what compile would.
        why = None if value is None else sbatch_line_problem(value)
        if why:
            raise ValueError(f"{value!r} {why}")
        return value

    @field_validator("extra")
    @classmethod
    def _sbatch_options(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not v.startswith("-")]
        if bad:
            raise ValueError(
                f'{bad[0]!r} is not an sbatch option: write each as it follows #SBATCH, e.g. "--qos=high"'
            )
        for option in value:
            why = sbatch_line_problem(option)
            if why:
                raise ValueError(f"{option!r} {why}")
        return value


class LaunchSection(_Table):
    """``[launch]``: how ``accelerate launch`` starts the trainer."""

    vram_gb: int | None = Field(
        None,
        ge=4,
        le=200,
        description="The GPU's memory in GB: picks kohya's documented memory settings for that card size "
        "(fp8 base, blocks to swap, gradient checkpointing, text-encoder cache, batch size) for the keys the "
        "recipe leaves out; lorabuild check shows what it chose.",
    )
    num_cpu_threads_per_process: int = Field(
        2, ge=1, description="CPU threads per training process (accelerate --num_cpu_threads_per_process)."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description='Environment variables for the trainer, e.g. HF_HOME = "hf" (relative to the build folder).',
    )
    gpus: int | list[int] = Field(
        1,
        description="GPUs to train on: a count (2 launches 2 processes; 0 trains on the CPU) or the ids "
        "of the GPUs to use, e.g. [0, 1] (accelerate --num_processes, --gpu_ids, --multi_gpu).",
    )
    main_process_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port the processes of a multi-GPU run meet on (accelerate --main_process_port; "
        "default 29500): give builds that train at the same time on one machine different ports.",
    )
    accelerate_args: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="More accelerate launch options, e.g. { enable_cpu_affinity = true, dynamo_mode = "
        '"default" } (true writes a flag, false leaves it out).',
    )
    deepspeed: DeepSpeedSection | None = Field(
        None, description="Train with DeepSpeed ZeRO (needs the deepspeed package and 2 or more GPUs)."
    )
    slurm: SlurmSection = Field(
        default_factory=SlurmSection, description="Resources per build for lorabuild compile --target slurm."
    )

    @field_validator("gpus")
    @classmethod
    def _gpu_ids(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, int) and value < 0:
            raise ValueError(f"must be a GPU count of 0 or more, or a list of GPU ids (got {value})")
        if isinstance(value, list):
            negative = [i for i in value if i < 0]
            if negative:
                raise ValueError(f"GPU ids start at 0 (got {negative[0]}): see nvidia-smi for the ids")
            if not value:
                raise ValueError("is an empty list: give GPU ids, e.g. [0, 1], or a count (0 for the CPU)")
            repeated = sorted({i for i in value if value.count(i) > 1})
            if repeated:
                raise ValueError(f"GPU id {repeated[0]} is listed twice: each GPU can run one process")
        return value

    @field_validator("accelerate_args")
    @classmethod
    def _accelerate_args(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        check_accelerate_args(value, MANAGED_ACCELERATE_OPTIONS)
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        # The scripts' own test (train.sh's export NAME=, train.ps1's $env:NAME =), so that check
        # refuses exactly the names compile would.
        for name in value:
            try:
                env_name(name)
            except QuotingError as exc:
                raise ValueError(f"{name!r} {exc.problem}: {exc.fix}") from None
        return value

    @property
    def num_processes(self) -> int:
        """Training processes accelerate starts (1 on the CPU)."""
        return len(self.gpus) if isinstance(self.gpus, list) else max(1, self.gpus)
