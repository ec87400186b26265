"""Multi-GPU and DeepSpeed: ``[launch]`` compiled into ``accelerate launch`` and kohya's options.

The argv is asserted exactly, read back from train.sh (run against a recording stand-in
``accelerate``) and from train.ps1's argument array; every option is checked against the option
lists of the pinned kohya and accelerate (``lorabuild/data``), and those lists against the
installed accelerate when there is one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lorabuild.kohya import options as kohya_options
from lorabuild.kohya.buckets import total_steps
from lorabuild.kohya.launch import SD_SCRIPTS_PREFIX
from lorabuild.plan.plan import Plan
from lorabuild.plan.summary import plan_summary
from lorabuild.probe import facts
from lorabuild.problems import RecipeError
from lorabuild.recipe.accelerate import accelerate_options
from lorabuild.recipe.schema import MANAGED_ACCELERATE_OPTIONS
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.compile import compile_build
from tests.conftest import REPO, Project, run_lorabuild


@pytest.fixture(autouse=True)
def _deepspeed_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """What is compiled is tested here, on any machine: DeepSpeed counts as installed (the rule
    that reports it missing has its own test in tests/test_rules.py)."""
    found = facts.installed_packages
    monkeypatch.setattr(facts, "installed_packages", lambda: {**found(), "deepspeed": True})


DEFAULT_HEAD = [
    "accelerate",
    "launch",
    "--num_cpu_threads_per_process",
    "2",
    "--num_processes",
    "1",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]
TAIL = ["--config_file", "config.toml", "--dataset_config", "dataset.toml"]


def compiled(overrides: list[str]) -> Plan:
    plan = require_plan(check(Path("recipe.toml"), overrides, Path("build")))
    compile_build(plan)
    return plan


def head(plan: Plan) -> list[str]:
    """The argv up to the kohya script (accelerate's part)."""
    argv = list(plan.launch.argv)
    return argv[: argv.index(SD_SCRIPTS_PREFIX + "train_network.py")]


def test_default_launch_is_unchanged(project: Project) -> None:
    plan = compiled([])
    assert list(plan.launch.argv) == [*DEFAULT_HEAD, SD_SCRIPTS_PREFIX + "train_network.py", *TAIL]
    assert plan.config.deepspeed is None
    assert "num_processes" not in plan.manifest()


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        ("0", ["--cpu", "--num_cpu_threads_per_process", "2", "--num_processes", "1"]),
        ("1", ["--num_cpu_threads_per_process", "2", "--num_processes", "1"]),
        ("3", ["--multi_gpu", "--num_cpu_threads_per_process", "2", "--num_processes", "3"]),
        ("[2]", ["--num_cpu_threads_per_process", "2", "--num_processes", "1", "--gpu_ids", "2"]),
        (
            "[0, 2, 3]",
            [
                "--multi_gpu",
                "--num_cpu_threads_per_process",
                "2",
                "--num_processes",
                "3",
                "--gpu_ids",
                "0,2,3",
            ],
        ),
    ],
)
def test_gpus_become_accelerate_hardware_options(project: Project, gpus: str, expected: list[str]) -> None:
    plan = compiled([f"launch.gpus={gpus}"])
    assert head(plan) == [
        "accelerate",
        "launch",
        *expected,
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]


def test_port_and_accelerate_args_follow_the_managed_options(project: Project) -> None:
    plan = compiled(
        [
            "launch.gpus=2",
            "launch.main_process_port=29600",
            'launch.accelerate_args={ enable_cpu_affinity = true, dynamo_mode = "default", debug = false }',
        ]
    )
    assert head(plan)[-6:] == [
        "no",
        "--main_process_port",
        "29600",
        "--enable_cpu_affinity",
        "--dynamo_mode",
        "default",
    ]


def test_steps_are_divided_among_processes(project: Project) -> None:
    """kohya: max_train_steps = epochs * ceil(len(dataloader) / num_processes / accumulation) (TN:800)."""
    one = compiled([])
    # 4 images x 2 repeats in 3 buckets (2 x 512x512, 1 x 512x768, 1 x 768x512), batch 2: 4 batches.
    assert (one.batches_per_epoch, one.total_steps) == (4, 12)
    three = compiled(["launch.gpus=3"])
    assert three.batches_per_epoch == 4
    assert three.total_steps == 3 * 2 == total_steps(4, 3, 1, 3)  # ceil(4 / 3) = 2 per epoch
    assert three.manifest()["num_processes"] == 3
    assert "4 batches per epoch / 3 GPUs = 2 steps per epoch x 3 epochs = 6 steps" in plan_summary(three)
    accumulated = compiled(["launch.gpus=[0, 1]", "training.gradient_accumulation_steps=2"])
    assert accumulated.total_steps == 3  # ceil(4 / 2 / 2) = 1 per epoch
    assert "/ 2 GPUs / 2 accumulation = 1 steps per epoch" in plan_summary(accumulated)


