"""Background removal: masks from a local segmentation model, then cut-outs rendered for the stage.

``[images.remove_background]`` runs in two cached steps, both under ``build/<name>/cutout/``:

1. **Masks.** :mod:`lorabuild.kohya.segment` (a script run with kohya's Python, through the one
   process seam) feeds each image to the ONNX model as its kind expects
   (:mod:`lorabuild.probe.segmentation`) and writes the soft mask as a grey PNG:
   ``masks/<model key>/<image sha256>-o<orientation>.png``. The model key hashes the model file's
   size and mtime, its kind and input size: a new model runs again, the same model never does
   for an image it has seen (identical images, in any subset or build folder copy, are run once).
2. **Cut-outs.** :func:`render_cutout` applies a mask with Pillow: the threshold (or soft edges)
   into alpha, the image's own alpha kept, the crop to the subject with its margin, then the
   flatten onto ``[images] background`` (or the alpha kept, ``flatten_transparency = false``),
   into ``render/<render key>.png``. The render key hashes the mask's key and every option, so a
   new threshold re-renders from the cached masks without running the model. An image whose
   subject covers less than ``min_coverage`` or more than ``max_coverage`` is kept as it is, and
   named in a warning.

Staging then hard-links each rendered cut-out into ``dataset/`` (:func:`lorabuild.plan.plan.with_cutouts`,
:mod:`lorabuild.build.dataset`); the sources are only read. ``render/decisions.json`` remembers each
render's size and coverage (or why the original was kept), so an unchanged ``prepare`` opens no
image; cut-outs no longer used are deleted at the end of a run, masks are kept (switching back to
a model costs nothing). Deleting ``build/<name>/cutout/`` clears both; the last model run's
output is in ``cutout/segment.log``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops

from lorabuild.kohya import segment
from lorabuild.kohya.scriptrun import run_script
from lorabuild.kohya.tagging import content_digests
from lorabuild.probe.imagefix import background_rgb
from lorabuild.probe.segmentation import Segmenter, options_key, probe
from lorabuild.problems import LorabuildError, Problem, warning
from lorabuild.recipe.schema import ImagesSection, RemoveBackground
from lorabuild.render.meter import Progress
from lorabuild.render.writer import write_atomic

CACHE_VERSION = 1
"""Bump when a mask or a cut-out for the same inputs changes."""

SEGMENTER_NAME = "the segmentation model"
"""How messages name the script's run."""

SEGMENT_SCRIPT = Path(segment.__file__)
"""The script kohya's Python runs."""

SEGMENT_PACKAGES = ("numpy", "onnxruntime")
"""What the script imports besides Pillow (pip names too)."""

# EXIF orientation -> the transpose that shows the image upright (as lorabuild.probe.imagefix).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Where soft edges count as subject (coverage, crop box): half opaque.
_SOFT_CUT = 128


class CutoutError(LorabuildError):
    """The segmentation model could not run, or failed."""


@dataclass(frozen=True)
class CutoutJob:
    """One image to cut out.

    Attributes:
        source: The image (only read).
        orientation: The EXIF orientation to apply first (1: none).
    """

    source: Path
    orientation: int


@dataclass(frozen=True)
class Cutout:
    """One image's cut-out, or why the original is kept.

    Attributes:
        file: The rendered cut-out (None: the original is kept).
        key: Its render key (what decides its bytes).
        size: Its ``(width, height)``.
        coverage: The fraction of the image the subject covers.
        kept: Why the original is kept (None when cut out).
    """

    file: Path | None
    key: str
    size: tuple[int, int]
    coverage: float
    kept: str | None = None


@dataclass(frozen=True)
class CutoutRun:
    """What one call did: each job's result, and how much work it took."""

    results: dict[CutoutJob, Cutout]
    segmented: int
    rendered: int


