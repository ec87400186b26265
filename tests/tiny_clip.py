"""Scoring weights for the ``[pick] clip_model`` / ``aesthetic_model`` tests, made offline.

- :func:`write_clip`: a tiny random-weight CLIP (transformers' ``CLIPModel``, 16-number
  embeddings, 32 px pictures) saved as a Hugging Face folder, with the CLIP tokenizer rebuilt from
  open-clip-torch's BPE merges (:func:`lorabuild.demo.testmodel.build_tokenizer`) and an image
  processor. Needs torch, transformers and open-clip-torch (kohya's stack).
- :func:`write_head`: an aesthetic head as LAION's improved-aesthetic-predictor lays it out
  (``layers.0``, ``.2``, ``.4``... linear layers), random, of a given input width.
- :func:`write_shapes`: a safetensors file of zeros with the given tensor shapes, without torch:
  what the check reads (names and shapes) for the tests that need no kohya stack.
"""

from __future__ import annotations

import importlib
import itertools
import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

EMBED = 16
"""The tiny CLIP's embedding width."""


def write_shapes(path: Path, shapes: Mapping[str, Sequence[int]]) -> Path:
    """A real safetensors file of float32 zeros with ``shapes``."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 4
        for n in shape:
            size *= n
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * offset)
    return path


def head_shapes(width: int) -> dict[str, tuple[int, ...]]:
    """LAION's head's layers for embeddings of ``width`` (1024, 128, 64, 16, 1 outputs)."""
    sizes = [width, 1024, 128, 64, 16, 1]
    shapes: dict[str, tuple[int, ...]] = {}
    for index, (inputs, outputs) in zip((0, 2, 4, 6, 7), itertools.pairwise(sizes), strict=True):
        shapes[f"layers.{index}.weight"] = (outputs, inputs)
        shapes[f"layers.{index}.bias"] = (outputs,)
    return shapes


def fake_clip(folder: Path, *, tokenizer: bool = True, width: int = EMBED) -> Path:
    """A folder that has every file a CLIP folder needs, with zeros for weights (no torch needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "clip", "projection_dim": width}))
    write_shapes(
        folder / "model.safetensors",
        {"visual_projection.weight": (width, 32), "text_projection.weight": (width, 32)},
    )
    if tokenizer:
        (folder / "vocab.json").write_text("{}")
        (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "preprocessor_config.json").write_text("{}")
    return folder


def write_clip(folder: Path) -> Path:
    """The tiny random-weight CLIP folder (see the module docstring)."""
    from lorabuild.demo.testmodel import build_tokenizer  # lazy: needs open-clip-torch's BPE file

    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=EMBED,
    )
    transformers.CLIPModel(config).save_pretrained(str(folder), safe_serialization=True)
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(str(folder))
    build_tokenizer(folder)
    return folder


def write_head(path: Path, width: int = EMBED) -> Path:
    """A random aesthetic head taking ``width``-number embeddings (.safetensors or .pth by suffix)."""
    torch: Any = importlib.import_module("torch")
    torch.manual_seed(1)
    # Scaled as nn.Linear initialises: scores of the order of 1, whatever the depth.
    state = {name: torch.randn(*shape) / shape[-1] ** 0.5 for name, shape in head_shapes(width).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        importlib.import_module("safetensors.torch").save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return path
