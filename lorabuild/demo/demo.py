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
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from lorabuild.demo.animamodel import ensure_anima_test_model
from lorabuild.demo.fluxmodel import ensure_flux_test_model
from lorabuild.demo.hunyuanmodel import ensure_hunyuan_test_model
from lorabuild.demo.luminamodel import ensure_lumina_test_model
from lorabuild.demo.sd3model import ensure_sd3_test_model
from lorabuild.demo.sdxlmodel import ensure_sdxl_test_model
from lorabuild.demo.synthetic import make_dataset
from lorabuild.demo.testmodel import ensure_sd2_test_model, ensure_test_model
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


# The tutorial's recipe on an SD2 model: v-prediction (SD2 768-v), no clip_skip (kohya: "v2 with clip_skip
# will be unexpected").
SD2_OVERRIDES = ('model.family="sd2"', "model.v_parameterization=true", "model.clip_skip=1")


def prepare_demo(workdir: Path, images: int = 4, *, family: str = "sd15") -> list[str]:
    """Make (or reuse) the test model and a synthetic dataset; return the recipe overrides.

    ``family``: ``sd15`` (the tutorial's) or ``sd2``: the same recipe on the SD2-shaped test model.
    """
    model = ensure_sd2_test_model() if family == "sd2" else ensure_test_model()
    data_dir = workdir / "data" / "kazari"
    make_dataset(data_dir, n=images, size=128, trigger="")
    # The model and tokenizer are local: never ask the Hugging Face hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    overrides = demo_overrides(model.model_dir, model.tokenizer_cache_dir, data_dir)
    return [*overrides, *SD2_OVERRIDES] if family == "sd2" else overrides


# What every tiny-model demo changes from its shipped recipe's GPU settings: 64 px, no mixed precision,
# one thread (OMP_NUM_THREADS=1 made the tiny models 3x faster on 2 busy cores), a small grid.
TINY_CPU_OVERRIDES = (
    "dataset.resolution=64",
    "dataset.min_bucket_reso=64",
    "dataset.max_bucket_reso=128",
    "training.mixed_precision=no",
    "optimizer.type=AdamW",  # 8-bit AdamW is a bitsandbytes (GPU) optimizer
    "launch.num_cpu_threads_per_process=1",
    "evaluate.width=64",
    "evaluate.height=64",
    "evaluate.steps=4",
)

# kohya's processes stay offline and on the CPU.
TINY_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "OMP_NUM_THREADS": "1",
}


def _tiny_demo(
    workdir: Path,
    images: int,
    launcher: Path,
    paths: dict[str, Path],
    hf_home: Path | None,
    overrides: tuple[str, ...],
) -> list[str]:
    """Draw the dataset, route kohya's scripts through ``launcher``; the ``--set`` overrides of a tiny demo.

    Sets ``LORABUILD_SCRIPT_WRAPPER`` in this process's environment, so that lorabuild runs kohya's
    scripts through the test-only ``launcher``, which shrinks kohya's hard-coded sizes to the tiny
    model's; the compiled ``train.sh`` and ``train.ps1`` stay the real commands.

    Args:
        workdir: The demo's folder (the dataset goes to ``data/character``).
        images: How many synthetic images.
        launcher: The family's launcher (``lorabuild/demo/tiny*.py``).
        paths: The model's files by ``[model]`` key (``base``, ``t5xxl``...).
        hf_home: A Hugging Face home with the tokenizers, for scripts that read only the hub cache.
        overrides: The family's own overrides, after :data:`TINY_CPU_OVERRIDES`.
    """
    data_dir = workdir / "data" / "character"
    make_dataset(data_dir, n=images, size=128, trigger="")
    os.environ["LORABUILD_SCRIPT_WRAPPER"] = str(launcher)
    env = ({"HF_HOME": str(hf_home)} if hf_home is not None else {}) | TINY_ENV
    return [
        *(f"model.{key}={json.dumps(str(path))}" for key, path in paths.items()),
        f"dataset.subsets[0].source={json.dumps(str(data_dir))}",
        *(f"launch.env.{name}={json.dumps(value)}" for name, value in env.items()),
        *TINY_CPU_OVERRIDES,
        *overrides,
    ]


FLUX_RECIPES = {
    "flux": REPO_ROOT / "recipes" / "flux_character.toml",
    "chroma": REPO_ROOT / "recipes" / "chroma_character.toml",
}
"""The shipped recipe ``lorabuild demo --family`` trains for each flow-matching family."""

LAUNCHER = Path(__file__).with_name("tinyflux.py")
"""The test-only launcher that shrinks kohya's FLUX sizes to the test model's (LORABUILD_SCRIPT_WRAPPER)."""

FLUX_CPU_OVERRIDES = (
    # The 24 GB figures: no blocks to swap (the tiny DiT has 2 blocks); fp8 is a GPU format.
    "launch.vram_gb=24",
    "training.fp8_base=false",
    "training.epochs=4",
)


