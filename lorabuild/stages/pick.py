"""``lorabuild pick``: a shortlist of epochs x weights from the grid's scores, each with its reason.

The scores and the ranking are :mod:`lorabuild.score`'s (shared with the report and with
``install.epoch = "suggested"``); this stage words them for the terminal, each pick with the exact
``lorabuild install`` command that installs it. A shortlist, not a verdict.
"""

from __future__ import annotations

import shlex

from lorabuild.plan.plan import Plan
from lorabuild.score import Progress, Shortlist, lines, score_build


def install_command(plan: Plan) -> str:
    """``lorabuild install RECIPE``: the start of each pick's install command."""
    return f"lorabuild install {shlex.quote(plan.recipe_file.as_posix())}"


def pick(plan: Plan, progress: Progress | None = None) -> tuple[Shortlist, list[str]]:
    """Score ``plan``'s grid (hashes cached in the build) and word the shortlist for a terminal.

    ``progress`` is told how the scoring of pictures not in the cache advances.
    """
    listed = score_build(plan, progress=progress)
    return listed, lines(listed, install_command(plan))
