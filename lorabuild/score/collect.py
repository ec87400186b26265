"""Score a build's grid: read what the earlier stages left, hash it (cached), and make the shortlist.

The grid's cells come from ``grid/grid.json`` (:mod:`lorabuild.build.gridmanifest`), the training
images from the plan's staged subsets (``dataset/<folder>/``; regularisation images are not
training images), the validation loss from kohya's TensorBoard logs
(:mod:`lorabuild.render.losslog`). Whatever is missing (no grid yet, the ``score`` extra not
installed, one seed, no baseline, no validation split) is said in the shortlist's notes, and the
shortlist ranks on what there is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lorabuild.build.gridmanifest import Sheet, read_manifest
from lorabuild.plan.layout import BuildLayout
from lorabuild.plan.plan import Plan
from lorabuild.render.losslog import epoch_table, read_scalars
from lorabuild.score.clip import clip_scores
from lorabuild.score.hashes import HashCache, hashing_missing
from lorabuild.score.likeness import (
    ANIMEFACE,
    DLIB_FACE,
    FaceMatch,
    anime_features,
    anime_missing,
    face_distances,
    face_features,
    face_missing,
    likeness,
)
from lorabuild.score.measures import (
    Candidate,
    GridCell,
    ModelScores,
    TrainingImage,
    candidates,
    score_cells,
)
from lorabuild.score.shortlist import Shortlist, shortlist

Progress = Callable[[str, int, int], None]
"""Told ``(step, done, total)`` as the scoring advances (:class:`lorabuild.render.meter.Meter` draws it)."""


def _quiet(step: str, done: int, total: int) -> None:
    """A :data:`Progress` that shows nothing."""


def _each(
    rels: Sequence[str], step: str, progress: Progress, compute: Callable[[str], Any]
) -> dict[str, Any]:
    """``compute(rel)`` of each of ``rels``, telling ``progress`` as it goes."""
    found = {}
    for done, rel in enumerate(rels, 1):
        found[rel] = compute(rel)
        progress(step, done, len(rels))
    return found


def grid_cells(sheets: Sequence[Sheet]) -> list[GridCell]:
    """The LoRA cells of the grid, each with the baseline of its prompt, seed and row."""
    cells = []
    for sheet in sheets:
        base_col = next((i for i, c in enumerate(sheet.columns) if c.weight is None), None)
        for r, row in enumerate(sheet.rows):
            files = sheet.cells[r] if r < len(sheet.cells) else ()
            baseline = files[base_col] if base_col is not None and base_col < len(files) else None
            for c, column in enumerate(sheet.columns):
                rel = files[c] if c < len(files) else None
                if column.weight is None or rel is None:
                    continue
                cells.append(
                    GridCell(sheet.id, sheet.prompt, sheet.seed, row.epoch, column.weight, rel, baseline)
                )
    return cells


def training_files(plan: Plan) -> list[tuple[str, str]]:
    """The staged training images: (file relative to the build, the user's source file as messages name it)."""
    found = []
    for subset in plan.subsets:
        if subset.is_reg:
            continue
        for image in subset.images:
            rel = f"{BuildLayout.staged(subset.folder)}/{image.name}"
            found.append((rel, _display(image.source, plan.recipe_file.parent)))
    return found


def _display(source: Path, base: Path) -> str:
    try:
        return source.resolve().relative_to(base.resolve()).as_posix()
    except (ValueError, OSError):
        return source.as_posix()


def validation_losses(build: Path) -> dict[int, float]:
    """The validation loss per epoch from kohya's logs (empty without a validation split)."""
    logs = BuildLayout(build).logs_dir
    if not logs.is_dir():
        return {}
    try:
        rows = epoch_table(read_scalars(logs))
    except Exception:  # a half-written event file must not stop the scores
        return {}
    return {r.epoch: r.validation for r in rows if r.validation is not None}


def preferred_weight(plan: Plan) -> float:
    """The middle of the grid's weights (the upper middle of an even count), as install's default."""
    weights = sorted(plan.grid.weights)
    return weights[len(weights) // 2]


def score_build(plan: Plan, build: Path | None = None, progress: Progress | None = None) -> Shortlist:
    """The shortlist of ``plan``'s build, with every cell's scores (hashes cached in the build).

    ``progress`` is told how the scoring of pictures not in the cache advances (each step's
    pictures: hashes, anime faces, photoreal faces, CLIP).
    """
    build = build if build is not None else plan.build_dir
    progress = progress or _quiet
    pick = plan.pick
    notes: list[str] = []
    sheets = read_manifest(build)
    cells = grid_cells(sheets or [])
    if sheets is None:
        notes.append("no grid yet: run lorabuild grid (the scores judge its pictures)")
    validation = validation_losses(build)
    if not validation:
        notes.append(
            "no validation loss: set dataset.validation_split to rank epochs by it"
            if not plan.dataset_config.dataset.validation_split
            else "no validation loss logged yet: run lorabuild train"
        )
    missing = hashing_missing()
    scored = []
    if cells and missing:
        notes.append(missing + ": only the validation loss ranks the epochs")
    elif cells:
        cache = HashCache(build)
        files = training_files(plan)
        grid = sorted({c.file for c in cells} | {c.baseline for c in cells if c.baseline})
        found = _each([*grid, *(rel for rel, _ in files)], "hashes", progress, cache.phash)
        hashes: dict[str, int] = {rel: found[rel] for rel in grid if found[rel] is not None}
        training = [TrainingImage(rel, name, found[rel]) for rel, name in files if found[rel] is not None]
        if not training:
            notes.append(
                "no staged training image could be read: memorisation not scored (run lorabuild prepare)"
            )
        unread = sum(1 for c in cells if c.file not in hashes)
        if unread:
            notes.append(f"{unread} grid cell(s) missing or unreadable: run lorabuild grid")
        try:
            models = _models(plan, cache, cells, training, notes, progress)
        finally:
            cache.save()
        scored = score_cells(cells, hashes, training, pick, models)
        if len({c.seed for c in cells}) < 2:
            notes.append("one seed per prompt: collapse not scored (add a seed to evaluate.seeds)")
        if not any(c.baseline for c in cells):
            notes.append("no baseline column: effect not scored (evaluate.baseline = true)")
    judged = candidates(scored, pick, validation)
    seen = {(c.epoch, c.weight) for c in judged}
    for pair in sorted({(c.epoch, c.weight) for c in cells} - seen):
        judged.append(Candidate(pair[0], pair[1], (), (), (), None, None, None, validation.get(pair[0])))
    judged.sort(key=lambda c: (c.epoch, c.weight))
    return shortlist(
        judged, size=pick.shortlist, preferred_weight=preferred_weight(plan), notes=notes, scores=scored
    )


def _models(
    plan: Plan,
    cache: HashCache,
    cells: Sequence[GridCell],
    training: Sequence[TrainingImage],
    notes: list[str],
    progress: Progress,
) -> dict[str, ModelScores]:
    """What the optional models say of each cell: anime colours, photoreal faces, CLIP."""
    anime = _anime(cache, cells, training, notes, progress) if plan.pick.likeness else {}
    faces = _faces(cache, cells, training, notes, progress) if plan.pick.likeness else {}
    clip = clip_scores(plan.pick, cache, cells, training, notes, progress=progress)
    found = {}
    for c in cells:
        face = faces.get(c.file)
        found[c.file] = replace(
            clip.get(c.file, ModelScores()),
            likeness=anime.get(c.file),
            face=face.distance if face else None,
            face_image=face.image if face else None,
        )
    return found


def _anime(
    cache: HashCache,
    cells: Sequence[GridCell],
    training: Sequence[TrainingImage],
    notes: list[str],
    progress: Progress,
) -> dict[str, float]:
    missing = anime_missing()
    if missing:
        notes.append(missing)
        return {}
    found = _each(
        [*(t.file for t in training), *(c.file for c in cells)],
        "anime faces",
        progress,
        lambda rel: cache.value(rel, ANIMEFACE, anime_features),
    )
    ref = [found[t.file] for t in training]
    if not any(ref):
        notes.append("likeness of anime faces not scored: animeface found no face in the training images")
        return {}
    return likeness({c.file: found[c.file] for c in cells}, ref)


def _faces(
    cache: HashCache,
    cells: Sequence[GridCell],
    training: Sequence[TrainingImage],
    notes: list[str],
    progress: Progress,
) -> dict[str, FaceMatch]:
    missing = face_missing()
    if missing:
        notes.append(missing)
        return {}

    def described(rel: str) -> Any:
        return cache.value(rel, DLIB_FACE, face_features)

    known = _each([t.file for t in training], "faces of the training images", progress, described)
    ref = [(t.name, known[t.file]) for t in training]
    if not any(d for _, d in ref):
        notes.append("likeness of photoreal faces not scored: dlib found no face in the training images")
        return {}
    return face_distances(_each([c.file for c in cells], "faces of the grid", progress, described), ref)
