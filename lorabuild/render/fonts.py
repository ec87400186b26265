"""Fonts for the pictures lorabuild draws (comparison sheets, loss plots), CJK included.

Prompts and trigger words are often Japanese or Chinese (``初春飾利``, ``うい``), and Pillow's
built-in font has no glyph for them: it draws empty boxes ("tofu"). :class:`FontBook` looks for
the fonts this machine has (``fc-list`` where fontconfig exists, then the usual font folders of
Linux, Windows and macOS) and, for each text, picks one whose character map covers every
character of it. Coverage is tested without fontTools: a character is covered when the font draws
it differently from an unmapped code point, which FreeType draws as the font's ``.notdef`` glyph.
When no font covers a text, the closest one (or Pillow's own) is used and one warning per missing
script says what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

#: A code point no font maps (plane 16 private use): FreeType draws ``.notdef`` for it.
UNMAPPED = "\U0010fffd"

FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")

# Fonts tried first, in order (lower-case substrings of the file name): CJK fonts that also carry
# Latin, so a sheet uses one face throughout, then common Latin fonts.
PREFERRED = (
    "notosanscjk-regular",
    "notosanscjk",
    "notosansjp-regular",
    "notosanssc-regular",
    "sourcehansans",
    "yugothm",
    "yugothr",
    "msgothic",
    "meiryo",
    "msyh.",
    "malgun.",
    "hiragino",
    "pingfang",
    "wqy-microhei",
    "wqy-zenhei",
    "ipagp",
    "ipag.",
    "droidsansfallback",
    "dejavusans.",
    "notosans-regular",
    "liberationsans-regular",
    "arial.",
    "helvetica",
    "segoeui.",
)

# Symbol fonts map ASCII code points to pictures; never use them for text.
_SYMBOL_FONTS = ("webdings", "wingding", "symbol", "marlett", "mtextra", "emoji", "holomdl2", "segmdl2")
_STYLE_WORDS = ("bold", "italic", "oblique", "light", "thin", "black", "heavy", "mono", "condensed", "narrow")


class FontWarning(UserWarning):
    """No installed font covers a text; it is drawn with missing glyphs."""


def font_dirs() -> list[Path]:
    """The folders fonts are usually installed in on this operating system."""
    home = Path.home()
    if sys.platform == "win32":
        windir = Path(os.environ.get("WINDIR", r"C:\Windows"))
        local = Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local"))
        return [windir / "Fonts", local / "Microsoft" / "Windows" / "Fonts"]
    if sys.platform == "darwin":
        return [Path("/System/Library/Fonts"), Path("/Library/Fonts"), home / "Library" / "Fonts"]
    return [
        Path("/usr/share/fonts"),
        Path("/usr/local/share/fonts"),
        home / ".local" / "share" / "fonts",
        home / ".fonts",
    ]


def system_fonts() -> list[Path]:
    """Every font file found on this machine, preferred fonts first (see :data:`PREFERRED`)."""
    found: dict[str, Path] = {}
    for path in [*_fontconfig_files(), *_files_under(font_dirs())]:
        if path.suffix.lower() in FONT_SUFFIXES:
            found.setdefault(os.path.normcase(str(path)), path)
    return sort_fonts(found.values())


def sort_fonts(paths: Iterable[Path]) -> list[Path]:
    """Order font files: :data:`PREFERRED` names first, regular styles before bold/italic/mono."""

    def key(path: Path) -> tuple[int, int, str]:
        name = path.name.lower()
        rank = next((i for i, p in enumerate(PREFERRED) if p in name), len(PREFERRED))
        styled = int(any(w in name for w in _STYLE_WORDS))
        return rank, styled, name

    return sorted((p for p in paths if not any(s in p.name.lower() for s in _SYMBOL_FONTS)), key=key)


def _fontconfig_files() -> list[Path]:
    exe = shutil.which("fc-list")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--format", "%{file}\\n"], capture_output=True, text=True, encoding="utf-8", timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return []
    return [Path(line) for line in out.splitlines() if line.strip()]


def _files_under(dirs: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        try:
            files.extend(p for p in d.rglob("*") if p.suffix.lower() in FONT_SUFFIXES)
        except OSError:
            continue
    return files


def needs_no_glyph(char: str) -> bool:
    """Whether ``char`` draws nothing anyway (spaces, controls), so any font covers it."""
    return unicodedata.category(char) in ("Zs", "Zl", "Zp", "Cc", "Cf")


def is_cjk(char: str) -> bool:
    """Whether ``char`` is Chinese, Japanese or Korean script (or CJK punctuation/full-width forms)."""
    cp = ord(char)
    return (
        0x2E80 <= cp <= 0x9FFF  # radicals, punctuation, kana, bopomofo, CJK unified ideographs
        or 0xAC00 <= cp <= 0xD7AF  # Hangul syllables
        or 0xF900 <= cp <= 0xFAFF  # CJK compatibility ideographs
        or 0xFF00 <= cp <= 0xFFEF  # half-width and full-width forms
        or 0x20000 <= cp <= 0x3FFFF  # CJK extensions B and later
        or 0x1100 <= cp <= 0x11FF  # Hangul Jamo
    )


def install_hint(chars: Iterable[str]) -> str:
    """What to install so that ``chars`` can be drawn."""
    if any(is_cjk(c) for c in chars):
        return (
            "install a CJK font: Debian/Ubuntu `sudo apt install fonts-noto-cjk`, Fedora "
            "`sudo dnf install google-noto-sans-cjk-fonts`, macOS and Windows ship one (on Windows add "
            "the Japanese or Chinese supplemental fonts under Settings > Apps > Optional features)"
        )
    return "install a Unicode font: Debian/Ubuntu `sudo apt install fonts-noto fonts-dejavu-core`"


@lru_cache(maxsize=256)
def _load(path: str, size: int) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(path, size, index=0)
    except OSError:  # not a font, unreadable, or a bitmap-only face (colour emoji) at this size
        return None


def _draw_char(font: ImageFont.FreeTypeFont, char: str) -> bytes:
    size = int(font.size)
    img = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(img).text((size // 2, size // 2), char, font=font, fill=255)
    return img.tobytes()


@lru_cache(maxsize=8192)
def _covers(path: str, char: str) -> bool:
    font = _load(path, 24) if path else _default_probe()
    if font is None:
        return False
    try:
        return _draw_char(font, char) != _draw_char(font, UNMAPPED)
    except (OSError, ValueError, UnicodeEncodeError):
        return False


def _default_probe() -> ImageFont.FreeTypeFont | None:
    font = default_font(24)
    return font if isinstance(font, ImageFont.FreeTypeFont) else None


def default_covers(char: str) -> bool:
    """Whether Pillow's built-in font has a glyph for ``char`` (printable ASCII for the bitmap one)."""
    if _default_probe() is None:
        return " " <= char <= "~"
    return _covers("", char)


