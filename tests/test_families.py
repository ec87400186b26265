"""The family seam: each family module says everything lorabuild does differently for its models.

A family is its module (``lorabuild/kohya/families/<name>.py``) plus its test model (a header in
``tests/conftest.py``'s ``FAMILY_KEYS``). These tests hold every module to the whole of
:class:`~lorabuild.kohya.families.Family`, test each family's own rules, and show with a made-up
family that the rest of lorabuild follows the registry without knowing any family by name.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import get_args

import pytest

from lorabuild.kohya import families
from lorabuild.kohya import options as kohya_options
from lorabuild.kohya.animainfer import AnimaInference
from lorabuild.kohya.families import Family, ModelHeader
from lorabuild.kohya.families.base import KOHYA_CACHE, SD_NETWORK_MODULES, Default
from lorabuild.kohya.fluxinfer import FluxInference
from lorabuild.kohya.genimg import GenImg
from lorabuild.kohya.gridrender import GridImage, GridJob
from lorabuild.kohya.hunyuaninfer import HunyuanInference
from lorabuild.kohya.luminainfer import LuminaInference
from lorabuild.kohya.options import SCRIPTS, options
from lorabuild.kohya.prompts import PromptLine
from lorabuild.kohya.sd3infer import Sd3Inference
from lorabuild.plan.summary import plan_summary
from lorabuild.probe.modelfile import family_from_names, probe_model
from lorabuild.problems import Problem, format_problem, warning
from lorabuild.recipe import schema
from lorabuild.recipe.load import load_recipe
from lorabuild.recipe.schema import Recipe
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.compile import compile_build
from lorabuild.stages.install import card
from tests.conftest import FAMILY_KEYS, Project, write_checkpoint, write_safetensors

MODULES = sorted(m.name for m in pkgutil.iter_modules(families.__path__) if m.name != "base")

# The webui's `sd version` values (extensions-builtin/Lora/network.py SdVersion) and Forge's Flux.
SD_VERSIONS = {"SD1", "SD2", "SDXL", "SD3", "Flux", "Unknown"}


def test_the_registry_lists_every_family_module_once() -> None:
    registered = [f.name for f in families.ALL]
    assert sorted(registered) == MODULES and len(set(registered)) == len(registered)
    for name in MODULES:
        module = importlib.import_module(f"lorabuild.kohya.families.{name}")
        assert module.FAMILY is families.get(name)


def test_the_recipe_schema_offers_exactly_the_registered_families() -> None:
    """recipe/ sits below kohya/, so the schema spells the names out; this holds them equal."""
    assert get_args(schema.Family) == families.names()


@pytest.mark.parametrize("family", families.ALL, ids=lambda f: f.name)
def test_every_family_gives_every_field(family: Family) -> None:
    assert {f.name for f in fields(Family)} == set(vars(family))
    assert family.name and family.label
    recipe_modules = set(get_args(schema.NetworkSection.model_fields["module"].annotation))
    assert family.network_modules and set(family.network_modules) <= recipe_modules
    assert family.bucket_steps_multiple > 0 and 64 % family.bucket_steps_multiple == 0
    assert family.sd_version in SD_VERSIONS
    # gen_img is told the family by a flag; flux_minimal_inference.py by --model_type; the others
    # (sd3_minimal_inference.py, anima_minimal_inference.py, lumina_minimal_inference.py...) are their
    # family's own script.
    if isinstance(family.grid, GenImg):
        assert family.grid.flags and family.model_type is None
    elif isinstance(family.grid, FluxInference):
        assert family.model_type in ("flux", "chroma")
    else:
        assert isinstance(family.grid, Sd3Inference | AnimaInference | HunyuanInference | LuminaInference)
        assert family.model_type is None
    assert all(callable(rule) for rule in family.rules)


MERGES_LORA_AT_LOAD = (AnimaInference, HunyuanInference)
"""The renderers whose script merges the LoRA into the model as it loads: a process per LoRA setting."""


@pytest.mark.parametrize("family", families.ALL, ids=lambda f: f.name)
def test_every_renderer_splits_a_grid_job_into_its_processes(family: Family) -> None:
    """One protocol: the grid stage asks every renderer to split; most render the job whole."""

    def image(multipliers: tuple[float, ...], name: str) -> GridImage:
        line = PromptLine(
            prompt="a", width=64, height=64, seed=1, steps=4, cfg_scale=3.5, multipliers=multipliers
        )
        return GridImage(line, name)

    job = GridJob(
        images=(image((0.0, 0.0), "base.png"), image((0.5, 0.0), "e1.png"), image((0.0, 1.0), "e2.png")),
        network_files=("output/e1.safetensors", "output/e2.safetensors"),
        script=f"/k/{family.grid.SCRIPT}",
        workdir="grid/.render",
        outdir="grid/.render/out",
        cells_dir=Path("/b/grid/cells"),
        cwd=Path("/b"),
        python="py",
        env={},
    )
    parts = family.grid.split(job)
    if isinstance(family.grid, MERGES_LORA_AT_LOAD):
        assert [p.network_files for p in parts] == [
            (),
            ("output/e1.safetensors",),
            ("output/e2.safetensors",),
        ]
        assert [[i.line.multipliers for i in p.images] for p in parts] == [[()], [(0.5,)], [(1.0,)]]
    else:
        assert parts == (job,)
    assert [i.name for p in parts for i in p.images] == ["base.png", "e1.png", "e2.png"]


@pytest.mark.parametrize("family", families.ALL, ids=lambda f: f.name)
def test_every_family_has_its_scripts_in_the_option_data(family: Family) -> None:
    """Every compiled option is checked against kohya's; a script missing there is unchecked."""
    for script in (family.train_script, family.grid.SCRIPT):
        assert script in SCRIPTS, (
            f"add {script} to SCRIPTS in tools/extract_kohya_options.py and kohya/options.py"
        )
        # Raises ValueError ("no kohya options recorded") when the data file lacks the script.
        assert options(script)


