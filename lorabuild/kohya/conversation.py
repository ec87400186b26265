"""What a process run's ``answer`` callback returns: the vocabulary of talking to a child on its stdin.

Apart from :mod:`lorabuild.kohya.runner` (which starts processes) so that what only describes a
conversation (the FLUX grid renderer's) loads without the process seam, as ``lorabuild check`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """What a run's ``answer`` callback writes to the child's standard input after an output line.

    Attributes:
        text: Written as UTF-8 and flushed at once (include the ``\\n`` a line needs).
        close: Close the child's stdin after ``text``: nothing more is answered.
    """

    text: str = ""
    close: bool = False


Answer = Callable[[str], Reply | None]
"""Sees each output line of the child (after ``on_line``); returns what to write to its stdin, or None."""
