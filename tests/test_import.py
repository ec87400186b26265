"""``lorabuild import``: kohya's TOMLs, scripts and LoRA headers into recipes; notes; bad input; --diff.

The round trip of every shipped recipe is in tests/test_import_roundtrip.py; the header of a LoRA
trained by the real kohya in tests/test_import_real.py. ``tests/data/import/flux_demo_lora.header.safetensors``
is the header of the LoRA ``lorabuild demo --family flux`` trains (the file cut after its header:
the importer reads nothing else).
"""

from __future__ import annotations

import json
import re
import struct
import tomllib
from pathlib import Path

import pytest

from lorabuild.importer import ImportFailed, NoteKind, from_kohya_options
from lorabuild.importer.dataset import repeats_folder
from lorabuild.importer.family import infer_family
from lorabuild.importer.kohya import MANAGED, MAPPED
from lorabuild.importer.model import Imported, is_secret
from lorabuild.importer.scripts import bash_words, bat_words
from lorabuild.importer.sources import import_sources
from lorabuild.importer.write import recipe_text, write_recipe
from lorabuild.kohya import options as kohya_options
from lorabuild.rules.passthrough import MODELLED
from tests.conftest import run_lorabuild, write_checkpoint

DATA = Path(__file__).parent / "data" / "import"
HEADER = DATA / "flux_demo_lora.header.safetensors"

CONFIG = """\
[model]
pretrained_model_name_or_path = "models/base.safetensors"

[network]
network_module = "lycoris.kohya"
network_dim = 8
network_alpha = 4
network_args = ["algo=loha", "conv_dim=4", "conv_alpha=2", "preset=attn-mlp"]

[optimizer]
optimizer_type = "AdamW8bit"
learning_rate = 1e-4
lr_warmup_steps = 0.05
lr_restart_cycles = 3
optimizer_args = ["weight_decay=0.01", "betas=0.9,0.99"]

[training]
max_train_epochs = 6
mixed_precision = "bf16"
xformers = true
seed = 7
enable_contrastive = true
caption_prefix = "photo of "
save_every_n_epochs = 2

[others]
wandb_api_key = "0123456789abcdef"
huggingface_token = "hf_secret"
output_name = "Imported_Lora"
"""

