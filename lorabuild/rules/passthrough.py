"""Rules on ``[kohya]``: raw kohya options passed through to ``config.toml``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lorabuild.kohya import families
from lorabuild.kohya import options as kohya_options
from lorabuild.plan.kohya_config import kohya_config
from lorabuild.plan.plan import (
    family_of,
)
from lorabuild.probe.facts import MODEL_FILE_KEYS, Facts
from lorabuild.problems import Problem, error
from lorabuild.recipe.schema import Recipe, line_problem
from lorabuild.rules.registry import rule

# --- [kohya] passthrough ----------------------------------------------------------------------

# kohya options the recipe models: setting them in [kohya] would silently fight the recipe.
MODELLED = {
    "pretrained_model_name_or_path": "model.base", "v2": "model.family", "v_parameterization": "model.v_parameterization",
    "clip_skip": "model.clip_skip", "vae": "model.vae", "tokenizer_cache_dir": "model.tokenizer_cache_dir",
    "network_module": "network.module", "network_dim": "network.dim", "network_alpha": "network.alpha",
    "network_dropout": "network.dropout", "network_args": "network.args", "network_weights": "network.weights",
    "network_train_unet_only": "network.train", "network_train_text_encoder_only": "network.train",
    "optimizer_type": "optimizer.type", "learning_rate": "optimizer.lr", "unet_lr": "optimizer.unet_lr",
    "text_encoder_lr": "optimizer.text_encoder_lr", "lr_scheduler": "optimizer.scheduler",
    "lr_warmup_steps": "optimizer.warmup_steps", "lr_scheduler_num_cycles": "optimizer.restart_cycles",
    "lr_scheduler_power": "optimizer.power", "lr_scheduler_min_lr_ratio": "optimizer.min_lr_ratio",
    "max_grad_norm": "optimizer.max_grad_norm", "optimizer_args": "optimizer.args",
    "max_train_epochs": "training.epochs", "max_train_steps": "training.epochs",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "mixed_precision": "training.mixed_precision", "full_fp16": "training.full_fp16", "full_bf16": "training.full_bf16",
    "no_half_vae": "training.no_half_vae", "seed": "training.seed", "cache_latents": "training.cache_latents",
    "cache_latents_to_disk": "training.cache_latents_to_disk", "max_token_length": "training.max_token_length",
    "xformers": "training.attention", "sdpa": "training.attention", "mem_eff_attn": "training.attention",
    "gradient_checkpointing": "training.gradient_checkpointing", "prior_loss_weight": "training.prior_loss_weight",
    "noise_offset": "training.noise_offset", "min_snr_gamma": "training.min_snr_gamma",
    "max_data_loader_n_workers": "training.max_data_loader_n_workers", "save_model_as": "training.save_model_as",
    "save_precision": "training.save_precision", "save_every_n_epochs": "training.save_every_n_epochs",
    "save_state": "training.save_state", "output_name": "name", "output_dir": "(the build folder)",
    "logging_dir": "(the build folder)", "sample_prompts": "evaluate.prompts",
    "sample_every_n_epochs": "evaluate.sample_every_n_epochs", "sample_sampler": "evaluate.sampler",
    "metadata_title": "title", "metadata_author": "author", "metadata_description": "description",
    "metadata_trigger_phrase": "dataset.subsets[].trigger", "config_file": "(compiled by lorabuild)",
    "dataset_config": "(compiled by lorabuild)", "output_config": "(compiled by lorabuild)",
    "train_data_dir": "dataset.subsets", "reg_data_dir": "dataset.subsets", "in_json": "dataset.subsets",
    "resolution": "dataset.resolution", "train_batch_size": "dataset.batch_size", "enable_bucket": "dataset.enable_bucket",
    "min_bucket_reso": "dataset.min_bucket_reso", "max_bucket_reso": "dataset.max_bucket_reso",
    "bucket_reso_steps": "dataset.bucket_reso_steps", "bucket_no_upscale": "dataset.bucket_no_upscale",
    "shuffle_caption": "dataset.shuffle_caption", "keep_tokens": "dataset.keep_tokens",
    "caption_extension": "dataset.subsets[].caption_extension", "flip_aug": "dataset.flip_aug",
    "color_aug": "dataset.color_aug", "random_crop": "dataset.random_crop",
    "caption_dropout_rate": "dataset.caption_dropout_rate", "caption_tag_dropout_rate": "dataset.caption_tag_dropout_rate",
    "validation_split": "dataset.validation_split", "validation_seed": "dataset.validation_seed",
    "dataset_repeats": "dataset.subsets[].repeats",
    "model_type": "model.family", "clip_l": "model.clip_l", "t5xxl": "model.t5xxl", "ae": "model.ae",
    "guidance_scale": "flow.guidance_scale", "timestep_sampling": "flow.timestep_sampling",
    "sigmoid_scale": "flow.sigmoid_scale", "model_prediction_type": "flow.model_prediction_type",
    "discrete_flow_shift": "flow.discrete_flow_shift", "apply_t5_attn_mask": "flow.apply_t5_attn_mask",
    "t5xxl_max_token_length": "flow.t5xxl_max_token_length", "fp8_base": "training.fp8_base",
    "blocks_to_swap": "training.blocks_to_swap", "cache_text_encoder_outputs": "training.cache_text_encoder_outputs",
    "cache_text_encoder_outputs_to_disk": "training.cache_text_encoder_outputs_to_disk",
    "clip_g": "model.clip_g", "weighting_scheme": "flow.weighting_scheme", "logit_mean": "flow.logit_mean",
    "logit_std": "flow.logit_std", "mode_scale": "flow.mode_scale", "training_shift": "flow.training_shift",
    "apply_lg_attn_mask": "flow.apply_lg_attn_mask",
    "qwen3": "model.qwen3", "llm_adapter_path": "model.llm_adapter_path", "t5_tokenizer_path": "model.t5_tokenizer_path",
    "attn_mode": "flow.attn_mode", "vae_chunk_size": "flow.vae_chunk_size", "vae_disable_cache": "flow.vae_disable_cache",
    "split_attn": "flow.split_attn",
    "text_encoder": "model.text_encoder", "byt5": "model.byt5", "fp8_scaled": "flow.fp8_scaled",
    "fp8_vl": "flow.fp8_vl", "text_encoder_cpu": "flow.text_encoder_cpu",
    "gemma2": "model.gemma2", "system_prompt": "flow.system_prompt",
    "gemma2_max_token_length": "flow.gemma2_max_token_length",
    # Managed by lorabuild itself: resume, log format and the recipe hash, and kohya's file rotation
    # (which would delete epoch files lorabuild checks for).
    "resume": "(lorabuild train resumes by itself)", "initial_epoch": "(lorabuild train resumes by itself)",
    "initial_step": "(lorabuild train resumes by itself)", "skip_until_initial_step": "(lorabuild train resumes by itself)",
    "console_log_simple": "(compiled by lorabuild)", "console_log_file": "(compiled by lorabuild)",
    "console_log_level": "(compiled by lorabuild)", "training_comment": "(compiled by lorabuild)",
    "save_last_n_epochs": "(lorabuild keeps every epoch)", "save_last_n_epochs_state": "(lorabuild keeps every epoch)",
}  # fmt: skip


@rule
def kohya_passthrough(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Raw kohya options: known to the family's script, well-typed, not modelled by the recipe."""
    script = families.get(family_of(recipe, facts)).train_script
    for name, value in recipe.kohya.items():
        key = f"kohya.{name}"
        if name in MODELLED:
            where = MODELLED[name]
            if where.startswith("("):
                yield error(key, f"is managed by lorabuild {where}: remove it from [kohya]")
            else:
                yield error(key, f"is set by the recipe as {where}: set it there instead")
            continue
        message = kohya_options.check_config_value(script, name, value)
        if message:
            yield error(key, message)


