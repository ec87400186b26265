"""Akegarasu/lora-scripts configs → kohya's options.

lora-scripts (秋叶's trainer) keeps its settings in three TOML shapes and two scripts:

- the legacy sectioned TOML (``config/default.toml``: ``[model] [dataset] [additional_network]
  [optimizer] [training] [sample_prompt] [saving] [others]``; ``config/lora.toml`` spells them
  ``[model_arguments]``…): kohya's own ``--config_file``, whose sections kohya flattens. Keys kohya
  does not know (``lr_restart_cycles``: the scripts pass it as ``--lr_scheduler_num_cycles``, the
  TOML does not) are silently ignored by kohya, so they are listed, not mapped;
- the web UI's autosaves (``config/autosave/<time>.toml``): a flat ``--config_file`` written after
  ``model_train_type`` was popped (mikazuki/app/api.py), so the family is inferred from the keys
  present (``clip_l``/``t5xxl``/``ae`` → FLUX.1, ``model_type = "chroma"`` → Chroma, ``clip_g`` → SD3);
- presets (``config/presets/*.toml``): ``[metadata]`` (the preset's own name, author, ``train_type``)
  and ``[data]``, a partial set of the web UI's keys;
- ``train.sh`` / ``train.ps1``: variables, then one ``accelerate launch`` whose flags they decide
  (:func:`from_script_variables` maps the variables; the script's own grammar is read elsewhere).

The web UI's form keys that its frontend folds into kohya options before saving (``lycoris_algo``,
``network_args_custom``, ``positive_prompts``…) are translated here too, for configs saved by hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from lorabuild.importer.model import Imported, NoteKind, is_secret
from lorabuild.importer.scripts import bash_words
from lorabuild.importer.translated import Translated, coerce, refuse, to_imported
from lorabuild.kohya import options as kohya_options

# lora-scripts' model_train_type / train_type → kohya's script (mikazuki/app/api.py trainer_mapping).
TRAIN_TYPES = {
    "sd-lora": "train_network.py",
    "lora-basic": "train_network.py",
    "lora-master": "train_network.py",
    "sdxl-lora": "sdxl_train_network.py",
    "sd3-lora": "sd3_train_network.py",
    "flux-lora": "flux_train_network.py",
    "lumina2-lora": "lumina_train_network.py",
}

# The legacy sectioned TOML's tables (both spellings): kohya flattens them.
SECTIONS = frozenset(
    {
        "model", "dataset", "additional_network", "optimizer", "training", "sample_prompt", "saving", "others",
        "model_arguments", "dataset_arguments", "additional_network_arguments", "optimizer_arguments",
        "training_arguments", "sample_prompt_arguments", "saving_arguments", "logging_arguments",
    }
)  # fmt: skip

# The web UI's own form keys (mikazuki/schema/*.ts) → how they reach kohya.
_LYCORIS_FORM = {"lycoris_algo": "algo", "conv_dim": "conv_dim", "conv_alpha": "conv_alpha", "dropout": "dropout",
                 "train_norm": "train_norm", "lokr_factor": "factor", "dylora_unit": "unit"}  # fmt: skip
_PROMPT_FORM = ("positive_prompts", "negative_prompts", "sample_width", "sample_height", "sample_cfg",
                "sample_seed", "sample_steps", "randomly_choice_prompt", "prompt_file", "enable_preview")  # fmt: skip
_UI_SWITCHES = ("enable_base_weight", "enable_block_weights", "ui_custom_params")


# Keys only lora-scripts writes: a flat TOML holding one is its web UI's, not kohya's own.
SIGNATURE_KEYS = frozenset(
    {"model_train_type", "lycoris_algo", "network_args_custom", "optimizer_args_custom",
     "positive_prompts", "enable_preview", "ui_custom_params", "enable_base_weight", "enable_block_weights"}
)  # fmt: skip
# Section names only lora-scripts' legacy TOML uses ([model], [dataset], [optimizer], [training],
# [saving] and [others] are also lorabuild's config.toml sections or hand-written kohya ones).
LEGACY_SECTIONS = frozenset({"additional_network", "sample_prompt"})


def read(path: Path, doc: Mapping[str, object]) -> Imported | None:
    """A lora-scripts TOML as a recipe, or None when it is not one (``sources.TOML_READERS``).

    Claimed: presets (``[metadata]``), the legacy sections, and TOMLs holding a key only
    lora-scripts writes (:data:`SIGNATURE_KEYS`); kohya's own config files are left to its reader.
    """
    if not looks_like(doc):
        return None
    return to_imported(translate(path, doc))


def looks_like(doc: Mapping[str, object]) -> bool:
    """Whether a TOML document is lora-scripts' rather than kohya's own."""
    tables = {k for k, v in doc.items() if isinstance(v, dict)}
    keys = {k for v in doc.values() if isinstance(v, dict) for k in v} | set(doc)
    return is_preset(doc) or bool(tables & LEGACY_SECTIONS) or bool(keys & SIGNATURE_KEYS)


def is_preset(doc: Mapping[str, object]) -> bool:
    """A preset: a ``[metadata]`` table of its own (name, author…), not kohya's ``metadata_*`` options
    (which lorabuild's config.toml also groups under ``[metadata]``)."""
    metadata = doc.get("metadata")
    return isinstance(metadata, dict) and not any(str(k).startswith("metadata_") for k in metadata)


def root(path: Path) -> Path:
    """lora-scripts' folder, which its relative paths start from: above ``config/``, else the file's folder."""
    parts = path.absolute().parts
    if "config" in parts[:-1]:
        index = len(parts) - 1 - parts[::-1].index("config")
        return Path(*parts[:index])
    return path.absolute().parent


def translate(path: Path, data: Mapping[str, object]) -> Translated:
    """Translate a lora-scripts TOML (sectioned, autosave or preset), accounting for every key.

    Its tables are sections, which kohya flattens (any name: lora-scripts' or kohya's own).

    Raises:
        ImportFailed: The document holds nothing.
    """
    if is_preset(data):
        return _preset(path, data)
    flat: dict[str, object] = {}
    where: dict[str, str] = {}
    overridden: dict[str, str] = {}
    for key, value in data.items():
        for inner, item in value.items() if isinstance(value, dict) else [(key, value)]:
            if inner in where:  # kohya: a later section's key wins
                overridden[where[inner]] = f"overridden by {key}.{inner} (kohya reads the last one)"
            flat[inner] = item
            where[inner] = f"{key}.{inner}" if isinstance(value, dict) else key
    if not flat:
        raise refuse(path, "holds no settings")
    script = _script(flat)
    out = Translated(path, script, base=root(path))
    for source, why in overridden.items():
        out.skip(source, why)
    _options(flat, where, out)
    return out


def _script(flat: Mapping[str, object]) -> str:
    """kohya's script for a flat config: from model_train_type when present, else from its keys."""
    kind = flat.get("model_train_type")
    if isinstance(kind, str) and kind in TRAIN_TYPES:
        return TRAIN_TYPES[kind]
    if "clip_g" in flat:
        return "sd3_train_network.py"
    if {"t5xxl", "ae", "model_type"} & flat.keys() or str(flat.get("network_module", "")).endswith("_flux"):
        return "flux_train_network.py"
    if "gemma2" in flat:
        return "lumina_train_network.py"
    return "train_network.py"


def _unset(value: object) -> bool:
    # kohya tests these options for truth ("if args.reg_data_dir:"), so an empty string or list is unset.
    return value is None or value == "" or value == []


def _options(flat: Mapping[str, object], where: Mapping[str, str], out: Translated) -> None:
    known = kohya_options.options(out.script)
    if "model_train_type" in flat:
        out.skip(where["model_train_type"], f"picks kohya's script ({out.script})")
    if out.script == "train_network.py" and "model_train_type" not in flat:
        out.note(
            NoteKind.TODO,
            "model.family",
            "the config does not say the model family (lora-scripts picks the script outside it): "
            "model.family is left to the checkpoint's header; set it for an SDXL model",
        )
    network_args: list[str] = []
    optimizer_args: list[str] = []
    for key, value in flat.items():
        source = where[key]
        if source in out.accounted:
            continue
        if is_secret(key):
            out.secret(source, value)
        elif key in _LYCORIS_FORM:
            if not _unset(value):
                network_args.append(f"{_LYCORIS_FORM[key]}={_arg(value)}")
            out.skip(source, f"kohya network_args {_LYCORIS_FORM[key]}")
        elif key in ("network_args_custom", "optimizer_args_custom"):
            items = [str(v) for v in value] if isinstance(value, list) else str(value).split()
            (network_args if key == "network_args_custom" else optimizer_args).extend(items)
            out.skip(source, f"kohya {key.removesuffix('_custom')}")
        elif key in ("prodigy_d0", "prodigy_d_coef"):
            optimizer_args.append(f"{key.removeprefix('prodigy_')}={value}")
            out.skip(source, f"kohya optimizer_args {key.removeprefix('prodigy_')}")
        elif key in _PROMPT_FORM or key in _UI_SWITCHES:
            _form_key(key, value, source, out)
        elif _unset(value):
            out.skip(source, "unset")
        elif key in known:
            out.option(source, key, coerce(out.script, key, value))
        else:
            hint = (
                " (lora-scripts' scripts pass it as --lr_scheduler_num_cycles)"
                if key == "lr_restart_cycles"
                else ""
            )
            out.note(
                NoteKind.UNKNOWN,
                source,
                f"{key} = {value!r}: kohya's {out.script} has no such option and ignores it{hint}",
            )
    if network_args:
        out.options["network_args"] = [*list(_as_list(out.options.get("network_args"))), *network_args]
    if optimizer_args:
        out.options["optimizer_args"] = [*list(_as_list(out.options.get("optimizer_args"))), *optimizer_args]


def _form_key(key: str, value: object, source: str, out: Translated) -> None:
    if key == "positive_prompts" and isinstance(value, str) and value.strip():
        out.set(source, "evaluate.prompts", [line.strip() for line in value.splitlines() if line.strip()])
    elif key == "negative_prompts" and isinstance(value, str):
        out.set(source, "evaluate.negative_prompt", " ".join(value.split()))
    elif key in ("sample_width", "sample_height", "sample_cfg", "sample_steps") and not _unset(value):
        target = {
            "sample_width": "width",
            "sample_height": "height",
            "sample_cfg": "cfg_scale",
            "sample_steps": "steps",
        }
        out.set(source, f"evaluate.{target[key]}", value)
    elif key == "sample_seed" and isinstance(value, int):
        out.set(source, "evaluate.seeds", [value])
    elif key == "enable_preview":
        out.skip(source, "the web UI's preview switch (sample_every_n_epochs says it)")
    elif key == "ui_custom_params" and not _unset(value):
        out.note(
            NoteKind.UNREPRESENTABLE, source, "the web UI's raw TOML overrides: import them as their own file"
        )
    elif _unset(value) or value is False:
        out.skip(source, "unset")
    else:
        out.note(NoteKind.UNREPRESENTABLE, source, f"the web UI setting {key} = {value!r} has no recipe key")


def _preset(path: Path, data: Mapping[str, object]) -> Translated:
    metadata = data["metadata"]
    assert isinstance(metadata, dict)
    body = {k: v for k, v in data.items() if k != "metadata"}
    flat: dict[str, object] = {}
    where: dict[str, str] = {}
    for key, value in body.items():
        if not isinstance(value, dict):
            raise refuse(path, f"a lora-scripts preset holds tables ([metadata], [data]); {key} is not one")
        for inner, item in value.items():
            flat[inner], where[inner] = item, f"{key}.{inner}"
    train_type = metadata.get("train_type")
    if isinstance(train_type, str) and train_type in TRAIN_TYPES:
        flat.setdefault("model_train_type", train_type)
        where.setdefault("model_train_type", "metadata.train_type")
    out = Translated(path, _script(flat), base=root(path))
    for key in metadata:
        if key == "train_type":
            continue
        out.skip(f"metadata.{key}", "the preset's own description (lora-scripts shows it in its list)")
    if "model_train_type" not in flat and "train_type" in metadata:
        out.skip("metadata.train_type", "empty: the preset fits every kind of training")
    out.note(
        NoteKind.TODO,
        "(preset)",
        "a preset holds only the settings it changes: set model.base and dataset.subsets (the rest are "
        "lorabuild's defaults, not lora-scripts')",
    )
    _options(flat, where, out)
    return out


def _arg(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


# --- train.sh / train.ps1 --------------------------------------------------------------------------

# The scripts' variables → the kohya option each one's line of the launch sets (train.sh/train.ps1
# at lora-scripts fdefba97). Flags are passed when the variable is 1; handled below: model_type,
# parameterization, the LyCORIS variables, use_wandb, multi_gpu, DAdaptation's optimizer_args.
SCRIPT_OPTIONS = {
    "pretrained_model": "pretrained_model_name_or_path",
    "network_module": "network_module",
    "network_weights": "network_weights",
    "network_dim": "network_dim",
    "network_alpha": "network_alpha",
    "resolution": "resolution",
    "batch_size": "train_batch_size",
    "max_train_epoches": "max_train_epochs",
    "save_every_n_epochs": "save_every_n_epochs",
    "noise_offset": "noise_offset",
    "keep_tokens": "keep_tokens",
    "min_snr_gamma": "min_snr_gamma",
    "lr": "learning_rate",
    "unet_lr": "unet_lr",
    "text_encoder_lr": "text_encoder_lr",
    "lr_scheduler": "lr_scheduler",
    "lr_warmup_steps": "lr_warmup_steps",
    "lr_restart_cycles": "lr_scheduler_num_cycles",
    "optimizer_type": "optimizer_type",
    "output_name": "output_name",
    "save_model_as": "save_model_as",
    "resume": "resume",
    "min_bucket_reso": "min_bucket_reso",
    "max_bucket_reso": "max_bucket_reso",
    "clip_skip": "clip_skip",
    "stop_text_encoder_training": "stop_text_encoder_training",
    "log_tracker_name": "log_tracker_name",
}
SCRIPT_FLAGS = {
    "train_unet_only": "network_train_unet_only",
    "train_text_encoder_only": "network_train_text_encoder_only",
    "save_state": "save_state",
    "persistent_data_loader_workers": "persistent_data_loader_workers",
    "lowram": "lowram",
    "parameterization": "v_parameterization",
}
# What the launch line always passes (train.sh's "accelerate launch … \" lines).
SCRIPT_FIXED: dict[str, object] = {
    "enable_bucket": True,
    "output_dir": "./output",
    "logging_dir": "./logs",
    "mixed_precision": "fp16",
    "save_precision": "fp16",
    "seed": 1337,
    "cache_latents": True,
    "prior_loss_weight": 1.0,
    "max_token_length": 225,
    "caption_extension": ".txt",
    "xformers": True,
    "shuffle_caption": True,
}
_MODEL_TYPES = {"sd1.5": "train_network.py", "sd2.0": "train_network.py", "sdxl": "sdxl_train_network.py",
                "flux": "flux_train_network.py"}  # fmt: skip


MARKER = "DO NOT MODIFY CONTENTS BELOW"
"""The line of lora-scripts' train.sh/train.ps1 above which the user's variables are set."""
VARIABLES = (*SCRIPT_OPTIONS, *SCRIPT_FLAGS, "model_type", "train_data_dir", "reg_data_dir", "algo", "conv_dim",
             "conv_alpha", "dropout", "use_wandb", "wandb_api_key", "multi_gpu")  # fmt: skip
"""Every variable lora-scripts' train.sh/train.ps1 sets for its launch."""


def read_script(path: Path) -> Imported | None:
    """A lora-scripts ``train.sh``/``train.ps1`` as a recipe, or None when the script is not one.

    The launch line of these scripts is built by ``if`` blocks on the variables set above
    :data:`MARKER`; the variables are read with the script readers (bash, or the PowerShell grammar),
    and :func:`from_script_variables` applies the blocks' logic.
    """
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if MARKER not in text or "trainer_file" not in text:
        return None
    return to_imported(from_script_variables(path, script_variables(path, text)))


def script_variables(path: Path, text: str) -> dict[str, str]:
    """The values lora-scripts' variables hold above :data:`MARKER`, resolved by the script's own reader.

    The part above the marker is read with one more command appended that names every variable, so
    the reader (bash words, or the PowerShell grammar) resolves them as it resolves the launch.
    """
    top = text[: text.index(MARKER)].rsplit("\n", 1)[0]
    probe = "__lorabuild_variables " + " ".join(f'"{name}=${name}"' for name in VARIABLES)
    folder = str(path.parent)
    if path.suffix.lower() == ".ps1":
        from lorabuild.importer import powershell  # lazy: the grammar (tree-sitter) only for a .ps1

        commands = list(powershell.commands(top + "\n" + probe + "\n", folder))
    else:
        commands = list(bash_words(top + "\n" + probe + "\n", folder))
    words = next((c for c in reversed(commands) if c and c[0] == "__lorabuild_variables"), [])
    assigned = {name for name in VARIABLES if re.search(rf"(?m)^\s*\$?{name}\s*=", top)}
    values = dict(word.partition("=")[::2] for word in words[1:])
    return {name: values.get(name, "") for name in VARIABLES if name in assigned}


def from_script_variables(path: Path, variables: Mapping[str, str]) -> Translated:
    """A lora-scripts ``train.sh``/``train.ps1`` as kohya options, from the variables it sets.

    ``variables`` are the script's assignments above its "DO NOT MODIFY" line, as text; every one
    is accounted for. Relative paths are relative to the script's folder (lora-scripts' own).
    """
    model_type = variables.get("model_type", "sd1.5")
    script = _MODEL_TYPES.get(model_type, "train_network.py")
    out = Translated(path, script, base=path.absolute().parent)
    for name, value in SCRIPT_FIXED.items():
        out.options[name] = value
    out.skip("model_type", f"picks kohya's script ({script})")
    if model_type not in _MODEL_TYPES:
        out.note(
            NoteKind.UNREPRESENTABLE, "model_type", f"{model_type!r} is not one of sd1.5, sd2.0, sdxl, flux"
        )
    if model_type == "sd2.0":
        out.options["v2"] = True
    out.options["log_prefix"] = variables.get("output_name", "")
    on = {k for k, v in variables.items() if v.strip() in ("1", "True", "true")}
    lycoris = variables.get("network_module") == "lycoris.kohya"
    for key, value in variables.items():
        if key in out.accounted:
            continue
        if is_secret(key):
            out.secret(key, value.strip())
        elif key in SCRIPT_FLAGS:
            # train.sh tests lowram with [[ $lowram ]], true for any text, "0" included.
            if key in on or (key == "lowram" and path.suffix == ".sh" and value.strip()):
                out.option(key, SCRIPT_FLAGS[key], True)
            else:
                out.skip(key, "off")
        elif key in ("train_data_dir", "reg_data_dir"):
            if value.strip():
                out.option(key, key, value)  # its N_name folders are the subsets
            else:
                out.skip(key, "unset")
        elif key in ("algo", "conv_dim", "conv_alpha", "dropout"):
            out.skip(key, "kohya network_args" if lycoris else "used only with lycoris.kohya")
        elif key == "use_wandb":
            out.options["log_with"] = "all" if key in on else "tensorboard"
            out.skip(key, "kohya log_with")
        elif key == "multi_gpu":
            if key in on:
                out.set(key, "launch.gpus", 2)
            else:
                out.skip(key, "off")
        elif key in SCRIPT_OPTIONS:
            _script_option(out, key, value, model_type, on)
        else:
            out.note(NoteKind.UNKNOWN, key, f"{value!r}: the script's launch does not use it")
    if lycoris:
        out.options["network_args"] = [
            f"{name}={variables.get(name, '')}" for name in ("conv_dim", "conv_alpha", "algo", "dropout")
        ]
    if variables.get("optimizer_type") == "DAdaptation":
        out.options["optimizer_args"] = ["decouple=True"]
    return out


# Passed only when set: non-empty, and not 0 for the numbers.
_WHEN_SET = frozenset(
    {
        "network_weights",
        "resume",
        "stop_text_encoder_training",
        "noise_offset",
        "min_snr_gamma",
        "log_tracker_name",
    }
)


def _script_option(out: Translated, key: str, value: str, model_type: str, on: set[str]) -> None:
    name = SCRIPT_OPTIONS[key]
    if name in _WHEN_SET and value.strip() in ("", "0"):
        out.skip(key, "unset")
    elif name == "clip_skip" and model_type != "sd1.5":
        out.skip(key, f"passed only for sd1.5 (model_type is {model_type})")
    elif name == "log_tracker_name" and "use_wandb" not in on:
        out.skip(key, "used only with use_wandb")
    elif name in kohya_options.options(out.script):
        out.option(key, name, coerce(out.script, name, value))
    else:
        out.note(
            NoteKind.UNKNOWN, key, f"{value!r}: kohya's {out.script} has no --{name} (kohya would stop on it)"
        )
