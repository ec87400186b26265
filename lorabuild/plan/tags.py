"""Tag frequencies per subset, before and after the caption rules: the tag editor's view.

``lorabuild tags RECIPE`` prints the table so the user can see which tags to remove, rename or
move; ``lorabuild prepare`` writes the same numbers to ``build/<name>/tags.csv``. A tag's count
is the number of the subset's staged images whose caption holds it. "Before" is the caption as
written (split on commas and trimmed, nothing else), "after" the staged caption; both come from
the plan, so the table covers exactly the images that are staged. :func:`activation_text` is the
trigger list the report and the webui card show.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass

from lorabuild.plan.plan import Plan
from lorabuild.plan.subsets import SubsetPlan
from lorabuild.recipe.captions import split_tags


@dataclass(frozen=True)
class TagCount:
    """How many images of one subset carry a tag, before and after the rules."""

    tag: str
    before: int
    after: int


def subset_tag_counts(subset: SubsetPlan) -> list[TagCount]:
    """Every tag of a subset's captions, most frequent first (then by name)."""
    before: Counter[str] = Counter()
    after: Counter[str] = Counter()
    for image in subset.images:
        before.update(set(split_tags(image.source_caption)))
        after.update(set(split_tags(image.caption)))
    tags = sorted(before.keys() | after.keys(), key=lambda t: (-max(before[t], after[t]), t))
    return [TagCount(t, before[t], after[t]) for t in tags]


def tags_csv(plan: Plan) -> bytes:
    """``tags.csv``: one row per subset and tag (``subset,folder,tag,before,after``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["subset", "folder", "tag", "before", "after"])
    for subset in plan.subsets:
        for count in subset_tag_counts(subset):
            writer.writerow([subset.index, subset.folder, count.tag, count.before, count.after])
    return out.getvalue().encode("utf-8")


def tags_text(plan: Plan) -> str:
    """The table for the terminal: a block per subset, ``-`` where a tag is absent."""
    lines: list[str] = []
    for subset in plan.subsets:
        counts = subset_tag_counts(subset)
        if lines:
            lines.append("")
        cut = sum(image.cutout is not None for image in subset.images)
        lines.append(
            f"[{subset.index}] {subset.source.as_posix()} -> dataset/{subset.folder}: "
            f"{len(subset.images)} images, {len(counts)} tags"
            + (f", {cut} cut out of their background" if cut else "")
        )
        lines.append("  before  after  tag")
        for count in counts:
            lines.append(f"  {count.before or '-':>6}  {count.after or '-':>5}  {count.tag}")
    return "\n".join(lines)


def activation_text(plan: Plan) -> str:
    """The training subsets' triggers, in order and each once (the card's activation text)."""
    triggers: list[str] = []
    for subset in plan.subsets:
        if subset.trigger and not subset.is_reg and subset.trigger not in triggers:
            triggers.append(subset.trigger)
    return ", ".join(triggers)
