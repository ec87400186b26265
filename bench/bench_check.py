"""Time ``lorabuild check recipes/kazari.toml`` end to end, as a user runs it.

Targets (issue #2): at most 0.5 s with the tutorial's 20 images and at most 3 s with 10,000,
on 2 cores, before any model loads. The script lays out a project once in ``.bench/`` (the
shipped recipe, an SD1.5 model header, N captioned 512-px images), warms the page cache with
one run, then prints the median of several runs of the real command in a fresh process.

    python bench/bench_check.py             # 20 and 10,000 images, 7 runs each
    python bench/bench_check.py --sizes 20 --runs 11
    python bench/bench_check.py --recipe flux_character --sizes 20   # another shipped recipe
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_images import make_images  # noqa: E402
from tests.conftest import CAPTIONS, COMPONENT_KEYS, write_checkpoint, write_safetensors  # noqa: E402


def make_project(root: Path, count: int) -> Path:
    """A project laid out like the repository, with ``count`` captioned images; returns the recipe."""
    recipe = root / "recipes" / "kazari.toml"
    if not recipe.exists():
        recipe.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "recipes" / "kazari.toml", recipe)
        write_checkpoint(root / "models" / "ACertainModel.ckpt".replace(".ckpt", ".safetensors"), "sd15")
    images = make_images(root / "data" / "kazari", count)
    for i, image in enumerate(images):
        caption = image.with_suffix(".txt")
        if not caption.exists():
            caption.write_text(CAPTIONS[i % len(CAPTIONS)], encoding="utf-8")
    return recipe


def make_shipped_project(root: Path, name: str, count: int) -> Path:
    """Like :func:`make_project` for another shipped recipe: its model files' headers, ``count`` images."""
    recipe = root / "recipes" / f"{name}.toml"
    if not recipe.exists():
        recipe.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "recipes" / f"{name}.toml", recipe)
    doc = tomllib.loads(recipe.read_text(encoding="utf-8"))
    model = doc["model"]
    write_checkpoint((recipe.parent / model["base"]).resolve(), model.get("family", "sd15"))
    for key, names in COMPONENT_KEYS.items():
        if key in model:
            write_safetensors((recipe.parent / model[key]).resolve(), names)
    images = make_images((recipe.parent / doc["dataset"]["subsets"][0]["source"]).resolve(), count)
    for i, image in enumerate(images):
        caption = image.with_suffix(".txt")
        if not caption.exists():
            caption.write_text(CAPTIONS[i % len(CAPTIONS)], encoding="utf-8")
    return recipe


def time_check(recipe: Path, runs: int) -> list[float]:
    """Wall times of ``lorabuild check`` in a fresh Python process each run."""
    argv = [sys.executable, "-m", "lorabuild", "check", str(recipe)]
    if recipe.stem == "kazari":
        argv += [
            "--set",
            f"model.base={recipe.parent.parent / 'models' / 'ACertainModel.safetensors'}",
            "--set",
            "training.attention=sdpa",  # xformers is checked against installed packages; not the point here
        ]
    subprocess.run(argv, check=True, capture_output=True, cwd=recipe.parent.parent)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=recipe.parent.parent)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 10_000], help="image counts")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per size; the median is printed")
    parser.add_argument("--recipe", default="kazari", help="the shipped recipe (recipes/NAME.toml)")
    args = parser.parse_args()
    targets = {20: 0.5, 10_000: 3.0}
    for count in args.sizes:
        if args.recipe == "kazari":
            recipe = make_project(REPO / ".bench" / f"check-{count}", count)
        else:
            recipe = make_shipped_project(
                REPO / ".bench" / f"check-{args.recipe}-{count}", args.recipe, count
            )
        times = time_check(recipe, args.runs)
        target = targets.get(count)
        verdict = (
            ""
            if target is None
            else f"  target <= {target} s: {'met' if statistics.median(times) <= target else 'MISSED'}"
        )
        print(
            f"lorabuild check {args.recipe}, {count} images: median {statistics.median(times):.3f} s "
            f"(min {min(times):.3f}, max {max(times):.3f}, {args.runs} runs){verdict}"
        )


if __name__ == "__main__":
    main()