@rule
def compiled_options(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Every option the recipe compiles to is one the family's script has (kohya ignores unknown keys silently).

    ``blocks_to_swap`` for an SD1.5 model, say, would be written to ``config.toml`` and do nothing.
    """
    family = family_of(recipe, facts)
    if recipe.network.module not in families.get(family).network_modules:
        return  # the family's rules say so; there is no config to compile
    script = families.get(family).train_script
    known = kohya_options.options(script)
    config = kohya_config(recipe, family, Path("."), "")
    for section, table in config.document().items():
        if section == "kohya":
            continue  # checked by kohya_passthrough
        for name in table:
            if name not in known and name not in MODEL_FILE_KEYS:  # model files: rules.model.model_files
                key = MODELLED.get(name, f"{section}.{name}")
                yield error(
                    key,
                    f"{families.get(family).label} models are trained by kohya's {script}, which has no "
                    f"--{name}: remove {key}",
                )


@rule
def kohya_text_values(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Text in ``[kohya]`` must be one line without control characters, as every recipe text is.

    Such values reach kohya's captions and prompts (``caption_prefix``, ``caption_suffix``,
    ``caption_separator``…) or its argument lists, where a line break or an invisible character
    would change what is trained. The test is the schema's own (:func:`~lorabuild.recipe.schema.line_problem`);
    options managed by lorabuild are left to :func:`kohya_passthrough`.
    """
    for name, value in recipe.kohya.items():
        if name in MODELLED:
            continue
        items = [(f"kohya.{name}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else []
        for key, text in items or [(f"kohya.{name}", value)]:
            why = line_problem(text) if isinstance(text, str) else None
            if why:
                yield error(key, f"{why} (got {text!r})")