def test_deepspeed_table_becomes_kohyas_options(project: Project) -> None:
    nvme = project.root / "nvme"
    plan = compiled(
        [
            "launch.gpus=2",
            "launch.deepspeed.zero_stage=3",
            "launch.deepspeed.offload_param_device=nvme",
            f"launch.deepspeed.offload_param_nvme_path={json.dumps(str(nvme))}",
            "launch.deepspeed.zero3_save_16bit_model=true",
        ]
    )
    assert plan.config.document()["deepspeed"] == {
        "deepspeed": True,
        "zero_stage": 3,
        "offload_param_device": "nvme",
        "offload_param_nvme_path": "../../nvme",
        "zero3_save_16bit_model": True,
    }
    for name, value in plan.config.document()["deepspeed"].items():  # each one a train_network.py option
        assert kohya_options.check_config_value("train_network.py", name, value) is None, name
    assert "--use_deepspeed" not in plan.launch.argv  # kohya builds the DeepSpeed plugin itself
    minimal = compiled(["launch.gpus=2", "launch.deepspeed.zero_stage=2"])
    assert minimal.config.document()["deepspeed"] == {"deepspeed": True, "zero_stage": 2}


def test_every_compiled_accelerate_option_is_accelerates(project: Project) -> None:
    known = accelerate_options()
    plan = compiled(
        [
            "launch.gpus=[0, 1]",
            "launch.main_process_port=1234",
            "launch.accelerate_args={ dynamo_use_dynamic = true }",
        ]
    )
    options = [a[2:] for a in head(plan)[2:] if a.startswith("--")]
    assert options and all(o in known for o in options), options
    flags = [o for o in options if known[o]["flag"]]
    assert flags == ["multi_gpu", "dynamo_use_dynamic"]
    for gpus in ("0", "1"):
        assert [a for a in head(compiled([f"launch.gpus={gpus}"])) if a.startswith("--")][:1] in (
            [["--cpu"]] if gpus == "0" else [["--num_cpu_threads_per_process"]]
        )
    assert set(MANAGED_ACCELERATE_OPTIONS) <= set(known)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "launch.gpus=[1, 1]",
            "launch.gpus: GPU id 1 is listed twice: each GPU can run one process",
        ),
        ("launch.gpus=[0, -1]", "launch.gpus: GPU ids start at 0 (got -1): see nvidia-smi for the ids"),
        ("launch.gpus=-2", "launch.gpus: must be a GPU count of 0 or more, or a list of GPU ids (got -2)"),
        (
            "launch.gpus=[]",
            "launch.gpus: is an empty list: give GPU ids, e.g. [0, 1], or a count (0 for the CPU)",
        ),
        ("launch.main_process_port=70000", "launch.main_process_port: "),
        (
            "launch.accelerate_args={ num_processes = 4 }",
            "launch.accelerate_args: 'num_processes' is set by lorabuild: use launch.gpus instead",
        ),
        (
            "launch.accelerate_args={ mixed_precision = 'bf16' }",
            "launch.accelerate_args: 'mixed_precision' is set by lorabuild: use training.mixed_precision instead",
        ),
        (
            "launch.accelerate_args={ enable_cpu_afinity = true }",
            "launch.accelerate_args: 'enable_cpu_afinity' is not an option of accelerate launch "
            "(did you mean 'enable_cpu_affinity'?)",
        ),
        (
            "launch.accelerate_args={ enable_cpu_affinity = 1 }",
            "launch.accelerate_args: 'enable_cpu_affinity' is a flag: write true or false (got 1)",
        ),
        (
            "launch.accelerate_args={ dynamo_mode = true }",
            "launch.accelerate_args: 'dynamo_mode' takes a value, not true/false",
        ),
        (
            "launch.accelerate_args={ dynamo_mode = 'fast' }",
            "launch.accelerate_args: 'dynamo_mode' must be one of default, max-autotune, reduce-overhead "
            "(got 'fast')",
        ),
        ("launch.deepspeed.zero_stage=4", "launch.deepspeed.zero_stage: "),
        ("launch.deepspeed.offload_param_device='disk'", "launch.deepspeed.offload_param_device: "),
    ],
)
def test_launch_errors_say_what_and_where(project: Project, override: str, message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        check(Path("recipe.toml"), [override], Path("build"))
    lines = [f"{p.key}: {p.message}" for p in caught.value.problems]
    assert any(line.startswith(message) for line in lines), lines


# --- the scripts: train.sh run against a recording accelerate, train.ps1's array read back -------

RECORDER = """#!{python}
import json, os, sys
json.dump(sys.argv[1:], open(os.environ["RECORD"], "w", encoding="utf-8"))
"""

MULTI = [
    "launch.gpus=[1, 3]",
    "launch.main_process_port=29501",
    "launch.deepspeed.zero_stage=2",
    "launch.deepspeed.offload_optimizer_device=cpu",
    'launch.accelerate_args={ enable_cpu_affinity = true, rdzv_backend = "static" }',
]


def ps1_argv(script: Path) -> list[str]:
    """train.ps1's ``$arguments`` array, each element decoded from PowerShell's single quotes."""
    text = script.read_bytes().decode("utf-8-sig").replace("\r\n", "\n")
    block = text.split("$arguments = @(\n", 1)[1].split("\n)\n", 1)[0]
    items = re.findall(r"\(Join-Path \$SdScripts '((?:[^']|'')*)'\)|'((?:[^']|'')*)'", block)
    return [
        SD_SCRIPTS_PREFIX + joined.replace("''", "'") if joined else plain.replace("''", "'")
        for joined, plain in items
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="runs train.sh with bash")
def test_train_sh_and_ps1_pass_the_multi_gpu_argv(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kohya = tmp_path / "kohya"
    kohya.mkdir()
    monkeypatch.setenv("LORABUILD_SD_SCRIPTS", str(kohya))
    plan = compiled(MULTI)
    expected = [
        "launch",
        "--multi_gpu",
        "--num_cpu_threads_per_process",
        "2",
        "--num_processes",
        "2",
        "--gpu_ids",
        "1,3",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29501",
        "--enable_cpu_affinity",
        "--rdzv_backend",
        "static",
    ]
    assert list(plan.launch.argv) == ["accelerate", *expected, SD_SCRIPTS_PREFIX + "train_network.py", *TAIL]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "accelerate"
    recorder.write_text(RECORDER.format(python=sys.executable), encoding="utf-8")
    recorder.chmod(0o755)
    record = tmp_path / "record.json"
    subprocess.run(
        ["bash", str((plan.build_dir / "train.sh").resolve())],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record)},
        check=True,
    )
    assert json.loads(record.read_text(encoding="utf-8")) == [*expected, f"{kohya}/train_network.py", *TAIL]
    assert ps1_argv(plan.build_dir / "train.ps1") == list(plan.launch.argv[1:])
    config = (plan.build_dir / "config.toml").read_text(encoding="utf-8")
    assert '[deepspeed]\ndeepspeed = true\nzero_stage = 2\noffload_optimizer_device = "cpu"\n' in config


