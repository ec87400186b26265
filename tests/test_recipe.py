"""Loading recipes: TOML, overrides, path resolution and the wording of schema errors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from lorabuild.problems import RecipeError, format_problem
from lorabuild.recipe.keys import _model_of
from lorabuild.recipe.load import apply_override, cwd_relative, load_recipe, parse_value
from lorabuild.recipe.schema import Recipe
from lorabuild.render import toml as tomlout
from tests.conftest import RECIPE, Project


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


# --- every constraint's message states the constraint ---------------------------------------------


def _constraints(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, object, object, str]]:
    """``(key, key of the message, bad value, constraint, words the message must hold)`` for every constraint.

    Found from the models themselves (pydantic's field metadata, ``Literal`` choices, item
    constraints of lists), so a constraint added to the schema is tested without editing this.
    """
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        inner = _model_of(info.annotation)
        if inner is not None:
            is_list = get_origin(info.annotation) is list
            yield from _constraints(inner, f"{key}[0]." if is_list else f"{key}.")
        items = [(key, info.metadata, False)]
        if get_origin(info.annotation) is list:
            (item,) = get_args(info.annotation)
            if get_origin(item) is Annotated:
                items += [(key, m.metadata, True) for m in get_args(item)[1:] if isinstance(m, FieldInfo)]
        for where, metadata, in_list in items:
            for constraint in metadata:
                case = _violation(constraint, info.annotation, list(metadata))
                if case is not None:
                    bad, text = case
                    yield (
                        where,
                        f"{where}[0]" if in_list else where,
                        [bad] if in_list else bad,
                        constraint,
                        text,
                    )
        union = get_origin(info.annotation) in (Union, UnionType)
        members = (
            [a for a in get_args(info.annotation) if a is not type(None)] if union else [info.annotation]
        )
        literals = [m for m in members if get_origin(m) is Literal]
        if literals and not any(m in (str, Path) or get_origin(m) is Annotated for m in members):
            choices = [c for m in literals for c in get_args(m)]
            bad = 99 if all(isinstance(c, int) for c in choices) else "not-a-choice"
            yield key, key, bad, f"Literal{choices}", " ".join(str(c) for c in choices)


def _violation(constraint: object, annotation: object, metadata: list[object]) -> tuple[object, str] | None:
    """A value that breaks ``constraint`` (and only it) and the words a message about it must hold."""
    text_field = "str" in str(annotation) and "list" not in str(annotation)
    step: Any = next((m.multiple_of for m in metadata if isinstance(m, annotated_types.MultipleOf)), 1)
    if isinstance(constraint, annotated_types.Ge):
        return constraint.ge - step, f"at least {constraint.ge}"  # type: ignore[operator]
    if isinstance(constraint, annotated_types.Gt):
        return constraint.gt, f"greater than {constraint.gt}"
    if isinstance(constraint, annotated_types.Le):
        return constraint.le + step, f"at most {constraint.le}"  # type: ignore[operator]
    if isinstance(constraint, annotated_types.Lt):
        return constraint.lt, f"less than {constraint.lt}"
    if isinstance(constraint, annotated_types.MultipleOf):
        step = constraint.multiple_of
        return step * 1000 + 1, f"multiple of {step}"  # type: ignore[operator]
    if isinstance(constraint, annotated_types.MinLen):
        if text_field:
            short = "a" * (constraint.min_length - 1)
            return short, "not be empty" if not short else f"at least {constraint.min_length} characters"
        return [], f"at least {constraint.min_length} item(s)"
    if isinstance(constraint, annotated_types.MaxLen):
        if text_field:
            return "a" * (constraint.max_length + 1), f"at most {constraint.max_length} characters"
        return [1] * (constraint.max_length + 1), f"at most {constraint.max_length} item(s)"
    pattern = getattr(constraint, "pattern", None)
    if isinstance(pattern, str):
        bad = "no good: value!"
        assert not re.search(pattern, bad)
        return bad, pattern
    return None


CONSTRAINTS = list(_constraints(Recipe))


def test_the_schema_has_constraints_to_check() -> None:
    """Guard the discovery: the walk must find the constraints known to be there."""
    keys = {key for key, *_ in CONSTRAINTS}
    assert {
        "name",
        "dataset.subsets[0].repeats",
        "evaluate.seeds",
        "launch.slurm.mem",
        "evaluate.width",
    } <= keys
    assert "dataset.subsets[0].captions.autotag.general_threshold" in keys
    assert len(CONSTRAINTS) > 60


@pytest.mark.parametrize(
    ("key", "at", "bad", "constraint", "text"),
    CONSTRAINTS,
    ids=[f"{key}-{constraint}" for key, _, _, constraint, _ in CONSTRAINTS],
)
def test_every_constraint_message_states_the_constraint(
    project: Project, key: str, at: str, bad: object, constraint: object, text: str
) -> None:
    name = key.rsplit(".", 1)[-1]
    # A table that the fixture leaves out is added whole (its required keys included).
    if key.startswith("dataset.subsets[0].captions.autotag."):
        setting = (
            f'dataset.subsets[0].captions.autotag={{ model_dir = "tagger", {name} = {tomlout.value(bad)} }}'
        )
    elif key.startswith("captions.autotag."):
        setting = f'captions.autotag={{ model_dir = "tagger", {name} = {tomlout.value(bad)} }}'
    else:
        setting = f"{key}={tomlout.value(bad)}"
    found = messages(project.recipe, [setting])
    here = [m for m in found if m.startswith(f"recipe.toml: {at}: ")]
    assert here, found
    (message,) = here
    if isinstance(constraint, str):  # Literal choices: each one is listed
        assert all(choice in message for choice in text.split(" ")), message
    else:
        assert text in message, message
    if "not be empty" not in text:
        assert "(got " in message, message


def test_a_long_name_states_the_limit(project: Project) -> None:
    assert messages(project.recipe, ["name=" + "a" * 300]) == [
        'recipe.toml: name: must be at most 100 characters long (got 300 characters: "' + "a" * 56 + "...)"
    ]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("optimizer.lr=inf", "optimizer.lr: must be a finite number (got inf)"),
        ("network.alpha=nan", "network.alpha: must be a finite number (got nan)"),
        ("network.args={ a = inf }", "network.args.a: must be a finite number (got inf)"),
        (
            "optimizer.args={ betas = [0.9, -inf] }",
            "optimizer.args.betas[1]: must be a finite number (got -inf)",
        ),
        ("kohya.max_grad_norm=inf", "kohya.max_grad_norm: must be a finite number (got inf)"),
    ],
)
def test_non_finite_numbers_are_refused(project: Project, setting: str, message: str) -> None:
    """TOML writes inf and nan, which kohya's toml parser cannot read back; compile used to crash on them."""
    assert messages(project.recipe, [setting]) == [f"recipe.toml: {message}"]


