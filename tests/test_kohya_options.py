"""The options kohya accepts (lorabuild/data/kohya_options.json) and the checks built on them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lorabuild import KOHYA_COMMIT
from lorabuild.kohya.options import (
    SCRIPTS,
    OptionDefault,
    OptionSpec,
    check_config_value,
    check_dataset_config,
    kohya_commit,
    options,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SD_SCRIPTS = REPO_ROOT / "vendor" / "sd-scripts"
DATA_FILE = REPO_ROOT / "lorabuild" / "data" / "kohya_options.json"
EXTRACTOR = REPO_ROOT / "tools" / "extract_kohya_options.py"

TN = "train_network.py"
SDXL = "sdxl_train_network.py"
GEN = "gen_img.py"
FLUX = "flux_train_network.py"
FLUX_GEN = "flux_minimal_inference.py"
SD3 = "sd3_train_network.py"
SD3_GEN = "sd3_minimal_inference.py"
LUMINA = "lumina_train_network.py"
LUMINA_GEN = "lumina_minimal_inference.py"
HUNYUAN = "hunyuan_image_train_network.py"
HUNYUAN_GEN = "hunyuan_image_minimal_inference.py"
ANIMA = "anima_train_network.py"
ANIMA_GEN = "anima_minimal_inference.py"
TRAINERS = (SDXL, FLUX, SD3, LUMINA, HUNYUAN, ANIMA)


def _require_sd_scripts() -> None:
    if not (SD_SCRIPTS / "train_network.py").is_file():
        pytest.skip(
            "vendor/sd-scripts is not checked out: run `git submodule update --init vendor/sd-scripts` "
            "(kohya-ss/sd-scripts at the pinned commit)"
        )


# ------------------------------------------------------------------------------------------
# Loader
# ------------------------------------------------------------------------------------------


def test_option_counts_match_kohya() -> None:
    # KOHYA.md section 3: 193 options for train_network.py, +3 for SDXL, 94 for gen_img.py; the other
    # families' trainers add their own to train_network.py's, their generators are small parsers.
    assert {script: len(options(script)) for script in SCRIPTS} == {
        TN: 193,
        SDXL: 196,
        GEN: 94,
        FLUX: 215,
        FLUX_GEN: 24,
        SD3: 218,
        SD3_GEN: 21,
        LUMINA: 213,
        LUMINA_GEN: 27,
        HUNYUAN: 214,
        HUNYUAN_GEN: 34,
        ANIMA: 220,
        ANIMA_GEN: 28,
    }


def test_scripts_are_exactly_those_in_the_data_file() -> None:
    # A script named in SCRIPTS but missing from the data (or the reverse) means the extractor's
    # SCRIPTS and this module's have drifted apart: regenerate the data file.
    recorded = json.loads(DATA_FILE.read_text(encoding="utf-8"))["scripts"]
    assert sorted(recorded) == sorted(SCRIPTS)
    assert len(set(SCRIPTS)) == len(SCRIPTS)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_keeps_train_network_options_as_they_are(trainer: str) -> None:
    # Every *_train_network.py builds on train_network.py's setup_parser(), so a key valid for
    # train_network.py is valid, with the same type, for every family's trainer.
    for name, spec in options(TN).items():
        assert options(trainer).get(name) == spec, f"{trainer}: {name}"


def test_sdxl_adds_three_options_to_train_network() -> None:
    added = options(SDXL).keys() - options(TN).keys()
    assert sorted(added) == [
        "cache_text_encoder_outputs",
        "cache_text_encoder_outputs_to_disk",
        "disable_mmap_load_safetensors",
    ]
    assert options(TN).keys() <= options(SDXL).keys()


@pytest.mark.parametrize(
    ("script", "spec"),
    [
        (TN, OptionSpec("network_dim", "value", "int", None, None, ("--network_dim",), None)),
        (TN, OptionSpec("v2", "flag", "bool", False, None, ("--v2",), None)),
        (TN, OptionSpec("lr_warmup_steps", "value", "int_or_float", 0, None, ("--lr_warmup_steps",), None)),
        (TN, OptionSpec("network_args", "list", "str", None, None, ("--network_args",), "*")),
        (TN, OptionSpec("dataset_config", "value", "path", None, None, ("--dataset_config",), None)),
        (TN, OptionSpec("learning_rate", "value", "float", 2e-06, None, ("--learning_rate",), None)),
        (
            TN,
            OptionSpec(
                "save_precision",
                "value",
                "str",
                None,
                (None, "float", "fp16", "bf16"),
                ("--save_precision",),
                None,
            ),
        ),
        (
            TN,
            OptionSpec(
                "max_token_length", "value", "int", None, (None, 150, 225), ("--max_token_length",), None
            ),
        ),
        (GEN, OptionSpec("noise_offset_range", "list", "float", None, None, ("--noise_offset_range",), 2)),
    ],
)
def test_option_specs(script: str, spec: OptionSpec) -> None:
    assert options(script)[spec.name] == spec


def _value(
    name: str, type_: str, default: OptionDefault = None, choices: tuple[str, ...] | None = None
) -> OptionSpec:
    return OptionSpec(name, "value", type_, default, choices, (f"--{name}",), None)


def _flag(name: str) -> OptionSpec:
    return OptionSpec(name, "flag", "bool", False, None, (f"--{name}",), None)


def _list(name: str, type_: str, nargs: int | str, default: OptionDefault) -> OptionSpec:
    return OptionSpec(name, "list", type_, default, None, (f"--{name}",), nargs)


# Each checked against the pinned kohya's source; the comments say where kohya defines them.
FAMILY_SPECS = [
    # library/flux_train_utils.py add_flux_train_arguments
    (FLUX, _value("guidance_scale", "float", 3.5)),
    (
        FLUX,
        _value("timestep_sampling", "str", "sigma", ("sigma", "uniform", "sigmoid", "shift", "flux_shift")),
    ),
    (FLUX, _value("model_prediction_type", "str", "sigma_scaled", ("raw", "additive", "sigma_scaled"))),
    (FLUX, _value("model_type", "str", "flux", ("flux", "chroma"))),
    (FLUX, _value("t5xxl_max_token_length", "int")),
    (FLUX, _value("discrete_flow_shift", "float", 3.0)),
    (FLUX, _flag("apply_t5_attn_mask")),
    (FLUX, _flag("split_mode")),  # flux_train_network.py setup_parser
    (FLUX, _flag("cache_text_encoder_outputs")),  # library/train_util.py add_dit_training_arguments
    (FLUX, _flag("fp8_base")),  # library/train_util.py add_training_arguments
    (FLUX, _value("blocks_to_swap", "int")),  # library/train_util.py add_dit_training_arguments
    # flux_minimal_inference.py's __main__ block
    (FLUX_GEN, _value("ckpt_path", "str")),  # required=True
    (FLUX_GEN, _value("model_type", "str", "flux", ("flux", "chroma"))),
    (FLUX_GEN, _value("guidance", "float", 3.5)),
    (FLUX_GEN, _value("width", "int", 1360)),
    (FLUX_GEN, _value("height", "int", 768)),
    (FLUX_GEN, _value("dtype", "str", "bfloat16")),
    (FLUX_GEN, _list("lora_weights", "str", "*", ())),
    (FLUX_GEN, _flag("interactive")),
    # library/train_util.py add_dit_training_arguments (weighting_scheme), library/sd3_train_utils.py
    # add_sd3_training_arguments
    (
        SD3,
        _value(
            "weighting_scheme",
            "str",
            "uniform",
            ("sigma_sqrt", "logit_normal", "mode", "cosmap", "none", "uniform"),
        ),
    ),
    (SD3, _value("training_shift", "float", 1.0)),
    (SD3, _flag("apply_lg_attn_mask")),
    # sd3_minimal_inference.py's __main__ block
    (SD3_GEN, _value("ckpt_path", "str")),
    (SD3_GEN, _value("t5xxl_token_length", "int", 256)),
    (SD3_GEN, _value("cfg_scale", "float", 5.0)),
    (SD3_GEN, _flag("apply_lg_attn_mask")),
    (SD3_GEN, _list("lora_weights", "str", "*", ())),
    # library/lumina_train_util.py add_lumina_train_arguments
    (LUMINA, _value("gemma2", "str")),
    (LUMINA, _value("system_prompt", "str", "")),
    # lumina_minimal_inference.py setup_parser: the text encoder is --gemma2_path here
    (LUMINA_GEN, _value("gemma2_path", "str")),
    (LUMINA_GEN, _value("system_prompt", "str", "")),
    (LUMINA_GEN, _value("steps", "int", 36)),
    # hunyuan_image_train_network.py setup_parser
    (HUNYUAN, _value("byt5", "str")),
    (HUNYUAN, _flag("fp8_scaled")),
    # hunyuan_image_minimal_inference.py parse_args()
    (HUNYUAN_GEN, _value("byt5", "str")),
    (HUNYUAN_GEN, _flag("fp8_scaled")),
    (HUNYUAN_GEN, _list("image_size", "int", 2, (2048, 2048))),
    (HUNYUAN_GEN, _value("attn_mode", "str", "torch", ("flash", "torch", "sageattn", "xformers", "sdpa"))),
    # library/anima_train_utils.py add_anima_training_arguments
    (ANIMA, _value("qwen3", "str")),
    (ANIMA, _value("llm_adapter_path", "str")),
    # anima_minimal_inference.py parse_args(): one --text_encoder, no separate adapter path
    (ANIMA_GEN, _value("text_encoder", "str")),
    (ANIMA_GEN, _list("image_size", "int", 2, (1024, 1024))),
    (ANIMA_GEN, _list("lora_multiplier", "float", "*", 1.0)),  # sic: a scalar default for a list
]


@pytest.mark.parametrize(("script", "spec"), FAMILY_SPECS, ids=lambda v: getattr(v, "name", v))
def test_family_option_specs(script: str, spec: OptionSpec) -> None:
    assert options(script)[spec.name] == spec


def test_options_are_loaded_once_and_read_only() -> None:
    assert options(TN) is options(TN)
    with pytest.raises(TypeError):
        options(TN)["network_dim"] = options(TN)["network_alpha"]  # type: ignore[index]


def test_unknown_script_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match=r"no kohya options recorded for 'sdxl_train\.py'"):
        options("sdxl_train.py")
    with pytest.raises(ValueError, match=r"no kohya options recorded"):
        check_config_value("flux_train.py", "guidance_scale", 3.5)


def test_data_file_matches_the_pinned_commit_and_stays_small() -> None:
    assert kohya_commit() == KOHYA_COMMIT
    # About 27 kB a trainer, 4 kB a minimal-inference script.
    assert DATA_FILE.stat().st_size < 400_000


# ------------------------------------------------------------------------------------------
# check_config_value
# ------------------------------------------------------------------------------------------

ACCEPTED = [
    (TN, "network_dim", 16),
    (TN, "network_alpha", 8),  # an int for a float option is fine at runtime
    (TN, "network_alpha", 8.0),
    (TN, "learning_rate", 1e-4),
    (TN, "v2", False),
    (TN, "output_name", "kazari"),
    (TN, "dataset_config", "dataset.toml"),
    (TN, "network_args", ["conv_dim=4", "conv_alpha=1"]),
    (TN, "network_args", []),
    (TN, "base_weights_multiplier", [1, 0.5]),
    (TN, "text_encoder_lr", 5e-5),  # a single number: train_network.py's "toml backward compatibility"
    (TN, "text_encoder_lr", [5e-5]),
    (TN, "mixed_precision", "bf16"),
    (TN, "save_precision", "fp16"),
    (TN, "zero_stage", 3),
    (TN, "resolution", "512"),
    (TN, "resolution", "768,512"),
    (TN, "face_crop_aug_range", "2.0,4.0"),
    (TN, "lr_warmup_steps", 100),
    (TN, "lr_warmup_steps", 0.05),
    (TN, "lr_decay_steps", 0),
    (TN, "max_token_length", 75),
    (TN, "max_token_length", 150),
    (TN, "max_token_length", 225),
    (TN, "validation_split", 0.1),
    (TN, "caption_dropout_rate", 0),  # kohya's schema takes float or int here
    (TN, "prior_loss_weight", 1),
    (SDXL, "cache_text_encoder_outputs", True),
    (GEN, "network_mul", [0.6, 1]),
    (GEN, "noise_offset_range", [0.0, 0.1]),
    (GEN, "sampler", "euler_a"),
    (FLUX, "model_type", "chroma"),
    (FLUX, "guidance_scale", 1),
    (FLUX, "blocks_to_swap", 18),
    (FLUX, "timestep_sampling", "flux_shift"),
    (FLUX, "split_mode", True),
    (FLUX, "resolution", "1024,1024"),  # train_network.py's config-file quirks hold for every trainer
    (FLUX, "lr_warmup_steps", 0.05),
    (FLUX_GEN, "lora_weights", ["out/kazari.safetensors;1.0"]),
    (FLUX_GEN, "width", 1024),
    (SD3, "weighting_scheme", "logit_normal"),
    (SD3_GEN, "apply_lg_attn_mask", True),
    (LUMINA, "system_prompt", "You are an assistant designed to generate high-quality images."),
    (LUMINA_GEN, "gemma2_path", "gemma2.safetensors"),
    (HUNYUAN, "fp8_scaled", True),
    (HUNYUAN_GEN, "image_size", [2048, 2048]),
    (ANIMA, "llm_adapter_path", "adapter.safetensors"),
    (ANIMA_GEN, "lora_multiplier", [0.8]),
]


@pytest.mark.parametrize(("script", "name", "value"), ACCEPTED)
def test_accepted_config_values(script: str, name: str, value: object) -> None:
    assert check_config_value(script, name, value) is None


REJECTED = [
    # unknown options, with a hint
    (
        TN,
        "netwrok_dim",
        8,
        "'netwrok_dim' is not an option of train_network.py (did you mean 'network_dim'?); "
        "kohya silently ignores unknown config keys.",
    ),
    (
        TN,
        "cache_text_encoder_outputs",
        True,
        "'cache_text_encoder_outputs' is not an option of train_network.py "
        "(it is an option of sdxl_train_network.py, flux_train_network.py, sd3_train_network.py "
        "and 3 more); kohya silently ignores unknown config keys.",
    ),
    (
        GEN,
        "config_file",
        "x.toml",
        "'config_file' is not an option of gen_img.py (it is an option "
        "of train_network.py, sdxl_train_network.py, flux_train_network.py and 4 more).",
    ),
    (
        TN,
        "system_prompt",
        "x",
        "'system_prompt' is not an option of train_network.py (it is an option of "
        "lumina_train_network.py and lumina_minimal_inference.py); kohya silently ignores unknown config keys.",
    ),
    (
        TN,
        "guidance_scale",
        3.5,
        "'guidance_scale' is not an option of train_network.py (it is an option of flux_train_network.py, "
        "lumina_minimal_inference.py, hunyuan_image_minimal_inference.py and anima_minimal_inference.py); "
        "kohya silently ignores unknown config keys.",
    ),
    (
        FLUX,
        "guidance",
        3.5,
        "'guidance' is not an option of flux_train_network.py (it is an option of flux_minimal_inference.py); "
        "kohya silently ignores unknown config keys.",
    ),
    (
        FLUX_GEN,
        "guidance_scale",
        3.5,
        "'guidance_scale' is not an option of flux_minimal_inference.py (it is an option of "
        "flux_train_network.py, lumina_minimal_inference.py, hunyuan_image_minimal_inference.py and "
        "anima_minimal_inference.py).",
    ),
    (
        ANIMA_GEN,
        "qwen3",
        "q.safetensors",
        "'qwen3' is not an option of anima_minimal_inference.py (it is an option of anima_train_network.py).",
    ),
    (
        TN,
        "network_multiplier",
        1.0,
        "'network_multiplier' is not an option of train_network.py (it is a dataset-config key: "
        "set it in the --dataset_config TOML); kohya silently ignores unknown config keys.",
    ),
    # TOML has no null, but a caller might pass one
    (TN, "seed", None, "'seed' has no value; leave it out to use kohya's default."),
    # flags
    (TN, "v2", 1, "'v2' is a flag and must be true or false (got 1)."),
    (TN, "xformers", "true", "'xformers' is a flag and must be true or false (got \"true\")."),
    # ints
    (TN, "network_dim", 8.0, "'network_dim' must be an integer (got 8.0)."),
    (TN, "network_dim", "8", "'network_dim' must be an integer (got \"8\")."),
    (TN, "max_train_epochs", True, "'max_train_epochs' must be an integer (got true)."),
    (TN, "keep_tokens", True, "'keep_tokens' must be an integer (got true)."),
    # floats
    (TN, "learning_rate", "1e-4", "'learning_rate' must be a number (got \"1e-4\")."),
    (TN, "learning_rate", True, "'learning_rate' must be a number (got true)."),
    # strings
    (TN, "output_name", 5, "'output_name' must be a string (got 5); quote it."),
    (TN, "dataset_config", ["a.toml"], "'dataset_config' must be a string (got [\"a.toml\"]); quote it."),
    # lists
    (
        TN,
        "network_args",
        "conv_dim=4",
        '\'network_args\' must be an array like ["conv_dim=4", "conv_alpha=1"] (got "conv_dim=4"); '
        "kohya would iterate the string character by character.",
    ),
    (
        TN,
        "base_weights_multiplier",
        0.5,
        "'base_weights_multiplier' must be an array like [0.5, 1.0] (got 0.5).",
    ),
    (
        TN,
        "optimizer_args",
        ["weight_decay=0.1", 3],
        "'optimizer_args[1]' must be a string (got 3); quote it.",
    ),
    (TN, "text_encoder_lr", ["1e-4"], "'text_encoder_lr[0]' must be a number (got \"1e-4\")."),
    (GEN, "noise_offset_range", [0.1], "'noise_offset_range' must be an array of exactly 2 items (got 1)."),
    # choices (a config file skips argparse's check)
    (TN, "mixed_precision", "fp32", '\'mixed_precision\' must be one of "no", "fp16", "bf16" (got "fp32").'),
    (
        TN,
        "save_model_as",
        "safetensor",
        '\'save_model_as\' must be one of "ckpt", "pt", "safetensors" (got "safetensor") '
        "(did you mean 'safetensors'?).",
    ),
    (TN, "zero_stage", 4, "'zero_stage' must be one of 0, 1, 2, 3 (got 4)."),
    # kohya quirks (KOHYA.md section 4)
    (
        TN,
        "resolution",
        512,
        '\'resolution\' must be a string in a config file, write "512" or "768,512" (got 512).',
    ),
    (
        TN,
        "resolution",
        "512x512",
        "'resolution' must be one or two integers joined by a "
        'comma, write "512" or "768,512" (got "512x512").',
    ),
    (
        TN,
        "face_crop_aug_range",
        [2.0, 4.0],
        "'face_crop_aug_range' must be a string in a config file, write \"2.0,4.0\" (got [2.0, 4.0]).",
    ),
    (
        TN,
        "face_crop_aug_range",
        "4.0,2.0",
        "'face_crop_aug_range' must be 'low,high' with low <= high, write \"2.0,4.0\" (got \"4.0,2.0\").",
    ),
    (
        TN,
        "lr_warmup_steps",
        "10%",
        "'lr_warmup_steps' = \"10%\" is understood only on the command line; in a config file write 0.1.",
    ),
    (
        TN,
        "lr_warmup_steps",
        10.0,
        "'lr_warmup_steps' = 10.0 would be read as 10.0 times the total steps; "
        "write the step count as an integer (10) or a fraction below 1.",
    ),
    (
        TN,
        "lr_decay_steps",
        "many",
        "'lr_decay_steps' must be an integer step count or a fraction "
        'below 1 of the total steps (got "many").',
    ),
    (TN, "max_token_length", 100, "'max_token_length' must be 75 (the default), 150 or 225 (got 100)."),
    (
        TN,
        "validation_split",
        0,
        "'validation_split' must be a float written with a decimal point "
        "(got 0); write 0.0, kohya rejects integers here.",
    ),
    # the other families
    (
        FLUX,
        "model_type",
        "flux1",
        '\'model_type\' must be one of "flux", "chroma" (got "flux1") (did you mean \'flux\'?).',
    ),
    (
        FLUX,
        "timestep_sampling",
        "logit_normal",
        '\'timestep_sampling\' must be one of "sigma", "uniform", "sigmoid", "shift", "flux_shift" '
        '(got "logit_normal").',
    ),
    (FLUX, "blocks_to_swap", 18.0, "'blocks_to_swap' must be an integer (got 18.0)."),
    (FLUX, "split_mode", "yes", "'split_mode' is a flag and must be true or false (got \"yes\")."),
    (
        FLUX,
        "resolution",
        1024,
        '\'resolution\' must be a string in a config file, write "512" or "768,512" (got 1024).',
    ),
    (SD3, "training_shift", "3", "'training_shift' must be a number (got \"3\")."),
    (HUNYUAN_GEN, "image_size", [2048], "'image_size' must be an array of exactly 2 items (got 1)."),
    (FLUX_GEN, "interactive", 1, "'interactive' is a flag and must be true or false (got 1)."),
]


@pytest.mark.parametrize(("script", "name", "value", "message"), REJECTED)
def test_rejected_config_values(script: str, name: str, value: object, message: str) -> None:
    assert check_config_value(script, name, value) == message


def test_gen_img_takes_a_resolution_like_option_without_config_quirks() -> None:
    # gen_img.py has no --config_file, so the string-only quirks of the trainers do not apply.
    assert "resolution" not in options(GEN)
    assert check_config_value(GEN, "W", 512) is None


# ------------------------------------------------------------------------------------------
# check_dataset_config
# ------------------------------------------------------------------------------------------

GOOD_DATASET_CONFIG: dict[str, object] = {
    "general": {"shuffle_caption": True, "caption_extension": ".txt", "keep_tokens": 1, "resolution": 512},
    "datasets": [
        {
            "resolution": [768, 512],
            "batch_size": 2,
            "enable_bucket": True,
            "validation_split": 0.1,
            "validation_seed": 7,
            "subsets": [
                {"image_dir": "train/kazari", "num_repeats": 10, "class_tokens": "kazari"},
                {"image_dir": "reg/girl", "is_reg": True, "face_crop_aug_range": [2.0, 4.0]},
                {"image_dir": "extra", "custom_attributes": {"diff_output_preservation": True}},
            ],
        },
        {"subsets": [{"metadata_file": "meta.json", "image_dir": "ft", "caption_dropout_rate": 0}]},
    ],
}


def test_good_dataset_config_passes() -> None:
    assert check_dataset_config(GOOD_DATASET_CONFIG) == []


def test_bool_passes_as_int_as_in_kohya() -> None:
    doc = {"datasets": [{"subsets": [{"image_dir": "a", "num_repeats": True}]}]}
    assert check_dataset_config(doc) == []


BAD_DATASET_CONFIG: dict[str, object] = {
    "dataset": [],
    "general": {"resolution": "512", "image_dir": "x", "prior_loss_weight": 1.0},
    "datasets": [
        {
            "validation_split": 0,
            "num_repeat": 3,
            "is_reg": True,
            "subsets": [
                {"num_repeats": 1.5, "batch_size": 2, "face_crop_aug_range": [2, 4]},
                "images/",
            ],
        },
        {"class_tokens": "sks", "subsets": [{"metadata_file": "m.json", "is_reg": True}]},
        {"subsets": [{"metadata_file": "m.json"}, {"image_dir": "db"}]},
        {"subsets": {"image_dir": "a"}},
        "oops",
    ],
}


def test_bad_dataset_config_reports_every_problem() -> None:
    assert check_dataset_config(BAD_DATASET_CONFIG) == [
        "dataset: only [general] and [[datasets]] may be at the top level (did you mean 'datasets'?).",
        'general.resolution: must be an integer or an array of 2 integers (got "512").',
        "general.image_dir: is not allowed in [general]; it belongs in [[datasets.subsets]].",
        "general.prior_loss_weight: is not allowed in [general]; it is a training option, "
        "so set it in the --config_file TOML.",
        "datasets[0].validation_split: must be a float written with a decimal point (got 0); "
        "write 0.0, kohya rejects integers here.",
        "datasets[0].num_repeat: is not a kohya dataset-config key (did you mean 'num_repeats'?).",
        "datasets[0].is_reg: is not allowed in a DreamBooth [[datasets]] (one without metadata_file); "
        "it belongs in [[datasets.subsets]].",
        "datasets[0].subsets[0].image_dir: is missing; a DreamBooth "
        "subset (one without metadata_file) must set it.",
        "datasets[0].subsets[0].num_repeats: must be an integer (got 1.5).",
        "datasets[0].subsets[0].batch_size: is not allowed in a "
        "DreamBooth subset (one without metadata_file); "
        "it belongs in [[datasets]] or [general].",
        "datasets[0].subsets[0].face_crop_aug_range: must be an array "
        "of 2 floats written with a decimal point "
        "(got [2, 4]); write [2.0, 4.0], kohya rejects integers here.",
        "datasets[0].subsets[1]: must be a table ([[datasets.subsets]]).",
        "datasets[1].class_tokens: is not allowed in a fine-tuning [[datasets]] (one with metadata_file), "
        "only in a DreamBooth one.",
        "datasets[1].subsets[0].is_reg: is not allowed in a fine-tuning subset (one with metadata_file), "
        "only in a DreamBooth one.",
        "datasets[2]: mixes DreamBooth subsets (image_dir) and fine-tuning subsets (metadata_file); "
        "split them into separate [[datasets]].",
        "datasets[3].subsets: must be an array of tables; write [[datasets.subsets]].",
        "datasets[4]: must be a table ([[datasets]]).",
    ]


def test_datasets_written_as_a_single_table() -> None:
    assert check_dataset_config({"datasets": {"subsets": []}}) == [
        "datasets: must be an array of tables; write [[datasets]], not [datasets]."
    ]


def test_general_must_be_a_table() -> None:
    assert check_dataset_config({"general": ["x"]}) == ["general: must be a table ([general])."]


def test_dataset_without_subsets_is_checked_as_fine_tuning_like_kohya() -> None:
    # kohya picks the fine-tuning schema when *every* subset has metadata_file, so also for none.
    assert check_dataset_config({"datasets": [{"caption_extension": ".txt"}]}) == [
        "datasets[0].caption_extension: is not allowed in a "
        "fine-tuning [[datasets]] (one with metadata_file), "
        "only in a DreamBooth one."
    ]


# ------------------------------------------------------------------------------------------
# Against the real kohya checkout
# ------------------------------------------------------------------------------------------


@pytest.mark.real_trainer
def test_data_file_is_what_the_extractor_makes(tmp_path: Path) -> None:
    _require_sd_scripts()
    output = tmp_path / "kohya_options.json"
    subprocess.run(
        [sys.executable, str(EXTRACTOR), "--sd-scripts", str(SD_SCRIPTS), "-o", str(output)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    assert output.read_bytes() == DATA_FILE.read_bytes(), (
        "lorabuild/data/kohya_options.json is stale: regenerate it with "
        "`python tools/extract_kohya_options.py --sd-scripts vendor/sd-scripts`"
    )


# Runs kohya's own ConfigSanitizer over JSON documents on stdin and prints, for each, null when
# kohya accepts it, else the key path of every error kohya reports (kohya stops inside the first bad
# dataset, so these are a subset of lorabuild's). A child process, because the extractor's import
# stubs must not leak into this test session.
_KOHYA_VERDICTS = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import extract_kohya_options as tool
sanitizer = tool.kohya_sanitizer(Path(sys.argv[2]))
verdicts = []
for doc in json.load(sys.stdin):
    try:
        sanitizer.sanitize_user_config(doc)
        verdicts.append(None)
    except Exception as exc:
        paths = []
        for error in getattr(exc, "errors", [exc]):
            steps = [str(step) for step in getattr(error, "path", [])]
            paths.append("".join(f"[{s}]" if s.isdigit() else f".{s}" for s in steps).lstrip("."))
        verdicts.append(paths)
print(json.dumps(verdicts))
"""