DATASET = """\
[general]
caption_extension = ".txt"
shuffle_caption = true
keep_tokens = 1

[[datasets]]
resolution = [768, 512]
batch_size = 2
enable_bucket = true

[[datasets.subsets]]
image_dir = "img/10_kazari"
num_repeats = 10
class_tokens = "kazari"

[[datasets.subsets]]
image_dir = "img/reg"
is_reg = true
flip_aug = true
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- kohya's TOMLs -----------------------------------------------------------------------------------


def test_config_and_dataset_become_recipe_keys(tmp_path: Path) -> None:
    config = _write(tmp_path, "kohya/config.toml", CONFIG)
    dataset = _write(tmp_path, "kohya/dataset.toml", DATASET)
    imp = import_sources([config, dataset])
    v = imp.values
    assert v["model.base"] == tmp_path / "kohya" / "models" / "base.safetensors"
    assert "model.family" not in v  # nothing in it tells SD1 from SD2: the base model's header will
    assert (v["network.module"], v["network.dim"], v["network.alpha"]) == ("loha", 8, 4.0)
    assert (v["network.conv_dim"], v["network.conv_alpha"]) == (4, 2)
    assert v["network.args"] == {"preset": "attn-mlp"}
    assert v["optimizer.warmup_steps"] == 0.05
    assert v["optimizer.args"] == {"weight_decay": 0.01, "betas": [0.9, 0.99]}
    assert v["training.attention"] == "xformers"
    assert v["training.save_every_n_epochs"] == 2
    assert v["kohya.caption_prefix"] == "photo of "
    assert v["dataset.resolution"] == [768, 512]
    assert (v["dataset.shuffle_caption"], v["dataset.keep_tokens"]) == (True, 1)
    subsets = v["dataset.subsets"]
    assert isinstance(subsets, list)
    assert subsets[0]["repeats"] == 10 and subsets[0]["trigger"] == "kazari"
    assert subsets[1]["is_reg"] is True and subsets[1]["flip_aug"] is True
    assert v["name"] == "Imported_Lora"


def test_unknown_options_and_secrets_are_listed_never_written(tmp_path: Path) -> None:
    config = _write(tmp_path, "config.toml", CONFIG)
    imp = import_sources([config, _write(tmp_path, "dataset.toml", DATASET)])
    kinds = {n.key: n.kind for n in imp.notes}
    # lora-scripts' lora.toml carries these; the pinned kohya ignores them silently.
    assert kinds["lr_restart_cycles"] is NoteKind.UNKNOWN
    assert kinds["enable_contrastive"] is NoteKind.UNKNOWN
    assert kinds["wandb_api_key"] is NoteKind.SECRET
    assert kinds["huggingface_token"] is NoteKind.SECRET
    out = tmp_path / "recipe.toml"
    text = write_recipe(imp, out)
    assert "0123456789abcdef" not in text and "hf_secret" not in text
    assert "lr_restart_cycles: [unknown to kohya]" in text  # listed in the header comment
    assert tomllib.loads(out.read_text(encoding="utf-8"))["optimizer"]["type"] == "AdamW8bit"


def test_every_option_the_recipe_models_is_read_back() -> None:
    """rules.passthrough.MODELLED (what [kohya] must not set) is what the importer maps or manages."""
    assert set(MODELLED) - MAPPED - set(MANAGED) - {"max_train_steps"} == set()


def test_kohya_defaults_are_written_where_the_recipe_defaults_differ() -> None:
    # kohya's defaults: no mixed precision, no attention kernel, constant LR, no latents cache.
    imp = from_kohya_options(
        {"pretrained_model_name_or_path": "/m/base.safetensors", "max_train_epochs": 1, "seed": 1},
        {"datasets": [{"resolution": 512, "subsets": [{"image_dir": "/d/x"}]}]},
        script="train_network.py",
        source="config.toml",
    )
    v = imp.values
    assert (v["training.mixed_precision"], v["training.attention"]) == ("no", "none")
    assert (v["optimizer.scheduler"], v["optimizer.lr"]) == ("constant", 2e-06)
    assert v["training.cache_latents"] is False
    assert v["network.dim"] == 4 and v["network.alpha"] == 1.0  # networks/lora.py's None -> 4, alpha 1
    subsets = v["dataset.subsets"]
    assert isinstance(subsets, list) and subsets[0]["caption_extension"] == ".caption"
    assert {n.key for n in imp.notes} >= {"save_every_n_epochs"}


def test_flux_options_keep_kohyas_values_over_the_family_defaults() -> None:
    imp = from_kohya_options(
        {
            "pretrained_model_name_or_path": "/m/flux.safetensors",
            "max_train_epochs": 1,
            "seed": 1,
            "t5xxl": "/m/t5",
        },
        {"datasets": [{"resolution": 1024, "subsets": [{"image_dir": "/d/x"}]}]},
        script=None,
        source="config.toml",
    )
    assert imp.values["model.family"] == "flux"
    # kohya's 3.5 and sigma, not lorabuild's FLUX defaults (1.0, flux_shift): the config trained those.
    assert (imp.values["flow.guidance_scale"], imp.values["flow.timestep_sampling"]) == (3.5, "sigma")


def test_train_data_dir_folders_are_subsets(tmp_path: Path) -> None:
    for name in ("10_kazari", "3_uiharu kazari", "notes"):
        (tmp_path / "train" / name).mkdir(parents=True)
    imp = from_kohya_options(
        {
            "train_data_dir": str(tmp_path / "train"),
            "resolution": "512,768",
            "max_train_epochs": 1,
            "seed": 1,
        },
        None,
        script="train_network.py",
        source="cli",
    )
    subsets = imp.values["dataset.subsets"]
    assert isinstance(subsets, list)
    assert [(s["repeats"], s["trigger"]) for s in subsets] == [(10, "kazari"), (3, "uiharu kazari")]
    assert imp.values["dataset.resolution"] == [512, 768]
    assert any(n.key == "train_data_dir notes" for n in imp.notes)  # kohya skips it too
    assert repeats_folder("5_a_b") == (5, "a_b") and repeats_folder("a_5") is None


def test_secret_names() -> None:
    assert is_secret("wandb_api_key") and is_secret("huggingface_token") and is_secret("HF_TOKEN")
    assert (
        not is_secret("keep_tokens") and not is_secret("max_token_length") and not is_secret("class_tokens")
    )


# --- scripts -----------------------------------------------------------------------------------------


def test_bash_script_with_variables_arrays_and_continuations(tmp_path: Path) -> None:
    script = _write(
        tmp_path,
        "run.sh",
        """#!/bin/bash
