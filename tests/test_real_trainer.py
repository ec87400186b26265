"""Against the real kohya sd-scripts at the pinned commit (vendor/sd-scripts).

These tests need kohya's Python stack (``pip install -e '.[train]'``) and skip, saying so,
without it or without the checkout. The training test builds (once, cached) the CPU test model
of ``lorabuild.demo.testmodel`` and trains the shipped tutorial recipe with CPU overrides.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from lorabuild.kohya.families import lumina
from lorabuild.plan.plan import Plan, build_plan
from lorabuild.probe.facts import gather
from lorabuild.recipe.load import load_recipe
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.compile import compile_build
from lorabuild.stages.prepare import prepare
from lorabuild.stages.train import train_build
from tests.conftest import REPO, SD_SCRIPTS
from tests.test_golden import shipped_project

pytestmark = pytest.mark.real_trainer


def kohya(module: str) -> ModuleType:
    for name in ("torch", "accelerate", "transformers", "diffusers", "voluptuous", "cv2"):
        pytest.importorskip(
            name, reason=f"kohya's Python stack is not installed ({name}): pip install -e '.[train]'"
        )
    if str(SD_SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SD_SCRIPTS))
    return importlib.import_module(module)


def test_kohya_loads_the_compiled_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kohya's own --config_file and --dataset_config loaders read the tutorial's values back."""
    train_network = kohya("train_network")
    train_util = kohya("library.train_util")
    config_util = kohya("library.config_util")
    recipe = shipped_project(tmp_path, REPO / "recipes" / "kazari.toml")
    monkeypatch.chdir(tmp_path)
    # Planned without the rules: the tutorial's xformers needs a GPU, which only training needs.
    loaded = load_recipe(recipe.relative_to(tmp_path))
    plan = build_plan(loaded, gather(loaded.recipe, loaded.path, Path("build")), Path("build"))
    compile_build(plan)
    prepare(plan)
    monkeypatch.chdir(plan.build_dir)  # train.sh runs kohya from the build folder

    parser = train_network.setup_parser()
    argv = ["--config_file", "config.toml", "--dataset_config", "dataset.toml"]
    monkeypatch.setattr(sys, "argv", ["train_network.py", *argv])  # kohya re-parses sys.argv over the file
    args = parser.parse_args(argv)
    args = train_util.read_config_from_file(args, parser)
    expected = {
        "pretrained_model_name_or_path": "../../models/ACertainModel.ckpt",
        "network_module": "networks.lora",
        "network_dim": 64,
        "network_alpha": 32.0,
        "clip_skip": 2,
        "learning_rate": 5e-5,
        "unet_lr": 5e-5,
        "text_encoder_lr": 6e-6,
        "lr_scheduler": "cosine_with_restarts",
        "lr_warmup_steps": 50,
        "lr_scheduler_num_cycles": 1,
        "optimizer_type": "Lion",
        "max_train_epochs": 10,
        "save_every_n_epochs": 1,
        "output_name": "Kazari_v1",
        "save_model_as": "safetensors",
        "mixed_precision": "fp16",
        "save_precision": "fp16",
        "seed": 1337,
        "cache_latents": True,
        "prior_loss_weight": 1.0,
        "max_token_length": 225,
        "xformers": True,
    }
    assert {k: getattr(args, k) for k in expected} == expected

    user_config = config_util.load_user_config(args.dataset_config)
    generator = config_util.BlueprintGenerator(
        config_util.ConfigSanitizer(True, True, args.masked_loss, True)
    )
    blueprint = generator.generate(user_config, args)
    (dataset,) = blueprint.dataset_group.datasets
    params = dataset.params
    assert (params.resolution, params.batch_size, params.enable_bucket) == ((768, 768), 2, True)
    assert (params.min_bucket_reso, params.max_bucket_reso) == (256, 1024)
    (subset,) = dataset.subsets
    sp = subset.params
    assert (sp.num_repeats, sp.class_tokens, sp.caption_extension) == (2, "uiharu_kazari", ".txt")
    assert (sp.shuffle_caption, sp.keep_tokens) == (True, 1)

    group, _ = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
    # generate_dataset_group_by_blueprint already made the buckets, as kohya does before training.
    assert len(group) == plan.batches_per_epoch
    assert math.ceil(len(group) / args.gradient_accumulation_steps) * 10 == plan.total_steps
    kohya_buckets = {
        tuple(reso): len(bucket)
        for ds in group.datasets
        for reso, bucket in zip(ds.bucket_manager.resos, ds.bucket_manager.buckets, strict=True)
        if bucket
    }
    assert kohya_buckets == dict(plan.bucket_counts)
    captions = {
        Path(info.absolute_path).name: info.caption
        for ds in group.datasets
        for info in ds.image_data.values()
    }
    assert captions and all(c.startswith("uiharu_kazari, ") for c in captions.values())


