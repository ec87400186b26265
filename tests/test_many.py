"""Several recipe files at once (:mod:`lorabuild.recipe.many`): the loader the queue, the Makefile and
the Slurm array share, so that they agree on which builds clash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lorabuild.batch import makegen, slurm
from lorabuild.batch import queue as runqueue
from lorabuild.problems import RecipeError, format_problem
from lorabuild.recipe.many import load_many
from tests.conftest import RECIPE, Project


def recipe(project: Project, file: str, name: str) -> Path:
    project.write_recipe(RECIPE.replace('name = "Test_v1"', f'name = "{name}"'), file)
    return Path(file)


def problems_of(load: Callable[[], object]) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load()
    return [format_problem(p) for p in info.value.problems]


COLLECTORS: dict[str, Callable[[list[Path]], object]] = {
    "load_many": lambda files: load_many(files, Path("build")),
    "queue": lambda files: runqueue.collect(files, Path("build"), keep_going=False),
    "makefile": lambda files: makegen.collect_builds(files, Path("build")),
    "slurm": lambda files: slurm.collect(files, Path("build"), (), "train"),
}


@pytest.mark.parametrize("collector", COLLECTORS)
def test_names_that_differ_only_in_case_clash_everywhere(project: Project, collector: str) -> None:
    """``Test_v1`` and ``TEST_V1`` would share one build folder on Windows and macOS."""
    recipe(project, "upper.toml", "TEST_V1")
    assert problems_of(lambda: COLLECTORS[collector]([project.recipe, Path("upper.toml")])) == [
        "upper.toml: name: build 'TEST_V1' has the same build folder ('Test_v1' and 'TEST_V1') as a build "
        "of recipe.toml: both would write build/TEST_V1/; rename one of them"
    ]


@pytest.mark.parametrize("collector", COLLECTORS)
def test_one_name_twice_clashes_everywhere(project: Project, collector: str) -> None:
    recipe(project, "copy.toml", "Test_v1")
    assert problems_of(lambda: COLLECTORS[collector]([project.recipe, Path("copy.toml")])) == [
        "copy.toml: name: build 'Test_v1' has the same name as a build of recipe.toml: both would write "
        "build/Test_v1/; rename one of them"
    ]


def test_a_file_named_twice_is_loaded_once(project: Project) -> None:
    entries = load_many([project.recipe, Path("./recipe.toml"), project.root / "recipe.toml"], Path("build"))
    assert [(e.label, e.file, e.select) for e in entries] == [("Test_v1", project.recipe, False)]


def test_every_problem_at_once(project: Project) -> None:
    recipe(project, "upper.toml", "TEST_V1")
    project.write_recipe("name = 1\n", "broken.toml")
    problems = problems_of(
        lambda: load_many([project.recipe, Path("broken.toml"), Path("upper.toml")], Path("build"))
    )
    assert problems[0].startswith("broken.toml: ")
    assert problems[-1].startswith("upper.toml: name: build 'TEST_V1' has the same build folder")


def test_keep_going_keeps_a_file_that_does_not_load(project: Project) -> None:
    project.write_recipe("name = 1\n", "broken.toml")
    entries = load_many([Path("broken.toml"), project.recipe], Path("build"), keep_going=True)
    assert [(e.label, e.loaded is None) for e in entries] == [("broken.toml", True), ("Test_v1", False)]
    assert entries[0].problems


def test_a_sweep_selects_each_build(project: Project) -> None:
    project.write_recipe(RECIPE + '\n[sweep]\n"network.dim" = [4, 8]\n', "sweep.toml")
    entries = load_many([Path("sweep.toml"), project.recipe], Path("build"))
    assert [(e.label, e.select) for e in entries] == [
        ("Test_v1-dim4", True),
        ("Test_v1-dim8", True),
        ("Test_v1", False),
    ]
