"""The one place lorabuild starts processes.

Commands are argv lists (never shell strings). Output is streamed line by line — kohya's tqdm
bars end in carriage returns, so ``\\r`` ends a line as well as ``\\n`` — to a callback and teed,
byte for byte, to a log file.

Stopping: the child runs in a process group of its own, because ``accelerate launch`` starts
kohya as a grandchild and does not pass signals on; signalling only the direct child would leave
kohya training as an orphan. Ctrl-C (SIGINT), SIGTERM and SIGHUP sent to lorabuild are forwarded
to the whole group; its output keeps being read (and logged) while it stops, and if it has not
stopped after ``grace`` seconds, or a second signal arrives, the group is killed.

Conversations: a run may be given ``answer``, which sees each output line after ``on_line`` and may
return a :class:`Reply` to write to the child's standard input (kohya's
``flux_minimal_inference.py --interactive`` asks for each prompt line). The child is paced by its
own output, never by sleeps. Its stdin is closed when a reply says so, when lorabuild is asked to
stop (``answer`` still sees the lines that follow; its replies are dropped), and when the child's
output ends; without ``answer`` the child's stdin is empty (``/dev/null``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from lorabuild.kohya.conversation import Answer, Reply
from lorabuild.kohya.launch import SD_SCRIPTS_PREFIX, LaunchSpec
from lorabuild.settings import script_wrapper

__all__ = ["Answer", "Captured", "Reply", "RunResult", "capture", "resolve_argv", "run", "wrap_script"]

# How long a stopping child may take before it is killed.
DEFAULT_GRACE = 30.0

# Signals lorabuild forwards to its child instead of dying at once.
_FORWARDED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@dataclass(frozen=True)
class RunResult:
    """How a process ended.

    Attributes:
        returncode: Its exit status (negative: killed by that signal).
        interrupted: lorabuild was asked to stop (Ctrl-C, SIGTERM) and stopped the process.
        log: Where the whole output was written.
        signal: The signal that stopped lorabuild, when interrupted.
        seconds: Wall time from start to exit.
    """

    returncode: int
    interrupted: bool
    log: Path
    signal: int | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Captured:
    """A short command's exit status and output (see :func:`capture`)."""

    returncode: int
    stdout: str
    stderr: str


class _Interrupt(BaseException):
    """Raised in the main thread by the forwarding signal handlers."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def resolve_argv(spec: LaunchSpec, sd_scripts: Path, python: str = sys.executable) -> list[str]:
    """The argv to execute: ``accelerate`` through this Python, kohya paths made real.

    When the machine setting ``LORABUILD_SCRIPT_WRAPPER`` names a wrapper, it goes right before the
    kohya script (see :func:`wrap_script`); ``train.sh`` and ``train.ps1`` render ``spec`` itself
    and never get it.
    """
    argv = list(spec.argv)
    if argv and argv[0] == "accelerate":
        argv[:1] = [python, "-m", "accelerate.commands.launch"]
        if len(argv) > 3 and argv[3] == "launch":
            del argv[3]
    argv = wrap_script(argv, sd_scripts, script_wrapper())
    return [
        str(sd_scripts / a.removeprefix(SD_SCRIPTS_PREFIX)) if a.startswith(SD_SCRIPTS_PREFIX) else a
        for a in argv
    ]


def wrap_script(argv: Sequence[str], sd_scripts: Path, wrapper: Path | None) -> list[str]:
    """``argv`` with ``wrapper`` inserted right before the kohya script it runs.

    The kohya script is the first argument that starts with ``{sd_scripts}/`` or is a ``.py`` file
    inside ``sd_scripts``; the wrapper (a Python file, the ``LORABUILD_SCRIPT_WRAPPER`` setting) is
    then run with the script and its arguments. Nothing changes without a wrapper, without a kohya
    script, or when the wrapper is already there, so wrapping twice is wrapping once.

    Args:
        argv: The command (``python -m accelerate.commands.launch [OPTIONS] SCRIPT ARGS...`` or
            ``python SCRIPT ARGS...``).
        sd_scripts: The kohya checkout.
        wrapper: The wrapper's path, or None.

    Returns:
        The command to run.
    """
    argv = list(argv)
    if wrapper is None:
        return argv
    # As written and resolved (the file, and its folder alone): a checkout of symlinked files resolves elsewhere.
    kohya = (Path(os.path.abspath(sd_scripts)), sd_scripts.resolve())
    for index, arg in enumerate(argv):
        is_script = arg.startswith(SD_SCRIPTS_PREFIX) or (
            arg.endswith(".py")
            and any(
                p.is_relative_to(root)
                for p in (Path(os.path.abspath(arg)), Path(arg).resolve(), Path(arg).parent.resolve())
                for root in kohya
            )
        )
        if is_script:
            if index == 0 or argv[index - 1] != str(wrapper):
                argv.insert(index, str(wrapper))
            break
    return argv


def run(
    argv: Sequence[str],
    cwd: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    *,
    grace: float = DEFAULT_GRACE,
    on_start: Callable[[int], None] | None = None,
    answer: Answer | None = None,
) -> RunResult:
    """Run ``argv`` in ``cwd``, streaming its combined output to ``on_line`` and to ``log``.

    Args:
        argv: The command.
        cwd: Working directory.
        log: File that receives everything the process prints (created or truncated).
        env: Extra environment variables.
        on_line: Called with each line (without its ending); default prints to stdout.
        grace: Seconds a child may take to stop after a forwarded signal before it is killed.
        on_start: Called with the child's process id once it runs.
        answer: Sees each output line and may answer it on the child's stdin (see :class:`Reply`);
            None: the child's stdin is empty.

    Returns:
        How the process ended. A Ctrl-C or SIGTERM does not raise: the result says
        ``interrupted`` and which signal it was.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    emit = on_line or (lambda line: print(line, flush=True))
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    stop_signal: int | None = None
    killer: threading.Timer | None = None
    start = time.monotonic()
    with log.open("wb") as sink, _forwarding_signals():
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL if answer is None else subprocess.PIPE,
            **_own_group(),
        )
        assert process.stdout is not None
        feed = _StdinFeed(process.stdin, answer) if answer is not None and process.stdin else None

        def output(line: str) -> None:
            emit(line)
            if feed is not None:
                feed.hear(line)

        pump = _LinePump(process.stdout, sink, output)
        try:
            if on_start is not None:
                on_start(process.pid)
            while True:
                try:
                    pump.drain()
                    process.wait()
                    break
                except _Interrupt as exc:
                    if feed is not None:
                        feed.close()  # a stopping child is asked nothing more
                    if stop_signal is None:
                        stop_signal = exc.signum
                        _signal_group(process, exc.signum)
                        killer = threading.Timer(grace, _kill_group, (process,))
                        killer.daemon = True
                        killer.start()
                    else:  # asked twice: stop now
                        _kill_group(process)
        except _Interrupt as exc:  # a signal landed outside the loop's own handler
            stop_signal = stop_signal or exc.signum
            _kill_group(process)
            process.wait()
        except BaseException:
            _kill_group(process)  # never leave a trainer running behind an error of ours
            process.wait()
            raise
        finally:
            if feed is not None:
                feed.close()
            if killer is not None:
                killer.cancel()
    return RunResult(process.returncode, stop_signal is not None, log, stop_signal, time.monotonic() - start)


