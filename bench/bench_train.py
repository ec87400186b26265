"""Time ``lorabuild train`` against plain ``accelerate launch`` of the same compiled command, and
the no-op ``lorabuild run``.

Targets (issue #4): lorabuild's wall time at most 1.02 x kohya's own on the demo (the process
seam, the progress parsing and the log tee cost nothing measurable next to training), and a
``lorabuild run`` with nothing changed in at most 1 s.

The demo is the tutorial recipe with the CPU overrides of ``lorabuild demo`` (the cached
random-weight test model, 4 synthetic images at 64 px), one epoch unless ``--epochs`` says
otherwise. Runs alternate (plain, lorabuild, plain, …) so that drift in the machine's load hits
both alike; the median of each is printed. Needs kohya's Python stack: run it with the Python
that trains, e.g. ``.venv/bin/python bench/bench_train.py``. Each kohya run takes about a minute
and 8 GB of memory on a CPU; they never overlap.

    python bench/bench_train.py                 # 3 runs each, 1 epoch; then 7 no-op runs
    python bench/bench_train.py --runs 5 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lorabuild.demo.demo import DEMO_RECIPE, prepare_demo  # noqa: E402
from lorabuild.kohya.runner import resolve_argv  # noqa: E402
from lorabuild.settings import sd_scripts_dir  # noqa: E402
from lorabuild.stages.check import check, require_plan  # noqa: E402
from lorabuild.stages.compile import compile_build  # noqa: E402
from lorabuild.stages.prepare import prepare  # noqa: E402


def lorabuild_argv(overrides: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "lorabuild", "train", str(DEMO_RECIPE), "--build-dir", "build"]
    for item in overrides:
        argv += ["--set", item]
    return argv


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process so far (Linux /proc), not counting its children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, float | None]:
    """Wall time of one run, and the CPU time of the started process itself (not of its children).

    The output goes to ``log``, as a user would redirect it. For ``lorabuild train`` the process's
    own CPU time is lorabuild's whole cost (checking, pumping and parsing kohya's output, the
    log); kohya's work is in its children.
    """
    start = time.perf_counter()
    own: float | None = None
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        while process.poll() is None:
            own = _cpu_seconds(process.pid) or own
            time.sleep(0.2)
    took = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed with exit status {process.returncode}; see {log}")
    return took, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each; the medians are compared")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per training run")
    parser.add_argument("--noop-runs", type=int, default=7, help="timed no-op `lorabuild run`s")
    args = parser.parse_args()

    work = REPO / ".bench" / "train"
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    overrides = [*prepare_demo(work), f"training.epochs={args.epochs}"]
    plan = require_plan(check(DEMO_RECIPE, overrides, Path("build")))
    compile_build(plan)
    prepare(plan)
    sd_scripts = sd_scripts_dir()
    plain = resolve_argv(plan.launch, sd_scripts)
    env = {
        **os.environ,
        **dict(plan.launch.env),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "GIT_CEILING_DIRECTORIES": str(sd_scripts.resolve().parent),
    }
    ours = lorabuild_argv(overrides)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    plain_times: list[float] = []
    ours_times: list[float] = []
    ours_cpu: list[float] = []
    for i in range(args.runs):
        plain_times.append(timed(plain, plan.build_dir, env, logs / f"plain-{i}.log")[0])
        took, own = timed(ours, work, env, logs / f"lorabuild-{i}.log")
        ours_times.append(took)
        if own is not None:
            ours_cpu.append(own)
        print(
            f"run {i + 1}: accelerate launch {plain_times[-1]:.1f} s, lorabuild train {took:.1f} s "
            f"(lorabuild's own CPU time {own if own is not None else float('nan'):.2f} s)"
        )
    ratio = statistics.median(ours_times) / statistics.median(plain_times)
    print(
        f"training ({args.epochs} epoch(s), {plan.total_steps} steps): accelerate launch median "
        f"{statistics.median(plain_times):.1f} s, lorabuild train median {statistics.median(ours_times):.1f} s, "
        f"ratio {ratio:.3f}  target <= 1.02: {'met' if ratio <= 1.02 else 'MISSED'}"
    )
    if ours_cpu:
        share = statistics.median(ours_cpu) / statistics.median(plain_times)
        print(
            f"lorabuild's own CPU time per train: median {statistics.median(ours_cpu):.2f} s "
            f"= {100 * share:.1f}% of kohya's wall time (the wall ratio above also carries the machine's noise)"
        )

    # The last `lorabuild train` left the build up to date: `lorabuild run` has nothing to do.
    noop = [*ours]
    noop[noop.index("train")] = "run"
    noop_times = [timed(noop, work, env, logs / "noop.log")[0] for _ in range(args.noop_runs)]
    if "up to date" not in (logs / "noop.log").read_text(encoding="utf-8"):
        raise SystemExit(f"the no-op run was not a no-op; see {logs / 'noop.log'}")
    median = statistics.median(noop_times)
    print(
        f"lorabuild run with nothing changed: median {median:.3f} s (min {min(noop_times):.3f}, max "
        f"{max(noop_times):.3f}, {args.noop_runs} runs)  target <= 1 s: {'met' if median <= 1 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
