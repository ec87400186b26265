"""Quantities as people read them (file sizes in the report and the install's listing)."""

from __future__ import annotations


def human_size(size: int) -> str:
    """``12.3 MB`` style sizes (decimal units, as file managers show them)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
