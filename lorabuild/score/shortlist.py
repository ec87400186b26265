"""The shortlist, pure: the epoch x weight pairs no score rules out, ranked, each with its reason.

A shortlist, not a verdict: the scores can only rule out what is clearly wrong (a copy of a
training image, seeds collapsed on one picture, a weight that does nothing) and order the rest
by what evidence there is. The order:

1. pairs without a warning before those with one (a LoRA that takes over the picture, an epoch
   that copies a training image at another weight, some faces of another person, a picture that
   ignores its prompt or a low aesthetic score);
2. the lower validation loss of the epoch, where the recipe has a validation split;
3. the closer face likeness, where a likeness model scored it: the photoreal faces' identity
   (dlib), then the anime faces' colours;
4. the later epoch (without a validation loss, the latest epoch that shows no sign of
   overtraining is the usual choice);
5. the weight nearest the preferred one (``install.weight``, else the middle of the grid's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lorabuild.score.measures import Candidate, CellScore


@dataclass(frozen=True)
class Shortlist:
    """What ``lorabuild pick`` prints and the report shows.

    Attributes:
        picks: The shortlist, best first.
        rest: Candidates below the cut, in order.
        ruled_out: Pairs a score ruled out, by epoch and weight.
        notes: What was not scored, and why (a missing package, one seed, no baseline...).
        scores: Every scored cell.
        epochs: The validation loss's number of epochs (0: no validation split).
    """

    picks: tuple[Candidate, ...]
    rest: tuple[Candidate, ...]
    ruled_out: tuple[Candidate, ...]
    notes: tuple[str, ...]
    scores: tuple[CellScore, ...]
    epochs: int = 0

    @property
    def first(self) -> Candidate | None:
        """The first of the shortlist, or None when nothing is on it."""
        return self.picks[0] if self.picks else None


def shortlist(
    candidates: Sequence[Candidate],
    *,
    size: int,
    preferred_weight: float,
    notes: Sequence[str] = (),
    scores: Sequence[CellScore] = (),
) -> Shortlist:
    """Rank ``candidates`` (see the module's docstring) and cut the list after ``size``."""
    ok = [c for c in candidates if not c.ruled_out]
    out = sorted((c for c in candidates if c.ruled_out), key=lambda c: (c.epoch, c.weight))
    losses = sorted({c.validation_loss for c in candidates if c.validation_loss is not None})

    def key(c: Candidate) -> tuple[bool, float, float, float, int, float, float]:
        loss = c.validation_loss if c.validation_loss is not None else math.inf
        face = c.face if c.face is not None else math.inf
        like = c.likeness if c.likeness is not None else math.inf
        return (
            bool(c.warnings),
            loss,
            face,
            like,
            -c.epoch,
            round(abs(c.weight - preferred_weight), 6),
            c.weight,
        )

    ranked = sorted(ok, key=key)
    return Shortlist(
        tuple(ranked[:size]),
        tuple(ranked[size:]),
        tuple(out),
        tuple(notes),
        tuple(scores),
        len({c.epoch for c in candidates if c.validation_loss is not None}) if losses else 0,
    )


def reason(c: Candidate, listed: Shortlist) -> str:
    """Why ``c`` is where it is: its evidence, in words (its warnings last)."""
    parts = []
    if c.validation_loss is not None:
        losses = sorted({x.validation_loss for x in _all(listed) if x.validation_loss is not None})
        place = losses.index(c.validation_loss) + 1
        which = "the lowest" if place == 1 else f"the {_ordinal(place)} lowest"
        parts.append(f"validation loss {c.validation_loss:.4g}, {which} of {len(losses)} epoch(s)")
    elif listed.epochs == 0:
        parts.append("the latest epoch no score rules out (no validation split to rank by)")
    if c.effect is not None:
        parts.append(f"{c.effect:.1f} bits from the no-LoRA baseline")
    if c.variety is not None:
        parts.append(f"seeds differ by {c.variety:.1f} bits")
    if c.nearest is not None:
        near = min(
            (s for s in c.cells if s.nearest_distance is not None),
            key=lambda s: s.nearest_distance or 0,
        )
        name = near.nearest.name if near.nearest is not None else "?"
        parts.append(f"nearest training image {name} at {c.nearest} bits")
    if c.face is not None:
        parts.append(f"faces {c.face:.2f} from the nearest training face on average (dlib)")
    if c.likeness is not None:
        parts.append(f"face colours {c.likeness:.2f} from the training faces'")
    if c.prompt_match is not None:
        parts.append(f"CLIP prompt match {c.prompt_match:.3f}")
    if c.style is not None:
        parts.append(f"CLIP similarity to the nearest training image {c.style:.3f}")
    if c.aesthetic is not None:
        parts.append(f"aesthetic score {c.aesthetic:.2f}")
    text = "; ".join(parts) or "no score could judge it"
    if c.warnings:
        text += "; but " + "; ".join(c.warnings)
    return text


def label(c: Candidate) -> str:
    """``epoch 8 × 0.8``."""
    return f"epoch {c.epoch} × {c.weight:g}"


def lines(listed: Shortlist, install: str = "") -> list[str]:
    """The shortlist for a terminal: each pick with its reason, then what was ruled out and why.

    ``install`` is the command's start (``lorabuild install recipe.toml``); each pick then ends
    with the exact command that installs it.
    """
    out: list[str] = []
    if listed.picks:
        out.append("shortlist (a suggestion: look at the grid before you choose):")
        for n, c in enumerate(listed.picks, 1):
            out.append(f"  {n}. {label(c)}: {reason(c, listed)}")
            if install:
                out.append(f"     {install} --epoch {c.epoch} --weight {c.weight:g}")
    else:
        out.append(
            "shortlist: empty: "
            + ("every epoch x weight was ruled out" if listed.ruled_out else "nothing scored")
        )
    if listed.rest:
        out.append(f"also possible: {', '.join(label(c) for c in listed.rest)}")
    if listed.ruled_out:
        out.append("ruled out:")
        for c in listed.ruled_out:
            out.append(f"  {label(c)}: {'; '.join(c.ruled_out)}")
    for note in listed.notes:
        out.append(f"note: {note}")
    return out


def _all(listed: Shortlist) -> tuple[Candidate, ...]:
    return listed.picks + listed.rest + listed.ruled_out


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
