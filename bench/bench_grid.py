"""Time ``lorabuild grid`` (one gen_img process, every epoch's LoRA loaded as its own network)
against what it should cost, on the demo build.

Targets (issue #5):

- ``grid / single <= 1.15``: the grid's wall time against one gen_img process that loads the
  model once and renders the same number of images with a single LoRA (one model load plus the
  sum of per-image sampling at a single LoRA's cost): switching networks per line costs little.
- ``per-epoch / grid >= 3``: one gen_img process per epoch (a model load each) against the grid.

Variants of the grid are timed too (``--network_pre_calc`` off, batch size 1), so the fastest
correct one can be chosen. Runs of each variant alternate, so drift in the machine's load hits
all alike; medians are printed.

The demo build is what ``lorabuild demo`` (``make demo``) trains: the tutorial recipe on the CPU
test model, 10 epochs. This bench links its LoRA files into a scratch build (the demo build is
not modified), so run ``make demo`` first. It needs kohya's Python stack: run it with the Python
that trains. On a 2-core CPU one 64 px image at 2 steps takes tens of seconds, so the full
10 x 4 grid takes a long time; ``--epochs`` and ``--weights`` shrink it.

    python bench/bench_grid.py                            # 10 epochs x 4 weights, 2 steps, 1 run
    python bench/bench_grid.py --epochs 3 --weights 2 --steps 1 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lorabuild.demo.demo import DEMO_RECIPE, prepare_demo  # noqa: E402
from lorabuild.kohya import families  # noqa: E402
from lorabuild.plan import gridcells  # noqa: E402
from lorabuild.plan.plan import Plan  # noqa: E402
from lorabuild.settings import sd_scripts_dir  # noqa: E402
from lorabuild.stages import grid  # noqa: E402
from lorabuild.stages.check import Checked, check, require_plan  # noqa: E402

WEIGHTS = (0.4, 0.6, 0.8, 1.0)


def scratch_build(
    demo_root: Path, scratch: Path, epochs: int, weights: tuple[float, ...], steps: int
) -> tuple[Checked, Plan]:
    """Check the demo recipe into ``scratch`` and link the demo build's LoRA files there."""
    overrides = [
        *prepare_demo(scratch),
        f"evaluate.weights={json.dumps(list(weights))}",
        f"evaluate.steps={steps}",
        "evaluate.baseline=false",
    ]
    checked = check(DEMO_RECIPE, overrides, scratch)
    plan = require_plan(checked)
    source = demo_root / plan.name / "output"
    files = sorted(source.glob(f"{plan.name}-0000*.safetensors"))[:epochs]
    if len(files) < epochs:
        sys.exit(
            f"{source} holds {len(files)} epoch file(s), fewer than {epochs}: run `make demo` (lorabuild demo) first"
        )
    out = plan.build_dir / "output"
    out.mkdir(parents=True, exist_ok=True)
    for file in files:
        target = out / file.name
        if not target.exists():
            try:
                os.link(file, target)
            except OSError:
                shutil.copy2(file, target)
    return checked, plan


def timed(label: str, action: Callable[[], None], results: dict[str, list[float]]) -> None:
    start = time.perf_counter()
    action()
    took = time.perf_counter() - start
    results.setdefault(label, []).append(took)
    print(f"  {label:<28} {took:8.1f} s", flush=True)


def gen_img(
    plan: Plan,
    g: gridcells.GridPlan,
    cells: list[gridcells.Cell],
    networks: tuple[int, ...],
    work: Path,
    log: Path,
) -> None:
    """One plain gen_img process for ``cells`` with ``networks`` loaded (no lorabuild around it)."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "out").mkdir(parents=True)
    (work / "prompts.txt").write_text(
        gridcells.prompt_file_text(g.settings, cells, networks), encoding="utf-8"
    )
    build = plan.build_dir
    argv = families.get(g.settings.family).grid.argv(
        g.settings,
        script=str(sd_scripts_dir() / "gen_img.py"),
        outdir=str(work / "out"),
        prompt_file=str(work / "prompts.txt"),
        network_files=[g.lora_files[e] for e in networks],
        batch=1,
        pre_calc=False,
    )
    with log.open("wb") as sink:
        done = subprocess.run(
            argv,
            cwd=build,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            check=False,
        )
    written = len(list((work / "out").glob("*.png")))
    if done.returncode != 0 or written != len(cells):
        sys.exit(f"gen_img failed (status {done.returncode}, {written}/{len(cells)} images): see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--demo", type=Path, default=Path("build/demo"), help="build root of `lorabuild demo`"
    )
    parser.add_argument("--scratch", type=Path, default=Path(".bench/grid"), help="scratch build root")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--weights", type=int, default=4, help=f"how many of {WEIGHTS}")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--variants", default="auto,pre_calc,no_pre_calc", help="grid variants to time")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    weights = WEIGHTS[-args.weights :]
    checked, plan = scratch_build(args.demo, args.scratch, args.epochs, weights, args.steps)
    loaded = checked.loaded
    build = plan.build_dir
    g = grid.plan_build_grid(plan, loaded)
    n = len(g.cells)
    print(
        f"grid: {len(g.epochs)} epochs x {len(weights)} weights = {n} images, {args.steps} steps, "
        f"{g.settings.width}x{g.settings.height}, {os.cpu_count()} CPUs"
    )
    variants: dict[str, tuple[bool | None, int]] = {
        "grid (as lorabuild chooses)": (None, grid.MAX_BATCH),
        "grid (pre_calc, batched)": (True, grid.MAX_BATCH),
        "grid (no pre_calc, batched)": (False, grid.MAX_BATCH),
        "grid (pre_calc, batch 1)": (True, 1),
    }
    chosen = dict(zip(("auto", "pre_calc", "no_pre_calc", "batch1"), variants, strict=True))
    wanted = [chosen[v] for v in args.variants.split(",") if v]
    # The reference: one process, one LoRA, the same number of images (epoch 1 at each weight).
    single_cells = [
        gridcells.Cell(g.epochs[0], c.weight, c.prompt_index, c.seed, c.prompt, f"single{i:03d}")
        for i, c in enumerate(g.cells)
    ]
    logs = build / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[float]] = {}
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}", flush=True)
        for label in wanted:
            pre_calc, batch = variants[label]

            def render(pre_calc: bool | None = pre_calc, batch: int = batch) -> None:
                grid.render_grid(plan, loaded, force=True, pre_calc=pre_calc, max_batch=batch)

            timed(label, render, results)
        timed(
            "single LoRA, one process",
            lambda: gen_img(
                plan, g, single_cells, (g.epochs[0],), build / "bench-single", logs / "bench-single.log"
            ),
            results,
        )

        def per_epoch() -> None:
            for epoch in g.epochs:
                cells = [c for c in g.cells if c.epoch == epoch]
                gen_img(plan, g, cells, (epoch,), build / f"bench-e{epoch}", logs / f"bench-e{epoch}.log")

        timed("one process per epoch", per_epoch, results)
    med = {k: statistics.median(v) for k, v in results.items()}
    single, per = med["single LoRA, one process"], med["one process per epoch"]
    print(f"\nmedians over {args.runs} run(s), {n} images:")
    for label, value in med.items():
        extra = ""
        if label.startswith("grid"):
            extra = f"  grid/single {value / single:.2f} (target <= 1.15)  per-epoch/grid {per / value:.2f} (target >= 3)"
        print(f"  {label:<28} {value:8.1f} s{extra}")


if __name__ == "__main__":
    main()
