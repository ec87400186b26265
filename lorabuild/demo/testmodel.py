"""The offline CPU test model: an SD1.5-shaped diffusers folder that kohya can train on without a GPU.

kohya converts any diffusers U-Net into its own SD1.x U-Net, whose block widths are fixed, so the
U-Net here has SD1.5's full shape (about 860 M parameters, random weights). The text encoder and
the VAE are tiny. The CLIP tokenizer, which kohya otherwise downloads from the Hugging Face hub at
run time, is rebuilt offline from the BPE merges file that open-clip-torch ships, and is written
both into the model folder (``tokenizer/``, read by ``gen_img.py``) and into a folder laid out as
kohya's ``--tokenizer_cache_dir`` expects.

The model is built once (about a minute on 2 cores, 3.5 GB on disk, 8 GB of memory) and cached;
see :func:`ensure_test_model`.
Run ``python -m lorabuild.demo.testmodel [--cache-dir DIR]`` to build it and print its paths.

Heavy packages (torch, diffusers, transformers) are imported inside the functions that need
them, so importing this module is cheap. :func:`build_tokenizer` needs none of them, only the
open-clip-torch package to be installed (it is located, not imported).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.problems import LorabuildError

logger = logging.getLogger(__name__)

# Bump when anything about the built model changes: the cache folder is named after it, so an
# old build is simply ignored (and can be deleted by hand).
TEST_MODEL_VERSION = 1
TEST_MODEL_NAME = f"sd15-test-v{TEST_MODEL_VERSION}"
SEED = 20240229

# kohya's SD1 tokenizer: the hub repo id, and the sub-folder name kohya looks for under
# --tokenizer_cache_dir (the repo id with "/" replaced by "_").
TOKENIZER_REPO_ID = "openai/clip-vit-large-patch14"
TOKENIZER_CACHE_SUBDIR = TOKENIZER_REPO_ID.replace("/", "_")
# kohya's SD2 tokenizer (library/strategy_sd.py): the same vocabulary, padded with "!" (id 0).
SD2_TOKENIZER_REPO_ID = "stabilityai/stable-diffusion-2"
SD2_TOKENIZER_CACHE_SUBDIR = SD2_TOKENIZER_REPO_ID.replace("/", "_")
SD2_TEST_MODEL_NAME = f"sd2-test-v{TEST_MODEL_VERSION}"

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 49408
NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2  # 48,894 merge lines follow the header line
MODEL_MAX_LENGTH = 77
BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"

# The file a finished build writes last (see build_cached).
MARKER = "COMPLETE.json"
# A build takes about a minute; a build folder untouched for this long was left by a killed build.
_STALE_BUILD_SECONDS = 3600.0


@dataclass(frozen=True)
class TestModel:
    """Where the built test model lives.

    Attributes:
        model_dir: The diffusers folder (``model_index.json``, ``unet/``, ``text_encoder/``, ``vae/``,
            ``tokenizer/``, ``scheduler/``); pass it as ``pretrained_model_name_or_path``.
        tokenizer_cache_dir: A folder holding ``openai_clip-vit-large-patch14/``; pass it as
            kohya's ``tokenizer_cache_dir`` so no tokenizer is downloaded.
    """

    __test__ = False  # not a pytest test class, despite the name

    model_dir: Path
    tokenizer_cache_dir: Path


def default_cache_dir() -> Path:
    """The folder test models are cached in.

    Returns:
        ``$LORABUILD_CACHE`` when that is set and not empty, else ``~/.cache/lorabuild``.
    """
    env = os.environ.get("LORABUILD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lorabuild"


def find_bpe_file() -> Path:
    """Locate ``bpe_simple_vocab_16e6.txt.gz`` inside the installed open-clip-torch package.

    The package is only located, not imported (importing it would import torch).

    Returns:
        The path of the gzipped BPE merges file.

    Raises:
        LorabuildError: open-clip-torch is not installed, or its package lacks the file.
    """
    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / BPE_FILE_NAME
        if candidate.is_file():
            return candidate
    if not locations:
        raise LorabuildError(
            "the open-clip-torch package is not installed; it provides the CLIP BPE merges the test "
            "tokenizer is built from (pip install open-clip-torch, or lorabuild[train])"
        )
    raise LorabuildError(f"{BPE_FILE_NAME} was not found in the open_clip package at {locations[0]}")


def _byte_symbols() -> list[str]:
    """The 256 printable symbols GPT-2/CLIP byte-level BPE uses for the bytes 0..255, in vocab order.

    Bytes that are printable Latin-1 characters stand for themselves and come first, in byte
    order; every other byte is mapped to ``chr(256 + k)`` for the k-th such byte, appended after.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    printable_set = set(printable)
    others = [b for b in range(256) if b not in printable_set]
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(len(others))]