def kohya_reads_back(
    script: str, recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: Sequence[str] = ()
) -> tuple[argparse.Namespace, Plan]:
    """The shipped ``recipe`` (laid out in ``tmp_path``) checked with ``overrides`` and compiled, then its
    config.toml and dataset.toml read back by ``script``'s own parser and config loader, from the build
    folder as train.sh runs it: kohya's arguments, and the plan."""
    trainer = kohya(script.removesuffix(".py"))
    train_util = kohya("library.train_util")
    copy = shipped_project(tmp_path, REPO / "recipes" / recipe)
    monkeypatch.chdir(tmp_path)
    plan = require_plan(check(copy.relative_to(tmp_path), list(overrides), Path("build")))
    compile_build(plan)
    monkeypatch.chdir(plan.build_dir)
    parser = trainer.setup_parser()
    argv = ["--config_file", "config.toml", "--dataset_config", "dataset.toml"]
    monkeypatch.setattr(sys, "argv", [script, *argv])  # kohya re-parses sys.argv over the file
    return train_util.read_config_from_file(parser.parse_args(argv), parser), plan


def test_kohyas_parser_reads_an_sd2_recipe_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tutorial's recipe made an SD2 build: train_network.py reads --v2 and --v_parameterization
    back, and its own argument check passes."""
    overrides = [
        'model.family="sd2"',
        "model.v_parameterization=true",
        "model.clip_skip=1",
        'training.attention="sdpa"',
    ]
    args, plan = kohya_reads_back("train_network.py", "kazari.toml", tmp_path, monkeypatch, overrides)
    assert (plan.family, plan.script) == ("sd2", "train_network.py")
    expected = {"v2": True, "v_parameterization": True, "clip_skip": 1, "network_module": "networks.lora"}
    assert {k: getattr(args, k) for k in expected} == expected
    kohya("library.train_util").verify_training_args(args)


def safetensors_metadata(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return dict(header["__metadata__"])


def test_tutorial_recipe_trains_with_the_real_kohya(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Done-when of the compiler: recipes/kazari.toml with CPU overrides trains, and kohya
    reports every other value of the tutorial unchanged (in its log and in the saved files)."""
    kohya("library.train_util")
    from lorabuild.demo.demo import prepare_demo

    monkeypatch.chdir(tmp_path)
    overrides = prepare_demo(tmp_path, images=2)  # 2 images x 2 repeats / batch 2: 20 steps in 10 epochs
    plan = require_plan(check(REPO / "recipes" / "kazari.toml", overrides, tmp_path / "build"))
    compile_build(plan)
    prepare(plan)
    lines: list[str] = []
    train_build(plan, on_line=lines.append)

    log = "\n".join(lines)
    assert "model saved." in log
    assert f"total optimization steps / 学習ステップ数: {plan.total_steps}" in log
    assert f"num batches per epoch / 1epochのバッチ数: {plan.batches_per_epoch}" in log
    assert "num epochs / epoch数: 10" in log
    assert "batch size per device / バッチサイズ: 2" in log
    for output in plan.outputs:
        assert (plan.build_dir / output).is_file(), output

    meta = safetensors_metadata(plan.build_dir / "output" / "Kazari_v1.safetensors")
    tutorial = {
        "ss_output_name": "Kazari_v1",
        "ss_network_module": "networks.lora",
        "ss_network_dim": "64",
        "ss_network_alpha": "32.0",
        "ss_clip_skip": "2",
        "ss_learning_rate": "5e-05",
        "ss_unet_lr": "5e-05",
        "ss_text_encoder_lr": "6e-06",
        "ss_lr_scheduler": "cosine_with_restarts",
        "ss_lr_warmup_steps": "50",
        "ss_num_epochs": "10",
        "ss_seed": "1337",
        "ss_cache_latents": "True",
        "ss_max_token_length": "225",
        "ss_prior_loss_weight": "1.0",
        "ss_epoch": "10",
        "ss_max_train_steps": str(plan.total_steps),
        "modelspec.title": "Uiharu Kazari (初春飾利)",
        "modelspec.trigger_phrase": "uiharu_kazari",
    }
    assert {k: meta.get(k) for k in tutorial} == tutorial
    assert meta["ss_optimizer"].startswith("lion_pytorch.lion_pytorch.Lion")
    assert plan.recipe_hash in meta["ss_training_comment"]
    (dataset,) = json.loads(meta["ss_datasets"])
    assert dataset["batch_size_per_device"] == 2
    (subset,) = dataset["subsets"]
    assert (subset["num_repeats"], subset["class_tokens"], subset["keep_tokens"]) == (2, "uiharu_kazari", 1)
    assert subset["shuffle_caption"] is True
    # The trigger was put first in every staged caption kohya read.
    tags = json.loads(meta["ss_tag_frequency"])
    assert tags["2_uiharu_kazari"]["uiharu_kazari"] == len(plan.subsets[0].images)
    assert not {"flower", "hair_ornament", "short_hair", "brown_hair"} & set(tags["2_uiharu_kazari"])


