"""The launch command as data: one object that every rendering (train.sh, train.ps1,
``lorabuild train``, the Makefile) is made from."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lorabuild.render.quoting import QuotingError, bash_quote, powershell_native_arg, powershell_quote


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
