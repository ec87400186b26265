"""Embed pictures and prompts with a local CLIP folder: a script run with kohya's Python, not imported.

Usage (a Python with torch, transformers and Pillow: kohya's)::

    python lorabuild/kohya/clipscore.py JOB.json

``JOB.json`` (written by :mod:`lorabuild.score.clip`) names the CLIP folder (``model``), the
aesthetic head or null (``aesthetic``), the pictures (``images``), the prompts (``texts``) and the
file to write (``out``). The folder is loaded strictly offline (``local_files_only``,
``HF_HUB_OFFLINE``): a file it lacks is an error, never a download. Each picture (upright by its
EXIF orientation, RGB) goes through the folder's image processor and ``get_image_features``, each
prompt through its tokenizer (cut at the text model's positions) and ``get_text_features``; both
are L2-normalised, so a dot product is their cosine. The aesthetic head is LAION's
improved-aesthetic-predictor MLP: its ``layers.N`` linear layers in order, with no activation
between them (as trained: dropout only), on the normalised image embedding.

``OUT`` is JSON: ``{"images": [{"embedding": [...], "aesthetic": x or null}, ...], "texts":
[[...], ...]}`` in the job's order, written to a temporary name and renamed. A line
``lorabuild-clip: N/TOTAL`` after each batch is the progress lorabuild shows.

torch and transformers are imported with :func:`importlib.import_module` at run time: lorabuild
never imports them itself (the import-linter contract in ``pyproject.toml``), and this file only
runs in kohya's process.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

PROGRESS = "lorabuild-clip: "
"""The progress line's prefix."""

BATCH = 8
"""Pictures embedded at once."""


def _head(torch: Any, file: str) -> list[tuple[Any, Any]]:
    """The aesthetic head's linear layers, in order."""
    if file.lower().endswith(".safetensors"):
        state = importlib.import_module("safetensors.torch").load_file(file)
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    indices = sorted(int(k.split(".")[1]) for k in state if k.startswith("layers.") and k.endswith(".weight"))
    return [(state[f"layers.{i}.weight"].float(), state.get(f"layers.{i}.bias", None)) for i in indices]


def main(argv: list[str]) -> int:
    """Embed every picture and prompt of the job file ``argv[0]``."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    image_module: Any = importlib.import_module("PIL.Image")
    image_ops: Any = importlib.import_module("PIL.ImageOps")
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    folder = job["model"]
    model = transformers.CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    processor = transformers.CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    head = _head(torch, job["aesthetic"]) if job.get("aesthetic") else None
    images: list[dict[str, Any]] = []
    paths = job["images"]
    with torch.no_grad():
        for start in range(0, len(paths), BATCH):
            batch = []
            for path in paths[start : start + BATCH]:
                with image_module.open(path) as opened:
                    opened.load()
                    batch.append(image_ops.exif_transpose(opened).convert("RGB"))
            pixels = processor(images=batch, return_tensors="pt")["pixel_values"]
            embeds = model.get_image_features(pixel_values=pixels).float()
            embeds = embeds / embeds.norm(dim=-1, keepdim=True)
            scores: list[float | None] = [None] * len(batch)
            if head is not None:
                x = embeds
                for weight, bias in head:
                    x = x @ weight.T + (bias.float() if bias is not None else 0)
                scores = [float(v) for v in x[:, 0]]
            for embed, score in zip(embeds, scores, strict=True):
                images.append({"embedding": [round(float(v), 6) for v in embed], "aesthetic": score})
            print(f"{PROGRESS}{len(images)}/{len(paths)}", flush=True)
        texts = []
        if job["texts"]:
            length = int(model.config.text_config.max_position_embeddings)
            tokens = tokenizer(
                job["texts"], padding=True, truncation=True, max_length=length, return_tensors="pt"
            )
            features = model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            ).float()
            features = features / features.norm(dim=-1, keepdim=True)
            texts = [[round(float(v), 6) for v in row] for row in features]
    out = job["out"]
    tmp = f"{out}.tmp"
    Path(tmp).write_text(json.dumps({"images": images, "texts": texts}), encoding="utf-8")
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
