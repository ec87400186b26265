"""A progress line for long work on a terminal: ``masks  120/400  30%  9.8/s  ETA 0:28``, redrawn in place.

kohya's users know tqdm's bars; lorabuild's own long steps (background removal, decoding new
images, staging copies and conversions) show the same facts on one line of standard error: the
step, done out of total, the rate and the time left, rewritten in place with a carriage return
at most every :data:`INTERVAL` seconds, and ended with a newline and the step's time once it is
done. A new step ends the line of the one before.

Only on a terminal: where standard error is a pipe or a file (CI, ``2> log``) a :class:`Meter`
writes nothing at all, so logs and tests see exactly what they saw before. Forty lines, not a
dependency: tqdm would be one more package in lorabuild's light install for a line of text.

A :class:`Meter` is a :data:`Progress`: work reports ``(step, done, total)`` to it and never
learns whether anything is drawn.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

Progress = Callable[[str, int, int], None]
"""Told ``(step, done, total)`` as long work advances."""

INTERVAL = 0.1
"""Seconds between redraws (the last one is always drawn)."""

_CLEAR = "\r\x1b[K"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Meter:
    """Draws :data:`Progress` reports as one line updated in place, on a terminal only.

    Args:
        stream: Where to draw (default: standard error).
        enabled: Draw even when ``stream`` is not a terminal (tests); default: only on one.
        clock: The time source (seconds).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = enabled if enabled is not None else bool(isatty and isatty())
        self.clock = clock
        self.step: str | None = None
        self.started = 0.0
        self.drawn = 0.0

    def __call__(self, step: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if step != self.step:
            self.close()
            self.step, self.started, self.drawn = step, now, 0.0
        finished = total > 0 and done >= total
        if not finished and now - self.drawn < INTERVAL and self.drawn:
            return
        self.drawn = now
        elapsed = now - self.started
        line = f"{step}  {done}/{total}"
        if total > 0:
            line += f"  {100 * done // total}%"
        if finished:
            line += f"  in {_clock(elapsed)}"
        elif done and elapsed > 0:
            rate = done / elapsed
            line += f"  {rate:.1f}/s  ETA {_clock((total - done) / rate)}"
        self.stream.write(_CLEAR + line)
        self.stream.flush()

    def close(self) -> None:
        """End the current line (call when the work is over; idempotent)."""
        if self.enabled and self.step is not None:
            self.stream.write("\n")
            self.stream.flush()
        self.step = None
