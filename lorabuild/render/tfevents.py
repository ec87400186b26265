"""TensorBoard event files read without TensorBoard: TFRecord framing and the few protobuf fields of a scalar.

Each file is a TFRecord stream (``u64 length``, masked CRC-32C of the length, the bytes, masked
CRC-32C of the bytes) of ``tensorboard.Event`` protobuf messages. :func:`read_records` keeps every
intact record and says what was damaged (a CRC mismatch, a partial last record while the writer is
still at it); :func:`decode_event` decodes the fields that hold scalars (``simple_value`` and
scalar ``TensorProto`` values). :mod:`lorabuild.render.losslog` reads kohya's loss from them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# --- CRC-32C (Castagnoli), as TFRecord uses it ---------------------------------------------------


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """``data`` framed as one TFRecord (used by tests and fixtures to write event files)."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


@dataclass(frozen=True)
class Records:
    """The records of one TFRecord file, and what was wrong with it (empty when nothing)."""

    records: list[bytes]
    damage: str = ""


def read_records(path: Path) -> Records:
    """Every intact record of a TFRecord file.

    A record whose data CRC fails is skipped and reading goes on (its length was intact); a
    length whose CRC fails, or a partial last record, ends the file. Either way ``damage`` says
    what happened, naming the file; the good records are kept.
    """
    blob = path.read_bytes()
    records: list[bytes] = []
    problems: list[str] = []
    pos = 0
    while pos < len(blob):
        if len(blob) - pos < 12:
            problems.append(f"ends in a partial record ({len(blob) - pos} bytes) at byte {pos}")
            break
        header = blob[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", blob[pos + 8 : pos + 12])
        if masked_crc32c(header) != length_crc:
            problems.append(f"record length at byte {pos} fails its CRC; the rest of the file is unreadable")
            break
        end = pos + 12 + length + 4
        if end > len(blob):
            problems.append(
                f"ends in a partial record ({len(blob) - pos} of {end - pos} bytes) at byte {pos}"
            )
            break
        data = blob[pos + 12 : pos + 12 + length]
        (data_crc,) = struct.unpack("<I", blob[end - 4 : end])
        if masked_crc32c(data) != data_crc:
            problems.append(f"record at byte {pos} fails its CRC and was skipped")
        else:
            records.append(data)
        pos = end
    damage = ""
    if problems:
        damage = f"{path}: " + "; ".join(problems) + f" (kept {len(records)} good record(s))"
    return Records(records, damage)


# --- minimal protobuf decoding -------------------------------------------------------------------


class ProtobufError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint longer than 10 bytes")


def fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """The ``(field number, wire type, value)`` triples of a protobuf message.

    Varints come back as unsigned ints; 64- and 32-bit fields and length-delimited fields as
    their raw bytes.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ProtobufError("truncated field")
        yield number, wire, value


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# TensorFlow DataType enum values -> struct format of one little-endian element.
_DTYPES = {1: "<f", 2: "<d", 3: "<i", 9: "<q", 19: "<e"}  # float, double, int32, int64, half


_DT_BFLOAT16 = 14


def _tensor_scalar(buf: bytes) -> float | None:
    """The one value of a scalar ``TensorProto``; ``None`` for anything else."""
    dtype = 0
    values: list[float] = []
    content = b""
    dims = 0
    elements = 1
    for number, wire, value in fields(buf):
        if number == 1 and isinstance(value, int):
            dtype = value
        elif number == 2 and isinstance(value, bytes):  # TensorShapeProto: dim = 2 {size = 1}
            for n, _, dim in fields(value):
                if n == 2 and isinstance(dim, bytes):
                    dims += 1
                    for dn, _, size in fields(dim):
                        if dn == 1 and isinstance(size, int):
                            elements *= _int64(size)
        elif number == 4 and isinstance(value, bytes):
            content = value
        elif number in (5, 6) and isinstance(value, bytes):  # float_val / double_val
            fmt = "<f" if number == 5 else "<d"
            width = struct.calcsize(fmt)
            if wire == 2:  # packed
                values.extend(v for (v,) in struct.iter_unpack(fmt, value[: len(value) // width * width]))
            else:
                values.append(struct.unpack(fmt, value)[0])
        elif number == 13:  # half_val: IEEE half bits in int32 varints (packed or not)
            bits = _varints(value) if isinstance(value, bytes) else [value]
            values.extend(struct.unpack("<e", struct.pack("<H", b & 0xFFFF))[0] for b in bits)
        elif number in (7, 10):  # int_val / int64_val
            ints = _varints(value) if isinstance(value, bytes) else [value]
            values.extend(float(_int64(i)) for i in ints)
    if dims and elements != 1:
        return None
    if values:
        return values[0] if len(values) == 1 else None
    if content:
        if dtype == _DT_BFLOAT16 and len(content) == 2:
            return float(struct.unpack("<f", b"\0\0" + content)[0])
        element = _DTYPES.get(dtype)
        if element is not None and len(content) == struct.calcsize(element):
            return float(struct.unpack(element, content)[0])
    return None


def _varints(buf: bytes) -> list[int]:
    out = []
    pos = 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v)
    return out


@dataclass(frozen=True)
class ScalarEvent:
    """One scalar from an event file."""

    tag: str
    step: int
    value: float
    wall_time: float


def decode_event(buf: bytes) -> tuple[float, list[ScalarEvent]]:
    """The wall time and scalar values of one serialised ``tensorboard.Event``.

    Reads ``Event{wall_time=1, step=2, summary=5}``, ``Summary{value=1}`` and
    ``Summary.Value{tag=1, simple_value=2, tensor=8}``; other fields are skipped.
    """
    wall_time = 0.0
    step = 0
    summaries: list[bytes] = []
    for number, _, value in fields(buf):
        if number == 1 and isinstance(value, bytes) and len(value) == 8:
            wall_time = struct.unpack("<d", value)[0]
        elif number == 2 and isinstance(value, int):
            step = _int64(value)
        elif number == 5 and isinstance(value, bytes):
            summaries.append(value)
    events = []
    for summary in summaries:
        for number, _, value in fields(summary):
            if number != 1 or not isinstance(value, bytes):
                continue
            tag = ""
            scalar: float | None = None
            for vn, _, v in fields(value):
                if vn == 1 and isinstance(v, bytes):
                    tag = v.decode("utf-8", "replace")
                elif vn == 2 and isinstance(v, bytes) and len(v) == 4:
                    scalar = struct.unpack("<f", v)[0]
                elif vn == 8 and isinstance(v, bytes):
                    scalar = _tensor_scalar(v)
            if tag and scalar is not None:
                events.append(ScalarEvent(tag, step, float(scalar), wall_time))
    return wall_time, events
