"""The build pipeline: the order of its stages, in one place.

recipe -> check (schema, facts, rules) -> compile -> prepare (stage the dataset) -> train (and
collect its outputs) -> grid -> report. :func:`run` runs them in that order, each only when its
inputs changed; each stage's verb lives in its own module under :mod:`lorabuild.stages`
(:mod:`~lorabuild.stages.check`, :mod:`~lorabuild.stages.compile`, :mod:`~lorabuild.stages.prepare`,
:mod:`~lorabuild.stages.train`, :mod:`~lorabuild.stages.grid`, :mod:`~lorabuild.stages.report`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lorabuild.problems import format_problem
from lorabuild.settings import sd_scripts_dir
from lorabuild.stages.check import Checked, require_plan

if TYPE_CHECKING:
    from lorabuild.stages.train import TrainResult

# The stages of :func:`run`, in order (``lorabuild run --until STAGE``; a Makefile target each).
RUN_STAGES = ("compile", "prepare", "train", "grid", "report")

# Only the check is imported at the top. The later stages' modules (stages.compile, stages.prepare…)
# and what they share (the build state, the writer, make's markers) are imported by :func:`run` when
# it runs them, so that importing the pipeline loads none of them: together they cost about 70 ms
# (jinja2, Pillow's drawing, the process seam), a quarter of a check.


@dataclass(frozen=True)
class StageOutcome:
    """What one stage of :func:`run` did.

    Attributes:
        stage: The stage's name.
        ran: False when it was up to date.
        summary: One line for the user.
    """

    stage: str
    ran: bool
    summary: str


@dataclass(frozen=True)
class RunReport:
    """What :func:`run` did, stage by stage, and the training it ran (if any)."""

    stages: tuple[StageOutcome, ...]
    trained: TrainResult | None


def run(
    checked: Checked,
    *,
    force_train: bool = False,
    fresh: bool = False,
    say: Callable[[str], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    until: str | None = None,
) -> RunReport:
    """Bring a checked build up to date: compile -> prepare -> train -> grid -> report.

    Holding the build's lock, each stage runs only when the inputs it reads changed since it
    last finished (:mod:`lorabuild.build.state`): compiling rewrites only files whose bytes change;
    staging runs when the images, captions or caption rules changed; training when what the
    weights depend on changed (not, say, the ``[evaluate]`` table), or when its files are gone.

    Args:
        checked: A check without errors.
        force_train: Train even when up to date (``lorabuild train``).
        fresh: Do not resume from a saved state.
        say: Receives a line per stage as it finishes, and lorabuild's notes.
        on_line: Receives kohya's output instead of the progress display.
        until: Stop after this stage (one of :data:`RUN_STAGES`); all stages when None.

    Raises:
        RecipeError: When the check found errors.
        BuildLocked: When another lorabuild works on the same build.
        TrainingError: When training failed.
    """
    from lorabuild.build import state  # lazy: only when it runs (see above)
    from lorabuild.build.markers import mark_done  # lazy: only when it runs (see above)
    from lorabuild.kohya.progress import format_duration  # lazy: only when it runs (see above)
    from lorabuild.stages.compile import compile_build  # lazy: only when it runs (see above)

    plan = require_plan(checked)
    tell = say or (lambda text: None)
    outcomes: list[StageOutcome] = []

    def done(stage: str, ran: bool, summary: str) -> None:
        outcomes.append(StageOutcome(stage, ran, summary))
        mark_done(build, stage)  # for make: this stage is done as of now (lorabuild.build.markers)
        tell(f"{stage:<8} {summary}")

    build = plan.build_dir
    with state.build_lock(build) as lock:
        changed = [w for w in compile_build(plan) if w.action != "identical"]
        done(
            "compile",
            bool(changed),
            ("wrote " + ", ".join(w.path.name for w in changed)) if changed else "up to date",
        )
        if until == "compile":
            return RunReport(tuple(outcomes), None)

        stamps = state.load_stamps(build)
        digests = state.Digests(build)
        prepare_key = state.prepare_key(plan, digests, state.prepare_inputs(checked.loaded))
        staged = all((build / "dataset" / s.folder).is_dir() for s in plan.subsets)
        if staged and state.is_done(stamps.get("prepare"), prepare_key):
            done("prepare", False, "up to date")
        else:
            from lorabuild.render.meter import Meter  # lazy: only when prepare runs (see above)
            from lorabuild.stages.prepare import prepare  # lazy: only when it runs (see above)

            meter = Meter()  # count, rate and ETA of each long step, on a terminal only
            try:
                report = prepare(plan, checked.loaded.recipe, progress=meter)
            finally:
                meter.close()
            for problem in report.problems:
                tell(format_problem(problem))
            state.save_stamp(build, "prepare", state.Stamp(prepare_key, "done"))
            images = sum(len(s.images) for s in plan.subsets)
            done(
                "prepare",
                True,
                f"staged {images} image(s): {report.linked} linked, {report.copied} copied, "
                f"{report.converted} converted, "
                + (f"{report.cut_out} cut out, " if report.cut_out else "")
                + f"{report.unchanged} unchanged, "
                f"{report.captions_written} caption(s) written",
            )
        if until == "prepare":
            return RunReport(tuple(outcomes), None)

        sd_scripts = sd_scripts_dir()
        train_key = state.train_key(plan, state.staged_dataset_digest(plan, digests), sd_scripts)
        digests.save()
        outputs_there = all((build / f.rstrip("/")).exists() for f in plan.outputs)
        trained = None
        if not force_train and outputs_there and state.is_done(stamps.get("train"), train_key):
            done("train", False, "up to date")
        else:
            from lorabuild.stages import train as training  # lazy: only when it runs (see above)

            trained = training.train(
                plan, train_key, sd_scripts, on_line=on_line, say=tell, fresh=fresh, lock=lock
            )
            how = f"resumed after epoch {trained.resumed_from.epoch}, " if trained.resumed_from else ""
            done("train", True, f"{how}done in {format_duration(trained.seconds)}")
        if until == "train":
            return RunReport(tuple(outcomes), trained)

        if checked.loaded.recipe.evaluate.prompts:
            from lorabuild.stages.grid import render_grid  # lazy: only when it runs (see above)

            grid = render_grid(plan, checked.loaded, say=tell, on_line=on_line, lock=False)
            sheets = f", {len(grid.sheets)} sheet(s)" if grid.sheets else ""
            if grid.rendered:
                done("grid", True, f"rendered {grid.rendered} of {grid.cells} cell(s){sheets}")
            else:
                done("grid", False, f"up to date ({grid.cells} cell(s){sheets})")
        else:
            done("grid", False, "skipped: the recipe has no [evaluate] prompts")
        if until == "grid":
            return RunReport(tuple(outcomes), trained)

        from lorabuild.stages.report import write_report  # lazy: only when it runs (see above)

        page = build / "report.html"
        before = page.read_bytes() if page.is_file() else None
        write_report(plan)  # rewrites the page only when its bytes change
        rewritten = page.read_bytes() != before
        done("report", rewritten, f"wrote {page.as_posix()}" if rewritten else "up to date")
    return RunReport(tuple(outcomes), trained)
