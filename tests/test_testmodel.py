"""The offline CPU test model (lorabuild.demo.testmodel) and the synthetic dataset (lorabuild.demo.synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorabuild.demo import testmodel
from lorabuild.demo.synthetic import make_dataset
from lorabuild.problems import LorabuildError

REPO_ROOT = Path(__file__).resolve().parent.parent
SD_SCRIPTS = REPO_ROOT / "vendor" / "sd-scripts"

# What openai/clip-vit-large-patch14's tokenizer gives for this string (the Hugging Face docs'
# example), so the rebuilt tokenizer is checked against the real one, not only against open_clip.
KNOWN_ANSWER = ("a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407])

SAMPLES = [
    "uiharu_kazari, 1girl, solo, flower, hair_ornament, short_hair, brown_hair, smile",
    "Hello World!! It's 3:45pm, café naïve — 日本語のテキスト 🌸",
    "masterpiece, best quality, (red eyes:1.2), <lora:foo:0.8>",
    "  several   spaces\tand\nnewlines  ",
]


def test_importing_testmodel_is_cheap() -> None:
    import subprocess
    import sys

    heavy = "{'torch', 'diffusers', 'transformers', 'open_clip'}"
    code = f"import sys, lorabuild.demo.testmodel; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LORABUILD_CACHE", str(tmp_path))
    assert testmodel.default_cache_dir() == tmp_path
    monkeypatch.delenv("LORABUILD_CACHE")
    assert testmodel.default_cache_dir() == Path.home() / ".cache" / "lorabuild"


def test_rebuilt_tokenizer_matches_clip(tmp_path: Path) -> None:
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed (pip install lorabuild[train])"
    )
    simple = pytest.importorskip(
        "open_clip.tokenizer", reason="open-clip-torch is not installed (pip install lorabuild[train])"
    )
    testmodel.build_tokenizer(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408
    assert vocab["!"] == 0
    assert vocab["<|startoftext|>"] == 49406
    assert vocab["<|endoftext|>"] == 49407

    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
    assert len(tokenizer) == 49408
    assert tokenizer.model_max_length == 77
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    assert tokenizer.unk_token == "<|endoftext|>"

    text, ids = KNOWN_ANSWER
    assert tokenizer(text).input_ids == ids

    reference = simple.SimpleTokenizer()
    for sample in [text, *SAMPLES]:
        expected = [reference.sot_token_id, *reference.encode(sample), reference.eot_token_id]
        assert tokenizer(sample).input_ids == expected, sample


def test_build_tokenizer_without_open_clip_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(LorabuildError, match="open-clip-torch"):
        testmodel.build_tokenizer(tmp_path)


def test_synthetic_dataset_is_deterministic(tmp_path: Path) -> None:
    first = make_dataset(tmp_path / "a", n=4, size=64)
    second = make_dataset(tmp_path / "b", n=4, size=64)
    assert [p.name for p in first] == ["0000.png", "0001.png", "0002.png", "0003.png"]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert a.with_suffix(".txt").read_text() == b.with_suffix(".txt").read_text()

    captions = [p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in first]
    assert all(c.startswith("uiharu_kazari, 1girl, solo, ") for c in captions)
    assert len(set(captions)) > 1
    assert any("transparent_background" in c for c in captions)

    from PIL import Image

    with Image.open(first[0]) as image:
        assert image.size == (64, 64)
        assert image.mode == "RGBA"
        assert image.getchannel("A").getextrema() == (0, 255)  # transparent and opaque pixels


@pytest.mark.real_trainer
def test_test_model_builds_and_loads() -> None:
    if not (SD_SCRIPTS / "train_network.py").is_file():
        pytest.skip(f"kohya sd-scripts is not checked out at {SD_SCRIPTS}")
    for module in ("torch", "diffusers", "open_clip"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install lorabuild[train])")
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed (pip install lorabuild[train])"
    )
    CLIPTokenizer = transformers.CLIPTokenizer

    # Builds once (about a minute, 3.5 GB under $LORABUILD_CACHE or ~/.cache/lorabuild), then reuses.
    model = testmodel.ensure_test_model()
    assert testmodel.ensure_test_model() == model

    tokenizer = CLIPTokenizer.from_pretrained(
        str(model.tokenizer_cache_dir / testmodel.TOKENIZER_CACHE_SUBDIR)
    )
    text, ids = KNOWN_ANSWER
    assert tokenizer(text).input_ids == ids
    assert tokenizer.model_max_length == 77
    assert CLIPTokenizer.from_pretrained(str(model.model_dir / "tokenizer"))(text).input_ids == ids

    unet_config = json.loads((model.model_dir / "unet" / "config.json").read_text(encoding="utf-8"))
    assert unet_config["cross_attention_dim"] == 768
    assert unet_config["sample_size"] == 64
    assert unet_config["block_out_channels"] == [320, 640, 1280, 1280]
    encoder_config = json.loads(
        (model.model_dir / "text_encoder" / "config.json").read_text(encoding="utf-8")
    )
    assert (encoder_config["hidden_size"], encoder_config["num_hidden_layers"]) == (768, 2)
    assert (model.model_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