# --- text that ends up in a caption or a prompt line: one line, no control characters ---------------

CAPTION_KEYS = [
    ("dataset.subsets[0].trigger={}", "dataset.subsets[0].trigger"),
    ("captions.replace={{ smile = {} }}", "captions.replace.smile"),
    ("captions.replace={{ {} = 'smile' }}", "captions.replace"),
    ("captions.remove=[{}]", "captions.remove[0]"),
    ("captions.move_to_front=[{}]", "captions.move_to_front[0]"),
    ("captions.move_to_end=[{}]", "captions.move_to_end[0]"),
    (
        "dataset.subsets[0].captions={{ replace = {{ smile = {} }} }}",
        "dataset.subsets[0].captions.replace.smile",
    ),
    (
        "captions.autotag={{ model_dir = 'tagger', undesired_tags = [{}] }}",
        "captions.autotag.undesired_tags[0]",
    ),
    ("evaluate.prompts=[{}]", "evaluate.prompts[0]"),
    ("evaluate.negative_prompt={}", "evaluate.negative_prompt"),
]
BREAKS = ["\n", "\r", "\r\n", "\t", "\0", "\x0b", "\x1e", "\x7f", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize(("template", "key"), CAPTION_KEYS)
@pytest.mark.parametrize("char", BREAKS, ids=[f"U+{ord(c[-1]):04X}" for c in BREAKS])
def test_caption_and_prompt_text_refuses_line_breaks_and_control_characters(
    project: Project, template: str, key: str, char: str
) -> None:
    """kohya reads only a caption file's first line: ``uiharu\\nkazari`` trained every image on "uiharu"."""
    value = f"uiharu{char}kazari"
    found = messages(project.recipe, [template.format(tomlout.value(value))])
    (message,) = [m for m in found if m.startswith(f"recipe.toml: {key}")]
    assert "must be one line of text without control characters" in message
    assert f"U+{ord(char[0]):04X}) at position 6" in message


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        (
            "uiharu, kazari",
            "must be one caption tag, without a comma (got 'uiharu, kazari'): kohya splits captions into tags "
            "at commas; write it with spaces or underscores, e.g. uiharu_kazari",
        ),
        (
            " uiharu",
            "must not start or end with a space (got ' uiharu'): each caption tag is trimmed, so the "
            "captions would hold it without them",
        ),
        ("uiharu ", "must not start or end with a space (got 'uiharu ')"),
    ],
)
def test_trigger_must_be_one_tag(project: Project, trigger: str, message: str) -> None:
    """The recipe already prepends the trigger: the advice was to set prepend_trigger = true."""
    (found,) = messages(project.recipe, [f"dataset.subsets[0].trigger={tomlout.value(trigger)}"])
    assert found.startswith(f"recipe.toml: dataset.subsets[0].trigger: {message}")
    assert "prepend_trigger" not in found


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "optimizer.args={ 'a=b' = 1 }",
            "optimizer.args: key 'a=b' must be a name without '=': kohya splits each optimizer_args item at '='",
        ),
        (
            "optimizer.args={ decouple = 'x=y' }",
            "optimizer.args: decouple = 'x=y': a value must not contain '=': kohya splits each optimizer_args "
            "item at every '=' and stops on a second one",
        ),
        (
            "network.args={ 'a=b' = 1 }",
            "network.args: key 'a=b' must be a name without '=': kohya splits each network_args item at the "
            "first '=' into key and value",
        ),
    ],
)
def test_optimizer_and_network_args_split_at_equals(project: Project, setting: str, message: str) -> None:
    assert messages(project.recipe, [setting]) == [f"recipe.toml: {message}"]


