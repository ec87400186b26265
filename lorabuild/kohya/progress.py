"""Training progress read from kohya's output, and how it is shown.

kohya prints (KOHYA.md section 9) a tqdm bar ``steps:  37%|███▋      | 370/1000 [05:12<08:52,
1.18it/s, avr_loss=0.0871]`` redrawn with carriage returns, ``epoch 3/10`` at each epoch start,
``saving checkpoint: <path>`` at each save and ``model saved.`` at the end. :class:`Tracker` turns
those lines into a :class:`Progress`; :class:`Display` passes kohya's other lines through and
shows the progress: one status line redrawn in place on a terminal, or a plain line now and then
(at each epoch and at most every ``every`` seconds) when the output goes to a file or a pipe.

The step count shown is the build's: after a resume kohya counts its bar from 0 again, so the
tracker adds the steps already done (``start_step``) and computes the ETA from the rate itself.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TextIO

# tqdm's default format: "<desc>: <pct>%|<bar>| <n>/<total> [<elapsed><<remaining>, <rate><unit>, k=v]"
_BAR = re.compile(
    r"^(?:(?P<desc>.*?): *)?(?P<pct>\d+)%\|[^|]*\| *(?P<n>\d+)/(?P<total>\d+) "
    r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+)"
    r"(?:, *(?P<rate>[\d.]+|\?) ?(?P<unit>it/s|s/it))?(?P<postfix>(?:, *[^,\]]+)*)\]\s*$"
)
_EPOCH = re.compile(r"^epoch (\d+)/(\d+)$")
_SAVING = re.compile(r"^saving checkpoint: (.+)$")
_DONE = "model saved."
STEPS_DESC = "steps"


class Kind(Enum):
    """What a line of kohya's output is."""

    STEP = "step"  # the training bar
    BAR = "bar"  # another tqdm bar (loading, caching latents, sampling)
    EPOCH = "epoch"
    SAVED = "saved"
    DONE = "done"
    TEXT = "text"


