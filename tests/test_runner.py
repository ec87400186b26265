"""The process seam with small scripted children: streaming, carriage returns, the log, exit
statuses, and stopping (Ctrl-C and SIGTERM forwarded to the child's whole process group, a kill
after the grace period). These children stand in for kohya's plumbing only; they say nothing
about whether training works (tests/test_train.py runs the real trainer)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lorabuild.kohya.launch import LaunchSpec
from lorabuild.kohya.runner import Reply, capture, resolve_argv, run
from tests.conftest import REPO

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")


def script(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_lines_are_streamed_split_on_carriage_returns_and_teed_byte_for_byte(tmp_path: Path) -> None:
    code = r"""
        import sys
        out = sys.stdout.buffer
        out.write(b"loading\n")
        out.write(b"steps:   0%|  | 0/2 [00:00<?, ?it/s]\rsteps:  50%|# | 1/2 [00:01<00:01,  1.00it/s]\r")
        out.write("caf\u00e9 \u5b66\u7fd2\r\n".encode())
        sys.stderr.write("to stderr\n")
        sys.stderr.flush()
        out.write(b"no newline at the end")
    """
    lines: list[str] = []
    log = tmp_path / "logs" / "run.log"
    result = run(script(code), tmp_path, log, on_line=lines.append)
    assert result.returncode == 0 and not result.interrupted and result.signal is None
    assert lines == [
        "loading",
        "steps:   0%|  | 0/2 [00:00<?, ?it/s]",
        "steps:  50%|# | 1/2 [00:01<00:01,  1.00it/s]",
        "café 学習",
        "to stderr",
        "no newline at the end",
    ]
    raw = log.read_bytes()
    assert b"\rsteps:  50%" in raw and raw.endswith(b"no newline at the end")
    assert result.log == log and result.seconds > 0


def test_a_crlf_split_across_two_reads_is_one_line_end(tmp_path: Path) -> None:
    code = r"""
        import sys, time
        sys.stdout.buffer.write(b"first\r"); sys.stdout.flush(); time.sleep(0.3)
        sys.stdout.buffer.write(b"\nsecond\n"); sys.stdout.flush()
    """
    lines: list[str] = []
    run(script(code), tmp_path, tmp_path / "log", on_line=lines.append)
    assert lines == ["first", "second"]


def test_environment_and_working_folder_reach_the_child(tmp_path: Path) -> None:
    code = "import os; print(os.environ['LB_TEST'], os.environ['PYTHONUNBUFFERED'], os.getcwd())"
    lines: list[str] = []
    run(script(code), tmp_path, tmp_path / "log", {"LB_TEST": "x y"}, lines.append)
    assert lines == [f"x y 1 {tmp_path.resolve()}"] or lines == [f"x y 1 {tmp_path}"]


def test_exit_status_is_returned_not_raised(tmp_path: Path) -> None:
    result = run(script("import sys; print('bye'); sys.exit(3)"), tmp_path, tmp_path / "log", on_line=print)
    assert (result.returncode, result.interrupted) == (3, False)


@posix_only
def test_a_child_killed_by_a_signal_has_a_negative_status(tmp_path: Path) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    result = run(script(code), tmp_path, tmp_path / "log", on_line=print)
    assert result.returncode == -signal.SIGKILL and not result.interrupted


def test_on_start_gets_the_child_pid(tmp_path: Path) -> None:
    pids: list[int] = []
    lines: list[str] = []
    run(
        script("import os; print(os.getpid())"),
        tmp_path,
        tmp_path / "log",
        None,
        lines.append,
        on_start=pids.append,
    )
    assert pids == [int(lines[0])]


def test_resolve_argv_runs_accelerate_through_this_python_and_makes_kohya_paths_real() -> None:
    spec = LaunchSpec(
        ("accelerate", "launch", "--num_processes", "1", "{sd_scripts}/train_network.py", "--x")
    )
    argv = resolve_argv(spec, Path("/k"), python="/py")
    assert argv == [
        "/py",
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "/k/train_network.py",
        "--x",
    ]


def test_capture_returns_output_and_reports_missing_programs_and_timeouts(tmp_path: Path) -> None:
    done = capture(script("import sys; print('out'); print('err', file=sys.stderr); sys.exit(2)"))
    assert (done.returncode, done.stdout.strip(), done.stderr.strip()) == (2, "out", "err")
    missing = capture([str(tmp_path / "no-such-program")])
    assert missing.returncode == 127 and "no-such-program" in missing.stderr
    slow = capture(script("import time; time.sleep(5)"), timeout=0.5)
    assert slow.returncode == 124 and "did not finish" in slow.stderr


# --- stopping ----------------------------------------------------------------------------------

# A stand-in for `accelerate launch`: it starts the "trainer" as its own child (a grandchild of
# lorabuild) and waits for it, passing no signal on, as accelerate's simple launcher does. Its own
# Ctrl-C is a no-op handler rather than KeyboardInterrupt: an exception that lands inside
# Popen.wait() after waitpid() reaped the child but before the status was kept makes the second
# wait() report 0 (CPython's ChildProcessError fallback), which failed this test about once in
# a hundred runs.
LAUNCHER = r"""
import json, signal, subprocess, sys
signal.signal(signal.SIGINT, lambda signum, frame: None)
child = subprocess.Popen(json.loads(sys.argv[1]))  # exec resets the no-op handler: the trainer gets Ctrl-C
sys.exit(child.wait())
"""

# The "trainer": reports readiness, then works until stopped; on Ctrl-C it stops cleanly.
TRAINER = r"""
import os, signal, sys, time
mark = sys.argv[1]
if len(sys.argv) > 2 and sys.argv[2] == "ignore":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
try:
    print("ready", os.getpid(), flush=True)  # inside the try: a Ctrl-C right after it is still clean
    while True:
        time.sleep(0.05)