@pytest.mark.parametrize("family", families.ALL, ids=lambda f: f.name)
def test_every_family_is_told_from_its_test_model(family: Family, tmp_path: Path) -> None:
    assert family.name in FAMILY_KEYS, "add a header of the family's model to tests/conftest.py FAMILY_KEYS"
    header = ModelHeader(tensor_names=tuple(FAMILY_KEYS[family.name]))
    assert [f.name for f in families.ALL if f.recognise(header)] == [family.name]
    assert family_from_names(FAMILY_KEYS[family.name]) == family.name
    assert probe_model(write_checkpoint(tmp_path / "m.safetensors", family.name)).family == family.name


@pytest.mark.parametrize(
    ("pipeline", "folders", "width", "expected"),
    [
        ("StableDiffusionXLPipeline", ("text_encoder", "text_encoder_2"), 768, "sdxl"),
        ("StableDiffusionPipeline", ("text_encoder", "text_encoder_2"), 768, "sdxl"),
        ("StableDiffusionPipeline", ("text_encoder",), 1024, "sd2"),
        ("StableDiffusionPipeline", ("text_encoder",), 768, "sd15"),
        ("StableDiffusionPipeline", ("text_encoder",), 512, None),
    ],
)
def test_diffusers_folders_are_told_apart(
    tmp_path: Path, pipeline: str, folders: tuple[str, ...], width: int, expected: str | None
) -> None:
    for folder in folders:
        (tmp_path / folder).mkdir()
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    (tmp_path / "text_encoder" / "config.json").write_text(json.dumps({"hidden_size": width}))
    assert probe_model(tmp_path).family == expected


def recipe(project: Project, *overrides: str) -> Recipe:
    return load_recipe(project.recipe, list(overrides)).recipe


def said(problems: Iterator[Problem]) -> list[str]:
    return [format_problem(p) for p in problems]


def test_sdxl_ignores_clip_skip(project: Project) -> None:
    from lorabuild.kohya.families import sdxl

    assert said(sdxl.clip_skip_ignored(recipe(project))) == [
        "model.clip_skip: SDXL models ignore clip_skip (kohya only warns, so the setting "
        "would silently do nothing): remove it"
    ]


def test_sdxl_vae_in_fp16(project: Project) -> None:
    from lorabuild.kohya.families import sdxl

    assert said(sdxl.fp16_vae(recipe(project))) == []  # mixed_precision = "no"
    assert said(sdxl.fp16_vae(recipe(project, "training.mixed_precision=fp16"))) == [
        "training.no_half_vae: warning: SDXL's VAE overflows in fp16 (kohya stops with "
        '"NaN detected in latents"): set training.no_half_vae = true or training.mixed_precision = "bf16"'
    ]
    assert (
        said(sdxl.fp16_vae(recipe(project, "training.mixed_precision=fp16", "training.no_half_vae=true")))
        == []
    )


def test_sd2_clip_skip(project: Project) -> None:
    from lorabuild.kohya.families import sd2

    assert said(sd2.clip_skip(recipe(project))) == [
        "model.clip_skip: warning: SD2 models are not trained with clip_skip "
        "(kohya: unexpected results): set model.clip_skip = 1 or remove it"
    ]
    assert said(sd2.clip_skip(recipe(project, "model.clip_skip=1"))) == []