MODEL="${MODEL_DIR:-/models}/sdxl.safetensors"
ARGS=(
  --network_dim 32   # rank
  --network_alpha 16
)
export HF_HOME=/cache/hf
accelerate launch --num_cpu_threads_per_process 4 sd-scripts/sdxl_train_network.py \\
  --pretrained_model_name_or_path "$MODEL" \\
  "${ARGS[@]}" --learning_rate=2e-4 --train_data_dir ./missing --resolution 1024 \\
  --max_train_epochs 3 --seed 3 --network_module networks.lora --xformers
""",
    )
    imp = import_sources([script])
    v = imp.values
    assert v["model.family"] == "sdxl"
    assert v["model.base"] == "/models/sdxl.safetensors"
    assert (v["network.dim"], v["network.alpha"], v["optimizer.lr"]) == (32, 16.0, 2e-4)
    assert v["launch.num_cpu_threads_per_process"] == 4
    assert v["launch.env.HF_HOME"] == "/cache/hf"
    assert any(n.kind is NoteKind.TODO and n.key == "dataset.subsets[0]" for n in imp.notes)


@pytest.mark.parametrize(
    ("preset", "dim"), [("small", 4), ("medium", 16), ("large", 32), ("", 8), ("other", 8)]
)
def test_bash_if_elif_else_reads_only_the_branch_taken(preset: str, dim: int) -> None:
    script = f"""PRESET="{preset}"
if [ -z "$PRESET" ]; then
  DIM=8
elif [ "$PRESET" = "small" ]; then DIM=4
elif [[ $PRESET == medium ]]
then
  DIM=16
elif test "$PRESET" = large; then
  DIM=32
  if [ "$DIM" -gt 16 ]; then ALPHA=16; else ALPHA=1; fi
else
  DIM=8
fi
run --network_dim $DIM --network_alpha ${{ALPHA:-1}}
"""
    *_, last = bash_words(script, "/s")
    assert last == ["run", "--network_dim", str(dim), "--network_alpha", "16" if dim == 32 else "1"]


def test_a_bash_branch_on_what_the_script_cannot_tell_is_read() -> None:
    """A command's exit status or a file test: the branch runs, as if taken (its values are the script's)."""
    script = 'if command -v nvidia-smi; then GPU=1; fi\nif [ -f "$CFG" ]; then X=2; fi\nrun $GPU $X\n'
    assert list(bash_words(script, "/s"))[-1] == ["run", "1", "2"]


def test_bash_words_resolve_what_the_script_sets() -> None:
    words = list(bash_words('A=1\nB="$A two"\necho "$B" ${C:-three} $(dirname "$0")/x\n', "/s"))
    assert words == [["echo", "1 two", "three", "/s/x"]]


def test_bat_script(tmp_path: Path) -> None:
    script = _write(
        tmp_path,
        "train.bat",
        "@echo off\nREM a comment\nset MODEL=C:\\models\\v1.safetensors\n"
        'accelerate launch "%~dp0sd-scripts\\train_network.py" ^\n'
        '  --pretrained_model_name_or_path="%MODEL%" --network_dim 8 --max_train_epochs 2 --seed 1\n',
    )
    imp = import_sources([script])
    assert imp.values["model.base"] == "C:\\models\\v1.safetensors"
    assert imp.values["network.dim"] == 8
    assert list(bat_words("set X=1\r\necho %X%\r\n", "C:/s")) == [["echo", "1"]]


def test_powershell_script_with_backticks_splatting_and_variables(tmp_path: Path) -> None:
    script = _write(
        tmp_path,
        "train.ps1",
        """$model = "D:\\models\\base.safetensors"
