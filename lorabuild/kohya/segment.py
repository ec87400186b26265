"""Run an ONNX segmentation model over images: a script run with kohya's Python, not imported.

Usage (a Python with numpy, onnxruntime and Pillow: kohya's)::

    python lorabuild/kohya/segment.py JOB.json

``JOB.json`` (written by :mod:`lorabuild.build.cutout`) names the model, how to feed it
(:class:`lorabuild.probe.segmentation.Segmenter`: input name and size, mean, deviation, whether
the output is logits) and the images as ``[source, EXIF orientation, mask file]``. For each image
it applies the orientation, feeds the model as rembg does (resize to the input size, scale by the
brightest value, normalise, channels first), takes output 0's first channel, min-max normalises it
(after a sigmoid for logits) and writes it, resized back to the image's size, as an 8-bit
grey PNG: the mask, which lorabuild applies, thresholds and crops itself. A mask is written to a
temporary name and renamed, so a run stopped half-way leaves no half mask. A line
``lorabuild-segment: N/TOTAL`` after each image is the progress lorabuild shows.

numpy and onnxruntime are imported with :func:`importlib.import_module` at run time: lorabuild
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

PROGRESS = "lorabuild-segment: "
"""The progress line's prefix."""

# EXIF orientation -> PIL.Image.Transpose member names (as lorabuild.probe.imagefix).
_TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


def main(argv: list[str]) -> int:
    """Segment every image of the job file ``argv[0]``."""
    np: Any = importlib.import_module("numpy")
    ort: Any = importlib.import_module("onnxruntime")
    image_module: Any = importlib.import_module("PIL.Image")
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(job["model"], options, providers=["CPUExecutionProvider"])
    mean = np.array(job["mean"], dtype=np.float32)
    std = np.array(job["std"], dtype=np.float32)
    size = (int(job["width"]), int(job["height"]))
    items = job["images"]
    for n, (source, orientation, out) in enumerate(items, start=1):
        with image_module.open(source) as opened:
            opened.load()
            image = opened
            transpose = _TRANSPOSE.get(int(orientation))
            if transpose is not None:
                image = image.transpose(getattr(image_module.Transpose, transpose))
            rgb = image.convert("RGB")
        pixels = np.asarray(rgb.resize(size, image_module.Resampling.LANCZOS), dtype=np.float32)
        pixels = pixels / max(float(pixels.max()), 1e-6)
        batch = ((pixels - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        output = np.asarray(session.run(None, {job["input"]: batch})[0], dtype=np.float32)
        prediction = output.reshape(output.shape[0], -1, *output.shape[-2:])[0, 0]
        if job["sigmoid"]:
            prediction = 1.0 / (1.0 + np.exp(-prediction))
        low, high = float(prediction.min()), float(prediction.max())
        prediction = (prediction - low) / (high - low) if high > low else np.zeros_like(prediction)
        mask = image_module.fromarray((prediction * 255.0 + 0.5).clip(0, 255).astype(np.uint8), "L")
        mask = mask.resize(rgb.size, image_module.Resampling.LANCZOS)
        tmp = f"{out}.tmp"
        mask.save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, out)
        print(f"{PROGRESS}{n}/{len(items)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
