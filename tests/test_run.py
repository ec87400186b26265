"""``lorabuild run`` / ``lorabuild train`` bookkeeping with a stand-in trainer (tests/fakekohya.py):
which stage reruns after which edit, the no-op, output normalisation, truthful failures, resume
bookkeeping, the build lock and the command line's exit statuses. The real trainer's behaviour
(resume included) is tested in tests/test_train.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorabuild.build import state
from lorabuild.kohya.outputs import state_is_complete
from lorabuild.pipeline import RunReport, run
from lorabuild.stages.check import check
from lorabuild.stages.train import TrainingError, read_metadata
from tests.conftest import REPO, Project
from tests.fakekohya import FakeKohya, fake_kohya

__all__ = ["fake_kohya"]  # the fixture

EPOCH_FILES = [f"output/Test_v1-{e:06d}.safetensors" for e in (1, 2, 3)]


def build(project: Project, *overrides: str, force: bool = False, fresh: bool = False) -> RunReport:
    checked = check(project.recipe, list(overrides), Path("build"))
    return run(checked, force_train=force, fresh=fresh, on_line=lambda line: None)


def ran(report: RunReport) -> dict[str, bool]:
    """Which of the training stages ran (the grid and report stages have tests of their own)."""
    return {s.stage: s.ran for s in report.stages if s.stage in ("compile", "prepare", "train")}


def build_dir(project: Project) -> Path:
    return project.root / "build" / "Test_v1"


def test_a_run_ends_with_the_report_and_skips_the_grid_without_prompts(
    project: Project, fake_kohya: FakeKohya
) -> None:
    stages = {s.stage: s for s in build(project).stages}
    assert list(stages) == ["compile", "prepare", "train", "grid", "report"]
    assert not stages["grid"].ran and "no [evaluate] prompts" in stages["grid"].summary
    assert stages["report"].ran and (build_dir(project) / "report.html").is_file()
    again = {s.stage: s.ran for s in build(project).stages}
    assert again == dict.fromkeys(stages, False)  # the same inputs: the same page, not rewritten


def test_a_first_run_trains_and_normalises_the_outputs(project: Project, fake_kohya: FakeKohya) -> None:
    report = build(project)
    assert ran(report) == {"compile": True, "prepare": True, "train": True}
    out = build_dir(project)
    for epoch, name in enumerate(EPOCH_FILES, start=1):
        assert read_metadata(out / name)["ss_epoch"] == str(epoch)
    # kohya's name for the last epoch stays, and is the same file as its numbered name
    assert (out / "output/Test_v1.safetensors").read_bytes() == (out / EPOCH_FILES[-1]).read_bytes()
    manifest = json.loads((out / "plan.json").read_text())
    assert manifest["outputs"] == [*EPOCH_FILES, "output/Test_v1.safetensors"]
    assert report.trained is not None and report.trained.outputs == tuple(manifest["outputs"])
    log = (out / "logs" / "train.log").read_bytes()  # kohya's output as it was, carriage returns too
    assert b"model saved." in log and b"\rsteps:" in log
    assert "console_log_simple = true" in (out / "config.toml").read_text()


def test_an_unchanged_rebuild_is_a_noop_in_well_under_a_second(
    project: Project, fake_kohya: FakeKohya
) -> None:
    build(project)
    started = time.perf_counter()
    report = build(project)
    took = time.perf_counter() - started
    assert ran(report) == {"compile": False, "prepare": False, "train": False}
    assert [s.summary for s in report.stages if s.stage != "grid"] == ["up to date"] * 4
    assert len(fake_kohya.calls) == 1
    assert took < 1.0


def test_editing_only_evaluate_retrains_nothing(project: Project, fake_kohya: FakeKohya) -> None:
    build(project)
    report = build(
        project,
        'evaluate.prompts=["{trigger}, smile"]',
        "evaluate.sample_every_n_epochs=1",
        "evaluate.steps=5",
    )
    assert ran(report) == {"compile": True, "prepare": False, "train": False}
    assert "sample_prompts.txt" in report.stages[0].summary and "config.toml" in report.stages[0].summary
    assert len(fake_kohya.calls) == 1


@pytest.mark.parametrize(
    ("edit", "stages"),
    [
        (
            lambda p: (p.root / "data/char/000.txt").write_text("1girl, frown", encoding="utf-8"),
            "prepare+train",
        ),
        (lambda p: p.add_images(sizes=[(512, 512), (512, 768), (768, 512), (640, 512)]), "prepare+train"),
        (
            lambda p: (p.root / "models/base.safetensors").write_bytes(
                (p.root / "models/base.safetensors").read_bytes() + b" "
            ),
            "train",
        ),
    ],
    ids=["caption", "image content", "base model"],
)
def test_editing_what_a_stage_reads_reruns_it(
    project: Project, fake_kohya: FakeKohya, edit: object, stages: str
) -> None:
    build(project)
    time.sleep(0.01)
    edit(project)  # type: ignore[operator]
    report = build(project)
    assert ran(report) == {"compile": ran(report)["compile"], "prepare": "prepare" in stages, "train": True}
    assert len(fake_kohya.calls) == 2


def test_touching_a_file_without_changing_it_retrains_nothing(
    project: Project, fake_kohya: FakeKohya
) -> None:
    build(project)
    image = project.root / "data/char/001.png"
    os.utime(image, (time.time() + 10, time.time() + 10))
    assert ran(build(project)) == {"compile": False, "prepare": False, "train": False}


def test_a_training_setting_retrains_and_stale_files_go(project: Project, fake_kohya: FakeKohya) -> None:
    build(project)
    report = build(project, "training.epochs=2")
    assert ran(report)["train"]
    out = build_dir(project) / "output"
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "Test_v1-000001.safetensors",
        "Test_v1-000002.safetensors",
        "Test_v1.safetensors",
    ]


def test_a_missing_output_or_another_kohya_commit_retrains(project: Project, fake_kohya: FakeKohya) -> None:
    build(project)
    (build_dir(project) / EPOCH_FILES[0]).unlink()
    assert ran(build(project))["train"]
    git = fake_kohya.sd_scripts / ".git"
    git.mkdir()
    (git / "HEAD").write_text("0123456789abcdef0123456789abcdef01234567\n")
    assert ran(build(project))["train"]
    assert not ran(build(project))["train"]


def test_lorabuild_train_trains_even_when_up_to_date(project: Project, fake_kohya: FakeKohya) -> None:
    build(project)
    assert ran(build(project, force=True))["train"]
    assert len(fake_kohya.calls) == 2


# --- truthful failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("no_data", 'kohya found no training images ("No data found") and saved nothing: check that each'),
        ("oom", "the GPU ran out of memory while training: lower dataset.batch_size"),
        ("nan", "the loss became NaN (not a number) at step 2, so the saved LoRA files are unusable: lower"),
    ],
)
def test_failures_are_reported_with_a_diagnosis(
    project: Project, fake_kohya: FakeKohya, monkeypatch: pytest.MonkeyPatch, mode: str, message: str
) -> None:
    monkeypatch.setenv("FAKE_KOHYA", mode)
    with pytest.raises(TrainingError) as caught:
        build(project)
    text = str(caught.value)
    assert text.startswith(message)
    assert "build/Test_v1/logs/train.log" in text
    assert state.load_stamps(build_dir(project))["train"].status == "failed"
    monkeypatch.delenv("FAKE_KOHYA")
    assert ran(build(project))["train"]  # a failed training is not up to date


def test_files_left_by_an_earlier_run_do_not_make_a_failed_run_look_good(
    project: Project, fake_kohya: FakeKohya, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(project)
    monkeypatch.setenv("FAKE_KOHYA", "no_data")
    with pytest.raises(TrainingError, match="No data found"):
        build(project, force=True)
    assert not list((build_dir(project) / "output").glob("*.safetensors"))


# --- resume --------------------------------------------------------------------------------------


def test_a_killed_build_resumes_from_its_last_state_and_ends_like_an_uninterrupted_one(
    project: Project, fake_kohya: FakeKohya, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_KOHYA", "kill_after:2")
    with pytest.raises(TrainingError, match="killed by the system"):
        build(project, "training.save_state=true")
    assert state.load_stamps(build_dir(project))["train"].status == "failed"
    monkeypatch.delenv("FAKE_KOHYA")
    report = build(project, "training.save_state=true")
    assert report.trained is not None and report.trained.resumed_from is not None
    assert report.trained.resumed_from.epoch == 2
    assert fake_kohya.calls[-1][-4:] == ["--resume", "output/Test_v1-000002-state", "--initial_epoch", "3"]
    out = build_dir(project)
    # kohya counts steps from 0 again when resuming; lorabuild corrects what it wrote
    steps = [read_metadata(out / f)["ss_steps"] for f in EPOCH_FILES]
    assert steps == ["4", "8", "12"]
    assert read_metadata(out / "output/Test_v1.safetensors")["ss_steps"] == "12"
    assert ran(build(project, "training.save_state=true"))["train"] is False


def test_a_state_cut_short_while_saving_is_not_resumed_from(
    project: Project, fake_kohya: FakeKohya, monkeypatch: pytest.MonkeyPatch
) -> None:
    """accelerate skips an unreadable random_states_0.pkl with an info line: resuming from it would
    silently draw other noise than the uninterrupted run (seen with the real kohya on a tiny FLUX)."""
    monkeypatch.setenv("FAKE_KOHYA", "kill_after:2")
    with pytest.raises(TrainingError, match="killed by the system"):
        build(project, "training.save_state=true")
    monkeypatch.delenv("FAKE_KOHYA")
    last = build_dir(project) / "output/Test_v1-000002-state"
    assert state_is_complete(last)
    rng = last / "random_states_0.pkl"
    whole = rng.read_bytes()
    rng.write_bytes(whole[: len(whole) // 2])  # the power went while it was written
    assert not state_is_complete(last)
    report = build(project, "training.save_state=true")
    assert report.trained is not None and report.trained.resumed_from is not None
    assert report.trained.resumed_from.epoch == 1
    assert fake_kohya.calls[-1][-4:] == ["--resume", "output/Test_v1-000001-state", "--initial_epoch", "2"]


def test_changed_inputs_or_fresh_start_over_instead_of_resuming(
    project: Project, fake_kohya: FakeKohya, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_KOHYA", "kill_after:1")
    with pytest.raises(TrainingError):
        build(project, "training.save_state=true")
    monkeypatch.delenv("FAKE_KOHYA")
    build(project, "training.save_state=true", "optimizer.lr=2e-4")
    assert "--resume" not in fake_kohya.calls[-1]
    monkeypatch.setenv("FAKE_KOHYA", "kill_after:1")
    with pytest.raises(TrainingError):
        build(project, "training.save_state=true", force=True)
    monkeypatch.delenv("FAKE_KOHYA")
    build(project, "training.save_state=true", fresh=True)
    assert "--resume" not in fake_kohya.calls[-1]


# --- the lock ------------------------------------------------------------------------------------


def test_a_second_run_on_the_same_build_is_refused_naming_the_first(
    project: Project, fake_kohya: FakeKohya
) -> None:
    build(project)
    with (
        state.build_lock(build_dir(project), "lorabuild run recipe.toml"),
        pytest.raises(state.BuildLocked) as caught,
    ):
        build(project)
    message = str(caught.value)
    assert message.startswith(f"build/Test_v1 is in use by another lorabuild (pid {os.getpid()}, ")
    assert '"lorabuild run recipe.toml"' in message and "wait for it to finish" in message
    build(project)  # released


HOLDER = """
import sys, time
from pathlib import Path
from lorabuild.build.state import build_lock
with build_lock(Path(sys.argv[1]), "lorabuild train other.toml") as lock:
    lock.note(trainer_pid=4242)
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_the_lock_is_held_across_processes_and_freed_when_its_holder_is_killed(
    project: Project, fake_kohya: FakeKohya
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(build_dir(project))],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = lorabuild("run", "recipe.toml", cwd=project.root)
        assert result.returncode == 1
        assert f"in use by another lorabuild (pid {holder.pid}, " in result.stderr
        assert "kohya's pid 4242" in result.stderr and '"lorabuild train other.toml"' in result.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lorabuild("run", "recipe.toml", cwd=project.root).returncode == 0


