"""The offline Lumina Image 2.0 test model: tiny random-weight files kohya's loaders accept.

kohya builds Lumina 2's models from hard-coded full sizes, so these files load only in a process
where ``lorabuild/demo/tinylumina.py`` has shrunk those sizes to :mod:`lorabuild.demo.luminasizes`
(this module builds with the same patches, :func:`lorabuild.demo.tinylumina.shrink_kohya`). Every
file holds exactly the keys kohya's loaders expect, named as in the released files, so that
lorabuild's header probe sees realistic files:

- ``lumina-image-2.safetensors``: ``library.lumina_models.NextDiT``'s state dict in Alpha-VLLM's
  layout (as ``lumina-image-2.safetensors``): two 64-wide layers and one context and one noise
  refiner layer;
- ``gemma_2_2b.safetensors``: ``transformers.Gemma2Model``'s weights under ``model.`` (as ComfyUI's
  ``gemma_2_2b_fp16.safetensors``; kohya strips it): two 32-wide layers, a 260-token embedding;
- ``ae.safetensors``: the tiny FLUX autoencoder (:data:`lorabuild.demo.fluxsizes.AUTOENCODER`);
- ``hf_home/hub/models--google--gemma-2-2b``: a Gemma tokenizer as a Hugging Face hub cache, which
  is what kohya's ``--tokenizer_cache_dir`` is for Lumina 2 (``AutoTokenizer.from_pretrained(
  "google/gemma-2-2b", cache_dir=...)``, library/strategy_lumina.py) and what
  ``lumina_minimal_inference.py`` reads through ``HF_HUB_CACHE`` (or ``HF_HOME``).

**The tokenizer is faked.** ``google/gemma-2-2b`` is a gated repository and nothing is downloaded
here, so a stand-in is built offline: a ``GemmaTokenizerFast`` over a byte-level BPE without merges
(each UTF-8 byte one token) after Gemma's four special tokens at Gemma's ids (``<pad>`` 0, ``<eos>``
1, ``<bos>`` 2, ``<unk>`` 3), so its 260 ids fit the tiny Gemma's embedding. kohya loads it as it
would the real one (``AutoTokenizer``, right padding, ``pad_to_multiple_of=8``); only the ids differ.

Built once (seconds, about 10 MB) into ``~/.cache/lorabuild/lumina-test-v<N>``; see
:func:`ensure_lumina_test_model`. Run ``python -m lorabuild.demo.luminamodel [--cache-dir DIR]`` with
kohya's Python to build it and print its paths.
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.demo import fluxsizes, luminasizes, tinylumina
from lorabuild.demo.fluxmodel import write_hub_cache
from lorabuild.demo.testmodel import MARKER, build_cached, default_cache_dir, model_main
from lorabuild.settings import sd_scripts_dir

# Bump when anything about the built files changes: the cache folder is named after it.
LUMINA_TEST_MODEL_VERSION = 1
LUMINA_TEST_MODEL_NAME = f"lumina-test-v{LUMINA_TEST_MODEL_VERSION}"
SEED = 20250803

GEMMA_TOKENIZER_ID = "google/gemma-2-2b"  # library/strategy_lumina.py GEMMA_ID


@dataclass(frozen=True)
class LuminaTestModel:
    """Where the built Lumina 2 test model lives.

    Attributes:
        root: The build folder.
        dit: The NextDiT (``pretrained_model_name_or_path``).
        gemma2: The Gemma-2 text encoder (``gemma2``).
        ae: The FLUX autoencoder (``ae``).
        hf_home: A Hugging Face home whose ``hub/`` holds the Gemma tokenizer.
        tokenizer_cache_dir: ``hf_home/hub``: kohya's ``tokenizer_cache_dir`` for Lumina 2.
    """

    __test__ = False  # not a pytest test class

    root: Path
    dit: Path
    gemma2: Path
    ae: Path
    hf_home: Path
    tokenizer_cache_dir: Path


def _paths(root: Path) -> LuminaTestModel:
    return LuminaTestModel(
        root=root,
        dit=root / "lumina-image-2.safetensors",
        gemma2=root / "gemma_2_2b.safetensors",
        ae=root / "ae.safetensors",
        hf_home=root / "hf_home",
        tokenizer_cache_dir=root / "hf_home" / "hub",
    )


def build_gemma_tokenizer(folder: Path) -> None:
    """Save the stand-in Gemma tokenizer (see the module's docstring) into ``folder``."""
    tokenizers: Any = importlib.import_module("tokenizers")
    transformers: Any = importlib.import_module("transformers")
    byte_level = tokenizers.pre_tokenizers.ByteLevel
    vocab = {token: i for i, token in enumerate(luminasizes.SPECIAL_TOKENS)}
    for symbol in sorted(byte_level.alphabet()):
        vocab[symbol] = len(vocab)
    model = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    model.pre_tokenizer = byte_level(add_prefix_space=False, use_regex=False)
    model.decoder = tokenizers.decoders.ByteLevel()
    tokenizer = transformers.GemmaTokenizerFast(
        tokenizer_object=model,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        add_bos_token=True,
        add_eos_token=False,
    )
    tokenizer.save_pretrained(str(folder))


def _write_model(root: Path, sd_scripts: Path) -> None:
    """Write every file of :func:`_paths` under ``root``, :data:`MARKER` last."""
    paths = _paths(root)
    tinylumina.shrink_kohya(sd_scripts)
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    save_file: Any = importlib.import_module("safetensors.torch").save_file
    lumina_models: Any = importlib.import_module("library.lumina_models")
    lumina_util: Any = importlib.import_module("library.lumina_util")
    flux_models: Any = importlib.import_module("library.flux_models")

    with tempfile.TemporaryDirectory() as tmp:
        build_gemma_tokenizer(Path(tmp))
        write_hub_cache(paths.hf_home, GEMMA_TOKENIZER_ID, Path(tmp))

    def gemma2() -> dict[str, Any]:
        # lumina_util.Gemma2Config is the launcher's: kohya's config with the tiny sizes.
        config = lumina_util.Gemma2Config(**{"model_type": "gemma2", "pad_token_id": 0})
        model = transformers.Gemma2Model(config)
        return {f"model.{k}": v for k, v in model.state_dict().items()}

    def dit() -> dict[str, Any]:
        model = lumina_models.NextDiT_2B_GQA_patch2_Adaln_Refiner()
        # NextDiT zero-initialises its final layer and adaLN modulations, so an untrained model
        # predicts 0 for every prompt, and lumina_train_util.denoise's renormalised CFG then divides
        # 0 by 0 (NaN: black no-LoRA cells). Random weights must predict something.
        with torch.no_grad():
            for parameter in model.parameters():
                if not parameter.any():
                    parameter.normal_(0.0, 0.02)
        return dict(model.state_dict())

    models: dict[Path, Callable[[], dict[str, Any]]] = {
        paths.dit: dit,
        paths.gemma2: gemma2,
        paths.ae: lambda: dict(
            flux_models.AutoEncoder(flux_models.AutoEncoderParams(**fluxsizes.AUTOENCODER)).state_dict()
        ),
    }
    for n, (path, build) in enumerate(models.items()):
        torch.manual_seed(SEED + n)
        tensors = build()
        save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))

    versions: dict[str, object] = {
        "lumina_test_model_version": LUMINA_TEST_MODEL_VERSION,
        "seed": SEED,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (root / MARKER).write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")


def ensure_lumina_test_model(
    cache_dir: Path | None = None, sd_scripts: Path | None = None
) -> LuminaTestModel:
    """Return the cached Lumina 2 test model, building it first if it is not there yet.

    Built atomically like :func:`lorabuild.demo.testmodel.ensure_test_model` and seeded. Needs
    kohya's Python stack (torch, transformers, tokenizers, safetensors) and kohya's checkout (its
    ``library`` package).

    Args:
        cache_dir: Folder to cache in; defaults to :func:`lorabuild.demo.testmodel.default_cache_dir`.
        sd_scripts: kohya's checkout; defaults to :func:`lorabuild.settings.sd_scripts_dir`.
    """
    cache_dir = (cache_dir or default_cache_dir()).expanduser().resolve()
    kohya = (sd_scripts or sd_scripts_dir()).expanduser().resolve()
    root = build_cached(
        cache_dir,
        LUMINA_TEST_MODEL_NAME,
        lambda folder: _write_model(folder, kohya),
        "the tiny Lumina 2 test model (seconds, 10 MB)",
    )
    return _paths(root)


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or find) the Lumina 2 test model and print its paths; the ``python -m`` entry point."""
    return model_main(
        argv,
        "python -m lorabuild.demo.luminamodel",
        "Build (once) the tiny Lumina 2 test model for kohya (run through tinylumina.py) and print its paths.",
        ensure_lumina_test_model,
        ("dit", "gemma2", "ae", "tokenizer_cache_dir", "hf_home"),
    )


if __name__ == "__main__":
    sys.exit(main())
