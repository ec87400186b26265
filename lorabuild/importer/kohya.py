"""kohya's options back into a recipe: the reverse of :mod:`lorabuild.plan.kohya_config`.

:func:`from_kohya_options` reads one set of kohya options (a ``--config_file`` document, sections
flattened, or the flags of a command line) and a ``--dataset_config`` document. Each option works
out its *effective* value, the source's or else kohya's argparse default
(:func:`lorabuild.kohya.options.options`), because a recipe's defaults are not kohya's (``mixed_precision``
is ``"no"`` in kohya, ``fp16`` in a recipe): the recipe must say what kohya would have done. Then
:func:`~lorabuild.importer.prune.prune` drops every key whose value lorabuild would give by itself (the schema's default or
the family's), so the recipe reads like a hand-written one.

Options lorabuild models become their recipe keys; every other option the family's script has goes
into ``[kohya]``; options the script does not have are listed as notes (kohya ignores them
silently), and so are secrets (never written) and the options lorabuild manages itself.

Why one module: it is :mod:`lorabuild.plan.kohya_config` read backwards, one reader per recipe
table (model, network, optimizer, training, flow, saving) over the same effective values; split, each
part would need the whole option table (:data:`MAPPED`) and the effective-value closure again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from lorabuild.importer import dataset as dataset_import
from lorabuild.importer import values
from lorabuild.importer.family import infer_family
from lorabuild.importer.model import Imported, flatten_sections, is_secret
from lorabuild.importer.prune import prune
from lorabuild.kohya import families
from lorabuild.kohya import options as kohya_options
from lorabuild.plan.layout import BuildLayout
from lorabuild.recipe.schema import Sampler, Scheduler

# Options lorabuild writes itself (they name the build folder's files or lorabuild's own record);
# a source's value is dropped, with a note unless it is what lorabuild writes anyway.
MANAGED: Mapping[str, str] = {
    "output_dir": "lorabuild saves into build/<name>/output",
    "logging_dir": "lorabuild logs into build/<name>/logs",
    "log_prefix": "lorabuild prefixes the logs with the recipe's name",
    "console_log_simple": "lorabuild sets it to read kohya's progress",
    "console_log_file": "lorabuild keeps kohya's output in build/<name>/logs",
    "console_log_level": "lorabuild reads kohya's output at its default level",
    "training_comment": "lorabuild writes its version and the recipe's hash",
    "config_file": "lorabuild compiles config.toml",
    "dataset_config": "lorabuild compiles dataset.toml",
    "output_config": "lorabuild compiles config.toml",
    "resume": "lorabuild train resumes by itself",
    "initial_epoch": "lorabuild train resumes by itself",
    "initial_step": "lorabuild train resumes by itself",
    "skip_until_initial_step": "lorabuild train resumes by itself",
    "save_last_n_epochs": "lorabuild keeps every epoch it saves",
    "save_last_n_epochs_state": "lorabuild keeps every epoch it saves",
    "train_data_dir": "read as dataset.subsets",
    "reg_data_dir": "read as dataset.subsets",
    "in_json": "fine-tuning metadata: lorabuild trains DreamBooth-style folders",
    "metadata_trigger_phrase": "lorabuild writes the first subset's trigger",
}

# kohya's options the reverse mapping reads (each handled below): with MANAGED, what never goes to [kohya].
MAPPED = frozenset(
    {
        "pretrained_model_name_or_path", "v2", "v_parameterization", "clip_skip", "vae", "tokenizer_cache_dir",
        "model_type", "clip_l", "clip_g", "t5xxl", "ae", "qwen3", "llm_adapter_path", "t5_tokenizer_path",
        "network_module", "network_dim", "network_alpha", "network_dropout", "network_args",
        "network_train_unet_only", "network_train_text_encoder_only", "network_weights",
        "optimizer_type", "use_8bit_adam", "use_lion_optimizer", "learning_rate", "unet_lr", "text_encoder_lr",
        "lr_scheduler", "lr_warmup_steps", "lr_scheduler_num_cycles", "lr_scheduler_power",
        "lr_scheduler_min_lr_ratio", "max_grad_norm", "optimizer_args",
        "max_train_epochs", "max_train_steps", "gradient_accumulation_steps", "mixed_precision", "full_fp16",
        "full_bf16", "no_half_vae", "seed", "cache_latents", "cache_latents_to_disk", "max_token_length",
        "xformers", "sdpa", "mem_eff_attn", "gradient_checkpointing", "prior_loss_weight", "noise_offset",
        "min_snr_gamma", "max_data_loader_n_workers", "fp8_base", "blocks_to_swap",
        "cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk",
        "guidance_scale", "timestep_sampling", "sigmoid_scale", "model_prediction_type", "discrete_flow_shift",
        "apply_t5_attn_mask", "t5xxl_max_token_length",
        "weighting_scheme", "logit_mean", "logit_std", "mode_scale", "training_shift", "apply_lg_attn_mask",
        "attn_mode", "vae_chunk_size", "vae_disable_cache", "split_attn",
        "text_encoder", "byt5", "fp8_scaled", "fp8_vl", "text_encoder_cpu",
        "gemma2", "system_prompt", "gemma2_max_token_length",
        "output_name", "save_model_as", "save_precision", "save_every_n_epochs", "save_state",
        "sample_prompts", "sample_every_n_epochs", "sample_sampler",
        "metadata_title", "metadata_author", "metadata_description",
        "deepspeed", "zero_stage", "offload_optimizer_device", "offload_optimizer_nvme_path",
        "offload_param_device", "offload_param_nvme_path", "zero3_init_flag", "zero3_save_16bit_model",
        "fp16_master_weights_and_gradients",
        *dataset_import.ARGPARSE_DATASET_OPTIONS,
    }
)  # fmt: skip


# Managed options whose value is judged where they are read (_saving, _metadata, the dataset).
_MANAGED_ELSEWHERE = frozenset(
    {
        "output_dir",
        "logging_dir",
        "log_prefix",
        "console_log_simple",
        "training_comment",
        "metadata_trigger_phrase",
    }
)
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._\- ]+")
_SCHEDULERS = frozenset(Scheduler.__args__)  # type: ignore[attr-defined]
_SAMPLERS = frozenset(Sampler.__args__)  # type: ignore[attr-defined]


def from_kohya_options(
    options: Mapping[str, object],
    dataset: Mapping[str, object] | None,
    *,
    script: str | None,
    source: str,
    base: Path | None = None,
) -> Imported:
    """A recipe from kohya's options and its dataset config.

    Args:
        options: kohya's options by name: a ``--config_file`` document (its sections are
            flattened, as kohya does) or a command line's flags.
        dataset: The ``--dataset_config`` document, or None (then ``train_data_dir``'s
            ``N_name`` folders are the subsets, as kohya reads them).
        script: The training script (``sdxl_train_network.py``), or None to infer the family from
            the options (``model_type``, ``clip_l``/``t5xxl``/``ae``, ``v2``, SDXL-only options).
        source: How the recipe's header and the notes name the source.
        base: The folder relative paths in ``options`` and ``dataset`` are relative to (kohya's
            working folder; a script's or config's own folder); None keeps them relative to the
            current folder.

    Returns:
        The recipe as dotted keys, with notes on what could not be carried over.

    Raises:
        ImportFailed: The script trains a model family lorabuild does not build.
    """
    flat = flatten_sections(options)
    imp = Imported(source=source)
    family = infer_family(flat, script, imp, base)
    imp.script = families.get(family or families.FALLBACK).train_script
    known = kohya_options.options(imp.script)

    def effective(name: str) -> object:
        value = flat.get(name)
        if value is not None:
            return value
        spec = known.get(name)
        return spec.default if spec is not None else None

    if family is not None:
        imp.set("model.family", family)
    _model(imp, flat, effective, base)
    _network(imp, flat, effective, family, base)
    _optimizer(imp, flat, effective)
    _training(imp, flat, effective)
    if family is not None:
        _flow(imp, flat, effective, family)
    _saving(imp, flat, effective, source)
    _sampling(imp, flat, effective, base)
    _deepspeed(imp, flat, base)
    dataset_import.read_dataset(imp, flat, dataset, base)
    _metadata(imp, flat)
    _the_rest(imp, flat, known)
    prune(imp)
    return imp


# --- one function per recipe table -----------------------------------------------------------------

Effective = Callable[[str], object]


def _model(imp: Imported, flat: Mapping[str, object], effective: Effective, base: Path | None) -> None:
    model = flat.get("pretrained_model_name_or_path")
    if isinstance(model, str) and model:
        imp.set_path("model.base", model, base)
    else:
        imp.set("model.base", "TODO.safetensors")
        imp.todo("model.base", "the source names no base model (kohya --pretrained_model_name_or_path)")
    for key in (
        "vae",
        "tokenizer_cache_dir",
        "clip_l",
        "clip_g",
        "t5xxl",
        "ae",
        "qwen3",
        "llm_adapter_path",
        "t5_tokenizer_path",
        "text_encoder",
        "byt5",
        "gemma2",
    ):
        value = flat.get(key)
        if isinstance(value, str) and value:
            imp.set_path(f"model.{key}", value, base)
    imp.set("model.v_parameterization", bool(effective("v_parameterization")))
    if flat.get("clip_skip") is not None:
        imp.set("model.clip_skip", flat["clip_skip"])


def _network(
    imp: Imported, flat: Mapping[str, object], effective: Effective, family: str | None, base: Path | None
) -> None:
    args: dict[str, str] = {}
    for item in values.as_list(flat.get("network_args")):
        key, sep, value = str(item).partition("=")
        if not sep:
            imp.unrepresentable(f"network_args {item!r}", "kohya needs key=value: left out")
            continue
        args[key.strip()] = value.strip()
    module = str(effective("network_module") or "networks.lora")
    algo = args.pop("algo", None)
    modules = families.get(family or families.FALLBACK).network_modules
    reverse = {(m, a): name for name, (m, a) in modules.items()}
    if module == "lycoris.kohya" and algo in (None, "lora"):
        algo = "locon"  # LyCORIS's default algo ("lora") is its LoCon module
    name = reverse.get((module, algo if module == "lycoris.kohya" else None))
    if name is None:
        imp.unrepresentable(
            "network_module",
            f"{module}{f' (algo={algo})' if algo else ''} is not a network lorabuild trains for this family "
            f"(network.module: {', '.join(modules)}): the recipe trains lora instead",
        )
        name = "lora"
    imp.set("network.module", name, comment=f"kohya {module}" + (f", algo={algo}" if algo else ""))
    imp.set("network.dim", effective("network_dim") or 4)  # networks/lora.py: None -> 4
    imp.set("network.alpha", values.number(effective("network_alpha") or 1.0))
    if flat.get("network_dropout") is not None:
        imp.set("network.dropout", flat["network_dropout"])
    unet, te = bool(flat.get("network_train_unet_only")), bool(flat.get("network_train_text_encoder_only"))
    if unet and te:
        imp.unrepresentable(
            "network_train_text_encoder_only", "set with network_train_unet_only: kohya trains the U-Net only"
        )
    imp.set("network.train", "unet" if unet else "text_encoder" if te else "both")
    if isinstance(flat.get("network_weights"), str):
        imp.set_path("network.weights", str(flat["network_weights"]), base)
    for key in ("conv_dim", "conv_alpha"):
        if key in args:
            typed = values.typed_arg(args.pop(key))
            if isinstance(typed, int | float) and not isinstance(typed, bool):
                imp.set(f"network.{key}", typed)
            else:
                args[key] = str(typed)
    if args:
        imp.set("network.args", {k: values.typed_arg(v) for k, v in args.items()})


def _optimizer(imp: Imported, flat: Mapping[str, object], effective: Effective) -> None:
    kind = str(flat.get("optimizer_type") or "")
    if not kind:
        # kohya's legacy flags, then its default (train_util.get_optimizer).
        kind = (
            "AdamW8bit"
            if flat.get("use_8bit_adam")
            else "Lion"
            if flat.get("use_lion_optimizer")
            else "AdamW"
        )
    imp.set("optimizer.type", kind)
    imp.set("optimizer.lr", values.number(effective("learning_rate")))
    if flat.get("unet_lr") is not None:
        imp.set("optimizer.unet_lr", values.number(flat["unet_lr"]))
    te_lr = flat.get("text_encoder_lr")
    te_lrs = values.as_list(te_lr)
    if te_lrs:
        if len(set(te_lrs)) > 1:
            imp.unrepresentable(
                "text_encoder_lr",
                f"one learning rate per text encoder ({te_lr!r}): the recipe has one; it uses the first",
            )
        imp.set("optimizer.text_encoder_lr", values.number(te_lrs[0]))
    scheduler = str(effective("lr_scheduler"))
    if scheduler in _SCHEDULERS:
        imp.set("optimizer.scheduler", scheduler)
    else:
        imp.unrepresentable(
            "lr_scheduler", f"{scheduler!r} is not a scheduler kohya runs: the recipe's cosine"
        )
    warmup = flat.get("lr_warmup_steps")
    if warmup is not None:
        imp.set("optimizer.warmup_steps", warmup)
    cycles = flat.get("lr_scheduler_num_cycles")
    if cycles is not None:
        if scheduler == "cosine_with_restarts":
            imp.set("optimizer.restart_cycles", cycles)
        elif cycles != 1:
            imp.unrepresentable(
                "lr_scheduler_num_cycles", f"read by cosine_with_restarts only, not {scheduler}: left out"
            )
    for option, key in (("lr_scheduler_power", "power"), ("lr_scheduler_min_lr_ratio", "min_lr_ratio")):
        if flat.get(option) is not None:
            imp.set(f"optimizer.{key}", flat[option])
    imp.set("optimizer.max_grad_norm", values.number(effective("max_grad_norm")))
    args: dict[str, object] = {}
    for item in values.as_list(flat.get("optimizer_args")):
        key, sep, value = str(item).partition("=")
        if not sep:
            imp.unrepresentable(f"optimizer_args {item!r}", "kohya needs key=value: left out")
            continue
        args[key.strip()] = values.literal_arg(imp, key.strip(), value.strip())
    if args:
        imp.set("optimizer.args", args)


def _training(imp: Imported, flat: Mapping[str, object], effective: Effective) -> None:
    epochs, steps = flat.get("max_train_epochs"), flat.get("max_train_steps")
    if epochs is not None:
        imp.set("training.epochs", epochs)
        if steps is not None:
            imp.unrepresentable(
                "max_train_steps", f"{steps}: kohya trains max_train_epochs ({epochs}) instead"
            )
    else:
        imp.todo(
            "training.epochs",
            f"kohya trains {steps or 1600} steps here (max_train_steps); a recipe counts epochs: set "
            "training.epochs (lorabuild check shows the steps an epoch takes)",
        )
    for option, key in (
        ("gradient_accumulation_steps", "gradient_accumulation_steps"),
        ("mixed_precision", "mixed_precision"),
        ("max_token_length", "max_token_length"),
        ("prior_loss_weight", "prior_loss_weight"),
    ):
        value = effective(option)
        if value is not None:
            imp.set(f"training.{key}", values.number(value) if option == "prior_loss_weight" else value)
    for flag in (
        "full_fp16",
        "full_bf16",
        "no_half_vae",
        "cache_latents",
        "cache_latents_to_disk",
        "gradient_checkpointing",
        "fp8_base",
        "cache_text_encoder_outputs",
        "cache_text_encoder_outputs_to_disk",
        "save_state",
    ):
        imp.set(f"training.{flag}", bool(flat.get(flag)))
    seed = flat.get("seed")
    if seed is None:
        imp.unrepresentable("seed", "not set: kohya picks a random seed each run; the recipe fixes one (42)")
    else:
        imp.set("training.seed", seed)
    xformers, sdpa = bool(flat.get("xformers")), bool(flat.get("sdpa"))
    if flat.get("mem_eff_attn"):
        imp.unrepresentable("mem_eff_attn", "kohya's own memory-efficient attention: the recipe uses sdpa")
        sdpa = not xformers
    imp.set("training.attention", "xformers" if xformers else "sdpa" if sdpa else "none")
    for option in ("noise_offset", "min_snr_gamma", "max_data_loader_n_workers", "blocks_to_swap"):
        if flat.get(option) is not None:
            imp.set(f"training.{option}", flat[option])


FLOW_OPTIONS = (
    "guidance_scale",
    "timestep_sampling",
    "sigmoid_scale",
    "model_prediction_type",
    "discrete_flow_shift",
    "apply_t5_attn_mask",
    "t5xxl_max_token_length",
    # SD3 (sd3_train_utils), Anima (anima_train_utils)
    "weighting_scheme",
    "logit_mean",
    "logit_std",
    "mode_scale",
    "training_shift",
    "apply_lg_attn_mask",
    "attn_mode",
    "vae_chunk_size",
    "vae_disable_cache",
    # HunyuanImage (hunyuan_image_train_network)
    "split_attn",
    "fp8_scaled",
    "fp8_vl",
    "text_encoder_cpu",
    # Lumina 2 (lumina_train_util)
    "system_prompt",
    "gemma2_max_token_length",
)
"""kohya's flow-matching options (FLUX, Chroma, SD3, Anima, HunyuanImage, Lumina 2): the recipe's ``[flow]`` table."""


_FLOW_FLAGS = frozenset(
    {
        "apply_t5_attn_mask",
        "apply_lg_attn_mask",
        "vae_disable_cache",
        "split_attn",
        "fp8_scaled",
        "fp8_vl",
        "text_encoder_cpu",
    }
)
"""The ``[flow]`` keys that are kohya flags (store_true): read back as booleans."""


def _flow(imp: Imported, flat: Mapping[str, object], effective: Effective, family: str) -> None:
    # An option the source leaves out runs at kohya's default; the recipe says so only where the
    # family would give another value (FLUX's guidance 1.0 where kohya's default is 3.5).
    family_defaults = {d.key: d.value for d in families.get(family).defaults}
    script_options = kohya_options.options(families.get(family).train_script)
    for key in FLOW_OPTIONS:
        if key not in script_options:
            continue  # not the family's (the SD scripts have no [flow] options at all)
        family_default = family_defaults.get(f"flow.{key}")
        value = effective(key)
        if family_default is None and flat.get(key) is None:
            continue  # left out, it compiles to nothing: kohya's default (a source that says it, keeps it)
        if key in _FLOW_FLAGS:
            value = bool(value)
        if value is not None:
            imp.set(
                f"flow.{key}",
                values.number(value)
                if isinstance(value, int)
                and not isinstance(value, bool)
                and key not in ("t5xxl_max_token_length", "vae_chunk_size", "gemma2_max_token_length")
                else value,
            )


def _saving(imp: Imported, flat: Mapping[str, object], effective: Effective, source: str) -> None:
    name = flat.get("output_name")
    if not isinstance(name, str) or not name.strip():
        name = Path(source.split(" ")[0]).stem or "imported"
        imp.todo("name", f"the source names no output (kohya output_name): named {name!r} after the file")
    clean = _NAME_CHARS.sub("_", name).strip(" ._-") or "imported"
    if clean != name:
        imp.unrepresentable("output_name", f"{name!r} is not a file name lorabuild accepts: {clean!r}")
    imp.set("name", clean)
    imp.set("training.save_model_as", effective("save_model_as") or "safetensors")
    precision = flat.get("save_precision")
    imp.set("training.save_precision", precision if precision is not None else "float")
    every = flat.get("save_every_n_epochs")
    if every is None:
        imp.unrepresentable(
            "save_every_n_epochs",
            "not set: kohya saves only at the end; lorabuild saves every epoch (save_every_n_epochs = 1)",
        )
    else:
        imp.set("training.save_every_n_epochs", every)
    for option, expected in (
        ("output_dir", str(BuildLayout.OUTPUT)),
        ("logging_dir", str(BuildLayout.LOGS)),
        ("log_prefix", f"{clean}_"),
        ("console_log_simple", True),
    ):
        value = flat.get(option)
        if value not in (None, "", False) and value != expected:
            imp.unrepresentable(option, f"{value!r} dropped: {MANAGED[option]}")


def _sampling(imp: Imported, flat: Mapping[str, object], effective: Effective, base: Path | None) -> None:
    prompts_file = flat.get("sample_prompts")
    if isinstance(prompts_file, str) and prompts_file:
        path = Path(prompts_file) if base is None or Path(prompts_file).is_absolute() else base / prompts_file
        if path.is_file():
            dataset_import.read_sample_prompts(imp, path)
        else:
            imp.todo(
                "evaluate.prompts", f"the sample prompts file {prompts_file!r} is not here: write the prompts"
            )
    every = flat.get("sample_every_n_epochs")
    if every is not None:
        imp.set("evaluate.sample_every_n_epochs", every)
        if "evaluate.prompts" not in imp.values:
            imp.todo(
                "evaluate.prompts",
                "kohya samples images every few epochs here, but the source holds no prompts",
            )
    sampler = flat.get("sample_sampler")
    if sampler is not None:
        if sampler in _SAMPLERS:
            imp.set("evaluate.sampler", sampler)
        else:
            imp.unrepresentable("sample_sampler", f"{sampler!r} is not a sampler kohya has")


def _deepspeed(imp: Imported, flat: Mapping[str, object], base: Path | None) -> None:
    if not flat.get("deepspeed"):
        return
    keys = (
        "zero_stage",
        "offload_optimizer_device",
        "offload_param_device",
        "zero3_init_flag",
        "zero3_save_16bit_model",
        "fp16_master_weights_and_gradients",
    )
    imp.set("launch.deepspeed.zero_stage", flat.get("zero_stage", 2))
    for key in keys[1:]:
        if flat.get(key) is not None:
            imp.set(f"launch.deepspeed.{key}", flat[key])
    for key in ("offload_optimizer_nvme_path", "offload_param_nvme_path"):
        if isinstance(flat.get(key), str):
            imp.set_path(f"launch.deepspeed.{key}", str(flat[key]), base)


def _metadata(imp: Imported, flat: Mapping[str, object]) -> None:
    title = flat.get("metadata_title")
    if isinstance(title, str) and title and title != imp.get("name"):
        imp.set("title", title)
    for option, key in (("metadata_author", "author"), ("metadata_description", "description")):
        if isinstance(flat.get(option), str) and flat[option]:
            imp.set(key, flat[option])
    trigger = flat.get("metadata_trigger_phrase")
    subsets = imp.get("dataset.subsets")
    triggers = [s.get("trigger") for s in subsets if isinstance(s, dict)] if isinstance(subsets, list) else []
    first = next((t for t in triggers if t), None)
    if trigger and trigger != first:
        imp.unrepresentable(
            "metadata_trigger_phrase", f"{trigger!r}: lorabuild writes the first subset's trigger ({first!r})"
        )
    comment = flat.get("training_comment")
    if str(comment).startswith("lorabuild ") and isinstance(subsets, list):
        for index in range(len(subsets)):
            imp.todo(
                f"dataset.subsets[{index}].source",
                "lorabuild's staged copy in the build folder (build/<name>/dataset/): point it at the "
                "original folder of images and captions",
            )
    if comment and not str(comment).startswith("lorabuild "):
        imp.unrepresentable("training_comment", f"{comment!r} dropped: {MANAGED['training_comment']}")


def _the_rest(
    imp: Imported, flat: Mapping[str, object], known: Mapping[str, kohya_options.OptionSpec]
) -> None:
    """Every option not read above: secrets removed, managed ones noted, kohya's into [kohya], the rest listed."""
    for name, value in flat.items():
        if is_secret(name):
            if value:
                imp.secret(name)
            continue
        if name in MAPPED or value is None or value == "" or value == []:
            continue  # read above, or nothing said
        if name in MANAGED:
            if name not in _MANAGED_ELSEWHERE and value is not False:
                imp.unrepresentable(name, f"{value!r} dropped: {MANAGED[name]}")
            continue
        if name not in known:
            imp.unknown(name, value, imp.script)
            continue
        spec = known[name]
        if value == spec.default or (isinstance(spec.default, tuple) and value == list(spec.default)):
            continue  # kohya's default: nothing to say
        problem = kohya_options.check_config_value(imp.script or "train_network.py", name, value)
        if problem or not values.is_kohya_value(value):
            imp.unrepresentable(name, f"{value!r}: {problem or 'not a value a recipe can hold'}")
            continue
        imp.set(f"kohya.{name}", value)
