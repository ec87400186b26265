"""The train stage: run kohya for a compiled, staged build, then check and collect what it saved.

- **Truthful results.** kohya's exit status is not trusted (it exits 0 after "No data found"):
  the run succeeded only when every file this run should have written exists and was written by
  it. Known failures get a one-line diagnosis and fix (:mod:`lorabuild.kohya.diagnose`); a NaN loss
  fails the build, since its files are unusable.
- **Normalised outputs.** kohya saves the last epoch only as ``NAME.ext``; once training
  succeeded it is linked (hard link, else copy) to ``NAME-0000EE.ext`` too, so every epoch has its
  numbered file (:meth:`lorabuild.plan.layout.TrainingOutputs.expected` lists both names).
- **Resume.** With ``training.save_state`` a run that stopped (Ctrl-C, a crash, SIGKILL, a power
  cut) with the inputs unchanged continues from its last complete epoch state:
  ``--resume output/NAME-0000EE-state --initial_epoch E+1``. The state restores the network,
  optimizer, LR scheduler and RNG, so the LR schedule continues; ``--initial_epoch`` numbers the
  epochs on, whatever step count the state holds. ``--skip_until_initial_step`` is not used: at an
  epoch boundary there is nothing to skip, and kohya miscounts its epochs with it under gradient
  accumulation (KOHYA.md 6.10 rows 154-158). kohya restarts its global step at 0 on resume, so
  the ``ss_steps`` it writes into later files is short by the resumed steps: lorabuild corrects it
  to what an uninterrupted run writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.build.state import BuildLock, Stamp, load_stamps, save_stamp
from lorabuild.kohya.diagnose import diagnose, last_error
from lorabuild.kohya.progress import Display, Tracker
from lorabuild.kohya.runner import DEFAULT_GRACE, resolve_argv, run
from lorabuild.plan.layout import TrainingOutputs
from lorabuild.plan.plan import Plan
from lorabuild.problems import LorabuildError

# Files of an accelerate state folder that kohya's resume needs; random_states is written last.
STATE_FILES = ("train_state.json", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")
TAIL_LINES = 400


class TrainingError(LorabuildError):
    """kohya failed, or did not produce what the plan expects."""

    exit_code = 1


class TrainingInterrupted(LorabuildError):
    """The user (or the system) stopped lorabuild while kohya trained."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        # 130 for Ctrl-C, 143 for SIGTERM: the shell's 128 + signal number.
        self.exit_code = 128 + signum


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


def state_is_complete(folder: Path) -> bool:
    """Whether an accelerate state folder was written to the end."""
    return all((folder / name).is_file() for name in STATE_FILES) and any(
        (folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")
    )


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
    ours = re.compile(rf"^{re.escape(name)}(?:-\d{{6}}|-step\d{{8}})?(?:-state|\.(?:safetensors|ckpt|pt))$")
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
    layout = plan.saves
    build = plan.build_dir
    previous = load_stamps(build).get("train")
    resume = None
    if not fresh and layout.save_state and previous and previous.key == key and previous.status != "done":
        resume = find_resume_point(plan)
    if resume is None:
        removed = clean_outputs(plan)
        if removed:
            tell(f"removed {removed} file(s) of an earlier training from {plan.layout.output_dir.as_posix()}")
    else:
        tell(f"resuming from {resume.state} (epoch {resume.epoch} of {layout.epochs} done)")

    argv = resolve_argv(plan.launch, sd_scripts)
    if resume is not None:
        argv += ["--resume", resume.state, "--initial_epoch", str(resume.epoch + 1)]
    # kohya records `git rev-parse HEAD` run inside its folder in every LoRA's metadata; where that
    # folder is not a git checkout of its own, git would walk up and report lorabuild's commit.
    env = {**dict(plan.launch.env), "GIT_CEILING_DIRECTORIES": str(sd_scripts.resolve().parent)}
    detail = {"resumed_from": resume.state if resume else None}
    save_stamp(build, "train", Stamp(key, "started", detail=detail))

    start_step = resume.epoch * plan.steps_per_epoch if resume else 0
    tracker = Tracker(plan.total_steps, layout.epochs, start_step)
    display = Display(tracker) if on_line is None else None
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    def handle(line: str) -> None:
        tail.append(line)
        if display is not None:
            display(line)
        else:
            tracker.feed(line)
            assert on_line is not None
            on_line(line)

    started = time.time()
    log = plan.layout.train_log
    try:
        result = run(
            argv,
            build,
            log,
            env,
            handle,
            grace=DEFAULT_GRACE if grace is None else grace,
            on_start=(lambda pid: lock.note(trainer_pid=pid)) if lock else None,
        )
    finally:
        if display is not None:
            display.close()
    where = log.as_posix()
    progress = tracker.progress

    def fail(status: str) -> None:
        save_stamp(build, "train", Stamp(key, status, detail=detail))

    if result.interrupted:
        fail("interrupted")
        signum = result.signal or signal.SIGINT
        point = find_resume_point(plan) if layout.save_state else None
        if point is not None:
            hint = (
                f"run lorabuild train {plan.recipe_file.as_posix()} again to continue after epoch "
                f"{point.epoch} (its saved state)"
            )
        elif layout.save_state:
            hint = "no epoch state was saved yet, so the next run starts over"
        else:
            hint = "the next run starts over (set training.save_state = true to be able to resume)"
        raise TrainingInterrupted(
            f"training interrupted ({signal.Signals(signum).name}) at {progress.summary()}; {hint}. "
            f"kohya's output is in {where}",
            signum,
        )

    lines = list(tail)
    if result.returncode != 0:
        fail("failed")
        message = failure_message(diagnose(lines, result.returncode), lines, result.returncode, where)
        if resume is not None:
            message += (
                f"\n(it resumed from {resume.state}; if that saved state is the trouble, start over with "
                f"lorabuild train {plan.recipe_file.as_posix()} --fresh)"
            )
        raise TrainingError(message)

    # Files this run had to write: the epochs after the resume point, and the final one.
    done_before = resume.epoch if resume else 0
    due = [layout.kohya_file(e) for e in layout.saved if e > done_before]
    due += [layout.state(e) for e in layout.saved[:-1] if e > done_before] if layout.save_state else []
    missing = [f for f in due if not _written_since(build / f, started)]
    if missing:
        fail("failed")
        diagnosis = diagnose(lines, result.returncode)
        if diagnosis is None:
            message = (
                f"kohya exited with status 0 without saving {', '.join(missing)}: treat the run as "
                f"failed and read its output in {where}"
            )
        else:
            message = f"{diagnosis}. kohya's output is in {where}"
        raise TrainingError(message)
    if progress.nan_step is not None:
        fail("failed")
        diagnosis = diagnose(lines, result.returncode, progress.nan_step)
        raise TrainingError(f"{diagnosis}. kohya's output is in {where}")

    if resume is not None:
        for epoch in layout.saved:
            if epoch > resume.epoch:
                fixed = correct_steps(build / layout.kohya_file(epoch), epoch * plan.steps_per_epoch)
                if fixed:
                    tell(f"corrected ss_steps in {layout.kohya_file(epoch)} (kohya counts from 0 on resume)")
    link_last_epoch(build, layout)
    absent = [f for f in plan.outputs if not (build / f.rstrip("/")).exists()]
    if absent:
        fail("failed")
        raise TrainingError(f"training ended without {', '.join(absent)}; kohya's output is in {where}")
    save_stamp(build, "train", Stamp(key, "done", detail={**detail, "outputs": list(plan.outputs)}))
    return TrainResult(plan.outputs, resume, result.seconds, log)


def failure_message(diagnosis: object, lines: list[str], returncode: int, log: str) -> str:
    """The first line says what happened and what to do; the log's place follows."""
    error = last_error(lines)
    if diagnosis is not None:
        text = f"{diagnosis}."
        if error:
            text += f"\nkohya's error: {error}"
        return f"{text}\nkohya's output is in {log}"
    status = f"exit status {returncode}" if returncode >= 0 else f"signal {-returncode}"
    if returncode < 0:
        with_name = {s.value: s.name for s in signal.Signals}.get(-returncode)
        status = f"signal {with_name or -returncode}"
    reason = f" ({error})" if error else ""
    return f"kohya stopped with {status}{reason}. Its whole output is in {log}"


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
