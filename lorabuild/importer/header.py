"""A LoRA file's ``ss_*`` training metadata (KOHYA.md section 7.2) back into a recipe.

kohya's ``train_network.py`` writes its options into every saved file's safetensors header as
strings. :func:`from_header` turns them back into kohya options and a dataset config (from
``ss_datasets``, or the folder-method keys ``ss_resolution``, ``ss_dataset_dirs``...) and reads
those as :func:`~lorabuild.importer.kohya.from_kohya_options` does. Only the header is read: a
file cut after its header (a few kB, as the tests keep) imports as the whole file does.

What a header cannot hold is left as a TODO: the base model's and the data folders' paths (only
their names are there), the captions, the sample prompts, the save cadence. A trigger is guessed
per subset from ``ss_tag_frequency`` (the tag in most of its captions).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from lorabuild.importer.kohya import FLOW_OPTIONS, from_kohya_options
from lorabuild.importer.model import Imported, ImportFailed, NoteKind
from lorabuild.kohya import families
from lorabuild.kohya import options as kohya_options
from lorabuild.render.safetensors_header import HeaderError, read_header

# ss_base_model_version (library/train_util.py get_sd_version / the FLUX and Chroma trainers; the SD3
# trainer writes the MMDiT's model_type, sd3_utils.load_mmdit; the Anima trainer "anima", the
# HunyuanImage trainer "hunyuan-image-2.1", the Lumina trainer "lumina2") -> family.
BASE_MODEL_FAMILIES = {
    "sd_v1": "sd15",
    "sd_v1_v": "sd15",
    "sd_v2": "sd2",
    "sd_v2_v": "sd2",
    "sdxl_base_v1-0": "sdxl",
    "flux1": "flux",
    "chroma": "chroma",
    "medium": "sd3",
    "5-medium": "sd3",
    "5-large": "sd3",
    "anima": "anima",
    "hunyuan-image-2.1": "hunyuan",
    "lumina2": "lumina",
}

# ss_* keys that are kohya's option of the same name without the prefix.
_SAME_NAME = (
    "learning_rate", "unet_lr", "text_encoder_lr", "gradient_checkpointing", "gradient_accumulation_steps",
    "lr_warmup_steps", "lr_scheduler", "network_module", "network_dim", "network_alpha", "network_dropout",
    "mixed_precision", "full_fp16", "v2", "clip_skip", "max_token_length", "cache_latents", "seed",
    "noise_offset", "multires_noise_iterations", "multires_noise_discount", "adaptive_noise_scale",
    "zero_terminal_snr", "max_grad_norm", "caption_dropout_rate", "caption_dropout_every_n_epochs",
    "caption_tag_dropout_rate", "prior_loss_weight", "min_snr_gamma", "scale_weight_norms", "ip_noise_gamma",
    "debiased_estimation_loss", "noise_offset_random_strength", "ip_noise_gamma_random_strength", "loss_type",
    "huber_schedule", "huber_scale", "huber_c", "fp8_base", "fp8_base_unet", "validation_seed",
    "validation_split", "max_validation_steps", "validate_every_n_epochs", "validate_every_n_steps",
    "output_name", "training_comment", "model_type", "apply_t5_attn_mask", "weighting_scheme", "logit_mean",
    "logit_std", "mode_scale", "apply_lg_attn_mask", "guidance_scale", "timestep_sampling", "sigmoid_scale", "model_prediction_type",
    "discrete_flow_shift", "resize_interpolation", "max_train_steps",
)  # fmt: skip
_RENAMED = {"num_epochs": "max_train_epochs", "debiased_estimation": "debiased_estimation_loss"}
# Folder-method keys (no --dataset_config): dataset values.
_FOLDER_KEYS = {
    "batch_size_per_device": "batch_size",
    "enable_bucket": "enable_bucket",
    "bucket_no_upscale": "bucket_no_upscale",
    "min_bucket_reso": "min_bucket_reso",
    "max_bucket_reso": "max_bucket_reso",
    "color_aug": "color_aug",
    "flip_aug": "flip_aug",
    "random_crop": "random_crop",
    "shuffle_caption": "shuffle_caption",
    "keep_tokens": "keep_tokens",
}
# What a header says about the run, not about its settings: read by nobody.
_RECORD = re.compile(
    r"^(ss_(session_id|training_started_at|training_finished_at|num_train_images|num_validation_images|"
    r"num_reg_images|num_batches_per_epoch|steps|epoch|sd_scripts_commit_hash|sd_model_hash|new_sd_model_hash|"
    r"vae_hash|new_vae_hash|total_batch_size|bucket_info|tag_frequency|dataset_dirs|reg_dataset_dirs|"
    r"datasets|lowram|optimizer|network_args|base_model_version|sd_model_name|vae_name|resolution|"
    r"face_crop_aug_range)|sshs_.*|modelspec\..*)$"
)


def from_header(path: Path) -> Imported:
    """A recipe from the ``ss_*`` metadata in the safetensors file at ``path``.

    Raises:
        ImportFailed: The file is not a whole safetensors header, or carries no kohya training metadata.
    """
    name = path.as_posix()
    try:
        header = read_header(path)
        meta = header.metadata
    except HeaderError as exc:
        raise ImportFailed(name, f"is not a safetensors file whose header can be read: {exc}") from None
    except OSError as exc:
        raise ImportFailed(name, f"cannot be read: {exc.strerror or exc}") from None
    if not any(k.startswith("ss_") for k in meta):
        raise ImportFailed(
            name,
            "has no kohya training metadata (ss_* keys) in its header: it was saved by another tool, "
            "or trained with --no_metadata",
        )
    options: dict[str, object] = {}
    for key in _SAME_NAME:
        value = _value(meta.get(f"ss_{key}"))
        if value is not None:
            options[key] = value
    for key, option in _RENAMED.items():
        value = _value(meta.get(f"ss_{key}"))
        if value is not None:
            options[option] = value
    family = BASE_MODEL_FAMILIES.get(meta.get("ss_base_model_version", ""))
    if family is None and meta.get("ss_base_model_version"):
        raise ImportFailed(
            name,
            f"was trained on a {meta['ss_base_model_version']!r} model (ss_base_model_version): lorabuild "
            f"builds {', '.join(families.names())} LoRAs",
        )
    if meta.get("ss_base_model_version", "").endswith("_v"):
        options["v_parameterization"] = True
    _network_args(meta, options)
    _optimizer(meta, options)
    if meta.get("ss_sd_model_name"):
        options["pretrained_model_name_or_path"] = meta["ss_sd_model_name"]
    if meta.get("ss_vae_name"):
        options["vae"] = meta["ss_vae_name"]
    dataset, img_counts = _dataset(meta, options)
    script = families.get(family).train_script if family else None
    for key in ("title", "author", "description"):
        if meta.get(f"modelspec.{key}"):
            options[f"metadata_{key}"] = meta[f"modelspec.{key}"]
    trained = _trained_parts(header.fields)
    if trained == "unet":
        options["network_train_unet_only"] = True
    elif trained == "text_encoder":
        options["network_train_text_encoder_only"] = True
    if options.get("max_train_epochs") is not None:
        options.pop("max_train_steps", None)  # the steps kohya computed from the epochs
    precision = _saved_precision(header.fields)
    if precision is not None:
        options["save_precision"] = precision
    if script is not None:
        # kohya writes every ss_ key, set or not: a flow option at kohya's default says nothing (a
        # config that sets it keeps it; the header's copy would only add lines to the recipe).
        known = kohya_options.options(script)
        for key in FLOW_OPTIONS:
            if key in options and key in known and options[key] == known[key].default:
                del options[key]
    imp = from_kohya_options(options, dataset, script=script, source=name, base=None)
    _todo(imp, meta, img_counts)
    if precision is None:
        imp.todo("training.save_precision", "the header does not say the precision it was saved in")
    for key in FLOW_OPTIONS:
        # No ss_ key (Anima's vae_disable_cache...): not kohya's default, unknown; the family's applies.
        if f"ss_{key}" not in meta and imp.values.pop(f"flow.{key}", None) is not None:
            imp.todo(
                f"flow.{key}", "the header does not say it (kohya writes no ss_ key): the family's default"
            )
    imp.values.pop("training.attention", None)
    imp.todo(
        "training.attention",
        "the header does not say the attention kernel (xformers, sdpa): the family's default",
    )
    return imp


def _trained_parts(fields: Mapping[str, object]) -> str | None:
    """Which parts the LoRA's tensors belong to (kohya names them lora_unet_*, lora_te*_*)."""
    names = [k for k in fields if k != "__metadata__"]
    unet = any(n.startswith("lora_unet_") for n in names)
    te = any(n.startswith("lora_te") for n in names)
    return "unet" if unet and not te else "text_encoder" if te and not unet else None


