"""The launch command as data: one object that every rendering (train.sh, train.ps1,
``lorabuild train``, the Makefile) is made from."""

from __future__ import annotations

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