$dim = 24
$ext_args = [System.Collections.ArrayList]::new()
$unet_only = 1
if ($unet_only -ne 0) { [void]$ext_args.Add("--network_train_unet_only") }
if ($missing) { [void]$ext_args.Add("--full_fp16") }
$common = @('--seed', '5', '--max_train_epochs', '2')
$env:HF_HOME = 'hf'
accelerate launch --num_cpu_threads_per_process 6 "./sd-scripts/train_network.py" `
  --pretrained_model_name_or_path $model `
  --network_dim $dim --network_alpha "$($dim)" `
  --output_name "run_$dim" @common $ext_args
""",
    )
    imp = import_sources([script])
    v = imp.values
    assert v["model.base"] == "D:\\models\\base.safetensors"
    assert v["network.dim"] == 24
    assert v["network.train"] == "unet"
    assert "training.full_fp16" not in v
    assert v["name"] == "run_24"
    assert (v["training.epochs"], v["training.seed"]) == (2, 5)
    assert v["launch.num_cpu_threads_per_process"] == 6
    assert v["launch.env.HF_HOME"] == "hf"


@pytest.mark.parametrize(("preset", "dim"), [("small", 4), ("medium", 16), ("large", 32), ("other", 8)])
def test_powershell_if_elseif_else_reads_only_the_branch_taken(tmp_path: Path, preset: str, dim: int) -> None:
    script = _write(
        tmp_path,
        "train.ps1",
        f"""$preset = "{preset}"
if ($preset -eq "small") {{ $dim = 4 }}
elseif ($preset -eq "medium") {{ $dim = 16 }}
elseif ($preset -eq "large") {{ $dim = 32 }}
else {{ $dim = 8 }}
accelerate launch "./sd-scripts/train_network.py" --network_dim $dim --max_train_epochs 1
""",
    )
    assert import_sources([script]).values["network.dim"] == dim


def test_powershell_name_equals_value_arguments(tmp_path: Path) -> None:
    # The grammar reports an ERROR at --name=value (PowerShell passes it as one word): that
    # statement is read by PowerShell's argument rules.
    script = _write(
        tmp_path,
        "train.ps1",
        "$lr = '3e-4'\n"
        'python -m accelerate.commands.launch --num_cpu_threads_per_process=8 "./sd-scripts/train_network.py" `\n'
        '  --learning_rate=$lr --network_dim=4 --max_train_epochs=1 --seed=1 --output_name="a b"\n',
    )
    imp = import_sources([script])
    assert (imp.values["optimizer.lr"], imp.values["network.dim"], imp.values["name"]) == (3e-4, 4, "a b")
    assert imp.values["launch.num_cpu_threads_per_process"] == 8


def test_script_reads_the_config_files_it_names(tmp_path: Path) -> None:
    _write(tmp_path, "cfg/config.toml", CONFIG)
    _write(tmp_path, "cfg/dataset.toml", DATASET)
    script = _write(
        tmp_path,
        "cfg/train.sh",
        'cd "$(dirname "$0")"\naccelerate launch train_network.py --config_file config '
        "--dataset_config dataset.toml --network_dim 12\n",
    )
    imp = import_sources([script])
    assert imp.values["network.dim"] == 12  # the command line wins over the config file
    assert imp.values["network.module"] == "loha"


# --- a LoRA's header ---------------------------------------------------------------------------------


def test_header_only_file_of_the_flux_demo_lora() -> None:
    imp = import_sources([HEADER])
    v = imp.values
    assert v["model.family"] == "flux"
    assert (v["network.module"], v["network.dim"], v["network.alpha"], v["network.train"]) == (
        "lora",
        16,
        1.0,
        "unet",
    )
    assert (v["optimizer.type"], v["optimizer.lr"], v["optimizer.scheduler"]) == ("AdamW", 1e-4, "constant")
    assert (v["training.epochs"], v["dataset.resolution"]) == (4, [64, 64])
    assert v["title"] == "Character (FLUX.1 dev)"
    subsets = v["dataset.subsets"]
    assert isinstance(subsets, list)
    assert (subsets[0]["repeats"], subsets[0]["trigger"], subsets[0]["source"]) == (
        4,
        "my_character",
        "data/4_my_character",
    )
    todo = {n.key for n in imp.notes if n.kind is NoteKind.TODO}
    assert {
        "model.base",
        "model.t5xxl",
        "model.ae",
        "dataset.subsets[0].source",
        "captions",
        "evaluate.prompts",
    } <= todo
    text = recipe_text(imp, Path("recipe.toml"))
    assert 'source = "data/4_my_character"  # TODO: the header names the folder' in text