# --- the command line ----------------------------------------------------------------------------


def lorabuild(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lorabuild", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, **(env or {})},
    )


def error_line(stderr: str) -> str:
    """The error (the recipe's warnings may come before it)."""
    return next(line for line in stderr.splitlines() if line.startswith("error: "))


def test_run_prints_each_stage_and_then_says_up_to_date(project: Project, fake_kohya: FakeKohya) -> None:
    first = lorabuild("run", "recipe.toml", cwd=project.root)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "compile  wrote dataset.toml, config.toml" in out
    assert "prepare  staged 4 image(s)" in out
    # not a terminal: kohya's lines pass through, its bars become a few plain progress lines
    assert "epoch 3/3" in out and "saving checkpoint: output/Test_v1-000001.safetensors" in out
    assert "steps:" not in out and "progress: epoch 1/3  step 1/12 (8%)" in out
    assert "train    done in 0:00:0" in out
    assert (
        out.rstrip()
        .splitlines()[-1]
        .startswith("ok: Test_v1: 4 LoRA file(s): output/Test_v1-000001.safetensors")
    )
    second = lorabuild("run", "recipe.toml", cwd=project.root)
    assert second.returncode == 0
    assert second.stdout.splitlines()[:3] == [
        "compile  up to date",
        "prepare  up to date",
        "train    up to date",
    ]
    assert second.stdout.splitlines()[-1].startswith("ok: Test_v1 is up to date (")