def _read_merges(bpe_path: Path) -> list[str]:
    """The first :data:`NUM_MERGES` merge lines (``"a b"``) after the header of the gzipped file."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = lines[1 : 1 + NUM_MERGES]
    if len(merges) != NUM_MERGES or any(len(m.split()) != 2 for m in merges):
        raise LorabuildError(f"{bpe_path} does not hold {NUM_MERGES} BPE merge lines after its header")
    return merges


def build_tokenizer(dest: Path, *, bpe_path: Path | None = None, pad_token: str = EOS_TOKEN) -> None:
    """Write the CLIP ViT-L/14 tokenizer (as used by SD1.x) into ``dest``, offline.

    The files are those ``transformers.CLIPTokenizer.from_pretrained`` reads: ``vocab.json``,
    ``merges.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``. The vocabulary is
    the 256 byte symbols, the same with ``</w>``, one entry per merge (the first 48,894 merges),
    then ``<|startoftext|>`` (id 49406) and ``<|endoftext|>`` (id 49407): 49,408 entries.
    ``<|endoftext|>`` is also the padding and unknown token, and ``model_max_length`` is 77
    (kohya fails reshaping tokens without it).

    Args:
        dest: Folder to write into; created if missing, existing files are overwritten.
        bpe_path: The gzipped BPE merges file; defaults to the one open-clip-torch ships.
        pad_token: The padding token: ``<|endoftext|>`` for SD1.x, ``!`` for SD2 (its tokenizer's).

    Raises:
        LorabuildError: The merges file cannot be found or is malformed.
    """
    merges = _read_merges(bpe_path or find_bpe_file())
    symbols = _byte_symbols()
    vocab = [*symbols, *(s + "</w>" for s in symbols), *(m.replace(" ", "") for m in merges)]
    vocab += [BOS_TOKEN, EOS_TOKEN]
    encoder = {token: index for index, token in enumerate(vocab)}
    if len(encoder) != VOCAB_SIZE:
        raise LorabuildError(f"rebuilt CLIP vocabulary has {len(encoder)} distinct entries, not {VOCAB_SIZE}")

    special_tokens = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": pad_token,
    }
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special_tokens,
    }
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (dest / "special_tokens_map.json").write_text(
        json.dumps(special_tokens, indent=2) + "\n", encoding="utf-8"
    )


def _paths(root: Path) -> TestModel:
    return TestModel(model_dir=root / "model", tokenizer_cache_dir=root / "tokenizers")


def _write_model(root: Path, v2: bool = False) -> None:
    """Build the diffusers folder and the tokenizer cache under ``root`` (see :func:`_paths`).

    ``v2``: SD2's shape instead of SD1.5's: the U-Net's 1024-wide cross-attention with SD2's head
    dimensions and linear projections, a 1024-wide text encoder, and SD2's tokenizer folder.
    """
    # Imported as untyped modules: they are absent where lorabuild is linted without its [train]
    # extra, and partly untyped where present, so mypy would give different verdicts in each.
    torch: Any = importlib.import_module("torch")
    diffusers: Any = importlib.import_module("diffusers")
    transformers: Any = importlib.import_module("transformers")

    paths = _paths(root)
    if v2:
        tokenizer_dir = paths.tokenizer_cache_dir / SD2_TOKENIZER_CACHE_SUBDIR
        build_tokenizer(tokenizer_dir, pad_token="!")
    else:
        tokenizer_dir = paths.tokenizer_cache_dir / TOKENIZER_CACHE_SUBDIR
        build_tokenizer(tokenizer_dir)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    width = 1024 if v2 else 768

    torch.manual_seed(SEED)
    # SD1.5's U-Net: diffusers' defaults are SD1.x's layout except the cross-attention width; SD2's
    # also has 5/10/20/20-channel heads and linear projections (kohya reads all four from the config).
    # sample_size must be set: kohya asserts it is not None when converting the U-Net.
    sd2 = {"attention_head_dim": (5, 10, 20, 20), "use_linear_projection": True} if v2 else {}
    unet = diffusers.UNet2DConditionModel(sample_size=64, cross_attention_dim=width, **sd2)
    torch.manual_seed(SEED + 1)
    text_encoder = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=width,  # must match the U-Net's cross_attention_dim
            intermediate_size=4 * width,
            num_hidden_layers=2,  # clip_skip 2 needs at least 2
            num_attention_heads=16 if v2 else 12,
            max_position_embeddings=MODEL_MAX_LENGTH,
            hidden_act="gelu" if v2 else "quick_gelu",
            projection_dim=width,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    torch.manual_seed(SEED + 2)
    vae = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),  # four blocks: the 8x downscale SD assumes
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=512,
    )
    # SD1.5's scheduler configuration.
    scheduler = diffusers.PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(paths.model_dir), safe_serialization=True)

    versions: dict[str, object] = {
        "test_model_version": TEST_MODEL_VERSION,
        "shape": "sd2" if v2 else "sd15",
        "seed": SEED,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
    # Written last: its presence means the build finished.
    (root / MARKER).write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")


def _remove_stale_builds(cache_dir: Path, prefix: str) -> None:
    now = time.time()
    for leftover in cache_dir.glob(prefix + "*"):
        try:
            stale = now - leftover.stat().st_mtime > _STALE_BUILD_SECONDS
        except OSError:
            continue
        if stale:
            logger.info("removing an interrupted test-model build: %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def build_cached(cache_dir: Path, name: str, write: Callable[[Path], None], what: str) -> Path:
    """The finished build ``<cache_dir>/<name>``, made by ``write`` first if it is not there yet.

    ``write`` builds into a temporary folder next to the final place and must write
    ``COMPLETE.json`` last; the folder is then renamed into place, so an interrupted build never
    leaves a half model behind. Temporary folders of builds killed over an hour ago are removed.

    Args:
        cache_dir: The cache folder (resolved, created if missing).
        name: The build's versioned folder name.
        write: Builds everything into the folder it is given, the marker file last.
        what: How the log line names the build (``the CPU test model (about a minute ...)``).

    Returns:
        The build's folder.

    Raises:
        LorabuildError: A folder in the way is not a finished build.
    """
    root = cache_dir / name
    if (root / MARKER).is_file():
        return root
    if root.exists():
        raise LorabuildError(
            f"{root} exists but is not a finished test-model build (no {MARKER}); delete it and retry"
        )

    cache_dir.mkdir(parents=True, exist_ok=True)
    prefix = f".building-{name}-"
    _remove_stale_builds(cache_dir, prefix)
    build_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=cache_dir))
    logger.info("building %s in %s", what, root)
    try:
        write(build_dir)
        build_dir.chmod(0o755)  # mkdtemp makes it private
        try:
            build_dir.rename(root)
        except OSError:
            # Another process finished first; use its build and drop ours.
            if not (root / MARKER).is_file():
                raise
    finally:
        if build_dir.exists():
            shutil.rmtree(build_dir, ignore_errors=True)
    return root


def ensure_test_model(cache_dir: Path | None = None) -> TestModel:
    """Return the cached test model, building it first if it is not there yet.

    The model is built into a temporary folder next to its final place, completed by a marker
    file written last, and then renamed into place, so an interrupted build never leaves a
    half model behind (:func:`build_cached`). Building is seeded and therefore deterministic for
    given package versions. Needs torch, diffusers, transformers and open-clip-torch
    (``lorabuild[train]``).

    Args:
        cache_dir: Folder to cache in; defaults to :func:`default_cache_dir`. The model goes into
            ``<cache_dir>/sd15-test-v<N>/``.

    Returns:
        The paths of the model folder and of the tokenizer cache folder.

    Raises:
        LorabuildError: open-clip-torch is missing, or a folder in the way is not a finished build.
    """
    cache_dir = (cache_dir or default_cache_dir()).expanduser().resolve()
    what = "the CPU test model (about a minute, 3.5 GB on disk, 8 GB of memory)"
    return _paths(build_cached(cache_dir, TEST_MODEL_NAME, _write_model, what))


def ensure_sd2_test_model(cache_dir: Path | None = None) -> TestModel:
    """Return the cached SD2-shaped test model (see :func:`_write_model`), building it first if needed.

    Like :func:`ensure_test_model`: SD2's full U-Net (kohya takes its size from the folder), random
    weights, a tiny 1024-wide text encoder and VAE, and SD2's tokenizer in the tokenizer cache. Goes
    into ``<cache_dir>/sd2-test-v<N>/``.
    """
    cache_dir = (cache_dir or default_cache_dir()).expanduser().resolve()
    what = "the SD2 CPU test model (about a minute, 3.5 GB on disk, 8 GB of memory)"
    return _paths(
        build_cached(cache_dir, SD2_TEST_MODEL_NAME, lambda root: _write_model(root, v2=True), what)
    )


def model_main(
    argv: Sequence[str] | None,
    prog: str,
    description: str,
    ensure: Callable[[Path | None], object],
    names: Sequence[str],
) -> int:
    """A test model's ``python -m`` entry point: build (or find) it with ``ensure`` and print its ``names`` paths.

    Args:
        argv: Command-line arguments without the program name; defaults to ``sys.argv[1:]``.
        prog: The program's name in its help.
        description: Its help's description.
        ensure: Builds or finds the model, given ``--cache-dir``.
        names: The attributes of the model to print, one ``name: path`` line each.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache folder (default: $LORABUILD_CACHE or ~/.cache/lorabuild)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        model = ensure(args.cache_dir)
    except LorabuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for name in names:
        print(f"{name}: {getattr(model, name)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or find) the test model and print its paths; the ``python -m`` entry point."""
    return model_main(
        argv,
        "python -m lorabuild.demo.testmodel",
        "Build (once) the offline CPU test model for kohya and print its paths.",
        ensure_test_model,
        ("model_dir", "tokenizer_cache_dir"),
    )


if __name__ == "__main__":
    sys.exit(main())
