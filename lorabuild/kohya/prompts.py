"""kohya's prompt-line syntax: the one writer of it, and what a prompt may hold to survive it.

Two kohya readers take the same line format, ``PROMPT --w 512 --h 512 --d 42 …``: the in-training
sampler (``--sample_prompts``, ``train_util.line_to_prompt_dict``) and ``gen_img.py`` (``--from_file``,
the grid). Both split a line at ``" --"`` and try each option's pattern on every part, in any order.
A third reads a shorter form: ``flux_minimal_inference.py --interactive`` (the FLUX.1/Chroma grid)
reads ``PROMPT --w 512 --h 512 --s 20 --d 42 --g 3.5 --c 1.0 --m 0,0.8`` from stdin, split at every
``"--"`` (no space needed) and told apart by each part's first letter.
:class:`PromptLine` writes a line for each (:meth:`~PromptLine.sample_prompts_line`,
:meth:`~PromptLine.gen_img_line`, :meth:`~PromptLine.flux_line`); :func:`prompt_text_problem` and
:func:`flux_text_problem` say why a prompt or negative prompt would not be read back exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from lorabuild.recipe.schema import line_problem


def plain_number(number: str) -> str:
    """A formatted number without an exponent: kohya reads ``--l`` with ``[\\d.]+`` (1e-05 would be 1)."""
    return format(Decimal(number), "f") if "e" in number.lower() else number


def exact_number(value: float) -> str:
    """A float as kohya parses it back exactly, without an exponent (``0.8``, ``7.0``, ``0.00001``)."""
    return plain_number(repr(float(value)))


def _line(prompt: str, options: Iterable[tuple[str, str | None]]) -> str:
    """``prompt --k v --k v…``; an option whose value is None is left out."""
    return " --".join([prompt, *(f"{name} {value}" for name, value in options if value is not None)])


@dataclass(frozen=True, kw_only=True)
class PromptLine:
    """One image to sample: a line of a kohya prompt file.

    Attributes:
        prompt: The prompt (:func:`prompt_text_problem` has passed it).
        negative: ``--n``; left out when empty.
        width: ``--w``.
        height: ``--h``.
        seed: ``--d``.
        steps: ``--s``.
        cfg_scale: ``--l``.
        sampler: ``--ss``, for the in-training sampler only (gen_img takes ``--sampler`` on its
            command line).
        multipliers: ``--am``, for gen_img only: the weight of each loaded network, in
            ``--network_weights`` order; empty for none.
        image_name: ``--f``, for gen_img only: the file it saves the image as.
        guidance: FLUX.1's distilled guidance (``--g``; 0 for Chroma); None for SD families, whose
            lines leave it out.
    """

    prompt: str
    negative: str = ""
    width: int
    height: int
    seed: int
    steps: int
    cfg_scale: float
    sampler: str | None = None
    multipliers: tuple[float, ...] = ()
    image_name: str | None = None
    guidance: float | None = None

    def sample_prompts_line(self) -> str:
        """The line for the in-training sampler (``sample_prompts.txt``).

        The CFG scale is written with six significant digits (``%g``: ``7``, ``7.5``), as lorabuild
        always has, so that unchanged recipes compile to the same bytes.
        """
        return _line(
            self.prompt,
            [
                ("w", str(self.width)),
                ("h", str(self.height)),
                ("d", str(self.seed)),
                ("s", str(self.steps)),
                ("l", plain_number(f"{self.cfg_scale:g}")),
                # kohya's FLUX sampler reads it (flux_train_utils.sample_image_inference: guidance_scale).
                ("g", None if self.guidance is None else plain_number(f"{self.guidance:g}")),
                ("ss", self.sampler),
                ("n", self.negative or None),
            ],
        )

    def gen_img_line(self) -> str:
        """The line for gen_img's ``--from_file``: every number exact, so that each line stands alone."""
        return _line(
            self.prompt,
            [
                ("n", self.negative or None),
                ("w", str(self.width)),
                ("h", str(self.height)),
                ("s", str(self.steps)),
                ("l", exact_number(self.cfg_scale)),
                ("d", str(self.seed)),
                ("am", ",".join(exact_number(m) for m in self.multipliers) if self.multipliers else None),
                ("f", self.image_name),
            ],
        )

    def flux_line(self) -> str:
        """The stdin line for ``flux_minimal_inference.py --interactive``: every setting on every line.

        kohya keeps size, steps, guidance, CFG scale and the LoRA multipliers from the line before
        (and starts at 1360x768 whatever ``--width`` says), so each line sets them all; the seed
        and negative prompt are reset per line. ``--m`` is left out when no LoRA is loaded (kohya
        would log a count mismatch).
        """
        return _line(
            self.prompt,
            [
                ("w", str(self.width)),
                ("h", str(self.height)),
                ("s", str(self.steps)),
                ("d", str(self.seed)),
                ("g", None if self.guidance is None else exact_number(self.guidance)),
                ("c", exact_number(self.cfg_scale)),
                ("m", ",".join(exact_number(m) for m in self.multipliers) if self.multipliers else None),
                ("n", self.negative or None),
            ],
        )

    def lumina_line(self) -> str:
        """The stdin line for ``lumina_minimal_inference.py --interactive``: every setting on every line.

        Its loop splits the line at every ``"--"`` and reads ``w``, ``h``, ``s``, ``d``, ``g`` (the CFG
        scale: Lumina 2 has no distilled guidance), ``n``, ``ctr``, ``rcfg`` and ``m``; size, steps,
        CFG scale and the multipliers are kept from the line before, the seed and negative prompt reset.
        ``--m`` is left out when no LoRA is loaded (kohya would log a count mismatch).
        """
        return _line(
            self.prompt,
            [
                ("w", str(self.width)),
                ("h", str(self.height)),
                ("s", str(self.steps)),
                ("d", str(self.seed)),
                ("g", exact_number(self.cfg_scale)),
                ("m", ",".join(exact_number(m) for m in self.multipliers) if self.multipliers else None),
                ("n", self.negative or None),
            ],
        )

    def from_file_line(self) -> str:
        """The ``--from_file`` line for ``anima_minimal_inference.py`` and ``hunyuan_image_minimal_inference.py``:
        size, seed, steps, CFG scale, negative prompt.

        Their ``parse_prompt_line`` splits the line at every ``" --"`` and reads ``w``, ``h``, ``d``,
        ``s``, ``g`` (the CFG scale) and ``n``; the LoRA multipliers are the command's, not the line's.
        The prompt rules every family has (rules/evaluate.py) keep ``" --"`` and a leading ``#``
        (a skipped line) out of prompts.
        """
        return _line(
            self.prompt,
            [
                ("w", str(self.width)),
                ("h", str(self.height)),
                ("d", str(self.seed)),
                ("s", str(self.steps)),
                ("g", exact_number(self.cfg_scale)),
                ("n", self.negative or None),
            ],
        )


