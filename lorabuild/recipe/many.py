"""Several recipe files at once: the one loader of a queue, a Makefile and a Slurm array.

``lorabuild run a.toml b.toml``, ``lorabuild queue``, ``lorabuild makefile`` and ``lorabuild compile
--target slurm`` all load their files with :func:`load_many`, so they agree on what counts as one
file and on which builds clash:

- A file named twice (``recipe.toml`` and ``./recipe.toml``; on Windows also in another case) is
  loaded once, where it is first named.
- Each file may define several builds (a ``[sweep]``); their order is kept.
- Two builds clash when their build folders would be one: the same name, or names that differ only
  in case (``Test_v1`` and ``TEST_V1`` share ``build/test_v1/`` on Windows and macOS, whose file
  systems ignore case). A clash is an error naming both files, whatever the machine, so a recipe
  set that works here also works there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lorabuild.problems import Problem, RecipeError, error
from lorabuild.recipe import load
from lorabuild.recipe.load import LoadedRecipe


@dataclass(frozen=True)
class Entry:
    """One build of the recipe files, or one file that did not load.

    Attributes:
        file: The recipe file, as first named.
        loaded: The build; None when its file did not load.
        problems: Why the file did not load.
        select: The file defines several builds: command lines pick this one with ``--only``.
    """

    file: Path
    loaded: LoadedRecipe | None
    problems: tuple[Problem, ...] = ()
    select: bool = False

    @property
    def label(self) -> str:
        """The build's name, or the recipe file's path when it did not load."""
        return self.loaded.recipe.name if self.loaded is not None else self.file.as_posix()


def same_file_key(path: Path) -> str:
    """What two spellings of one recipe file have in common (absolute, in the platform's case)."""
    return os.path.normcase(os.path.abspath(path))


def folder_key(build_root: Path, name: str) -> str:
    """What the build folders of two builds that would share a folder anywhere have in common."""
    return os.path.normcase(os.path.abspath(build_root / name)).casefold()


def load_many(
    recipes: Sequence[Path],
    build_root: Path,
    overrides: Sequence[str] = (),
    *,
    only: str | None = None,
    keep_going: bool = False,
) -> list[Entry]:
    """Load every recipe file, in order, into one entry per build.

    Args:
        recipes: Recipe files; one named twice is loaded once.
        build_root: Where builds go (to tell whether two builds share a folder).
        overrides: ``--set`` items, applied to every build.
        only: Keep only the build of this name.
        keep_going: A file that does not load becomes an entry without a build (its problems
            attached); otherwise its problems are raised.

    Raises:
        RecipeError: With every problem at once: the problems of each file that did not load
            (unless ``keep_going``), ``only`` matching no build, and every pair of builds that would
            share a build folder (see the module).
    """
    entries: list[Entry] = []
    seen: dict[str, Path] = {}
    problems: list[Problem] = []
    for path in recipes:
        if same_file_key(path) in seen:
            continue
        seen[same_file_key(path)] = path
        try:
            builds = load.load_builds(path, overrides)
        except RecipeError as exc:
            if not keep_going:
                problems += exc.problems
            entries.append(Entry(path, None, tuple(exc.problems)))
            continue
        entries += [Entry(path, b, select=len(builds) > 1) for b in builds]
    if only is not None:
        picked = [e for e in entries if e.loaded is not None and e.loaded.recipe.name == only]
        if not picked and not problems:
            names = ", ".join(e.label for e in entries if e.loaded is not None) or "none loaded"
            files = ", ".join(p.as_posix() for p in seen.values())
            raise RecipeError([error("--only", f"no build is named {only!r} in {files} (builds: {names})")])
        entries = picked
    problems += folder_clashes([e.loaded for e in entries if e.loaded is not None], build_root)
    if problems:
        raise RecipeError(problems)
    return entries


def folder_clashes(builds: Sequence[LoadedRecipe], build_root: Path) -> list[Problem]:
    """A problem for each build whose folder an earlier build of ``builds`` already has."""
    owners: dict[str, LoadedRecipe] = {}
    clashes: list[Problem] = []
    for loaded in builds:
        name = loaded.recipe.name
        # One folder per build: names that differ only in case share it on Windows and macOS.
        first = owners.setdefault(folder_key(build_root, name), loaded)
        if first is loaded:
            continue
        same = "name" if first.recipe.name == name else f"build folder ({first.recipe.name!r} and {name!r})"
        clashes.append(
            error(
                "name",
                f"build {name!r} has the same {same} as a build of {first.display}: both would write "
                f"{(build_root / name).as_posix()}/; rename one of them",
            ).at(loaded.display)
        )
    return clashes
