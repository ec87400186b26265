"""The schema's shared value types and the base of every table.

- :data:`RecipePath`: a path written in a recipe, resolved against the recipe file's folder.
- :data:`Line` and :func:`line_problem`: text that kohya reads as (part of) one line.
- kohya's vocabularies the tables choose from (:data:`Family`, :data:`Scheduler`, :data:`Sampler`)
  and :data:`KohyaValue`, a value of an option the schema does not model.
- ``_Table``: the base model (unknown keys are errors, values immutable), private to the schema package.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

# The names of lorabuild.kohya.families' registry (that package sits above this one; a test holds
# the two equal).
Family = Literal["sd15", "sd2", "sdxl", "flux", "chroma", "sd3", "anima", "hunyuan", "lumina"]

# kohya's scheduler names at the pinned commit (transformers' SchedulerType plus diffusers'
# piecewise_constant; KOHYA.md 6.9). reduce_lr_on_plateau and cosine_warmup_with_min_lr are
# listed by transformers but crash through kohya, so they are left out.
Scheduler = Literal[
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
    "piecewise_constant",
    "adafactor",
]

# Samplers kohya's in-training sampler and gen_img.py accept (``--sample_sampler`` choices).
Sampler = Literal[
    "ddim",
    "pndm",
    "lms",
    "euler",
    "euler_a",
    "heun",
    "dpm_2",
    "dpm_2_a",
    "dpmsolver",
    "dpmsolver++",
    "dpmsingle",
    "k_lms",
    "k_euler",
    "k_euler_a",
    "k_dpm_2",
    "k_dpm_2_a",
]

# A value kohya accepts in its --config_file TOML for an option the schema does not model.
KohyaValue = str | int | float | bool | list[str] | list[int] | list[float]


def _resolve(path: Path, info: ValidationInfo) -> Path:
    """Resolve a relative recipe path against the recipe file's folder (``context['base']``)."""
    if "\0" in str(path):
        raise ValueError(
            f"must not contain a NUL character (U+0000), which no file path can hold (got {str(path)!r})"
        )
    base = (info.context or {}).get("base")
    try:
        path = path.expanduser()
    except RuntimeError:  # ~name of no user here, or no home folder
        raise ValueError(
            f"{str(path)!r} starts with ~ but names no user's home folder on this machine"
        ) from None
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    return Path(_normpath(path))


def _normpath(path: Path) -> str:
    # os.path.normpath keeps the path relative-free without touching the disk (unlike resolve()).
    return os.path.normpath(path)


RecipePath = Annotated[Path, AfterValidator(_resolve)]
"""A path written in a recipe: relative paths are relative to the recipe file."""

# What ends a line for one of kohya's readers: a caption or a sample-prompt file read with
# readlines() (\n, \r), gen_img's prompt file read with str.splitlines() (also \v, \f, \x1c-\x1e,
# \x85, U+2028, U+2029). Those and every other control character are refused in a line of text.
_LINE_NAMES = {"\n": "a line break (U+000A)", "\r": "a carriage return (U+000D)", "\t": "a tab (U+0009)"}


def line_problem(text: str) -> str | None:
    """Why ``text`` cannot be one line of a file kohya reads (a caption, a prompt line), or None.

    Refused: line breaks of any kind (``str.splitlines`` splits at each) and every other control
    character (Unicode category Cc: invisible, and a line break for some reader or other).
    """
    for index, ch in enumerate(text):
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            name = _LINE_NAMES.get(ch) or (
                f"{unicodedata.name(ch)} (U+{ord(ch):04X})"
                if unicodedata.category(ch) != "Cc"
                else f"a control character (U+{ord(ch):04X})"
            )
            return f"must be one line of text without control characters: it has {name} at position {index}"
    return None


def _one_line(value: str) -> str:
    why = line_problem(value)
    if why:
        raise ValueError(f"{why} (got {value!r})")
    return value


Line = Annotated[str, AfterValidator(_one_line)]
"""Text that kohya reads as (part of) one line: a caption tag, a trigger, a prompt."""


class _Table(BaseModel):
    """Base of every recipe table: unknown keys are errors, values are immutable."""

    # No inf or nan: neither is a TOML value kohya's parser reads, nor a setting anyone means.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)
