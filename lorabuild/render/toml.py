"""A small, deterministic TOML writer for the files kohya reads.

kohya parses its TOML with the ``toml`` package (0.10.2). Writing the files ourselves keeps them
readable (a comment header, one section per topic, keys in a meaningful order) and exact:
strings go through :func:`lorabuild.render.quoting.toml_basic_string`, floats keep a decimal point or
exponent so kohya sees a float where its voluptuous schema demands one, and the same data always
gives the same bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from lorabuild.render.quoting import comment_text, toml_basic_string

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def key(name: str) -> str:
    """A TOML key: bare when it can be, else a basic string."""
    return name if _BARE_KEY.match(name) else toml_basic_string(name)


_key = key


def value(v: Any) -> str:
    """One TOML value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"TOML cannot hold {v}")
        text = repr(v)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(v, str):
        return toml_basic_string(v)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, Sequence):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def dumps(doc: Mapping[str, Any], header: str = "") -> str:
    """Serialise ``doc``: scalars first, then ``[tables]`` and ``[[arrays of tables]]`` in order.

    Args:
        doc: The document; nested mappings become tables, lists of mappings arrays of tables.
        header: Comment lines put at the top, separated by ``\\n``; each is prefixed with ``# ``
            and made one visible line by :func:`~lorabuild.render.quoting.comment_text` (a TOML comment
            may not hold a control character, and a line break would end it).
    """
    lines = [f"# {comment_text(line)}".rstrip() for line in header.split("\n")] if header else []
    _emit(doc, (), lines)
    return "\n".join(lines).strip("\n") + "\n"


def _emit(table: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    for k, v in table.items():
        if not isinstance(v, Mapping) and not _is_table_array(v):
            lines.append(f"{_key(k)} = {value(v)}")
    for k, v in table.items():
        name = ".".join(_key(p) for p in (*path, k))
        if isinstance(v, Mapping):
            lines.extend(["", f"[{name}]"])
            _emit(v, (*path, k), lines)
        elif _is_table_array(v):
            for item in v:
                lines.extend(["", f"[[{name}]]"])
                _emit(item, (*path, k), lines)
