"""Round trip: every shipped recipe, compiled, then imported back, compiles to the same kohya options.

Each shipped recipe (recipes/*.toml, as tests/test_golden.py compiles them) is compiled; its
``config.toml`` + ``dataset.toml``, its ``train.sh`` and its ``train.ps1`` are each imported into a
new recipe, which is checked and compiled into another build root. The two builds' config
documents (as kohya's ``toml`` reads them), dataset documents and launch commands must be equal,
but for the differences listed in :data:`EXPECTED_DIFFERENCES`, each with the reason it cannot
round-trip.

What a compiled build cannot say is put back the way a user answers the import's TODOs: the
subsets' ``source`` (the compiled files name lorabuild's staged copies, not the original folders)
is pointed at the original folders, and an SD1.x config imported without its script gets its
``model.family`` (lorabuild would read it from the base model's header; the test's are fakes).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import toml

from lorabuild.importer.model import NoteKind
from lorabuild.importer.sources import import_sources
from lorabuild.importer.write import write_recipe
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.compile import compile_build
from tests.test_golden import RECIPES, compile_shipped

pytestmark = pytest.mark.usefixtures("gpu_packages")  # the recipes ask for xformers

SOURCES = {
    "config+dataset": ("config.toml", "dataset.toml"),
    "train.sh": ("train.sh",),
    "train.ps1": ("train.ps1",),
}

EXPECTED_DIFFERENCES: dict[str, str] = {
    # option (section.key) -> why it cannot round-trip
    "metadata.training_comment": "lorabuild writes the recipe file's hash: the imported recipe is another file",
}
"""kohya options that differ between a shipped recipe's build and its import's, and why. Every other
option of config.toml and dataset.toml round-trips exactly."""

LAUNCH_NOT_CARRIED = {
    "config+dataset": "kohya's TOMLs hold no accelerate options or environment ([launch] is the recipe's own)",
}
"""Sources whose import cannot give back the launch command (train.sh, train.ps1), and why; from
the scripts it round-trips exactly."""


def _without_expected(doc: dict[str, Any]) -> dict[str, Any]:
    out = {section: dict(table) for section, table in doc.items()}
    for key in EXPECTED_DIFFERENCES:
        section, _, name = key.partition(".")
        out.get(section, {}).pop(name, None)
    return out


def _launch_lines(script: str) -> list[str]:
    """The script without its comment lines (which name the recipe file)."""
    return [line for line in script.splitlines() if not line.lstrip("\ufeff").startswith("#")]


@pytest.mark.parametrize("source", SOURCES, ids=str)
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_round_trips(
    recipe: Path, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = compile_shipped(recipe, tmp_path, monkeypatch)
    original = tomllib.loads(recipe.read_text(encoding="utf-8"))
    imported = import_sources([plan.build_dir / name for name in SOURCES[source]])

    unknown = [n.line() for n in imported.notes if n.kind is not NoteKind.TODO]
    assert unknown == [], "a compiled build carries nothing an import must leave out"
    subsets = imported.values["dataset.subsets"]
    assert isinstance(subsets, list)
    todo = {n.key for n in imported.notes if n.kind is NoteKind.TODO}
    for index, (subset, shipped) in enumerate(zip(subsets, original["dataset"]["subsets"], strict=True)):
        assert f"dataset.subsets[{index}].source" in todo  # the staged copy, flagged
        subset["source"] = (tmp_path / "recipes" / shipped["source"]).resolve()

    if "model.family" in todo:
        # A config alone does not say SD1.x (nothing in it is SD1-only): lorabuild reads the family
        # from the base model's header, and the golden project's checkpoints are headerless fakes.
        assert source == "config+dataset"
        imported.set("model.family", original["model"]["family"])
    out = tmp_path / "recipes" / "imported.toml"
    write_recipe(imported, out)
    again = require_plan(check(out.relative_to(tmp_path), [], Path("build2")))
    compile_build(again)

    for name in ("config.toml", "dataset.toml"):
        before = toml.loads((plan.build_dir / name).read_text(encoding="utf-8"))
        after = toml.loads((again.build_dir / name).read_text(encoding="utf-8"))
        if name == "config.toml":
            for key in EXPECTED_DIFFERENCES:  # the table holds only what really differs
                section, _, option = key.partition(".")
                assert after[section][option] != before[section][option], key
            before, after = _without_expected(before), _without_expected(after)
        assert after == before, f"{recipe.stem} via {source}: {name} differs"
    if source in LAUNCH_NOT_CARRIED:
        return
    for name in ("train.sh", "train.ps1"):
        before_text = (plan.build_dir / name).read_text(encoding="utf-8")
        after_text = (again.build_dir / name).read_text(encoding="utf-8")
        assert _launch_lines(after_text) == _launch_lines(before_text), f"{recipe.stem} via {source}: {name}"