except KeyboardInterrupt:
    open(mark, "w").write("stopped cleanly")
    print("trainer stopped cleanly", flush=True)
    sys.exit(5)
"""

DRIVER = r"""
import json, sys
from pathlib import Path
from lorabuild.kohya.runner import run
argv, log, grace = json.loads(sys.argv[1])
result = run(argv, Path.cwd(), Path(log), on_line=lambda l: print(l, flush=True), grace=grace)
print("RESULT " + json.dumps([result.returncode, result.interrupted, result.signal]), flush=True)
"""


def start_driver(tmp_path: Path, trainer_args: list[str], grace: float = 10.0) -> subprocess.Popen[str]:
    """lorabuild's runner in a process of its own, running LAUNCHER, which runs TRAINER."""
    trainer = [sys.executable, "-c", TRAINER, *trainer_args]
    launcher = [sys.executable, "-c", LAUNCHER, json.dumps(trainer)]
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps([launcher, str(tmp_path / "log"), grace])],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_for(process: subprocess.Popen[str], prefix: str, timeout: float = 20.0) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(prefix):
            return line.strip()
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no line starting with {prefix!r}")


def finish(process: subprocess.Popen[str]) -> list[object]:
    result = json.loads(wait_for(process, "RESULT ").removeprefix("RESULT "))
    assert process.wait(timeout=20) == 0
    return list(result)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers; read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_lorabuild_reaches_the_trainer_behind_the_launcher(tmp_path: Path, signum: int) -> None:
    """Ctrl-C (or SIGTERM) sent to lorabuild alone stops the grandchild too; none is orphaned."""
    mark = tmp_path / "mark"
    driver = start_driver(tmp_path, [str(mark)])
    trainer_pid = int(wait_for(driver, "ready").split()[1])
    driver.send_signal(signum)
    returncode, interrupted, sig = finish(driver)
    assert interrupted is True and sig == signum
    if signum == signal.SIGINT:
        assert mark.read_text() == "stopped cleanly"  # the trainer had the chance to stop cleanly
        assert returncode == 5
        assert "trainer stopped cleanly" in (tmp_path / "log").read_text()  # still logged while stopping
    time.sleep(0.2)
    assert not alive(trainer_pid)


@posix_only
def test_a_trainer_that_ignores_the_signal_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    driver = start_driver(tmp_path, [str(tmp_path / "mark"), "ignore"], grace=0.5)
    trainer_pid = int(wait_for(driver, "ready").split()[1])
    started = time.monotonic()
    driver.send_signal(signal.SIGINT)
    returncode, interrupted, sig = finish(driver)
    assert interrupted is True and sig == signal.SIGINT
    assert returncode != 0
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    assert not alive(trainer_pid)


@posix_only
def test_a_second_signal_kills_at_once(tmp_path: Path) -> None:
    driver = start_driver(tmp_path, [str(tmp_path / "mark"), "ignore"], grace=60)
    trainer_pid = int(wait_for(driver, "ready").split()[1])
    started = time.monotonic()
    driver.send_signal(signal.SIGINT)
    time.sleep(0.3)
    driver.send_signal(signal.SIGINT)
    _, interrupted, _ = finish(driver)
    assert interrupted is True
    assert time.monotonic() - started < 30
    time.sleep(0.2)
    assert not alive(trainer_pid)


@posix_only
def test_signal_handlers_are_restored_after_a_run(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    run(script("pass"), tmp_path, tmp_path / "log", on_line=print)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_answer_paces_the_child_by_its_output(tmp_path: Path) -> None:
    """Each reply is written only after the line that asked; a closing reply ends the child's stdin."""
    code = (
        "import sys\n"
        "for i in range(3):\n"
        "    print(f'ask {i}', flush=True)\n"
        "    line = sys.stdin.readline()\n"
        "    print('got ' + line.strip(), flush=True)\n"
        "print('eof' if sys.stdin.readline() == '' else 'more', flush=True)\n"
    )
    heard: list[str] = []

    def answer(line: str) -> Reply | None:
        if line.startswith("ask "):
            n = int(line.split()[1])
            return Reply(f"line {n}\n", close=n == 2)
        return None

    result = run(
        [sys.executable, "-c", code], tmp_path, tmp_path / "log", on_line=heard.append, answer=answer
    )
    assert result.returncode == 0
    assert heard == ["ask 0", "got line 0", "ask 1", "got line 1", "ask 2", "got line 2", "eof"]
