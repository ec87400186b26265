"""Option values as kohya wrote them, turned into the values a recipe holds."""

from __future__ import annotations

import ast

from lorabuild.importer.model import Imported


def as_list(value: object) -> list[object]:
    """A list option's value as a list (one value as a list of one; None as none)."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def number(value: object) -> object:
    """A float option as a float (kohya's TOML dumps write ``1`` for ``1.0`` sometimes)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def typed_arg(text: str) -> str | int | float | bool:
    """A network_args value as the recipe holds it: it compiles back to the same string (``_arg``)."""
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        if str(number) == text:
            return number
    return text


def literal_arg(imp: Imported, key: str, text: str) -> object:
    """An optimizer_args value: kohya evaluates it as a Python literal (``ast.literal_eval``)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        imp.unrepresentable(
            f"optimizer_args {key}", f"{text!r} is not a Python literal (kohya stops on it): kept as a string"
        )
        return text
    if isinstance(value, tuple | list) and all(isinstance(v, int | float) for v in value):
        return [float(v) for v in value]
    if isinstance(value, str | int | float | bool):
        return value
    imp.unrepresentable(
        f"optimizer_args {key}", f"{text!r}: a recipe holds numbers, text, true/false or lists"
    )
    return text


def is_kohya_value(value: object) -> bool:
    """Whether a ``[kohya]`` table can hold the value (a scalar, or a list of one kind)."""
    if isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list):
        kinds = {type(v) for v in value}
        return len(kinds) <= 1 and kinds <= {str, int, float}
    return False
