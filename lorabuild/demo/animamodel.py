"""The offline Anima test model: tiny random-weight Anima files kohya's loaders accept.

kohya builds Anima's models from hard-coded full sizes, so these files load only in a process where
``lorabuild/demo/tinyanima.py`` has shrunk those sizes to :mod:`lorabuild.demo.animasizes` (this
module builds with the same patches, :func:`lorabuild.demo.tinyanima.shrink_kohya`). Every file
holds exactly the keys kohya's loaders expect, named as in the released files, so that lorabuild's
header probe sees realistic files:

- ``anima.safetensors``: ``library.anima_models.Anima``'s state dict under the released files'
  ``net.`` prefix (kohya strips it), LLM adapter included (one block, 64 wide);
- ``qwen3.safetensors``: ``transformers.Qwen3Model``'s weights under ``model.`` (as ComfyUI's
  ``qwen_3_06b_base.safetensors``; kohya strips it), one 32-wide layer and the real 151,936-token
  embedding;
- ``qwen_image_vae.safetensors``: ``AutoencoderKLQwenImage``'s state dict in kohya's (official)
  layout: 16 wide, one residual block per level, 16 latent channels, the 8x downscale.

No tokenizer is built: kohya reads Qwen3's from its ``configs/qwen3_06b`` (its ``vocab.json`` and
``merges.txt``; the pinned checkout here lacks ``tokenizer.json`` and transformers builds the same
tokenizer without it) and T5's from ``configs/t5_old``.

Built once (seconds, about 22 MB) into ``~/.cache/lorabuild/anima-test-v<N>``; see
:func:`ensure_anima_test_model`. Run ``python -m lorabuild.demo.animamodel [--cache-dir DIR]`` with
kohya's Python to build it and print its paths.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.demo import tinyanima
from lorabuild.demo.testmodel import MARKER, build_cached, default_cache_dir, model_main
from lorabuild.settings import sd_scripts_dir

# Bump when anything about the built files changes: the cache folder is named after it.
ANIMA_TEST_MODEL_VERSION = 1
ANIMA_TEST_MODEL_NAME = f"anima-test-v{ANIMA_TEST_MODEL_VERSION}"
SEED = 20250802

# library/anima_utils.load_anima_model's dit_config (the sizes tinyanima.py overrides included).
DIT_CONFIG: dict[str, Any] = {
    "max_img_h": 512,
    "max_img_w": 512,
    "max_frames": 128,
    "in_channels": 16,
    "out_channels": 16,
    "patch_spatial": 2,
    "patch_temporal": 1,
    "model_channels": 2048,
    "concat_padding_mask": True,
    "crossattn_emb_channels": 1024,
    "pos_emb_cls": "rope3d",
    "pos_emb_learnable": True,
    "pos_emb_interpolation": "crop",
    "min_fps": 1,
    "max_fps": 30,
    "use_adaln_lora": True,
    "adaln_lora_dim": 256,
    "num_blocks": 28,
    "num_heads": 16,
    "extra_per_block_abs_pos_emb": False,
    "rope_h_extrapolation_ratio": 4.0,
    "rope_w_extrapolation_ratio": 4.0,
    "rope_t_extrapolation_ratio": 1.0,
    "extra_h_extrapolation_ratio": 1.0,
    "extra_w_extrapolation_ratio": 1.0,
    "extra_t_extrapolation_ratio": 1.0,
    "rope_enable_fps_modulation": False,
    "use_llm_adapter": True,
    "attn_mode": "torch",
    "split_attn": False,
}

# Buffers kohya's loader computes itself and does not expect in the file (anima_utils.load_anima_model).
_COMPUTED = ("seq", "dim_spatial_range", "dim_temporal_range", "inv_freq")


@dataclass(frozen=True)
class AnimaTestModel:
    """Where the built Anima test model lives.

    Attributes:
        root: The build folder.
        dit: The DiT (``pretrained_model_name_or_path`` / ``--dit``).
        qwen3: The Qwen3 text encoder (``qwen3`` / ``--text_encoder``).
        vae: The Qwen-Image VAE (``vae``).
    """

    __test__ = False  # not a pytest test class

    root: Path
    dit: Path
    qwen3: Path
    vae: Path


def _paths(root: Path) -> AnimaTestModel:
    return AnimaTestModel(
        root=root,
        dit=root / "anima.safetensors",
        qwen3=root / "qwen3.safetensors",
        vae=root / "qwen_image_vae.safetensors",
    )


def _write_model(root: Path, sd_scripts: Path) -> None:
    """Write every file of :func:`_paths` under ``root``, :data:`MARKER` last."""
    paths = _paths(root)
    tinyanima.shrink_kohya(sd_scripts)
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    save_file: Any = importlib.import_module("safetensors.torch").save_file
    anima_models: Any = importlib.import_module("library.anima_models")
    vae_module: Any = importlib.import_module("library.qwen_image_autoencoder_kl")

    def qwen3() -> dict[str, Any]:
        config = transformers.Qwen3Config.from_pretrained(str(sd_scripts / "configs" / "qwen3_06b"))
        model = transformers.Qwen3ForCausalLM(config).model
        return {f"model.{k}": v for k, v in model.state_dict().items()}

    def dit() -> dict[str, Any]:
        model = anima_models.Anima(**DIT_CONFIG)
        return {f"net.{k}": v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] not in _COMPUTED}

    def vae() -> dict[str, Any]:
        config = {"z_dim": 16, "attn_scales": [], "temperal_downsample": [False, True, True], "dropout": 0.0}
        model = vae_module.AutoencoderKLQwenImage(
            **config, latents_mean=[0.0] * 16, latents_std=[1.0] * 16, input_channels=3
        )
        return dict(model.state_dict())

    builders: dict[Path, Callable[[], dict[str, Any]]] = {paths.dit: dit, paths.qwen3: qwen3, paths.vae: vae}
    for n, (path, build) in enumerate(builders.items()):
        torch.manual_seed(SEED + n)
        tensors = build()
        save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))

    versions: dict[str, object] = {
        "anima_test_model_version": ANIMA_TEST_MODEL_VERSION,
        "seed": SEED,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (root / MARKER).write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")


def ensure_anima_test_model(cache_dir: Path | None = None, sd_scripts: Path | None = None) -> AnimaTestModel:
    """Return the cached Anima test model, building it first if it is not there yet.

    Built atomically like :func:`lorabuild.demo.testmodel.ensure_test_model` and seeded. Needs
    kohya's Python stack (torch, transformers, safetensors) and kohya's checkout (its ``library``
    package and ``configs/qwen3_06b``).

    Args:
        cache_dir: Folder to cache in; defaults to :func:`lorabuild.demo.testmodel.default_cache_dir`.
        sd_scripts: kohya's checkout; defaults to :func:`lorabuild.settings.sd_scripts_dir`.
    """
    cache_dir = (cache_dir or default_cache_dir()).expanduser().resolve()
    kohya = (sd_scripts or sd_scripts_dir()).expanduser().resolve()
    root = build_cached(
        cache_dir,
        ANIMA_TEST_MODEL_NAME,
        lambda folder: _write_model(folder, kohya),
        "the tiny Anima test model (seconds, 22 MB)",
    )
    return _paths(root)


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or find) the Anima test model and print its paths; the ``python -m`` entry point."""
    return model_main(
        argv,
        "python -m lorabuild.demo.animamodel",
        "Build (once) the tiny Anima test model for kohya (run through tinyanima.py) and print its paths.",
        ensure_anima_test_model,
        ("dit", "qwen3", "vae"),
    )


if __name__ == "__main__":
    sys.exit(main())