def test_train_exit_statuses(project: Project, fake_kohya: FakeKohya) -> None:
    ok = lorabuild("train", "recipe.toml", cwd=project.root)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1] == (
        "trained Test_v1: 4 LoRA file(s): output/Test_v1-000001.safetensors, output/Test_v1-000002.safetensors, "
        "output/Test_v1-000003.safetensors, output/Test_v1.safetensors"
    )
    failed = lorabuild("train", "recipe.toml", cwd=project.root, env={"FAKE_KOHYA": "no_data"})
    assert failed.returncode == 1
    assert error_line(failed.stderr).startswith(
        'error: kohya found no training images ("No data found") and saved nothing: '
    )
    assert "Traceback" not in failed.stderr
    bad = lorabuild("train", "recipe.toml", "--set", "dataset.batch_size=0", cwd=project.root)
    assert bad.returncode == 2


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stopping_lorabuild_stops_kohya_and_exits_130_or_143(
    project: Project, fake_kohya: FakeKohya, signum: int, status: int
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "lorabuild", "train", "recipe.toml"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FAKE_KOHYA": "hang"},
    )
    assert process.stdout is not None
    while "waiting" not in (process.stdout.readline() or "waiting"):
        pass
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status
    name = signal.Signals(signum).name
    assert error_line(err).startswith(f"error: training interrupted ({name}) at epoch 1/3  step 1/12 (8%)")
    assert "set training.save_state = true to be able to resume" in err
    assert state.load_stamps(build_dir(project))["train"].status == "interrupted"
    lock_text = (build_dir(project) / ".lorabuild" / "lock").read_text()
    assert json.loads(lock_text) == {}  # released on the way out


