"""``lorabuild compile --target slurm``: the sbatch array script, and runs of it on a real Slurm.

The rendering tests need nothing. The ``slurm`` tests start a private single-node cluster
(:mod:`tests.slurm_cluster`: Debian's slurm-wlm and munge, as root) and submit the script,
skipping, saying why, where those are missing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorabuild.batch.slurm import SlurmError, SlurmSettings, parse_stages, write_sbatch
from tests import slurm_cluster
from tests.conftest import RECIPE, SD_SCRIPTS, Project, run_lorabuild

CPU_RECIPE = RECIPE + "\n[launch]\ngpus = 0\n"


def two_recipes(project: Project) -> list[Path]:
    """recipe.toml (Test_v1) and other.toml (Other_v1) over the same dataset, on the CPU."""
    project.write_recipe(CPU_RECIPE)
    other = project.write_recipe(CPU_RECIPE.replace('name = "Test_v1"', 'name = "Other_v1"'), "other.toml")
    return [project.root / "recipe.toml", other]


def sbatch_lines(script: Path) -> list[str]:
    return [
        line.removeprefix("#SBATCH ")
        for line in script.read_text().splitlines()
        if line.startswith("#SBATCH")
    ]


# --- the script ---------------------------------------------------------------------------------


def test_script_has_one_task_per_build_and_the_resources(project: Project) -> None:
    recipes = two_recipes(project)
    script = project.root / "jobs" / "train.sbatch"
    builds, _, changed = write_sbatch(
        recipes,
        script,
        project.build,
        settings=SlurmSettings(mem="4G", time="01:00:00", extra=("--qos=low",)),
    )
    assert changed and [b.name for b in builds] == ["Test_v1", "Other_v1"]
    jobs = (project.root / "jobs").as_posix()
    assert sbatch_lines(script) == [
        "--job-name=lorabuild",
        "--array=0-1",
        f"--output={jobs}/logs/%x-%A_%a.out",
        f"--chdir={jobs}",
        "--cpus-per-task=2",  # [launch] num_cpu_threads_per_process x processes
        "--mem=4G",
        "--time=01:00:00",
        "--qos=low",
    ]  # no --gres: every build trains on the CPU
    assert (project.root / "jobs" / "logs").is_dir()  # sbatch does not make it
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert f"    recipe={(project.root / 'other.toml').as_posix()}\n" in text
    assert f"lorabuild=({Path(sys.executable).as_posix()} -m lorabuild)" in text  # this machine's lorabuild
    assert '"${lorabuild[@]}" run "$recipe" "${common[@]}" --until train' in text
    assert '"${lorabuild[@]}" check' not in text
    assert (
        write_sbatch(
            recipes,
            script,
            project.build,
            settings=SlurmSettings(mem="4G", time="01:00:00", extra=("--qos=low",)),
        )[2]
        is False
    )


def test_gpus_cpus_and_slurm_table_come_from_the_recipes(project: Project) -> None:
    project.write_recipe(
        RECIPE + '\n[launch]\ngpus = 2\nnum_cpu_threads_per_process = 3\n[launch.slurm]\npartition = "gpu"\n'
        'mem = "32G"\nextra = ["--constraint=a100"]\n'
    )
    script = project.root / "t.sbatch"
    write_sbatch([project.root / "recipe.toml"], script, project.build)
    lines = sbatch_lines(script)
    assert "--gres=gpu:2" in lines and "--cpus-per-task=6" in lines
    assert lines[-3:] == ["--mem=32G", "--partition=gpu", "--constraint=a100"]
    write_sbatch(
        [project.root / "recipe.toml"],
        script,
        project.build,
        settings=SlurmSettings(partition="big", gpus=1, cpus_per_task=8, job_name="sweep"),
    )
    lines = sbatch_lines(script)
    assert lines[0] == "--job-name=sweep"
    assert {"--gres=gpu:1", "--cpus-per-task=8", "--partition=big"} <= set(lines)


def test_builds_that_disagree_or_name_gpu_ids_are_refused(project: Project) -> None:
    project.write_recipe(RECIPE + '\n[launch.slurm]\nmem = "8G"\n')
    other = project.write_recipe(
        RECIPE.replace("Test_v1", "Other_v1") + '\n[launch.slurm]\nmem = "16G"\n', "other.toml"
    )
    recipes = [Path("recipe.toml"), Path(other.name)]  # as typed: messages show them so
    with pytest.raises(SlurmError) as caught:
        write_sbatch(recipes, project.root / "t.sbatch", project.build)
    assert str(caught.value) == (
        "the builds ask for different launch.slurm.mem: '8G' (recipe.toml) and '16G' (other.toml); set the "
        "same value in each recipe, or pass --slurm mem=VALUE for the whole array"
    )
    write_sbatch(recipes, project.root / "t.sbatch", project.build, settings=SlurmSettings(mem="12G"))
    assert "--mem=12G" in sbatch_lines(project.root / "t.sbatch")
    with pytest.raises(SlurmError, match=r"launch.gpus lists GPU ids, but Slurm chooses each task's GPUs"):
        write_sbatch(recipes, project.root / "t.sbatch", project.build, overrides=["launch.gpus=[0, 1]"])


CONTROL = "an #SBATCH line cannot hold line breaks or control characters"
QUOTE = "sbatch reads an #SBATCH value in double quotes without escapes, so it cannot hold one"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            'launch.slurm.partition="gpu\\nhigh"',
            f"launch.slurm.partition: 'gpu\\nhigh' contains a line break (U+000A) at position 3: {CONTROL}",
        ),
        (
            'launch.slurm.account="lab\\"x"',
            f"""launch.slurm.account: 'lab"x' contains a double quote (") at position 3: {QUOTE}""",
        ),
        (
            'launch.slurm.account="lab\\rx"',
            f"launch.slurm.account: 'lab\\rx' contains a carriage return (U+000D) at position 3: {CONTROL}",
        ),
        (
            'launch.slurm.extra=["--qos=\\"high\\""]',
            f"""launch.slurm.extra: '--qos="high"' contains a double quote (") at position 6: {QUOTE}""",
        ),
    ],
)
def test_check_refuses_the_slurm_values_compile_refuses(
    project: Project, setting: str, expected: str
) -> None:
    """A newline or a quote in [launch.slurm] passed `check`; `compile --target slurm` refused it."""
    checked = run_lorabuild("check", "recipe.toml", "--set", setting, cwd=project.root)
    assert checked.returncode == 2
    assert checked.stderr.splitlines() == [f"recipe.toml: {expected}", "1 error(s), 0 warning(s)"]
    compiled = run_lorabuild(
        "compile", "recipe.toml", "--target", "slurm", "--set", setting, cwd=project.root
    )
    assert compiled.returncode == 2 and compiled.stderr == checked.stderr
    # The script's own test is the same function, for what the command line sets.
    with pytest.raises(SlurmError) as caught:
        write_sbatch(
            [project.recipe],
            project.root / "x.sbatch",
            Path("build"),
            settings=SlurmSettings(partition='a"b'),
        )
    assert str(caught.value) == (
        f"""sbatch option '--partition=a"b' cannot be written on an #SBATCH line: it contains a double quote (") """
        f"at position 13: {QUOTE}"
    )


