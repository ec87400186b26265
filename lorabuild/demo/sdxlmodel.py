"""The offline SDXL test model: a tiny random-weight SDXL checkpoint kohya's loaders accept.

kohya builds SDXL from hard-coded full sizes, so this checkpoint loads only in a process where
``lorabuild/demo/tinysdxl.py`` has shrunk those sizes to :mod:`lorabuild.demo.sdxlsizes` (the same
definition this module builds from). It is one file in the original ("ldm") layout that SDXL
checkpoints are released in, written by kohya's own ``sdxl_model_util.save_stable_diffusion_checkpoint``:
``model.diffusion_model.*`` (the U-Net, with ``label_emb``), ``conditioner.embedders.0.transformer.*``
(CLIP-L), ``conditioner.embedders.1.model.*`` (CLIP-bigG, open-clip names) and
``first_stage_model.*`` (the VAE), so lorabuild's header probe sees a realistic SDXL file.

Also ``tokenizers/``, for kohya's ``--tokenizer_cache_dir``: ``openai_clip-vit-large-patch14``
(CLIP-L rebuilt from open-clip's BPE file, :func:`lorabuild.demo.testmodel.build_tokenizer`) and
``laion_CLIP-ViT-bigG-14-laion2B-39B-b160k``: the same BPE vocabulary, with ``!`` (id 0) as its pad
token, as in the laion repository (kohya sets ``pad_token_id = 0`` either way: strategy_sdxl.py,
sdxl_train_util.load_tokenizers).

Built once (seconds, a few MB) into ``~/.cache/lorabuild/sdxl-test-v<N>``; see
:func:`ensure_sdxl_test_model`. Building shrinks kohya's SDXL sizes in the calling process (it
imports kohya's modules and patches them as ``tinysdxl.py`` does); run
``python -m lorabuild.demo.sdxlmodel [--cache-dir DIR]`` with kohya's Python to build it in a
process of its own and print its paths.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.demo import sdxlsizes
from lorabuild.demo.testmodel import MARKER, build_cached, build_tokenizer, default_cache_dir, model_main
from lorabuild.demo.tinysdxl import shrink_kohya
from lorabuild.settings import sd_scripts_dir

# Bump when anything about the built files changes: the cache folder is named after it.
SDXL_TEST_MODEL_VERSION = 1
SDXL_TEST_MODEL_NAME = f"sdxl-test-v{SDXL_TEST_MODEL_VERSION}"
SEED = 20251205

# kohya's tokenizer repo ids (library/strategy_sdxl.py); under --tokenizer_cache_dir each is a
# folder named with "/" replaced by "_".
CLIP_L_TOKENIZER_ID = "openai/clip-vit-large-patch14"
CLIP_G_TOKENIZER_ID = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"
CLIP_G_PAD_TOKEN = "!"  # id 0: the laion tokenizer's pad token (open-clip pads with 0)


@dataclass(frozen=True)
class SdxlTestModel:
    """Where the built SDXL test model lives.

    Attributes:
        root: The build folder.
        checkpoint: The single-file SDXL checkpoint (``model.base``).
        tokenizer_cache_dir: kohya's ``tokenizer_cache_dir``: no tokenizer is downloaded.
    """

    __test__ = False  # not a pytest test class

    root: Path
    checkpoint: Path
    tokenizer_cache_dir: Path


def _paths(root: Path) -> SdxlTestModel:
    return SdxlTestModel(
        root=root,
        checkpoint=root / "sdxl_base.safetensors",
        tokenizer_cache_dir=root / "tokenizers",
    )


def build_clip_g_tokenizer(dest: Path) -> None:
    """Write CLIP-bigG's tokenizer into ``dest``: CLIP-L's vocabulary with ``!`` as the pad token."""
    build_tokenizer(dest)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = dest / name
        data = json.loads(path.read_text(encoding="utf-8"))
        data["pad_token"] = CLIP_G_PAD_TOKEN
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _text_config(transformers: Any, sizes: dict[str, Any], act: str) -> Any:
    return transformers.CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_act=act, **sizes)


def _write_model(root: Path, sd_scripts: Path) -> None:
    """Write the checkpoint and tokenizers of :func:`_paths` under ``root``, :data:`MARKER` last."""
    paths = _paths(root)
    shrink_kohya(sd_scripts)
    # Untyped on purpose: absent where lorabuild is linted without its [train] extra.
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    diffusers: Any = importlib.import_module("diffusers")
    unet_module: Any = importlib.import_module("library.sdxl_original_unet")
    model_util: Any = importlib.import_module("library.model_util")
    sdxl_model_util: Any = importlib.import_module("library.sdxl_model_util")

    build_tokenizer(paths.tokenizer_cache_dir / CLIP_L_TOKENIZER_ID.replace("/", "_"))
    build_clip_g_tokenizer(paths.tokenizer_cache_dir / CLIP_G_TOKENIZER_ID.replace("/", "_"))

    torch.manual_seed(SEED)
    unet = unet_module.SdxlUNet2DConditionModel()
    clip_l = transformers.CLIPTextModel(_text_config(transformers, sdxlsizes.CLIP_L, "quick_gelu"))
    clip_g = transformers.CLIPTextModelWithProjection(_text_config(transformers, sdxlsizes.CLIP_G, "gelu"))
    vae = diffusers.AutoencoderKL(**model_util.create_vae_diffusers_config())
    logit_scale = torch.tensor(math.log(100.0))
    sdxl_model_util.save_stable_diffusion_checkpoint(
        str(paths.checkpoint), clip_l, clip_g, unet, 0, 0, None, vae, logit_scale, None, torch.float32
    )
    versions: dict[str, object] = {
        "sdxl_test_model_version": SDXL_TEST_MODEL_VERSION,
        "seed": SEED,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (root / MARKER).write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")


def ensure_sdxl_test_model(cache_dir: Path | None = None, sd_scripts: Path | None = None) -> SdxlTestModel:
    """Return the cached SDXL test model, building it first if it is not there yet.

    Built atomically like :func:`lorabuild.demo.testmodel.ensure_test_model` (a temporary folder
    renamed into place) and seeded. Needs kohya's Python stack (torch, transformers, diffusers,
    safetensors), open-clip-torch, and kohya's checkout (its ``library`` package).

    Args:
        cache_dir: Folder to cache in; defaults to :func:`lorabuild.demo.testmodel.default_cache_dir`.
            The files go into ``<cache_dir>/sdxl-test-v<N>/``.
        sd_scripts: kohya's checkout; defaults to :func:`lorabuild.settings.sd_scripts_dir`.

    Returns:
        The paths of the checkpoint and the tokenizer folder.

    Raises:
        LorabuildError: open-clip-torch is missing, or a folder in the way is not a finished build.
    """
    cache_dir = (cache_dir or default_cache_dir()).expanduser().resolve()
    kohya = (sd_scripts or sd_scripts_dir()).expanduser().resolve()
    root = build_cached(
        cache_dir,
        SDXL_TEST_MODEL_NAME,
        lambda folder: _write_model(folder, kohya),
        "the tiny SDXL test model (seconds, a few MB)",
    )
    return _paths(root)


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or find) the SDXL test model and print its paths; the ``python -m`` entry point."""
    return model_main(
        argv,
        "python -m lorabuild.demo.sdxlmodel",
        "Build (once) the tiny SDXL test model for kohya (run through tinysdxl.py) and print its paths.",
        ensure_sdxl_test_model,
        ("checkpoint", "tokenizer_cache_dir"),
    )


if __name__ == "__main__":
    sys.exit(main())