@pytest.mark.skipif(not shutil.which("pwsh"), reason="PowerShell (pwsh) is not installed")
def test_train_ps1_runs_the_multi_gpu_argv(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kohya = tmp_path / "kohya"
    kohya.mkdir()
    monkeypatch.setenv("LORABUILD_SD_SCRIPTS", str(kohya))
    plan = compiled(MULTI)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "accelerate"
    recorder.write_text(RECORDER.format(python=sys.executable), encoding="utf-8")
    recorder.chmod(0o755)
    record = tmp_path / "record.json"
    subprocess.run(
        ["pwsh", "-NoProfile", "-File", str((plan.build_dir / "train.ps1").resolve())],
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record)},
        check=True,
    )
    argv = json.loads(record.read_text(encoding="utf-8"))
    assert argv[:-5] == list(plan.launch.argv[1:-5])
    assert Path(argv[-5]) == kohya / "train_network.py"


def test_cli_check_shows_the_split_steps(project: Project) -> None:
    result = run_lorabuild("check", "recipe.toml", "--set", "launch.gpus=2", cwd=project.root)
    assert result.returncode == 0, result.stderr
    assert "4 batches per epoch / 2 GPUs = 2 steps per epoch x 3 epochs = 6 steps" in result.stdout


# --- accelerate's option list -----------------------------------------------------------------


@pytest.mark.real_trainer  # imports kohya's stack (torch): ~10 s
def test_accelerate_option_list_is_the_installed_accelerates() -> None:
    """lorabuild/data/accelerate_options.json is what the tool extracts from the pinned accelerate."""
    pytest.importorskip("accelerate", reason="accelerate is not installed: pip install -e '.[train]'")
    extracted = subprocess.run(
        [sys.executable, str(REPO / "tools" / "extract_accelerate_options.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shipped = (REPO / "lorabuild" / "data" / "accelerate_options.json").read_text(encoding="utf-8")
    assert extracted == shipped