def test_stages_and_cli(project: Project) -> None:
    assert parse_stages("compile, check") == ("check", "compile")
    with pytest.raises(
        SlurmError, match=r"^--slurm stages=check,fit: 'fit' is not a stage; use some of check,"
    ):
        parse_stages("check,fit")
    two_recipes(project)
    result = run_lorabuild(
        "compile", "--target", "slurm", "recipe.toml", "other.toml", "-o", "a.sbatch",
        "--slurm", "stages=check,compile", "--slurm", "lorabuild=/opt/lb/bin/lorabuild",
        cwd=project.root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "wrote a.sbatch: 2 array task(s) (Test_v1, Other_v1), each no GPU, 2 CPU(s)"
    )
    text = (project.root / "a.sbatch").read_text()
    assert "lorabuild=(/opt/lb/bin/lorabuild)" in text
    assert '"${lorabuild[@]}" check "$recipe" "${common[@]}"' in text
    assert "--until compile" in text
    assert not (project.build / "Test_v1").exists()  # compiling the script builds nothing
    bad = run_lorabuild("compile", "--target", "slurm", "recipe.toml", "--slurm", "nodes=2", cwd=project.root)
    assert bad.returncode == 2
    assert bad.stderr.startswith(
        "error: --slurm 'nodes=2': write KEY=VALUE with KEY one of stages, partition"
    )
    wrong = run_lorabuild("compile", "--target", "cloud", "recipe.toml", cwd=project.root)
    assert (wrong.returncode, wrong.stderr) == (
        2,
        "error: --target 'cloud' is not a target: use local or slurm\n",
    )