@pytest.mark.parametrize("key", ["model.base", "model.vae", "network.weights", "model.tokenizer_cache_dir"])
def test_a_path_cannot_hold_nul(project: Project, key: str) -> None:
    """It crashed the check (ValueError: embedded null byte) for the paths the check resolves."""
    (found,) = messages(project.recipe, [f'{key}="a\\u0000b"'])
    assert found.startswith(
        f"recipe.toml: {key}: must not contain a NUL character (U+0000), which no file path can hold (got '"
    )
    assert found.endswith("a\\x00b')")


# --- --set: paths are relative to the current folder, wherever they are in the value --------------


@pytest.fixture
def elsewhere(project: Project, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The recipe in recipes/, the user in work/: recipe paths are relative to recipes/, --set paths to work/."""
    (project.root / "recipes").mkdir()
    text = RECIPE.replace('"models/', '"../models/').replace('"data/', '"../data/')
    (project.root / "recipes" / "r.toml").write_text(text, encoding="utf-8")
    (project.root / "work").mkdir()
    monkeypatch.chdir(project.root / "work")
    return Path("../recipes/r.toml")


@pytest.mark.parametrize(
    "setting",
    [
        'dataset.subsets=[{ source = "../data/char", trigger = "x" }]',
        'dataset.subsets[0]={ source = "../data/char" }',
        'dataset.subsets[0].source="../data/char"',
        "dataset.subsets[0].source=../data/char",
        'dataset={ subsets = [{ source = "../data/char" }] }',
    ],
)
def test_set_paths_are_relative_to_the_current_folder_anywhere_in_the_value(
    project: Project, elsewhere: Path, setting: str
) -> None:
    """README: "in --set, [relative paths are relative] to the current folder" — for a path inside
    an array of tables too, not only for a --set of the path key itself."""
    recipe = load_recipe(elsewhere, [setting]).recipe
    assert recipe.dataset.subsets[0].source == project.root / "data" / "char"


def test_set_paths_nested_in_tables(project: Project, elsewhere: Path) -> None:
    recipe = load_recipe(
        elsewhere,
        [
            'model={ base = "../models/base.safetensors", vae = "vae" }',
            'launch.deepspeed={ offload_param_nvme_path = "nvme" }',
            'captions.autotag={ model_dir = "tagger" }',
        ],
    ).recipe
    work = project.root / "work"
    assert recipe.model.base == project.root / "models" / "base.safetensors"
    assert recipe.model.vae == work / "vae"
    assert recipe.launch.deepspeed is not None
    assert recipe.launch.deepspeed.offload_param_nvme_path == work / "nvme"
    assert recipe.captions.autotag is not None and recipe.captions.autotag.model_dir == work / "tagger"


@pytest.mark.parametrize("choice", ["grid", "none"])
def test_set_keeps_a_choice_that_is_not_a_path(project: Project, elsewhere: Path, choice: str) -> None:
    assert load_recipe(elsewhere, [f"install.preview={choice}"]).recipe.install.preview == choice
    assert load_recipe(elsewhere, [f"install={{ preview = '{choice}' }}"]).recipe.install.preview == choice


def test_command_lines_that_run_elsewhere_get_absolute_paths(project: Project, elsewhere: Path) -> None:
    """The Makefile and the sbatch script pass --set on to commands run in other folders."""
    data = (project.root / "data" / "char").as_posix()
    assert cwd_relative('dataset.subsets=[{ source = "../data/char" }]') == (
        f'dataset.subsets=[{{ source = "{data}" }}]'
    )
    assert cwd_relative("dataset.subsets[0].source=../data/char") == f'dataset.subsets[0].source="{data}"'
    assert cwd_relative("training.epochs=4") == "training.epochs=4"
    assert cwd_relative(f"model.base={json.dumps(data)}") == f"model.base={json.dumps(data)}"
    assert cwd_relative("install.preview=grid") == "install.preview=grid"


def test_a_set_value_that_is_not_utf8_is_refused(project: Project) -> None:
    """Bytes that are not UTF-8 on the command line reach Python as lone surrogates; staging the
    caption crashed on them with UnicodeEncodeError."""
    assert messages(project.recipe, ["dataset.subsets[0].trigger=a\udcffb"]) == [
        "--set: dataset.subsets[0].trigger: is not UTF-8 text: byte 0xFF at position 1 of the value; "
        "write it in UTF-8"
    ]


def test_an_environment_name_the_scripts_cannot_set(project: Project) -> None:
    """The schema asks the scripts' own quoting (quoting.env_name), so check and compile agree."""
    assert messages(project.recipe, ['launch.env={ "1A" = "x" }']) == [
        "recipe.toml: launch.env: '1A' is not an environment variable name that bash and PowerShell scripts "
        "can set: use ASCII letters, digits and _ only, not starting with a digit"
    ]
