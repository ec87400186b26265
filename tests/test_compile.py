"""`lorabuild compile`: the build folder's files, byte-identical rebuilds, and exact quoting."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import toml

from lorabuild.build.artefacts import ARTEFACTS, argument_lines
from lorabuild.plan.plan import Plan
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.compile import compile_build
from tests.conftest import Project

NASTY = '初春 it\'s "quoted" $HOME `id`; a && b\\ \t end'


def compile_project(recipe: Path, overrides: list[str] | None = None) -> Plan:
    plan = require_plan(check(recipe, overrides or [], Path("build")))
    compile_build(plan)
    return plan


def test_compile_writes_every_artefact_then_nothing(project: Project) -> None:
    plan = require_plan(check(project.recipe, [], Path("build")))
    first = compile_build(plan)
    assert sorted(w.path.name for w in first) == sorted(ARTEFACTS)
    assert {w.action for w in first} == {"create"}
    before = {n: (plan.build_dir / n).read_bytes() for n in ARTEFACTS}
    again = compile_build(require_plan(check(project.recipe, [], Path("build"))))
    assert {w.action for w in again} == {"identical"}
    assert {n: (plan.build_dir / n).read_bytes() for n in ARTEFACTS} == before


def test_change_rewrites_only_affected_files(project: Project) -> None:
    compile_project(project.recipe)
    plan = require_plan(check(project.recipe, ["network.dim=16"], Path("build")))
    actions = {w.path.name: w.action for w in compile_build(plan)}
    assert actions["config.toml"] == "update"
    assert actions["dataset.toml"] == "identical"
    assert actions["train.sh"] == "identical"


def test_dry_run_writes_nothing(project: Project) -> None:
    plan = require_plan(check(project.recipe, [], Path("build")))
    assert {w.action for w in compile_build(plan, dry_run=True)} == {"create"}
    assert not plan.build_dir.exists()


def test_train_sh_is_executable_and_ps1_has_bom_and_crlf(project: Project) -> None:
    plan = compile_project(project.recipe)
    assert os.access(plan.build_dir / "train.sh", os.X_OK)
    ps1 = (plan.build_dir / "train.ps1").read_bytes()
    assert ps1.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in ps1 and b"\n" not in ps1.replace(b"\r\n", b"")
    assert b"Set-ExecutionPolicy" in ps1


def test_kazari_values_reach_the_config(project: Project) -> None:
    plan = compile_project(
        project.recipe,
        ["optimizer.type=Lion", "optimizer.warmup_steps='5%'", "training.max_token_length=225"],
    )
    config = toml.loads((plan.build_dir / "config.toml").read_text(encoding="utf-8"))
    flat = {k: v for section in config.values() for k, v in section.items()}
    assert flat["optimizer_type"] == "Lion"
    assert flat["lr_warmup_steps"] == 0.05  # kohya takes "5%" only on its command line
    assert flat["max_token_length"] == 225
    assert flat["network_alpha"] == 4.0 and isinstance(flat["network_alpha"], float)


def test_paths_outside_the_project_are_absolute(
    project: Project, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("shared") / "model.safetensors"
    shutil.copy(project.root / "models" / "base.safetensors", elsewhere)
    plan = compile_project(project.recipe, [f"model.base={json.dumps(str(elsewhere))}"])
    config = tomllib.loads((plan.build_dir / "config.toml").read_text(encoding="utf-8"))
    assert config["model"]["pretrained_model_name_or_path"] == elsewhere.resolve().as_posix()


def test_argument_lines_pair_options_with_values() -> None:
    assert argument_lines(("a", "--x", "1", "--flag", "--y", "2", "b")) == [
        ["a"],
        ["--x", "1"],
        ["--flag"],
        ["--y", "2"],
        ["b"],
    ]


RECORDER = """#!{python}
import json, os, sys, toml
cfg = toml.load("config.toml")
json.dump({{"argv": sys.argv[1:], "cwd": os.getcwd(), "hf_home": os.environ.get("HF_HOME"),
           "config": cfg, "dataset": toml.load("dataset.toml")}},
          open(os.environ["RECORD"], "w", encoding="utf-8"), ensure_ascii=False)
"""


def test_train_sh_passes_strings_byte_exact(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run train.sh with a stand-in `accelerate` that records what it receives and reads the TOML
    files with the `toml` package, as kohya does."""
    kohya = project.root / f"sd scripts {NASTY}"
    kohya.mkdir()
    monkeypatch.setenv("LORABUILD_SD_SCRIPTS", str(kohya))
    weird_model = project.root / f"models {NASTY}" / "base.safetensors"
    weird_model.parent.mkdir()
    shutil.copy(project.root / "models" / "base.safetensors", weird_model)
    plan = compile_project(
        project.recipe,
        [
            f"model.base={json.dumps(str(weird_model))}",
            f"title={json.dumps(NASTY)}",
            f"launch.env.HF_HOME={json.dumps(NASTY)}",
        ],
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "accelerate"
    recorder.write_text(RECORDER.format(python=sys.executable))
    recorder.chmod(0o755)
    record = tmp_path / "record.json"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(
        ["bash", str((plan.build_dir / "train.sh").resolve())],
        cwd=elsewhere,  # the script must work from any folder
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record)},
        check=True,
    )
    seen = json.loads(record.read_text(encoding="utf-8"))
    assert Path(seen["cwd"]) == plan.build_dir.resolve()
    assert seen["hf_home"] == NASTY
    assert seen["argv"][seen["argv"].index("--config_file") - 1] == f"{kohya}/train_network.py"
    assert seen["argv"][0] == "launch" and seen["argv"][-4:] == [
        "--config_file",
        "config.toml",
        "--dataset_config",
        "dataset.toml",
    ]
    flat = {k: v for section in seen["config"].values() for k, v in section.items()}
    assert flat["metadata_title"] == NASTY
    assert Path(plan.build_dir, flat["pretrained_model_name_or_path"]).resolve() == weird_model.resolve()
    assert seen["dataset"]["datasets"][0]["subsets"][0]["class_tokens"] == "uiharu_kazari"
