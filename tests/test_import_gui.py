"""The kohya_ss GUI and lora-scripts readers: every key of every corpus config accounted for (kohya_ss's
real configs, and fixtures written in lora-scripts' formats), the GUI's units translated, secrets never
carried (tests/data/import/SOURCES.md names the files' origins)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from lorabuild.importer import gui, lorascripts
from lorabuild.importer.model import Imported, ImportFailed, NoteKind
from lorabuild.importer.sources import import_sources
from lorabuild.importer.translated import Translated, to_imported
from lorabuild.importer.write import recipe_text, write_recipe
from lorabuild.probe import facts
from lorabuild.probe.environment import PACKAGES
from lorabuild.recipe.load import load_recipe
from lorabuild.stages.check import check

CORPUS = Path(__file__).parent / "data" / "import"
TOOLS = ("kohya_ss", "lora-scripts")  # the corpus SOURCES.md names, a folder per tool
GUI_CONFIGS = sorted(p for p in (CORPUS / "kohya_ss").rglob("*.json") if not p.name.startswith("dreambooth"))
LORA_SCRIPTS_TOMLS = sorted((CORPUS / "lora-scripts").rglob("*.toml"))


def _toml_keys(path: Path) -> set[str]:
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    return {
        f"{k}.{inner}" if isinstance(v, dict) else k
        for k, v in doc.items()
        for inner in (v if isinstance(v, dict) else [k])
    }


def _gui(tmp_path: Path, **settings: object) -> Translated:
    config = {"LoRA_type": "Standard", **settings}
    return gui.translate(tmp_path / "config.json", config)


def _json(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _toml(path: Path) -> dict[str, object]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def test_the_corpus_is_all_there() -> None:
    assert len(GUI_CONFIGS) >= 12
    assert {p.name for p in LORA_SCRIPTS_TOMLS} >= {
        "default.toml",
        "lora.toml",
        "example.toml",
        "chroma.toml",
    }
    named = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    for path in sorted(p for tool in TOOLS for p in (CORPUS / tool).rglob("*") if p.is_file()):
        assert f"`{path.relative_to(CORPUS)}`" in named, f"{path} has no source in SOURCES.md"


@pytest.mark.parametrize("path", GUI_CONFIGS, ids=lambda p: p.name)
def test_every_key_of_a_kohya_ss_config_is_accounted_for(path: Path) -> None:
    keys = set(_json(path))
    translated = gui.translate(path, _json(path))
    assert keys - set(translated.accounted) == set()
    assert translated.options["network_module"]


@pytest.mark.parametrize("path", LORA_SCRIPTS_TOMLS, ids=lambda p: p.name)
def test_every_key_of_a_lora_scripts_config_is_accounted_for(path: Path) -> None:
    translated = lorascripts.translate(path, _toml(path))
    assert _toml_keys(path) - set(translated.accounted) == set()


# --- kohya_ss: what is not a config -----------------------------------------------------------------


def test_a_dreambooth_config_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = CORPUS / "kohya_ss" / "config" / "dreambooth-AdamW.json"
    with pytest.raises(ImportFailed, match=r"dreambooth-AdamW\.json: is a kohya_ss config without LoRA_type"):
        import_sources([path])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "is JSON, but not a training config lorabuild can import"),
        ('{"name": "x"}', "is JSON, but not a training config lorabuild can import"),
        ('{"LoRA_type": ', "is not JSON"),
    ],
)
def test_json_that_is_not_a_gui_config_is_refused_and_nothing_written(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "other.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ImportFailed, match=f"other.json: {message}"):
        import_sources([path])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]


# --- kohya_ss: the GUI's names and units -----------------------------------------------------------


@pytest.mark.parametrize(
    ("lora_type", "module", "algo"),
    [
        ("Standard", "networks.lora", None),
        ("Kohya LoCon", "networks.lora", None),
        ("Kohya DyLoRA", "networks.dylora", None),
        ("LoRA-FA", "networks.lora_fa", None),
        ("LyCORIS/LoCon", "lycoris.kohya", "locon"),
        ("LyCORIS/LoHa", "lycoris.kohya", "loha"),
        ("LyCORIS/LoKr", "lycoris.kohya", "lokr"),
        ("LyCORIS/iA3", "lycoris.kohya", "ia3"),
        ("Flux1", "networks.lora_flux", None),
    ],
)
def test_lora_type_is_the_network_module_and_algo(
    tmp_path: Path, lora_type: str, module: str, algo: str | None
) -> None:
    out = _gui(tmp_path, LoRA_type=lora_type, flux1_checkbox=lora_type == "Flux1")
    assert out.options["network_module"] == module
    args = out.options.get("network_args", [])
    assert isinstance(args, list)
    assert (f"algo={algo}" in args) if algo else not any(str(a).startswith("algo=") for a in args)


def test_kohya_locon_writes_its_conv_rank_into_network_args(tmp_path: Path) -> None:
    out = _gui(tmp_path, LoRA_type="Kohya LoCon", conv_dim=16, conv_alpha=8, rank_dropout=0, unit=4)
    assert out.options["network_args"] == ["conv_dim=16", "conv_alpha=8"]
    assert out.accounted["unit"] == "not used by LoRA_type 'Kohya LoCon' (kohya_ss ignores it)"


@pytest.mark.parametrize(
    ("checkbox", "script"),
    [
        ({}, "train_network.py"),
        ({"sdxl": True}, "sdxl_train_network.py"),
        ({"flux1_checkbox": True}, "flux_train_network.py"),
        ({"sd3_checkbox": True}, "sd3_train_network.py"),
    ],
)
def test_the_family_checkbox_picks_the_script(tmp_path: Path, checkbox: dict[str, bool], script: str) -> None:
    assert _gui(tmp_path, **checkbox).script == script


def test_units_and_renamed_keys(tmp_path: Path) -> None:
    out = _gui(
        tmp_path,
        epoch=12,
        max_resolution="768,1024",
        optimizer="Prodigy",
        lr_warmup=10,
        xformers="sdpa",
        text_encoder_lr=0,
        unet_lr=0.0002,
        seed="1234",
        gradient_accumulation_steps=2.0,
    )
    o = out.options
    assert o["max_train_epochs"] == 12
    assert o["resolution"] == "768,1024"
    assert o["optimizer_type"] == "Prodigy"
    assert o["lr_warmup_steps"] == pytest.approx(0.1)  # 10% of the steps, as kohya's fraction
    assert o["sdpa"] is True and "xformers" not in o
    assert o["network_train_unet_only"] is True  # the GUI: no text-encoder LR, U-Net only
    assert o["seed"] == 1234 and o["gradient_accumulation_steps"] == 2


def test_unset_values_are_left_out_as_the_gui_does(tmp_path: Path) -> None:
    out = _gui(tmp_path, noise_offset=0, vae="", v2=False, network_weights=None, max_data_loader_n_workers=0)
    assert not {"noise_offset", "vae", "v2", "network_weights"} & out.options.keys()
    assert out.options["max_data_loader_n_workers"] == 0  # the GUI always writes it


def test_max_train_steps_wins_over_epoch(tmp_path: Path) -> None:
    out = _gui(tmp_path, epoch=3, max_train_steps=500)
    assert out.options["max_train_steps"] == 500 and "max_train_epochs" not in out.options


def test_a_family_only_key_counts_only_for_its_family(tmp_path: Path) -> None:
    out = _gui(tmp_path, guidance_scale=3.5, t5xxl="t5.safetensors", sdxl_no_half_vae=True)
    assert not {"guidance_scale", "t5xxl", "no_half_vae"} & out.options.keys()
    flux = _gui(tmp_path, flux1_checkbox=True, guidance_scale=1.0, max_token_length=225)
    assert flux.options["guidance_scale"] == 1.0 and "max_token_length" not in flux.options


def test_the_lumina_fields_set_lumina_options_only_with_its_checkbox(tmp_path: Path) -> None:
    """kohya_ss saves its Lumina accordion as lumina_<option> (kohya_gui/class_lumina.py)."""
    fields = {
        "LoRA_type": "Lumina",
        "lumina_gemma2": "/models/gemma_2_2b.safetensors",
        "lumina_ae": "/models/ae.safetensors",
        "lumina_timestep_sampling": "nextdit_shift",
        "lumina_discrete_flow_shift": 6.0,
        "lumina_gemma2_max_token_length": 256,
        "lumina_system_prompt": "You are an assistant.",
        "lumina_cache_text_encoder_outputs": True,
    }
    out = _gui(tmp_path, lumina_checkbox=True, **fields)
    assert out.script == "lumina_train_network.py"
    o = out.options
    assert (o["gemma2"], o["ae"], o["timestep_sampling"]) == (
        "/models/gemma_2_2b.safetensors",
        "/models/ae.safetensors",
        "nextdit_shift",
    )
    assert (o["discrete_flow_shift"], o["gemma2_max_token_length"]) == (6.0, 256)
    assert o["system_prompt"] == "You are an assistant." and o["cache_text_encoder_outputs"] is True
    imp = to_imported(out)
    assert (
        imp.values["model.family"] == "lumina"
        and imp.values["model.gemma2"] == "/models/gemma_2_2b.safetensors"
    )
    assert imp.values["flow.system_prompt"] == "You are an assistant."
    off = _gui(tmp_path, **{k: v for k, v in fields.items() if k != "LoRA_type"})
    assert not {"gemma2", "ae", "system_prompt", "timestep_sampling"} & off.options.keys()


def test_the_anima_fields_set_anima_options_only_with_its_checkbox(tmp_path: Path) -> None:
    """kohya_ss saves its Anima fields as anima_<option> (the rename table of its preset importer)."""
    fields = {
        "anima_qwen3": "/models/qwen_3_06b_base.safetensors",
        "anima_vae": "/models/qwen_image_vae.safetensors",
        "anima_timestep_sampling": "sigmoid",
        "anima_vae_chunk_size": 64,
        "anima_llm_adapter_path": "",
    }
    out = _gui(tmp_path, anima_checkbox=True, **fields)
    assert out.script == "anima_train_network.py"
    o = out.options
    assert (o["qwen3"], o["vae"], o["timestep_sampling"], o["vae_chunk_size"]) == (
        "/models/qwen_3_06b_base.safetensors",
        "/models/qwen_image_vae.safetensors",
        "sigmoid",
        64,
    )
    assert "llm_adapter_path" not in o  # left empty: unset, as the GUI leaves it out
    imp = to_imported(out)
    assert (
        imp.values["model.family"] == "anima"
        and imp.values["model.qwen3"] == "/models/qwen_3_06b_base.safetensors"
    )
    assert not {"qwen3", "vae", "timestep_sampling"} & _gui(tmp_path, **fields).options.keys()


def _recipe(tmp_path: Path, **settings: object) -> Imported:
    return to_imported(_gui(tmp_path, pretrained_model_name_or_path="/models/base.safetensors", **settings))


def test_inline_sample_prompts_become_evaluate(tmp_path: Path) -> None:
    imp = _recipe(
        tmp_path,
        sample_prompts="a cat --w 832 --h 1216 --s 20 --l 4 --d 42 --n ugly\na dog --w 832 --h 1216 --s 20 --l 4 --d 7 --n ugly",
    )
    assert imp.values["evaluate.prompts"] == ["a cat", "a dog"]
    assert imp.values["evaluate.seeds"] == [42, 7]
    assert (imp.values["evaluate.width"], imp.values["evaluate.height"]) == (832, 1216)
    assert imp.values["evaluate.negative_prompt"] == "ugly"
    assert (imp.values["evaluate.steps"], imp.values["evaluate.cfg_scale"]) == (20, 4.0)


def test_additional_parameters_are_parsed_as_kohya_options(tmp_path: Path) -> None:
    out = _gui(
        tmp_path,
        additional_parameters='--lr_scheduler_type "CosineAnnealingLR" --lr_scheduler_args "T_max=1000" "eta_min=0e-0" '
        "--log_prefix=xl --no_such_option 3 --flip_aug",
    )
    assert out.options["lr_scheduler_type"] == "CosineAnnealingLR"
    assert out.options["lr_scheduler_args"] == ["T_max=1000", "eta_min=0e-0"]
    assert out.options["log_prefix"] == "xl" and out.options["flip_aug"] is True
    notes = to_imported(out).notes
    assert [n.kind for n in notes if n.key == "no_such_option"] == [NoteKind.UNKNOWN]


def test_data_folders_become_subsets_with_repeats_and_triggers(tmp_path: Path) -> None:
    (tmp_path / "img" / "10_kazari girl").mkdir(parents=True)
    (tmp_path / "img" / "3_kazari").mkdir()
    (tmp_path / "reg" / "1_girl").mkdir(parents=True)
    imp = _recipe(tmp_path, train_data_dir=str(tmp_path / "img"), reg_data_dir=str(tmp_path / "reg"))
    subsets = imp.values["dataset.subsets"]
    assert isinstance(subsets, list)
    assert [
        (Path(str(s["source"])).name, s.get("repeats"), s.get("trigger"), s.get("is_reg")) for s in subsets
    ] == [
        ("10_kazari girl", 10, "kazari girl", None),
        ("3_kazari", 3, "kazari", None),
        ("1_girl", 1, "girl", True),
    ]


def test_a_data_folder_not_on_this_machine_is_kept_and_noted(tmp_path: Path) -> None:
    imp = _recipe(tmp_path, train_data_dir="E:\\froggy\\img")
    subsets = imp.values["dataset.subsets"]
    assert isinstance(subsets, list) and str(subsets[0]["source"]) == "E:\\froggy\\img"
    assert any(n.kind is NoteKind.TODO and n.key.startswith("dataset.subsets") for n in imp.notes)


def test_launch_settings_go_to_launch(tmp_path: Path) -> None:
    out = _gui(tmp_path, num_cpu_threads_per_process=4, gpu_ids="0,1", num_processes=2, main_process_port=0)
    assert out.recipe == {"launch.num_cpu_threads_per_process": 4, "launch.gpus": [0, 1]}


def test_secrets_are_removed_and_said_so(tmp_path: Path) -> None:
    out = _gui(
        tmp_path,
        wandb_api_key="wandb-secret-123",
        huggingface_token="hf_secret_456",
        huggingface_repo_id="me/lora",
        additional_parameters="--wandb_api_key wandb-secret-789",
    )
    text = json.dumps([out.options, out.recipe])
    for secret in ("wandb-secret-123", "hf_secret_456", "wandb-secret-789"):
        assert secret not in text
    removed = {n.key for n in out.notes if n.kind is NoteKind.SECRET}
    assert removed == {"wandb_api_key", "huggingface_token", "additional_parameters: --wandb_api_key"}
    assert out.options["huggingface_repo_id"] == "me/lora"


def test_an_unknown_gui_key_is_listed(tmp_path: Path) -> None:
    out = _gui(tmp_path, some_future_setting=3)
    assert [n.kind for n in out.notes if n.key == "some_future_setting"] == [NoteKind.UNKNOWN]


# --- lora-scripts -----------------------------------------------------------------------------------


def test_lr_restart_cycles_is_listed_not_mapped() -> None:
    path = CORPUS / "lora-scripts" / "config" / "default.toml"
    out = lorascripts.translate(path, _toml(path))
    assert "lr_scheduler_num_cycles" not in out.options
    note = next(n for n in out.notes if n.key == "optimizer.lr_restart_cycles")
    assert note.kind is NoteKind.UNKNOWN and "--lr_scheduler_num_cycles" in note.why
    assert out.options["network_dim"] == 32 and out.options["optimizer_type"] == "AdamW8bit"


def test_a_preset_is_partial_and_says_so() -> None:
    path = CORPUS / "lora-scripts" / "config" / "presets" / "chroma.toml"
    out = lorascripts.translate(path, _toml(path))
    assert out.script == "flux_train_network.py"
    assert out.options["model_type"] == "chroma" and out.options["guidance_scale"] == 0.0
    assert any(n.key == "(preset)" and n.kind is NoteKind.TODO for n in out.notes)
    assert out.accounted["metadata.name"].startswith("the preset's own description")


@pytest.mark.parametrize(
    ("keys", "script"),
    [
        (
            'clip_l = "c.safetensors"\nt5xxl = "t5.safetensors"\nae = "ae.safetensors"\n',
            "flux_train_network.py",
        ),
        ('model_type = "chroma"\nt5xxl = "t5.safetensors"\n', "flux_train_network.py"),
        ('clip_g = "g.safetensors"\n', "sd3_train_network.py"),
        ('model_train_type = "sdxl-lora"\n', "sdxl_train_network.py"),
        ("network_dim = 8\n", "train_network.py"),
    ],
)
def test_an_autosave_s_family_is_inferred_from_its_keys(tmp_path: Path, keys: str, script: str) -> None:
    path = tmp_path / "20250101-120000.toml"
    path.write_text('pretrained_model_name_or_path = "m.safetensors"\n' + keys, encoding="utf-8")
    assert lorascripts.translate(path, _toml(path)).script == script


def test_the_web_ui_s_form_keys_are_folded_as_its_frontend_does(tmp_path: Path) -> None:
    path = tmp_path / "autosave.toml"
    path.write_text(
        'network_module = "lycoris.kohya"\nlycoris_algo = "lokr"\nconv_dim = 4\nlokr_factor = 8\n'
        'network_args_custom = ["preset=attn-mlp"]\noptimizer_type = "Prodigy"\nprodigy_d_coef = "2.0"\n'
        'positive_prompts = "1girl, solo"\nsample_width = 768\nwandb_api_key = "k-123"\n',
        encoding="utf-8",
    )
    out = lorascripts.translate(path, _toml(path))
    assert sorted(out.options["network_args"]) == ["algo=lokr", "conv_dim=4", "factor=8", "preset=attn-mlp"]  # type: ignore[type-var]
    assert out.options["optimizer_args"] == ["d_coef=2.0"]
    assert out.recipe == {"evaluate.prompts": ["1girl, solo"], "evaluate.width": 768}
    assert "k-123" not in json.dumps([out.options, out.recipe])
    assert [n.kind for n in out.notes if n.key == "wandb_api_key"] == [NoteKind.SECRET]


@pytest.mark.parametrize(
    "text",
    [
        '[project]\nname = "x"\n',
        "[model_arguments]\nnetwork_dim = 8\nlr_restart_cycles = 2\n",  # kohya's own sections: its reader's
        '[metadata]\nmetadata_title = "x"\n[network]\nnetwork_dim = 8\n',  # lorabuild's config.toml
    ],
)
def test_toml_that_is_not_lora_scripts_is_left_to_kohya_s_reader(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    assert lorascripts.read(path, _toml(path)) is None


TRAIN_SH_VARIABLES = {
    # train.sh's assignments above its "DO NOT MODIFY" line, as the script reader resolves them.
    "pretrained_model": "./sd-models/model.ckpt", "model_type": "sd1.5", "parameterization": "0",
    "train_data_dir": "./train/aki", "reg_data_dir": "", "network_module": "networks.lora", "network_weights": "",
    "network_dim": "32", "network_alpha": "32", "resolution": "512,512", "batch_size": "1",
    "max_train_epoches": "10", "save_every_n_epochs": "2", "train_unet_only": "0", "train_text_encoder_only": "0",
    "stop_text_encoder_training": "0", "noise_offset": "0", "keep_tokens": "0", "min_snr_gamma": "0", "lr": "1e-4",
    "unet_lr": "1e-4", "text_encoder_lr": "1e-5", "lr_scheduler": "cosine_with_restarts", "lr_warmup_steps": "0",
    "lr_restart_cycles": "1", "optimizer_type": "AdamW8bit", "output_name": "aki", "save_model_as": "safetensors",
    "save_state": "0", "resume": "", "min_bucket_reso": "256", "max_bucket_reso": "1024",
    "persistent_data_loader_workers": "1", "clip_skip": "2", "multi_gpu": "0", "lowram": "0", "algo": "lora",
    "conv_dim": "4", "conv_alpha": "4", "dropout": "0", "use_wandb": "0", "wandb_api_key": "", "log_tracker_name": "",
}  # fmt: skip


def test_train_sh_variables_map_to_its_launch_flags() -> None:
    out = lorascripts.from_script_variables(CORPUS / "lora-scripts" / "train.sh", TRAIN_SH_VARIABLES)
    assert set(TRAIN_SH_VARIABLES) - set(out.accounted) == set()
    o = out.options
    assert o["max_train_epochs"] == 10 and o["train_batch_size"] == 1 and o["lr_scheduler_num_cycles"] == 1
    assert o["clip_skip"] == 2 and o["persistent_data_loader_workers"] is True
    assert o["lowram"] is True  # train.sh's [[ $lowram ]] is true for "0" too
    assert o["xformers"] is True and o["seed"] == 1337 and o["log_with"] == "tensorboard"
    assert "network_args" not in o and "noise_offset" not in o


def test_train_ps1_variables_with_lycoris() -> None:
    variables = {
        **TRAIN_SH_VARIABLES,
        "network_module": "lycoris.kohya",
        "algo": "loha",
        "model_type": "sdxl",
    }
    out = lorascripts.from_script_variables(CORPUS / "lora-scripts" / "train.ps1", variables)
    assert out.script == "sdxl_train_network.py"
    assert out.options["network_args"] == ["conv_dim=4", "conv_alpha=4", "algo=loha", "dropout=0"]
    assert "lowram" not in out.options  # PowerShell's if ($lowram) is false for 0
    assert "clip_skip" not in out.options  # passed for sd1.5 only


def test_train_scripts_read_through_the_script_readers() -> None:
    """train.sh (bash) and train.ps1 (the PowerShell grammar) give the same variables, and the same recipe."""
    sh, ps1 = CORPUS / "lora-scripts" / "train.sh", CORPUS / "lora-scripts" / "train.ps1"
    variables = lorascripts.script_variables(sh, sh.read_text(encoding="utf-8"))
    assert variables == TRAIN_SH_VARIABLES
    ps1_variables = lorascripts.script_variables(ps1, ps1.read_text(encoding="utf-8"))
    assert ps1_variables == {**TRAIN_SH_VARIABLES, "noise_offset": "0"}
    from_sh, from_ps1 = import_sources([sh]).values, import_sources([ps1]).values
    assert {k: v for k, v in from_sh.items() if k != "kohya.lowram"} == from_ps1
    assert from_sh["kohya.lowram"] is True  # train.sh passes --lowram for lowram=0 ([[ $lowram ]])


# --- the whole corpus, as recipes -------------------------------------------------------------------

ALL_SOURCES = sorted(
    p
    for tool in TOOLS
    for p in (CORPUS / tool).rglob("*")
    if p.is_file() and not p.name.startswith("dreambooth") and p.name != "LICENSE"
)
# Problems check finds in a corpus recipe besides files that are not on this machine: the source's own
# settings, which kohya would take and lorabuild refuses (check says why; the import keeps them).
SOURCE_SETTINGS_CHECK_REFUSES = {
    "flux1D - adamw8bit fp8.json": {"training.noise_offset", "training.min_snr_gamma"},
    "sd15 - EDG_LoConOptiSettings.json": {"dataset.resolution"},
}
SECRETS = ("wandb_api_key", "huggingface_token")


@pytest.mark.parametrize("path", ALL_SOURCES, ids=lambda p: p.name)
def test_each_corpus_file_becomes_a_recipe_that_loads_and_checks(
    tmp_path: Path, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What this machine has installed is not the import's to answer for (xformers, lycoris, bitsandbytes).
    monkeypatch.setattr(facts, "installed_packages", lambda: dict.fromkeys(PACKAGES, True))
    imp = import_sources([path])
    recipe = tmp_path / "recipe.toml"
    write_recipe(imp, recipe)
    load_recipe(recipe)  # the schema takes every value
    problems = check(recipe, [], tmp_path / "build").problems
    errors = {p.key for p in problems if p.severity.value == "error" and "not found" not in p.message}
    errors = {k for k in errors if not k.startswith(("model.", "dataset.subsets"))}
    assert errors == SOURCE_SETTINGS_CHECK_REFUSES.get(path.name, set())


def test_secrets_never_reach_the_recipe_text(tmp_path: Path) -> None:
    config = _json(CORPUS / "kohya_ss" / "lora" / "flux1D - adamw8bit fp8.json")
    config |= {
        "wandb_api_key": "wandb-7f3a",
        "huggingface_token": "hf_9c1d",
        "additional_parameters": "--wandb_api_key=wandb-22",
    }
    path = tmp_path / "with-secrets.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    imp = import_sources([path])
    text = recipe_text(imp, tmp_path / "recipe.toml")
    for secret in ("wandb-7f3a", "hf_9c1d", "wandb-22"):
        assert secret not in text
    assert {n.key for n in imp.notes if n.kind is NoteKind.SECRET} >= {"wandb_api_key", "huggingface_token"}
