"""kohya's ``--config_file`` and ``--dataset_config`` for a recipe, as typed values.

:func:`kohya_config` and :func:`kohya_dataset_config` map the recipe's tables onto kohya's options
(:mod:`lorabuild.kohya.config` holds the types and writes them as TOML). Options the recipe leaves
at kohya's default are None or False here, so the files only hold what the recipe sets. Paths are
written as :func:`~lorabuild.plan.layout.portable_path` gives them: relative to the build folder,
where kohya runs, when they are inside the project.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lorabuild import __version__
from lorabuild.kohya import families
from lorabuild.kohya.config import (
    DatasetConfig,
    DatasetOptions,
    DeepSpeedOptions,
    FlowOptions,
    GeneralOptions,
    KohyaConfig,
    LoggingOptions,
    MetadataOptions,
    ModelOptions,
    NetworkOptions,
    OptimizerOptions,
    SamplingOptions,
    SavingOptions,
    SubsetOptions,
    TrainingOptions,
)
from lorabuild.plan.layout import BuildLayout, portable_path
from lorabuild.plan.subsets import DEFAULT_BUCKET_STEPS, STAGED_CAPTION_EXTENSION, Subsets, first_trigger
from lorabuild.recipe.schema import DeepSpeedSection, FlowSection, Recipe


def kohya_config(recipe: Recipe, family: str, build_dir: Path, recipe_hash: str) -> KohyaConfig:
    """The ``--config_file`` options. Sections only group keys for readers; kohya flattens them."""
    m, n, o, t, e = recipe.model, recipe.network, recipe.optimizer, recipe.training, recipe.evaluate
    fam = families.get(family)

    def rel(path: Path) -> str:
        return portable_path(path, build_dir)

    module, algo = fam.network_modules[n.module]
    network_args = []
    if algo:
        network_args.append(f"algo={algo}")
    if n.conv_dim is not None:
        network_args.append(f"conv_dim={n.conv_dim}")
    if n.conv_alpha is not None:
        network_args.append(f"conv_alpha={_arg(n.conv_alpha)}")
    network_args.extend(f"{k}={_arg(v)}" for k, v in n.args.items())
    optimizer_args = [f"{k}={_literal(v)}" for k, v in o.args.items()]
    sampling = bool(e.sample_every_n_epochs and e.prompts)
    return KohyaConfig(
        model=ModelOptions(
            pretrained_model_name_or_path=rel(m.base),
            v2=fam.v2,
            v_parameterization=m.v_parameterization,
            clip_skip=m.clip_skip,
            vae=rel(m.vae) if m.vae else None,
            tokenizer_cache_dir=rel(m.tokenizer_cache_dir) if m.tokenizer_cache_dir else None,
            model_type=fam.model_type,
            clip_l=rel(m.clip_l) if m.clip_l else None,
            clip_g=rel(m.clip_g) if m.clip_g else None,
            t5xxl=rel(m.t5xxl) if m.t5xxl else None,
            ae=rel(m.ae) if m.ae else None,
            qwen3=rel(m.qwen3) if m.qwen3 else None,
            llm_adapter_path=rel(m.llm_adapter_path) if m.llm_adapter_path else None,
            t5_tokenizer_path=rel(m.t5_tokenizer_path) if m.t5_tokenizer_path else None,
            text_encoder=rel(m.text_encoder) if m.text_encoder else None,
            byt5=rel(m.byt5) if m.byt5 else None,
            gemma2=rel(m.gemma2) if m.gemma2 else None,
        ),
        network=NetworkOptions(
            network_module=module,
            network_dim=n.dim,
            network_alpha=float(n.alpha),
            network_dropout=n.dropout,
            network_args=tuple(network_args) or None,
            network_train_unet_only=n.train == "unet",
            network_train_text_encoder_only=n.train == "text_encoder",
            network_weights=rel(n.weights) if n.weights else None,
        ),
        optimizer=OptimizerOptions(
            optimizer_type=o.type,
            learning_rate=o.lr,
            unet_lr=o.unet_lr,
            text_encoder_lr=o.text_encoder_lr,
            lr_scheduler=o.scheduler,
            lr_warmup_steps=warmup_value(o.warmup_steps) or None,
            lr_scheduler_num_cycles=o.restart_cycles if o.scheduler == "cosine_with_restarts" else None,
            lr_scheduler_power=o.power,
            lr_scheduler_min_lr_ratio=o.min_lr_ratio,
            max_grad_norm=o.max_grad_norm if o.max_grad_norm != 1.0 else None,
            optimizer_args=tuple(optimizer_args) or None,
        ),
        training=TrainingOptions(
            max_train_epochs=t.epochs,
            gradient_accumulation_steps=t.gradient_accumulation_steps
            if t.gradient_accumulation_steps > 1
            else None,
            mixed_precision=t.mixed_precision,
            full_fp16=t.full_fp16,
            full_bf16=t.full_bf16,
            no_half_vae=t.no_half_vae,
            seed=t.seed,
            cache_latents=t.cache_latents,
            cache_latents_to_disk=t.cache_latents_to_disk,
            max_token_length=t.max_token_length if t.max_token_length != 75 else None,
            xformers=t.attention == "xformers",
            sdpa=t.attention == "sdpa",
            gradient_checkpointing=t.gradient_checkpointing,
            prior_loss_weight=t.prior_loss_weight,
            noise_offset=t.noise_offset,
            min_snr_gamma=t.min_snr_gamma,
            max_data_loader_n_workers=t.max_data_loader_n_workers,
            fp8_base=t.fp8_base,
            blocks_to_swap=t.blocks_to_swap,
            cache_text_encoder_outputs=t.cache_text_encoder_outputs,
            cache_text_encoder_outputs_to_disk=t.cache_text_encoder_outputs_to_disk,
        ),
        flow=flow_options(recipe.flow),
        saving=SavingOptions(
            output_dir=BuildLayout.OUTPUT,
            output_name=recipe.name,
            save_model_as=t.save_model_as,
            save_precision=t.save_precision,
            save_every_n_epochs=t.save_every_n_epochs,
            save_state=t.save_state,
        ),
        # console_log_simple: plain, unwrapped log lines on stdout (kohya's rich handler wraps them
        # at 80 columns when not on a terminal), so lorabuild can read them (KOHYA.md section 9).
        logging=LoggingOptions(
            logging_dir=BuildLayout.LOGS, log_prefix=recipe.name + "_", console_log_simple=True
        ),
        sampling=SamplingOptions(
            sample_prompts=BuildLayout.SAMPLE_PROMPTS if sampling else None,
            sample_every_n_epochs=e.sample_every_n_epochs if e.prompts else None,
            sample_sampler=e.sampler if sampling else None,
        ),
        metadata=MetadataOptions(
            metadata_title=recipe.title or recipe.name,
            metadata_author=recipe.author,
            metadata_description=recipe.description,
            metadata_trigger_phrase=first_trigger(recipe),
            training_comment=f"lorabuild {__version__}; recipe sha256 {recipe_hash}",
        ),
        deepspeed=deepspeed_options(recipe.launch.deepspeed, rel)
        if recipe.launch.deepspeed is not None
        else None,
        passthrough=dict(recipe.kohya),
    )


def flow_options(f: FlowSection) -> FlowOptions:
    """``[flow]`` as kohya's options (the family's defaults were applied to the recipe before)."""
    return FlowOptions(
        guidance_scale=f.guidance_scale,
        timestep_sampling=f.timestep_sampling,
        sigmoid_scale=f.sigmoid_scale,
        model_prediction_type=f.model_prediction_type,
        discrete_flow_shift=f.discrete_flow_shift,
        apply_t5_attn_mask=bool(f.apply_t5_attn_mask),
        t5xxl_max_token_length=f.t5xxl_max_token_length,
        weighting_scheme=f.weighting_scheme,
        logit_mean=f.logit_mean,
        logit_std=f.logit_std,
        mode_scale=f.mode_scale,
        training_shift=f.training_shift,
        apply_lg_attn_mask=bool(f.apply_lg_attn_mask),
        attn_mode=f.attn_mode,
        split_attn=bool(f.split_attn),
        vae_chunk_size=f.vae_chunk_size,
        vae_disable_cache=bool(f.vae_disable_cache),
        fp8_scaled=bool(f.fp8_scaled),
        fp8_vl=bool(f.fp8_vl),
        text_encoder_cpu=bool(f.text_encoder_cpu),
        system_prompt=f.system_prompt,
        gemma2_max_token_length=f.gemma2_max_token_length,
    )


def _device(name: str) -> str | None:
    return None if name == "none" else name


def deepspeed_options(ds: DeepSpeedSection, rel: Callable[[Path], str]) -> DeepSpeedOptions:
    """kohya's own DeepSpeed options (``deepspeed_utils.add_deepspeed_arguments``) for the config file.

    kohya builds accelerate's ``DeepSpeedPlugin`` from these itself, so accelerate gets no DeepSpeed
    options. ``none`` offload devices are left out (kohya's default, None).
    """
    optimizer_path, param_path = ds.offload_optimizer_nvme_path, ds.offload_param_nvme_path
    return DeepSpeedOptions(
        deepspeed=True,
        zero_stage=ds.zero_stage,
        offload_optimizer_device=_device(ds.offload_optimizer_device),
        offload_optimizer_nvme_path=rel(optimizer_path) if optimizer_path else None,
        offload_param_device=_device(ds.offload_param_device),
        offload_param_nvme_path=rel(param_path) if param_path else None,
        zero3_init_flag=ds.zero3_init_flag,
        zero3_save_16bit_model=ds.zero3_save_16bit_model,
        fp16_master_weights_and_gradients=ds.fp16_master_weights_and_gradients,
    )


def warmup_value(warmup: int | float | str) -> int | float:
    """kohya's lr_warmup_steps in a config file: steps (int) or a fraction of all steps (float < 1).

    kohya understands "5%" only on its command line; in a config file the string would reach the
    scheduler unconverted, so a percentage is written as the fraction it means.
    """
    if isinstance(warmup, str):
        return float(warmup.rstrip("%")) / 100
    return warmup


def _arg(value: object) -> str:
    """A network_args value: kohya passes them to the network as strings."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _literal(value: object) -> str:
    """An optimizer_args value: kohya evaluates it as a Python literal (strings need quotes)."""
    return repr(value)


def kohya_dataset_config(recipe: Recipe, subsets: Subsets) -> DatasetConfig:
    """The ``--dataset_config`` options, pointing at the staged folders."""
    ds = recipe.dataset
    buckets = ds.enable_bucket
    validation = bool(ds.validation_split)
    return DatasetConfig(
        general=GeneralOptions(
            caption_extension=STAGED_CAPTION_EXTENSION,
            shuffle_caption=ds.shuffle_caption,
            keep_tokens=ds.keep_tokens or None,
            flip_aug=ds.flip_aug,
            color_aug=ds.color_aug,
            random_crop=ds.random_crop,
            caption_dropout_rate=ds.caption_dropout_rate or None,
            caption_tag_dropout_rate=ds.caption_tag_dropout_rate or None,
        ),
        dataset=DatasetOptions(
            resolution=ds.resolution,
            batch_size=ds.batch_size,
            enable_bucket=ds.enable_bucket,
            min_bucket_reso=ds.min_bucket_reso if buckets else None,
            max_bucket_reso=ds.max_bucket_reso if buckets else None,
            bucket_reso_steps=(ds.bucket_reso_steps or DEFAULT_BUCKET_STEPS) if buckets else None,
            bucket_no_upscale=ds.bucket_no_upscale if buckets else None,
            validation_split=float(ds.validation_split) if validation else None,
            validation_seed=(ds.validation_seed if ds.validation_seed is not None else recipe.training.seed)
            if validation
            else None,
            subsets=tuple(
                SubsetOptions(
                    image_dir=BuildLayout.staged(plan.folder),
                    num_repeats=subset.repeats,
                    class_tokens=subset.trigger or None,
                    is_reg=subset.is_reg or None,
                    shuffle_caption=subset.shuffle_caption,
                    keep_tokens=subset.keep_tokens,
                    flip_aug=subset.flip_aug,
                    color_aug=subset.color_aug,
                    random_crop=subset.random_crop,
                )
                for plan, subset in zip(subsets, ds.subsets, strict=True)
            ),
        ),
    )
