"""The package layout's rules that import-linter cannot check (its contracts are in pyproject.toml)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lorabuild"


def test_every_import_inside_a_function_says_why() -> None:
    """An import inside a function hides a dependency; each one carries ``# lazy: <reason>``.

    Imports sit at the top unless they are heavy (Pillow, the stage modules on the check path),
    platform-only, or would slow a command that must start fast (``lorabuild --help``, the
    Makefile's ``python -m lorabuild.batch.makefile``).
    """
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    statement = "\n".join(lines[inner.lineno - 1 : inner.end_lineno])
                    if "# lazy:" not in statement:
                        unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{inner.lineno}")
    assert unexplained == []


def test_every_package_says_what_it_holds_and_may_import() -> None:
    for init in sorted(PACKAGE.rglob("__init__.py")):
        if init.parent == PACKAGE:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "May import:" in doc, init


def test_help_and_check_do_not_load_the_later_stages() -> None:
    """``lorabuild --help`` loads no pipeline nor check; the check path (and the pipeline) loads no
    other stage, nor a build-folder, process or writer module (see stages/check.py and pipeline.py):
    they would slow every ``lorabuild check``."""
    later = (
        "lorabuild.stages.",
        "lorabuild.build",
        "lorabuild.kohya.runner",
        "lorabuild.render.writer",
        "jinja2",
    )
    code = (
        "import sys; import lorabuild.cli; print(sorted(m for m in sys.modules if m.startswith('lorabuild.')));"
        "from lorabuild.stages import check; from lorabuild import pipeline;"
        f"print(sorted(m for m in sys.modules if m.startswith({later!r}) and m != 'lorabuild.stages.check'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    help_modules, check_modules = done.stdout.splitlines()
    assert "lorabuild.pipeline" not in help_modules
    assert "lorabuild.stages.check" not in help_modules
    assert check_modules == "[]"


def test_the_stages_independence_contract_names_every_stage() -> None:
    """A new stage module joins the contract that keeps the stages from importing each other."""
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "independence"]
    stages = {f"lorabuild.stages.{p.stem}" for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__"}
    assert set(contract["modules"]) == stages


LONG_MODULE = 500
WHY_ONE_MODULE = "Why one module:"


def _says_why_one_module(path: Path) -> bool:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return any(paragraph.startswith(WHY_ONE_MODULE) for paragraph in doc.split("\n\n"))


def test_a_long_module_says_why_it_is_one() -> None:
    """A module over 500 lines is split along a seam, or its docstring has a paragraph that
    starts ``Why one module:`` and gives the reason (issue 11)."""
    unexplained = [
        path.relative_to(PACKAGE.parent).as_posix()
        for path in sorted(PACKAGE.rglob("*.py"))
        if len(path.read_text(encoding="utf-8").splitlines()) > LONG_MODULE and not _says_why_one_module(path)
    ]
    assert unexplained == [], f"split these, or start a docstring paragraph with {WHY_ONE_MODULE!r}"
