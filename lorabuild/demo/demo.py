"""The offline demo: the tutorial's recipe trained end to end on a CPU in a few minutes.

It builds (once, cached) a random-weight model with SD1.5's U-Net and a tiny text encoder and VAE
(:mod:`lorabuild.demo.testmodel`), draws a small synthetic dataset (:mod:`lorabuild.demo.synthetic`), and
runs ``recipes/kazari.toml`` with ``--set`` overrides for a CPU: 64 px, no mixed precision, sdpa.
Every other value is the tutorial's. It shows that the pipeline works, not image quality: the
model's weights are random.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lorabuild.demo.animamodel import ensure_anima_test_model
from lorabuild.demo.fluxmodel import ensure_flux_test_model
from lorabuild.demo.hunyuanmodel import ensure_hunyuan_test_model
from lorabuild.demo.sd3model import ensure_sd3_test_model
from lorabuild.demo.sdxlmodel import ensure_sdxl_test_model
from lorabuild.demo.synthetic import make_dataset
from lorabuild.demo.testmodel import ensure_test_model
from lorabuild.settings import REPO_ROOT

DEMO_RECIPE = REPO_ROOT / "recipes" / "kazari.toml"

# What a CPU needs changed from the tutorial's GPU settings, and nothing else.
CPU_OVERRIDES = (
    "dataset.resolution=64",
    "dataset.min_bucket_reso=64",
    "dataset.max_bucket_reso=128",
    "training.mixed_precision=no",
    "training.attention=sdpa",
    "launch.num_cpu_threads_per_process=2",
    # The grid: 4 sampling steps instead of 28 (the images are noise on random weights anyway).
    "evaluate.steps=4",
)


def demo_overrides(model_dir: Path, tokenizer_cache_dir: Path, data_dir: Path) -> list[str]:
    """``--set`` overrides that point the tutorial recipe at the test model and dataset on a CPU."""
    return [
        f"model.base={json.dumps(str(model_dir))}",
        f"model.tokenizer_cache_dir={json.dumps(str(tokenizer_cache_dir))}",
        f"dataset.subsets[0].source={json.dumps(str(data_dir))}",
        *CPU_OVERRIDES,
    ]


def prepare_demo(workdir: Path, images: int = 4) -> list[str]:
    """Make (or reuse) the test model and a synthetic dataset; return the recipe overrides."""
    model = ensure_test_model()
    data_dir = workdir / "data" / "kazari"
    make_dataset(data_dir, n=images, size=128, trigger="")
    # The model and tokenizer are local: never ask the Hugging Face hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return demo_overrides(model.model_dir, model.tokenizer_cache_dir, data_dir)


FLUX_RECIPES = {
    "flux": REPO_ROOT / "recipes" / "flux_character.toml",
    "chroma": REPO_ROOT / "recipes" / "chroma_character.toml",
}
"""The shipped recipe ``lorabuild demo --family`` trains for each flow-matching family."""

LAUNCHER = Path(__file__).with_name("tinyflux.py")
"""The test-only launcher that shrinks kohya's FLUX sizes to the test model's (LORABUILD_SCRIPT_WRAPPER)."""

# What a CPU and the tiny model need changed from the shipped FLUX recipes' GPU settings.
FLUX_CPU_OVERRIDES = (
    "dataset.resolution=64",
    "dataset.min_bucket_reso=64",
    "dataset.max_bucket_reso=128",
    "training.mixed_precision=no",
    # The 24 GB figures: no blocks to swap (the tiny DiT has 2 blocks); fp8 is a GPU format.
    "launch.vram_gb=24",
    "training.fp8_base=false",
    "optimizer.type=AdamW",
    "training.epochs=4",
    "launch.num_cpu_threads_per_process=1",
    "evaluate.width=64",
    "evaluate.height=64",
    "evaluate.steps=4",
)


def prepare_flux_demo(workdir: Path, family: str, images: int = 4) -> tuple[Path, list[str]]:
    """Make (or reuse) the tiny FLUX test model and a synthetic dataset; return the recipe and its overrides.

    Sets ``LORABUILD_SCRIPT_WRAPPER`` in this process's environment, so that lorabuild runs kohya's
    FLUX scripts through :data:`LAUNCHER`; the compiled ``train.sh`` and ``train.ps1`` stay the
    real commands.
    """
    model = ensure_flux_test_model()
    data_dir = workdir / "data" / "character"
    make_dataset(data_dir, n=images, size=128, trigger="")
    os.environ["LORABUILD_SCRIPT_WRAPPER"] = str(LAUNCHER)
    base = model.flux_dev if family == "flux" else model.chroma
    env = {
        "HF_HOME": str(model.hf_home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }
    paths = {
        "base": base,
        "t5xxl": model.t5xxl,
        "ae": model.ae,
        "tokenizer_cache_dir": model.tokenizer_cache_dir,
    }
    if family == "flux":
        paths["clip_l"] = model.clip_l
    return FLUX_RECIPES[family], [
        *(f"model.{key}={json.dumps(str(path))}" for key, path in paths.items()),
        f"dataset.subsets[0].source={json.dumps(str(data_dir))}",
        *(f"launch.env.{name}={json.dumps(value)}" for name, value in env.items()),
        *FLUX_CPU_OVERRIDES,
    ]


SDXL_RECIPE = REPO_ROOT / "recipes" / "sdxl_character.toml"
"""The shipped recipe ``lorabuild demo --family sdxl`` trains."""

SDXL_LAUNCHER = Path(__file__).with_name("tinysdxl.py")
"""The test-only launcher that shrinks kohya's SDXL sizes to the test model's (LORABUILD_SCRIPT_WRAPPER)."""

# What a CPU and the tiny model need changed from the shipped SDXL recipe's GPU settings.
SDXL_CPU_OVERRIDES = (
    "dataset.resolution=64",
    "dataset.min_bucket_reso=64",
    "dataset.max_bucket_reso=128",
    "training.mixed_precision=no",
    # 8-bit AdamW is a bitsandbytes optimizer, and fp16 saving is a GPU habit: plain AdamW, fp32.
    "optimizer.type=AdamW",
    "training.save_precision=float",
    "training.epochs=4",
    "training.save_every_n_epochs=1",
    "launch.num_cpu_threads_per_process=1",
    "evaluate.width=64",
    "evaluate.height=64",
    "evaluate.steps=4",
)


def prepare_sdxl_demo(workdir: Path, images: int = 4) -> tuple[Path, list[str]]:
    """Make (or reuse) the tiny SDXL test model and a synthetic dataset; return the recipe and its overrides.

    Sets ``LORABUILD_SCRIPT_WRAPPER`` in this process's environment, so that lorabuild runs kohya's
    SDXL scripts (training and gen_img) through :data:`SDXL_LAUNCHER`; the compiled ``train.sh`` and
    ``train.ps1`` stay the real commands.
    """
    model = ensure_sdxl_test_model()
    data_dir = workdir / "data" / "character"
    make_dataset(data_dir, n=images, size=128, trigger="")
    os.environ["LORABUILD_SCRIPT_WRAPPER"] = str(SDXL_LAUNCHER)
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }
    return SDXL_RECIPE, [
        f"model.base={json.dumps(str(model.checkpoint))}",
        f"model.tokenizer_cache_dir={json.dumps(str(model.tokenizer_cache_dir))}",
        f"dataset.subsets[0].source={json.dumps(str(data_dir))}",
        *(f"launch.env.{name}={json.dumps(value)}" for name, value in env.items()),
        *SDXL_CPU_OVERRIDES,
    ]


ANIMA_RECIPE = REPO_ROOT / "recipes" / "anima_character.toml"
"""The shipped recipe ``lorabuild demo --family anima`` trains."""

ANIMA_LAUNCHER = Path(__file__).with_name("tinyanima.py")
"""The test-only launcher that shrinks kohya's Anima sizes to the test model's (LORABUILD_SCRIPT_WRAPPER)."""

# What a CPU and the tiny model need changed from the shipped Anima recipe's GPU settings.
ANIMA_CPU_OVERRIDES = (
    "dataset.resolution=64",
    "dataset.min_bucket_reso=64",
    "dataset.max_bucket_reso=128",
    "dataset.bucket_reso_steps=16",
    "training.mixed_precision=no",
    "optimizer.type=AdamW",
    "training.epochs=4",
    "launch.num_cpu_threads_per_process=1",
    "evaluate.width=64",
    "evaluate.height=64",
    "evaluate.steps=4",
    # One weight: anima_minimal_inference.py loads the model once per (epoch, weight), a process each.
    "evaluate.weights=[1.0]",
)


def prepare_anima_demo(workdir: Path, images: int = 4) -> tuple[Path, list[str]]:
    """Make (or reuse) the tiny Anima test model and a synthetic dataset; return the recipe and its overrides.

    Sets ``LORABUILD_SCRIPT_WRAPPER`` in this process's environment, so that lorabuild runs kohya's
    Anima scripts through :data:`ANIMA_LAUNCHER`; the compiled ``train.sh`` and ``train.ps1`` stay the
    real commands. No tokenizer is needed: kohya ships Anima's.
    """
    model = ensure_anima_test_model()
    data_dir = workdir / "data" / "character"
    make_dataset(data_dir, n=images, size=128, trigger="")
    os.environ["LORABUILD_SCRIPT_WRAPPER"] = str(ANIMA_LAUNCHER)
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }
    paths = {"base": model.dit, "qwen3": model.qwen3, "vae": model.vae}
    return ANIMA_RECIPE, [
        *(f"model.{key}={json.dumps(str(path))}" for key, path in paths.items()),
        f"dataset.subsets[0].source={json.dumps(str(data_dir))}",
        *(f"launch.env.{name}={json.dumps(value)}" for name, value in env.items()),
        *ANIMA_CPU_OVERRIDES,
    ]


SD3_RECIPE = REPO_ROOT / "recipes" / "sd3_character.toml"
"""The shipped recipe ``lorabuild demo --family sd3`` trains."""

SD3_LAUNCHER = Path(__file__).with_name("tinysd3.py")
"""The test-only launcher that shrinks kohya's SD3 text-encoder and VAE sizes (LORABUILD_SCRIPT_WRAPPER)."""

