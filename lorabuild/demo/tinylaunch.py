"""What the test-only tiny-model launchers (``tinyflux.py``, ``tinysd3.py``...) share: standard library only.

Each launcher is run as a script by kohya's Python, where lorabuild may not be importable (kohya's
venv does not install it) and where putting lorabuild's repository on ``sys.path`` would shadow
kohya's own top-level ``tools`` package. So a launcher imports this module as ``tinylaunch`` from its
own folder (``sys.path[0]`` of a script) and loads its sizes module by path; imported as
``lorabuild.demo.tiny*`` it imports this module from the package. Not part of the product.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType


def load_beside(launcher: str, filename: str) -> ModuleType:
    """``filename`` (a standard-library-only module) from the folder of ``launcher`` (its ``__file__``), by path."""
    path = Path(launcher).resolve().with_name(filename)
    spec = importlib.util.spec_from_file_location(f"_lorabuild_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the tiny model's sizes from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_kohya(launcher: str, shrink: Callable[[Path], None], argv: Sequence[str] | None = None) -> None:
    """Shrink kohya's sizes with ``shrink(kohya_dir)``, then run the kohya script ``argv[0]`` unmodified.

    Args:
        launcher: The launcher's ``__file__``; its folder leaves ``sys.path``, so that its modules
            (``demo.py``...) cannot shadow kohya's.
        shrink: Patches kohya's modules in this process, given kohya's checkout.
        argv: ``KOHYA_SCRIPT ARGS...``; defaults to ``sys.argv[1:]``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or not args[0].endswith(".py"):
        sys.exit(f"usage: python {Path(launcher).name} KOHYA_SCRIPT [ARGS...]")
    script = Path(args[0]).resolve()
    here = str(Path(launcher).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and str(Path(p).resolve()) != here]
    shrink(script.parent)
    sys.argv = [str(script), *args[1:]]
    runpy.run_path(str(script), run_name="__main__")
