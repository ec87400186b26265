"""Tiny segmentation models with the signatures of rembg's, and a dataset of subjects on busy backgrounds.

rembg's models take a float32 ``[1, 3, H, W]`` batch (``u2net``: input ``input.1`` at 320 px and seven
outputs ``[1, 1, 320, 320]``, the first being the mask; ``isnet-*``: input ``img`` at 1024 px;
BiRefNet: logits). :func:`write_segmenter` builds a model of that signature with onnx's helper API
(a few hundred bytes: a 1x1 convolution and a sigmoid) whose mask is the image's "redness",
``R - (G + B) / 2``: the test dataset draws red subjects on busy backgrounds without red
(:func:`busy_dataset`), so the mask finds them as a real model would.

:func:`signature_model` writes only a model's graph inputs and outputs, encoded by hand (no onnx
package needed): enough for lorabuild's reader and the check. :data:`FAKE_SEGMENT` stands in for
``lorabuild/kohya/segment.py`` where onnxruntime is not installed (the light test venv): the same
job file and progress lines, masks from the same redness computed with Pillow.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

Dims = Sequence[int | str]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _value_info(name: str, dims: Dims, element: int = 1) -> bytes:
    shape = b"".join(_field(1, _field(1, d) if isinstance(d, int) else _field(2, d.encode())) for d in dims)
    tensor = _field(1, element) + _field(2, shape)
    return _field(1, name.encode()) + _field(2, _field(1, tensor))


def signature_model(
    path: Path,
    inputs: Sequence[tuple[str, Dims]],
    outputs: Sequence[tuple[str, Dims]],
    weights: Sequence[str] = (),
    input_element: int = 1,
) -> Path:
    """Write an ONNX file holding only a graph's inputs and outputs (and named, empty weights)."""
    graph = _field(2, b"tiny")
    for name in weights:  # initializers: a name and some raw data to skip
        graph += _field(5, _field(1, 1) + _field(2, 1) + _field(8, name.encode()) + _field(9, b"\0" * 64))
    for name, dims in inputs:
        graph += _field(11, _value_info(name, dims, input_element))
    for name in weights:  # IR < 4 lists the weights among the inputs
        graph += _field(11, _value_info(name, [1]))
    for name, dims in outputs:
        graph += _field(12, _value_info(name, dims))
    model = _field(1, 8) + _field(2, b"tests") + _field(7, graph) + _field(8, _field(2, 17))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)
    return path


U2NET_OUTPUTS = [f"d{n}" for n in range(7)]


def u2net_signature(path: Path, side: int = 320) -> Path:
    """u2net's inputs and outputs, without a graph to run."""
    dims = [1, 1, side, side]
    return signature_model(path, [("input.1", [1, 3, side, side])], [(name, dims) for name in U2NET_OUTPUTS])


def write_segmenter(path: Path, side: int = 320, kind: str = "u2net", gain: float = 8.0) -> Path:
    """A runnable model of ``kind``'s signature (u2net: 7 outputs; isnet/birefnet: 1) whose mask is redness.

    The input is normalised by the kind's mean and deviation; the 1x1 convolution undoes neither
    exactly, which does not matter: the script min-max normalises the output. BiRefNet gives
    logits (no sigmoid here: the script applies it).
    """
    onnx = pytest.importorskip("onnx", reason="the tiny segmenter is built with onnx: pip install onnx")
    from onnx import TensorProto, helper

    name = {"u2net": "input.1", "birefnet": "input_image"}.get(kind, "img")
    nodes = [helper.make_node("Conv", [name, "w"], ["logits"])]
    outputs = ["d0"] if kind != "birefnet" else ["logits"]
    if kind != "birefnet":
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["d0"]))
    extra = U2NET_OUTPUTS[1:] if kind == "u2net" else []
    nodes += [helper.make_node("Identity", ["d0"], [out]) for out in extra]
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [gain, -gain / 2, -gain / 2])
    graph = helper.make_graph(
        nodes,
        f"tiny_{kind}",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 1, side, side]) for o in outputs + extra],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


SUBJECT = (220, 30, 40)
"""The red of every subject."""


def busy_dataset(
    folder: Path, count: int = 4, size: tuple[int, int] = (96, 128), seed: int = 0
) -> list[Path]:
    """``count`` PNG/JPEG images of a red figure (a disc over a box) on a busy, red-free background."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        image = Image.new("RGB", size, (rng.randrange(40, 200),) * 3)
        draw = ImageDraw.Draw(image)
        for _ in range(60):  # busy: rectangles and lines in greens, blues and greys
            x, y = rng.randrange(size[0]), rng.randrange(size[1])
            colour = (rng.randrange(0, 60), rng.randrange(60, 255), rng.randrange(60, 255))
            draw.rectangle([x, y, x + rng.randrange(4, 30), y + rng.randrange(4, 30)], fill=colour)
            draw.line(
                [rng.randrange(size[0]), 0, rng.randrange(size[0]), size[1]],
                fill=(colour[0], colour[2], colour[1]),
                width=2,
            )
        w, h = size
        cx = w // 2 + rng.randrange(-8, 9)
        draw.ellipse([cx - w // 6, h // 5, cx + w // 6, h // 5 + w // 3], fill=SUBJECT)
        draw.rectangle([cx - w // 5, h // 5 + w // 3, cx + w // 5, h * 4 // 5], fill=SUBJECT)
        path = folder / f"{n:03d}.{'jpg' if n % 2 else 'png'}"
        image.save(path, quality=95) if n % 2 else image.save(path)
        path.with_suffix(".txt").write_text("1girl, solo, outdoors", encoding="utf-8")
        paths.append(path)
    return paths


FAKE_SEGMENT = '''\
"""Stands in for lorabuild/kohya/segment.py without onnxruntime: masks are the images' redness."""
import json, os, sys
from pathlib import Path
from PIL import Image, ImageChops, ImageOps

job = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
with open(Path(job["model"]).with_suffix(".runs"), "a", encoding="utf-8") as log:
    log.write(f"{len(job['images'])}\\n")
for n, (source, orientation, out) in enumerate(job["images"], start=1):
    with Image.open(source) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB") if orientation != 1 else image.convert("RGB")
    r, g, b = rgb.split()
    mask = ImageChops.subtract(r, ImageChops.add(g, b, scale=2.0), scale=0.5).point(lambda v: 255 if v > 40 else 0)
    mask.save(out + ".tmp", format="PNG")
    os.replace(out + ".tmp", out)
    print(f"lorabuild-segment: {n}/{len(job['images'])}", flush=True)
'''


def runs(model: Path) -> list[int]:
    """How many images each run of :data:`FAKE_SEGMENT` on ``model`` was given."""
    log = model.with_suffix(".runs")
    return [int(line) for line in log.read_text(encoding="utf-8").split()] if log.exists() else []