def prepare_flux_demo(workdir: Path, family: str, images: int = 4) -> tuple[Path, list[str]]:
    """Make (or reuse) the tiny FLUX test model and a dataset; the recipe and its overrides (:func:`_tiny_demo`)."""
    model = ensure_flux_test_model()
    paths = {
        "base": model.flux_dev if family == "flux" else model.chroma,
        "t5xxl": model.t5xxl,
        "ae": model.ae,
        "tokenizer_cache_dir": model.tokenizer_cache_dir,
    }
    if family == "flux":
        paths["clip_l"] = model.clip_l
    return FLUX_RECIPES[family], _tiny_demo(
        workdir, images, LAUNCHER, paths, model.hf_home, FLUX_CPU_OVERRIDES
    )


SDXL_RECIPE = REPO_ROOT / "recipes" / "sdxl_character.toml"
"""The shipped recipe ``lorabuild demo --family sdxl`` trains."""

SDXL_LAUNCHER = Path(__file__).with_name("tinysdxl.py")
"""The test-only launcher that shrinks kohya's SDXL sizes to the test model's (LORABUILD_SCRIPT_WRAPPER)."""

SDXL_CPU_OVERRIDES = (
    "training.save_precision=float",  # fp16 saving is a GPU habit
    "training.epochs=4",
    "training.save_every_n_epochs=1",
)


def prepare_sdxl_demo(workdir: Path, images: int = 4) -> tuple[Path, list[str]]:
    """Make (or reuse) the tiny SDXL test model and a dataset; the recipe and its overrides (:func:`_tiny_demo`;
    gen_img runs through the launcher too)."""
    model = ensure_sdxl_test_model()
    paths = {"base": model.checkpoint, "tokenizer_cache_dir": model.tokenizer_cache_dir}
    return SDXL_RECIPE, _tiny_demo(workdir, images, SDXL_LAUNCHER, paths, None, SDXL_CPU_OVERRIDES)


ANIMA_RECIPE = REPO_ROOT / "recipes" / "anima_character.toml"
"""The shipped recipe ``lorabuild demo --family anima`` trains."""

ANIMA_LAUNCHER = Path(__file__).with_name("tinyanima.py")
"""The test-only launcher that shrinks kohya's Anima sizes to the test model's (LORABUILD_SCRIPT_WRAPPER)."""

ANIMA_CPU_OVERRIDES = (
    "dataset.bucket_reso_steps=16",
    "training.epochs=4",
    # One weight: anima_minimal_inference.py loads the model once per (epoch, weight), a process each.
    "evaluate.weights=[1.0]",
)


def prepare_anima_demo(workdir: Path, images: int = 4) -> tuple[Path, list[str]]:
    """Make (or reuse) the tiny Anima test model and a dataset; the recipe and its overrides (:func:`_tiny_demo`).

    No tokenizer is needed: kohya ships Anima's.
    """
    model = ensure_anima_test_model()
    paths = {"base": model.dit, "qwen3": model.qwen3, "vae": model.vae}
    return ANIMA_RECIPE, _tiny_demo(workdir, images, ANIMA_LAUNCHER, paths, None, ANIMA_CPU_OVERRIDES)


SD3_RECIPE = REPO_ROOT / "recipes" / "sd3_character.toml"
"""The shipped recipe ``lorabuild demo --family sd3`` trains."""

SD3_LAUNCHER = Path(__file__).with_name("tinysd3.py")
"""The test-only launcher that shrinks kohya's SD3 text-encoder and VAE sizes (LORABUILD_SCRIPT_WRAPPER)."""

SD3_CPU_OVERRIDES = (
    # The 24 GB preset: no blocks to swap (the tiny MMDiT has one block).
    "launch.vram_gb=24",
    "training.epochs=4",
)


def prepare_sd3_demo(workdir: Path, images: int = 4) -> tuple[Path, list[str]]:
    """Make (or reuse) the tiny SD3 test model and a dataset; the recipe and its overrides (:func:`_tiny_demo`)."""
    model = ensure_sd3_test_model()
    paths = {
        "base": model.base,
        "clip_l": model.clip_l,
        "clip_g": model.clip_g,
        "t5xxl": model.t5xxl,
        "tokenizer_cache_dir": model.tokenizer_cache_dir,
    }
    return SD3_RECIPE, _tiny_demo(workdir, images, SD3_LAUNCHER, paths, model.hf_home, SD3_CPU_OVERRIDES)


HUNYUAN_RECIPE = REPO_ROOT / "recipes" / "hunyuan_character.toml"
"""The shipped recipe ``lorabuild demo --family hunyuan`` trains."""

HUNYUAN_LAUNCHER = Path(__file__).with_name("tinyhunyuan.py")
"""The test-only launcher that shrinks kohya's HunyuanImage sizes to the test model's (LORABUILD_SCRIPT_WRAPPER)."""

