"""The safetensors container's header, read and rewritten by hand (lorabuild never imports safetensors).

A safetensors file is an 8-byte little-endian length N, N bytes of JSON (the header: each tensor's
dtype, shape and ``data_offsets`` into the byte buffer, plus an optional ``__metadata__`` object of
string to string), then the byte buffer. The offsets count from the buffer's start, so a new header
in front of the same buffer leaves every tensor where it was. The format's rules kept here
(huggingface/safetensors, ``docs/source/metadata_parsing.mdx`` and the Rust crate's ``serialize``):
the header starts with ``{``, may be padded at its end with spaces, and is padded so that the buffer
starts on an 8-byte boundary (N a multiple of 8); ``__metadata__`` values are strings; readers refuse
a header over 100 MB. The AUTOMATIC1111 webui also asserts that the header starts with ``{"``
(``modules/sd_models.py`` ``read_metadata_from_safetensors``), so it is written without spaces.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_HEADER = 100_000_000
"""The largest header the safetensors library reads (``MAX_HEADER_SIZE`` in its Rust crate)."""

_CHUNK = 1 << 20


class HeaderError(ValueError):
    """The file is not a safetensors file lorabuild can rewrite."""


@dataclass(frozen=True)
class Header:
    """A safetensors file's header as read.

    Attributes:
        fields: The header's JSON object, in file order (tensor entries and ``__metadata__``).
        data_offset: Where the byte buffer starts in the file (8 + the header's length).
    """

    fields: dict[str, Any]
    data_offset: int

    @property
    def metadata(self) -> dict[str, str]:
        """The ``__metadata__`` object (empty when the file has none)."""
        value = self.fields.get("__metadata__")
        return dict(value) if isinstance(value, dict) else {}


def read_header(path: Path) -> Header:
    """The header of the safetensors file at ``path``, without reading its tensors.

    Raises:
        HeaderError: The file is too short, claims a header longer than itself or than the format
            allows, or its header is not a JSON object.
        OSError: The file cannot be read.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HeaderError(f"{path.name}: too short for a safetensors header")
        length = int.from_bytes(head, "little")
        if length > MAX_HEADER or 8 + length > size:
            raise HeaderError(f"{path.name}: its header length ({length} bytes) is not plausible")
        raw = f.read(length)
    try:
        fields = json.loads(raw)
    except ValueError as exc:
        raise HeaderError(f"{path.name}: its header is not JSON ({exc})") from exc
    if not isinstance(fields, dict):
        raise HeaderError(f"{path.name}: its header is not a JSON object")
    return Header(fields, 8 + length)


def header_bytes(header: Header, updates: Mapping[str, str]) -> bytes:
    """The length prefix and header for the same tensors with ``updates`` merged into ``__metadata__``.

    ``__metadata__`` comes first (as the safetensors library writes it); the tensor entries follow
    unchanged, in the file's order. The JSON is compact UTF-8 padded with spaces to a multiple of 8
    bytes, so the buffer that follows stays 8-byte aligned.

    Raises:
        HeaderError: The new header would be larger than readers accept.
    """
    metadata = {**header.metadata, **updates}
    fields: dict[str, Any] = {"__metadata__": metadata}
    fields.update((k, v) for k, v in header.fields.items() if k != "__metadata__")
    blob = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    if len(blob) > MAX_HEADER:
        raise HeaderError(f"the header would be {len(blob)} bytes; safetensors readers stop at {MAX_HEADER}")
    return len(blob).to_bytes(8, "little") + blob


def spliced_sha256(head: bytes, source: Path, offset: int) -> str:
    """SHA-256 of ``head`` followed by ``source``'s bytes from ``offset`` (a file with a new header)."""
    digest = hashlib.sha256(head)
    with source.open("rb") as f:
        f.seek(offset)
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
