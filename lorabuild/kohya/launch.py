"""The launch command as data: one object that every rendering (train.sh, train.ps1,
``lorabuild train``, the Makefile) is made from."""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    """

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    cwd: str = "."


# argv items that live inside the kohya checkout start with this marker; renderers replace it
# with the script's own variable ($SD_SCRIPTS in bash, $SdScripts in PowerShell) or a real path.
SD_SCRIPTS_PREFIX = "{sd_scripts}/"

ACCELERATE_OPTIONS_FILE = Path(__file__).resolve().parent.parent / "data" / "accelerate_options.json"


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


def accelerate_argv(args: Mapping[str, str | int | float | bool]) -> tuple[str, ...]:
    """``accelerate_args`` as argv items, in the recipe's order (flags set to false left out)."""
    argv: list[str] = []
    for raw, value in args.items():
        option = "--" + raw.removeprefix("--").replace("-", "_")
        if value is True:
            argv.append(option)
        elif value is not False:
            argv += [option, str(value)]
    return tuple(argv)
