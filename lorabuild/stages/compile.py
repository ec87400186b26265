"""The compile stage: the build folder's artefacts (config, dataset config, prompts, scripts, plan.json).

:func:`compile_build` renders them in memory (:func:`lorabuild.build.artefacts.render`) and writes
only those whose bytes changed (:func:`lorabuild.render.writer.write_files`).
"""

from __future__ import annotations

from lorabuild.build.artefacts import render
from lorabuild.plan.plan import Plan
from lorabuild.render.writer import Written, write_files
from lorabuild.settings import sd_scripts_dir


def compile_build(plan: Plan, dry_run: bool = False) -> list[Written]:
    """Write the build folder's artefacts (only those whose bytes changed; none with ``dry_run``)."""
    return write_files(plan.build_dir, render(plan, sd_scripts_dir()), dry_run=dry_run)
