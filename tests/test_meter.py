"""Progress on long work: a line redrawn in place on a terminal, nothing at all on a pipe."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lorabuild.build import cutout
from lorabuild.render.meter import Meter
from tests.conftest import Project
from tests.test_cutout import cut_project, prepare  # noqa: F401  (the fixture)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_meter_draws_count_rate_and_eta_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    meter = Meter(out, enabled=True, clock=clock)
    meter("masks", 0, 40)
    clock.now += 2
    meter("masks", 10, 40)
    clock.now += 0.05
    meter("masks", 11, 40)  # within 0.1 s of the last draw: not drawn
    clock.now += 6
    meter("masks", 40, 40)
    meter("cut-outs", 1, 2)
    meter.close()
    assert out.getvalue() == (
        "\r\x1b[Kmasks  0/40  0%"
        "\r\x1b[Kmasks  10/40  25%  5.0/s  ETA 0:06"
        "\r\x1b[Kmasks  40/40  100%  in 0:08"
        "\n\r\x1b[Kcut-outs  1/2  50%"
        "\n"
    )


def test_meter_is_silent_off_a_terminal() -> None:
    out = io.StringIO()  # not a terminal
    meter = Meter(out)
    meter("masks", 1, 2)
    meter.close()
    assert out.getvalue() == ""


def test_cut_out_reports_each_step(cut_project: Project) -> None:  # noqa: F811
    seen: list[tuple[str, int, int]] = []
    from lorabuild.stages.check import check
    from lorabuild.stages.prepare import prepare as stage_prepare

    checked = check(cut_project.recipe, [], cut_project.build)
    assert checked.plan is not None
    stage_prepare(checked.plan, checked.loaded.recipe, progress=lambda *step: seen.append(step))
    steps = {step for step, _, _ in seen}
    assert {"reading images", "masks", "cut-outs", "staging images"} <= steps
    assert ("masks", 4, 4) in seen and ("cut-outs", 4, 4) in seen and ("staging images", 4, 4) in seen
    assert cutout  # the fake segmenter is patched in by the fixture


def _prepare_with_stderr(project: Project, stderr: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "lorabuild", "prepare", "recipe.toml"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_cold_prepare_shows_progress_on_a_terminal_only(project: Project) -> None:
    # Transparent images: converted (flattened) in the stage, the slow kind of staging.
    for path in sorted((project.root / "data" / "char").glob("*.png")):
        Image.new("RGBA", (64, 64), (200, 10, 10, 128)).save(path)
    primary, secondary = pty.openpty()
    try:
        _prepare_with_stderr(project, secondary)
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
    text = shown.decode()
    assert "\r\x1b[Kstaging images  4/4  100%  in 0:0" in text

    # The same cold prepare on a pipe: not a byte of it.
    import shutil

    shutil.rmtree(project.build)
    done = subprocess.run(
        [sys.executable, "-m", "lorabuild", "prepare", "recipe.toml"],
        cwd=project.root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        timeout=120,
    )
    assert done.returncode == 0
    assert "\r" not in done.stderr and "staging images" not in done.stderr
