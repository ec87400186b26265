"""``lorabuild makefile``: a GNU Makefile with a target per build and stage, for ``make -j``/``-k``.

This module writes the Makefile; :mod:`lorabuild.batch.makefile` is the helper it runs.

The Makefile is a thin scheduler over ``lorabuild run``. make decides *which* builds and stages
to look at, and in what order; lorabuild's own hash stamps (:mod:`lorabuild.build.state`) decide
whether a stage really has to run. That split keeps make's mtime logic from ever deciding
staleness wrongly, while a no-op ``make`` starts no ``lorabuild run`` at all.

Targets (``NAME`` is the build's name made safe for make, see :func:`target_names`):

``all`` (the default)
    Every build, up to its last stage.
``NAME``, ``NAME/compile``, ``NAME/prepare``, ``NAME/train``, ``NAME/grid``, ``NAME/report``
    One build, up to its last stage or up to the stage named. The stages come from
    :data:`lorabuild.pipeline.RUN_STAGES`, so a stage added to ``lorabuild run`` gets a target.
``check``, ``NAME/check``
    ``lorabuild check`` of every build, or of one.
``clean-stamps``
    Forget make's stamps: the next ``make`` asks lorabuild about every stage (and lorabuild's
    hashes still skip whatever is up to date, so nothing retrains needlessly).

Per build, these files live in ``build/<name>/.lorabuild/``:

``inputs.stamp``
    Rewritten only when the size or modification time of something the build reads changed:
    the recipe file and the files it extends, every file the recipe names and every file under
    each folder it names (dataset folders, base model, VAE, tagger), kohya's checked-out commit,
    lorabuild's version and the build's command lines. The Makefile lists these per build on
    ``# lorabuild-build: {json}`` comment lines; one phony rule, ``lorabuild-inputs``, runs
    ``python -m lorabuild.batch.makefile inputs Makefile`` (stdlib only: one Python start-up, ~0.15 s,
    for all builds) and every stamp is its target with an empty recipe, so make re-reads the
    stamps' mtimes afterwards ("move if changed"). A build not made yet gets no stamp (nor a
    folder); make runs its stages because the stamp is missing. A stamp written for the first
    time takes the mtime of the newest input (or the Makefile's), not now, so the first ``make``
    after a build was made does not ask its stages again.
``<stage>.done``
    Touched by :func:`lorabuild.pipeline.run` each time it finds a stage done (run now, or up to
    date by its hashes); a run up to stage ``k`` touches the markers of every stage up to ``k``.
    Each marker depends on ``inputs.stamp`` and its rule is one ``lorabuild run RECIPE --only
    NAME --until STAGE``, so a stale build costs one lorabuild process, which runs its stages in
    order. Stage ``k`` also waits for stage ``k-1``'s marker when an earlier stage of the same
    build is a goal too (``make -j2 NAME/prepare NAME``), so two processes never race for one
    build (the build lock would refuse the second).

So a second ``make`` with nothing changed runs one fingerprint process and nothing else.
Touching a recipe (or a caption, an image, the model) changes the fingerprint of the builds
that read it only, so only they are asked again (one ``lorabuild run`` of ~0.5 s each), and
``lorabuild run`` retrains only when the content changed. ``make -j2`` runs different builds in
parallel; ``make -k`` carries on past a failed build and exits non-zero.

Trade-offs:

* make never sees inside folders, and a folder's own mtime misses a caption edited in place, so
  the fingerprint walks the dataset folders (stat only, no reading: ~10 ms per 1,000 files). It
  uses size and mtime, as ``git status`` does: an edit that keeps both is missed by make (``make
  clean-stamps`` or ``lorabuild run`` catch it, since they hash content).
* A kohya checkout is seen through its git ``HEAD`` and branch ref (and ``packed-refs``);
  ``LORABUILD_SD_SCRIPTS`` in make's environment counts too.
* The Makefile depends on the recipe files, so editing one writes the Makefile again (a recipe
  can now extend another file or expand to other builds) and make restarts with it. The
  Makefile is always rewritten then, even when identical, so its mtime stops the next run from
  regenerating it again.

Portability: GNU make 4.x, also MSYS/Git-bash make on Windows. Every recipe line is one command;
paths are relative to the Makefile's folder (run ``make`` there or with ``make -C``) and written
with ``/``. Arguments are double-quoted where that is enough for both ``sh`` and ``cmd.exe``
(single-quoted, for ``sh``, otherwise). Targets cannot hold spaces, so they are build names made
safe; file prerequisites escape spaces (``\\ ``), and a recipe path make cannot spell at all
(``:``, ``#``, ``%``...) is left out of the Makefile's own prerequisites (the fingerprint still
covers it; rerun ``lorabuild makefile`` after editing which files it extends). Only the
``lorabuild-inputs`` and ``clean-stamps`` rules run ``python -m lorabuild.batch.makefile`` instead of
the ``lorabuild`` command, to start in a third of the time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild import __version__, pipeline
from lorabuild.batch.makefile import BUILD_LINE, INPUTS_STAMP
from lorabuild.plan.layout import STATE_DIR
from lorabuild.probe.inputs import recipe_paths
from lorabuild.problems import LorabuildError
from lorabuild.recipe.load import LoadedRecipe, cwd_relative
from lorabuild.recipe.many import load_many
from lorabuild.render.quoting import make_comment, utf8
from lorabuild.render.writer import write_atomic
from lorabuild.settings import sd_scripts_dir

_RESERVED = {
    "all",
    "check",
    "clean-stamps",
    "FORCE",
    "Makefile",
    "makefile",
    "GNUmakefile",
    "lorabuild-inputs",
}


class MakefileError(LorabuildError):
    """The Makefile cannot be written as asked (exit status 2)."""

    exit_code = 2


# --- the builds a Makefile covers ----------------------------------------------------------------


@dataclass(frozen=True)
class MakeBuild:
    """One build of a Makefile.

    Attributes:
        name: The build's name (``build/<name>/``).
        target: Its make target, :attr:`name` made safe and unique.
        recipe: The recipe file that defines it.
        sources: Every recipe file it reads: the recipe and the files it extends.
        inputs: Files and folders it reads (what the recipe names, kohya's git HEAD).
        build_dir: ``<build root>/<name>``.
        select: Whether command lines pick it with ``--only`` (its file defines several builds).
    """

    name: str
    target: str
    recipe: Path
    sources: tuple[Path, ...]
    inputs: tuple[Path, ...]
    build_dir: Path
    select: bool


def recipe_files(loaded: LoadedRecipe) -> tuple[Path, ...]:
    """The recipe file and every file it extends (``LoadedRecipe.sources``), nearest first."""
    sources: Sequence[Path] = getattr(loaded, "sources", ())
    return tuple(dict.fromkeys([loaded.path, *sources]))


def named_paths(value: Any) -> Iterator[Path]:
    """Every path a validated recipe names (dataset folders, base model, VAE, tagger folder...)."""
    return recipe_paths(value)


def kohya_head_files(sd_scripts: Path) -> list[Path]:
    """The git files that say which commit ``sd_scripts`` has checked out (HEAD, its ref)."""
    dot_git = sd_scripts / ".git"
    if dot_git.is_file():
        try:
            target = dot_git.read_text(encoding="utf-8").strip().removeprefix("gitdir:").strip()
        except OSError:
            return [dot_git]
        dot_git = Path(os.path.normpath(sd_scripts / target))
    head = dot_git / "HEAD"
    files = [head]
    try:
        text = head.read_text(encoding="utf-8").strip()
    except OSError:
        return files
    if text.startswith("ref:"):
        files += [dot_git / text.removeprefix("ref:").strip(), dot_git / "packed-refs"]
    return files


_UNSAFE_TARGET = re.compile(r"[^A-Za-z0-9._-]+")


def target_names(names: Sequence[str]) -> list[str]:
    """Make target names for build names: letters, digits, ``. _ -`` only, unique, not reserved.

    Other characters (spaces, non-ASCII) become ``_``; a clash gets ``-2``, ``-3``...
    (``My LoRA`` -> ``My_LoRA``, ``初春`` -> ``build``).
    """
    taken = {t.lower() for t in _RESERVED}
    out = []
    for name in names:
        base = _UNSAFE_TARGET.sub("_", name).strip("._-") or "build"
        candidate, n = base, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{base}-{n}"
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def collect_builds(
    recipes: Sequence[Path], build_root: Path, overrides: Sequence[str] = ()
) -> list[MakeBuild]:
    """Load every recipe file (:func:`lorabuild.recipe.many.load_many`) and list its builds.

    Raises:
        RecipeError: With every recipe's problems, or when two builds share a name (or folder).
    """
    loaded_builds = load_many(recipes, build_root, overrides)
    found = [(e.loaded, e.select) for e in loaded_builds if e.loaded is not None]
    kohya = kohya_head_files(sd_scripts_dir())
    targets = target_names([loaded.recipe.name for loaded, _ in found])
    made = []
    for (loaded, select), target in zip(found, targets, strict=True):
        sources = recipe_files(loaded)
        inputs = list(dict.fromkeys([*named_paths(loaded.recipe), *kohya]))
        made.append(
            MakeBuild(
                name=loaded.recipe.name,
                target=target,
                recipe=loaded.path,
                sources=sources,
                inputs=tuple(inputs),
                build_dir=build_root / loaded.recipe.name,
                select=select,
            )
        )
    return made


# --- rendering -------------------------------------------------------------------------------------

_SHELL_BARE = re.compile(r"[A-Za-z0-9_./:=@+,-]+")


_MAKE_PATH = re.compile(r"[A-Za-z0-9_./+@,\- \u0080-\U0010ffff]+")


def shell_word(text: str) -> str:
    """``text`` as one word for a make recipe line (run by ``sh``, or ``cmd.exe`` on plain Windows make).

    Bare when safe, in double quotes when nothing inside is special to ``sh`` or ``cmd.exe``,
    else in single quotes (``sh`` only). ``$`` is doubled for make.

    Raises:
        MakefileError: ``text`` holds a line break or NUL, which no make recipe line can carry.
    """
    if re.search(r"[\n\r\0]", text):
        raise MakefileError(f"{text!r} contains a line break: a Makefile cannot pass it; rename it")
    if _SHELL_BARE.fullmatch(text):
        word = text
    elif not re.search(r'["$`\\!%^&|<>]', text):
        word = f'"{text}"'
    else:
        word = "'" + text.replace("'", "'\\''") + "'"
    return word.replace("$", "$$")


def make_path(path: str) -> str | None:
    """``path`` spelt as a make target or prerequisite (spaces escaped), or None if make cannot."""
    if not _MAKE_PATH.fullmatch(path) or path.startswith(("~", "-")):
        return None
    return path.replace(" ", "\\ ")


class _Paths:
    """Paths as the Makefile writes them: relative to its folder when possible, with ``/``."""

    def __init__(self, folder: Path):
        self.folder = os.path.abspath(folder)

    def __call__(self, path: Path) -> str:
        full = os.path.abspath(path)
        try:
            rel = os.path.relpath(full, self.folder)
        except ValueError:  # another Windows drive
            return Path(full).as_posix()
        return Path(full).as_posix() if rel.startswith("..") and os.path.isabs(path) else Path(rel).as_posix()


def render_makefile(
    builds: Sequence[MakeBuild],
    *,
    recipes: Sequence[Path],
    output: Path,
    build_root: Path,
    stages: Sequence[str],
    python: str,
    overrides: Sequence[str] = (),
) -> str:
    """The Makefile's text (see the module docstring for its targets and rules).

    Args:
        builds: The builds, in order.
        recipes: The recipe files as given (for the rule that writes the Makefile again).
        output: Where the Makefile goes (its folder is make's working folder).
        build_root: The build root.
        stages: ``lorabuild run``'s stages, in order.
        python: The Python that runs lorabuild (the Makefile's ``LORABUILD_PYTHON`` default).
        overrides: ``--set`` values for every command (path values already absolute).

    Raises:
        MakefileError: When a stamp path cannot be spelt in a Makefile.
    """
    rel = _Paths(output.parent)

    def stamp(build: MakeBuild, name: str) -> str:
        text = rel(build.build_dir / STATE_DIR / name)
        spelt = make_path(text)
        if spelt is None:
            raise MakefileError(
                f"the build folder {build.build_dir.as_posix()} cannot be named in a Makefile "
                f"(as {text!r}): use a --build-dir without ':', '#', '%', '$' or quotes, "
                "inside the Makefile's folder"
            )
        return spelt

    def words(*items: str) -> str:
        return " ".join(shell_word(i) for i in items)

    root = rel(build_root)
    sets = [w for item in overrides for w in ("--set", item)]

    def arguments(build: MakeBuild) -> list[str]:
        only = ["--only", build.name] if build.select else []
        return [rel(build.recipe), *only, *sets, "--build-dir", root]

    def command(verb: str, build: MakeBuild, *extra: str) -> str:
        return f"$(LORABUILD) {verb} " + words(*arguments(build), *extra)

    def key(build: MakeBuild) -> str:  # a change of a build's command lines changes its fingerprint
        data = json.dumps(arguments(build), ensure_ascii=False).encode("utf-8", "surrogatepass")
        return hashlib.sha256(data).hexdigest()[:16]

    width = max([len(b.target) for b in builds] + [6])
    name_width = max([len(b.name) for b in builds] + [5])
    lines = [
        f"# Generated by `lorabuild makefile` (lorabuild {__version__}). Do not edit: it is written",
        "# again whenever one of its recipe files changes. Run make in this folder (or make -C it):",
        "#",
        "#   make -j2            every build, two at a time; each stage only when its inputs changed",
        "#   make -k             carry on past a failed build (make still exits non-zero)",
        "#   make NAME           one build;  make NAME/STAGE  one build up to STAGE",
        f"#                       (stages: {', '.join(stages)})",
        "#   make check          lorabuild check every build (no training)",
        "#   make clean-stamps   make asks lorabuild about every stage again (nothing retrains needlessly)",
        "#",
        f"# {'target':<{width}}  {'build':<{name_width}}  recipe",
    ]
    lines += [
        "# " + make_comment(f"{b.target:<{width}}  {b.name:<{name_width}}  {rel(b.recipe)}") for b in builds
    ]
    lines += [
        "",
        f"LORABUILD_PYTHON ?= {shell_word(python)}",
        "LORABUILD ?= $(LORABUILD_PYTHON) -m lorabuild",
        "",
        ".DEFAULT_GOAL := all",
        ".SUFFIXES:",
    ]
    phony = ["all", "check", "clean-stamps", "lorabuild-inputs"]
    for b in builds:
        phony += [b.target, f"{b.target}/check", *(f"{b.target}/{s}" for s in stages)]
    lines += [f".PHONY: {' '.join(phony)}", "", f"all: {' '.join(b.target for b in builds)}"]
    lines += [f"check: {' '.join(b.target + '/check' for b in builds)}"]
    lines.append("")
    here = shell_word(output.name)
    lines += [
        "# One process fingerprints every build's inputs (the `lorabuild-build:` lines below) and",
        "# rewrites the inputs.stamp of those that changed; make then compares mtimes.",
        "lorabuild-inputs:",
        f"\t@$(LORABUILD_PYTHON) -m lorabuild.batch.makefile inputs {here}",
        f"{' '.join(stamp(b, INPUTS_STAMP) for b in builds)}: lorabuild-inputs ;",
        "",
    ]
    for b in builds:
        lines.append("# " + make_comment(f"--- {b.name} ({rel(b.recipe)})"))
        lines.append(f"{b.target}: {b.target}/{stages[-1]}")
        for s in stages:
            lines.append(f"{b.target}/{s}: {stamp(b, s + '.done')}")
        lines += [f"{b.target}/check:", f"\t{command('check', b)}"]
        inputs = [rel(p) for p in dict.fromkeys([*b.sources, *b.inputs])]
        entry = {"dir": rel(b.build_dir), "key": key(b), "paths": inputs}
        lines.append(BUILD_LINE + json.dumps(entry, ensure_ascii=False))
        for k, s in enumerate(stages):
            # One `lorabuild run --until STAGE` brings every stage up to STAGE; when an earlier
            # stage of this build is also a goal (make -j2 NAME/prepare NAME), wait for it.
            earlier = " ".join(f"{b.target}/{e}" for e in stages[:k])
            after = (
                f" $(if $(filter {earlier},$(MAKECMDGOALS)),{stamp(b, stages[k - 1] + '.done')})" if k else ""
            )
            lines += [
                f"{stamp(b, s + '.done')}: {stamp(b, INPUTS_STAMP)}{after}",
                f"\t{command('run', b, '--until', s)}",
            ]
        lines.append("")
    sources = list(dict.fromkeys(rel(p) for b in builds for p in b.sources))
    spelt = [s for s in (make_path(p) for p in sources) if s is not None]
    unspelt = [p for p in sources if make_path(p) is None]
    if unspelt:
        lines.append("# " + make_comment("Not prerequisites (make cannot spell them): " + ", ".join(unspelt)))
    regenerate = words(*(rel(r) for r in recipes), *sets, "-o", output.name, "--build-dir", root)
    lines += [
        f"{make_path(output.name) or 'Makefile'}: {' '.join(spelt)}",
        f"\t$(LORABUILD) makefile {regenerate}",
        "",
        "clean-stamps:",
        f"\t@$(LORABUILD_PYTHON) -m lorabuild.batch.makefile clean-stamps {here}",
        "",
    ]
    return "\n".join(lines)


def run_stages() -> tuple[str, ...]:
    """``lorabuild run``'s stages in order (``--until`` accepts each)."""
    return pipeline.RUN_STAGES


def output_problem(output: Path, recipes: Sequence[Path], wanted: str) -> str | None:
    """Why ``output`` cannot be the generated file (a folder, or one of the recipes), or None."""
    if output.is_dir():
        return f"{output.as_posix()} is a folder: give {wanted}"
    if any(os.path.abspath(output) == os.path.abspath(r) for r in recipes):
        return f"-o {output.as_posix()} is one of the recipes: choose another output file"
    return None


def write_makefile(
    recipes: Sequence[Path], output: Path, build_root: Path, overrides: Sequence[str] = ()
) -> list[MakeBuild]:
    """Write the Makefile for ``recipes`` to ``output`` (atomically, always: its mtime matters).

    ``overrides`` (``--set``) are passed to every command line, path values made absolute (the
    command lines run in the Makefile's folder, not the current one).

    Raises:
        RecipeError: When a recipe does not load, or two builds share a name.
        MakefileError: When the Makefile cannot express a path, or ``output`` is a folder.
    """
    problem = output_problem(output, recipes, "the Makefile's file name, e.g. -o Makefile")
    if problem:
        raise MakefileError(problem)
    overrides = [cwd_relative(item) for item in overrides]
    builds = collect_builds(recipes, build_root, overrides)
    if not builds:
        raise MakefileError("no builds: name at least one recipe file")
    text = render_makefile(
        builds,
        recipes=recipes,
        output=output,
        build_root=build_root,
        stages=run_stages(),
        python=Path(sys.executable).as_posix(),
        overrides=overrides,
    )
    write_atomic(output, utf8(text, output.name))
    return builds
