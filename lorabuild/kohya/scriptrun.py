"""One run of a kohya script (the trainer, gen_img, the WD14 tagger): run it, keep the tail, say what went wrong.

:func:`run_script` runs a command through :func:`lorabuild.kohya.runner.run` (the one process seam)
and keeps the last :data:`TAIL_LINES` lines of its output. The :class:`ScriptRun` it returns words
every way the run can end badly — stopped by a signal, failed, or exited 0 without writing what it
had to — with :mod:`lorabuild.kohya.diagnose`'s diagnosis where one fits, and always naming the
script by the name it was run under, so a gen_img failure never reads as kohya's trainer's. The
stage that ran it decides what it needed and raises its own error with these messages.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.kohya import runner
from lorabuild.kohya.diagnose import Diagnosis, diagnose, last_error
from lorabuild.problems import LorabuildError
from lorabuild.settings import script_wrapper, sd_scripts_dir

TAIL_LINES = 400
"""Lines of output kept for the diagnosis (the whole output is in the log)."""


class ScriptInterrupted(LorabuildError):
    """The user (or the system) stopped lorabuild while a kohya script ran; each stage has its own kind.

    The exit status is the shell's 128 + signal number: 130 for Ctrl-C, 143 for SIGTERM.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass(frozen=True)
class ScriptRun:
    """How one run of a kohya script ended, and the end of its output.

    Attributes:
        name: How messages name the script (``kohya``, ``gen_img``, ``kohya's WD14 tagger``).
        result: The process seam's result (exit status, signal, log, seconds).
        tail: The last lines of its output.
    """

    name: str
    result: runner.RunResult
    tail: tuple[str, ...]

    @property
    def log(self) -> Path:
        """The whole output."""
        return self.result.log

    @property
    def interrupted(self) -> bool:
        """lorabuild was asked to stop (Ctrl-C, SIGTERM) and stopped the script."""
        return self.result.interrupted

    @property
    def failed(self) -> bool:
        """The script exited with a status other than 0."""
        return self.result.returncode != 0

    @property
    def signum(self) -> int:
        """The signal that stopped lorabuild (SIGINT when the runner did not say)."""
        return self.result.signal or signal.SIGINT

    def diagnosis(self, nan_step: int | None = None) -> Diagnosis | None:
        """The known failure its output shows, if any (see :func:`lorabuild.kohya.diagnose.diagnose`)."""
        return diagnose(self.tail, self.result.returncode, nan_step)

    def interrupted_message(self, what: str, detail: str = "") -> str:
        """``training interrupted (SIGINT) at ...; .... kohya's output is in LOG``.

        Args:
            what: The work that was stopped (``training``, ``grid``, ``tagging``).
            detail: What was kept and how to go on, starting with its own separator.
        """
        name = signal.Signals(self.signum).name
        return f"{what} interrupted ({name}){detail}. {self.name}'s output is in {self.log.as_posix()}"

    def failure_message(self) -> str:
        """Why the script exited with a bad status: the diagnosis and its last error, or the status."""
        where = self.log.as_posix()
        lines = list(self.tail)
        error = last_error(lines)
        diagnosis = self.diagnosis()
        if diagnosis is not None:
            text = f"{diagnosis}."
            if error:
                text += f"\n{self.name}'s error: {error}"
            return f"{text}\n{self.name}'s output is in {where}"
        returncode = self.result.returncode
        status = f"exit status {returncode}"
        if returncode < 0:
            with_name = {s.value: s.name for s in signal.Signals}.get(-returncode)
            status = f"signal {with_name or -returncode}"
        reason = f" ({error})" if error else ""
        return f"{self.name} stopped with {status}{reason}. Its whole output is in {where}"

    def missing_message(self, what: str) -> str:
        """The script exited 0 but did not write ``what``: the diagnosis first when its output has one."""
        where = self.log.as_posix()
        diagnosis = self.diagnosis()
        if diagnosis is not None:
            return f"{diagnosis}. {self.name} exited with status 0 but did not write {what}; its output is in {where}"
        return (
            f"{self.name} exited with status 0 but did not write {what}: treat the run as failed and read "
            f"its output in {where}"
        )

    def diagnosed_message(self, nan_step: int | None = None) -> str:
        """The diagnosis (``nan_step``: the step the loss became NaN at) and where the output is."""
        return f"{self.diagnosis(nan_step)}. {self.name}'s output is in {self.log.as_posix()}"


def run_script(
    name: str,
    argv: Sequence[str],
    cwd: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    *,
    grace: float | None = None,
    on_start: Callable[[int], None] | None = None,
    sd_scripts: Path | None = None,
    answer: runner.Answer | None = None,
) -> ScriptRun:
    """Run a kohya script, keeping the end of its output for the messages.

    Args:
        name: How messages name the script.
        argv: The command.
        cwd: Its working directory.
        log: The file that receives its whole output.
        env: Extra environment variables.
        on_line: Receives each line of output (default: printed).
        grace: Seconds it may take to stop after Ctrl-C before it is killed (default: the runner's).
        on_start: Called with its process id once it runs.
        sd_scripts: The kohya checkout ``argv`` runs a script of (default:
            :func:`lorabuild.settings.sd_scripts_dir`): with the ``LORABUILD_SCRIPT_WRAPPER``
            setting, the wrapper goes right before that script (:func:`runner.wrap_script`).
        answer: Answers output lines on the script's stdin (:class:`lorabuild.kohya.runner.Reply`);
            None: its stdin is empty.

    Returns:
        How it ended. Nothing is raised for a failure or an interruption: the caller decides.
    """
    argv = runner.wrap_script(argv, sd_scripts or sd_scripts_dir(), script_wrapper())
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    emit = on_line or (lambda line: print(line, flush=True))

    def handle(line: str) -> None:
        tail.append(line)
        emit(line)

    # Only what the caller set is passed on: stand-ins for the runner in tests take the rest alone.
    extra: dict[str, Any] = {"grace": grace, "on_start": on_start, "answer": answer}
    result = runner.run(argv, cwd, log, env, handle, **{k: v for k, v in extra.items() if v is not None})
    return ScriptRun(name, result, tuple(tail))