def test_trigger_is_guessed_from_tag_frequency(tmp_path: Path) -> None:
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": "8",
        "ss_network_alpha": "4.0",
        "ss_base_model_version": "sd_v1",
        "ss_num_epochs": "3",
        "ss_seed": "1",
        "ss_resolution": "(512, 512)",
        "ss_dataset_dirs": json.dumps({"5_chara": {"n_repeats": 5, "img_count": 10}}),
        "ss_tag_frequency": json.dumps({"5_chara": {"1girl": 9, "chara_name": 10, "smile": 3}}),
        "ss_optimizer": "bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.1)",
    }
    path = _safetensors(tmp_path / "x.safetensors", meta)
    imp = import_sources([path])
    subsets = imp.values["dataset.subsets"]
    assert isinstance(subsets, list) and subsets[0]["repeats"] == 5
    assert subsets[0]["trigger"] == "chara"  # the folder's class tokens, as kohya reads it
    assert imp.values["optimizer.type"] == "AdamW8bit" and imp.values["optimizer.args"] == {
        "weight_decay": 0.1
    }
    meta["ss_dataset_dirs"] = json.dumps({"chara": {"n_repeats": 5, "img_count": 10}})
    meta["ss_tag_frequency"] = json.dumps({"chara": {"1girl": 9, "chara_name": 10, "smile": 3}})
    imp = import_sources([_safetensors(tmp_path / "y.safetensors", meta)])
    subsets = imp.values["dataset.subsets"]
    assert isinstance(subsets, list) and subsets[0]["trigger"] == "chara_name"
    assert any("guessed from ss_tag_frequency" in n.why for n in imp.notes)


@pytest.mark.parametrize(
    ("version", "module", "family"),
    [
        ("5-large", "networks.lora_sd3", "sd3"),  # sd3_train_network.py writes the MMDiT's model_type
        ("5-medium", "networks.lora_sd3", "sd3"),
        ("medium", "networks.lora_sd3", "sd3"),
        ("anima", "networks.lora_anima", "anima"),
    ],
)
def test_sd3_and_anima_headers_name_their_family(
    tmp_path: Path, version: str, module: str, family: str
) -> None:
    meta = {
        "ss_network_module": module,
        "ss_network_dim": "8",
        "ss_base_model_version": version,
        "ss_apply_lg_attn_mask": "True",
        "ss_num_epochs": "2",
        "ss_dataset_dirs": json.dumps({"4_chara": {"n_repeats": 4, "img_count": 4}}),
    }
    imp = import_sources([_safetensors(tmp_path / "x.safetensors", meta)])
    assert imp.values["model.family"] == family
    assert imp.values["network.module"] == "lora"
    if family == "sd3":
        assert imp.values["flow.apply_lg_attn_mask"] is True
    else:  # kohya writes no ss_vae_disable_cache: the family's default (True), not kohya's (False)
        assert "flow.vae_disable_cache" not in imp.values
        assert any(n.key == "flow.vae_disable_cache" and n.kind is NoteKind.TODO for n in imp.notes)
    assert not any(n.key == "ss_apply_lg_attn_mask" for n in imp.notes)


def test_a_lumina_header_names_its_family_and_leaves_the_system_prompt_to_it(tmp_path: Path) -> None:
    """lumina_train_network.py writes ss_base_model_version "lumina2" and no ss_ key for the system prompt."""
    meta = {
        "ss_network_module": "networks.lora_lumina",
        "ss_network_dim": "8",
        "ss_base_model_version": "lumina2",
        "ss_timestep_sampling": "shift",
        "ss_discrete_flow_shift": "3.0",
        "ss_num_epochs": "2",
        "ss_dataset_dirs": json.dumps({"4_chara": {"n_repeats": 4, "img_count": 4}}),
    }
    imp = import_sources([_safetensors(tmp_path / "x.safetensors", meta)])
    assert imp.values["model.family"] == "lumina" and imp.values["network.module"] == "lora"
    assert (imp.values["flow.timestep_sampling"], imp.values["flow.discrete_flow_shift"]) == ("shift", 3.0)
    assert "flow.system_prompt" not in imp.values
    assert any(n.key == "flow.system_prompt" and n.kind is NoteKind.TODO for n in imp.notes)


