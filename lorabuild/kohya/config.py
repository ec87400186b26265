"""kohya's two TOML inputs as typed values: ``--config_file`` and ``--dataset_config``.

Each field is named after the kohya option it sets, so a reader (and ``grep``) finds the option
in kohya's argparse parsers or dataset-config schema under the same name. The plan builds these
values from the recipe (:mod:`lorabuild.plan.kohya_config`); everything downstream (the
artefacts, the train stage, the grid, the report, the summary, the stamps) reads the typed fields,
never a table by string key.

:func:`_table` is the one place a value becomes a TOML table (:meth:`KohyaConfig.document`,
:meth:`DatasetConfig.document`; :func:`lorabuild.render.toml.dumps` writes the text):

- ``--config_file`` sections (:class:`KohyaConfig`) leave out unset values (None) and flags set to
  false, so the file reads like a hand-written one and kohya's own defaults apply. An empty
  section is left out. The sections are cosmetic: kohya flattens them into one set of options.
- ``--dataset_config`` tables (:class:`DatasetConfig`) leave out unset values only: a subset's
  ``flip_aug = false`` overrides the dataset's ``true``, so a false is written.
- The recipe's ``[kohya]`` passthrough is written as given, false values included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from lorabuild.recipe.schema import KohyaValue

TomlTable = dict[str, Any]
"""One TOML table as :func:`lorabuild.render.toml.dumps` takes it."""


def _table(options: object, keep_false: bool = False) -> TomlTable:
    """The fields of a dataclass of kohya options as a TOML table, in field order.

    None is left out (kohya's default applies), and so is False unless ``keep_false``; a tuple
    becomes a TOML array.
    """
    table: TomlTable = {}
    for f in fields(options):  # type: ignore[arg-type]  # every caller passes a dataclass
        value = getattr(options, f.name)
        if value is None or (value is False and not keep_false):
            continue
        table[f.name] = list(value) if isinstance(value, tuple) else value
    return table


# --- --config_file ---------------------------------------------------------------------------------
# Fields are in the file's key order; every one is given by keyword (kw_only), none has a default:
# the plan spells out each option it sets or leaves unset.


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """``[model]``: the base model (kohya's ``add_sd_models_arguments``)."""

    pretrained_model_name_or_path: str
    v2: bool
    v_parameterization: bool
    clip_skip: int | None
    vae: str | None
    tokenizer_cache_dir: str | None
    model_type: str | None
    clip_l: str | None
    clip_g: str | None
    t5xxl: str | None
    ae: str | None
    # Anima (library/anima_train_utils.py add_anima_training_arguments).
    qwen3: str | None
    llm_adapter_path: str | None
    t5_tokenizer_path: str | None
    # HunyuanImage 2.1 (hunyuan_image_train_network.py setup_parser).
    text_encoder: str | None
    byt5: str | None
    # Lumina Image 2.0 (library/lumina_train_util.py add_lumina_train_arguments).
    gemma2: str | None


@dataclass(frozen=True, kw_only=True)
class NetworkOptions:
    """``[network]``: the LoRA network (train_network.py's own options)."""

    network_module: str
    network_dim: int
    network_alpha: float
    network_dropout: float | None
    network_args: tuple[str, ...] | None
    network_train_unet_only: bool
    network_train_text_encoder_only: bool
    network_weights: str | None


@dataclass(frozen=True, kw_only=True)
class OptimizerOptions:
    """``[optimizer]``: optimizer and learning-rate schedule (``add_optimizer_arguments``)."""

    optimizer_type: str
    learning_rate: float
    unet_lr: float | None
    text_encoder_lr: float | None
    lr_scheduler: str
    lr_warmup_steps: int | float | None
    lr_scheduler_num_cycles: int | None
    lr_scheduler_power: float | None
    lr_scheduler_min_lr_ratio: float | None
    max_grad_norm: float | None
    optimizer_args: tuple[str, ...] | None


@dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    """``[training]``: length, precision, memory and loss (``add_training_arguments``)."""

    max_train_epochs: int
    gradient_accumulation_steps: int | None
    mixed_precision: str
    full_fp16: bool
    full_bf16: bool
    no_half_vae: bool
    seed: int
    cache_latents: bool
    cache_latents_to_disk: bool
    max_token_length: int | None
    xformers: bool
    sdpa: bool
    gradient_checkpointing: bool
    prior_loss_weight: float
    noise_offset: float | None
    min_snr_gamma: float | None
    max_data_loader_n_workers: int | None
    fp8_base: bool
    blocks_to_swap: int | None
    cache_text_encoder_outputs: bool
    cache_text_encoder_outputs_to_disk: bool


@dataclass(frozen=True, kw_only=True)
class FlowOptions:
    """``[flow]``: the flow-matching families' training options (``flux_train_utils.add_flux_train_arguments``;
    SD3's from ``train_util.add_dit_training_arguments`` and ``sd3_train_utils.add_sd3_training_arguments``;
    Anima's from ``anima_train_utils.add_anima_training_arguments``;
    ``hunyuan_image_train_network.setup_parser``'s own; and Lumina 2's from
    ``lumina_train_util.add_lumina_train_arguments``)."""

    guidance_scale: float | None
    timestep_sampling: str | None
    sigmoid_scale: float | None
    model_prediction_type: str | None
    discrete_flow_shift: float | None
    apply_t5_attn_mask: bool
    t5xxl_max_token_length: int | None
    # SD3 (library/sd3_train_utils.py).
    weighting_scheme: str | None
    logit_mean: float | None
    logit_std: float | None
    mode_scale: float | None
    training_shift: float | None
    apply_lg_attn_mask: bool
    # Anima (library/anima_train_utils.py add_anima_training_arguments) and HunyuanImage 2.1.
    attn_mode: str | None
    split_attn: bool
    vae_chunk_size: int | None
    vae_disable_cache: bool
    # HunyuanImage 2.1 (hunyuan_image_train_network.py setup_parser).
    fp8_scaled: bool
    fp8_vl: bool
    text_encoder_cpu: bool
    # Lumina Image 2.0 (library/lumina_train_util.py add_lumina_train_arguments).
    system_prompt: str | None
    gemma2_max_token_length: int | None


@dataclass(frozen=True, kw_only=True)
class SavingOptions:
    """``[saving]``: where and how kohya saves the LoRA files (``add_training_arguments``)."""

    output_dir: str
    output_name: str
    save_model_as: str
    save_precision: str
    save_every_n_epochs: int | None
    save_state: bool


@dataclass(frozen=True, kw_only=True)
class LoggingOptions:
    """``[logging]``: kohya's TensorBoard logs and its console format."""

    logging_dir: str
    log_prefix: str
    console_log_simple: bool


@dataclass(frozen=True, kw_only=True)
class SamplingOptions:
    """``[sampling]``: kohya's sample images during training (all None: no sampling)."""

    sample_prompts: str | None
    sample_every_n_epochs: int | None
    sample_sampler: str | None


@dataclass(frozen=True, kw_only=True)
class MetadataOptions:
    """``[metadata]``: what kohya writes into every saved LoRA file's metadata."""

    metadata_title: str
    metadata_author: str | None
    metadata_description: str | None
    metadata_trigger_phrase: str | None
    training_comment: str | None


@dataclass(frozen=True, kw_only=True)
class DeepSpeedOptions:
    """``[deepspeed]``: kohya's own DeepSpeed options (``deepspeed_utils.add_deepspeed_arguments``).

    kohya builds accelerate's ``DeepSpeedPlugin`` from these itself.
    """

    deepspeed: bool
    zero_stage: int
    offload_optimizer_device: str | None
    offload_optimizer_nvme_path: str | None
    offload_param_device: str | None
    offload_param_nvme_path: str | None
    zero3_init_flag: bool
    zero3_save_16bit_model: bool
    fp16_master_weights_and_gradients: bool


@dataclass(frozen=True, kw_only=True)
class KohyaConfig:
    """The ``--config_file`` document: one value per section, in the file's order.

    Attributes:
        flow: The flow-matching options (FLUX.1, Chroma, SD3, Anima, HunyuanImage 2.1); all unset for the other families.
        deepspeed: ``[launch.deepspeed]`` of the recipe, or None (no section).
        passthrough: The recipe's ``[kohya]`` table: options lorabuild does not model, written
            last and as given (the rules checked each against kohya's parsers).
    """

    model: ModelOptions
    network: NetworkOptions
    optimizer: OptimizerOptions
    training: TrainingOptions
    flow: FlowOptions
    saving: SavingOptions
    logging: LoggingOptions
    sampling: SamplingOptions
    metadata: MetadataOptions
    deepspeed: DeepSpeedOptions | None
    passthrough: Mapping[str, KohyaValue] = field(default_factory=dict)

    def document(self) -> dict[str, TomlTable]:
        """The TOML document: one table per section; empty sections are left out."""
        sections: dict[str, TomlTable] = {
            "model": _table(self.model),
            "network": _table(self.network),
            "optimizer": _table(self.optimizer),
            "training": _table(self.training),
            "flow": _table(self.flow),
            "saving": _table(self.saving),
            "logging": _table(self.logging),
            "sampling": _table(self.sampling),
            "metadata": _table(self.metadata),
            "deepspeed": _table(self.deepspeed) if self.deepspeed is not None else {},
            "kohya": dict(self.passthrough),
        }
        return {name: table for name, table in sections.items() if table}


# --- --dataset_config --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GeneralOptions:
    """``[general]``: defaults for every dataset (kohya's dataset-config ``general`` level).

    Written like a ``--config_file`` section: a flag set to false is left out (kohya's default).
    """

    caption_extension: str
    shuffle_caption: bool
    keep_tokens: int | None
    flip_aug: bool
    color_aug: bool
    random_crop: bool
    caption_dropout_rate: float | None
    caption_tag_dropout_rate: float | None


@dataclass(frozen=True, kw_only=True)
class SubsetOptions:
    """One ``[[datasets.subsets]]``: a staged folder (DreamBooth style). None leaves a key out."""

    image_dir: str
    num_repeats: int
    class_tokens: str | None
    is_reg: bool | None
    shuffle_caption: bool | None
    keep_tokens: int | None
    flip_aug: bool | None
    color_aug: bool | None
    random_crop: bool | None


@dataclass(frozen=True, kw_only=True)
class DatasetOptions:
    """One ``[[datasets]]``: resolution, batch and buckets shared by its subsets. None leaves a key out.

    The bucket keys are set only with ``enable_bucket``; the validation keys only with a split.
    """

    resolution: tuple[int, int]
    batch_size: int
    enable_bucket: bool
    min_bucket_reso: int | None
    max_bucket_reso: int | None
    bucket_reso_steps: int | None
    bucket_no_upscale: bool | None
    validation_split: float | None
    validation_seed: int | None
    subsets: tuple[SubsetOptions, ...]


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    """The ``--dataset_config`` document: ``[general]`` and one dataset."""

    general: GeneralOptions
    dataset: DatasetOptions

    def document(self) -> dict[str, Any]:
        """The TOML document (``{"general": ..., "datasets": [...]}``)."""
        dataset = _table(self.dataset, keep_false=True)
        dataset["subsets"] = [_table(subset, keep_false=True) for subset in self.dataset.subsets]
        return {"general": _table(self.general), "datasets": [dataset]}
