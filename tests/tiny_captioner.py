"""Tiny BLIP and GIT captioners that kohya's ``make_captions.py`` / ``make_captions_by_git.py`` load as real ones.

- BLIP (``[captions.autotag] tagger = "blip"``): a model folder with ``model_large_caption.pth`` (a
  random-weight checkpoint of :mod:`lorabuild.demo.tinyblip`'s sizes, written by that launcher in
  kohya's Python) and ``bert-base-uncased/`` (a BERT tokenizer of :data:`WORDS`). kohya's script runs
  through the launcher (``LORABUILD_SCRIPT_WRAPPER``), which shrinks BLIP's hard-coded ViT-large.
- GIT (``tagger = "git"``): a transformers folder (``GitForCausalLM`` with a one-layer text decoder
  and image encoder, a ``GitProcessor`` of a BERT tokenizer and a 32-px CLIP image processor) that
  ``from_pretrained`` loads as it is: kohya hard-codes nothing of GIT's size.

Random weights caption with random words of :data:`WORDS`; the tests check where the sentences go.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorabuild.kohya.tagging import _tokenizer_cache

REPO = Path(__file__).resolve().parent.parent
TINYBLIP = REPO / "lorabuild" / "demo" / "tinyblip.py"

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["a", "picture", "of", "girl", "red", "dress", "standing", "in", "field", "with", "flowers", "sky"]


def write_bert_tokenizer(folder: Path) -> Path:
    """A lower-casing BERT WordPiece tokenizer of :data:`WORDS` (what BLIP and GIT use)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}),
        encoding="utf-8",
    )
    return folder


def write_blip(folder: Path, sd_scripts: Path) -> Path:
    """A tiny BLIP model folder (weights written by the launcher in this Python, which needs kohya's stack)."""
    pytest.importorskip("timm", reason="kohya's BLIP imports timm (pip install timm)")
    pytest.importorskip("fairscale", reason="kohya's BLIP imports fairscale (pip install fairscale)")
    tokenizer = write_bert_tokenizer(folder / "bert-base-uncased")
    hub = _tokenizer_cache(folder.parent / f"{folder.name}-hub", tokenizer)
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(hub),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(sd_scripts), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            str(TINYBLIP),
            "--write-weights",
            str(folder / "model_large_caption.pth"),
            str(sd_scripts),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def write_git(folder: Path) -> Path:
    """A tiny GIT model folder, saved with transformers' ``save_pretrained``."""
    transformers = pytest.importorskip("transformers", reason="GIT is built with transformers")
    tokenizer = transformers.BertTokenizer(str(write_bert_tokenizer(folder / "tok") / "vocab.txt"))
    images = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = transformers.GitProcessor(image_processor=images, tokenizer=tokenizer)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = transformers.GitConfig(
        vision_config={**vision, "image_size": 32, "patch_size": 16},
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    import torch

    torch.manual_seed(0)
    model = transformers.GitForCausalLM(config)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder
