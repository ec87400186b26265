"""The train stage: run kohya for a compiled, staged build, then check and collect what it saved.

- **Truthful results.** kohya's exit status is not trusted (it exits 0 after "No data found"):
  the run succeeded only when every file this run should have written exists and was written by
  it. Known failures get a one-line diagnosis and fix (:mod:`lorabuild.kohya.scriptrun` words them
  with :mod:`lorabuild.kohya.diagnose`); a NaN loss fails the build, since its files are unusable.
- **Normalised outputs.** kohya saves the last epoch only as ``NAME.ext``; once training
  succeeded it is linked (hard link, else copy) to ``NAME-0000EE.ext`` too, so every epoch has its
  numbered file (:meth:`lorabuild.kohya.outputs.TrainingOutputs.expected` lists both names).
- **Resume.** With ``training.save_state`` a run that stopped (Ctrl-C, a crash, SIGKILL, a power
  cut) with the inputs unchanged continues from its last complete epoch state
  (:func:`lorabuild.kohya.outputs.resume_args`: ``--resume output/NAME-0000EE-state --initial_epoch
  E+1``). The state restores the network, optimizer, LR scheduler and RNG, so the LR schedule
  continues. kohya restarts its global step at 0 on resume, so
  the ``ss_steps`` it writes into later files is short by the resumed steps: lorabuild corrects it
  to what an uninterrupted run writes.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.build.state import (
    BuildLock,
    Digests,
    Stamp,
    load_stamps,
    save_stamp,
    staged_dataset_digest,
    train_key,
)
from lorabuild.kohya.outputs import TrainingOutputs, resume_args, saved_name_pattern, state_is_complete
from lorabuild.kohya.progress import Display, Tracker
from lorabuild.kohya.runner import resolve_argv
from lorabuild.kohya.scriptrun import ScriptInterrupted, run_script
from lorabuild.plan.plan import Plan
from lorabuild.problems import LorabuildError
from lorabuild.settings import sd_scripts_dir

KOHYA = "kohya"
"""How messages name the trainer."""


class TrainingError(LorabuildError):
    """kohya failed, or did not produce what the plan expects."""

    exit_code = 1


class TrainingInterrupted(ScriptInterrupted):
    """The user (or the system) stopped lorabuild while kohya trained."""


@dataclass(frozen=True)
class ResumePoint:
    """A saved state to continue from.

    Attributes:
        epoch: The last epoch the state finished.
        state: The state folder, relative to the build folder.
    """

    epoch: int
    state: str


@dataclass(frozen=True)
class TrainResult:
    """A finished training run.

    Attributes:
        outputs: The files it left (the plan's outputs), relative to the build folder.
        resumed_from: The state it continued from, if it resumed.
        seconds: How long kohya ran.
        log: kohya's whole output.
    """

    outputs: tuple[str, ...]
    resumed_from: ResumePoint | None
    seconds: float
    log: Path


def find_resume_point(plan: Plan) -> ResumePoint | None:
    """The latest complete intermediate state whose epoch file exists too."""
    saves = plan.saves
    for epoch in reversed(saves.saved[:-1]):
        state = saves.state(epoch)
        if state_is_complete(plan.build_dir / state) and (plan.build_dir / saves.kohya_file(epoch)).is_file():
            return ResumePoint(epoch, state)
    return None


def clean_outputs(plan: Plan) -> int:
    """Remove what an earlier training of this build left (LoRA files, states, samples).

    A fresh run must not be judged by files it did not write. Returns how many were removed.
    """
    name = plan.saves.name
    output = plan.layout.output_dir
    if not output.is_dir():
        return 0
    ours = saved_name_pattern(name)
    removed = 0
    for entry in output.iterdir():
        if ours.match(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
    samples = output / "sample"
    if samples.is_dir():
        for entry in samples.iterdir():
            if entry.is_file() and entry.name.startswith(name + "_"):
                entry.unlink()
                removed += 1
    return removed


def train(
    plan: Plan,
    key: str,
    sd_scripts: Path,
    *,
    on_line: Callable[[str], None] | None = None,
    say: Callable[[str], None] | None = None,
    fresh: bool = False,
    lock: BuildLock | None = None,
    grace: float | None = None,
) -> TrainResult:
    """Train ``plan`` with kohya (resuming when possible) and collect its outputs.

    Args:
        plan: A compiled and staged build.
        key: The hash of the training inputs (:func:`lorabuild.build.state.train_key`).
        sd_scripts: The kohya checkout.
        on_line: Receives each line of kohya's output; without it, the output and a progress
            display go to stdout.
        say: Receives lorabuild's own messages (resuming, cleaning up).
        fresh: Start over even when a saved state could be resumed.
        lock: The build's lock, to record the trainer's process id in.
        grace: Seconds kohya may take to stop after Ctrl-C (default: the runner's).

    Raises:
        TrainingError: kohya failed or did not save every file; the message says why and what to do.
        TrainingInterrupted: lorabuild was stopped (Ctrl-C, SIGTERM) and stopped kohya.
    """
    tell = say or (lambda text: None)
    saves = plan.saves
    build = plan.build_dir
    previous = load_stamps(build).get("train")
    resume = None
    if not fresh and saves.save_state and previous and previous.key == key and previous.status != "done":
        resume = find_resume_point(plan)
    if resume is None:
        removed = clean_outputs(plan)
        if removed:
            tell(f"removed {removed} file(s) of an earlier training from {plan.layout.output_dir.as_posix()}")
    else:
        tell(f"resuming from {resume.state} (epoch {resume.epoch} of {saves.epochs} done)")

    argv = resolve_argv(plan.launch, sd_scripts)
    if resume is not None:
        argv += resume_args(resume.state, resume.epoch)
    # kohya records `git rev-parse HEAD` run inside its folder in every LoRA's metadata; where that
    # folder is not a git checkout of its own, git would walk up and report lorabuild's commit.
    env = {**dict(plan.launch.env), "GIT_CEILING_DIRECTORIES": str(sd_scripts.resolve().parent)}
    detail = {"resumed_from": resume.state if resume else None}
    save_stamp(build, "train", Stamp(key, "started", detail=detail))

    start_step = resume.epoch * plan.steps_per_epoch if resume else 0
    tracker = Tracker(plan.total_steps, saves.epochs, start_step)
    display = Display(tracker) if on_line is None else None

    def handle(line: str) -> None:
        if display is not None:
            display(line)
        else:
            tracker.feed(line)
            assert on_line is not None
            on_line(line)

    started = time.time()
    log = plan.layout.train_log
    try:
        run = run_script(
            KOHYA,
            argv,
            build,
            log,
            env,
            handle,
            grace=grace,
            on_start=(lambda pid: lock.note(trainer_pid=pid)) if lock else None,
            sd_scripts=sd_scripts,
        )
    finally:
        if display is not None:
            display.close()
    progress = tracker.progress

    def fail(status: str) -> None:
        save_stamp(build, "train", Stamp(key, status, detail=detail))

    if run.interrupted:
        fail("interrupted")
        point = find_resume_point(plan) if saves.save_state else None
        if point is not None:
            hint = (
                f"run lorabuild train {plan.recipe_file.as_posix()} again to continue after epoch "
                f"{point.epoch} (its saved state)"
            )
        elif saves.save_state:
            hint = "no epoch state was saved yet, so the next run starts over"
        else:
            hint = "the next run starts over (set training.save_state = true to be able to resume)"
        raise TrainingInterrupted(
            run.interrupted_message("training", f" at {progress.summary()}; {hint}"), run.signum
        )

    if run.failed:
        fail("failed")
        message = run.failure_message()
        if resume is not None:
            message += (
                f"\n(it resumed from {resume.state}; if that saved state is the trouble, start over with "
                f"lorabuild train {plan.recipe_file.as_posix()} --fresh)"
            )
        raise TrainingError(message)

    # Files this run had to write: the epochs after the resume point, and the final one.
    done_before = resume.epoch if resume else 0
    due = [saves.kohya_file(e) for e in saves.saved if e > done_before]
    due += [saves.state(e) for e in saves.saved[:-1] if e > done_before] if saves.save_state else []
    missing = [f for f in due if not _written_since(build / f, started)]
    if missing:
        fail("failed")
        raise TrainingError(run.missing_message(", ".join(missing)))
    if progress.nan_step is not None:
        fail("failed")
        raise TrainingError(run.diagnosed_message(progress.nan_step))

    if resume is not None:
        for epoch in saves.saved:
            if epoch > resume.epoch:
                fixed = correct_steps(build / saves.kohya_file(epoch), epoch * plan.steps_per_epoch)
                if fixed:
                    tell(f"corrected ss_steps in {saves.kohya_file(epoch)} (kohya counts from 0 on resume)")
    link_last_epoch(build, saves)
    absent = [f for f in plan.outputs if not (build / f.rstrip("/")).exists()]
    if absent:
        fail("failed")
        raise TrainingError(
            f"training ended without {', '.join(absent)}; {KOHYA}'s output is in {log.as_posix()}"
        )
    save_stamp(build, "train", Stamp(key, "done", detail={**detail, "outputs": list(plan.outputs)}))
    return TrainResult(plan.outputs, resume, run.result.seconds, log)


def train_build(
    plan: Plan,
    on_line: Callable[[str], None] | None = None,
    *,
    fresh: bool = False,
    say: Callable[[str], None] | None = None,
    lock: BuildLock | None = None,
) -> TrainResult:
    """Run kohya for a compiled and staged build (:func:`train`, its inputs' key computed here).

    kohya's exit status alone is not trusted: it exits 0 after "No data found". A run stopped
    with its inputs unchanged resumes from its last saved state.
    """
    sd_scripts = sd_scripts_dir()
    digests = Digests(plan.build_dir)
    key = train_key(plan, staged_dataset_digest(plan, digests), sd_scripts)
    digests.save()
    return train(plan, key, sd_scripts, on_line=on_line, say=say, fresh=fresh, lock=lock)


def _written_since(path: Path, since: float) -> bool:
    """Whether ``path`` exists and was written after ``since`` (one second of slack for clocks)."""
    try:
        return path.stat().st_mtime >= since - 1
    except OSError:
        return False


def link_last_epoch(build: Path, saves: TrainingOutputs) -> None:
    """Give the last epoch's file (kohya's ``NAME.ext``) its numbered name too."""
    final = build / saves.kohya_file(saves.epochs)
    numbered = build / saves.epoch_file(saves.epochs)
    tmp = numbered.with_name(f".{numbered.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(final, tmp)
    except OSError:
        shutil.copy2(final, tmp)
    os.replace(tmp, numbered)


def read_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (read from its header only)."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return dict(header.get("__metadata__", {}))


def correct_steps(path: Path, steps: int) -> bool:
    """Set ``ss_steps`` in a safetensors file's metadata to ``steps``; True when it changed.

    Only the JSON header is rewritten (the tensors keep their bytes and offsets), through a
    temporary file and a rename. Other formats (ckpt, pt) carry no metadata and are left alone.
    """
    if path.suffix != ".safetensors":
        return False
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header: dict[str, Any] = json.loads(f.read(size))
        meta = header.get("__metadata__")
        if not isinstance(meta, dict) or meta.get("ss_steps") == str(steps):
            return False
        meta["ss_steps"] = str(steps)
        blob = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        blob += b" " * (-len(blob) % 8)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as out:
            out.write(struct.pack("<Q", len(blob)))
            out.write(blob)
            shutil.copyfileobj(f, out, 1 << 20)
    os.replace(tmp, path)
    return True
