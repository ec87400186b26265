"""Several builds in a row: ``lorabuild run a.toml b.toml …`` and the ``queue.sh`` / ``queue.ps1`` scripts.

Every recipe file is loaded first (each may expand to several builds, :mod:`lorabuild.recipe.expand`);
two builds with one name or build folder stop the queue before anything runs. Builds then run in
order with :func:`lorabuild.pipeline.run`; a failed build is reported and the queue goes on (unless
``--stop-on-error``), and a table says what became of each. Ctrl-C stops the queue: the build
that was running is marked ``stopped`` and the rest ``not run``.

The scripts are the same queue for a machine without lorabuild: they run each build's compiled
``train.sh`` / ``train.ps1`` in turn and print the same kind of table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lorabuild import __version__, pipeline
from lorabuild.build.artefacts import _environment
from lorabuild.plan.layout import is_rooted, relpath
from lorabuild.plan.plan import Plan
from lorabuild.problems import LorabuildError, Problem, RecipeError, errors_of, format_problem
from lorabuild.recipe.many import Entry, load_many
from lorabuild.render.quoting import utf8
from lorabuild.render.writer import Artefact
from lorabuild.stages.check import check_loaded, require_plan
from lorabuild.stages.train import TrainingInterrupted

# What became of a build.
OK, UP_TO_DATE, FAILED, STOPPED, NOT_RUN = "ok", "up to date", "failed", "stopped", "not run"


@dataclass(frozen=True)
class QueueRow:
    """One line of the summary table.

    Attributes:
        build: The build's name (or recipe file).
        status: ``ok``, ``up to date``, ``failed``, ``stopped`` or ``not run``.
        seconds: How long it took (None when it did not run).
        detail: The LoRA file it made, or the one-line reason it failed.
    """

    build: str
    status: str
    seconds: float | None
    detail: str


def collect(
    recipes: Sequence[Path],
    build_root: Path,
    overrides: Sequence[str] = (),
    only: str | None = None,
    keep_going: bool = True,
) -> list[Entry]:
    """Load every recipe file, in order, into queue entries (:func:`lorabuild.recipe.many.load_many`).

    Args:
        recipes: Recipe files; one named twice is queued once.
        build_root: Where builds go (to tell whether two builds share a folder).
        overrides: ``--set`` items, applied to every build.
        only: Keep only the build of this name.
        keep_going: A file that does not load becomes a failed entry; otherwise its problems raise.

    Raises:
        RecipeError: When two builds share a name or folder (naming both files), when ``only``
            matches no build, or (``keep_going=False``) when a file does not load.
    """
    return load_many(recipes, build_root, overrides, only=only, keep_going=keep_going)


def final_output(plan: Plan) -> str:
    """The build's LoRA file (the last epoch's), as a path from the current folder."""
    files = [f for f in plan.outputs if not f.endswith("/")]
    return (plan.build_dir / files[-1]).as_posix() if files else plan.build_dir.as_posix()


def _reason(problems: Sequence[Problem]) -> str:
    shown = errors_of(problems) or list(problems)
    more = f" (and {len(shown) - 1} more)" if len(shown) > 1 else ""
    return format_problem(shown[0]) + more if shown else "failed"


def run_queue(
    entries: Sequence[Entry],
    build_root: Path,
    *,
    strict: bool = False,
    stop_on_error: bool = False,
    until: str | None = None,
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
) -> list[QueueRow]:
    """Run the builds in order; a failed one is reported and the queue goes on.

    Args:
        entries: From :func:`collect`.
        build_root: Where builds go.
        strict: A build with warnings fails.
        stop_on_error: Stop at the first failed build (the rest are ``not run``).
        until: Stop each build after this stage (:data:`lorabuild.pipeline.RUN_STAGES`).
        say: Receives progress lines.
        warn: Receives problems and failures.

    Returns:
        A row per entry, in order. Stopped by Ctrl-C, the running build is ``stopped`` and the
        rest ``not run``; the caller decides the exit status (:func:`exit_status`).
    """
    rows: list[QueueRow] = []
    halt = False
    for index, entry in enumerate(entries, 1):
        if halt:
            rows.append(QueueRow(entry.label, NOT_RUN, None, ""))
            continue
        say(f"== [{index}/{len(entries)}] {entry.label}")
        if entry.loaded is None:
            for problem in entry.problems:
                warn(format_problem(problem))
            rows.append(QueueRow(entry.label, FAILED, None, _reason(entry.problems)))
            halt = stop_on_error
            continue
        start = time.perf_counter()
        try:
            checked = check_loaded(entry.loaded, build_root)
            plan = require_plan(checked, strict=strict)
            for problem in checked.warnings:
                warn(format_problem(problem))
            report = pipeline.run(checked, say=say, until=until)
        except (TrainingInterrupted, KeyboardInterrupt):
            rows.append(QueueRow(entry.label, STOPPED, time.perf_counter() - start, "stopped by Ctrl-C"))
            warn(f"{entry.label}: stopped; the rest of the queue is not run")
            halt = True
            continue
        except RecipeError as exc:
            for problem in exc.problems:
                warn(format_problem(problem))
            rows.append(QueueRow(entry.label, FAILED, time.perf_counter() - start, _reason(exc.problems)))
            halt = stop_on_error
            continue
        except LorabuildError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warn(f"{entry.label}: {exc}")
            rows.append(QueueRow(entry.label, FAILED, time.perf_counter() - start, first))
            halt = stop_on_error
            continue
        took = time.perf_counter() - start
        status = OK if any(s.ran for s in report.stages) else UP_TO_DATE
        if until is not None and until != pipeline.RUN_STAGES[-1]:
            detail = f"{plan.build_dir.as_posix()}/ (stages up to {until})"
        else:
            detail = final_output(plan)
        rows.append(QueueRow(entry.label, status, took, detail))
    return rows


def format_seconds(seconds: float | None) -> str:
    """``0:08:52``, or ``-`` for a build that did not run."""
    if seconds is None:
        return "-"
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def summary_table(rows: Sequence[QueueRow]) -> str:
    """The table printed after a queue: build, status, time, output (or why it failed)."""
    header = ("build", "status", "time", "output")
    cells = [header, *[(r.build, r.status, format_seconds(r.seconds), r.detail) for r in rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    lines = ["  ".join([*(c[i].ljust(widths[i]) for i in range(3)), c[3]]).rstrip() for c in cells]
    counts = {s: sum(1 for r in rows if r.status == s) for s in (OK, UP_TO_DATE, FAILED, STOPPED, NOT_RUN)}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return "\n".join([*lines, f"{len(rows)} build(s): {tally}"])


def exit_status(rows: Sequence[QueueRow]) -> int:
    """0 when every build is done, 130 when Ctrl-C stopped the queue, 1 when one failed."""
    if any(r.status == STOPPED for r in rows):
        return 130
    return 1 if any(r.status in (FAILED, NOT_RUN) for r in rows) else 0


# --- queue.sh / queue.ps1 ----------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptBuild:
    """A build as the queue scripts see it: paths relative to the scripts' folder, with ``/``."""

    name: str
    folder: str
    output: str

    @property
    def rooted(self) -> bool:
        """Whether :attr:`folder` is absolute (on another drive than the scripts), not relative to them."""
        return is_rooted(self.folder)


def script_builds(plans: Sequence[Plan], script_dir: Path) -> list[ScriptBuild]:
    """The builds for :func:`render_queue`, their folders relative to ``script_dir``."""
    made = []
    for plan in plans:
        files = [f for f in plan.outputs if not f.endswith("/")]
        made.append(ScriptBuild(plan.name, relpath(plan.build_dir, script_dir), files[-1] if files else ""))
    return made


def render_queue(builds: Sequence[ScriptBuild], command: Sequence[str]) -> dict[str, Artefact]:
    """``queue.sh`` and ``queue.ps1`` (UTF-8 with BOM and CRLF, as ``train.ps1``) for ``builds``.

    Args:
        builds: In the order to train them.
        command: The lorabuild command line that wrote them, as argv (shown in their header, quoted
            for each shell).
    """
    values = {"builds": builds, "version": __version__, "command": command}
    sh = _environment().get_template("queue.sh.j2").render(values)
    ps1 = _environment("\r\n").get_template("queue.ps1.j2").render(values)
    return {
        "queue.sh": Artefact(utf8(sh, "queue.sh"), executable=True),
        "queue.ps1": Artefact(b"\xef\xbb\xbf" + utf8(ps1, "queue.ps1")),
    }