@pytest.mark.parametrize("recipe_name", ["flux_character", "chroma_character"])
def test_kohyas_flux_parser_reads_the_shipped_flux_recipes(
    recipe_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flux_train_network.py's own parser and config loader read the compiled FLUX/Chroma options back."""
    args, _ = kohya_reads_back("flux_train_network.py", f"{recipe_name}.toml", tmp_path, monkeypatch)
    chroma = recipe_name.startswith("chroma")
    expected = {
        "model_type": "chroma" if chroma else "flux",
        "clip_l": None if chroma else "../../models/clip_l.safetensors",
        "t5xxl": "../../models/t5xxl_fp16.safetensors",
        "ae": "../../models/ae.safetensors",
        "network_module": "networks.lora_flux",
        "network_train_unet_only": True,
        "guidance_scale": 0.0 if chroma else 1.0,
        "timestep_sampling": "sigmoid" if chroma else "flux_shift",
        "model_prediction_type": "raw",
        "apply_t5_attn_mask": chroma,
        "mixed_precision": "bf16",
        "save_precision": "bf16",
        # launch.vram_gb = 16: kohya docs/flux_train_network.md 6.1
        "fp8_base": True,
        "blocks_to_swap": 8,
        "gradient_checkpointing": True,
        "cache_text_encoder_outputs": True,
        "split_mode": False,
    }
    assert {k: getattr(args, k) for k in expected} == expected


def test_kohyas_anima_parser_reads_the_shipped_anima_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """anima_train_network.py's own parser and config loader read the compiled Anima options back."""
    args, _ = kohya_reads_back("anima_train_network.py", "anima_character.toml", tmp_path, monkeypatch)
    expected = {
        "pretrained_model_name_or_path": "../../models/anima-preview.safetensors",
        "qwen3": "../../models/qwen_3_06b_base.safetensors",
        "vae": "../../models/qwen_image_vae.safetensors",
        "llm_adapter_path": None,
        "t5_tokenizer_path": None,
        "network_module": "networks.lora_anima",
        "network_train_unet_only": True,
        "timestep_sampling": "sigmoid",
        "discrete_flow_shift": 1.0,
        "attn_mode": None,
        "vae_chunk_size": 64,
        "vae_disable_cache": True,
        "mixed_precision": "bf16",
        "save_precision": "bf16",
        "fp8_base": False,
        "gradient_checkpointing": True,
        "cache_text_encoder_outputs": True,
        "cache_latents": True,
    }
    assert {k: getattr(args, k) for k in expected} == expected


def test_kohyas_lumina_parser_reads_the_shipped_lumina_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lumina_train_network.py's own parser and config loader read the compiled Lumina options back."""
    args, _ = kohya_reads_back(
        "lumina_train_network.py",
        "lumina_character.toml",
        tmp_path,
        monkeypatch,
        ["flow.gemma2_max_token_length=128"],
    )
    expected = {
        "pretrained_model_name_or_path": "../../models/lumina_2_model_bf16.safetensors",
        "gemma2": "../../models/gemma_2_2b_fp16.safetensors",
        "ae": "../../models/ae.safetensors",
        "network_module": "networks.lora_lumina",
        "network_train_unet_only": True,
        "timestep_sampling": "nextdit_shift",
        "discrete_flow_shift": 6.0,
        "model_prediction_type": "raw",
        "system_prompt": lumina.SYSTEM_PROMPT,
        "gemma2_max_token_length": 128,
        "mixed_precision": "bf16",
        "save_precision": "bf16",
        "gradient_checkpointing": True,
        "cache_text_encoder_outputs": True,
        "cache_latents": True,
        "use_flash_attn": False,
    }
    assert {k: getattr(args, k) for k in expected} == expected