_DTYPE_PRECISION = {"F32": "float", "F16": "fp16", "BF16": "bf16"}


def _saved_precision(fields: Mapping[str, object]) -> str | None:
    """kohya's save_precision from the tensors' dtype (all of one dtype), or None."""
    dtypes = {str(v.get("dtype")) for k, v in fields.items() if k != "__metadata__" and isinstance(v, dict)}
    return _DTYPE_PRECISION.get(dtypes.pop()) if len(dtypes) == 1 else None


def _value(text: str | None) -> object:
    """A metadata string as the option value it was written from (``str(value)`` in kohya)."""
    if text is None or text in ("None", ""):
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _network_args(meta: Mapping[str, str], options: dict[str, object]) -> None:
    raw = meta.get("ss_network_args")
    if not raw:
        return
    try:
        args = json.loads(raw)
    except ValueError:
        return
    if isinstance(args, dict):
        # train_network.py injects network_dropout into the parsed args as "dropout".
        dropout = meta.get("ss_network_dropout")
        items = [f"{k}={v}" for k, v in args.items() if not (k == "dropout" and str(v) in (dropout, "None"))]
        if items:
            options["network_args"] = items


def _optimizer(meta: Mapping[str, str], options: dict[str, object]) -> None:
    """``ss_optimizer`` (``module.Class(k=v,...)``) as kohya's optimizer_type and optimizer_args."""
    text = meta.get("ss_optimizer")
    if not text:
        return
    match = re.fullmatch(r"([\w.]+)(?:\((.*)\))?", text.strip(), re.DOTALL)
    if not match:
        return
    dotted, args = match.group(1), match.group(2)
    module, _, cls = dotted.rpartition(".")
    # kohya names its optimizers by class (AdamW, AdamW8bit, Lion, Lion8bit, Prodigy, Adafactor,
    # DAdaptAdam...); torch's SGD with nesterov is kohya's SGDNesterov.
    if cls == "SGD" and args and "nesterov=True" in args:
        cls = "SGDNesterov"
    known = module.split(".")[0] in (
        "torch", "bitsandbytes", "lion_pytorch", "prodigyopt", "transformers", "dadaptation", "schedulefree"
    )  # fmt: skip
    options["optimizer_type"] = cls if known else dotted
    if args:
        items = [a.strip() for a in re.split(r",(?![^()\[\]]*[)\]])", args) if "=" in a]
        drop = {"nesterov=True"} if cls == "SGDNesterov" else set()
        kept = [a for a in items if a not in drop]
        if kept:
            options["optimizer_args"] = kept