HUNYUAN_CPU_OVERRIDES = (
    "training.save_precision=float",
    # The 40 GB figures: no fp8 (a GPU format), no blocks to swap (the tiny DiT has two).
    "launch.vram_gb=40",
    "training.epochs=2",
    "training.save_every_n_epochs=1",
)


def prepare_hunyuan_demo(workdir: Path, images: int = 4) -> tuple[Path, list[str]]:
    """Make (or reuse) the tiny HunyuanImage test model and a dataset; the recipe and its overrides
    (:func:`_tiny_demo`)."""
    model = ensure_hunyuan_test_model()
    paths = {
        "base": model.dit,
        "text_encoder": model.text_encoder,
        "byt5": model.byt5,
        "vae": model.vae,
        "tokenizer_cache_dir": model.tokenizer_cache_dir,
    }
    return HUNYUAN_RECIPE, _tiny_demo(
        workdir, images, HUNYUAN_LAUNCHER, paths, model.hf_home, HUNYUAN_CPU_OVERRIDES
    )


LUMINA_RECIPE = REPO_ROOT / "recipes" / "lumina_character.toml"
"""The shipped recipe ``lorabuild demo --family lumina`` trains."""

LUMINA_LAUNCHER = Path(__file__).with_name("tinylumina.py")
"""The test-only launcher that shrinks kohya's Lumina 2 sizes to the test model's (LORABUILD_SCRIPT_WRAPPER)."""

LUMINA_CPU_OVERRIDES = (
    "training.save_precision=float",  # bf16 saving is a GPU habit
    "training.epochs=4",
)


def prepare_lumina_demo(workdir: Path, images: int = 4) -> tuple[Path, list[str]]:
    """Make (or reuse) the tiny Lumina 2 test model and a dataset; the recipe and its overrides (:func:`_tiny_demo`).

    The stand-in Gemma tokenizer is a hub cache (:mod:`lorabuild.demo.luminamodel`): training reads it
    as ``tokenizer_cache_dir``, the grid through ``HF_HUB_CACHE`` pointed at the same folder by its
    renderer (:mod:`lorabuild.kohya.luminainfer`), so no ``HF_HOME`` is set.
    """
    model = ensure_lumina_test_model()
    paths = {
        "base": model.dit,
        "gemma2": model.gemma2,
        "ae": model.ae,
        "tokenizer_cache_dir": model.tokenizer_cache_dir,
    }
    return LUMINA_RECIPE, _tiny_demo(workdir, images, LUMINA_LAUNCHER, paths, None, LUMINA_CPU_OVERRIDES)


@dataclass(frozen=True)
class TinyDemo:
    """A family's tiny-model demo: ``lorabuild demo --family NAME``."""

    recipe: Path
    """The shipped recipe it trains."""
    shape: str
    """The model it imitates, for the banner (``FLUX.1``)."""
    launcher: Path
    """The test-only launcher that shrinks kohya's hard-coded sizes in kohya's process."""
    prepare: Callable[[Path], tuple[Path, list[str]]]
    """Make (or reuse) the model, draw the dataset: the recipe and its ``--set`` overrides."""

    def banner(self) -> str:
        return (
            f"lorabuild demo: trains recipes/{self.recipe.name} with the real kohya on a tiny random-weight "
            f"{self.shape}-shaped model (CPU, 64 px; kohya's hard-coded sizes are shrunk in its process by "
            f"lorabuild/demo/{self.launcher.name}). It shows the pipeline, not image quality."
        )


TINY_DEMOS: dict[str, TinyDemo] = {
    "sdxl": TinyDemo(SDXL_RECIPE, "SDXL", SDXL_LAUNCHER, prepare_sdxl_demo),
    "flux": TinyDemo(FLUX_RECIPES["flux"], "FLUX.1", LAUNCHER, partial(prepare_flux_demo, family="flux")),
    "chroma": TinyDemo(
        FLUX_RECIPES["chroma"], "Chroma", LAUNCHER, partial(prepare_flux_demo, family="chroma")
    ),
    "sd3": TinyDemo(SD3_RECIPE, "SD3.5", SD3_LAUNCHER, prepare_sd3_demo),
    "anima": TinyDemo(ANIMA_RECIPE, "Anima", ANIMA_LAUNCHER, prepare_anima_demo),
    "hunyuan": TinyDemo(HUNYUAN_RECIPE, "HunyuanImage-2.1", HUNYUAN_LAUNCHER, prepare_hunyuan_demo),
    "lumina": TinyDemo(LUMINA_RECIPE, "Lumina-2", LUMINA_LAUNCHER, prepare_lumina_demo),
}
"""Every family's tiny-model demo, by ``--family`` value (``sd15`` is :func:`prepare_demo`, the tutorial's)."""
