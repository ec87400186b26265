"""The grid's scores, pure: from perceptual hashes to flags per cell and per epoch x weight.

Everything here is a function of plain values (the cells' places in the grid, their hashes, the
training images' hashes, ``[pick]``'s thresholds, the validation loss per epoch), so each score
is tested with constructed hashes and files alike:

- **memorisation** (``copy``): a cell whose hash is at most ``pick.copy_distance`` bits from a
  training image's copies it; the image is named. Not when the no-LoRA baseline of the same
  prompt and seed is as close: then the base model draws it without the LoRA.
- **collapse**: one prompt's cells at one epoch x weight, across seeds; their variety is the mean
  distance between every two of them. At most ``pick.collapse_distance``, the seeds converge on
  one picture (each of those cells is flagged), unless the baseline's seeds are as alike.
- **effect**: each cell's distance from the baseline of its prompt and seed. On average at most
  ``pick.effect_min`` over an epoch x weight, the LoRA does nothing there (each such cell is
  flagged); at least ``pick.effect_max``, it replaces the picture (a warning).
- **validation loss** of the epoch, when the recipe has a validation split (kohya logs it).
- **likeness** (optional, :mod:`lorabuild.score.likeness`): how close the cells' anime faces are to
  the training images' (hair and eye colours), where the packaged model is installed; and how close
  their photoreal faces are (dlib's descriptor): a face further than ``pick.face_distance`` from
  every training face shows another person (``other person``); an epoch x weight where most of the
  faces do is ruled out, one where some do is warned about.
- **CLIP** (optional, :mod:`lorabuild.score.clip`, the user's own ``pick.clip_model``): each cell's
  cosine to its prompt (under ``pick.prompt_min`` on average: a warning), to the nearest training
  image, and the aesthetic head's score (under ``pick.aesthetic_min`` on average: a warning).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lorabuild.recipe.schema import PickSection
from lorabuild.score.hashes import distance

COPY, COLLAPSE, NO_EFFECT, TAKES_OVER, OTHER_PERSON = (
    "copy",
    "collapse",
    "no effect",
    "takes over",
    "other person",
)
"""The flags a cell can carry."""


@dataclass(frozen=True)
class GridCell:
    """One LoRA cell of the grid, where it sits and what it is compared with.

    Attributes:
        sheet: The sheet's id (one prompt and seed).
        prompt: The prompt.
        seed: The seed.
        epoch: The row's epoch.
        weight: The column's LoRA weight.
        file: The cell's image, relative to the build folder.
        baseline: The no-LoRA cell of the same prompt and seed (None: the grid has no baseline).
    """

    sheet: str
    prompt: str
    seed: int | None
    epoch: int
    weight: float
    file: str
    baseline: str | None


@dataclass(frozen=True)
class TrainingImage:
    """A staged training image: its file (relative to the build), how messages name it, its hash."""

    file: str
    name: str
    hash: int


@dataclass(frozen=True)
class ModelScores:
    """What the optional models said of one cell (None: not scored, or no face found).

    Attributes:
        likeness: Distance of its anime face's colours from the training faces' (0 to 1).
        face: Distance of its photoreal face's dlib descriptor from the nearest training face's.
        face_image: That training image, as messages name it.
        prompt_match: CLIP cosine between the cell and its prompt.
        style: CLIP cosine between the cell and the nearest training image.
        style_image: That training image, as messages name it.
        aesthetic: The aesthetic head's score (the LAION scale, about 1 to 10).
    """

    likeness: float | None = None
    face: float | None = None
    face_image: str | None = None
    prompt_match: float | None = None
    style: float | None = None
    style_image: str | None = None
    aesthetic: float | None = None


@dataclass(frozen=True)
class CellScore:
    """A cell's scores.

    Attributes:
        cell: The cell.
        nearest: The training image closest to it (None: no training image was hashed).
        nearest_distance: Its distance in bits.
        effect: Distance from the baseline of its prompt and seed (None: no baseline).
        variety: Mean distance between the seeds of its prompt at its epoch x weight (None: one seed).
        likeness: Distance of its anime face's colours from the training faces' (0 to 1; None: not scored).
        baseline_variety: The same for the no-LoRA baseline of its prompt (None: no baseline or one seed).
        flags: What it was flagged for (``copy``, ``collapse``, ``no effect``, ``takes over``,
            ``other person``).
        models: What the optional models said of it (photoreal face, CLIP, aesthetic).
    """

    cell: GridCell
    nearest: TrainingImage | None
    nearest_distance: int | None
    effect: int | None
    variety: float | None
    likeness: float | None = None
    baseline_variety: float | None = None
    flags: tuple[str, ...] = ()
    models: ModelScores = field(default_factory=ModelScores)


@dataclass(frozen=True)
class Copy:
    """A cell that copies a training image."""

    cell: GridCell
    image: TrainingImage
    distance: int


@dataclass(frozen=True)
class Collapse:
    """One prompt whose seeds converge on one picture at an epoch x weight."""

    prompt: str
    seeds: int
    variety: float
    baseline_variety: float | None


@dataclass(frozen=True)
class Candidate:
    """One epoch x weight: its scores, what rules it out and what warns about it.

    Attributes:
        epoch: The epoch.
        weight: The LoRA weight.
        cells: Its scored cells.
        copies: Cells that copy a training image.
        collapses: Prompts whose seeds collapse.
        effect: Mean distance from the baseline (None: no baseline).
        variety: Mean variety across seeds over its prompts (None: one seed).
        nearest: The smallest distance to any training image (None: none hashed).
        validation_loss: Its epoch's validation loss (None: no validation split).
        likeness: Mean likeness distance of its faces (None: not scored).
        ruled_out: Why it is off the shortlist (empty: it is a candidate).
        warnings: What ranks it after the others without ruling it out.
        face: Mean distance of its photoreal faces from the nearest training faces (None: not scored).
        faces: How many of its cells have a photoreal face that was scored.
        other_faces: How many of those show another person.
        prompt_match: Mean CLIP cosine between its cells and their prompts (None: no CLIP model).
        style: Mean CLIP cosine between its cells and their nearest training images (None: no CLIP model).
        aesthetic: Mean aesthetic score of its cells (None: no aesthetic head).
    """

    epoch: int
    weight: float
    cells: tuple[CellScore, ...]
    copies: tuple[Copy, ...]
    collapses: tuple[Collapse, ...]
    effect: float | None
    variety: float | None
    nearest: int | None
    validation_loss: float | None
    likeness: float | None = None
    ruled_out: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    face: float | None = None
    faces: int = 0
    other_faces: int = 0
    prompt_match: float | None = None
    style: float | None = None
    aesthetic: float | None = None


def mean_pairwise(hashes: Sequence[int]) -> float | None:
    """Mean distance between every two of ``hashes`` (None for fewer than two)."""
    pairs = [distance(a, b) for a, b in itertools.combinations(hashes, 2)]
    return statistics.fmean(pairs) if pairs else None


def nearest_image(h: int, training: Sequence[TrainingImage]) -> tuple[TrainingImage | None, int | None]:
    """The training image closest to hash ``h`` and its distance (ties: the first listed)."""
    best: tuple[TrainingImage | None, int | None] = (None, None)
    for image in training:
        d = distance(h, image.hash)
        if best[1] is None or d < best[1]:
            best = (image, d)
    return best


def score_cells(
    cells: Sequence[GridCell],
    hashes: Mapping[str, int],
    training: Sequence[TrainingImage],
    pick: PickSection,
    models: Mapping[str, ModelScores] | None = None,
) -> list[CellScore]:
    """Every hashed cell's scores and flags (cells without a hash are left out); ``models``: what the
    optional models said of each cell, by file."""
    models = models or {}
    hashed = [c for c in cells if c.file in hashes]
    # Variety: per (prompt, epoch, weight) across seeds, and the baseline's per prompt.
    groups: dict[tuple[str, int, float], list[GridCell]] = {}
    baselines: dict[str, dict[str, int]] = {}
    for c in hashed:
        groups.setdefault((c.prompt, c.epoch, c.weight), []).append(c)
        if c.baseline is not None and c.baseline in hashes:
            baselines.setdefault(c.prompt, {})[c.baseline] = hashes[c.baseline]
    variety = {k: mean_pairwise([hashes[c.file] for c in v]) for k, v in groups.items()}
    base_variety = {p: mean_pairwise(list(b.values())) for p, b in baselines.items()}
    effects = {
        c.file: distance(hashes[c.file], hashes[c.baseline])
        for c in hashed
        if c.baseline is not None and c.baseline in hashes
    }
    mean_effect: dict[tuple[int, float], float] = {}
    for (epoch, weight), members in itertools.groupby(
        sorted((c for c in hashed if c.file in effects), key=lambda c: (c.epoch, c.weight)),
        key=lambda c: (c.epoch, c.weight),
    ):
        mean_effect[(epoch, weight)] = statistics.fmean(effects[c.file] for c in members)
    scores = []
    for c in hashed:
        h = hashes[c.file]
        image, near = nearest_image(h, training)
        flags = []
        if image is not None and near is not None and near <= pick.copy_distance:
            base = hashes.get(c.baseline) if c.baseline is not None else None
            if base is None or distance(base, image.hash) > pick.copy_distance:
                flags.append(COPY)
        v = variety[(c.prompt, c.epoch, c.weight)]
        if _collapsed(v, base_variety.get(c.prompt), pick):
            flags.append(COLLAPSE)
        effect = effects.get(c.file)
        group_effect = mean_effect.get((c.epoch, c.weight))
        if effect is not None and group_effect is not None:
            if effect <= pick.effect_min and group_effect <= pick.effect_min:
                flags.append(NO_EFFECT)
            elif effect >= pick.effect_max and group_effect >= pick.effect_max:
                flags.append(TAKES_OVER)
        said = models.get(c.file, ModelScores())
        if said.face is not None and said.face > pick.face_distance:
            flags.append(OTHER_PERSON)
        scores.append(
            CellScore(
                c, image, near, effect, v, said.likeness, base_variety.get(c.prompt), tuple(flags), said
            )
        )
    return scores


def _collapsed(variety: float | None, baseline: float | None, pick: PickSection) -> bool:
    """Whether seeds that vary by ``variety`` have converged (the baseline's seeds varying more)."""
    if variety is None or variety > pick.collapse_distance:
        return False
    return baseline is None or baseline > pick.collapse_distance


def candidates(
    scores: Sequence[CellScore],
    pick: PickSection,
    validation: Mapping[int, float] | None = None,
) -> list[Candidate]:
    """One :class:`Candidate` per epoch x weight, with what rules it out or warns about it."""
    validation = validation or {}
    by_pair: dict[tuple[int, float], list[CellScore]] = {}
    for s in scores:
        by_pair.setdefault((s.cell.epoch, s.cell.weight), []).append(s)
    copied_epochs: dict[int, list[Copy]] = {}
    made = []
    for (epoch, weight), members in sorted(by_pair.items()):
        copies = tuple(
            Copy(s.cell, s.nearest, s.nearest_distance)
            for s in members
            if COPY in s.flags and s.nearest is not None and s.nearest_distance is not None
        )
        copied_epochs.setdefault(epoch, []).extend(copies)
        collapses = _collapses(members, pick)
        effects = [s.effect for s in members if s.effect is not None]
        varieties = {(s.cell.prompt): s.variety for s in members if s.variety is not None}
        nearest = [s.nearest_distance for s in members if s.nearest_distance is not None]
        likeness = [s.likeness for s in members if s.likeness is not None]
        faces = [s for s in members if s.models.face is not None]
        made.append(
            Candidate(
                epoch=epoch,
                weight=weight,
                cells=tuple(members),
                copies=copies,
                collapses=collapses,
                effect=statistics.fmean(effects) if effects else None,
                variety=statistics.fmean(varieties.values()) if varieties else None,
                nearest=min(nearest) if nearest else None,
                validation_loss=validation.get(epoch),
                likeness=statistics.fmean(likeness) if likeness else None,
                face=statistics.fmean(s.models.face for s in faces if s.models.face is not None)
                if faces
                else None,
                faces=len(faces),
                other_faces=sum(1 for s in faces if OTHER_PERSON in s.flags),
                prompt_match=_mean(s.models.prompt_match for s in members),
                style=_mean(s.models.style for s in members),
                aesthetic=_mean(s.models.aesthetic for s in members),
            )
        )
    return [_judged(c, pick, copied_epochs) for c in made]


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _collapses(members: Sequence[CellScore], pick: PickSection) -> tuple[Collapse, ...]:
    found: dict[str, Collapse] = {}
    for s in members:
        if COLLAPSE in s.flags and s.variety is not None and s.cell.prompt not in found:
            seeds = sum(1 for m in members if m.cell.prompt == s.cell.prompt)
            found[s.cell.prompt] = Collapse(s.cell.prompt, seeds, s.variety, s.baseline_variety)
    return tuple(found.values())


def _judged(c: Candidate, pick: PickSection, copied: Mapping[int, list[Copy]]) -> Candidate:
    ruled: list[str] = []
    warn: list[str] = []
    for copy in c.copies[:3]:
        ruled.append(
            f"copies training image {copy.image.name} ({copy.distance} of 64 bits apart, at most "
            f"{pick.copy_distance}; seed {copy.cell.seed})"
        )
    if len(c.copies) > 3:
        ruled.append(f"and {len(c.copies) - 3} more cell(s) copy training images")
    for col in c.collapses:
        ruled.append(
            f"collapses: the {col.seeds} seeds of {_short(col.prompt)} differ by {col.variety:.1f} bits on "
            f"average (at most {pick.collapse_distance:g}"
            + (f"; {col.baseline_variety:.1f} without the LoRA" if col.baseline_variety is not None else "")
            + "): one picture"
        )
    if c.effect is not None and c.effect <= pick.effect_min:
        ruled.append(
            f"does nothing: {c.effect:.1f} bits from the no-LoRA baseline on average (at most {pick.effect_min:g})"
        )
    elif c.effect is not None and c.effect >= pick.effect_max:
        warn.append(
            f"takes over the picture: {c.effect:.1f} bits from the baseline on average (at least {pick.effect_max:g})"
        )
    if c.other_faces and c.face is not None:
        (ruled if 2 * c.other_faces > c.faces else warn).append(
            f"shows another person: {c.other_faces} of {c.faces} face(s) further than "
            f"{pick.face_distance:g} from every training face (dlib; {c.face:.2f} on average)"
        )
    if c.prompt_match is not None and c.prompt_match < pick.prompt_min:
        warn.append(
            f"ignores its prompts: CLIP cosine {c.prompt_match:.3f} between pictures and prompts on average "
            f"(under {pick.prompt_min:g})"
        )
    if c.aesthetic is not None and c.aesthetic < pick.aesthetic_min:
        warn.append(f"aesthetic score {c.aesthetic:.2f} on average (under {pick.aesthetic_min:g})")
    others = [x for x in copied.get(c.epoch, []) if x.cell.weight != c.weight]
    if others and not c.copies:
        w = sorted({x.cell.weight for x in others})
        warn.append(
            f"epoch {c.epoch} copies training image {others[0].image.name} at weight "
            f"{', '.join(f'{x:g}' for x in w)}"
        )
    return Candidate(**{**c.__dict__, "ruled_out": tuple(ruled), "warnings": tuple(warn)})


def _short(prompt: str, limit: int = 48) -> str:
    text = " ".join(prompt.split())
    return f'"{text if len(text) <= limit else text[: limit - 1] + "…"}"'
