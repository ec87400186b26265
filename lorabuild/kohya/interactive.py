"""The ``--interactive`` grid renderers' shared half: one model load, a stdin line per image as kohya asks.

kohya's ``flux_minimal_inference.py``, ``sd3_minimal_inference.py`` and
``lumina_minimal_inference.py`` load the model and every LoRA file once (``--lora_weights path;1.0
...``), then, with ``--interactive``, loop: they print a line asking for a prompt, read one stdin
line (``PROMPT --w --h --s --d ... --m m1,m2,...``), render it, save it in the output folder under a
name made from the clock and log where. So the whole epoch x weight x prompt x seed grid is one
process and one model load, whichever of the three it is.

What they share is here: :class:`Dialogue` says how one script asks, logs a saved image and is told
to stop, and how a cell is written as its line; :class:`Conversation` holds that dialogue with the
running process, paced by kohya's output, never by sleeps (answering through the process seam's
``answer``): each line is sent only when kohya asks for one, and the image a saved-image log line
names is checked and moved at once to its cell's file (``cells/<key>.png``) before the next line
goes out, so two images saved within one second (the file names have no finer clock) cannot
overwrite each other. :class:`InteractiveRenderer` is a renderer of that kind: a subclass says its
script, its dialogue and its command (:meth:`InteractiveRenderer.argv`).
"""

from __future__ import annotations

import os
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from lorabuild.kohya.conversation import Reply
from lorabuild.kohya.gridrender import GridImage, GridJob, GridRun, file_saved_image, one_job
from lorabuild.kohya.prompts import PromptLine

SettingsT = TypeVar("SettingsT", contravariant=True)


@dataclass(frozen=True)
class Dialogue:
    """How one ``--interactive`` script talks.

    Attributes:
        asks: What the line asking for a prompt starts with.
        saved: Finds the saved image's path (group 1) in a log line.
        goodbye: The stdin line that ends the loop (without its newline).
        line: A cell's stdin line (one of :class:`lorabuild.kohya.prompts.PromptLine`'s writers).
    """

    asks: str
    saved: re.Pattern[str]
    goodbye: str
    line: Callable[[PromptLine], str]


class Conversation:
    """Feeds an ``--interactive`` script one image's line each time it asks, and files each saved image."""

    def __init__(
        self, dialogue: Dialogue, images: Sequence[GridImage], cwd: Path, outdir: Path, cells_dir: Path
    ):
        self._dialogue = dialogue
        self._images = tuple(images)
        self._cwd = cwd
        self._outdir = outdir
        self._cells = cells_dir
        self._sent = 0
        self.delivered: set[str] = set()

    def progress(self, line: str) -> int | None:
        """The number of the image kohya is about to be given, when it asks for one."""
        if line.startswith(self._dialogue.asks) and self._sent < len(self._images):
            return self._sent + 1
        return None

    def answer(self, line: str) -> Reply | None:
        """The next image's line when kohya asks (the goodbye line, ending its loop, after the last)."""
        saved = self._dialogue.saved.search(line)
        if saved is not None and self._sent:
            self._deliver(self._images[self._sent - 1], saved[1])
            return None
        if not line.startswith(self._dialogue.asks):
            return None
        if self._sent == len(self._images):
            return Reply(self._dialogue.goodbye + "\n", close=True)
        image = self._images[self._sent]
        self._sent += 1
        return Reply(self._dialogue.line(image.line) + "\n")

    def _deliver(self, image: GridImage, logged: str) -> None:
        """Move the image kohya saved (``logged``, or the one PNG in its folder) to its cell's file."""
        if file_saved_image(Path(logged), self._cwd, self._outdir, self._cells / image.name):
            self.delivered.add(image.name)


class InteractiveRenderer(ABC, Generic[SettingsT]):
    """A grid renderer that is one ``--interactive`` kohya process fed on stdin (see the module's docstring).

    A subclass sets :attr:`SCRIPT`, :attr:`NAME` and :attr:`DIALOGUE` and writes :meth:`argv`.
    """

    SCRIPT: ClassVar[str]
    """The script, inside the kohya checkout."""
    NAME: ClassVar[str]
    """How messages name it."""
    DIALOGUE: ClassVar[Dialogue]
    """How the script talks."""

    @abstractmethod
    def argv(
        self,
        settings: SettingsT,
        *,
        script: str,
        outdir: str,
        network_files: Sequence[str],
        python: str = sys.executable,
    ) -> list[str]:
        """The command (relative paths are relative to the build folder), ``--interactive`` included.

        Size, steps, seed, CFG scale and the LoRA multipliers are not given: every stdin line sets them.
        """

    def env(self, base: Mapping[str, str], settings: SettingsT) -> dict[str, str]:
        """The environment: ``base`` (the training's ``[launch] env``, ``HF_HOME`` included) and what kohya needs.

        Not forced offline, unlike gen_img: the training read its tokenizers from
        ``--tokenizer_cache_dir``, which these scripts cannot, so the hub cache may still lack them.
        """
        # kohya's rich log handler wraps lines at 80 columns when not on a terminal.
        return {**base, "COLUMNS": os.environ.get("COLUMNS", "200")}

    def split(self, job: GridJob) -> tuple[GridJob, ...]:
        """The whole job: one process renders every LoRA setting."""
        return one_job(job)

    def prepare(self, settings: SettingsT, job: GridJob) -> GridRun:
        """The run of ``job``: one process, fed a line per image as it asks (see the module's docstring)."""
        talk = Conversation(self.DIALOGUE, job.images, job.cwd, job.cwd / job.outdir, job.cells_dir)
        return GridRun(
            argv=self.argv(
                settings,
                script=job.script,
                outdir=job.outdir,
                network_files=job.network_files,
                python=job.python,
            ),
            env=self.env(job.env, settings),
            inputs={},
            progress=talk.progress,
            answer=talk.answer,
            delivered=talk.delivered,
        )
