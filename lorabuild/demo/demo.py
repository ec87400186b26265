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
    from lorabuild.demo.synthetic import make_dataset
    from lorabuild.demo.testmodel import ensure_test_model

    model = ensure_test_model()
    data_dir = workdir / "data" / "kazari"
    make_dataset(data_dir, n=images, size=128, trigger="")
    # The model and tokenizer are local: never ask the Hugging Face hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return demo_overrides(model.model_dir, model.tokenizer_cache_dir, data_dir)
