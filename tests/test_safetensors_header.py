"""render/safetensors_header: a safetensors header read and rewritten by hand, the tensors untouched."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import pytest

from lorabuild.render.safetensors_header import (
    MAX_HEADER,
    Header,
    HeaderError,
    header_bytes,
    read_header,
    spliced_sha256,
)


def unaligned_file(path: Path) -> bytes:
    """A safetensors file whose header is not padded (older writers), with two real tensors."""
    header = {
        "b": {"dtype": "F16", "shape": [3], "data_offsets": [8, 14]},
        "__metadata__": {"ss_output_name": "x", "format": "pt"},
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    }
    blob = json.dumps(header).encode()
    blob += b"" if len(blob) % 8 else b" "  # a length that is not a multiple of 8
    tensors = struct.pack("<2f", 1.5, -2.0) + bytes(range(6))
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + tensors)
    return tensors


def test_new_metadata_in_front_of_the_same_buffer(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    tensors = unaligned_file(path)
    found = read_header(path)
    assert found.metadata == {"ss_output_name": "x", "format": "pt"}
    head = header_bytes(found, {"modelspec.trigger_phrase": "初春飾利", "format": "pt"})
    length = int.from_bytes(head[:8], "little")
    assert length == len(head) - 8 and length % 8 == 0  # the buffer starts 8-byte aligned
    assert head[8:].startswith(b'{"__metadata__":{')  # no space after "{": the webui asserts it
    fields = json.loads(head[8:])
    assert list(fields) == ["__metadata__", "b", "a"]  # the tensor entries in the file's order
    assert fields["__metadata__"] == {
        "ss_output_name": "x",
        "format": "pt",
        "modelspec.trigger_phrase": "初春飾利",
    }
    assert fields["a"] == {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    rebuilt = tmp_path / "y.safetensors"
    rebuilt.write_bytes(head + path.read_bytes()[found.data_offset :])
    assert rebuilt.read_bytes()[len(head) :] == tensors
    assert read_header(rebuilt).metadata["modelspec.trigger_phrase"] == "初春飾利"
    assert spliced_sha256(head, path, found.data_offset) == hashlib.sha256(rebuilt.read_bytes()).hexdigest()


def test_a_file_without_metadata_gets_some(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    blob = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\x07")
    head = header_bytes(read_header(path), {"k": "v"})
    assert json.loads(head[8:])["__metadata__"] == {"k": "v"}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\x01\x00", "too short for a safetensors header"),
        (struct.pack("<Q", 1000) + b"{}", "header length (1000 bytes) is not plausible"),
        (struct.pack("<Q", 4) + b"nope", "its header is not JSON"),
        (struct.pack("<Q", 2) + b"[]", "its header is not a JSON object"),
    ],
)
def test_what_is_not_a_safetensors_file(tmp_path: Path, data: bytes, says: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(HeaderError, match=re.escape(says)):
        read_header(path)


def test_a_header_past_the_readers_limit_is_refused() -> None:
    with pytest.raises(HeaderError, match="safetensors readers stop at"):
        header_bytes(Header({}, 8), {"ssmd_cover_images": "x" * MAX_HEADER})
