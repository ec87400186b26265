"""The launch command as data: one object that every rendering (train.sh, train.ps1,
``lorabuild train``, the Makefile) is made from."""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorabuild.quoting import QuotingError, bash_quote, powershell_native_arg, powershell_quote


@dataclass(frozen=True)
class LaunchSpec:
    """How to start kohya for one build.

    Attributes:
        argv: The command, one argument per item; never a shell string. Paths in it are
            relative to ``cwd`` (the build folder) except those under ``$SD_SCRIPTS``,
            which start with the literal prefix ``SD_SCRIPTS_PREFIX``.
        env: Environment variables to set for the command.
        cwd: Working directory the argv is relative to, as a path relative to the build folder
            (always ``.``: scripts ``cd`` to their own folder first).
        origins: The recipe key each argv item comes from (``launch.accelerate_args.NAME``), or
            "" for what lorabuild writes itself; for messages, so not compared.
    """

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    cwd: str = "."
    origins: tuple[str, ...] = field(default=(), compare=False, repr=False)


# argv items that live inside the kohya checkout start with this marker; renderers replace it
# with the script's own variable ($SD_SCRIPTS in bash, $SdScripts in PowerShell) or a real path.
SD_SCRIPTS_PREFIX = "{sd_scripts}/"

ACCELERATE_OPTIONS_FILE = Path(__file__).resolve().parent / "data" / "accelerate_options.json"


@functools.cache
def accelerate_options() -> dict[str, dict[str, Any]]:
    """``accelerate launch``'s options at the pinned accelerate, by name (``tools/extract_accelerate_options.py``)."""
    document = json.loads(ACCELERATE_OPTIONS_FILE.read_text(encoding="utf-8"))
    options: dict[str, dict[str, Any]] = document["options"]
    return options


def check_accelerate_args(args: Mapping[str, object], managed: Mapping[str, str]) -> None:
    """Check ``[launch] accelerate_args`` against accelerate's real option list.

    Args:
        args: Option name (without ``--``) -> value; ``True`` writes a flag, ``False`` leaves it out.
        managed: Options lorabuild writes itself -> the recipe key that sets each.

    Raises:
        ValueError: The first unknown, managed or ill-typed option, saying how to fix it.
    """
    known = accelerate_options()
    for raw, value in args.items():
        name = raw.removeprefix("--").replace("-", "_")
        if name in managed:
            raise ValueError(f"{raw!r} is set by lorabuild: use {managed[name]} instead")
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{raw!r} is not an option of accelerate launch{hint}")
        option = known[name]
        if option["flag"] and not isinstance(value, bool):
            raise ValueError(f"{raw!r} is a flag: write true or false (got {value!r})")
        if not option["flag"] and isinstance(value, bool):
            raise ValueError(f"{raw!r} takes a value, not true/false")
        if option["choices"] and str(value) not in option["choices"]:
            raise ValueError(f"{raw!r} must be one of {', '.join(option['choices'])} (got {value!r})")


def accelerate_argv(args: Mapping[str, str | int | float | bool]) -> tuple[tuple[str, str], ...]:
    """``accelerate_args`` as argv items, in the recipe's order (flags set to false left out).

    Returns:
        ``(item, key)`` pairs: the argv item and the ``launch.accelerate_args`` key it comes from.
    """
    argv: list[tuple[str, str]] = []
    for raw, value in args.items():
        option = "--" + raw.removeprefix("--").replace("-", "_")
        key = f"launch.accelerate_args.{raw}"
        if value is True:
            argv.append((option, key))
        elif value is not False:
            argv += [(option, key), (str(value), key)]
    return tuple(argv)


def script_value_errors(spec: LaunchSpec) -> list[tuple[str, QuotingError]]:
    """Every value of ``spec`` that ``train.sh`` or ``train.ps1`` cannot carry exactly, and why.

    The same quoting functions that render the scripts (:mod:`lorabuild.render`) decide, so
    ``lorabuild check`` refuses exactly what compiling would: an argument goes through
    :func:`~lorabuild.quoting.bash_quote` and :func:`~lorabuild.quoting.powershell_native_arg`
    (the kohya script's own path, under ``$SD_SCRIPTS``, is a machine setting and is not checked
    here), an environment value through ``bash_quote`` and
    :func:`~lorabuild.quoting.powershell_quote`.

    Returns:
        ``(key, error)`` pairs: the recipe key the value comes from (``launch.env.NAME``, or
        the item's entry in :attr:`LaunchSpec.origins`) and the quoting error.
    """
    checks: list[tuple[str, str, tuple[Callable[[str], str], ...]]] = [
        (arg, origin, (bash_quote, powershell_native_arg))
        for arg, origin in zip(spec.argv, spec.origins or ("",) * len(spec.argv), strict=True)
        if not arg.startswith(SD_SCRIPTS_PREFIX)
    ]
    checks += [(value, f"launch.env.{name}", (bash_quote, powershell_quote)) for name, value in spec.env]
    found: list[tuple[str, QuotingError]] = []
    for value, key, quotes in checks:
        for quote in quotes:
            try:
                quote(value)
            except QuotingError as exc:
                found.append((key, exc))
                break
    return found
