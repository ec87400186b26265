"""Problems found in a recipe or its files, and the one exception that carries them.

Every check in lorabuild reports :class:`Problem` values instead of raising, so that a user
sees every problem at once. The CLI turns a :class:`RecipeError` into exit status 2 and prints
each problem as ``FILE: KEY: MESSAGE`` (see :func:`format_problem`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    """How bad a problem is: errors stop the build, warnings do not unless ``--strict``."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, its dataset or its environment.

    Attributes:
        key: Dotted key path inside the recipe (``dataset.subsets[0].repeats``), or a file
            path for problems found in files the recipe points at; empty when neither applies.
        message: What is wrong and how to fix it, as one or two sentences.
        severity: Error or warning.
        file: The recipe file (or other file) the problem belongs to; filled in by the loader.
    """

    key: str
    message: str
    severity: Severity = Severity.ERROR
    file: str = ""

    def at(self, file: str) -> Problem:
        """Return this problem attributed to ``file`` unless it already names one."""
        return self if self.file else Problem(self.key, self.message, self.severity, file)


def error(key: str, message: str) -> Problem:
    """An error at ``key``."""
    return Problem(key, message, Severity.ERROR)


def warning(key: str, message: str) -> Problem:
    """A warning at ``key``."""
    return Problem(key, message, Severity.WARNING)


def format_problem(problem: Problem) -> str:
    """Render ``file: key: message`` (warnings are marked), leaving out empty parts.

    The line is made one visible line (:func:`visible`): a file or folder name may hold a line
    break, which would otherwise split one problem into several lines of output.
    """
    parts = [p for p in (problem.file, problem.key) if p]
    text = problem.message if problem.severity is Severity.ERROR else f"warning: {problem.message}"
    return visible(": ".join([*parts, text]))


def visible(text: str) -> str:
    """Write ``text`` as one visible line: for a message, or for a comment in bash, PowerShell or TOML.

    Every character that ``str.isprintable()`` rejects is escaped the way Python writes it in a
    string literal (``\\n``, ``\\r``, ``\\t``, ``\\x01``, ``\\x85``, ``\\u2028``, ``\\u202e``, a lone
    surrogate as ``\\udcff``); everything else, backslashes and non-ASCII text included, is kept.
    :mod:`lorabuild.render.quoting` ("Comments") says why that is enough in each file type, where
    this is ``comment_text``.

    Args:
        text: Any text: a recipe path, a build name, a command line.

    Returns:
        Text without line breaks or control characters, e.g. ``evil\\necho PWNED.toml`` for a file
        name with a newline in it. Never raises.
    """
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ``did you mean 'x'?`` hint for the closest candidate, or an empty string."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


class LorabuildError(Exception):
    """Base of every error lorabuild reports to the user without a traceback."""

    exit_code = 1


class RecipeError(LorabuildError):
    """A recipe (or what it points at) has errors; carries all of them."""

    exit_code = 2

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(format_problem(p) for p in self.problems))


def errors_of(problems: Iterable[Problem]) -> list[Problem]:
    """The problems that are errors."""
    return [p for p in problems if p.severity is Severity.ERROR]
