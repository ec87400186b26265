"""``prepare``'s decode-check workers die with it, however it is stopped (issue 10, defect 9).

A real ``lorabuild prepare`` runs on enough images for the process pool
(:data:`lorabuild.probe.decodecheck._POOL_FROM`), its output read through a pipe as a script would;
it is killed (SIGTERM, SIGKILL) while its workers decode. Within a few seconds no worker may be
left, and the pipe must reach EOF (a worker holding it would hang the reader).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorabuild.probe.decodecheck import _POOL_FROM
from tests.conftest import REPO, Project, write_image

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")

# lorabuild's command line with each decode slowed down (the workers are forked, so they get
# it too) and a file touched when the first decode starts. NO_DEATHSIG leaves the workers with
# only their watchdog thread, as on systems without PR_SET_PDEATHSIG.
WRAPPER = """
import os, sys, time
from pathlib import Path
from lorabuild.probe import decodecheck
real = decodecheck.decode_problem
def slow(path):
    Path("decoding").touch()
    time.sleep(0.05)
    return real(path)
decodecheck.decode_problem = slow
if os.environ.get("NO_DEATHSIG"):
    decodecheck._PR_SET_PDEATHSIG = 0  # an invalid prctl option: the call fails, as if unsupported
from lorabuild.cli import main
sys.argv = ["lorabuild", *sys.argv[1:]]
main()
"""


def stat_of(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[1])


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := stat_of(int(entry))) is not None and st[1] == pid:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    st = stat_of(pid)
    return st is not None and st[0] != "Z"  # a zombie has ended (its reaper is not ours)


def wait_for(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def big_project(project: Project) -> Project:
    for i in range(_POOL_FROM + 16):
        write_image(project.root / f"data/char/{i:03d}.png", (64, 64), blue=i)
    return project


@pytest.fixture
def workers_left() -> Iterator[list[int]]:
    """Worker pids the test saw; any still alive at the end are killed (a failed test leaves none)."""
    seen: list[int] = []
    yield seen
    for pid in seen:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("how", "env"),
    [
        (signal.SIGTERM, {}),
        (signal.SIGKILL, {}),
        (signal.SIGKILL, {"NO_DEATHSIG": "1"}),
    ],
    ids=["SIGTERM", "SIGKILL", "SIGKILL-watchdog-only"],
)
def test_workers_end_with_prepare_and_its_output_reaches_eof(
    big_project: Project, how: signal.Signals, env: dict[str, str], workers_left: list[int]
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, "prepare", "recipe.toml"],
        cwd=big_project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )
    assert process.stdout is not None
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        started = wait_for(lambda: (big_project.root / "decoding").exists() and children(process.pid), 30)
        assert started, f"the workers never started: {output}"
        workers_left.extend(children(process.pid))
        assert len(workers_left) >= 1
        process.send_signal(how)
        process.wait(timeout=10)
        assert wait_for(lambda: not any(alive(pid) for pid in workers_left), 5), "workers outlived prepare"
        reader.join(timeout=5)
        assert not reader.is_alive(), "prepare's output never reached EOF: a process still holds it"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if how == signal.SIGTERM:
        assert process.returncode == 128 + signal.SIGTERM
        text = b"".join(output).decode()
        assert "lorabuild stopped (SIGTERM)" in text and "Traceback" not in text