@dataclass
class Progress:
    """Where a training run is.

    Attributes:
        epoch: The epoch being trained (1-based), once kohya said so.
        epochs: Epochs in the run.
        step: Optimizer steps done, counted over the whole build (resumed steps included).
        total: Steps in the whole build.
        loss: kohya's moving-average loss (``avr_loss``).
        rate: Steps per second, as tqdm measured it.
        nan_step: The first step at which the loss was NaN.
        saved: Files kohya said it saved, in order.
        finished: kohya printed ``model saved.``.
        bar: The last other bar as (description, n, total).
    """

    epoch: int | None = None
    epochs: int | None = None
    step: int = 0
    total: int | None = None
    loss: float | None = None
    rate: float | None = None
    nan_step: int | None = None
    saved: list[str] = field(default_factory=list)
    finished: bool = False
    bar: tuple[str, int, int] | None = None

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate."""
        if not self.rate or self.total is None:
            return None
        return max(0, self.total - self.step) / self.rate

    def summary(self) -> str:
        """One line: ``epoch 2/10  step 37/60 (62%)  loss 0.0871  ETA 0:08:52``."""
        parts = []
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}/{self.epochs}" if self.epochs else f"epoch {self.epoch}")
        if self.total:
            parts.append(f"step {self.step}/{self.total} ({100 * self.step // self.total}%)")
        else:
            parts.append(f"step {self.step}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        eta = self.eta
        if eta is not None and self.step < (self.total or 0):
            parts.append(f"ETA {format_duration(eta)}")
        return "  ".join(parts)


def format_duration(seconds: float) -> str:
    """``0:08:52``-style duration."""
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def parse_bar(line: str) -> tuple[str, int, int, float | None, dict[str, str]] | None:
    """A tqdm line as (description, n, total, steps per second, postfix), or None."""
    match = _BAR.match(line.strip())
    if not match:
        return None
    rate: float | None = None
    if match["rate"] and match["rate"] != "?":
        speed = float(match["rate"])
        rate = speed if match["unit"] == "it/s" else (1 / speed if speed else None)
    postfix: dict[str, str] = {}
    for item in (match["postfix"] or "").split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            postfix[key.strip()] = value.strip()
    return (match["desc"] or "").strip(), int(match["n"]), int(match["total"]), rate, postfix


class Tracker:
    """Follows kohya's output and keeps a :class:`Progress`.

    Args:
        total: Optimizer steps of the whole build (the plan's count).
        epochs: Epochs of the whole build.
        start_step: Steps already done before this run (resume); kohya's bar restarts at 0.
    """

    def __init__(self, total: int | None = None, epochs: int | None = None, start_step: int = 0):
        self.progress = Progress(epochs=epochs, step=start_step, total=total)
        self.start_step = start_step

    def feed(self, line: str) -> Kind:
        """Read one line; return what it was."""
        text = line.strip()
        bar = parse_bar(text)
        p = self.progress
        if bar is not None:
            desc, n, total, rate, postfix = bar
            if desc != STEPS_DESC:
                p.bar = (desc, n, total)
                return Kind.BAR
            p.step = self.start_step + n
            if p.total is None:
                p.total = self.start_step + total
            if rate is not None:
                p.rate = rate
            if "avr_loss" in postfix:
                try:
                    p.loss = float(postfix["avr_loss"])
                except ValueError:
                    pass
                else:
                    if math.isnan(p.loss) and p.nan_step is None:
                        p.nan_step = p.step
            return Kind.STEP
        epoch = _EPOCH.match(text)
        if epoch:
            p.epoch, p.epochs = int(epoch[1]), int(epoch[2])
            return Kind.EPOCH
        saving = _SAVING.match(text)
        if saving:
            p.saved.append(saving[1])
            return Kind.SAVED
        if text == _DONE:
            p.finished = True
            return Kind.DONE
        return Kind.TEXT


class Display:
    """Shows kohya's output with lorabuild's progress in place of its bars.

    Call it with each line. On a terminal the progress is one status line kept at the bottom and
    redrawn in place; otherwise a plain ``progress: …`` line is printed at each epoch and at most
    every ``every`` seconds, and other bars are not printed at all.

    Args:
        tracker: The progress to show (fed by this display).
        out: Where to write (default stdout).
        tty: Whether ``out`` is a terminal (default: ask it).
        every: Least seconds between plain progress lines.
        clock: Time source (tests).
    """

    def __init__(
        self,
        tracker: Tracker,
        out: TextIO | None = None,
        tty: bool | None = None,
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.tracker = tracker
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.every = every
        self.clock = clock
        self._status = ""
        self._last_plain: float | None = None
        self._last_plain_step = -1
        self._pending: tuple[str, int] | None = None  # a due progress line and its step
        self._blank = False

    def __call__(self, line: str) -> None:
        kind = self.tracker.feed(line)
        p = self.tracker.progress
        if kind is Kind.STEP:
            if self.tty:
                self._show_status(self._bar_text(p))
            else:
                self._plain_step(p)
            return
        if kind is Kind.BAR:
            if self.tty and p.bar is not None:
                desc, n, total = p.bar
                self._show_status(f"{desc or 'working'}: {n}/{total}")
            return
        self._flush_pending()
        self._text(line.rstrip())
        if kind is Kind.EPOCH and not self.tty and p.step > 0 and p.step != self._last_plain_step:
            self._plain(p.summary(), p.step)

    def close(self) -> None:
        """Print what is pending and leave the status line (the last progress stays visible)."""
        self._flush_pending()
        if self.tty and self._status:
            self.out.write("\n")
            self.out.flush()
            self._status = ""

    def _plain_step(self, p: Progress) -> None:
        """A progress line when one is due, printed once kohya has drawn the step's loss.

        kohya draws each step twice: the count first (with the previous loss), then the loss.
        """
        if self._pending is not None and self._pending[1] != p.step:
            self._flush_pending()
        if self._pending is not None:
            self._pending = (p.summary(), p.step)
            return
        due = self._last_plain is None or self.clock() - self._last_plain >= self.every
        if (due or p.step == p.total) and p.step not in (self._last_plain_step, self.tracker.start_step):
            self._pending = (p.summary(), p.step)

    def _flush_pending(self) -> None:
        if self._pending is not None:
            text, step = self._pending
            self._pending = None
            self._plain(text, step)

    def _plain(self, summary: str, step: int) -> None:
        self._text(f"progress: {summary}")
        self._last_plain = self.clock()
        self._last_plain_step = step

    def _bar_text(self, p: Progress) -> str:
        width = 20
        filled = width * p.step // p.total if p.total else 0
        return f"[{'#' * filled}{'.' * (width - filled)}] {p.summary()}"

    def _width(self) -> int:
        return max(20, shutil.get_terminal_size((100, 24)).columns - 1)

    def _clear(self) -> str:
        """Go to the start of the line and blank it (no escape codes where consoles lack them)."""
        if os.name == "nt":
            return "\r" + " " * self._width() + "\r"
        return "\r\x1b[K"

    def _show_status(self, text: str) -> None:
        self._status = text[: self._width()]
        self.out.write(self._clear() + self._status)
        self.out.flush()

    def _text(self, text: str) -> None:
        if not text.strip():
            if self._blank:
                return  # kohya surrounds "epoch N/M" with blank lines; one is enough
            self._blank = True
        else:
            self._blank = False
        if self.tty and self._status:
            self.out.write(self._clear() + text + "\n" + self._status)
        else:
            self.out.write(text + "\n")
        self.out.flush()