def test_a_network_the_family_cannot_train_is_refused(project: Project) -> None:
    only_lora = replace(families.get("sd15"), network_modules={"lora": ("networks.lora", None)})
    assert said(only_lora.problems(recipe(project))) == []
    assert said(only_lora.problems(recipe(project, "network.module=loha"))) == [
        'network.module: "loha" cannot train SD1.x models: use "lora"'
    ]


# --- a family added in one place ------------------------------------------------------------------


def fake_rule(recipe: Recipe) -> Iterator[Problem]:
    yield warning("network.dim", "the fake family's own rule ran")


FAKE = Family(
    name="fake",
    label="Fake-1",
    train_script="fake_train_network.py",
    network_modules=SD_NETWORK_MODULES,
    recognise=lambda header: header.has_prefix(("fake_model.",)),
    v2=False,
    bucket_steps_multiple=64,
    vae_overflows_in_fp16=True,
    grid=GenImg(flags=("--fake",)),
    sd_version="Flux",
    rules=(fake_rule,),
    model_files=(),
    tokenizers=("openai/clip-vit-large-patch14",),
    tokenizer_cache=KOHYA_CACHE,
    model_type=None,
    defaults=(Default("training.seed", 7, "the fake family's seed"),),
    memory=(),
)


def test_a_new_family_needs_only_its_module(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered and recognised, a family's script, rules, summary, grid and card follow from it alone."""
    monkeypatch.setattr(families, "ALL", (*families.ALL, FAKE))
    # Its script's options, as tools/extract_kohya_options.py would record them: train_network.py's.
    real_script = kohya_options._script
    monkeypatch.setattr(
        kohya_options, "_script", lambda s: real_script("train_network.py" if s == FAKE.train_script else s)
    )
    write_safetensors(project.root / "models" / "base.safetensors", ["fake_model.blocks.0.weight"])
    checked = check(project.recipe, ["training.mixed_precision=fp16"], project.build)
    assert [format_problem(p) for p in checked.problems] == [
        "recipe.toml: network.dim: warning: the fake family's own rule ran"
    ]
    plan = require_plan(checked)
    assert (plan.family, plan.script) == ("fake", "fake_train_network.py")
    assert plan.config.training.seed == 7  # its default, for a recipe that leaves the seed out
    assert "models/base.safetensors: Fake-1 -> kohya fake_train_network.py" in plan_summary(plan)
    compile_build(plan)
    assert '"$SD_SCRIPTS"/fake_train_network.py' in (plan.build_dir / "train.sh").read_text(encoding="utf-8")
    assert json.loads((plan.build_dir / "plan.json").read_text(encoding="utf-8"))["family"] == "fake"
    settings = plan.grid
    assert settings.no_half_vae  # its VAE overflows in fp16
    argv = families.get(settings.family).grid.argv(
        settings, script="g", outdir="o", prompt_file="p", network_files=[]
    )
    assert argv[2] == "--fake"
    assert card(plan, checked.loaded.recipe, 3, 1.0, "0" * 64)["sd version"] == "Flux"


@pytest.mark.parametrize(
    ("name", "grid", "tokenizers"),
    [
        (
            "flux",
            "the FLUX grid (flux_minimal_inference.py)",
            "openai/clip-vit-large-patch14 and google/t5-v1_1-xxl",
        ),
        ("sd3", "the SD3 grid (sd3_minimal_inference.py)", "openai/clip-vit-large-patch14, laion/"),
        (
            "hunyuan",
            "the HunyuanImage grid (hunyuan_image_minimal_inference.py)",
            "Qwen/Qwen2.5-VL-7B-Instruct and google/byt5-small",
        ),
    ],
)
def test_an_offline_grid_without_a_hub_cache_is_said(name: str, grid: str, tokenizers: str) -> None:
    """The grid scripts that take no tokenizer folder share one rule (families.flux.grid_tokenizers_rule)."""
    module = importlib.import_module(f"lorabuild.kohya.families.{name}")
    recipe = Recipe.model_validate(
        {
            "name": "x",
            "model": {"base": "m.safetensors"},
            "dataset": {"subsets": [{"source": "d", "trigger": "t"}]},
            "evaluate": {"prompts": ["a"]},
            "launch": {"env": {"HF_HUB_OFFLINE": "1"}},
        }
    )
    (said,) = [p.message for p in module.tokenizers_offline(recipe)]
    assert said.startswith(f"has HF_HUB_OFFLINE but no HF_HOME: {grid} takes no tokenizer folder and reads ")
    assert tokenizers in said and said.endswith("set [launch] env HF_HOME to a cache that has them")
    home = recipe.model_copy(
        update={"launch": recipe.launch.model_copy(update={"env": {"HF_HUB_OFFLINE": "1", "HF_HOME": "h"}})}
    )
    assert list(module.tokenizers_offline(home)) == []