def _dataset(meta: Mapping[str, str], options: dict[str, object]) -> tuple[dict[str, object], list[int]]:
    """The dataset config the header describes, and each subset's image count."""
    counts: list[int] = []
    raw = meta.get("ss_datasets")
    datasets: list[dict[str, object]] = []
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = []
        for ds in parsed if isinstance(parsed, list) else []:
            if not isinstance(ds, dict):
                continue
            out: dict[str, object] = {}
            for key, option in (
                ("batch_size_per_device", "batch_size"),
                ("resolution", "resolution"),
                ("enable_bucket", "enable_bucket"),
                ("min_bucket_reso", "min_bucket_reso"),
                ("max_bucket_reso", "max_bucket_reso"),
            ):
                if ds.get(key) is not None:
                    out[option] = ds[key]
            subsets = []
            for subset in ds.get("subsets") or []:
                if not isinstance(subset, dict):
                    continue
                kept = {
                    k: v
                    for k, v in subset.items()
                    if v is not None and k not in ("img_count", "metadata_file", "image_dir")
                }
                kept["image_dir"] = str(subset.get("image_dir") or "TODO")
                kept.setdefault("caption_extension", ".txt")
                subsets.append(kept)
                counts.append(int(subset.get("img_count") or 0))
            for key in ("shuffle_caption", "keep_tokens", "flip_aug", "color_aug", "random_crop"):
                values = [sub.get(key) for sub in subsets]
                if subsets and all(v == values[0] for v in values) and values[0] is not None:
                    out[key] = values[0]
                    for sub in subsets:
                        sub.pop(key, None)
            out["subsets"] = subsets
            datasets.append(out)
    else:
        folder: dict[str, object] = {}
        for key, option in _FOLDER_KEYS.items():
            value = _value(meta.get(f"ss_{key}"))
            if value is not None:
                folder[option] = value
        resolution = re.findall(r"\d+", meta.get("ss_resolution", ""))
        if len(resolution) == 2:
            folder["resolution"] = [int(r) for r in resolution]
        subsets = []
        for key, is_reg in (("ss_dataset_dirs", False), ("ss_reg_dataset_dirs", True)):
            try:
                dirs = json.loads(meta.get(key) or "{}")
            except ValueError:
                dirs = {}
            for name, info in dirs.items() if isinstance(dirs, dict) else []:
                info = info if isinstance(info, dict) else {}
                parts = name.split("_", 1)
                entry: dict[str, object] = {
                    "image_dir": name,
                    "num_repeats": int(info.get("n_repeats") or 1),
                    "caption_extension": ".txt",
                }
                if len(parts) == 2 and parts[0].isdigit() and parts[1]:
                    entry["class_tokens"] = parts[1]
                if is_reg:
                    entry["is_reg"] = True
                subsets.append(entry)
                counts.append(int(info.get("img_count") or 0))
        folder["subsets"] = subsets
        datasets.append(folder)
    return {"datasets": datasets}, counts