@lru_cache(maxsize=32)
def default_font(size: int) -> Font:
    """Pillow's built-in font at ``size`` (a scalable Latin face on Pillow >= 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow 10.0: bitmap font, one size
        return ImageFont.load_default()


class FontBook:
    """Chooses, per text, an installed font that has a glyph for every character.

    Args:
        candidates: Font files to choose from, best first; ``None`` searches this machine
            (:func:`system_fonts`) on first use.
    """

    def __init__(self, candidates: Sequence[Path] | None = None):
        self._candidates = list(candidates) if candidates is not None else None
        self.warned: list[str] = []
        self._chosen: dict[tuple[str, int], Font] = {}

    @property
    def candidates(self) -> list[Path]:
        """The font files considered, best first."""
        if self._candidates is None:
            self._candidates = system_fonts()
        return self._candidates

    def font_path(self, text: str) -> Path | None:
        """The first candidate covering every character of ``text``; ``None`` when none does."""
        chars = {c for c in text if not needs_no_glyph(c)}
        for path in self.candidates:
            if all(_covers(str(path), c) for c in chars) and (chars or _load(str(path), 24)):
                return path
        return None

    def font(self, text: str, size: int) -> Font:
        """A font at ``size`` that draws ``text``; warns once (:class:`FontWarning`) when none can.

        Falls back to Pillow's built-in font when it covers the text (Latin), else to the font
        covering the most characters.
        """
        key = (text, size)
        if key not in self._chosen:
            self._chosen[key] = self._choose(text, size)
        return self._chosen[key]

    def _choose(self, text: str, size: int) -> Font:
        path = self.font_path(text)
        if path is not None:
            loaded = _load(str(path), size)
            if loaded is not None:
                return loaded
        chars = list(dict.fromkeys(c for c in text if not needs_no_glyph(c)))
        if all(default_covers(c) for c in chars):
            return default_font(size)
        best: tuple[int, Path | None] = (sum(default_covers(c) for c in chars), None)
        for p in self.candidates:
            n = sum(_covers(str(p), c) for c in chars)
            if n > best[0] and _load(str(p), size) is not None:
                best = (n, p)
        chosen = best[1]
        missing = [c for c in chars if not (_covers(str(chosen), c) if chosen else default_covers(c))]
        self._warn(missing)
        loaded = _load(str(chosen), size) if chosen else None
        return loaded if loaded is not None else default_font(size)

    def _warn(self, missing: Sequence[str]) -> None:
        kind = "CJK" if any(is_cjk(c) for c in missing) else "other"
        if kind in self.warned:
            return
        self.warned.append(kind)
        sample = "".join(missing[:8])
        warnings.warn(
            FontWarning(
                f"no installed font has glyphs for {sample!r}; they are drawn as boxes. To fix, {install_hint(missing)}."
            ),
            stacklevel=4,
        )


@lru_cache(maxsize=1)
def system_book() -> FontBook:
    """The one :class:`FontBook` over this machine's fonts (searched once, warns once)."""
    return FontBook()
