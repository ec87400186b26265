"""The build pipeline, its stages in one place.

recipe -> check (schema, facts, rules) -> plan -> render -> write -> stage dataset
-> train (and collect its outputs) (-> grid -> install, in later stages). :func:`run` runs them
in that order, each only when its inputs changed.

Each function here is one stage's public verb; the CLI calls them and prints what they return.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lorabuild.kohya.tagger import autotag_sections, settings_keys
from lorabuild.plan.layout import BuildLayout
from lorabuild.plan.plan import Plan, build_plan
from lorabuild.plan.subsets import plan_subsets
from lorabuild.probe.facts import Facts, gather, input_fingerprint
from lorabuild.problems import Problem, RecipeError, Severity, errors_of, format_problem
from lorabuild.recipe.load import LoadedRecipe, load_recipe
from lorabuild.recipe.schema import Recipe
from lorabuild.rules import run_rules
from lorabuild.settings import sd_scripts_dir

if TYPE_CHECKING:
    from lorabuild.build.state import BuildLock, Stamp
    from lorabuild.render.writer import Written
    from lorabuild.stages.prepare import StageReport
    from lorabuild.stages.train import TrainResult

# The stages of :func:`run`, in order (``lorabuild run --until STAGE``; a Makefile target each).
RUN_STAGES = ("compile", "prepare", "train", "grid", "report")

# Only what checking needs is imported at the top. The later stages' modules (build.artefacts,
# stages.*) and what they share (the build state, the writer, make's markers) are imported by the
# function that runs them, so that `lorabuild check` and an unchanged `lorabuild prepare` load none
# of them: together they cost about 70 ms (jinja2, Pillow's drawing, the process seam), a quarter
# of a check.


@dataclass(frozen=True)
class Checked:
    """A recipe that passed (or failed) the pre-flight check.

    Attributes:
        loaded: The validated recipe.
        facts: What was probed.
        problems: Every error and warning, attributed to files.
        plan: The build plan, when there were no errors.
    """

    loaded: LoadedRecipe
    facts: Facts
    problems: tuple[Problem, ...]
    plan: Plan | None

    @property
    def warnings(self) -> list[Problem]:
        """The warnings."""
        return [p for p in self.problems if p.severity is Severity.WARNING]


def check(recipe_file: Path, overrides: Sequence[str], build_root: Path, only: str | None = None) -> Checked:
    """Validate the recipe, probe its files and run every rule; plan when nothing is wrong.

    ``only`` picks one build of a file whose ``[sweep]`` expands to several (``--only NAME``).

    Raises:
        RecipeError: When the recipe itself does not validate (nothing else can be checked).
    """
    return check_loaded(load_recipe(recipe_file, overrides, only), build_root)


def check_loaded(loaded: LoadedRecipe, build_root: Path) -> Checked:
    """Probe a loaded build's files and run every rule; plan when nothing is wrong."""
    facts = gather(loaded.recipe, loaded.path, build_root)
    subsets = plan_subsets(loaded.recipe, facts)  # once, for the rules and the plan
    problems = tuple(p.at(loaded.file_of(p.key)) for p in run_rules(loaded.recipe, facts, subsets))
    plan = None if errors_of(problems) else build_plan(loaded, facts, build_root, subsets)
    return Checked(loaded, facts, problems, plan)


def require_plan(checked: Checked, strict: bool = False) -> Plan:
    """The plan of a clean check; raises with every problem when an error (or, strict, a warning) fails it."""
    failing = [p for p in checked.problems if strict or p.severity is Severity.ERROR]
    if failing or checked.plan is None:
        raise RecipeError(list(checked.problems))
    return checked.plan


def compile_build(plan: Plan, dry_run: bool = False) -> list[Written]:
    """Write the build folder's artefacts (only those whose bytes changed)."""
    from lorabuild.build.artefacts import render  # lazy: not on the check path (see above)
    from lorabuild.render.writer import write_files  # lazy: not on the check path (see above)

    return write_files(plan.build_dir, render(plan, sd_scripts_dir()), dry_run=dry_run)


def prepare(plan: Plan, recipe: Recipe | None = None) -> StageReport:
    """Stage the dataset into the build folder, auto-tagging first where ``recipe`` asks for it.

    Raises:
        AutotagError: kohya's WD14 tagger cannot run or failed (nothing is staged).
    """
    from lorabuild.stages.prepare import stage  # lazy: not on the check path (see above)

    return stage(autotagged(plan, recipe))


def autotagged(plan: Plan, recipe: Recipe | None) -> Plan:
    """``plan`` with ``[captions.autotag]`` applied (the tagger runs only for images it has not seen)."""
    from lorabuild.stages.prepare import autotag_plan  # lazy: not on the check path (see above)

    if recipe is None or not autotag_sections(recipe):
        return plan
    return autotag_plan(plan, recipe, sd_scripts=sd_scripts_dir())


