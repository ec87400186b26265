"""Time ``lorabuild.probe.images.probe_images`` over a folder of small images.

``lorabuild check`` probes every image of a dataset, and must finish 10,000 images in under
3 s on 2 cores. This script makes N 512-px images (half PNG, half JPEG) once, in a cache folder
reused by later runs, then prints the median of 5 timed runs for each worker setting.

    python bench/bench_images.py                # 10,000 images in .bench/images-10000
    python bench/bench_images.py -n 20 --workers 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

from lorabuild.probe.images import list_folder, probe_images

REPO = Path(__file__).resolve().parent.parent


def make_images(folder: Path, count: int) -> list[Path]:
    """Create ``count`` 512-px images in ``folder`` unless they are all there already."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [folder / f"{i:06d}.{'png' if i % 2 == 0 else 'jpg'}" for i in range(count)]
    missing = [p for p in wanted if not p.exists()]
    if missing:
        print(f"creating {len(missing)} images in {folder} ...", file=sys.stderr)
        for path in missing:
            index = int(path.stem)
            # A gradient with a per-file colour: realistic enough headers, small files.
            image = Image.linear_gradient("L").resize((512, 384 + (index % 3) * 64)).convert("RGB")
            image.paste((index * 37 % 256, index * 91 % 256, 128), (0, 0, 64, 64))
            image.save(path, quality=85) if path.suffix == ".jpg" else image.save(path)
    return wanted


def time_probe(paths: list[Path], workers: int | None, runs: int) -> float:
    """Median wall time of ``runs`` calls of ``probe_images``, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        infos = probe_images(paths, workers=workers)
        times.append(time.perf_counter() - start)
        bad = [i for i in infos if i.problem]
        if bad:
            raise SystemExit(f"unexpected problem: {bad[0].path}: {bad[0].problem}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=10_000, help="number of images (default 10000)")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the images (default .bench/)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs; the median is printed (default 5)")
    parser.add_argument(
        "--workers",
        type=int,
        action="append",
        help="worker setting to time; repeatable (default: probe_images' default, then 2 and 8 threads)",
    )
    args = parser.parse_args()
    folder = args.cache or REPO / ".bench" / f"images-{args.count}"
    make_images(folder, args.count)
    paths = list(list_folder(folder).images)[: args.count]
    probe_images(paths[:100])  # import plugins and warm the page cache before timing
    settings: list[int | None] = args.workers or [None, 2, 8]
    print(f"{len(paths)} images, {os.cpu_count()} CPUs, median of {args.runs} runs")
    for workers in settings:
        seconds = time_probe(paths, workers, args.runs)
        label = "auto" if workers is None else str(workers)
        print(f"  workers={label:>4}: {seconds:.3f} s  ({seconds / len(paths) * 1e6:.0f} us/image)")


if __name__ == "__main__":
    main()
