"""Loading recipes: TOML, overrides, path resolution and the wording of schema errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorabuild.problems import RecipeError, format_problem
from lorabuild.recipe.load import apply_override, load_recipe, parse_value
from tests.conftest import Project


def messages(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides or [])
    return [format_problem(p) for p in info.value.problems]


def test_relative_paths_resolve_against_the_recipe_file(project: Project) -> None:
    nested = project.root / "recipes"
    nested.mkdir()
    text = project.recipe.read_text().replace('"models/', '"../models/').replace('"data/', '"../data/')
    (nested / "r.toml").write_text(text)
    recipe = load_recipe(Path("recipes/r.toml")).recipe
    assert recipe.model.base == Path("models/base.safetensors")
    assert recipe.dataset.subsets[0].source == Path("data/char")
    assert recipe.model.base.is_file()


def test_defaults_fill_unset_tables(project: Project) -> None:
    recipe = load_recipe(project.recipe).recipe
    assert recipe.network.module == "lora"
    assert recipe.training.save_every_n_epochs == 1
    assert recipe.captions.prepend_trigger is True
    assert recipe.dataset.subsets[0].caption_extension == ".txt"


def test_square_resolution_from_one_number(project: Project) -> None:
    recipe = load_recipe(project.recipe, ["dataset.resolution=768"]).recipe
    assert recipe.dataset.resolution == (768, 768)


def test_repeats_below_one_names_file_and_key(project: Project) -> None:
    assert messages(project.recipe, ["dataset.subsets[0].repeats=0"]) == [
        "recipe.toml: dataset.subsets[0].repeats: must be at least 1 (got 0)"
    ]


def test_unknown_key_suggests_the_right_one(project: Project) -> None:
    assert messages(project.recipe, ["network.dimm=4"]) == [
        "recipe.toml: network.dimm: unknown key (did you mean 'dim'?)"
    ]


def test_unknown_table(project: Project) -> None:
    assert messages(project.recipe, ["trainning.epochs=4"]) == [
        "recipe.toml: trainning: unknown key (did you mean 'training'?)"
    ]


def test_choice_error_lists_choices_and_suggests(project: Project) -> None:
    assert messages(project.recipe, ["training.attention=xformer"]) == [
        "recipe.toml: training.attention: must be one of 'xformers', 'sdpa' or 'none' (got \"xformer\") "
        "(did you mean 'xformers'?)"
    ]


def test_wrong_type(project: Project) -> None:
    assert messages(project.recipe, ["model.clip_skip=two"]) == [
        'recipe.toml: model.clip_skip: must be a whole number (got "two")'
    ]


def test_every_problem_at_once(project: Project) -> None:
    found = messages(project.recipe, ["dataset.batch_size=0", "network.dim=0", "training.epochs=0"])
    assert len(found) == 3
    assert {f.split(": ")[1] for f in found} == {"dataset.batch_size", "network.dim", "training.epochs"}


def test_missing_required_key(project: Project) -> None:
    project.recipe.write_text(project.recipe.read_text().replace('name = "Test_v1"\n', ""))
    assert messages(project.recipe) == ["recipe.toml: name: is required"]


def test_name_must_be_a_file_name(project: Project) -> None:
    (msg,) = messages(project.recipe, ["name=a/b"])
    assert msg.startswith("recipe.toml: name: must be usable as a file name")


def test_warmup_steps_forms(project: Project) -> None:
    assert load_recipe(project.recipe, ["optimizer.warmup_steps='5%'"]).recipe.optimizer.warmup_steps == "5%"
    assert load_recipe(project.recipe, ["optimizer.warmup_steps=0.1"]).recipe.optimizer.warmup_steps == 0.1
    assert load_recipe(project.recipe, ["optimizer.warmup_steps=50"]).recipe.optimizer.warmup_steps == 50
    (msg,) = messages(project.recipe, ["optimizer.warmup_steps=abc"])
    assert "percentage" in msg


def test_invalid_toml_reports_line(project: Project) -> None:
    project.recipe.write_text("name = \n")
    (msg,) = messages(project.recipe)
    assert msg.startswith("recipe.toml: is not valid TOML:") and "line 1" in msg


def test_missing_file(tmp_path: Path) -> None:
    assert messages(tmp_path / "nope.toml")[0].endswith("nope.toml: recipe file not found")


def test_non_utf8_recipe(project: Project) -> None:
    project.recipe.write_bytes('name = "初春"\n'.encode("gbk"))
    (msg,) = messages(project.recipe)
    assert "is not UTF-8" in msg


def test_utf8_bom_is_accepted(project: Project) -> None:
    project.recipe.write_bytes(b"\xef\xbb\xbf" + project.recipe.read_bytes())
    assert load_recipe(project.recipe).recipe.name == "Test_v1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4", 4),
        ("1e-4", 1e-4),
        ("true", True),
        ("[768, 512]", [768, 512]),
        ('"a b"', "a b"),
        ("lion", "lion"),
    ],
)
def test_override_values_parse_as_toml(text: str, expected: object) -> None:
    assert parse_value(text) == expected


def test_override_creates_tables_and_indexes_lists() -> None:
    doc: dict[str, object] = {"dataset": {"subsets": [{"repeats": 1}]}}
    assert apply_override(doc, "dataset.subsets[0].repeats=3") is None
    assert apply_override(doc, "kohya.noise_offset=0.05") is None
    assert doc == {"dataset": {"subsets": [{"repeats": 3}]}, "kohya": {"noise_offset": 0.05}}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("epochs", "expected dotted.key=value, e.g. --set training.epochs=4"),
        ("dataset.subsets[3].repeats=1", "there is no item [3] to override"),
    ],
)
def test_malformed_overrides(project: Project, item: str, message: str) -> None:
    (msg,) = messages(project.recipe, [item])
    assert msg.startswith("--set: ") and msg.endswith(message)