def prepare_inputs(checked: Checked) -> str:
    """What the prepare stamp hashes beyond the plan: the recipe sections staging reads and the
    tagger's settings (model file, tag list, thresholds; :func:`lorabuild.kohya.tagger.settings_keys`)."""
    sections = checked.loaded.section_hash("dataset", "captions", "images")
    return ",".join([sections, *settings_keys(checked.loaded.recipe)])


def prepare_fingerprint(loaded: LoadedRecipe, build_root: Path) -> str | None:
    """What ``lorabuild prepare`` reads, hashed without opening an image or caption
    (:func:`lorabuild.probe.facts.input_fingerprint`; None when a file changed too recently to tell);
    take it before the check, so that a file changed while preparing shows next time."""
    return input_fingerprint(loaded.recipe, loaded.section_hash(), loaded.path, build_root)


def already_prepared(
    loaded: LoadedRecipe, build_root: Path, key: str | None, strict: bool = False
) -> Stamp | None:
    """The last prepare's stamp when its inputs were ``key`` and the build is as it left it:
    preparing again would do nothing (:func:`lorabuild.build.state.prepared`)."""
    from lorabuild.build import state  # lazy: not on the check path (see above)

    return None if key is None else state.prepared(build_root / loaded.recipe.name, key, strict)


def record_prepared(
    plan: Plan, key: str | None, written: Sequence[Written], lines: Sequence[str], summary: str
) -> None:
    """Remember a finished prepare (its inputs ``key``, the build's state, what it printed)."""
    from lorabuild.build import state  # lazy: not on the check path (see above)

    if key is None:
        return
    files = [w.path.relative_to(plan.build_dir).as_posix() for w in written]
    state.save_prepared(plan.build_dir, key, [*files, BuildLayout.TAGS_CSV, "autotag"], lines, summary)


def train(
    plan: Plan,
    on_line: Callable[[str], None] | None = None,
    *,
    fresh: bool = False,
    say: Callable[[str], None] | None = None,
    lock: BuildLock | None = None,
) -> TrainResult:
    """Run kohya for a compiled and staged build; fail unless every expected file exists.

    kohya's exit status alone is not trusted: it exits 0 after "No data found". A run stopped
    with its inputs unchanged resumes from its last saved state (see :mod:`lorabuild.stages.train`).
    """
    from lorabuild.build import state  # lazy: not on the check path (see above)
    from lorabuild.stages import train as training  # lazy: not on the check path (see above)

    sd_scripts = sd_scripts_dir()
    digests = state.Digests(plan.build_dir)
    key = state.train_key(plan, state.staged_dataset_digest(plan, digests), sd_scripts)
    digests.save()
    return training.train(plan, key, sd_scripts, on_line=on_line, say=say, fresh=fresh, lock=lock)


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
    from lorabuild.build import state  # lazy: not on the check path (see above)
    from lorabuild.build.markers import mark_done  # lazy: not on the check path (see above)
    from lorabuild.kohya.progress import format_duration  # lazy: not on the check path (see above)

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
        prepare_key = state.prepare_key(plan, digests, prepare_inputs(checked))
        staged = all((build / "dataset" / s.folder).is_dir() for s in plan.subsets)
        if staged and state.is_done(stamps.get("prepare"), prepare_key):
            done("prepare", False, "up to date")
        else:
            report = prepare(plan, checked.loaded.recipe)
            for problem in report.problems:
                tell(format_problem(problem))
            state.save_stamp(build, "prepare", state.Stamp(prepare_key, "done"))
            images = sum(len(s.images) for s in plan.subsets)
            done(
                "prepare",
                True,
                f"staged {images} image(s): {report.linked} linked, {report.copied} copied, "
                f"{report.converted} converted, {report.unchanged} unchanged, "
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
            from lorabuild.stages import train as training  # lazy: not on the check path (see above)

            trained = training.train(
                plan, train_key, sd_scripts, on_line=on_line, say=tell, fresh=fresh, lock=lock
            )
            how = f"resumed after epoch {trained.resumed_from.epoch}, " if trained.resumed_from else ""
            done("train", True, f"{how}done in {format_duration(trained.seconds)}")
        if until == "train":
            return RunReport(tuple(outcomes), trained)

        if checked.loaded.recipe.evaluate.prompts:
            from lorabuild.stages.grid import render_grid  # lazy: not on the check path (see above)

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

        from lorabuild.stages.report import write_report  # lazy: not on the check path (see above)

        page = build / "report.html"
        before = page.read_bytes() if page.is_file() else None
        write_report(plan)  # rewrites the page only when its bytes change
        rewritten = page.read_bytes() != before
        done("report", rewritten, f"wrote {page.as_posix()}" if rewritten else "up to date")
    return RunReport(tuple(outcomes), trained)