# --- pieces --------------------------------------------------------------------------------------


def test_digests_read_each_file_once_and_again_only_after_it_changed(tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    source.write_bytes(b"image")
    os.link(source, tmp_path / "staged.png")
    digests = state.Digests(tmp_path / "build")
    first = digests.of(source)
    assert digests.of(tmp_path / "staged.png") == first  # a hard link is the same content
    assert digests.hashed == 1
    digests.save()
    again = state.Digests(tmp_path / "build")
    assert again.of(source) == first and again.hashed == 0
    source.write_bytes(b"other")
    assert again.of(source) != first and again.hashed == 1


def test_correcting_ss_steps_rewrites_the_header_only(tmp_path: Path) -> None:
    from lorabuild.stages.train import correct_steps
    from tests.conftest import write_safetensors

    path = write_safetensors(tmp_path / "x.safetensors", ["a", "b"])
    data = bytearray(path.read_bytes())
    data[-8:] = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_size])
    header["__metadata__"] = {"ss_steps": "4", "ss_epoch": "2"}
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + bytes(data[8 + header_size :]))
    assert correct_steps(path, 8) is True
    assert read_metadata(path) == {"ss_steps": "8", "ss_epoch": "2"}
    assert path.read_bytes().endswith(b"\x01\x02\x03\x04\x05\x06\x07\x08")
    new_size = int.from_bytes(path.read_bytes()[:8], "little")
    assert new_size % 8 == 0 and json.loads(path.read_bytes()[8 : 8 + new_size])["a"] == header["a"]
    assert correct_steps(path, 8) is False
    assert correct_steps(tmp_path / "x.ckpt", 8) is False