def flux_text_problem(
    text: str,
    negative: bool = False,
    *,
    label: str = "FLUX.1/Chroma",
    script: str = "flux_minimal_inference.py",
) -> str | None:
    """Why an ``--interactive`` minimal-inference script would not read ``text`` back exactly, or None.

    flux_minimal_inference.py (``label`` and ``script`` name another: SD3's and Lumina 2's loops
    are the same) splits each stdin line at every ``"--"`` (``prompt.split("--")``), strips each
    part and takes ``-`` as "no negative prompt".
    """
    if "--" in text:
        return f"must not contain '--' for {label}: {script} splits its prompt lines at every '--'"
    if negative and text.strip() == "-":
        return f"must not be '-' for {label}: {script} reads '--n -' as no negative prompt"
    return None


# kohya's in-training sampler tries its option patterns on every " --" segment of a prompt line, the
# prompt itself included (train_util.line_to_prompt_dict: re.match(r"w (\d+)", parg, re.IGNORECASE)
# and so on), so a prompt that starts like an option also sets that option.
_SAMPLER_OPTION = re.compile(r"[whds] \d|[lg] [\d.]|(?:n|ss|cn|ctr|rcfg|fs) .", re.IGNORECASE)


def prompt_text_problem(text: str, negative: bool = False) -> str | None:
    """Why kohya would not read ``text`` back exactly as the prompt of a prompt-file line, or None.

    Both readers of lorabuild's prompt lines are covered: kohya's in-training sampler
    (``sample_prompts.txt``: ``readlines()``, each line stripped, lines starting with ``#`` skipped,
    split at ``" --"``, option patterns tried on every part) and ``gen_img.py`` for the grid
    (``--from_file``: ``str.splitlines()``, the same stripping, skipping and splitting, and
    ``{a|b}`` dynamic prompts).

    Args:
        text: The final text, placeholders replaced.
        negative: ``text`` is a negative prompt (written after `` --n ``; may be empty).
    """
    why = line_problem(text)
    if why:
        return why
    if " --" in text:
        return "must not contain ' --': kohya reads ' --' as the start of an option (--w, --n, --d…)"
    if negative and text.startswith("--"):
        # Written after "--n ", it would start with " --" itself.
        return "must not start with '--': written after --n, kohya would read it as the next option"
    if text != text.strip():
        return "must not start or end with a space: kohya strips the spaces off each prompt line"
    if "{" in text or "}" in text:
        return (
            "must not contain { or } (other than {trigger}): gen_img reads braces as a dynamic prompt "
            "({a|b}); use ( ) for emphasis"
        )
    if negative:
        return None
    if not text:
        return "must not be empty: kohya would read the line's first option as the prompt"
    if text.startswith("#"):
        return "must not start with '#': kohya skips such lines as comments"
    option = _SAMPLER_OPTION.match(text)
    if option:
        return (
            f"must not start with {option.group(0)!r}: kohya's sampler reads the start of a prompt line "
            f"as the option --{option.group(0).split(' ')[0]} too"
        )
    return None