def capture(argv: Sequence[str], timeout: float = 60.0, cwd: Path | None = None) -> Captured:
    """Run a short command to completion and return its output (for probes such as ``doctor``).

    A command that cannot be started, or runs past ``timeout``, comes back with exit status 127
    or 124 and the reason in ``stderr``.
    """
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        return Captured(127, "", f"{argv[0]}: {exc.strerror}")
    except subprocess.TimeoutExpired:
        return Captured(124, "", f"{argv[0]} did not finish within {timeout:g} s")
    return Captured(
        done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
    )


class _StdinFeed:
    """Gives every output line to ``answer`` and writes its replies to the child's stdin while it is open.

    ``answer`` sees every line even after stdin is closed (the renderer still files what the
    child reports while it stops); its replies are then dropped. A child that has exited (a broken
    pipe) is not an error here: its exit status says what happened.
    """

    def __init__(self, stdin: IO[bytes], answer: Answer):
        self._stdin: IO[bytes] | None = stdin
        self._answer = answer

    def hear(self, line: str) -> None:
        """Give ``line`` to ``answer`` and write its reply, while stdin is open."""
        reply = self._answer(line)
        if reply is None or self._stdin is None:
            return
        if reply.text:
            try:
                self._stdin.write(reply.text.encode("utf-8"))
                self._stdin.flush()
            except OSError:  # BrokenPipeError: the child has gone
                self.close()
                return
        if reply.close:
            self.close()

    def close(self) -> None:
        """Close the child's stdin (once; errors ignored)."""
        stdin, self._stdin = self._stdin, None
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()


class _LinePump:
    """Copies a stream to a sink and emits each ``\\n``- or ``\\r``-terminated line.

    Its state survives an exception raised while it reads, so reading can go on afterwards.
    """

    def __init__(self, stream: IO[bytes], sink: IO[bytes], emit: Callable[[str], None]):
        self._read = getattr(stream, "read1", stream.read)
        self._sink = sink
        self._emit = emit
        self._pending = b""

    def drain(self) -> None:
        """Read until end of file."""
        while True:
            chunk = self._read(65536)
            if not chunk:
                break
            self._sink.write(chunk)
            self._sink.flush()
            self._pending += chunk
            # A "\r\n" split across two reads would look like "\r" then "\n": hold a trailing "\r".
            complete, held = (
                (self._pending[:-1], b"\r") if self._pending.endswith(b"\r") else (self._pending, b"")
            )
            *lines, rest = complete.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            self._pending = rest + held
            for line in lines:
                self._emit(line.decode("utf-8", "replace"))
        rest, self._pending = self._pending.rstrip(b"\r"), b""
        if rest:
            self._emit(rest.decode("utf-8", "replace"))


@contextlib.contextmanager
def _forwarding_signals() -> Iterator[None]:
    """While running a child, turn SIGINT/SIGTERM/SIGHUP into :class:`_Interrupt` in this thread.

    Outside the main thread handlers cannot be installed; the child then only stops by itself.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Interrupt(signum)

    previous: dict[int, Any] = {}
    try:
        for signum in _FORWARDED:
            previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _own_group() -> dict[str, Any]:
    """Popen arguments that start the child in a process group of its own."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined,unused-ignore]
    return {"start_new_session": True}


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to the child's whole process group (CTRL_BREAK on Windows)."""
    if process.poll() is not None and os.name == "nt":
        return
    try:
        if os.name == "nt":
            process.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined,unused-ignore]
        else:
            os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the child's whole process group at once."""
    try:
        if os.name == "nt":
            subprocess.run(
                ["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True, check=False
            )
        else:
            os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass
