"""``accelerate launch``'s options, to validate ``[launch] accelerate_args`` in the recipe.

The list comes from ``lorabuild/data/accelerate_options.json``, which
``tools/extract_accelerate_options.py`` extracts from the pinned accelerate (kohya's launcher, not
kohya itself). It lives with the recipe because the schema checks ``accelerate_args`` as it
validates; :func:`lorabuild.kohya.launch.accelerate_argv` turns the checked values into argv.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ACCELERATE_OPTIONS_FILE = Path(__file__).resolve().parent.parent / "data" / "accelerate_options.json"


@functools.cache
def accelerate_options() -> dict[str, dict[str, Any]]:
    """``accelerate launch``'s options at the pinned accelerate, by name (``tools/extract_accelerate_options.py``)."""
    document = json.loads(ACCELERATE_OPTIONS_FILE.read_text(encoding="utf-8"))
    options: dict[str, dict[str, Any]] = document["options"]
    return options


def check_accelerate_args(args: Mapping[str, object], managed: Mapping[str, str]) -> None:
    """Check ``[launch] accelerate_args`` against accelerate's real option list.

    Args:
        args: Option name (without ``--``) -> value; ``True`` writes a flag, ``False`` leaves it out.
        managed: Options lorabuild writes itself -> the recipe key that sets each.

    Raises:
        ValueError: The first unknown, managed or ill-typed option, saying how to fix it.
    """
    known = accelerate_options()
    for raw, value in args.items():
        name = raw.removeprefix("--").replace("-", "_")
        if name in managed:
            raise ValueError(f"{raw!r} is set by lorabuild: use {managed[name]} instead")
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{raw!r} is not an option of accelerate launch{hint}")
        option = known[name]
        if option["flag"] and not isinstance(value, bool):
            raise ValueError(f"{raw!r} is a flag: write true or false (got {value!r})")
        if not option["flag"] and isinstance(value, bool):
            raise ValueError(f"{raw!r} takes a value, not true/false")
        if option["choices"] and str(value) not in option["choices"]:
            raise ValueError(f"{raw!r} must be one of {', '.join(option['choices'])} (got {value!r})")
