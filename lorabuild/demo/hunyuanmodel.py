"""The offline HunyuanImage 2.1 test model: tiny random-weight files kohya's loaders accept.

kohya builds HunyuanImage 2.1 from hard-coded full sizes, so these files load only in a process
where ``lorabuild/demo/tinyhunyuan.py`` has shrunk them to :mod:`lorabuild.demo.hunyuansizes`.
Each file is laid out as the released one kohya's docs name, so lorabuild's header probe sees
realistic files:

- ``hunyuanimage2.1.safetensors``: the DiT's state dict (``byt5_in.*``, ``double_blocks.0.*``...);
- ``qwen_2.5_vl_7b.safetensors``: Qwen2.5-VL in ComfyUI's layout (``model.layers.*``, ``visual.*``,
  ``lm_head.weight``; kohya's load_qwen2_5_vl maps them back);
- ``byt5_small_glyphxl_fp16.safetensors``: byT5's encoder (``encoder.block.*``, ``shared.weight``),
  its embedding grown by the glyph tokens kohya's ``add_special_token`` adds;
- ``hunyuan_image_2.1_vae_fp16.safetensors``: the VAE's state dict;
- ``tokenizers/`` for ``--tokenizer_cache_dir`` and ``hf_home/`` (a hub cache for the scripts that
  read the hub only: kohya's ``load_byt5`` and the inference script): ``Qwen/Qwen2.5-VL-7B-Instruct``
  (Qwen's BPE vocabulary from the ``configs/qwen3_06b`` folder kohya ships: Qwen3 keeps Qwen2.5's
  vocabulary and chat tokens) and ``google/byt5-small`` (a ``ByT5Tokenizer``: bytes, no vocabulary file).

The models are built by kohya's own loaders' code paths in this process (shrunk first): the text
encoders are captured as kohya builds them, so their key sets are exactly what kohya loads.
Built once into ``~/.cache/lorabuild/hunyuan-test-v<N>``; ``python -m lorabuild.demo.hunyuanmodel``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.demo.fluxmodel import write_hub_cache
from lorabuild.demo.testmodel import MARKER, build_cached, default_cache_dir, model_main
from lorabuild.demo.tinyhunyuan import shrink_kohya
from lorabuild.problems import LorabuildError
from lorabuild.settings import sd_scripts_dir

HUNYUAN_TEST_MODEL_VERSION = 1
HUNYUAN_TEST_MODEL_NAME = f"hunyuan-test-v{HUNYUAN_TEST_MODEL_VERSION}"
SEED = 20251205

QWEN_TOKENIZER_ID = "Qwen/Qwen2.5-VL-7B-Instruct"
BYT5_TOKENIZER_ID = "google/byt5-small"
QWEN_TOKENIZER_SOURCE = Path("configs") / "qwen3_06b"  # inside kohya's checkout


@dataclass(frozen=True)
class HunyuanTestModel:
    """Where the built HunyuanImage test model lives (see the module docstring)."""

    __test__ = False

    root: Path
    dit: Path
    text_encoder: Path
    byt5: Path
    vae: Path
    tokenizer_cache_dir: Path
    hf_home: Path


def _paths(root: Path) -> HunyuanTestModel:
    return HunyuanTestModel(
        root=root,
        dit=root / "hunyuanimage2.1.safetensors",
        text_encoder=root / "qwen_2.5_vl_7b.safetensors",
        byt5=root / "byt5_small_glyphxl_fp16.safetensors",
        vae=root / "hunyuan_image_2.1_vae_fp16.safetensors",
        tokenizer_cache_dir=root / "tokenizers",
        hf_home=root / "hf_home",
    )


class _Built(Exception):
    """Stops a kohya loader once the model it builds has been captured."""


@contextlib.contextmanager
def _capturing(module: Any, name: str, into: dict[str, Any]) -> Iterator[None]:
    """While inside, ``module.name._from_config`` builds real weights and stops the loader with the model."""
    real = getattr(module, name)

    class Capture:
        @staticmethod
        def _from_config(config: Any, **kwargs: Any) -> Any:
            into[name] = real._from_config(config, **kwargs)
            raise _Built

    saved_empty = module.init_empty_weights
    setattr(module, name, Capture)
    module.init_empty_weights = contextlib.nullcontext
    try:
        yield
    except _Built:
        pass
    finally:
        setattr(module, name, real)
        module.init_empty_weights = saved_empty


def _save(tensors: dict[str, Any], path: Path) -> None:
    save_file: Any = importlib.import_module("safetensors.torch").save_file
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))


def _write_model(root: Path, sd_scripts: Path) -> None:
    paths = _paths(root)
    qwen_source = sd_scripts / QWEN_TOKENIZER_SOURCE
    if not (qwen_source / "vocab.json").is_file():
        raise LorabuildError(
            f"kohya's Qwen tokenizer files are not in {qwen_source}: is kohya checked out there?"
        )
    shrink_kohya(sd_scripts)
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    models: Any = importlib.import_module("library.hunyuan_image_models")
    vae_module: Any = importlib.import_module("library.hunyuan_image_vae")
    text: Any = importlib.import_module("library.hunyuan_image_text_encoder")

    qwen_dir = paths.tokenizer_cache_dir / QWEN_TOKENIZER_ID.replace("/", "_")
    byt5_dir = paths.tokenizer_cache_dir / BYT5_TOKENIZER_ID.replace("/", "_")
    transformers.Qwen2Tokenizer.from_pretrained(str(qwen_source)).save_pretrained(str(qwen_dir))
    transformers.ByT5Tokenizer().save_pretrained(str(byt5_dir))
    write_hub_cache(paths.hf_home, QWEN_TOKENIZER_ID, qwen_dir)
    write_hub_cache(paths.hf_home, BYT5_TOKENIZER_ID, byt5_dir)

    torch.manual_seed(SEED)
    _save(models.HYImageDiffusionTransformer("torch", False).state_dict(), paths.dit)
    _save(vae_module.HunyuanVAE2D().state_dict(), paths.vae)

    built: dict[str, Any] = {}
    with _capturing(text, "Qwen2_5_VLForConditionalGeneration", built):
        text.load_qwen2_5_vl(None, None, "cpu", state_dict={})
    qwen = built["Qwen2_5_VLForConditionalGeneration"].to(torch.bfloat16)
    renamed = {}
    for key, value in qwen.state_dict().items():  # kohya's load_qwen2_5_vl, backwards
        key = key.replace("model.language_model.", "model.", 1).replace("model.visual.", "visual.", 1)
        renamed[key] = value
    _save(renamed, paths.text_encoder)

    real_auto = text.AutoTokenizer
    text.AutoTokenizer = type(
        "Offline", (), {"from_pretrained": staticmethod(lambda *a, **k: transformers.ByT5Tokenizer())}
    )
    try:
        with _capturing(text, "T5ForConditionalGeneration", built):
            text.load_byt5(None, None, "cpu", state_dict={})
    finally:
        text.AutoTokenizer = real_auto
    encoder = built["T5ForConditionalGeneration"].get_encoder()
    text.add_special_token(transformers.ByT5Tokenizer(), encoder)
    byt5 = {}
    for key, value in encoder.state_dict().items():  # kohya's load_byt5, backwards
        byt5["shared.weight" if key == "embed_tokens.weight" else f"encoder.{key}"] = value.to(torch.float16)
    _save(byt5, paths.byt5)

    versions = {
        "hunyuan_test_model_version": HUNYUAN_TEST_MODEL_VERSION,
        "seed": SEED,
        "torch": torch.__version__,
    }
    (root / MARKER).write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")


def ensure_hunyuan_test_model(
    cache_dir: Path | None = None, sd_scripts: Path | None = None
) -> HunyuanTestModel:
    """Return the cached HunyuanImage test model, building it first if it is not there yet.

    Needs kohya's Python stack and its checkout; building shrinks kohya's sizes in this process.

    Raises:
        LorabuildError: kohya's files are missing, or a folder in the way is not a finished build.
    """
    cache_dir = (cache_dir or default_cache_dir()).expanduser().resolve()
    kohya = (sd_scripts or sd_scripts_dir()).expanduser().resolve()
    root = build_cached(
        cache_dir,
        HUNYUAN_TEST_MODEL_NAME,
        lambda folder: _write_model(folder, kohya),
        "the tiny HunyuanImage test model (seconds)",
    )
    return _paths(root)


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or find) the HunyuanImage test model and print its paths; the ``python -m`` entry point."""
    return model_main(
        argv,
        "python -m lorabuild.demo.hunyuanmodel",
        "Build (once) the tiny HunyuanImage 2.1 test model for kohya (run through tinyhunyuan.py).",
        ensure_hunyuan_test_model,
        ("dit", "text_encoder", "byt5", "vae", "tokenizer_cache_dir", "hf_home"),
    )


if __name__ == "__main__":
    sys.exit(main())
