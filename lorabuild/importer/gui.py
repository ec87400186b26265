"""bmaltais/kohya_ss GUI configs (the LoRA tab's saved JSON) → kohya's options.

The GUI saves its form as one flat JSON object of its own key names. When it trains, its
``train_model`` (kohya_gui/lora_gui.py) turns the form into a kohya ``--config_file`` TOML
(``config_toml_data``) and appends ``additional_parameters`` to the command line; :func:`translate`
does the same translation, key by key, and accounts for every key of the file:

- most keys are kohya's own option names and pass through, with the GUI's rule that ``""``,
  ``false``, ``0`` and ``null`` mean "unset" (it drops every value equal to one of them);
- :data:`RENAMED` keys are kohya options under another name (``max_resolution`` → ``resolution``);
- ``LoRA_type`` picks the network module and which of the network keys become ``network_args``
  (:data:`NETWORK_TYPES`), as ``train_model`` does;
- the family checkboxes (``sdxl``, ``flux1_checkbox``, ``sd3_checkbox``…) pick kohya's script,
  and the family-only keys count only for their family (:data:`FAMILY_ONLY`);
- units: ``lr_warmup`` is a percentage of all steps, ``epoch`` the epochs to train, ``xformers``
  a choice of attention (``xformers``/``sdpa``/``none``; old files hold true/false);
- ``sample_prompts`` is inline prompt text; ``train_data_dir``/``reg_data_dir`` parent folders of
  ``N_name`` subfolders; ``additional_parameters`` raw command-line flags;
- the accelerate settings become ``[launch]`` keys where the recipe has one;
- secrets (``wandb_api_key``, ``huggingface_token``, anything token- or key-like) are dropped and
  noted, never carried.

Why one module: it mirrors one function of kohya_ss, ``train_model``, whose tables (the LoRA types,
the family-only keys, the GUI-only keys) and the rules reading them change together with each
kohya_ss release; split, a new GUI key would need two files read side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lorabuild.importer.model import Imported, NoteKind, is_secret
from lorabuild.importer.translated import Translated, coerce, refuse, to_imported
from lorabuild.kohya import options as kohya_options

# The family checkboxes, first checked wins (train_model's if/elif chain), → kohya's script.
SCRIPTS = (
    ("sdxl", "sdxl_train_network.py"),
    ("flux1_checkbox", "flux_train_network.py"),
    ("sd3_checkbox", "sd3_train_network.py"),
    ("hunyuan_image_checkbox", "hunyuan_image_train_network.py"),
    ("anima_checkbox", "anima_train_network.py"),
    ("lumina_checkbox", "lumina_train_network.py"),
)
DEFAULT_SCRIPT = "train_network.py"

# GUI keys that are kohya options under another name.
RENAMED = {
    "max_resolution": "resolution",
    "optimizer": "optimizer_type",
    "lora_network_weights": "network_weights",  # the GUI's name before network_weights
}

# kohya options the GUI writes for one family only (config_toml_data's "... if flux1_checkbox else None").
FAMILY_ONLY: dict[str, str] = {
    **dict.fromkeys(
        (
            "clip_l", "t5xxl", "ae", "split_mode", "t5xxl_max_token_length", "guidance_scale",
            "mem_eff_save", "apply_t5_attn_mask", "cpu_offload_checkpointing", "single_blocks_to_swap",
            "double_blocks_to_swap", "discrete_flow_shift", "model_prediction_type", "timestep_sampling",
            "fp8_base_unet", "model_type",
        ),
        "flux1_checkbox",
    ),
    **dict.fromkeys(
        (
            "clip_g", "clip_g_dropout_rate", "enable_scaled_pos_embed", "logit_mean", "logit_std",
            "mode_scale", "pos_emb_random_crop_rate", "save_clip", "save_t5xxl", "t5xxl_device",
            "t5xxl_dtype", "weighting_scheme",
        ),
        "sd3_checkbox",
    ),
}  # fmt: skip
# ... and options the GUI leaves out for some families.
NOT_FOR = {"max_token_length": ("flux1_checkbox",), "clip_skip": ("hunyuan_image_checkbox",)}
# Family-prefixed GUI keys → the kohya option they set for that family.
FAMILY_PREFIXED = {
    "sdxl_cache_text_encoder_outputs": ("sdxl", "cache_text_encoder_outputs"),
    "sdxl_no_half_vae": ("sdxl", "no_half_vae"),
    "flux1_cache_text_encoder_outputs": ("flux1_checkbox", "cache_text_encoder_outputs"),
    "flux1_cache_text_encoder_outputs_to_disk": ("flux1_checkbox", "cache_text_encoder_outputs_to_disk"),
    "flux1_clip_l": ("flux1_checkbox", "clip_l"),
    "flux1_t5xxl": ("flux1_checkbox", "t5xxl"),
    "sd3_cache_text_encoder_outputs": ("sd3_checkbox", "cache_text_encoder_outputs"),
    "sd3_cache_text_encoder_outputs_to_disk": ("sd3_checkbox", "cache_text_encoder_outputs_to_disk"),
    "sd3_fused_backward_pass": ("sd3_checkbox", "fused_backward_pass"),
    "sd3_text_encoder_batch_size": ("sd3_checkbox", "text_encoder_batch_size"),
    "sd3_clip_l": ("sd3_checkbox", "clip_l"),
    "sd3_t5xxl": ("sd3_checkbox", "t5xxl"),
    # kohya_ss's Anima fields, saved as anima_<kohya option> (its preset importer's rename table).
    **{
        f"anima_{name}": ("anima_checkbox", name)
        for name in (
            "qwen3", "vae", "llm_adapter_path", "t5_tokenizer_path", "discrete_flow_shift", "timestep_sampling",
            "sigmoid_scale", "qwen3_max_token_length", "t5_max_token_length", "attn_mode", "split_attn",
            "vae_chunk_size", "vae_disable_cache",
        )
    },
    # kohya_gui/class_lumina.py: its accordion's fields, saved as lumina_<kohya option>.
    **{
        f"lumina_{name}": ("lumina_checkbox", name)
        for name in (
            "gemma2", "ae", "discrete_flow_shift", "model_prediction_type", "timestep_sampling",
            "sigmoid_scale", "gemma2_max_token_length", "system_prompt", "use_flash_attn", "use_sage_attn",
            "cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk",
        )
    },
}  # fmt: skip

# LoRA_type → (network_module, the GUI keys it writes into network_args, algo for LyCORIS).
_LYCORIS_COMMON = (
    "conv_dim",
    "conv_alpha",
    "use_tucker",
    "rank_dropout",
    "module_dropout",
    "rank_dropout_scale",
    "train_norm",
)
_BLOCKS = (
    "down_lr_weight",
    "mid_lr_weight",
    "up_lr_weight",
    "block_lr_zero_threshold",
    "block_dims",
    "block_alphas",
    "conv_block_dims",
    "conv_block_alphas",
    "rank_dropout",
    "module_dropout",
)
_FLUX_ARGS = (
    "img_attn_dim",
    "img_mlp_dim",
    "img_mod_dim",
    "single_dim",
    "txt_attn_dim",
    "txt_mlp_dim",
    "txt_mod_dim",
    "single_mod_dim",
    "in_dims",
    "train_double_block_indices",
    "train_single_block_indices",
    "rank_dropout",
    "module_dropout",
)
NETWORK_TYPES: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "Standard": ("networks.lora", _BLOCKS, None),
    "Kohya LoCon": ("networks.lora", ("conv_dim", "conv_alpha", *_BLOCKS), None),
    "LoRA-FA": ("networks.lora_fa", _BLOCKS, None),
    "Kohya DyLoRA": ("networks.dylora", ("conv_dim", "conv_alpha", "unit", *_BLOCKS), None),
    "Kohya LoHa": ("networks.loha", ("conv_dim", "conv_alpha", "use_tucker", "rank_dropout", "module_dropout"), None),
    "Kohya LoKr": ("networks.lokr", ("conv_dim", "conv_alpha", "use_tucker", "factor", "rank_dropout", "module_dropout"), None),
    "Flux1": ("networks.lora_flux", (*_FLUX_ARGS, "train_blocks", "split_qkv", "train_t5xxl", "ggpo_beta", "ggpo_sigma"), None),
    "Flux1 OFT": ("networks.oft_flux", ("enable_all_linear",), None),
    "HunyuanImage-2.1": ("networks.lora_hunyuan_image", ("rank_dropout", "module_dropout"), None),
    "Anima": ("networks.lora_anima", ("rank_dropout", "module_dropout"), None),
    "Lumina": ("networks.lora_lumina", ("rank_dropout", "module_dropout"), None),
    "LoCon": ("lycoris.kohya", (*_LYCORIS_COMMON, "bypass_mode", "dora_wd", "use_scalar"), "locon"),
    "LyCORIS/LoCon": ("lycoris.kohya", (*_LYCORIS_COMMON, "bypass_mode", "dora_wd", "use_scalar"), "locon"),
    "LyCORIS/LoHa": ("lycoris.kohya", (*_LYCORIS_COMMON, "bypass_mode", "dora_wd", "use_scalar"), "loha"),
    "LyCORIS/LoKr": (
        "lycoris.kohya",
        (*_LYCORIS_COMMON, "bypass_mode", "dora_wd", "use_scalar", "factor", "use_cp", "decompose_both"),
        "lokr",
    ),
    "LyCORIS/BOFT": ("lycoris.kohya", _LYCORIS_COMMON, "boft"),
    "LyCORIS/Diag-OFT": ("lycoris.kohya", (*_LYCORIS_COMMON, "constrain", "rescaled"), "diag-oft"),
    "LyCORIS/DyLoRA": ("lycoris.kohya", (*_LYCORIS_COMMON, "unit"), "dylora"),
    "LyCORIS/GLoRA": ("lycoris.kohya", _LYCORIS_COMMON, "glora"),
    "LyCORIS/iA3": ("lycoris.kohya", ("conv_dim", "conv_alpha", "train_on_input"), "ia3"),
    "LyCORIS/Native Fine-Tuning": ("lycoris.kohya", ("rank_dropout", "module_dropout", "rank_dropout_scale", "train_norm"), "full"),
}  # fmt: skip
# Every GUI key that only ever feeds network_args (some LoRA_type or other).
NETWORK_KEYS = frozenset(
    k for _, keys, _ in NETWORK_TYPES.values() for k in keys
) | {"LyCORIS_preset", "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio",
     "train_lora_ggpo", "t5xxl_lr", "constrain", "rescaled", "conv_dims", "conv_alphas"}  # fmt: skip
# The GUI writes these network_args names differently from its own key.
_ARG_NAMES = {"unit": "block_size", "constrain": "constraint"}

# accelerate launch settings the GUI keeps → the [launch] key (None: no recipe key; noted).
LAUNCH = {
    "num_cpu_threads_per_process": "launch.num_cpu_threads_per_process",
    "main_process_port": "launch.main_process_port",
    "num_processes": "launch.gpus",
    "gpu_ids": "launch.gpus",
    "multi_gpu": "launch.gpus",
    "num_machines": None,
    "dynamo_mode": None,
    "dynamo_use_fullgraph": None,
    "dynamo_use_dynamic": None,
    "extra_accelerate_launch_args": None,
}

# GUI keys that never reach kohya, and why (kohya_gui reads them for itself).
GUI_ONLY = {
    "model_list": "the GUI's model dropdown (pretrained_model_name_or_path holds the model)",
    "save_as_bool": "the GUI's save-as switch",
    "noise_offset_type": "chooses between noise_offset and multires_noise_* (read with them)",
    "lowvram": "not passed to kohya by the GUI (sd-scripts removed it)",
    "use_wandb": "the GUI's wandb switch (log_with says it)",
    "LoRA_type": "the network kind (read as network_module and network_args)",
}


def read(path: Path, doc: Mapping[str, object]) -> Imported | None:
    """A kohya_ss GUI LoRA config as a recipe, or None when the JSON is not one (``sources.JSON_READERS``).

    Raises:
        ImportFailed: The JSON is a kohya_ss config of another tab (DreamBooth, fine-tuning).
    """
    if not looks_like(doc) and not _other_tab(doc):
        return None
    return to_imported(translate(path, doc))


def translate(path: Path, doc: Mapping[str, object]) -> Translated:
    """Translate a kohya_ss GUI LoRA config into kohya's options, accounting for every key.

    Raises:
        ImportFailed: ``doc`` is not a kohya_ss LoRA config (the message names the file).
    """
    if not looks_like(doc):
        if _other_tab(doc):
            raise refuse(
                path,
                "is a kohya_ss config without LoRA_type: a DreamBooth, fine-tuning or textual-inversion "
                "config, not a LoRA one (lorabuild trains LoRAs; save the config from the GUI's LoRA tab)",
            )
        raise refuse(
            path,
            f"is not a kohya_ss LoRA config: it has no LoRA_type (its keys: {', '.join(sorted(doc)[:6])}…)",
        )
    return _Reader(path, dict(doc)).run()


def _other_tab(doc: Mapping[str, object]) -> bool:
    # Every tab of the GUI saves these; only the LoRA tab saves LoRA_type.
    return {"pretrained_model_name_or_path", "train_data_dir", "learning_rate", "model_list"} <= doc.keys()


def looks_like(data: Mapping[str, object]) -> bool:
    """Whether a JSON object is a kohya_ss GUI LoRA config."""
    return "LoRA_type" in data


def _unset(value: object) -> bool:
    # train_model drops every value `in ["", False, None]`: 0 and 0.0 equal False, so they go too.
    return value is None or value == "" or value is False or (isinstance(value, int | float) and value == 0)


class _Reader:
    def __init__(self, path: Path, data: dict[str, object]) -> None:
        self.data = data
        self.family_key = next((key for key, _ in SCRIPTS if self._on(key)), None)
        script = dict(SCRIPTS).get(self.family_key or "", DEFAULT_SCRIPT)
        # kohya_ss runs kohya from its own folder, which the JSON does not name: relative paths are
        # kept relative to the current folder.
        self.out = Translated(path, script)
        self.known = kohya_options.options(script)

    def _on(self, key: str) -> bool:
        value = self.data.get(key)
        return value is True or value in ("true", "True", 1)

    def run(self) -> Translated:
        out, data = self.out, self.data
        for key in (k for k, _ in SCRIPTS):
            if key in data:
                out.skip(key, f"picks kohya's script ({out.script})")
        for key, value in data.items():
            if is_secret(key):
                self.out.secret(key, value)
        self._network()
        self._schedule()
        self._attention()
        self._data()
        self._prompts()
        self._launch()
        self._additional()
        self._rest()
        return out

    # --- the network ----------------------------------------------------------------------------

    def _network(self) -> None:
        out, data = self.out, self.data
        kind = str(data["LoRA_type"])
        module: str
        arg_keys: tuple[str, ...]
        algo: str | None
        if kind not in NETWORK_TYPES:
            out.note(NoteKind.UNREPRESENTABLE, "LoRA_type", f"{kind!r} is not a LoRA type kohya_ss knows")
            module, arg_keys, algo = "networks.lora", (), None
        else:
            module, arg_keys, algo = NETWORK_TYPES[kind]
            if kind == "Standard" and self.family_key == "sd3_checkbox":
                module = "networks.lora_sd3"
        out.option("LoRA_type", "network_module", module)
        args: list[str] = []
        if algo is not None:
            # train_model writes every key of the type's f-string, set or not.
            args.append(f"preset={data.get('LyCORIS_preset', 'full')}")
            out.skip("LyCORIS_preset", "kohya network_args preset")
        for key in arg_keys:
            if key not in data:
                continue
            value = data[key]
            name = _ARG_NAMES.get(key, key)
            if (
                algo is not None
                or (kind == "Kohya LoCon" and key in ("conv_dim", "conv_alpha"))
                or not _unset(value)
            ):
                if key == "train_t5xxl" and self.family_key != "flux1_checkbox":
                    continue
                args.append(f"{name}={_arg(value)}")
                out.skip(key, f"kohya network_args {name}")
        if algo is not None:
            args.append(f"algo={algo}")
        for key in ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
            if key in data and not _unset(data[key]):
                args.append(f"{key}={_arg(data[key])}")
                out.skip(key, f"kohya network_args {key}")
        if kind == "Flux1" and self._on("split_mode"):
            args = [a for a in args if not a.startswith("train_blocks=")] + ["train_blocks=single"]
        if args:
            out.options["network_args"] = args
        for key in NETWORK_KEYS & data.keys():
            out.skip(
                key, "unset" if _unset(data[key]) else f"not used by LoRA_type {kind!r} (kohya_ss ignores it)"
            )
        # train_model: the text encoder trains when its LR is set, the U-Net when its LR is (both when both are).
        te, unet = _float(data.get("text_encoder_lr")), _float(data.get("unet_lr"))
        if te > 0 and _float(data.get("t5xxl_lr")) > 0:
            out.option("t5xxl_lr", "text_encoder_lr", [te, _float(data["t5xxl_lr"])])
        elif te > 0:
            out.option("text_encoder_lr", "text_encoder_lr", te)
        else:
            out.skip("text_encoder_lr", "unset")
        if unet > 0:
            out.option("unet_lr", "unet_lr", unet)
        else:
            out.skip("unet_lr", "unset")
        if te == 0 and unet != 0:
            out.options["network_train_unet_only"] = True
        elif te != 0 and unet == 0:
            out.options["network_train_text_encoder_only"] = True

    # --- schedule -------------------------------------------------------------------------------

    def _schedule(self) -> None:
        out, data = self.out, self.data
        epochs, max_epochs = _int(data.get("epoch")), _int(data.get("max_train_epochs"))
        steps = _int(data.get("max_train_steps"))
        # The GUI computes max_train_steps from `epoch` unless max_train_steps is set; kohya's
        # max_train_epochs, when set, overrides both.
        if max_epochs:
            out.option("max_train_epochs", "max_train_epochs", max_epochs)
            out.skip("epoch", "overridden by max_train_epochs")
        elif steps:
            out.option("max_train_steps", "max_train_steps", steps)
            out.skip("epoch", "overridden by max_train_steps")
        elif epochs:
            out.option("epoch", "max_train_epochs", epochs)
        out.skip("max_train_epochs", "unset")
        out.skip("max_train_steps", "unset")
        out.skip("epoch", "unset")
        warmup_steps, warmup = _float(data.get("lr_warmup_steps")), _float(data.get("lr_warmup"))
        if warmup_steps > 0:
            out.option("lr_warmup_steps", "lr_warmup_steps", int(warmup_steps))
            if warmup:
                out.skip("lr_warmup", "overridden by lr_warmup_steps")
        elif warmup:
            # A percentage of all steps (common_gui.resolve_lr_warmup_steps: lr_warmup / 100).
            out.option("lr_warmup", "lr_warmup_steps", warmup / 100)
        out.skip("lr_warmup", "unset")
        out.skip("lr_warmup_steps", "unset")
        cycles = data.get("lr_scheduler_num_cycles")
        if "lr_scheduler_num_cycles" in data:
            # An empty field means one cycle per epoch in the GUI.
            value = _int(cycles) if not _unset(cycles) else epochs
            if value:
                out.option("lr_scheduler_num_cycles", "lr_scheduler_num_cycles", value)
            else:
                out.skip("lr_scheduler_num_cycles", "unset")
        for key in ("lr_scheduler_args", "optimizer_args"):
            if key in data:
                items = str(data[key] or "").replace('"', "").split()
                if items:
                    out.option(key, key, items)
                else:
                    out.skip(key, "unset")
        if "stop_text_encoder_training" in data or "stop_text_encoder_training_pct" in data:
            for key in ("stop_text_encoder_training", "stop_text_encoder_training_pct"):
                if key in data and not _unset(data[key]):
                    out.note(
                        NoteKind.UNREPRESENTABLE,
                        key,
                        f"{data[key]}% of the steps: kohya_ss does not pass it on ('not yet supported. Ignoring')",
                    )
                elif key in data:
                    out.skip(key, "unset")
        noise = str(data.get("noise_offset_type") or "Original")
        for key in ("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength"):
            if key in data and noise != "Original" and not _unset(data[key]):
                out.skip(key, f"not used: noise_offset_type is {noise}")
        for key in ("multires_noise_iterations", "multires_noise_discount"):
            if key in data and noise != "Multires":
                out.skip(key, f"not used: noise_offset_type is {noise}")
        if "noise_offset_type" in data:
            out.skip("noise_offset_type", GUI_ONLY["noise_offset_type"])

    def _attention(self) -> None:
        value = self.data.get("xformers")
        if "xformers" not in self.data:
            return
        # The GUI's choice "xformers" / "sdpa" / "none"; files saved before it was a choice hold true/false.
        if value in ("xformers", True):
            self.out.option("xformers", "xformers", True)
        elif value == "sdpa":
            self.out.option("xformers", "sdpa", True)
        else:
            self.out.skip("xformers", "no attention kernel")

    # --- data and prompts -----------------------------------------------------------------------

    def _data(self) -> None:
        out, data = self.out, self.data
        config = str(data.get("dataset_config") or "")
        if config:
            out.note(
                NoteKind.TODO,
                "dataset_config",
                f"the images are described by the dataset TOML {config!r}: import it too "
                "(lorabuild import CONFIG.json DATASET.toml) or fill in dataset.subsets",
            )
        else:
            out.skip("dataset_config", "unset")
        for key in ("train_data_dir", "reg_data_dir"):
            folder = str(data.get(key) or "")
            if not folder:
                out.skip(key, "unset")
            elif config:
                out.skip(key, "ignored by kohya: dataset_config is set")
            else:
                # kohya's DreamBooth layout: one subset per N_name folder (read by the core).
                out.option(key, key, folder)

    def _prompts(self) -> None:
        text = self.data.get("sample_prompts")
        if "sample_prompts" not in self.data:
            return
        if isinstance(text, str) and text.strip():
            # The GUI writes the text into a prompts file for kohya (common_gui.create_prompt_file).
            self.out.prompts = text
            self.out.skip("sample_prompts", "evaluate.prompts")
        else:
            self.out.skip("sample_prompts", "unset")

    def _launch(self) -> None:
        out, data = self.out, self.data
        processes = _int(data.get("num_processes"))
        ids = str(data.get("gpu_ids") or "").strip()
        if ids:
            try:
                out.set("gpu_ids", "launch.gpus", [int(i) for i in ids.split(",")])
            except ValueError:
                out.note(NoteKind.UNREPRESENTABLE, "gpu_ids", f"{ids!r} is not a list of GPU ids")
        elif processes > 1:
            out.set("num_processes", "launch.gpus", processes)
        for key, target in LAUNCH.items():
            if key not in data:
                continue
            value = data[key]
            if _unset(value) or (key in ("num_processes", "num_machines") and _int(value) == 1):
                out.skip(key, "unset")
            elif target in ("launch.num_cpu_threads_per_process", "launch.main_process_port"):
                out.set(key, target, _int(value))
            elif target == "launch.gpus":
                out.skip(key, "launch.gpus")
            elif key == "dynamo_mode" and value == "default":
                out.skip(key, "accelerate's default")
            else:
                out.note(
                    NoteKind.UNREPRESENTABLE,
                    key,
                    f"the accelerate setting {key} = {value!r} has no recipe key",
                )

    def _additional(self) -> None:
        text = str(self.data.get("additional_parameters") or "").strip()
        if text:
            # run_cmd_advanced_training appends them after --config_file: they win.
            self.out.flags("additional_parameters", text)
        else:
            self.out.skip("additional_parameters", "unset")

    # --- everything else ------------------------------------------------------------------------

    def _rest(self) -> None:
        out, data = self.out, self.data
        for key, value in data.items():
            if key in out.accounted:
                continue
            if key in GUI_ONLY:
                out.skip(key, GUI_ONLY[key])
                continue
            if key in FAMILY_PREFIXED:
                switch, name = FAMILY_PREFIXED[key]
                if self.family_key == switch and not _unset(value):
                    out.option(key, name, coerce(out.script, name, value))
                else:
                    out.skip(key, "unset" if _unset(value) else f"only for {switch} (off)")
                continue
            name = RENAMED.get(key, key)
            family = FAMILY_ONLY.get(name)
            if family is not None and self.family_key != family:
                out.skip(key, "unset" if _unset(value) else f"only for {family} (off)")
                continue
            if self.family_key in NOT_FOR.get(name, ()):
                out.skip(key, f"not passed to kohya for {self.family_key}")
                continue
            if name == "clip_skip" and _int(value) == 1:
                # 1 is the last layer, what kohya uses without clip_skip; the GUI saves it for every family.
                out.skip(key, "kohya's default (the last CLIP layer)")
                continue
            if name == "dynamo_backend" and value == "no":
                out.skip(key, "accelerate's dynamo off (kohya uses it only with torch_compile)")
                continue
            if name == "max_data_loader_n_workers":
                out.option(key, name, _int(value))  # the GUI always writes it, 0 included
                continue
            if name == "wandb_run_name" and _unset(value):
                out.skip(key, "unset (the GUI uses output_name)")
                continue
            if _unset(value):
                out.skip(key, "unset")
            elif name in self.known:
                out.option(key, name, coerce(out.script, name, value))
            else:
                out.note(
                    NoteKind.UNKNOWN,
                    key,
                    f"{value!r}: neither kohya's {out.script} nor kohya_ss knows {key} (kohya ignores it): left out",
                )


def _arg(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _float(value: object) -> float:
    try:
        return float(value) if value not in (None, "") else 0.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _int(value: object) -> int:
    return int(_float(value))