def test_task_runs_outside_slurm_as_bash(project: Project, tmp_path: Path) -> None:
    """The script itself, run by bash with SLURM_ARRAY_TASK_ID set (no Slurm needed), then again."""
    recipes = two_recipes(project)
    script = project.root / "a.sbatch"
    write_sbatch(recipes, script, project.build, stages=("check", "compile"))
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1"}
    first = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "ok: " in first.stdout and "compile  wrote dataset.toml" in first.stdout
    assert (project.build / "Other_v1" / "config.toml").is_file()
    assert not (project.build / "Test_v1").exists()
    again = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert again.stdout.splitlines()[-1].startswith("Other_v1: already built")
    time.sleep(0.05)
    (project.root / "data" / "char" / "000.txt").write_text("1girl, uiharu_kazari, edited", encoding="utf-8")
    edited = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert "already built" not in edited.stdout and "compile  up to date" in edited.stdout
    missing = subprocess.run(
        ["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "2"}, capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert "array task 2 has no build (this script has 2: 0-1)" in missing.stderr


# --- a real Slurm ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slurm_cluster.Cluster]:
    why = slurm_cluster.unavailable()
    if why:
        pytest.skip(why)
    with slurm_cluster.cluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


def task_logs(folder: Path, job: str) -> dict[int, str]:
    logs = {}
    for log in folder.glob(f"lorabuild-{job}_*.out"):
        match = re.fullmatch(rf"lorabuild-{job}_(\d+)\.out", log.name)
        assert match, log.name
        logs[int(match.group(1))] = log.read_text(encoding="utf-8")
    return logs


@pytest.mark.slurm
def test_array_checks_and_compiles_each_build_then_skips_them(
    project: Project, slurm: slurm_cluster.Cluster
) -> None:
    recipes = two_recipes(project)
    script = project.root / "jobs" / "lorabuild.sbatch"
    write_sbatch(
        recipes, script, project.build, settings=SlurmSettings(cpus_per_task=1), stages=("check", "compile")
    )
    assert not any("--gres" in line for line in sbatch_lines(script))
    logs_dir = project.root / "jobs" / "logs"
    job = slurm.sbatch(script)
    slurm.wait(job)
    logs = task_logs(logs_dir, job)
    assert sorted(logs) == [0, 1], slurm.logs()
    for task, (name, recipe) in enumerate([("Test_v1", "recipe.toml"), ("Other_v1", "other.toml")]):
        log = logs[task]
        assert f"lorabuild: task {task}: build {name} from {(project.root / recipe).as_posix()}" in log, log
        assert f"ok: {(project.root / recipe).as_posix()}" in log  # lorabuild check
        assert "compile  wrote dataset.toml, config.toml" in log
        assert log.rstrip().endswith(f"{name}: done (stages check, compile)")
        assert (project.build / name / "config.toml").is_file()
        assert not (project.build / name / "dataset").exists()  # not prepared: stages check, compile
    again = slurm.sbatch(script)
    slurm.wait(again)
    logs = task_logs(logs_dir, again)
    assert sorted(logs) == [0, 1], slurm.logs()
    for task, name in enumerate(["Test_v1", "Other_v1"]):
        assert logs[task].splitlines()[-1] == (
            f"{name}: already built (stages check, compile; nothing changed since): skipping"
        )


@pytest.mark.slurm
@pytest.mark.real_trainer
@pytest.mark.skipif(
    os.environ.get("LORABUILD_SLURM_DEMO") != "1",
    reason="trains the CPU demo with kohya (minutes, 8 GB): set LORABUILD_SLURM_DEMO=1 to run it",
)
def test_cpu_demo_trains_as_an_array_task(project: Project, slurm: slurm_cluster.Cluster) -> None:
    """The tutorial's recipe on the demo's random-weight model, trained by an array task (minutes, 8 GB)."""
    from lorabuild.demo.demo import DEMO_RECIPE, prepare_demo

    assert (SD_SCRIPTS / "train_network.py").is_file()
    build_root = project.root / "demo"
    overrides = [*prepare_demo(build_root), "launch.gpus=0"]
    script = project.root / "demo.sbatch"
    builds, used, _ = write_sbatch(
        [DEMO_RECIPE],
        script,
        build_root,
        overrides=overrides,
        settings=SlurmSettings(cpus_per_task=os.cpu_count() or 1, job_name="demo"),
        lorabuild=[sys.executable, "-m", "lorabuild"],  # the Python with kohya's stack runs this test
    )
    assert used.gpus == 0 and len(builds) == 1
    job = slurm.sbatch(script)
    slurm.wait(job, timeout=1800)
    log = (project.root / "logs" / f"demo-{job}_0.out").read_text(encoding="utf-8")
    name = builds[0].name
    assert log.rstrip().endswith(f"{name}: done (stages compile, prepare, train)"), log[-3000:]
    assert (build_root / name / "output" / f"{name}.safetensors").is_file()
    again = slurm.sbatch(script)
    slurm.wait(again)
    assert "already built" in (project.root / "logs" / f"demo-{again}_0.out").read_text(encoding="utf-8")
