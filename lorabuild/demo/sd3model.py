"""The offline SD3 test model: a tiny random-weight SD3.5-Large-shaped release that kohya's loaders accept.

The files load only in a process where ``lorabuild/demo/tinysd3.py`` has shrunk kohya's hard-coded
text-encoder and VAE sizes to :mod:`lorabuild.demo.sd3sizes` (the definition this module builds
from); the MMDiT's shape kohya reads from the file itself. Named and laid out like the SD3.5 Large
release, so lorabuild's model-header probe sees realistic files:

- ``sd3.5_large.safetensors``: the MMDiT (``library.sd3_models.MMDiT``, one joint block, qk-norm)
  under ``model.diffusion_model.`` and the VAE (``SDVAE``'s encoder and decoder) under
  ``first_stage_model.``, as in SAI's single file; no text encoders;
- ``clip_l.safetensors`` and ``clip_g.safetensors`` (``text_model.*``, ``text_projection.weight``:
  ``CLIPTextModelWithProjection``), ``t5xxl.safetensors`` (``shared.weight``, ``encoder.*``);
- ``sd3_incl_te.safetensors``: the same MMDiT and VAE with the three text encoders inside
  (``text_encoders.clip_l.transformer.*``...), as ``sd3_medium_incl_clips_t5xxlfp16`` is laid out,
  which kohya detects but loads none of (the test that shows it; lorabuild's check refuses it);
- ``tokenizers/``, for kohya's ``--tokenizer_cache_dir``: ``openai_clip-vit-large-patch14`` and
  ``laion_CLIP-ViT-bigG-14-laion2B-39B-b160k`` (both CLIP BPE rebuilt from open-clip's file; kohya
  sets CLIP-G's pad id itself) and ``google_t5-v1_1-xxl`` (kohya's ``configs/t5_old``);
- ``hf_home/``: the same three as a Hugging Face hub cache, for ``sd3_minimal_inference.py``, which
  takes no tokenizer folder (run it with ``HF_HOME`` there and ``HF_HUB_OFFLINE=1``).

Built once (seconds, about 20 MB) into ``~/.cache/lorabuild/sd3-test-v<N>``
(:func:`ensure_sd3_test_model`); ``python -m lorabuild.demo.sd3model [--cache-dir DIR]`` with
kohya's Python builds it and prints its paths. torch, transformers, safetensors and kohya's
``library`` are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.demo import sd3sizes
from lorabuild.demo.fluxmodel import T5_TOKENIZER_SOURCE, write_hub_cache
from lorabuild.demo.fluxmodel import _save as save_tensors
from lorabuild.demo.testmodel import MARKER, build_cached, build_tokenizer, default_cache_dir, model_main
from lorabuild.problems import LorabuildError
from lorabuild.settings import sd_scripts_dir

# Bump when anything about the built files changes: the cache folder is named after it.
SD3_TEST_MODEL_VERSION = 2
SD3_TEST_MODEL_NAME = f"sd3-test-v{SD3_TEST_MODEL_VERSION}"
SEED = 20250901

# kohya's tokenizer repo ids (library/strategy_sd3.py).
CLIP_L_TOKENIZER_ID = "openai/clip-vit-large-patch14"
CLIP_G_TOKENIZER_ID = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"
T5XXL_TOKENIZER_ID = "google/t5-v1_1-xxl"


@dataclass(frozen=True)
class Sd3TestModel:
    """Where the built SD3 test model lives.

    Attributes:
        root: The build folder.
        base: MMDiT and VAE (``pretrained_model_name_or_path`` / ``--ckpt_path``).
        incl_te: MMDiT, VAE and the three text encoders in one file.
        clip_l: CLIP-L (``clip_l``).
        clip_g: CLIP-G (``clip_g``).
        t5xxl: T5-XXL's encoder (``t5xxl``).
        tokenizer_cache_dir: kohya's ``tokenizer_cache_dir``: no tokenizer is downloaded.
        hf_home: A Hugging Face home holding the tokenizers in ``hub/`` (set ``HF_HOME`` to it).
    """

    __test__ = False  # not a pytest test class

    root: Path
    base: Path
    incl_te: Path
    clip_l: Path
    clip_g: Path
    t5xxl: Path
    tokenizer_cache_dir: Path
    hf_home: Path


def _paths(root: Path) -> Sd3TestModel:
    return Sd3TestModel(
        root=root,
        base=root / "sd3.5_large.safetensors",
        incl_te=root / "sd3_incl_te.safetensors",
        clip_l=root / "clip_l.safetensors",
        clip_g=root / "clip_g.safetensors",
        t5xxl=root / "t5xxl.safetensors",
        tokenizer_cache_dir=root / "tokenizers",
        hf_home=root / "hf_home",
    )


def _prefixed(prefix: str, tensors: dict[str, Any]) -> dict[str, Any]:
    return {prefix + k: v for k, v in tensors.items()}


def _write_model(root: Path, sd_scripts: Path) -> None:
    """Write every file of :func:`_paths` under ``root``, :data:`MARKER` last."""
    paths = _paths(root)
    t5_source = sd_scripts / T5_TOKENIZER_SOURCE
    if not (t5_source / "spiece.model").is_file():
        raise LorabuildError(
            f"kohya's T5 tokenizer files are not in {t5_source}: is kohya checked out there?"
        )
    if str(sd_scripts) not in sys.path:
        sys.path.insert(0, str(sd_scripts))
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    sd3_models: Any = importlib.import_module("library.sd3_models")

    folders = {}
    for repo_id in (CLIP_L_TOKENIZER_ID, CLIP_G_TOKENIZER_ID, T5XXL_TOKENIZER_ID):
        folders[repo_id] = paths.tokenizer_cache_dir / repo_id.replace("/", "_")
    build_tokenizer(folders[CLIP_L_TOKENIZER_ID])
    build_tokenizer(folders[CLIP_G_TOKENIZER_ID])
    transformers.T5TokenizerFast.from_pretrained(str(t5_source)).save_pretrained(
        str(folders[T5XXL_TOKENIZER_ID])
    )
    for repo_id, folder in folders.items():
        write_hub_cache(paths.hf_home, repo_id, folder)

    def clip(sizes: dict[str, Any]) -> Any:
        # kohya's own CLIPTextConfig values (sd3_utils.load_clip_l/g) with the tiny sizes.
        config = transformers.CLIPTextConfig(
            vocab_size=49408,
            max_position_embeddings=77,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            **sizes,
        )
        return transformers.CLIPTextModelWithProjection(config)

    torch.manual_seed(SEED)
    model = sd3_models.create_sd3_mmdit(sd3_models.SD3Params(**sd3sizes.MMDIT))
    # kohya creates two tensors with torch.empty and leaves them to the checkpoint: the qk-norm
    # scales (RMSNorm: ones, as initialised) and the position embedding (SD3's fixed 2-D sin-cos).
    for module in model.modules():
        if isinstance(module, sd3_models.RMSNorm) and module.weight is not None:
            module.weight.data.fill_(1.0)
    grid = sd3_models.get_2d_sincos_pos_embed(model.hidden_size, sd3sizes.POS_EMBED_MAX_SIZE)
    model.pos_embed.copy_(torch.from_numpy(grid).float().unsqueeze(0))
    mmdit = model.state_dict()
    if not all(bool(torch.isfinite(t).all()) for t in mmdit.values()):
        raise LorabuildError(
            "the tiny SD3 MMDiT has tensors that are not finite: kohya left one uninitialised"
        )
    torch.manual_seed(SEED + 1)
    vae = {
        **_prefixed("encoder.", sd3_models.VAEEncoder(**sd3sizes.VAE).state_dict()),
        **_prefixed("decoder.", sd3_models.VAEDecoder(**sd3sizes.VAE).state_dict()),
    }
    torch.manual_seed(SEED + 2)
    clip_l = clip(sd3sizes.CLIP_L).state_dict()
    torch.manual_seed(SEED + 3)
    clip_g = clip(sd3sizes.CLIP_G).state_dict()
    torch.manual_seed(SEED + 4)
    t5xxl = transformers.T5EncoderModel(transformers.T5Config(**sd3sizes.T5XXL)).state_dict()

    single = {**_prefixed("model.diffusion_model.", mmdit), **_prefixed("first_stage_model.", vae)}
    save_tensors(single, paths.base)
    save_tensors(clip_l, paths.clip_l)
    save_tensors(clip_g, paths.clip_g)
    save_tensors(t5xxl, paths.t5xxl)
    save_tensors(
        {
            **single,
            **_prefixed("text_encoders.clip_l.transformer.", clip_l),
            **_prefixed("text_encoders.clip_g.transformer.", clip_g),
            **_prefixed("text_encoders.t5xxl.transformer.", t5xxl),
        },
        paths.incl_te,
    )
    versions: dict[str, object] = {
        "sd3_test_model_version": SD3_TEST_MODEL_VERSION,
        "seed": SEED,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (root / MARKER).write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")


def ensure_sd3_test_model(cache_dir: Path | None = None, sd_scripts: Path | None = None) -> Sd3TestModel:
    """Return the cached SD3 test model, building it first if it is not there yet.

    Built atomically and seeded like :func:`lorabuild.demo.fluxmodel.ensure_flux_test_model`.
    Needs kohya's Python stack (torch, transformers, safetensors), open-clip-torch, and kohya's
    checkout (its ``library`` package and ``configs/t5_old``).

    Args:
        cache_dir: Folder to cache in; defaults to :func:`lorabuild.demo.testmodel.default_cache_dir`.
        sd_scripts: kohya's checkout; defaults to :func:`lorabuild.settings.sd_scripts_dir`.

    Returns:
        The paths of the built files and tokenizer folders.

    Raises:
        LorabuildError: open-clip-torch or kohya's files are missing, or a folder in the way is
            not a finished build.
    """
    cache_dir = (cache_dir or default_cache_dir()).expanduser().resolve()
    kohya = (sd_scripts or sd_scripts_dir()).expanduser().resolve()
    root = build_cached(
        cache_dir,
        SD3_TEST_MODEL_NAME,
        lambda folder: _write_model(folder, kohya),
        "the tiny SD3 test model (seconds)",
    )
    return _paths(root)


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or find) the SD3 test model and print its paths; the ``python -m`` entry point."""
    return model_main(
        argv,
        "python -m lorabuild.demo.sd3model",
        "Build (once) the tiny SD3 test model for kohya (run through tinysd3.py) and print its paths.",
        ensure_sd3_test_model,
        ("base", "incl_te", "clip_l", "clip_g", "t5xxl", "tokenizer_cache_dir", "hf_home"),
    )


if __name__ == "__main__":
    sys.exit(main())