def model_key(settings: RemoveBackground, segmenter: Segmenter) -> str:
    """What decides a mask besides the image (the cache key of step 1)."""
    stat = settings.model.stat()
    # Hashing a 170 MB model on every prepare would cost more than it is worth; its size and
    # mtime change when it is replaced (as for the WD14 tagger).
    data = {
        "version": CACHE_VERSION,
        "model": [os.path.abspath(settings.model), stat.st_size, stat.st_mtime_ns],
        "kind": segmenter.kind,
        "input": [segmenter.input_name, segmenter.height, segmenter.width],
        "preset": [segmenter.preset.mean, segmenter.preset.std, segmenter.preset.sigmoid],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def cut_out(
    jobs: Sequence[CutoutJob],
    settings: RemoveBackground,
    images: ImagesSection,
    work_dir: Path,
    *,
    python: str = sys.executable,
    on_line: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> CutoutRun:
    """Cut out every job's image, running the model only for images it has not seen.

    Args:
        jobs: The images and their orientations.
        settings: The ``[images.remove_background]`` table that applies to them.
        images: The recipe's ``[images]`` (the background, whether to flatten).
        work_dir: The build folder; everything goes in ``cutout/``.
        python: The Python with numpy and onnxruntime (kohya's).
        on_line: Receives each line the model's run prints besides its progress (default: printed).
        progress: Told how the masks and the cut-outs advance.

    Raises:
        CutoutError: The model does not fit, cannot run, or failed.
    """
    if not jobs:
        return CutoutRun({}, 0, 0)
    segmenter = probe(settings)
    if isinstance(segmenter, str):
        raise CutoutError(f"{settings.model}: {segmenter}")
    root = work_dir / "cutout"
    digests = content_digests([job.source for job in jobs], root / "digests.json", progress=progress)
    model = model_key(settings, segmenter)
    masks = root / "masks" / model[:16]

    def mask_of(job: CutoutJob) -> Path:
        return masks / f"{digests[job.source]}-o{job.orientation}.png"

    todo: dict[Path, CutoutJob] = {}
    for job in jobs:
        if not mask_of(job).is_file():
            todo.setdefault(mask_of(job), job)  # identical images are run once
    if todo:
        masks.mkdir(parents=True, exist_ok=True)
        _segment(segmenter, settings, todo, root, python, on_line, progress)

    options = options_key(settings, images)
    decisions_file = root / "render" / "decisions.json"
    decisions = _load_json(decisions_file)
    results: dict[CutoutJob, Cutout] = {}
    to_render: list[tuple[CutoutJob, str]] = []
    for job in jobs:
        key = _render_key(model, mask_of(job).name, options)
        decision = decisions.get(key)
        file = root / "render" / f"{key[:32]}.png"
        if isinstance(decision, dict) and (decision.get("kept") or file.is_file()):
            results[job] = _cutout(file, key, decision)
        else:
            to_render.append((job, key))
    if to_render:
        (root / "render").mkdir(parents=True, exist_ok=True)
        done = 0

        def render(item: tuple[CutoutJob, str]) -> dict[str, Any]:
            job, key = item
            return render_cutout(job, mask_of(job), settings, images, root / "render" / f"{key[:32]}.png")

        pool = ThreadPoolExecutor(max_workers=min(len(to_render), os.cpu_count() or 1))
        try:
            for (job, key), decision in zip(to_render, pool.map(render, to_render), strict=True):
                decisions[key] = decision
                results[job] = _cutout(root / "render" / f"{key[:32]}.png", key, decision)
                done += 1
                if progress is not None:
                    progress("cut-outs", done, len(to_render))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return CutoutRun(results, len(todo), len(to_render))


def _cutout(file: Path, key: str, decision: Mapping[str, Any]) -> Cutout:
    kept = decision.get("kept")
    size = decision.get("size") or [0, 0]
    return Cutout(
        None if kept else file,
        key,
        (int(size[0]), int(size[1])),
        float(decision.get("coverage", 0.0)),
        str(kept) if kept else None,
    )


def save_decisions(work_dir: Path, runs: Sequence[CutoutRun]) -> None:
    """Remember the cut-outs made, and delete the cut-outs none of ``runs`` uses."""
    root = work_dir / "cutout" / "render"
    if not root.is_dir():
        return
    decisions = _load_json(root / "decisions.json")
    used = {c.key: c for run in runs for c in run.results.values()}
    kept = {
        key: {"size": list(c.size), "coverage": round(c.coverage, 6), "kept": c.kept}
        for key, c in used.items()
    }
    if kept != decisions:
        write_atomic(root / "decisions.json", (json.dumps(kept, indent=0, sort_keys=True) + "\n").encode())
    names = {f"{key[:32]}.png" for key in used}
    with os.scandir(root) as entries:
        stale = [e.path for e in entries if e.name.endswith(".png") and e.name not in names]
    for path in stale:
        with contextlib.suppress(OSError):
            os.unlink(path)


def kept_warnings(runs: Mapping[str, CutoutRun]) -> list[Problem]:
    """A warning per image kept as it was, by the subset key path that asked for the cut-out."""
    problems = []
    for key, run in runs.items():
        for job, cutout in sorted(run.results.items(), key=lambda item: str(item[0].source)):
            if cutout.kept:
                problems.append(warning(str(job.source), f"not cut out ({key}): {cutout.kept}"))
    return problems


def render_cutout(
    job: CutoutJob, mask_file: Path, settings: RemoveBackground, images: ImagesSection, out: Path
) -> dict[str, Any]:
    """Apply ``mask_file`` to the image and write the cut-out to ``out``; its decision record.

    Returns:
        ``{"size": [w, h], "coverage": c, "kept": None}``, or ``kept`` saying why the original is
        kept (nothing written then).
    """
    with Image.open(job.source) as opened:
        opened.load()
        image: Image.Image = opened
        transpose = _TRANSPOSE.get(job.orientation)
        if transpose is not None:
            image = image.transpose(transpose)
        own_alpha = (
            image.convert("RGBA").getchannel("A")
            if image.mode in _ALPHA_MODES or "transparency" in image.info
            else None
        )
        rgb = image.convert("RGB")
    with Image.open(mask_file) as opened_mask:
        mask = opened_mask.convert("L")
    if mask.size != rgb.size:
        mask = mask.resize(rgb.size, Image.Resampling.BILINEAR)
    if settings.threshold is not None:
        cut = max(1, round(settings.threshold * 255))
        alpha = mask.point(lambda v: 255 if v >= cut else 0)
    else:
        cut, alpha = _SOFT_CUT, mask
    if own_alpha is not None:
        alpha = ImageChops.darker(alpha, own_alpha)
    subject = alpha.point(lambda v: 255 if v >= cut else 0)
    histogram = subject.histogram()
    coverage = histogram[255] / max(1, rgb.width * rgb.height)
    if coverage < settings.min_coverage:
        return _kept(
            rgb.size,
            coverage,
            f"the subject covers {coverage:.1%} of it, under min_coverage ({settings.min_coverage:g})",
        )
    if coverage > settings.max_coverage:
        return _kept(
            rgb.size,
            coverage,
            f"the subject covers {coverage:.1%} of it, over max_coverage ({settings.max_coverage:g})",
        )
    cutout = rgb.convert("RGBA")
    cutout.putalpha(alpha)
    if settings.crop:
        box = subject.getbbox()
        if box is not None:
            cutout = cutout.crop(crop_box(box, rgb.size, settings.crop_margin))
    if images.flatten_transparency:
        flat = Image.new("RGBA", cutout.size, (*background_rgb(images.background), 255))
        flat.alpha_composite(cutout)
        result = flat.convert("RGB")
    else:
        result = cutout
    data = io.BytesIO()
    result.save(data, format="PNG", compress_level=1)
    write_atomic(out, data.getvalue(), durable=False)
    return {"size": list(result.size), "coverage": round(coverage, 6), "kept": None}


def crop_box(
    box: tuple[int, int, int, int], size: tuple[int, int], margin: float
) -> tuple[int, int, int, int]:
    """The subject's ``box`` grown by ``margin`` of its longer side, inside the image."""
    left, top, right, bottom = box
    pad = round(max(right - left, bottom - top) * margin)
    return (max(0, left - pad), max(0, top - pad), min(size[0], right + pad), min(size[1], bottom + pad))


def _kept(size: tuple[int, int], coverage: float, why: str) -> dict[str, Any]:
    return {"size": list(size), "coverage": round(coverage, 6), "kept": f"{why}: the original is staged"}


def _render_key(model: str, mask_name: str, options: Mapping[str, Any]) -> str:
    data = {"version": CACHE_VERSION, "model": model, "mask": mask_name, **options}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _segment(
    segmenter: Segmenter,
    settings: RemoveBackground,
    todo: Mapping[Path, CutoutJob],
    root: Path,
    python: str,
    on_line: Callable[[str], None] | None,
    progress: Progress | None,
) -> None:
    total = len(todo)
    emit = on_line or (lambda line: print(line, flush=True))

    def handle(line: str) -> None:
        if line.startswith(segment.PROGRESS):
            if progress is not None:
                done = line[len(segment.PROGRESS) :].partition("/")[0]
                progress("masks", int(done) if done.isdigit() else 0, total)
            return
        emit(line)

    with tempfile.TemporaryDirectory(prefix="segment-", dir=root) as tmp:
        job = {
            "model": os.path.abspath(settings.model),
            "input": segmenter.input_name,
            "height": segmenter.height,
            "width": segmenter.width,
            "mean": list(segmenter.preset.mean),
            "std": list(segmenter.preset.std),
            "sigmoid": segmenter.preset.sigmoid,
            "images": [
                [os.path.abspath(j.source), j.orientation, os.path.abspath(mask)] for mask, j in todo.items()
            ],
        }
        job_file = Path(os.path.abspath(tmp)) / "job.json"
        job_file.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
        argv = [python, str(SEGMENT_SCRIPT), str(job_file)]
        run = run_script(SEGMENTER_NAME, argv, Path(tmp), root / "segment.log", None, handle)
    if run.interrupted:
        raise CutoutError(run.interrupted_message("background removal"))
    if run.failed:
        raise CutoutError(run.failure_message())
    missing = [j.source for mask, j in todo.items() if not mask.is_file()]
    if missing:
        raise CutoutError(run.missing_message(f"a mask for {missing[0]}"))


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def preflight(settings: Sequence[RemoveBackground], python: str = sys.executable) -> None:
    """Fail with a clear message, before anything is staged, when background removal cannot run.

    Checks every model (there, an ONNX model, one that fits its kind) and, for lorabuild's own
    Python (the one that runs the script by default), that numpy and onnxruntime are importable.
    The pre-flight rules (:mod:`lorabuild.rules.images`) say the same at check time.

    Raises:
        CutoutError: What is wrong and how to fix it.
    """
    for table in settings:
        fitted = probe(table)
        if isinstance(fitted, str):
            raise CutoutError(f"images.remove_background.model: {table.model}: {fitted}")
    if not settings or os.path.abspath(python) != os.path.abspath(sys.executable):
        return  # another interpreter's packages cannot be looked up from here
    missing = [name for name in SEGMENT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise CutoutError(
            f"images.remove_background: the segmentation model runs with onnxruntime, and "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed for "
            f"{sys.executable}: pip install {' '.join(missing)}"
        )