def _todo(imp: Imported, meta: Mapping[str, str], img_counts: list[int]) -> None:
    """What the header cannot hold, as TODOs; the trigger guessed from the tag counts."""
    imp.notes[:] = [
        n
        for n in imp.notes
        if n.key not in ("save_every_n_epochs", "seed", "dataset_config")
        and not n.key.startswith("dataset.subsets")
    ]
    if "model.base" in imp.values:
        imp.todo("model.base", "the header holds the base model's file name only: give its path")
    if "model.vae" in imp.values:
        imp.todo("model.vae", "the header holds the file name only: give its path")
    family = imp.get("model.family")
    for model_file in families.get(str(family)).model_files if family else ():
        imp.todo(
            f"model.{model_file.key}",
            f"{model_file.label} (e.g. {model_file.example}): the header does not name it",
        )
    frequency: dict[str, dict[str, int]] = {}
    try:
        parsed = json.loads(meta.get("ss_tag_frequency") or "{}")
        frequency = parsed if isinstance(parsed, dict) else {}
    except ValueError:
        pass
    subsets = imp.get("dataset.subsets")
    for index, subset in enumerate(subsets if isinstance(subsets, list) else []):
        source = subset.get("source")
        folder = Path(str(source)).name if source is not None else "TODO"
        subset["source"] = f"data/{folder}"
        imp.todo(
            f"dataset.subsets[{index}].source",
            f"the header names the folder {folder!r} only: point it at your images and captions",
        )
        tags = frequency.get(folder) or {}
        if "trigger" not in subset and tags:
            tag, count = max(tags.items(), key=lambda item: (item[1], -len(item[0])))
            images = img_counts[index] if index < len(img_counts) else 0
            subset["trigger"] = tag.strip()
            imp.todo(
                f"dataset.subsets[{index}].trigger",
                f"guessed from ss_tag_frequency: {tag!r} is in {count}"
                + (f" of {images}" if images else "")
                + " captions",
            )
    imp.todo("captions", "the header holds tag counts only: the captions come with your images")
    imp.todo("evaluate.prompts", "the header holds no sample prompts: write the prompts to render")
    if meta.get("ss_training_comment", "").startswith("lorabuild "):
        imp.notes[:] = [n for n in imp.notes if n.key != "training_comment"]
    imp.note(NoteKind.TODO, "training.save_every_n_epochs", "the header does not say how often it was saved")
    for key in meta:
        if key.startswith("ss_") and not _RECORD.match(key):
            bare = key[3:]
            if bare not in _SAME_NAME and bare not in _RENAMED and bare not in _FOLDER_KEYS:
                imp.unrepresentable(key, f"{meta[key][:60]!r}: lorabuild does not read this key")