CROSS_CHECK_DOCS: list[dict[str, object]] = [
    GOOD_DATASET_CONFIG,
    BAD_DATASET_CONFIG,
    {},
    {"datasets": []},
    {"datasets": [{"subsets": [{"image_dir": "a", "num_repeats": True}]}]},
    {"datasets": [{"subsets": [{"image_dir": "a", "num_repeats": 1.0}]}]},
    {"datasets": [{"resolution": "512", "subsets": [{"image_dir": "a"}]}]},
    {"datasets": [{"resolution": 512.0, "subsets": [{"image_dir": "a"}]}]},
    {"datasets": [{"resolution": [512, 512, 512], "subsets": [{"image_dir": "a"}]}]},
    {"datasets": [{"validation_split": 0, "subsets": [{"image_dir": "a"}]}]},
    {"datasets": [{"validation_split": 0.2, "subsets": [{"image_dir": "a"}]}]},
    {"datasets": [{"network_multiplier": 1, "subsets": [{"image_dir": "a"}]}]},
    {"general": {"face_crop_aug_range": [2, 4]}},
    {"general": {"face_crop_aug_range": [2.0, 4.0], "class_tokens": "x", "cache_info": True}},
    {"general": {"is_reg": True}},
    {"general": {"token_warmup_step": 10, "caption_dropout_rate": 0}},
    {"datasets": {"subsets": []}},
    {"datasets": [{"subsets": {"image_dir": "a"}}]},
    {"datasets": [{"subsets": [{"image_dir": "a"}, {"metadata_file": "m.json"}]}]},
    {"datasets": [{"subsets": [{"metadata_file": "m.json", "caption_extension": ".txt"}]}]},
    {"datasets": [{"class_tokens": "x", "subsets": [{"metadata_file": "m.json"}]}]},
    {"datasets": [{"caption_extension": ".txt"}]},
    {"datasets": [{"subsets": [{"num_repeats": 2}]}]},
    {"datasets": [{"subsets": [{"image_dir": "a", "conditioning_data_dir": "m"}]}]},
    {"datasets": [{"subsets": [{"image_dir": "a", "custom_attributes": {"k": 1}}]}]},
    {"datasets": [{"subsets": [{"image_dir": "a", "custom_attributes": "k"}]}]},
    {"datasets": [{"subsets": [{"image_dir": 3}]}]},
    {"datasets": [{"batch_size": True, "enable_bucket": 1, "subsets": [{"image_dir": "a"}]}]},
    {"resolution": 512},
]


@pytest.mark.real_trainer
def test_dataset_check_agrees_with_kohya() -> None:
    _require_sd_scripts()
    if importlib.util.find_spec("voluptuous") is None:
        pytest.skip("voluptuous is not installed (pip install voluptuous==0.15.2, kohya's pin)")
    result = subprocess.run(
        [sys.executable, "-c", _KOHYA_VERDICTS, str(EXTRACTOR.parent), str(SD_SCRIPTS)],
        input=json.dumps(CROSS_CHECK_DOCS),
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    kohya_verdicts = json.loads(result.stdout.splitlines()[-1])
    for doc, kohya_paths in zip(CROSS_CHECK_DOCS, kohya_verdicts, strict=True):
        ours = check_dataset_config(doc)
        if kohya_paths is None:
            assert ours == [], f"kohya accepts {doc}, lorabuild says {ours}"
            continue
        assert kohya_paths, f"kohya rejects {doc} without naming a key"
        for path in kohya_paths:
            assert any(message.startswith(f"{path}:") for message in ours), (
                f"{doc}: kohya reports {path!r}, lorabuild says {ours}"
            )
