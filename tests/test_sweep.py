"""``[sweep]``: expansion into named builds (product and zip), names, errors, ``--only`` and ``ls``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorabuild.problems import RecipeError, format_problem
from lorabuild.recipe.load import load_builds, load_recipe
from tests.conftest import RECIPE, Project

CLI_RESULT = tuple[int, str, str]

SWEEP = RECIPE + '\n[sweep]\n"network.dim" = [16, 32]\n"optimizer.lr" = [1e-4, 5e-5]\n'
NAMES = ["Test_v1-dim16-lr1e-4", "Test_v1-dim16-lr5e-5", "Test_v1-dim32-lr1e-4", "Test_v1-dim32-lr5e-5"]


def lorabuild(capsys: pytest.CaptureFixture[str], *args: str) -> CLI_RESULT:
    """Run the command line in this process (a fresh process costs a second or two): status, stdout, stderr."""
    import sys

    from lorabuild.cli import main

    argv = sys.argv
    sys.argv = ["lorabuild", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return code, out.out, out.err


def sweep_file(project: Project, sweep: str) -> Path:
    project.write_recipe(RECIPE + "\n[sweep]\n" + sweep, "sweep.toml")
    return Path("sweep.toml")


def problems(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_builds(path, overrides or [])
    return [format_problem(p) for p in info.value.problems]


def test_the_product_of_the_lists_in_order(project: Project) -> None:
    project.write_recipe(SWEEP, "sweep.toml")
    builds = load_builds(Path("sweep.toml"))
    assert [b.recipe.name for b in builds] == NAMES
    assert [(b.recipe.network.dim, b.recipe.optimizer.lr) for b in builds] == [
        (16, 1e-4),
        (16, 5e-5),
        (32, 1e-4),
        (32, 5e-5),
    ]
    assert builds[1].sweep_values == {"network.dim": 16, "optimizer.lr": 5e-5}
    assert builds[1].raw["name"] == NAMES[1] and "sweep" not in builds[1].raw
    assert len({b.section_hash() for b in builds}) == 4
    assert builds[0].display == f"sweep.toml (build {NAMES[0]})"


def test_zip_pairs_the_lists(project: Project) -> None:
    path = sweep_file(project, 'mode = "zip"\n"network.dim" = [16, 32]\n"network.alpha" = [8, 16]\n')
    assert [(b.recipe.network.dim, b.recipe.network.alpha) for b in load_builds(path)] == [(16, 8), (32, 16)]


def test_zip_needs_lists_of_one_length(project: Project) -> None:
    path = sweep_file(project, 'mode = "zip"\n"network.dim" = [16, 32, 64]\n"optimizer.lr" = [1e-4, 5e-5]\n')
    assert problems(path) == [
        'sweep.toml: sweep.mode: "zip" pairs the lists item by item, so they need one length: '
        "network.dim has 3, optimizer.lr has 2"
    ]


def test_a_mode_that_does_not_exist(project: Project) -> None:
    path = sweep_file(project, 'mode = "grid"\n"network.dim" = [16]\n')
    assert problems(path) == ['sweep.toml: sweep.mode: must be "product" or "zip" (got \'grid\')']


def test_nested_tables_are_dotted_keys_too(project: Project) -> None:
    path = sweep_file(project, "network.dim = [16, 32]\n")
    assert [b.recipe.name for b in load_builds(path)] == ["Test_v1-dim16", "Test_v1-dim32"]


def test_a_name_template(project: Project) -> None:
    path = sweep_file(
        project, 'name = "{name}_d{network.dim}_e{training.epochs}"\n"network.dim" = [16, 32]\n'
    )
    assert [b.recipe.name for b in load_builds(path)] == ["Test_v1_d16_e3", "Test_v1_d32_e3"]


def test_a_template_placeholder_that_is_no_key(project: Project) -> None:
    path = sweep_file(project, 'name = "{name}-{network.dimm}"\n"network.dim" = [16, 32]\n')
    assert problems(path) == [
        "sweep.toml: sweep.name: {network.dimm} is not a swept key or a key of the recipe "
        "(did you mean 'network.dim'?)"
    ]


def test_two_builds_with_one_name(project: Project) -> None:
    path = sweep_file(
        project, 'name = "{name}-d{network.dim}"\n"network.dim" = [16, 32]\n"network.alpha" = [1, 2]\n'
    )
    found = problems(path)
    assert found[0] == (
        "sweep.toml: sweep.name: builds 1 and 2 are both named 'Test_v1-d16': put every swept key in the "
        'name template, e.g. name = "{name}-dim{network.dim}"'
    )
    assert len(found) == 2


def test_clashing_short_keys_use_the_whole_key(project: Project) -> None:
    path = sweep_file(project, '"optimizer.lr" = [1e-4]\n"kohya.lr" = [2]\n')
    assert [b.recipe.name for b in load_builds(path)] == ["Test_v1-optimizer_lr1e-4-kohya_lr2"]


def test_an_unknown_key_suggests_the_right_one(project: Project) -> None:
    path = sweep_file(project, '"network.dimm" = [16, 32]\n"trainning.epochs" = [1]\n')
    assert problems(path) == [
        "sweep.toml: sweep.\"network.dimm\": network.dimm is not a recipe key (did you mean 'dim'?)",
        "sweep.toml: sweep.\"trainning.epochs\": trainning is not a recipe key (did you mean 'training'?)",
    ]


@pytest.mark.parametrize("value", ["16", "[]", '"16"'])
def test_a_swept_value_must_be_a_list(project: Project, value: str) -> None:
    path = sweep_file(project, f'"network.dim" = {value}\n')
    (msg,) = problems(path)
    assert msg.startswith('sweep.toml: sweep."network.dim": must be a list of values to try')


def test_an_empty_sweep(project: Project) -> None:
    path = sweep_file(project, 'mode = "zip"\n')
    assert problems(path) == ['sweep.toml: sweep: has no keys to sweep: add e.g. "network.dim" = [16, 32]']


def test_each_build_is_validated_apart(project: Project) -> None:
    path = sweep_file(project, '"network.dim" = [16, 0]\n')
    assert problems(path) == ["sweep.toml (build Test_v1-dim0): network.dim: must be at least 1 (got 0)"]


def test_overrides_apply_on_top_of_every_build(project: Project) -> None:
    project.write_recipe(SWEEP, "sweep.toml")
    builds = load_builds(Path("sweep.toml"), ["network.alpha=2", "name=Other"])
    assert {b.recipe.network.alpha for b in builds} == {2}
    assert builds[0].recipe.name == "Other-dim16-lr1e-4"
    # an override of a swept key wins (the names still say the sweep's values)
    assert {b.recipe.network.dim for b in load_builds(Path("sweep.toml"), ["network.dim=8"])} == {8}


def test_a_swept_path_is_relative_to_the_file_that_sweeps_it(project: Project) -> None:
    project.add_images("data/other")
    Path("recipes").mkdir()
    Path("recipes/base.toml").write_text(
        RECIPE.replace('"models/', '"../models/').replace('"data/', '"../data/')
        + '\n[sweep]\n"dataset.subsets[0].source" = ["../data/char", "../data/other"]\n',
        encoding="utf-8",
    )
    Path("top.toml").write_text('extends = "recipes/base.toml"\n', encoding="utf-8")
    builds = load_builds(Path("top.toml"))
    assert [b.recipe.dataset.subsets[0].source for b in builds] == [Path("data/char"), Path("data/other")]
    assert [b.recipe.name for b in builds] == ["Test_v1-sourcechar", "Test_v1-sourceother"]


def test_load_recipe_asks_for_one_build(project: Project) -> None:
    project.write_recipe(SWEEP, "sweep.toml")
    with pytest.raises(RecipeError) as info:
        load_recipe(Path("sweep.toml"))
    assert format_problem(info.value.problems[0]) == (
        f"sweep.toml: sweep: expands to 4 builds: pick one with --only NAME (its builds are {', '.join(NAMES)}); "
        "lorabuild ls sweep.toml lists them"
    )
    assert load_recipe(Path("sweep.toml"), only=NAMES[2]).recipe.network.dim == 32
    with pytest.raises(RecipeError) as info:
        load_recipe(Path("sweep.toml"), only="Test_v1")
    assert "has no build named 'Test_v1'" in str(info.value)


def test_ls_lists_the_builds(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.write_recipe(SWEEP, "sweep.toml")
    code, out, err = lorabuild(capsys, "ls", "sweep.toml", "recipe.toml")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        NAMES[0],
        "sweep.toml",
        "network.dim=16",
        "optimizer.lr=1e-4",
        f"build/{NAMES[0]}/",
    ]
    assert lines[-1].split() == ["Test_v1", "recipe.toml", "-", "build/Test_v1/"]
    listed = json.loads(lorabuild(capsys, "ls", "--json", "sweep.toml")[1])
    assert listed[3] == {
        "name": NAMES[3],
        "recipe": "sweep.toml",
        "sources": ["sweep.toml"],
        "sweep": {"network.dim": 32, "optimizer.lr": 5e-5},
        "build_dir": f"build/{NAMES[3]}",
    }


def test_check_checks_every_build_and_compile_needs_only(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.write_recipe(SWEEP, "sweep.toml")
    code, out, err = lorabuild(capsys, "check", "sweep.toml")
    assert code == 0, err
    assert [line for line in out.splitlines() if line.startswith("== ")] == [f"== {n}" for n in NAMES]
    assert out.rstrip().endswith("ok: sweep.toml: 4 builds")

    code, out, err = lorabuild(capsys, "compile", "sweep.toml")
    assert code == 2 and "expands to 4 builds: pick one with --only NAME" in err

    code, out, err = lorabuild(capsys, "compile", "sweep.toml", "--only", NAMES[1])
    assert code == 0, err
    config = (project.root / "build" / NAMES[1] / "config.toml").read_text()
    assert 'output_name = "Test_v1-dim16-lr5e-5"' in config and "network_dim = 16" in config

    code, out, err = lorabuild(capsys, "compile", "sweep.toml", "--only", "nope")
    assert code == 2 and "has no build named 'nope': its builds are" in err


def test_check_reports_the_failing_build(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_file(project, '"dataset.subsets[0].source" = ["data/char", "data/none"]\n')
    code, _, err = lorabuild(capsys, "check", path.as_posix())
    assert code == 2
    assert "sweep.toml (build Test_v1-sourcenone): dataset.subsets[0].source:" in err
    assert "Test_v1-sourcechar)" not in err