def _safetensors(path: Path, meta: dict[str, str]) -> Path:
    header = json.dumps(
        {
            "__metadata__": meta,
            "lora_unet_x.lora_down.weight": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},
        }
    )
    raw = header.encode() + b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0")
    return path


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("settings.json", b'{"theme": "dark"}', "is JSON, but not a training config lorabuild can import"),
        ("broken.json", b"{nope", "is not JSON"),
        ("cut.safetensors", HEADER.read_bytes()[:2000], "is not a safetensors file whose header can be read"),
        ("plain.safetensors", b"\x10\0\0\0\0\0\0\0{}              ", "has no kohya training metadata"),
        ("run.sh", b"#!/bin/sh\necho hello\npython app.py --x 1\n", "has no kohya LoRA training launch"),
        ("run.ps1", b"Write-Host 'hi'\n", "has no kohya LoRA training launch"),
        ("ft.sh", b"accelerate launch sdxl_train.py --x 1\n", "does not train a LoRA"),
        ("bad.toml", b"a = [", "is not TOML"),
        ("notes.txt", b"hello", "is not a kind lorabuild imports"),
    ],
    ids=lambda x: x if isinstance(x, str) and "." in x and len(x) < 20 else "",
)
def test_bad_input_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    source = tmp_path / name
    source.write_bytes(data)
    with pytest.raises(ImportFailed, match=re.escape(message)):
        import_sources([source])
    out = tmp_path / "out.toml"
    result = run_lorabuild("import", str(source), "-o", str(out))
    assert result.returncode == 2
    assert f"{source.as_posix()}: " in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_a_script_for_a_family_lorabuild_does_not_build(tmp_path: Path) -> None:
    # Every kohya *_train_network.py at the pinned commit is a family now; a script of another trainer
    # (musubi-tuner's Qwen-Image, shared/FAMILIES.md) is refused by name before any family is guessed.
    script = _write(tmp_path, "qwen.sh", "accelerate launch qwen_image_train_network.py --network_dim 4\n")
    with pytest.raises(
        ImportFailed, match=r"runs kohya's qwen_image_train_network\.py, which does not train"
    ):
        import_sources([script])
    with pytest.raises(
        ImportFailed, match=r"qwen_image_train_network\.py trains a model family lorabuild does not build"
    ):
        infer_family({}, "qwen_image_train_network.py", Imported(source="qwen.sh"))


def test_a_lumina_script_is_a_lumina_recipe(tmp_path: Path) -> None:
    script = _write(
        tmp_path,
        "lumina.sh",
        "accelerate launch lumina_train_network.py --pretrained_model_name_or_path lumina-image-2.safetensors "
        "--gemma2 gemma-2-2b.safetensors --ae ae.safetensors --network_module networks.lora_lumina "
        "--network_dim 8 --timestep_sampling nextdit_shift --discrete_flow_shift 3.0 --gemma2_max_token_length 128 "
        '--system_prompt "You are an assistant."\n',
    )
    v = import_sources([script]).values
    assert v["model.family"] == "lumina"
    assert (
        Path(str(v["model.gemma2"])).name == "gemma-2-2b.safetensors"
        and Path(str(v["model.ae"])).name == "ae.safetensors"
    )
    # nextdit_shift is the family's default: prune leaves it to lorabuild; shift 3.0 is not.
    assert "flow.timestep_sampling" not in v and v["flow.discrete_flow_shift"] == 3.0
    assert v["flow.gemma2_max_token_length"] == 128
    assert v["flow.system_prompt"] == "You are an assistant."


# --- the command --------------------------------------------------------------------------------------


