"""Extract the options ``accelerate launch`` accepts into lorabuild/data/accelerate_options.json.

Run from the repository root, with the Python that has kohya's stack (the pinned accelerate)::

    /work/kenv/bin/python tools/extract_accelerate_options.py -o lorabuild/data/accelerate_options.json

It builds accelerate's own parser (``accelerate.commands.launch.launch_command_parser``) and
records, for each option, whether it is a flag (takes no value) and its choices. Nothing is
hand-typed; the same accelerate version gives a byte-identical file. ``tests/test_launch.py``
compares the file with the installed accelerate when one is there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

GENERATED_BY = "tools/extract_accelerate_options.py"
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "lorabuild" / "data" / "accelerate_options.json"


def extract() -> dict[str, Any]:
    """The options of the installed accelerate's ``accelerate launch``, as a JSON document."""
    import accelerate
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    options: dict[str, dict[str, Any]] = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or isinstance(action, argparse._HelpAction):
            continue
        name = longs[0][2:].replace("-", "_")
        options[name] = {
            "flag": action.nargs == 0,
            "choices": sorted(str(c) for c in action.choices) if action.choices else None,
            "option_strings": sorted(action.option_strings),
        }
    return {
        "format_version": 1,
        "generated_by": GENERATED_BY,
        "accelerate_version": accelerate.__version__,
        "options": dict(sorted(options.items())),
    }


def main(argv: list[str] | None = None) -> int:
    """Write the JSON document (``-o``) or print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=None, help=f"default: {DEFAULT_OUTPUT}")
    args = parser.parse_args(argv)
    text = json.dumps(extract(), indent=1, sort_keys=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
