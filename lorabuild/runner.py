"""The one place lorabuild starts processes.

Commands are argv lists (never shell strings). Output is streamed line by line — kohya's tqdm
bars end in carriage returns, so ``\\r`` ends a line as well as ``\\n`` — to the console and
teed to a log file. Ctrl-C is forwarded to the child, which gets the chance to stop cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lorabuild.launch import SD_SCRIPTS_PREFIX, LaunchSpec


@dataclass(frozen=True)
class RunResult:
    """How a process ended.

    Attributes:
        returncode: Its exit status (negative: killed by that signal).
        interrupted: The user pressed Ctrl-C.
        log: Where the whole output was written.
    """

    returncode: int
    interrupted: bool
    log: Path


def resolve_argv(spec: LaunchSpec, sd_scripts: Path, python: str = sys.executable) -> list[str]:
    """The argv to execute: ``accelerate`` through this Python, kohya paths made real."""
    argv = list(spec.argv)
    if argv and argv[0] == "accelerate":
        argv[:1] = [python, "-m", "accelerate.commands.launch"]
        if len(argv) > 3 and argv[3] == "launch":
            del argv[3]
    return [
        str(sd_scripts / a.removeprefix(SD_SCRIPTS_PREFIX)) if a.startswith(SD_SCRIPTS_PREFIX) else a
        for a in argv
    ]


def run(
    argv: Sequence[str],
    cwd: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> RunResult:
    """Run ``argv`` in ``cwd``, streaming its combined output to ``on_line`` and to ``log``.

    Args:
        argv: The command.
        cwd: Working directory.
        log: File that receives everything the process prints (created or truncated).
        env: Extra environment variables.
        on_line: Called with each line (without its ending); default prints to stdout.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    emit = on_line or (lambda line: print(line, flush=True))
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    interrupted = False
    with log.open("wb") as sink:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        try:
            _pump(process.stdout, sink, emit)
            process.wait()
        except KeyboardInterrupt:
            interrupted = True
            _stop(process)
            _pump(process.stdout, sink, emit)
    return RunResult(process.returncode, interrupted, log)


def _pump(stream: object, sink: object, emit: Callable[[str], None]) -> None:
    """Copy ``stream`` to ``sink`` and emit each ``\\n``- or ``\\r``-terminated line."""
    read = stream.read1 if hasattr(stream, "read1") else stream.read  # type: ignore[attr-defined]
    write = sink.write  # type: ignore[attr-defined]
    pending = b""
    while True:
        chunk = read(65536)
        if not chunk:
            break
        write(chunk)
        pending += chunk
        *lines, pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        for line in lines:
            emit(line.decode("utf-8", "replace"))
    if pending:
        emit(pending.decode("utf-8", "replace"))


def _stop(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """Ask the child to stop (SIGINT / CTRL_BREAK), then kill it if it does not within ``grace`` s."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGINT)  # type: ignore[attr-defined]
        process.wait(timeout=grace)
    except (subprocess.TimeoutExpired, OSError):
        process.kill()
        process.wait()
