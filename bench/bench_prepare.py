"""Time ``lorabuild prepare recipes/kazari.toml`` on a large generated dataset, cold and warm.

Targets (issue #3), on 2 cores with 10,000 captioned 512-px images: cold (no build folder: every
header probed, every image linked, every caption written) at most 5 s; warm (nothing changed)
at most 1 s; peak memory flat in the number of images. Each run is the real command in a fresh
process; its peak RSS comes from ``os.wait4``. The dataset is laid out once under ``.bench/``
(half PNG, half JPEG; every caption a different draw of booru tags, so caption rules cannot be
served from a handful of repeated strings) and reused by later runs.

    python bench/bench_prepare.py                        # 2,500 and 10,000 images
    python bench/bench_prepare.py --sizes 10000 --runs 5
    python bench/bench_prepare.py --root /dev/shm/lb     # the same on tmpfs: lorabuild's own cost

The CPU time (user + system, the decode workers included) is printed too: on a shared machine
it varies far less than the wall time. The load average at the end says how shared it was.

File creation dominates a cold run (two new directory entries per image: the link and the
caption), so its time depends on the file system far more than on lorabuild; ``--root`` on a
tmpfs shows lorabuild's own share.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import write_checkpoint  # noqa: E402

_TAGS = (
    "1girl",
    "solo",
    "smile",
    "looking_at_viewer",
    "short_hair",
    "brown_hair",
    "long_hair",
    "flower",
    "hair_ornament",
    "hair_flower",
    "school_uniform",
    "serafuku",
    "skirt",
    "blush",
    "open_mouth",
    "upper_body",
    "full_body",
    "simple_background",
    "white_background",
    "transparent_background",
    "standing",
    "sitting",
    "outdoors",
    "indoors",
    "sky",
    "cloud",
    "day",
    "bangs",
    "closed_eyes",
    "hairband",
    "red_flower",
    "pink_flower",
    "white_flower",
    "bow",
    "ribbon",
    "sailor_collar",
    "pleated_skirt",
    "shirt",
    "white_shirt",
    "jacket",
    "hand_up",
    "arms_behind_back",
    "from_side",
    "profile",
)


def make_images(folder: Path, count: int) -> list[Path]:
    """``count`` distinct 512-px images (half PNG, half JPEG), made once and reused."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [folder / f"{i:06d}.{'png' if i % 2 == 0 else 'jpg'}" for i in range(count)]
    missing = [p for p in wanted if not p.exists()]
    if missing:
        print(f"creating {len(missing)} images in {folder} ...", file=sys.stderr)
    gradient = Image.linear_gradient("L").resize((512, 512)).convert("RGB")
    for path in missing:
        index = int(path.stem)
        image = gradient.crop((0, 0, 512, 384 + (index % 3) * 64))
        # Two patches whose colours spell the index: no two files are alike (so the duplicate
        # check has nothing to report, as in a real dataset).
        image.paste((index & 255, (index >> 8) & 255, 128), (0, 0, 64, 64))
        image.paste((255 - (index & 255), 64, (index >> 8) & 255), (448, 0, 512, 64))
        image.save(path, quality=90) if path.suffix == ".jpg" else image.save(path)
    return wanted


def make_project(root: Path, count: int) -> Path:
    """A project like the repository with ``count`` captioned images; returns the recipe."""
    recipe = root / "recipes" / "kazari.toml"
    if not recipe.exists():
        recipe.parent.mkdir(parents=True, exist_ok=True)
        text = (REPO / "recipes" / "kazari.toml").read_text(encoding="utf-8")
        # The tutorial's xformers is checked against the installed packages; not the point here.
        text = text.replace('"../models/ACertainModel.ckpt"', '"../models/ACertainModel.safetensors"')
        recipe.write_text(text.replace('attention = "xformers"', 'attention = "sdpa"'), encoding="utf-8")
        write_checkpoint(root / "models" / "ACertainModel.safetensors", "sd15")
    images = make_images(root / "data" / "kazari", count)
    rng = random.Random(count)
    for image in images:
        caption = image.with_suffix(".txt")
        if not caption.exists():
            caption.write_text(", ".join(rng.sample(_TAGS, rng.randint(8, 20))), encoding="utf-8")
    return recipe


def run_prepare(recipe: Path) -> tuple[float, int, float]:
    """Wall time (s), peak RSS (KiB) and CPU time (s, user + system, with its worker processes)
    of one ``lorabuild prepare`` in a fresh process."""
    argv = [sys.executable, "-m", "lorabuild", "prepare", str(recipe.relative_to(recipe.parent.parent))]
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=recipe.parent.parent, stdout=output, stderr=subprocess.STDOUT)
        # wait4 rather than Popen.wait: it gives this child's own peak memory.
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            output.seek(0)
            raise SystemExit(f"lorabuild prepare failed ({process.returncode}):\n{output.read().decode()}")
    return elapsed, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2500, 10_000], help="image counts")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each kind; medians are printed")
    parser.add_argument("--root", type=Path, default=REPO / ".bench", help="where the projects are made")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; projects under {args.root}; {args.runs} runs each")
    for count in args.sizes:
        recipe = make_project(args.root / f"prepare-{count}", count)
        build = recipe.parent.parent / "build"
        shutil.rmtree(build, ignore_errors=True)
        run_prepare(recipe)  # warms the page cache and Python's bytecode cache
        cold, warm, peaks, cpu_cold, cpu_warm = [], [], [], [], []
        for _ in range(args.runs):
            shutil.rmtree(build)
            seconds, peak, cpu = run_prepare(recipe)
            cold.append(seconds)
            cpu_cold.append(cpu)
            peaks.append(peak)
        for _ in range(args.runs):
            seconds, peak, cpu = run_prepare(recipe)
            warm.append(seconds)
            cpu_warm.append(cpu)
            peaks.append(peak)
        verdict = ""
        if count == 10_000:
            verdict = (
                f"  [cold <= 5 s: {'met' if statistics.median(cold) <= 5 else 'MISSED'}; "
                f"warm <= 1 s: {'met' if statistics.median(warm) <= 1 else 'MISSED'}]"
            )
        print(
            f"prepare, {count} images: cold {_median(cold)}; warm {_median(warm)}; "
            f"peak RSS {max(peaks) / 1024:.0f} MiB; CPU cold {statistics.median(cpu_cold):.2f} s, "
            f"warm {statistics.median(cpu_warm):.2f} s; load {os.getloadavg()[0]:.1f}{verdict}"
        )


if __name__ == "__main__":
    main()
