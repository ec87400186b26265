"""``extends``: deep merge, paths relative to the file that wrote them, cycles and bad bases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import toml

from lorabuild.problems import RecipeError, format_problem
from lorabuild.recipe.load import load_builds, load_recipe
from tests.conftest import CAPTIONS, REPO, Project, run_lorabuild, write_checkpoint, write_image

BASE = """\
name = "Base"

[model]
base = "../../models/base.safetensors"

[dataset]
resolution = 512
batch_size = 2

[[dataset.subsets]]
source = "../../data/char"
trigger = "uiharu_kazari"
repeats = 2

[captions]
remove = ["flower", "hair_ornament"]

[network]
dim = 8
alpha = 4

[training]
epochs = 3
mixed_precision = "no"
attention = "sdpa"
"""


def write(path: str, text: str) -> Path:
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text, encoding="utf-8")
    return file


def messages(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides or [])
    return [format_problem(p) for p in info.value.problems]


@pytest.fixture
def base(project: Project) -> Path:
    return write("recipes/common/base.toml", BASE)


def test_tables_merge_and_arrays_and_values_are_replaced(base: Path) -> None:
    child = write(
        "recipes/char.toml",
        'extends = "common/base.toml"\nname = "Char_v1"\n[network]\ndim = 16\n[captions]\nremove = ["smile"]\n',
    )
    loaded = load_recipe(child)
    recipe = loaded.recipe
    assert recipe.name == "Char_v1"
    assert (recipe.network.dim, recipe.network.alpha) == (16, 4)  # [network] merged key by key
    assert recipe.captions.remove == ["smile"]  # an array is replaced whole, not appended to
    assert recipe.training.epochs == 3
    assert loaded.sources == (child, base)
    assert "extends" not in loaded.raw


def test_paths_in_a_base_stay_relative_to_the_base(base: Path) -> None:
    child = write("recipes/char.toml", 'extends = "common/base.toml"\nname = "Char_v1"\n')
    loaded = load_recipe(child)
    assert loaded.recipe.model.base == Path("models/base.safetensors")
    assert loaded.recipe.dataset.subsets[0].source == Path("data/char")
    assert loaded.recipe.model.base.is_file()
    # the merged document says where they are from the extending file (what the hash covers)
    assert loaded.raw["model"]["base"] == "../models/base.safetensors"
    assert loaded.raw["dataset"]["subsets"][0]["source"] == "../data/char"


def test_a_path_the_extending_file_writes_is_relative_to_it(base: Path) -> None:
    write("recipes/data/other/a.png", "")
    child = write(
        "recipes/char.toml",
        'extends = "common/base.toml"\nname = "C"\n[[dataset.subsets]]\nsource = "data/other"\ntrigger = "x"\n',
    )
    recipe = load_recipe(child).recipe
    assert [s.source for s in recipe.dataset.subsets] == [Path("recipes/data/other")]  # replaced whole


def test_a_list_of_bases_later_wins_and_chains_follow(base: Path) -> None:
    write("recipes/common/fast.toml", 'extends = "base.toml"\n[training]\nepochs = 1\n[network]\ndim = 4\n')
    write("recipes/common/wide.toml", "[network]\ndim = 32\n")
    child = write("recipes/char.toml", 'extends = ["common/fast.toml", "common/wide.toml"]\nname = "C"\n')
    loaded = load_recipe(child)
    assert (loaded.recipe.training.epochs, loaded.recipe.network.dim) == (1, 32)
    assert [p.as_posix() for p in loaded.sources] == [
        "recipes/char.toml",
        "recipes/common/wide.toml",
        "recipes/common/fast.toml",
        "recipes/common/base.toml",
    ]
    assert loaded.recipe.model.base == Path("models/base.safetensors")  # two levels up, still right


def test_a_cycle_is_rejected_with_the_chain(project: Project) -> None:
    write("recipes/a.toml", 'extends = "b.toml"\nname = "A"\n')
    write("recipes/b.toml", 'extends = "a.toml"\n')
    assert messages(Path("recipes/a.toml")) == [
        "recipes/b.toml: extends: files extend each other in a cycle: "
        "recipes/a.toml → recipes/b.toml → recipes/a.toml"
    ]


def test_a_file_extending_itself(project: Project) -> None:
    write("recipes/a.toml", 'extends = "./a.toml"\nname = "A"\n')
    (msg,) = messages(Path("recipes/a.toml"))
    assert msg.endswith("cycle: recipes/a.toml → recipes/a.toml")


def test_a_missing_base_names_the_extending_file(project: Project) -> None:
    write("recipes/a.toml", 'extends = "bsae.toml"\nname = "A"\n')
    (msg,) = messages(Path("recipes/a.toml"))
    assert msg.startswith("recipes/a.toml: extends: recipes/bsae.toml not found")
    assert "relative to the folder of the file that extends it" in msg


def test_a_base_that_is_not_toml(project: Project) -> None:
    write("recipes/base.toml", "name: Base\nmodel:\n  base: x\n")
    write("recipes/a.toml", 'extends = "base.toml"\n')
    (msg,) = messages(Path("recipes/a.toml"))
    assert msg.startswith("recipes/base.toml (extended by recipes/a.toml): is not valid TOML:")


@pytest.mark.parametrize("value", ["3", '[1, "x"]', '{ file = "b.toml" }', '[""]'])
def test_extends_must_name_files(project: Project, value: str) -> None:
    write("recipes/a.toml", f"extends = {value}\n")
    assert messages(Path("recipes/a.toml")) == [
        'recipes/a.toml: extends: must be a file name or a list of them, e.g. extends = "base.toml"'
    ]


def test_a_bad_value_names_the_file_that_wrote_it(base: Path) -> None:
    write("recipes/common/base.toml", BASE.replace("dim = 8", "dim = 0"))
    child = write("recipes/char.toml", 'extends = "common/base.toml"\nname = "C"\n[training]\nepochs = 0\n')
    assert sorted(messages(child)) == [
        "recipes/char.toml (extends recipes/common/base.toml): training.epochs: must be at least 1 (got 0)",
        "recipes/common/base.toml (extended by recipes/char.toml): network.dim: must be at least 1 (got 0)",
    ]


def test_a_typo_in_a_base_is_reported_in_the_base(base: Path) -> None:
    write("recipes/common/base.toml", BASE.replace("alpha = 4", "alpah = 4"))
    child = write("recipes/char.toml", 'extends = "common/base.toml"\nname = "C"\n')
    assert messages(child) == [
        "recipes/common/base.toml (extended by recipes/char.toml): network.alpah: unknown key "
        "(did you mean 'alpha'?)"
    ]


def test_a_rule_problem_names_the_file_that_wrote_the_value(base: Path) -> None:
    from lorabuild.stages.check import check

    write("recipes/common/base.toml", BASE.replace("../../data/char", "../../data/none"))
    child = write("recipes/char.toml", 'extends = "common/base.toml"\nname = "C"\n')
    checked = check(child, [], Path("build"))
    shown = [format_problem(p) for p in checked.problems if p.key == "dataset.subsets[0].source"]
    assert shown and shown[0].startswith(
        "recipes/common/base.toml (extended by recipes/char.toml): dataset.subsets[0].source:"
    )


def test_overrides_apply_after_the_merge(base: Path) -> None:
    child = write("recipes/char.toml", 'extends = "common/base.toml"\nname = "C"\n')
    assert load_recipe(child, ["network.alpha=2"]).recipe.network.alpha == 2
    assert messages(child, ["network.dim=0"]) == [
        "recipes/char.toml (extends recipes/common/base.toml): network.dim: must be at least 1 (got 0)"
    ]


def test_editing_a_base_changes_the_recipe_hash(base: Path) -> None:
    child = write("recipes/char.toml", 'extends = "common/base.toml"\nname = "C"\n')
    before = load_recipe(child).section_hash()
    write("recipes/common/base.toml", BASE.replace("epochs = 3", "epochs = 4"))
    assert load_recipe(child).section_hash() != before


def test_a_file_without_extends_loads_as_before(project: Project) -> None:
    loaded = load_recipe(project.recipe)
    assert loaded.display == "recipe.toml"
    assert loaded.sources == (project.recipe,)
    assert loaded.sweep_values == {}
    assert [b.recipe for b in load_builds(project.recipe)] == [loaded.recipe]


def test_check_on_the_command_line(base: Path, project: Project) -> None:
    write("recipes/char.toml", 'extends = "common/base.toml"\nname = "Char_v1"\n')
    result = run_lorabuild("check", "recipes/char.toml", cwd=project.root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("ok: recipes/char.toml")


# --- the shipped batch recipes (recipes/batch/) --------------------------------------------------

BATCH = REPO / "recipes" / "batch"
# Files under shared/ are bases that recipes extend, not recipes of their own.
BATCH_RECIPES = sorted(p for p in BATCH.rglob("*.toml") if "shared" not in p.relative_to(BATCH).parts)


def batch_project(root: Path) -> None:
    """Copy recipes/ into ``root`` and create the model and images every batch build names."""
    shutil.copytree(REPO / "recipes", root / "recipes")
    (root / "vendor" / "sd-scripts").mkdir(parents=True)
    for recipe in BATCH_RECIPES:
        for loaded in load_builds(recipe.relative_to(REPO)):
            if not loaded.recipe.model.base.exists():
                write_checkpoint(loaded.recipe.model.base, "sd15")
            for subset in loaded.recipe.dataset.subsets:
                for i, size in enumerate([(512, 512), (512, 768), (768, 512), (1024, 1024)]):
                    image = write_image(subset.source / f"{i:03d}.png", size, blue=40 + 10 * i)
                    image.with_suffix(".txt").write_text(CAPTIONS[i], encoding="utf-8")


@pytest.mark.usefixtures("gpu_packages")
def test_every_batch_recipe_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lorabuild.kohya import options as kohya_options
    from lorabuild.stages.check import check_loaded, require_plan
    from lorabuild.stages.compile import compile_build

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LORABUILD_SD_SCRIPTS", str(tmp_path / "vendor" / "sd-scripts"))
    batch_project(tmp_path)
    names = []
    for recipe in BATCH_RECIPES:
        for loaded in load_builds(recipe.relative_to(REPO)):
            assert loaded.sources[-1] == Path("recipes/batch/shared/base.toml")
            plan = require_plan(check_loaded(loaded, Path("build")))
            compile_build(plan)
            config = toml.loads((plan.build_dir / "config.toml").read_text(encoding="utf-8"))
            flat = {k: v for section in config.values() for k, v in section.items()}
            assert [
                m for k, v in flat.items() if (m := kohya_options.check_config_value(plan.script, k, v))
            ] == []
            names.append(plan.name)
    # three recipes that extend one base, and a sweep of four
    assert sorted(names) == sorted(
        ["Kazari_batch", "Kuroko_batch", "Saten_batch"]
        + [f"Kazari_batch-dim{d}-lr{lr}" for d in (32, 64) for lr in ("5e-5", "1e-4")]
    )


def test_the_batch_kazari_is_the_tutorial_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    tutorial = load_recipe(Path("recipes/kazari.toml")).recipe.model_dump()
    batch = load_recipe(Path("recipes/batch/kazari.toml")).recipe.model_dump()
    assert batch["model"]["base"] == tutorial["model"]["base"] == Path("models/ACertainModel.ckpt")
    assert batch["dataset"]["subsets"][0]["source"] == Path("data/kazari")
    for key in ("name", "title"):
        del tutorial[key], batch[key]
    assert batch == tutorial
