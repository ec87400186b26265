"""Caption tag rules: the tutorial's tag editing as pure functions over lists of tags.

The order is fixed and documented in :class:`lorabuild.recipe.schema.CaptionRules`:
split on commas -> normalise -> replace -> remove -> dedupe -> move_to_front / move_to_end
-> prepend_trigger. The same functions serve ``lorabuild check`` (which caption will contain
the trigger), ``lorabuild tags`` and staging.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lorabuild.recipe.schema import CaptionRules

_LINE_END = re.compile(r"\r\n|\r|\n")


def split_tags(caption: str) -> list[str]:
    """Split a caption's first line on commas into trimmed, non-empty tags.

    kohya reads only the first line of a caption file (unless wildcards are on), so lorabuild
    does too, with kohya's line ends: ``readlines()`` in text mode ends a line at ``\n``, ``\r``
    and ``\r\n`` only (not at U+2028 or the other breaks ``str.splitlines`` knows).
    """
    first_line = _LINE_END.split(caption, maxsplit=1)[0]
    return [t for t in (" ".join(part.split()) for part in first_line.split(",")) if t]


def normalise(tag: str, style: str) -> str:
    """Apply ``tag_style``: ``underscore`` (short_hair), ``space`` (short hair) or ``keep``."""
    tag = " ".join(tag.split())
    if style == "underscore":
        return tag.replace(" ", "_")
    if style == "space":
        # Emoticon-like tags such as ^_^ keep their underscores.
        return tag if not re.search(r"[A-Za-z0-9]", tag) else tag.replace("_", " ")
    return tag


@functools.lru_cache(maxsize=256)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """One test for a set of exact tags and globs, built once: rules run for every caption."""
    exact = frozenset(p for p in patterns if not _is_glob(p))
    globs = [p for p in patterns if _is_glob(p)]
    if not globs:
        return exact.__contains__
    regex = re.compile("|".join(fnmatch.translate(p) for p in globs))
    return lambda tag: tag in exact or regex.match(tag) is not None


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def apply_rules(tags: Sequence[str], rules: CaptionRules, trigger: str | None) -> list[str]:
    """Apply ``rules`` to ``tags`` and return the staged caption's tags.

    Patterns in ``remove`` and ``move_*`` are normalised with the same ``tag_style`` as the
    tags, so ``short hair`` and ``short_hair`` both match whatever style is chosen.
    """
    return _editor(rules)(tags, trigger)


class _Editor:
    """``rules`` made ready once (patterns normalised and compiled): they run for every caption."""

    def __init__(self, rules: CaptionRules):
        style = self.style = rules.tag_style
        self.replace = {normalise(k, style): normalise(v, style) for k, v in rules.replace.items()}
        self.remove = _matcher(tuple(normalise(p, style) for p in rules.remove))
        self.dedupe = rules.dedupe
        self.front = [_matcher((normalise(p, style),)) for p in rules.move_to_front]
        self.end = _matcher(tuple(normalise(p, style) for p in rules.move_to_end))
        self.has_end = bool(rules.move_to_end)
        self.prepend_trigger = rules.prepend_trigger

    def __call__(self, tags: Sequence[str], trigger: str | None) -> list[str]:
        style, replace, remove = self.style, self.replace, self.remove
        if style == "keep":  # normalise() inlined for the common styles: it runs for every tag
            normalised = [" ".join(t.split()) for t in tags]
        elif style == "underscore":
            normalised = [" ".join(t.split()).replace(" ", "_") for t in tags]
        else:
            normalised = [normalise(t, style) for t in tags]
        out = []
        for tag in normalised:  # replace -> drop empty -> remove, tag by tag
            tag = replace.get(tag, tag)
            if tag and not remove(tag):
                out.append(tag)
        if self.dedupe:
            out = list(dict.fromkeys(out))
        front: list[str] = []
        for matches in self.front:
            front.extend(t for t in out if matches(t) and t not in front)
        if front or self.has_end:
            end = [t for t in out if t not in front and self.end(t)] if self.has_end else []
            middle = [t for t in out if t not in front and t not in end]
            out = front + middle + end
        if self.prepend_trigger and trigger:
            out = [trigger] + [t for t in out if t != trigger]
        return out


# Editors by the id of their rules, which each entry keeps alive (so the id cannot be reused).
_editors: dict[int, tuple[CaptionRules, _Editor]] = {}


def _editor(rules: CaptionRules) -> _Editor:
    known = _editors.get(id(rules))
    if known is not None and known[0] is rules:
        return known[1]
    if len(_editors) >= 64:
        _editors.clear()
    editor = _Editor(rules)
    _editors[id(rules)] = (rules, editor)
    return editor


def join_tags(tags: Iterable[str]) -> str:
    """Join tags the way booru taggers and kohya write them."""
    return ", ".join(tags)


@dataclass(frozen=True)
class CaptionFile:
    """A caption file as read from a source folder.

    Attributes:
        path: The file, or None when the image has no caption.
        text: Its text (first line is what kohya uses); empty when missing or unreadable.
        problem: Why it cannot be used (not UTF-8, unreadable), or None.
    """

    path: Path | None
    text: str
    problem: str | None = None


def read_caption(path: Path) -> CaptionFile:
    """Read a caption file as kohya would (UTF-8, a BOM tolerated), reporting what kohya rejects."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return CaptionFile(None, "")
    except OSError as exc:
        return CaptionFile(path, "", f"cannot be read: {exc.strerror}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        guess = _guess_encoding(data)
        return CaptionFile(
            path,
            "",
            f"is not UTF-8 (byte {exc.start}{', looks like ' + guess if guess else ''}): "
            "kohya stops on it; re-save the file as UTF-8",
        )
    # An empty file is no problem here: lorabuild stages its own caption (the trigger at least),
    # so kohya never sees the empty file it would stop on.
    return CaptionFile(path, text)


def _guess_encoding(data: bytes) -> str:
    for encoding in ("gbk", "shift_jis", "cp1252"):
        try:
            data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return encoding.upper()
    return ""