# What a CPU and the tiny model need changed from the shipped SD3 recipe's GPU settings.
SD3_CPU_OVERRIDES = (
    "dataset.resolution=64",
    "dataset.min_bucket_reso=64",
    "dataset.max_bucket_reso=128",
    "training.mixed_precision=no",
    # The 24 GB preset: no blocks to swap (the tiny MMDiT has one block).
    "launch.vram_gb=24",
    "optimizer.type=AdamW",
    "training.epochs=4",
    "launch.num_cpu_threads_per_process=1",
    "evaluate.width=64",
    "evaluate.height=64",
    "evaluate.steps=4",
)


def prepare_sd3_demo(workdir: Path, images: int = 4) -> tuple[Path, list[str]]:
    """Make (or reuse) the tiny SD3 test model and a synthetic dataset; return the recipe and its overrides.

    Sets ``LORABUILD_SCRIPT_WRAPPER`` in this process's environment, so that lorabuild runs kohya's
    SD3 scripts through :data:`SD3_LAUNCHER`; the compiled ``train.sh`` and ``train.ps1`` stay the
    real commands.
    """
    model = ensure_sd3_test_model()
    data_dir = workdir / "data" / "character"
    make_dataset(data_dir, n=images, size=128, trigger="")
    os.environ["LORABUILD_SCRIPT_WRAPPER"] = str(SD3_LAUNCHER)
    env = {
        "HF_HOME": str(model.hf_home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }
    paths = {
        "base": model.base,
        "clip_l": model.clip_l,
        "clip_g": model.clip_g,
        "t5xxl": model.t5xxl,
        "tokenizer_cache_dir": model.tokenizer_cache_dir,
    }
    return SD3_RECIPE, [
        *(f"model.{key}={json.dumps(str(path))}" for key, path in paths.items()),
        f"dataset.subsets[0].source={json.dumps(str(data_dir))}",
        *(f"launch.env.{name}={json.dumps(value)}" for name, value in env.items()),
        *SD3_CPU_OVERRIDES,
    ]


HUNYUAN_RECIPE = REPO_ROOT / "recipes" / "hunyuan_character.toml"
"""The shipped recipe ``lorabuild demo --family hunyuan`` trains."""

HUNYUAN_LAUNCHER = Path(__file__).with_name("tinyhunyuan.py")
"""The test-only launcher that shrinks kohya's HunyuanImage sizes to the test model's (LORABUILD_SCRIPT_WRAPPER)."""

# What a CPU and the tiny model need changed from the shipped HunyuanImage recipe's GPU settings.
HUNYUAN_CPU_OVERRIDES = (
    "dataset.resolution=64",
    "dataset.min_bucket_reso=64",
    "dataset.max_bucket_reso=128",
    "training.mixed_precision=no",
    "training.save_precision=float",
    # The 40 GB figures: no fp8 (a GPU format), no blocks to swap (the tiny DiT has two).
    "launch.vram_gb=40",
    "optimizer.type=AdamW",
    "training.epochs=2",
    "training.save_every_n_epochs=1",
    "launch.num_cpu_threads_per_process=1",
    "evaluate.width=64",
    "evaluate.height=64",
    "evaluate.steps=4",
)


def prepare_hunyuan_demo(workdir: Path, images: int = 4) -> tuple[Path, list[str]]:
    """Make (or reuse) the tiny HunyuanImage test model and a synthetic dataset; return the recipe and overrides.

    Sets ``LORABUILD_SCRIPT_WRAPPER`` in this process's environment to :data:`HUNYUAN_LAUNCHER`.
    """
    model = ensure_hunyuan_test_model()
    data_dir = workdir / "data" / "character"
    make_dataset(data_dir, n=images, size=128, trigger="")
    os.environ["LORABUILD_SCRIPT_WRAPPER"] = str(HUNYUAN_LAUNCHER)
    env = {
        "HF_HOME": str(model.hf_home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }
    paths = {
        "base": model.dit,
        "text_encoder": model.text_encoder,
        "byt5": model.byt5,
        "vae": model.vae,
        "tokenizer_cache_dir": model.tokenizer_cache_dir,
    }
    return HUNYUAN_RECIPE, [
        *(f"model.{key}={json.dumps(str(path))}" for key, path in paths.items()),
        f"dataset.subsets[0].source={json.dumps(str(data_dir))}",
        *(f"launch.env.{name}={json.dumps(value)}" for name, value in env.items()),
        *HUNYUAN_CPU_OVERRIDES,
    ]