def test_cli_writes_the_recipe_prints_notes_and_keeps_existing_files(tmp_path: Path) -> None:
    config = _write(tmp_path, "config.toml", CONFIG)
    dataset = _write(tmp_path, "dataset.toml", DATASET)
    out = tmp_path / "recipes" / "imported.toml"
    out.parent.mkdir()
    result = run_lorabuild("import", str(config), str(dataset), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "wandb_api_key: [secret removed]" in result.stdout
    assert "enable_contrastive: [unknown to kohya]" in result.stdout
    doc = tomllib.loads(out.read_text(encoding="utf-8"))
    assert doc["model"]["base"] == "../models/base.safetensors"  # relative to the recipe now
    assert doc["dataset"]["subsets"][0]["source"] == "../img/10_kazari"
    again = run_lorabuild("import", str(config), "-o", str(out))
    assert again.returncode == 2 and "--force" in again.stderr


def test_diff_names_the_keys_that_disagree(tmp_path: Path) -> None:
    config = _write(tmp_path, "config.toml", CONFIG)
    dataset = _write(tmp_path, "dataset.toml", DATASET)
    recipe = tmp_path / "recipe.toml"
    assert run_lorabuild("import", str(config), str(dataset), "-o", str(recipe)).returncode == 0
    same = run_lorabuild("import", "--diff", str(recipe), str(config), str(dataset))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "0 difference(s)" in same.stdout
    _write(tmp_path, "config.toml", CONFIG.replace("network_dim = 8", "network_dim = 32"))
    changed = run_lorabuild("import", "--diff", str(recipe), str(config), str(dataset))
    assert changed.returncode == 1, changed.stderr
    assert "network.dim: recipe 8, source 32" in changed.stdout


def test_option_table_covers_the_scripts_read() -> None:
    # The importer reads flags with the script's option table: every family's trainer is in it.
    assert {"train_network.py", "sdxl_train_network.py", "flux_train_network.py"} <= set(
        kohya_options.SCRIPTS
    )


def test_family_is_read_from_the_base_models_header_when_the_options_do_not_tell(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "models" / "xl.safetensors", "sdxl")
    options = {"pretrained_model_name_or_path": "models/xl.safetensors", "max_train_epochs": 1, "seed": 1}
    dataset = {"datasets": [{"resolution": 1024, "subsets": [{"image_dir": "img"}]}]}
    imp = from_kohya_options(options, dataset, script=None, source="config.toml", base=tmp_path)
    assert imp.values["model.family"] == "sdxl"
    assert imp.comments["model.family"] == "read from the base model's header"
    assert not any(n.key == "model.family" for n in imp.notes)


def test_sample_prompts_file_becomes_evaluate(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "prompts.txt",
        "# a comment\nkazari, smile --w 768 --h 512 --d 7 --s 30 --l 6.5 --n lowres\n"
        "kazari, smile --w 768 --h 512 --d 8 --s 30 --l 6.5 --n lowres\nkazari, running --d 7\n",
    )
    options = {"sample_prompts": "prompts.txt", "sample_every_n_epochs": 2, "max_train_epochs": 4, "seed": 1}
    imp = from_kohya_options(options, None, script="train_network.py", source="config.toml", base=tmp_path)
    v = imp.values
    assert v["evaluate.prompts"] == ["kazari, smile", "kazari, running"]
    assert (v["evaluate.seeds"], v["evaluate.width"], v["evaluate.height"]) == ([7, 8], 768, 512)
    assert (v["evaluate.steps"], v["evaluate.cfg_scale"], v["evaluate.negative_prompt"]) == (
        30,
        6.5,
        "lowres",
    )
    assert v["evaluate.sample_every_n_epochs"] == 2


def test_other_tools_readers_are_tried_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sources.JSON_READERS / TOML_READERS: the hooks other tools' readers register in."""
    from lorabuild.importer import sources

    def gui(path: Path, doc: object) -> sources.KohyaParts | None:
        if not isinstance(doc, dict) or "LoRA_type" not in doc:
            return None
        return sources.KohyaParts(
            options={"network_dim": doc["network_dim"], "max_train_epochs": 1, "seed": 1}
        )

    monkeypatch.setattr(sources, "JSON_READERS", [gui])
    config = _write(tmp_path, "gui.json", json.dumps({"LoRA_type": "Standard", "network_dim": 12}))
    assert import_sources([config]).values["network.dim"] == 12
