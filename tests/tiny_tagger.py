"""A tiny WD14-shaped tagger that kohya's ``tag_images_by_wd14_tagger.py --onnx`` loads as a real one.

kohya reads, from ``<model_dir>/<repo_id>/``:

- ``model.onnx``: input 0 is a float32 batch of BGR images in 0-255, ``[N, 448, 448, 3]`` (NHWC;
  kohya takes the batch size from dimension 0 and keeps its own when that is symbolic); output 0
  is ``[N, 4 + tags]`` probabilities: the four ratings, then one per general and character tag in
  ``selected_tags.csv`` order (no sigmoid is applied in this format).
- ``selected_tags.csv``: header ``tag_id,name,category,count``; category 9 rows are the ratings,
  0 general tags, 4 character tags. kohya indexes general tags first, then character tags, so the
  csv lists them in that order.

This model's probabilities are a linear function of the image's mean colour, so a test can
choose images that give known tags: ``probability = bias + weight . (B, G, R) / 255``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

IMAGE_SIZE = 448  # kohya's IMAGE_SIZE for WD14 models

# (name, category, bias, weight on (B, G, R) mean in 0..1)
RATINGS = [("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9)]
TAGS: list[tuple[str, int, float, tuple[float, float, float]]] = [
    ("1girl", 0, 0.9, (0.0, 0.0, 0.0)),  # always
    ("red_theme", 0, 0.0, (0.0, 0.0, 0.9)),  # red images
    ("blue_theme", 0, 0.0, (0.9, 0.0, 0.0)),  # blue images
    ("short_hair", 0, 0.5, (0.0, 0.0, 0.0)),  # between the usual thresholds
    ("watermark", 0, 0.95, (0.0, 0.0, 0.0)),  # always: the undesired tag
    ("uiharu_kazari", 4, 0.9, (0.0, 0.0, 0.0)),  # a character, above 0.85
    ("misaka_mikoto", 4, 0.0, (0.0, 0.0, 0.7)),  # a character on red images, below 0.85
]


def write_tagger(folder: Path) -> Path:
    """Write ``model.onnx`` and ``selected_tags.csv`` into ``folder``; return it."""
    onnx = pytest.importorskip("onnx", reason="the tiny tagger is built with onnx: pip install onnx")
    from onnx import TensorProto, helper

    folder.mkdir(parents=True, exist_ok=True)
    outputs = len(RATINGS) + len(TAGS)
    weights = [[0.0] * outputs for _ in range(3)]
    bias = [0.9, 0.05, 0.03, 0.02]  # "general" rating
    for j, (_, _, b, w) in enumerate(TAGS, start=len(RATINGS)):
        bias.append(b)
        for channel in range(3):
            weights[channel][j] = w[channel]
    graph = helper.make_graph(
        [
            # mean colour per image: [N, 448, 448, 3] -> [N, 3]
            helper.make_node("ReduceMean", ["input_1:0"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("Mul", ["mean", "scale"], ["unit"]),
            helper.make_node("MatMul", ["unit", "weights"], ["logits"]),
            helper.make_node("Add", ["logits", "bias"], ["predictions_sigmoid"]),
        ],
        "tiny_wd14_tagger",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["N", IMAGE_SIZE, IMAGE_SIZE, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["N", outputs])],
        initializer=[
            helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 255]),
            helper.make_tensor(
                "weights", TensorProto.FLOAT, [3, outputs], [v for row in weights for v in row]
            ),
            helper.make_tensor("bias", TensorProto.FLOAT, [outputs], bias),
        ],
    )
    # Opset 13 and IR 8 load in every onnxruntime kohya's requirements allow.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    with (folder / "selected_tags.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category) in enumerate([*RATINGS, *((n, c) for n, c, _, _ in TAGS)]):
            writer.writerow([9000 + i, name, category, 100])
    return folder
