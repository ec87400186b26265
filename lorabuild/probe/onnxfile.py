"""An ONNX model's inputs and outputs, read from the file without onnx or onnxruntime.

An ``.onnx`` file is one protobuf ``ModelProto``. Its graph (field 7) holds the nodes, the
weights (``initializer``, most of the file) and the ``ValueInfoProto`` of each input (11) and
output (12): a name and a tensor type (element type and dimensions, each a number or a symbolic
name). :func:`read_signature` walks the protobuf by its field tags and lengths, seeking past
everything else, so a 170 MB u2net costs a few hundred small reads and about a millisecond:
the check can tell a model that does not fit before anything is staged, without kohya's stack.

Older files (IR version below 4) list the weights among the graph's inputs too; those are
dropped by name, which needs each initializer's name (``TensorProto`` field 8) but not its data.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# onnx.TensorProto.DataType values (the ones a segmentation model uses, for messages).
ELEMENT_TYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}

# Field numbers in onnx.proto.
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 5, 11, 12
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR = 1
_TENSOR_ELEM, _TENSOR_SHAPE = 1, 2
_SHAPE_DIM = 1
_DIM_VALUE, _DIM_PARAM = 1, 2
_INITIALIZER_NAME = 8

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class OnnxFileError(ValueError):
    """The file is not an ONNX model lorabuild can read."""


Dim = int | str
"""A dimension: its size, or the symbolic name of a dynamic one (``batch``; ``?`` when unnamed)."""


@dataclass(frozen=True)
class Tensor:
    """One graph input or output."""

    name: str
    element_type: int
    shape: tuple[Dim, ...]

    def describe(self) -> str:
        """``float32[1, 3, 320, 320]``."""
        kind = ELEMENT_TYPES.get(self.element_type, f"type {self.element_type}")
        return f"{kind}[{', '.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class Signature:
    """A model's graph inputs (weights left out) and outputs, in order."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


def read_signature(path: Path) -> Signature:
    """Read the inputs and outputs of the ONNX model at ``path``.

    Raises:
        OSError: The file cannot be read.
        OnnxFileError: It is not an ONNX model (or its graph has no inputs or outputs).
    """
    with path.open("rb") as file:
        size = path.stat().st_size
        graph: tuple[int, int] | None = None
        for field, _, value in _fields(file, 0, size):
            if field == _MODEL_GRAPH and isinstance(value, tuple):
                graph = value
        if graph is None:
            raise OnnxFileError("not an ONNX model (no graph found)")
        start, length = graph
        inputs: list[Tensor] = []
        outputs: list[Tensor] = []
        weights: set[str] = set()
        for field, _, value in _fields(file, start, start + length):
            if not isinstance(value, tuple):
                continue
            if field in (_GRAPH_INPUT, _GRAPH_OUTPUT):
                tensor = _value_info(_read(file, *value))
                (inputs if field == _GRAPH_INPUT else outputs).append(tensor)
            elif field == _GRAPH_INITIALIZER:
                name = _initializer_name(file, *value)
                if name is not None:
                    weights.add(name)
    inputs = [t for t in inputs if t.name not in weights]
    if not inputs or not outputs:
        raise OnnxFileError("not an ONNX model (its graph has no inputs or no outputs)")
    return Signature(tuple(inputs), tuple(outputs))


def _read(file: BinaryIO, start: int, length: int) -> bytes:
    file.seek(start)
    data = file.read(length)
    if len(data) != length:
        raise OnnxFileError("not an ONNX model (a field runs past the end of the file)")
    return data


def _varint(file: BinaryIO) -> int:
    result = shift = 0
    while True:
        byte = file.read(1)
        if not byte:
            raise OnnxFileError("not an ONNX model (it ends inside a field)")
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7
        if shift > 63:
            raise OnnxFileError("not an ONNX model (a malformed number)")


def _fields(file: BinaryIO, start: int, end: int) -> Iterator[tuple[int, int, int | tuple[int, int]]]:
    """``(field, wire type, value)`` of each field between ``start`` and ``end``; a length-delimited
    field's value is its ``(offset, length)``, its bytes skipped."""
    position = start
    while position < end:
        file.seek(position)
        key = _varint(file)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise OnnxFileError("not an ONNX model (field number 0)")
        if wire == _VARINT:
            value: int | tuple[int, int] = _varint(file)
            position = file.tell()
        elif wire == _LEN:
            length = _varint(file)
            offset = file.tell()
            value = (offset, length)
            position = offset + length
        elif wire in (_I64, _I32):
            position = file.tell() + (8 if wire == _I64 else 4)
            value = 0
        else:
            raise OnnxFileError(f"not an ONNX model (wire type {wire})")
        if position > end:
            raise OnnxFileError("not an ONNX model (a field runs past its message)")
        yield field, wire, value


def _message(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    buffer = io.BytesIO(data)
    for field, wire, value in _fields(buffer, 0, len(data)):
        yield field, wire, (_read(buffer, *value) if isinstance(value, tuple) else value)


def _value_info(data: bytes) -> Tensor:
    name, element = "", 0
    shape: tuple[Dim, ...] = ()
    for field, _, value in _message(data):
        if field == _VALUE_NAME and isinstance(value, bytes):
            name = value.decode("utf-8", "replace")
        elif field == _VALUE_TYPE and isinstance(value, bytes):
            element, shape = _tensor_type(value)
    return Tensor(name, element, shape)


def _tensor_type(data: bytes) -> tuple[int, tuple[Dim, ...]]:
    for field, _, value in _message(data):
        if field == _TYPE_TENSOR and isinstance(value, bytes):
            element, dims = 0, []
            for inner, _, item in _message(value):
                if inner == _TENSOR_ELEM and isinstance(item, int):
                    element = item
                elif inner == _TENSOR_SHAPE and isinstance(item, bytes):
                    dims = [_dim(d) for f, _, d in _message(item) if f == _SHAPE_DIM and isinstance(d, bytes)]
            return element, tuple(dims)
    return 0, ()  # a sequence or map: no tensor a segmentation model uses


def _dim(data: bytes) -> Dim:
    for field, _, value in _message(data):
        if field == _DIM_VALUE and isinstance(value, int):
            return value
        if field == _DIM_PARAM and isinstance(value, bytes):
            return value.decode("utf-8", "replace") or "?"
    return "?"


def _initializer_name(file: BinaryIO, start: int, length: int) -> str | None:
    for field, wire, value in _fields(file, start, start + length):
        if field == _INITIALIZER_NAME and wire == _LEN and isinstance(value, tuple):
            return _read(file, *value).decode("utf-8", "replace")
    return None
