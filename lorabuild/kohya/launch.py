"""The launch command as data: one object that every rendering (train.sh, train.ps1,
``lorabuild train``, the Makefile) is made from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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
