"""The offline FLUX test model: tiny random-weight FLUX.1-dev and Chroma files kohya's loaders accept.

kohya builds FLUX models from hard-coded full sizes, so these files load only in a process where
``lorabuild/demo/tinyflux.py`` has shrunk those sizes to :mod:`lorabuild.demo.fluxsizes` (the
same definition this module builds from). Every file holds exactly the keys kohya's loaders
expect, named as in the real releases, so that lorabuild's model-header probe sees realistic
files:

- ``flux1-dev.safetensors``: ``library.flux_models.Flux``'s state dict, one double and one single
  block (kohya counts the blocks in the file): ``img_in.*``, ``time_in.*``, ``vector_in.*``,
  ``guidance_in.*`` (dev only; schnell has none), ``txt_in.*``, ``double_blocks.0.*``,
  ``single_blocks.0.*``, ``final_layer.*``;
- ``chroma.safetensors``: ``library.chroma_models.Chroma``'s, which has
  ``distilled_guidance_layer.*`` (the modulation approximator) instead of ``time_in``,
  ``vector_in`` and ``guidance_in``, and no modulation weights in its blocks;
- ``clip_l.safetensors`` (``text_model.*``), ``t5xxl.safetensors`` (``shared.weight``,
  ``encoder.*``), ``ae.safetensors`` (``encoder.*``, ``decoder.*``);
- ``tokenizers/``, for kohya's ``--tokenizer_cache_dir``: ``openai_clip-vit-large-patch14``
  (CLIP-L rebuilt from open-clip's BPE file, :func:`lorabuild.demo.testmodel.build_tokenizer`) and
  ``google_t5-v1_1-xxl`` (a ``T5TokenizerFast`` from the ``configs/t5_old`` folder kohya ships);
- ``hf_home/``, the same two tokenizers as a Hugging Face hub cache
  (``hub/models--ORG--NAME/refs/main`` and ``snapshots/<hash>/``): ``flux_minimal_inference.py``
  takes no tokenizer folder, so run it with ``HF_HOME`` there and ``HF_HUB_OFFLINE=1``.

Built once (about 5 s, 26 MB) into ``~/.cache/lorabuild/flux-test-v<N>``; see
:func:`ensure_flux_test_model`. Run ``python -m lorabuild.demo.fluxmodel [--cache-dir DIR]`` with
kohya's Python to build it and print its paths. torch, transformers, safetensors and kohya's
``library`` are imported inside the functions that need them (:func:`importlib.import_module`),
so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.demo import fluxsizes
from lorabuild.demo.testmodel import MARKER, build_cached, build_tokenizer, default_cache_dir, model_main
from lorabuild.problems import LorabuildError
from lorabuild.settings import sd_scripts_dir

# Bump when anything about the built files changes: the cache folder is named after it.
FLUX_TEST_MODEL_VERSION = 1
FLUX_TEST_MODEL_NAME = f"flux-test-v{FLUX_TEST_MODEL_VERSION}"
SEED = 20250801

# kohya's tokenizer repo ids (library/strategy_flux.py); under --tokenizer_cache_dir each is a
# folder named with "/" replaced by "_".
CLIP_L_TOKENIZER_ID = "openai/clip-vit-large-patch14"
T5XXL_TOKENIZER_ID = "google/t5-v1_1-xxl"
T5_TOKENIZER_SOURCE = Path("configs") / "t5_old"  # inside kohya's checkout


@dataclass(frozen=True)
class FluxTestModel:
    """Where the built FLUX test model lives.

    Attributes:
        root: The build folder.
        flux_dev: The FLUX.1-dev-shaped DiT (``pretrained_model_name_or_path`` / ``--ckpt_path``).
        chroma: The Chroma DiT (with ``model_type = "chroma"``).
        clip_l: CLIP-L (``clip_l``).
        t5xxl: T5-XXL's encoder (``t5xxl``).
        ae: The autoencoder (``ae``).
        tokenizer_cache_dir: kohya's ``tokenizer_cache_dir``: no tokenizer is downloaded.
        hf_home: A Hugging Face home holding the tokenizers in ``hub/``, for scripts that take no
            tokenizer folder (``flux_minimal_inference.py``): set ``HF_HOME`` to it.
    """

    __test__ = False  # not a pytest test class

    root: Path
    flux_dev: Path
    chroma: Path
    clip_l: Path
    t5xxl: Path
    ae: Path
    tokenizer_cache_dir: Path
    hf_home: Path


def _paths(root: Path) -> FluxTestModel:
    return FluxTestModel(
        root=root,
        flux_dev=root / "flux1-dev.safetensors",
        chroma=root / "chroma.safetensors",
        clip_l=root / "clip_l.safetensors",
        t5xxl=root / "t5xxl.safetensors",
        ae=root / "ae.safetensors",
        tokenizer_cache_dir=root / "tokenizers",
        hf_home=root / "hf_home",
    )


def write_hub_cache(hf_home: Path, repo_id: str, source: Path) -> None:
    """Lay ``source``'s files out as the hub cache's snapshot of ``repo_id`` (what offline mode reads)."""
    files = sorted(p for p in source.iterdir() if p.is_file())
    digest = hashlib.sha1()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    revision = digest.hexdigest()  # any 40-hex name: refs/main points at it
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for path in files:
        shutil.copyfile(path, snapshot / path.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")


def _save(tensors: Any, path: Path) -> None:
    """Save a module's state dict; tied weights (T5's embedding) are stored once per key, as released files do."""
    save_file: Any = importlib.import_module("safetensors.torch").save_file
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))


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
    # Untyped on purpose: absent where lorabuild is linted without its [train] extra.
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    flux_models: Any = importlib.import_module("library.flux_models")
    chroma_models: Any = importlib.import_module("library.chroma_models")

    clip_dir = paths.tokenizer_cache_dir / CLIP_L_TOKENIZER_ID.replace("/", "_")
    t5_dir = paths.tokenizer_cache_dir / T5XXL_TOKENIZER_ID.replace("/", "_")
    build_tokenizer(clip_dir)
    transformers.T5TokenizerFast.from_pretrained(str(t5_source)).save_pretrained(str(t5_dir))
    write_hub_cache(paths.hf_home, CLIP_L_TOKENIZER_ID, clip_dir)
    write_hub_cache(paths.hf_home, T5XXL_TOKENIZER_ID, t5_dir)

    models: dict[Path, Callable[[], Any]] = {
        paths.flux_dev: lambda: flux_models.Flux(flux_models.FluxParams(**fluxsizes.FLUX_DEV)),
        paths.chroma: lambda: chroma_models.Chroma(chroma_models.ChromaParams(**fluxsizes.CHROMA)),
        paths.ae: lambda: flux_models.AutoEncoder(flux_models.AutoEncoderParams(**fluxsizes.AUTOENCODER)),
        paths.clip_l: lambda: transformers.CLIPTextModel(transformers.CLIPTextConfig(**fluxsizes.CLIP_L)),
        paths.t5xxl: lambda: transformers.T5EncoderModel(transformers.T5Config(**fluxsizes.T5XXL)),
    }
    for n, (path, build) in enumerate(models.items()):
        torch.manual_seed(SEED + n)
        _save(build().state_dict(), path)

    versions: dict[str, object] = {
        "flux_test_model_version": FLUX_TEST_MODEL_VERSION,
        "seed": SEED,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (root / MARKER).write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")


def ensure_flux_test_model(cache_dir: Path | None = None, sd_scripts: Path | None = None) -> FluxTestModel:
    """Return the cached FLUX test model, building it first if it is not there yet.

    Built atomically like :func:`lorabuild.demo.testmodel.ensure_test_model` (a temporary folder
    renamed into place) and seeded. Needs kohya's Python stack (torch, transformers, safetensors),
    open-clip-torch, and kohya's checkout (its ``library`` package and ``configs/t5_old``).

    Args:
        cache_dir: Folder to cache in; defaults to :func:`lorabuild.demo.testmodel.default_cache_dir`.
            The files go into ``<cache_dir>/flux-test-v<N>/``.
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
        FLUX_TEST_MODEL_NAME,
        lambda folder: _write_model(folder, kohya),
        "the tiny FLUX test model (seconds, 26 MB)",
    )
    return _paths(root)


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or find) the FLUX test model and print its paths; the ``python -m`` entry point."""
    return model_main(
        argv,
        "python -m lorabuild.demo.fluxmodel",
        "Build (once) the tiny FLUX test model for kohya (run through tinyflux.py) and print its paths.",
        ensure_flux_test_model,
        ("flux_dev", "chroma", "clip_l", "t5xxl", "ae", "tokenizer_cache_dir", "hf_home"),
    )


if __name__ == "__main__":
    sys.exit(main())
