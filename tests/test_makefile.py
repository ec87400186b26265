"""``lorabuild makefile``: the generated text, and real GNU make driving builds with the stand-in
trainer (tests/fakekohya.py): ``make -j2``, the no-op, touching one recipe, a caption edit,
``make -k`` past a failed build, ``make NAME``, and the Makefile writing itself again."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorabuild.batch import makefile, makegen
from lorabuild.batch.makefile import refresh_inputs
from lorabuild.batch.makegen import make_path, shell_word, target_names
from lorabuild.recipe import load as recipe_module
from tests.conftest import RECIPE, REPO, Project, run_lorabuild
from tests.fakekohya import FakeKohya, fake_kohya

__all__ = ["fake_kohya"]  # the fixture

MAKE = shutil.which("make")
needs_make = pytest.mark.skipif(MAKE is None, reason="GNU make is not installed (apt install make)")


def recipe(name: str, folder: str = "data/char") -> str:
    return RECIPE.replace('name = "Test_v1"', f'name = "{name}"').replace('"data/char"', f'"{folder}"')


def make(project: Project, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run real make in the project; outer make's jobserver settings are not inherited."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    assert MAKE is not None
    started = time.perf_counter()
    done = subprocess.run(
        [MAKE, *args], cwd=project.root, env=env, capture_output=True, text=True, encoding="utf-8"
    )
    return done, time.perf_counter() - started


def runs_of(output: str) -> list[str]:
    """The ``lorabuild run`` command lines make started: ``r1.toml until compile``, ..."""
    return [f"{m[0]} until {m[1]}" for m in re.findall(r"-m lorabuild run (\S+) .*--until (\w+)", output)]


BATCH = REPO / "recipes" / "batch"
BATCH_FILES = ["recipes/batch/kazari.toml", "recipes/batch/kuroko.toml", "recipes/batch/saten.toml"]
SWEEP = [f"Kazari_batch-dim{d}-lr{lr}" for d in (32, 64) for lr in ("5e-5", "1e-4")]


def shipped_batch(project: Project) -> list[str]:
    """The shipped recipes/batch/ (three recipes extending shared/base.toml, a sweep of four
    extending kazari.toml) in the project, with their datasets; the arguments for the Makefile."""
    shutil.copytree(BATCH, project.root / "recipes" / "batch")
    for name in ("kazari", "kuroko", "saten"):
        project.add_images(folder=f"data/{name}")
    # sdpa: a machine with torch but without xformers (a CUDA-only package) would refuse xformers
    return [
        *BATCH_FILES,
        "recipes/batch/sweep.toml",
        *("--set", "model.base=models/base.safetensors", "--set", "training.attention=sdpa"),
    ]


def outputs(project: Project, name: str) -> list[str]:
    return sorted(p.name for p in (project.root / "build" / name / "output").glob("*.safetensors"))


# --- the generated text ---------------------------------------------------------------------------


def test_target_names_are_safe_unique_and_not_reserved() -> None:
    assert target_names(["My LoRA", "My_LoRA", "all", "初春", "初春 v2", "check", "x.y-z"]) == [
        "My_LoRA",
        "My_LoRA-2",
        "all-2",
        "build",
        "v2",
        "check-2",
        "x.y-z",
    ]
    assert target_names(["a", "A"]) == ["a", "A-2"]  # case-insensitive file systems


def test_words_and_paths_are_quoted_for_sh_cmd_and_make() -> None:
    assert shell_word("recipes/a.toml") == "recipes/a.toml"
    assert shell_word("my recipes/初春.toml") == '"my recipes/初春.toml"'
    assert shell_word("it's $HOME") == "'it'\\''s $$HOME'"  # sh only, $ doubled for make
    assert make_path("build/My LoRA/.lorabuild/train.done") == "build/My\\ LoRA/.lorabuild/train.done"
    assert make_path("C:/x.toml") is None and make_path("a#b.toml") is None and make_path("50%.toml") is None
    with pytest.raises(makegen.MakefileError, match="line break"):
        shell_word("a\nb")


def test_the_fingerprint_helper_loads_no_planner() -> None:
    """``python -m lorabuild.batch.makefile`` runs on every make: it must not load pydantic or the planner."""
    code = "import sys, lorabuild.batch.makefile; print(sorted(m for m in ('pydantic', 'lorabuild.plan.plan', 'lorabuild.build.state') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@needs_make
def test_make_reads_the_generated_makefile_with_spaces_and_odd_names(project: Project) -> None:
    folder = project.root / "my recipes"
    folder.mkdir()
    (folder / "初春 a.toml").write_text(recipe("My LoRA", "../data/char"), encoding="utf-8")
    (folder / "it's $5.toml").write_text(recipe("My_LoRA", "../data/char"), encoding="utf-8")
    done = run_lorabuild("makefile", "my recipes/初春 a.toml", "my recipes/it's $5.toml", cwd=project.root)
    assert done.returncode == 0, done.stderr
    assert "wrote Makefile: 2 build(s): My_LoRA, My_LoRA-2" in done.stdout
    text = (project.root / "Makefile").read_text(encoding="utf-8")
    assert (
        "build/My\\ LoRA/.lorabuild/train.done: build/My\\ LoRA/.lorabuild/inputs.stamp "
        "$(if $(filter My_LoRA/compile My_LoRA/prepare,$(MAKECMDGOALS)),build/My\\ LoRA/.lorabuild/prepare.done)"
    ) in text
    assert "Makefile: my\\ recipes/初春\\ a.toml\n" in text  # make cannot name a file with $
    assert "# Not prerequisites (make cannot spell them): my recipes/it's $5.toml" in text
    dry, _ = make(project, "-n", "My_LoRA", "My_LoRA-2")
    assert dry.returncode == 0, dry.stderr
    assert '-m lorabuild run "my recipes/初春 a.toml" --build-dir build --until report' in dry.stdout
    assert "-m lorabuild run 'my recipes/it'\\''s $5.toml' --build-dir build --until report" in dry.stdout
    # the shell gets each path as one argument
    assert "-m lorabuild.batch.makefile inputs Makefile" in dry.stdout  # one fingerprint for all builds
    builds = makefile.manifest(project.root / "Makefile")
    assert [(b["dir"], b["paths"][0]) for b in builds] == [
        ("build/My LoRA", "my recipes/初春 a.toml"),
        ("build/My_LoRA", "my recipes/it's $5.toml"),
    ]
    assert builds[0]["paths"][1:3] == ["my recipes/models/base.safetensors", "data/char"]


def test_two_builds_of_one_name_are_refused(project: Project) -> None:
    project.write_recipe(recipe("Test_v1"), name="other.toml")
    done = run_lorabuild("makefile", "recipe.toml", "other.toml", cwd=project.root)
    assert done.returncode == 2
    assert (
        "other.toml: name: build 'Test_v1' has the same name as a build of recipe.toml: both would write "
        "build/Test_v1/; rename one of them"
    ) in done.stderr
    assert not (project.root / "Makefile").exists()
    broken = run_lorabuild("makefile", "missing.toml", "-o", "build", cwd=project.root)
    assert broken.returncode == 2 and "missing.toml: recipe file not found" in broken.stderr


def test_the_inputs_stamp_changes_only_when_an_input_does(project: Project) -> None:
    stamp = project.root / "stamp"
    paths = ["recipe.toml", "data/char", "models/base.safetensors"]
    newest = time.time_ns() + 10**12
    os.utime(project.root / "data/char/003.png", ns=(newest, newest))
    assert refresh_inputs(stamp, paths)
    assert stamp.stat().st_mtime_ns == newest  # a first stamp is as old as its newest input
    assert not refresh_inputs(stamp, paths, "")
    assert refresh_inputs(stamp, paths, "other command lines")
    assert stamp.stat().st_mtime_ns < newest  # later ones: now
    caption = project.root / "data/char/002.txt"
    caption.write_text(caption.read_text(encoding="utf-8") + ", smile", encoding="utf-8")
    assert refresh_inputs(stamp, paths)
    (project.root / "data/char/new.png").write_bytes(b"")
    assert refresh_inputs(stamp, paths)
    assert not refresh_inputs(stamp, paths)
    (project.root / "data/char/.hidden").mkdir()
    (project.root / "data/char/.hidden/x").write_bytes(b"")  # hidden folders are not inputs
    assert not refresh_inputs(stamp, paths)


def test_run_until_stops_after_the_stage_and_marks_what_is_done(
    project: Project, fake_kohya: FakeKohya
) -> None:
    done = run_lorabuild("run", "recipe.toml", "--until", "prepare", cwd=project.root)
    assert done.returncode == 0, done.stderr
    assert "prepare  staged 4 image(s)" in done.stdout
    assert done.stdout.endswith(")\n") and "ok: Test_v1: compile, prepare up to date (" in done.stdout
    assert fake_kohya.calls == []
    folder = project.root / "build/Test_v1/.lorabuild"
    assert sorted(p.name for p in folder.glob("*.done")) == ["compile.done", "prepare.done"]
    bad = run_lorabuild("run", "recipe.toml", "--until", "grind", cwd=project.root)
    assert bad.returncode == 2 and "'grind' is not a stage: use one of compile, prepare, train" in bad.stderr


# --- real make over real builds ------------------------------------------------------------------


@needs_make
@pytest.mark.skipif(
    not (BATCH / "sweep.toml").is_file(), reason="needs the shipped recipes/batch/ (issue #6)"
)
def test_one_makefile_builds_the_shipped_batch_and_sweep_stale_builds_only(
    project: Project, fake_kohya: FakeKohya
) -> None:
    made = run_lorabuild("makefile", *shipped_batch(project), cwd=project.root)
    assert made.returncode == 0, made.stderr
    assert (
        "wrote Makefile: 7 build(s): Kazari_batch, Kuroko_batch, Saten_batch, " + ", ".join(SWEEP)
        in made.stdout
    )
    builds = makefile.manifest(project.root / "Makefile")
    assert all("recipes/batch/shared/base.toml" in b["paths"] for b in builds)  # each reads its chain

    # make NAME/STAGE stops there; make NAME builds that one build; one lorabuild run each
    staged, _ = make(project, "Kazari_batch/prepare")
    assert staged.returncode == 0, staged.stderr
    assert runs_of(staged.stdout) == ["recipes/batch/kazari.toml until prepare"]
    assert fake_kohya.calls == [] and (project.root / "build/Kazari_batch/dataset").is_dir()
    one, _ = make(project, "Kuroko_batch")
    assert one.returncode == 0, one.stderr
    assert runs_of(one.stdout) == ["recipes/batch/kuroko.toml until report"]
    assert len(fake_kohya.calls) == 1 and not (project.root / "build/Saten_batch").exists()

    # make -j2: the rest (Kazari trains on what it staged)
    first, _ = make(project, "-j2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(runs_of(first.stdout)) == sorted(
        [f"{f} until report" for f in (BATCH_FILES[0], BATCH_FILES[2])]
        + ["recipes/batch/sweep.toml until report"] * 4
    )
    assert re.search(r"compile +up to date\nprepare +up to date\n", first.stdout)  # Kazari's
    for name in ("Kazari_batch", "Kuroko_batch", "Saten_batch", *SWEEP):
        assert outputs(project, name)[-1] == f"{name}.safetensors"
    assert len(fake_kohya.calls) == 7

    # nothing changed: make starts no lorabuild run at all
    again, took = make(project, "-j2")
    assert again.returncode == 0, again.stderr
    assert runs_of(again.stdout) == [] and len(fake_kohya.calls) == 7
    assert took < 1.5, f"a no-op make of 7 builds took {took:.2f} s"

    # touching one recipe: the Makefile is written again and only its builds are asked; no retraining
    later = time.time() + 5
    os.utime(project.root / BATCH_FILES[1], (later, later))
    touched, _ = make(project, "-j2")
    assert touched.returncode == 0, touched.stderr
    assert "wrote Makefile: 7 build(s)" in touched.stdout
    assert runs_of(touched.stdout) == ["recipes/batch/kuroko.toml until report"]
    # kazari.toml is in the sweep's chain too: its five builds, and only those
    os.utime(project.root / BATCH_FILES[0], (later + 1, later + 1))
    chained, _ = make(project, "-j2")
    assert chained.returncode == 0, chained.stderr
    assert (
        sorted(runs_of(chained.stdout))
        == [f"{BATCH_FILES[0]} until report"] + ["recipes/batch/sweep.toml until report"] * 4
    )
    assert len(fake_kohya.calls) == 7
    assert runs_of(make(project, "-j2")[0].stdout) == []

    # a caption edit re-prepares and retrains that build only
    caption = project.root / "data/saten/001.txt"
    caption.write_text("1girl, frown", encoding="utf-8")
    edited, _ = make(project, "-j2")
    assert edited.returncode == 0, edited.stderr
    assert runs_of(edited.stdout) == ["recipes/batch/saten.toml until report"]
    assert re.search(r"prepare +staged 4 image\(s\)", edited.stdout)
    assert len(fake_kohya.calls) == 8
    staged_caption = project.root / "build/Saten_batch/dataset/3_saten_ruiko/001.txt"
    assert "frown" in staged_caption.read_text(encoding="utf-8")


@needs_make
def test_make_k_builds_the_others_past_a_failed_build_and_fails(
    project: Project, fake_kohya: FakeKohya
) -> None:
    project.write_recipe(recipe("Good", "data/char"), name="good.toml")
    project.write_recipe(recipe("Bad", "data/none"), name="bad.toml")
    assert run_lorabuild("makefile", "bad.toml", "good.toml", cwd=project.root).returncode == 0
    done, _ = make(project, "-k")
    assert done.returncode != 0
    assert "bad.toml: dataset.subsets[0].source:" in done.stderr
    assert outputs(project, "Good")[-1] == "Good.safetensors"
    assert not (project.root / "build/Bad/output").exists()
    stopped, _ = make(project)  # without -k, make stops at the first failure, and says so
    assert stopped.returncode != 0 and "Error 2" in stopped.stderr


@needs_make
def test_renaming_a_build_in_its_recipe_gives_the_makefile_its_new_target(
    project: Project, fake_kohya: FakeKohya
) -> None:
    assert run_lorabuild("makefile", "recipe.toml", cwd=project.root).returncode == 0
    project.write_recipe(recipe("Renamed"))
    done, _ = make(project, "-j2", "Renamed/compile", "Renamed/prepare")
    assert done.returncode == 0, done.stderr
    assert (project.root / "build/Renamed/config.toml").is_file()
    # two goals of one build run one after the other, never racing for its lock
    assert runs_of(done.stdout) == ["recipe.toml until compile", "recipe.toml until prepare"]
    assert fake_kohya.calls == []


def test_set_values_reach_every_command_and_change_the_fingerprint(project: Project) -> None:
    first = run_lorabuild("makefile", "recipe.toml", "--set", "training.epochs=2", cwd=project.root)
    assert first.returncode == 0, first.stderr
    text = (project.root / "Makefile").read_text(encoding="utf-8")
    assert "run recipe.toml --set training.epochs=2 --build-dir build --until report" in text
    assert "makefile recipe.toml --set training.epochs=2 -o Makefile --build-dir build" in text
    run_lorabuild("makefile", "recipe.toml", "--set", "model.base=models/base.safetensors", cwd=project.root)
    other = (project.root / "Makefile").read_text(encoding="utf-8")
    base = (project.root / "models/base.safetensors").as_posix()
    assert f"--set model.base={json.dumps(base)}" in other.replace("$$", "$").replace("'", "")

    (project.root / "old.mk").write_text(text, encoding="utf-8")
    old_key = makefile.manifest(project.root / "old.mk")[0]["key"]
    assert makefile.manifest(project.root / "Makefile")[0]["key"] != old_key  # the stages are asked again


def test_a_file_of_several_builds_selects_each_with_only(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:

    def load_builds(path: Path, overrides: list[str]) -> list[recipe_module.LoadedRecipe]:
        return [recipe_module.load_recipe(path, [*overrides, f"name={n}"]) for n in ("lr a", "lr b")]

    monkeypatch.setattr(recipe_module, "load_builds", load_builds, raising=False)
    builds = makegen.write_makefile([Path("recipe.toml")], Path("Makefile"), Path("build"))
    assert [(b.name, b.target, b.select) for b in builds] == [("lr a", "lr_a", True), ("lr b", "lr_b", True)]
    text = (project.root / "Makefile").read_text(encoding="utf-8")
    assert 'run recipe.toml --only "lr b" --build-dir build --until prepare' in text
    assert 'check recipe.toml --only "lr a" --build-dir build' in text


@needs_make
def test_the_grid_and_the_report_are_stages_of_every_build(project: Project) -> None:
    assert run_lorabuild("makefile", "recipe.toml", cwd=project.root).returncode == 0
    text = (project.root / "Makefile").read_text(encoding="utf-8")
    assert "Test_v1: Test_v1/report\n" in text
    assert "Test_v1/grid: build/Test_v1/.lorabuild/grid.done\n" in text
    dry, _ = make(project, "-n", "Test_v1/grid")
    assert dry.returncode == 0, dry.stderr
    commands = [line.split(" -m ")[1] for line in dry.stdout.splitlines()]
    assert commands == [
        "lorabuild.batch.makefile inputs Makefile",
        "lorabuild run recipe.toml --build-dir build --until grid",
    ]
