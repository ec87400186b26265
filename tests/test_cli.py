"""The command line as a user meets it: exit statuses, messages, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import Project, run_lorabuild

lorabuild = run_lorabuild


def test_check_prints_the_plan(project: Project) -> None:
    result = lorabuild("check", "recipe.toml", cwd=project.root)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SD1.x -> kohya train_network.py" in out
    assert "[0] data/char -> dataset/2_uiharu_kazari: 4 images x 2 repeats = 8 samples" in out
    assert "[0] 001.png 512x768 -> 384x640" in out
    assert "4 batches per epoch = 4 steps per epoch x 3 epochs = 12 steps" in out
    assert "output/Test_v1.safetensors" in out
    assert out.rstrip().endswith("ok: recipe.toml")


def test_check_reports_every_error_with_exit_2(project: Project) -> None:
    result = lorabuild(
        "check",
        "recipe.toml",
        "--set",
        "dataset.subsets[0].repeats=0",
        "--set",
        "network.dimm=3",
        cwd=project.root,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "recipe.toml: dataset.subsets[0].repeats: must be at least 1 (got 0)",
        "recipe.toml: network.dimm: unknown key (did you mean 'dim'?)",
        "2 error(s), 0 warning(s)",
    ]


def test_check_reports_file_problems_together(project: Project) -> None:
    (project.root / "data/char/003.txt").write_bytes("花, 初春".encode("gbk"))
    result = lorabuild("check", "recipe.toml", "--set", "dataset.resolution=70", cwd=project.root)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert any(
        line.startswith("recipe.toml: dataset.resolution: each side must be a multiple") for line in lines
    )
    assert any("003.txt: is not UTF-8" in line for line in lines)


def test_warnings_pass_unless_strict(project: Project) -> None:
    (project.root / "data/char/003.txt").unlink()
    ok = lorabuild("check", "recipe.toml", cwd=project.root)
    assert ok.returncode == 0
    assert "warning: 1 of 4 image(s) have no .txt caption" in ok.stderr
    strict = lorabuild("check", "recipe.toml", "--strict", cwd=project.root)
    assert strict.returncode == 2
    assert "0 error(s), 1 warning(s)" in strict.stderr


def test_compile_then_identical(project: Project) -> None:
    first = lorabuild("compile", "recipe.toml", cwd=project.root)
    assert first.returncode == 0, first.stderr
    assert "   create  build/Test_v1/config.toml" in first.stdout.splitlines()
    second = lorabuild("compile", "recipe.toml", cwd=project.root)
    assert all(line.strip().startswith("identical") for line in second.stdout.splitlines())


def test_prepare_stages_without_touching_sources(project: Project) -> None:
    before = project.tree_hash("data")
    result = lorabuild("prepare", "recipe.toml", cwd=project.root)
    assert result.returncode == 0, result.stderr
    staged = project.root / "build/Test_v1/dataset/2_uiharu_kazari"
    assert (staged / "000.txt").read_text() == "uiharu_kazari, 1girl, solo, smile, transparent_background\n"
    assert sorted(p.name for p in staged.glob("*.png")) == ["000.png", "001.png", "002.png", "003.png"]
    assert project.tree_hash("data") == before


def test_schema_is_json_schema() -> None:
    result = lorabuild("schema")
    schema = json.loads(result.stdout)
    assert schema["title"] == "Recipe"
    assert "dataset" in schema["properties"] and schema["additionalProperties"] is False


def test_missing_recipe_file(tmp_path: Path) -> None:
    result = lorabuild("check", "nope.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "nope.toml: recipe file not found"


def test_check_path_imports_no_heavy_module() -> None:
    code = (
        "import sys; from lorabuild import cli, pipeline, rules; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'accelerate') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert lorabuild("--help").returncode == 0


def test_check_and_compile_refuse_an_argument_the_scripts_cannot_carry_alike(project: Project) -> None:
    """`check` passed it; `compile` refused it with no file or key and told to rename a folder."""
    setting = """launch.accelerate_args={ rdzv_conf = 'a="1 2"' }"""
    expected = [
        'recipe.toml: launch.accelerate_args.rdzv_conf: \'a="1 2"\' contains a double quote (") at position 2, '
        "which Windows PowerShell 5.1 does not escape when it starts a program, so the program would lose it "
        "or split the argument there; accelerate_args are passed on accelerate's command line: change the "
        "value or leave the option out",
        "1 error(s), 0 warning(s)",
    ]
    for command in ("check", "compile"):
        result = lorabuild(command, "recipe.toml", "--set", setting, cwd=project.root)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == expected
        assert not (project.root / "build" / "Test_v1" / "train.ps1").exists()


def test_a_file_name_with_a_line_break_is_shown_on_one_line(project: Project) -> None:
    """`check "evil\\nname.toml"` printed the file name raw: the problem came out as two lines."""
    (project.root / "evil\nname.toml").write_text(
        (project.root / "recipe.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    result = lorabuild("check", "evil\nname.toml", "--set", "training.epochs=0", cwd=project.root)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "evil\\nname.toml: training.epochs: must be at least 1 (got 0)",
        "1 error(s), 0 warning(s)",
    ]
    missing = lorabuild("check", "gone\r\u2028.toml", cwd=project.root)
    assert missing.stderr.splitlines()[0] == "gone\\r\\u2028.toml: recipe file not found"


def test_help_shows_recipe_tables_in_square_brackets_as_written() -> None:
    """Help text is plain: `[pick]` and `[env ...]` are not taken for rich markup tags and dropped."""
    result = lorabuild("pick", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "the recipe's [pick] table" in text
    assert "[env LORABUILD_BUILD_DIR, default ./build]" in text
