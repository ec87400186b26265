"""The pre-flight rules: one test per rule, asserting the exact line a user reads.

Each rule's tests check that the clean ``project`` fixture draws nothing from it, then break
the recipe (``--set`` overrides, or edits to the recipe text for path keys) or the files around
it and assert every problem the rule yields, rendered as ``lorabuild check`` prints it
(``recipe.toml: KEY: MESSAGE``; :func:`~lorabuild.problems.format_problem` marks warnings with
``warning:``, so the string also pins the severity). Rules run one at a time, so another
rule's problems never hide or add to the one under test. Every test names its rule with
:func:`covers`, and :func:`test_every_rule_has_a_test` fails when a rule is added without one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from lorabuild import rules
from lorabuild.plan.subsets import plan_subsets
from lorabuild.probe.environment import PACKAGES
from lorabuild.probe.facts import gather
from lorabuild.problems import Problem, format_problem
from lorabuild.recipe.load import load_recipe
from lorabuild.rules import captions, cutout, dataset, evaluate, launch, model, passthrough, pick, training
from tests.conftest import RECIPE, Project, write_checkpoint, write_image, write_safetensors
from tests.tiny_clip import EMBED, fake_clip, head_shapes, write_shapes

Rule = Callable[..., Iterable[Problem]]  # rules.Rule or rules.SubsetRule

# Package sets for the rules that look at what is installed (facts.packages): kohya's stack with
# nothing optional, and no stack at all (package checks are skipped on a machine that only plans).
NO_STACK: dict[str, bool] = dict.fromkeys(PACKAGES, False)
STACK: dict[str, bool] = {**NO_STACK, "accelerate": True, "torch": True}

COVERED: dict[str, list[str]] = {}
"""rule name -> the tests that exercise it (filled in by :func:`covers` at import time)."""


def covers(*rule_fns: Rule) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Mark a test as the test of ``rule_fns``."""

    def mark(test: Callable[..., None]) -> Callable[..., None]:
        for fn in rule_fns:
            COVERED.setdefault(fn.__name__, []).append(test.__name__)
        return test

    return mark


def found(
    project: Project,
    rule: Rule,
    *overrides: str,
    packages: Mapping[str, bool] | None = None,
) -> list[str]:
    """Every problem ``rule`` yields for the project's recipe, as ``lorabuild check`` prints it."""
    loaded = load_recipe(project.recipe, list(overrides))
    facts = gather(loaded.recipe, loaded.path, project.build)
    if packages is not None:
        facts = replace(facts, packages=packages)
    # As run_rules calls it: a subset rule gets the planned subsets, any other rule ignores them.
    registered = next(r for r in rules.RULES if r.__name__ == rule.__name__)
    subsets = plan_subsets(loaded.recipe, facts)
    return [format_problem(p.at(loaded.display)) for p in registered(loaded.recipe, facts, subsets)]


def edit_recipe(project: Project, old: str, new: str) -> None:
    """Replace ``old`` in the recipe text: for path keys, which ``--set`` makes absolute from the cwd."""
    path = project.root / project.recipe
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def add_subset(project: Project, table: str) -> None:
    """Append a ``[[dataset.subsets]]`` table to the recipe."""
    path = project.root / project.recipe
    path.write_text(path.read_text(encoding="utf-8") + "\n[[dataset.subsets]]\n" + table, encoding="utf-8")


def model_path(project: Project) -> Path:
    return project.root / "models" / "base.safetensors"


def test_clean_project_has_no_problems(project: Project) -> None:
    loaded = load_recipe(project.recipe)
    assert rules.run_rules(loaded.recipe, gather(loaded.recipe, loaded.path, project.build)) == []


def test_every_rule_has_a_test() -> None:
    assert set(COVERED) == {r.__name__ for r in rules.RULES}


# --- model -------------------------------------------------------------------------------------


@covers(model.model_exists)
def test_model_missing_or_not_a_model(project: Project) -> None:
    assert found(project, model.model_exists) == []
    model_path(project).rename(project.root / "models" / "moved.safetensors")
    assert found(project, model.model_exists) == [
        "recipe.toml: model.base: file or folder not found: models/base.safetensors"
    ]
    model_path(project).write_bytes(b"abc")
    assert found(project, model.model_exists) == [
        "recipe.toml: model.base: models/base.safetensors is not a model (unreadable header: file too short "
        "for a safetensors header): point model.base at a .safetensors or .ckpt checkpoint or a diffusers folder"
    ]
    (project.root / "models" / "folder").mkdir()
    edit_recipe(project, "models/base.safetensors", "models/folder")
    assert found(project, model.model_exists) == [
        "recipe.toml: model.base: models/folder is not a model (a folder without model_index.json): "
        "point model.base at a .safetensors or .ckpt checkpoint or a diffusers folder"
    ]


@covers(model.model_family)
def test_lora_file_given_as_base_model(project: Project) -> None:
    assert found(project, model.model_family) == []
    write_safetensors(model_path(project), ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"])
    assert found(project, model.model_family) == [
        "recipe.toml: model.base: this file is a LoRA, not a base model: point model.base at a checkpoint"
    ]


@covers(model.model_family)
def test_sd3_checkpoint_is_detected_and_a_bare_mmdit_is_not_trainable(project: Project) -> None:
    write_safetensors(model_path(project), ["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"])
    assert found(project, model.model_family) == []
    assert found(project, model.model_family, "model.family=sdxl")[0].startswith(
        'recipe.toml: model.family: is "sdxl" but base.safetensors is an SD3 checkpoint'
    )
    # kohya's loader reads only model.diffusion_model.* (sd3_utils.load_mmdit: KeyError otherwise).
    write_safetensors(model_path(project), ["joint_blocks.0.x_block.attn.qkv.weight"])
    assert found(project, model.model_family) == [
        "recipe.toml: model.base: this is an SD3 MMDiT-only (without the model.diffusion_model. prefix that "
        "kohya's SD3 loader reads) checkpoint; lorabuild trains SD1.x, SD2.x, SDXL, FLUX.1, Chroma, SD3, Anima, "
        "HunyuanImage 2.1 and Lumina 2 LoRAs"
    ]


def test_a_flux_checkpoint_is_detected(project: Project) -> None:
    write_safetensors(model_path(project), ["double_blocks.0.img_attn.norm.key_norm.scale"])
    assert found(project, model.model_family) == []
    assert found(project, model.model_family, "model.family=sdxl") == [
        'recipe.toml: model.family: is "sdxl" but base.safetensors is a FLUX.1 checkpoint (kohya would fail '
        'after minutes of loading): set model.family = "flux" (or remove it to detect it), or choose an SDXL model'
    ]


@covers(model.model_family)
@pytest.mark.parametrize(
    ("checkpoint", "declared", "expected"),
    [
        (
            "sdxl",
            "sd15",
            'recipe.toml: model.family: is "sd15" but base.safetensors is an SDXL checkpoint (kohya would '
            'fail after minutes of loading): set model.family = "sdxl" (or remove it to detect it), '
            "or choose an SD1.x model",
        ),
        (
            "sd15",
            "sdxl",
            'recipe.toml: model.family: is "sdxl" but base.safetensors is an SD1.x checkpoint (kohya would '
            'fail after minutes of loading): set model.family = "sd15" (or remove it to detect it), '
            "or choose an SDXL model",
        ),
    ],
)
def test_declared_family_contradicts_the_checkpoint(
    project: Project, checkpoint: str, declared: str, expected: str
) -> None:
    write_checkpoint(model_path(project), checkpoint)
    assert found(project, model.model_family, f"model.family={checkpoint}") == []
    assert found(project, model.model_family) == []  # detected, not declared
    assert found(project, model.model_family, f"model.family={declared}") == [expected]


@covers(model.model_family)
def test_family_undetectable(project: Project) -> None:
    write_safetensors(model_path(project), ["some.other.weight"])
    assert found(project, model.model_family) == [
        "recipe.toml: model.family: cannot be detected (no known tensor names in its header): "
        "set model.family to sd15, sd2, sdxl, flux, chroma, sd3, anima, hunyuan or lumina"
    ]
    assert found(project, model.model_family, "model.family=sd15") == []


def write_diffusers(folder: Path, prediction_type: str) -> Path:
    """A tiny fake SD2 diffusers folder: just the JSON files lorabuild reads."""
    (folder / "text_encoder").mkdir(parents=True)
    (folder / "scheduler").mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (folder / "text_encoder" / "config.json").write_text(json.dumps({"hidden_size": 1024}))
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"prediction_type": prediction_type})
    )
    return folder


@covers(model.v_prediction)
def test_v_prediction_diffusers_model_needs_v_parameterization(project: Project) -> None:
    assert found(project, model.v_prediction) == []
    write_diffusers(project.root / "models" / "eps", "epsilon")
    assert found(project, model.v_prediction, f"model.base={project.root / 'models' / 'eps'}") == []
    write_diffusers(project.root / "models" / "v", "v_prediction")
    edit_recipe(project, "models/base.safetensors", "models/v")
    assert found(project, model.v_prediction) == [
        "recipe.toml: model.v_parameterization: warning: "
        "the model's scheduler predicts v: set model.v_parameterization = true"
    ]
    assert found(project, model.v_prediction, "model.v_parameterization=true") == []


@covers(model.family_rules)
def test_the_rules_of_the_models_family_run(project: Project) -> None:
    """Each family's own rules (tests/test_families.py tests them) run for its models alone."""
    assert found(project, model.family_rules) == []  # clip_skip = 2 on SD1.5 is fine
    write_checkpoint(model_path(project), "sdxl")
    assert found(project, model.family_rules) == [
        "recipe.toml: model.clip_skip: SDXL models ignore clip_skip (kohya only warns, so the setting "
        "would silently do nothing): remove it"
    ]
    write_checkpoint(model_path(project), "sd2")
    assert found(project, model.family_rules) == [
        "recipe.toml: model.clip_skip: warning: SD2 models are not trained with clip_skip "
        "(kohya: unexpected results): set model.clip_skip = 1 or remove it"
    ]
    assert found(project, model.family_rules, "model.clip_skip=1") == []


@covers(model.vae_exists)
def test_vae_must_exist(project: Project) -> None:
    """A VAE path that is not there reached kohya, which took it for a Hugging Face model id."""
    assert found(project, model.vae_exists) == []
    edit_recipe(project, "clip_skip = 2\n", 'clip_skip = 2\nvae = "models/vae.safetensors"\n')
    assert found(project, model.vae_exists) == [
        "recipe.toml: model.vae: file or folder not found: models/vae.safetensors: point model.vae at a VAE "
        "file (.safetensors, .ckpt, .pt) or a diffusers VAE folder, or remove it (kohya would take the path "
        "for a Hugging Face model id and stop after loading the base model)"
    ]
    write_safetensors(project.root / "models" / "vae.safetensors", ["decoder.conv_in.weight"])
    assert found(project, model.vae_exists) == []
    edit_recipe(project, 'vae = "models/vae.safetensors"', 'vae = "models/vae"')
    (project.root / "models" / "vae").mkdir()
    assert found(project, model.vae_exists) == []  # a diffusers folder


@covers(model.tokenizer_cache)
def test_tokenizer_cache_dir(project: Project) -> None:
    """kohya reads each tokenizer from <dir>/<model id with / as _>, or downloads it and saves it there."""
    assert found(project, model.tokenizer_cache) == []
    edit_recipe(project, "clip_skip = 2\n", 'clip_skip = 2\ntokenizer_cache_dir = "tokenizers"\n')
    assert found(project, model.tokenizer_cache) == [
        "recipe.toml: model.tokenizer_cache_dir: warning: tokenizers does not exist yet: kohya downloads the "
        "tokenizer (openai/clip-vit-large-patch14) from Hugging Face and saves it there, which fails without "
        "network access: run it once online, or copy a folder holding openai_clip-vit-large-patch14 there"
    ]
    (project.root / "tokenizers" / "openai_clip-vit-large-patch14").mkdir(parents=True)
    assert found(project, model.tokenizer_cache) == []
    write_checkpoint(model_path(project), "sdxl")
    assert found(project, model.tokenizer_cache) == [
        "recipe.toml: model.tokenizer_cache_dir: warning: tokenizers has no "
        "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k yet: kohya downloads the tokenizer "
        "(laion/CLIP-ViT-bigG-14-laion2B-39B-b160k) from Hugging Face and saves it there, which fails "
        "without network access: run it once online, or copy that folder there"
    ]
    (project.root / "tokenizers").rename(project.root / "moved")
    (project.root / "tokenizers").write_text("not a folder", encoding="utf-8")
    assert found(project, model.tokenizer_cache) == [
        "recipe.toml: model.tokenizer_cache_dir: tokenizers is a file, not a folder: kohya keeps each "
        "tokenizer in a folder of its own there: point it at a folder, or remove it"
    ]


# --- dataset and buckets -----------------------------------------------------------------------


@covers(dataset.resolution_and_buckets)
def test_resolution_not_a_multiple_of_the_bucket_step(project: Project) -> None:
    assert found(project, dataset.resolution_and_buckets) == []
    assert found(project, dataset.resolution_and_buckets, "dataset.resolution=[500, 540]") == [
        "recipe.toml: dataset.resolution: each side must be a multiple of the bucket step 64 "
        "(got [500, 540]); try [512, 512]"
    ]
    assert found(
        project,
        dataset.resolution_and_buckets,
        "dataset.resolution=[516, 512]",
        "dataset.enable_bucket=false",
    ) == ["recipe.toml: dataset.resolution: each side must be a multiple of 8 (got [516, 512])"]
    assert (
        found(
            project,
            dataset.resolution_and_buckets,
            "dataset.resolution=[520, 512]",
            "dataset.enable_bucket=false",
        )
        == []
    )


@covers(dataset.resolution_and_buckets)
def test_bucket_bounds_are_rounded_or_rejected(project: Project) -> None:
    assert found(
        project, dataset.resolution_and_buckets, "dataset.min_bucket_reso=300", "dataset.max_bucket_reso=1000"
    ) == [
        "recipe.toml: dataset.min_bucket_reso: warning: min_bucket_reso 300 is not a multiple of "
        "bucket_reso_steps 64: kohya rounds it down to 256",
        "recipe.toml: dataset.max_bucket_reso: warning: max_bucket_reso 1000 is not a multiple of "
        "bucket_reso_steps 64: kohya rounds it up to 1024",
    ]
    assert found(
        project, dataset.resolution_and_buckets, "dataset.min_bucket_reso=768", "dataset.max_bucket_reso=448"
    ) == [
        "recipe.toml: dataset.min_bucket_reso: min_bucket_reso 768 is larger than the resolution's shorter "
        "side 512: kohya stops with 'min_bucket_reso must be equal or less than resolution'; "
        "lower min_bucket_reso or raise the resolution",
        "recipe.toml: dataset.max_bucket_reso: max_bucket_reso 448 is smaller than the resolution's longer "
        "side 512: kohya stops with 'max_bucket_reso must be equal or greater than resolution'; "
        "raise max_bucket_reso or lower the resolution",
    ]


@covers(dataset.resolution_and_buckets)
def test_bucket_step_32_needs_sdxl(project: Project) -> None:
    assert found(project, dataset.resolution_and_buckets, "dataset.bucket_reso_steps=32") == [
        "recipe.toml: dataset.bucket_reso_steps: bucket_reso_steps 32 is not a multiple of 64, which this "
        "model needs: kohya stops with 'bucket_reso_steps is 32. it must be divisible by 64'"
    ]
    write_checkpoint(model_path(project), "sdxl")
    assert found(project, dataset.resolution_and_buckets, "dataset.bucket_reso_steps=32") == []


@covers(dataset.keep_tokens_without_shuffle)
def test_keep_tokens_without_shuffle(project: Project) -> None:
    assert found(project, dataset.keep_tokens_without_shuffle) == []
    assert found(project, dataset.keep_tokens_without_shuffle, "dataset.shuffle_caption=false") == [
        "recipe.toml: dataset.keep_tokens: warning: has no effect without shuffle_caption = true "
        "(kohya only keeps tokens while shuffling)"
    ]
    assert found(
        project,
        dataset.keep_tokens_without_shuffle,
        "dataset.shuffle_caption=false",
        "dataset.keep_tokens=0",
        "dataset.subsets[0].keep_tokens=2",
    ) == [
        "recipe.toml: dataset.subsets[0].keep_tokens: warning: has no effect without shuffle_caption = true "
        "(kohya only keeps tokens while shuffling)"
    ]
    # Tag dropout also honours keep_tokens.
    assert (
        found(
            project,
            dataset.keep_tokens_without_shuffle,
            "dataset.shuffle_caption=false",
            "dataset.caption_tag_dropout_rate=0.1",
        )
        == []
    )


@covers(dataset.latents_cache_with_augmentation)
def test_latent_cache_with_augmentation(project: Project) -> None:
    assert found(project, dataset.latents_cache_with_augmentation) == []
    assert found(
        project,
        dataset.latents_cache_with_augmentation,
        "dataset.color_aug=true",
        "dataset.subsets[0].random_crop=true",
    ) == [
        "recipe.toml: dataset.color_aug: cannot be used with cached latents: "
        "set training.cache_latents and training.cache_latents_to_disk to false, or turn color_aug off",
        "recipe.toml: dataset.subsets[0].random_crop: cannot be used with cached latents: "
        "set training.cache_latents and training.cache_latents_to_disk to false, or turn random_crop off",
    ]
    assert found(project, dataset.latents_cache_with_augmentation, "dataset.random_crop=true") == [
        "recipe.toml: dataset.random_crop: cannot be used with cached latents: "
        "set training.cache_latents and training.cache_latents_to_disk to false, or turn random_crop off",
    ]
    assert (
        found(
            project,
            dataset.latents_cache_with_augmentation,
            "dataset.color_aug=true",
            "training.cache_latents=false",
        )
        == []
    )
    # kohya reads each subset's own value: a dataset default every subset overrides is never used.
    assert (
        found(
            project,
            dataset.latents_cache_with_augmentation,
            "dataset.color_aug=true",
            "dataset.subsets[0].color_aug=false",
        )
        == []
    )


@covers(dataset.duplicate_sources)
def test_duplicate_sources(project: Project) -> None:
    assert found(project, dataset.duplicate_sources) == []
    add_subset(project, 'source = "data/char"\nis_reg = true\n')
    assert found(project, dataset.duplicate_sources) == []
    add_subset(project, 'source = "./data/char/"\n')
    assert found(project, dataset.duplicate_sources) == [
        "recipe.toml: dataset.subsets[2].source: warning: is the same folder as dataset.subsets[0]: "
        "remove one of the two subsets"
    ]


@covers(dataset.duplicate_sources)
def test_duplicate_sources_after_a_regularisation_subset(project: Project) -> None:
    project.write_recipe(RECIPE.replace('source = "data/char"', 'source = "data/char"\nis_reg = true'))
    add_subset(project, 'source = "data/char"\n')
    add_subset(project, 'source = "data/char"\n')
    assert found(project, dataset.duplicate_sources) == [
        "recipe.toml: dataset.subsets[2].source: warning: is the same folder as dataset.subsets[1]: "
        "remove one of the two subsets"
    ]


@covers(dataset.source_folders)
def test_source_folder_missing_or_a_file(project: Project) -> None:
    assert found(project, dataset.source_folders) == []
    edit_recipe(project, 'source = "data/char"', 'source = "data/nope"')
    assert found(project, dataset.source_folders) == [
        "recipe.toml: dataset.subsets[0].source: folder not found: data/nope"
    ]
    edit_recipe(project, 'source = "data/nope"', 'source = "data/char/000.png"')
    assert found(project, dataset.source_folders) == [
        "recipe.toml: dataset.subsets[0].source: is a file, not a folder: data/char/000.png"
    ]


@covers(dataset.source_folders)
def test_images_only_in_sub_folders(project: Project) -> None:
    project.add_images("data/nested/10_kazari")
    project.add_images("data/nested/1_misc", sizes=[(512, 512)])
    (project.root / "data" / "nested" / "notes").mkdir()
    edit_recipe(project, 'source = "data/char"', 'source = "data/nested"')
    assert found(project, dataset.source_folders) == [
        "recipe.toml: dataset.subsets[0].source: has no images directly inside, but its sub-folders "
        '10_kazari, 1_misc do (kohya would stop with "No data found"): point source at the folder '
        "that holds the images, one subset per folder"
    ]
    assert found(project, dataset.images_in_subfolders) == []  # the error above says it


@covers(dataset.images_in_subfolders)
def test_images_in_a_sub_folder_are_never_trained(project: Project) -> None:
    assert found(project, dataset.images_in_subfolders) == []
    project.add_images("data/char/more", sizes=[(512, 512)] * 3)
    write_image(project.root / "data" / "char" / ".thumbnails" / "000.png")  # hidden: not counted
    assert found(project, dataset.images_in_subfolders) == [
        "recipe.toml: dataset.subsets[0].source: warning: 3 image(s) in sub-folders will not be trained: "
        "more/ (3): kohya reads only the images directly in data/char: add each sub-folder as a subset of "
        'its own (a [[dataset.subsets]] whose source ends in "char/more"), or move the images up into data/char'
    ]
    add_subset(project, 'source = "data/char/more"\n')  # staged as a subset of its own: not lost
    assert found(project, dataset.images_in_subfolders) == []


@covers(dataset.source_folders)
def test_empty_source_folder(project: Project) -> None:
    (project.root / "data" / "empty").mkdir()
    (project.root / "data" / "empty" / "readme.txt").write_text("hello")
    edit_recipe(project, 'source = "data/char"', 'source = "data/empty"')
    assert found(project, dataset.source_folders) == [
        "recipe.toml: dataset.subsets[0].source: has no images directly inside data/empty "
        '(kohya reads .png .jpg .jpeg .webp .bmp): kohya would stop with "No data found": '
        "put the images directly in that folder"
    ]


@covers(dataset.source_folders)
def test_files_kohya_skips(project: Project) -> None:
    (project.root / "data" / "char" / "anim.gif").write_bytes(b"GIF89a")
    assert found(project, dataset.source_folders) == [
        "recipe.toml: data/char/anim.gif: warning: kohya does not read .gif files: convert it to PNG or JPEG"
    ]


@covers(dataset.source_folders)
def test_names_kohya_skips_are_staged_except_hidden_files(project: Project) -> None:
    # kohya skips photo.Jpg on Linux and macOS; lorabuild stages it as photo.jpg (tests/test_stage.py).
    write_image(project.root / "data" / "char" / "photo.Jpg", blue=1)
    write_image(project.root / "data" / "char" / ".hidden.png", blue=2)
    assert found(project, dataset.source_folders) == [
        "recipe.toml: data/char/.hidden.png: warning: kohya skips hidden files (the name starts with '.'): "
        "rename it, or delete it if it is a leftover"
    ]


@covers(dataset.image_files)
def test_truncated_and_fake_images(project: Project) -> None:
    assert found(project, dataset.image_files) == []
    image = project.root / "data" / "char" / "001.png"
    image.write_bytes(image.read_bytes()[:-20])
    # The last 20 bytes are the end chunk and the zlib and chunk checksums: Pillow (and so kohya)
    # still decodes every pixel, so this file is fine.
    assert found(project, dataset.image_files) == []
    image.write_bytes(image.read_bytes()[:-20])
    (project.root / "data" / "char" / "zzz.png").write_text("not an image")
    assert found(project, dataset.image_files) == [
        "recipe.toml: data/char/001.png: the file is truncated (no PNG end chunk): re-export or delete it",
        "recipe.toml: data/char/zzz.png: cannot be read as an image (Pillow does not recognise its "
        "contents): re-export it as PNG or JPEG, or delete it",
    ]


@covers(dataset.image_files)
def test_bad_images_are_left_out_when_skipping(project: Project) -> None:
    image = project.root / "data" / "char" / "001.png"
    image.write_bytes(image.read_bytes()[:-40])
    assert found(project, dataset.image_files, "images.on_bad_image=skip") == [
        'recipe.toml: data/char/001.png: warning: left out of the stage (images.on_bad_image = "skip"): '
        "the file is truncated (no PNG end chunk): re-export or delete it"
    ]


@covers(dataset.image_min_side)
def test_images_below_the_minimum_side(project: Project) -> None:
    assert found(project, dataset.image_min_side) == []  # images.min_side is off by default
    assert found(project, dataset.image_min_side, "images.min_side=512") == []
    assert found(project, dataset.image_min_side, "images.min_side=600") == [
        f"recipe.toml: data/char/{name}: is {size}, smaller than images.min_side (600) on its shorter side: "
        "replace it with a larger image or delete it"
        for name, size in [
            ("000.png", "512x512"),
            ("001.png", "512x768"),
            ("002.png", "768x512"),
            ("003.png", "512x512"),
        ]
    ]
    write_image(project.root / "data" / "char" / "004.png", (300, 900))
    assert found(project, dataset.image_min_side, "images.min_side=512", "images.on_bad_image=skip") == [
        'recipe.toml: data/char/004.png: warning: left out of the stage (images.on_bad_image = "skip"): '
        "is 300x900, smaller than images.min_side (512) on its shorter side: replace it with a larger "
        "image or delete it"
    ]


@covers(dataset.every_image_left_out)
def test_every_image_of_a_subset_left_out(project: Project) -> None:
    assert found(project, dataset.every_image_left_out, "images.on_bad_image=skip") == []
    # With on_bad_image = "error" each image is an error already.
    assert found(project, dataset.every_image_left_out, "images.min_side=600") == []
    assert found(
        project, dataset.every_image_left_out, "images.min_side=600", "images.on_bad_image=skip"
    ) == [
        'recipe.toml: dataset.subsets[0].source: all 4 image(s) are left out of the stage (images.on_bad_image = "skip"), '
        "so kohya would find no data: fix or replace them (see the warnings above)"
    ]


@covers(dataset.duplicate_images)
def test_exact_duplicate_images(project: Project) -> None:
    assert found(project, dataset.duplicate_images) == []
    folder = project.root / "data" / "char"
    (folder / "004.png").write_bytes((folder / "000.png").read_bytes())
    (folder / "005.png").write_bytes((folder / "000.png").read_bytes())
    message = (
        "is an exact copy of data/char/000.png: delete one (a duplicate is trained twice as often as the "
        'other images), or set images.duplicates = "off"'
    )
    assert found(project, dataset.duplicate_images) == [
        f"recipe.toml: data/char/004.png: warning: {message}",
        f"recipe.toml: data/char/005.png: warning: {message}",
    ]
    assert found(project, dataset.duplicate_images, "images.duplicates=off") == []
    for n in range(6, 6 + dataset.DUPLICATES_SHOWN):
        (folder / f"{n:03d}.png").write_bytes((folder / "000.png").read_bytes())
    problems = found(project, dataset.duplicate_images)
    assert len(problems) == dataset.DUPLICATES_SHOWN + 1
    assert problems[-1] == (
        "recipe.toml: images.duplicates: warning: 2 more image(s) are exact copies of others: delete them"
    )


@covers(dataset.duplicate_images)
def test_near_duplicate_images(project: Project) -> None:
    from PIL import Image

    from lorabuild.demo.synthetic import make_dataset

    folder = project.root / "data" / "drawn"
    images = make_dataset(folder, n=6, size=128, trigger="")
    # The same drawing, smaller and re-encoded as JPEG: not the same bytes, the same picture.
    Image.open(images[1]).convert("RGB").resize((96, 96)).save(folder / "0001_small.jpg", quality=70)
    edit_recipe(project, 'source = "data/char"', 'source = "data/drawn"')
    assert found(project, dataset.duplicate_images) == []  # exact copies only, by default
    assert found(project, dataset.duplicate_images, "images.duplicates=near") == [
        "recipe.toml: data/drawn/0001_small.jpg: warning: looks almost the same as data/drawn/0001.png (0 of 64 "
        "perceptual-hash bits differ): delete one unless both are wanted (images.near_distance sets how alike is too alike)"
    ]
    assert found(project, dataset.duplicate_images, "images.duplicates=near", "images.near_distance=0") == [
        "recipe.toml: data/drawn/0001_small.jpg: warning: looks almost the same as data/drawn/0001.png (0 of 64 "
        "perceptual-hash bits differ): delete one unless both are wanted (images.near_distance sets how alike is too alike)"
    ]
    # Flat images (the fixture's one-colour squares) have no structure to compare: never paired.
    edit_recipe(project, 'source = "data/drawn"', 'source = "data/char"')
    assert found(project, dataset.duplicate_images, "images.duplicates=near") == []


@covers(dataset.caption_files)
def test_captions_in_another_extension(project: Project) -> None:
    assert found(project, dataset.caption_files) == []
    project.add_images("data/tagged", ext=".caption")
    edit_recipe(project, 'source = "data/char"', 'source = "data/tagged"')
    assert found(project, dataset.caption_files) == [
        'recipe.toml: dataset.subsets[0].caption_extension: is ".txt" but 4 image(s) have ".caption" '
        'captions (and 0 have ".txt"): set caption_extension = ".caption"'
    ]
    assert found(project, dataset.caption_files, "dataset.subsets[0].caption_extension=.caption") == []


@covers(dataset.caption_files)
def test_kohya_latent_cache_files_are_not_captions(project: Project) -> None:
    # kohya's cache_latents_to_disk leaves 000.npz next to 000.png when it trains in place.
    for image in (project.root / "data" / "char").glob("*.png"):
        image.with_suffix(".npz").write_bytes(b"PK")
    (project.root / "data" / "char" / "003.txt").unlink()
    assert found(project, dataset.caption_files) == [
        "recipe.toml: dataset.subsets[0].source: warning: 1 of 4 image(s) have no .txt caption and will "
        "get the trigger alone: 003.png"
    ]


@covers(dataset.caption_files)
def test_images_without_captions(project: Project) -> None:
    for name in ("001.txt", "003.txt"):
        (project.root / "data" / "char" / name).unlink()
    assert found(project, dataset.caption_files) == [
        "recipe.toml: dataset.subsets[0].source: warning: 2 of 4 image(s) have no .txt caption and will "
        "get the trigger alone: 001.png, 003.png"
    ]
    # Without prepend_trigger, an image without a caption gets an empty one, not the trigger.
    assert found(project, dataset.caption_files, "captions.prepend_trigger=false") == [
        "recipe.toml: dataset.subsets[0].source: warning: 2 of 4 image(s) have no .txt caption and will "
        "get an empty caption: 001.png, 003.png"
    ]
    project.add_images("data/bare", captions=[])
    project.write_recipe(RECIPE.replace('trigger = "uiharu_kazari"\n', "").replace("data/char", "data/bare"))
    assert found(project, dataset.caption_files) == [
        "recipe.toml: dataset.subsets[0].source: warning: 4 of 4 image(s) have no .txt caption and will "
        "get an empty caption: 000.png, 001.png, 002.png, 003.png"
    ]


@covers(dataset.caption_files)
def test_non_utf8_and_empty_captions(project: Project) -> None:
    folder = project.root / "data" / "char"
    (folder / "000.txt").write_bytes("初春, 花".encode("gbk"))
    (folder / "001.txt").write_text("")
    assert found(project, dataset.caption_files) == [
        "recipe.toml: data/char/000.txt: is not UTF-8 (byte 0, looks like GBK): kohya stops on it; "
        "re-save the file as UTF-8",
        "recipe.toml: data/char/001.txt: warning: is empty: the staged caption will hold only the trigger",
    ]


@covers(dataset.trigger_in_captions)
def test_trigger_in_no_staged_caption(project: Project) -> None:
    assert found(project, dataset.trigger_in_captions) == []
    assert found(project, dataset.trigger_in_captions, "captions.prepend_trigger=false") == [
        'recipe.toml: dataset.subsets[0].trigger: "uiharu_kazari" is in none of the staged captions: '
        "set captions.prepend_trigger = true or add it to the captions"
    ]


@covers(dataset.trigger_in_captions)
def test_trigger_advice_names_the_captions_table_that_applies(project: Project) -> None:
    """A subset with its own [captions] table: the recipe's captions.prepend_trigger does nothing for it."""
    assert found(
        project, dataset.trigger_in_captions, "dataset.subsets[0].captions={ prepend_trigger = false }"
    ) == [
        'recipe.toml: dataset.subsets[0].trigger: "uiharu_kazari" is in none of the staged captions: '
        "set dataset.subsets[0].captions.prepend_trigger = true or add it to the captions"
    ]


@covers(dataset.trigger_in_captions)
def test_trigger_in_only_some_staged_captions(project: Project) -> None:
    (project.root / "data" / "char" / "002.txt").write_text("uiharu_kazari, smile")
    assert found(project, dataset.trigger_in_captions, "captions.prepend_trigger=false") == [
        'recipe.toml: dataset.subsets[0].trigger: warning: "uiharu_kazari" is in only 1 of 4 staged '
        "captions: add it to the others or set captions.prepend_trigger = true"
    ]
    # Regularisation subsets are not meant to carry the trigger.
    assert (
        found(
            project,
            dataset.trigger_in_captions,
            "captions.prepend_trigger=false",
            "dataset.subsets[0].is_reg=true",
        )
        == []
    )


@covers(dataset.small_buckets)
def test_small_buckets(project: Project) -> None:
    assert found(project, dataset.small_buckets) == []  # 4 + 2 + 2 samples, batch size 2
    assert found(project, dataset.small_buckets, "dataset.batch_size=4") == [
        "recipe.toml: dataset.batch_size: warning: 2 bucket(s) hold fewer samples than the batch size 4: "
        "384x640 (2), 640x384 (2); crop images to common aspect ratios or lower the batch size"
    ]
    assert found(project, dataset.small_buckets, "dataset.batch_size=4", "dataset.enable_bucket=false") == []


@covers(dataset.image_fits_without_buckets)
def test_image_does_not_fit_without_buckets(project: Project) -> None:
    assert found(project, dataset.image_fits_without_buckets) == []
    assert found(project, dataset.image_fits_without_buckets, "dataset.enable_bucket=false") == [
        "recipe.toml: data/char/001.png: is 512x768, larger than 512x512 with buckets off: "
        "set dataset.enable_bucket = true or resize it",
        "recipe.toml: data/char/002.png: is 768x512, larger than 512x512 with buckets off: "
        "set dataset.enable_bucket = true or resize it",
    ]
    assert found(
        project,
        dataset.image_fits_without_buckets,
        "dataset.enable_bucket=false",
        "dataset.resolution=[512, 640]",
    ) == [
        "recipe.toml: data/char/000.png: is 512x512, smaller than the resolution 512x640 while "
        "dataset.enable_bucket is false (kohya: image size is small)",
        "recipe.toml: data/char/001.png: is 512x768, larger than 512x640 with buckets off: "
        "set dataset.enable_bucket = true or resize it",
        "recipe.toml: data/char/002.png: is 768x512, smaller than the resolution 512x640 while "
        "dataset.enable_bucket is false (kohya: image size is small)",
        "recipe.toml: data/char/003.png: is 512x512, smaller than the resolution 512x640 while "
        "dataset.enable_bucket is false (kohya: image size is small)",
    ]
    # With random_crop kohya crops larger images to the resolution.
    assert (
        found(
            project,
            dataset.image_fits_without_buckets,
            "dataset.enable_bucket=false",
            "dataset.random_crop=true",
        )
        == []
    )


@covers(dataset.regularisation_balance)
def test_more_regularisation_than_training_samples(project: Project) -> None:
    assert found(project, dataset.regularisation_balance) == []
    project.add_images("data/reg")
    add_subset(project, 'source = "data/reg"\nis_reg = true\nrepeats = 2\n')
    assert found(project, dataset.regularisation_balance) == []  # 8 and 8
    assert found(project, dataset.regularisation_balance, "dataset.subsets[1].repeats=3") == [
        "recipe.toml: dataset.subsets: warning: 12 regularisation samples but only 8 training samples: "
        "4 regularisation samples are never used: lower the regularisation repeats or add training images"
    ]


@covers(dataset.no_training_subset)
def test_only_regularisation_subsets(project: Project) -> None:
    assert found(project, dataset.no_training_subset) == []
    assert found(project, dataset.no_training_subset, "dataset.subsets[0].is_reg=true") == [
        "recipe.toml: dataset.subsets: every subset has is_reg = true: add at least one training subset"
    ]


# --- network ----------------------------------------------------------------------------------


@covers(training.network_package)
def test_lycoris_module_not_installed(project: Project) -> None:
    assert found(project, training.network_package, packages=STACK) == []
    assert found(project, training.network_package, "network.module=locon", packages=STACK) == [
        'recipe.toml: network.module: "locon" needs LyCORIS, which is not installed: pip install lycoris-lora'
    ]
    assert (
        found(project, training.network_package, "network.module=loha", packages={**STACK, "lycoris": True})
        == []
    )
    assert found(project, training.network_package, "network.module=lokr", packages=NO_STACK) == []


@covers(training.dylora_shape)
def test_dylora_shape(project: Project) -> None:
    assert (
        found(project, training.dylora_shape, "network.args.unit=3", "network.conv_dim=4") == []
    )  # not dylora
    assert found(project, training.dylora_shape, "network.module=dylora", "network.args.unit=4") == []
    assert found(
        project, training.dylora_shape, "network.module=dylora", "network.args.unit=3", "network.conv_dim=4"
    ) == [
        "recipe.toml: network.dim: must be a multiple of network.args.unit (3) for dylora (got 8)",
        "recipe.toml: network.conv_dim: must equal network.dim (8) for dylora (got 4)",
    ]


@covers(training.network_weights_exist)
def test_network_weights_must_be_a_file(project: Project) -> None:
    """kohya's load_weights opens network.weights only after loading the model."""
    assert found(project, training.network_weights_exist) == []
    edit_recipe(project, "alpha = 4\n", 'alpha = 4\nweights = "models/start.safetensors"\n')
    assert found(project, training.network_weights_exist) == [
        "recipe.toml: network.weights: file not found: models/start.safetensors: point network.weights at "
        "the LoRA file to start from, or remove it (kohya would stop after loading the model)"
    ]
    (project.root / "models" / "start.safetensors").mkdir()
    assert found(project, training.network_weights_exist) == [
        "recipe.toml: network.weights: models/start.safetensors is a folder, not a LoRA file: point "
        "network.weights at the LoRA file to start from, or remove it (kohya would stop after loading the model)"
    ]
    (project.root / "models" / "start.safetensors").rmdir()
    write_safetensors(project.root / "models" / "start.safetensors", ["lora_unet_x.alpha"])
    assert found(project, training.network_weights_exist) == []


@covers(training.learning_rates_for_trained_parts)
def test_learning_rate_for_a_part_not_trained(project: Project) -> None:
    assert found(project, training.learning_rates_for_trained_parts, "optimizer.text_encoder_lr=5e-5") == []
    assert (
        found(
            project, training.learning_rates_for_trained_parts, "network.train=unet", "optimizer.unet_lr=1e-4"
        )
        == []
    )
    assert found(
        project,
        training.learning_rates_for_trained_parts,
        "network.train=unet",
        "optimizer.text_encoder_lr=5e-5",
    ) == [
        'recipe.toml: optimizer.text_encoder_lr: is set but network.train = "unet" trains no text encoder: '
        'remove it or train "both"'
    ]
    assert found(
        project,
        training.learning_rates_for_trained_parts,
        "network.train=text_encoder",
        "optimizer.unet_lr=1e-4",
    ) == [
        'recipe.toml: optimizer.unet_lr: is set but network.train = "text_encoder" trains no U-Net: '
        'remove it or train "both"'
    ]


# --- optimizer and schedule -------------------------------------------------------------------


@covers(training.optimizer_known)
def test_unknown_optimizer_name(project: Project) -> None:
    assert found(project, training.optimizer_known, packages=STACK) == []
    for name in ("adamw8bit", "SGD", "lion"):  # kohya's names case-insensitively; torch.optim's exactly
        assert found(project, training.optimizer_known, f"optimizer.type={name}", packages=NO_STACK) == []
    assert found(project, training.optimizer_known, "optimizer.type=AdamW9bit") == [
        'recipe.toml: optimizer.type: "AdamW9bit" is not an optimizer kohya knows (did you mean '
        "'AdamW8bit'?); use one of AdamW, AdamW8bit, Lion, Lion8bit, Prodigy, Adafactor, DAdaptAdam… "
        "or a module.Class path"
    ]


@covers(training.optimizer_known)
def test_optimizer_package_missing(project: Project) -> None:
    assert (
        found(
            project, training.optimizer_known, "optimizer.type=Lion", packages={**STACK, "lion_pytorch": True}
        )
        == []
    )
    assert found(project, training.optimizer_known, "optimizer.type=Lion", packages=NO_STACK) == []
    assert found(project, training.optimizer_known, "optimizer.type=Lion", packages=STACK) == [
        'recipe.toml: optimizer.type: "Lion" needs the package lion-pytorch, which is not installed: '
        "pip install lion-pytorch"
    ]


@covers(training.optimizer_known)
def test_optimizer_module_path_not_installed(project: Project) -> None:
    assert found(project, training.optimizer_known, "optimizer.type=torch.optim.AdamW", packages=STACK) == []
    assert (
        found(
            project,
            training.optimizer_known,
            "optimizer.type=bitsandbytes.optim.AdEMAMix8bit",
            packages={**STACK, "bitsandbytes": True},
        )
        == []
    )
    assert found(
        project, training.optimizer_known, "optimizer.type=bitsandbytes.optim.AdEMAMix8bit", packages=STACK
    ) == [
        "recipe.toml: optimizer.type: module 'bitsandbytes' of \"bitsandbytes.optim.AdEMAMix8bit\" "
        "is not installed"
    ]
    assert found(
        project, training.optimizer_known, "optimizer.type=no_such_module_xyz.Opt", packages=STACK
    ) == [
        "recipe.toml: optimizer.type: module 'no_such_module_xyz' of \"no_such_module_xyz.Opt\" "
        "is not installed"
    ]


@covers(training.adaptive_optimizer_lr)
def test_adaptive_optimizer_with_a_small_learning_rate(project: Project) -> None:
    assert found(project, training.adaptive_optimizer_lr) == []  # AdamW at 1e-4
    assert found(project, training.adaptive_optimizer_lr, "optimizer.type=Prodigy", "optimizer.lr=1.0") == []
    assert found(project, training.adaptive_optimizer_lr, "optimizer.type=Prodigy") == [
        "recipe.toml: optimizer.lr: warning: Prodigy adapts the step size itself: "
        "set optimizer.lr = 1.0 (got 0.0001)"
    ]
    assert found(
        project, training.adaptive_optimizer_lr, "optimizer.type=DAdaptAdam", "optimizer.lr=0.05"
    ) == [
        "recipe.toml: optimizer.lr: warning: DAdaptAdam adapts the step size itself: "
        "set optimizer.lr = 1.0 (got 0.05)"
    ]


@covers(training.scheduler_warmup)
def test_constant_scheduler_with_warmup(project: Project) -> None:
    assert found(project, training.scheduler_warmup, "optimizer.warmup_steps=100") == []  # cosine
    assert found(project, training.scheduler_warmup, "optimizer.scheduler=constant") == []
    assert found(
        project, training.scheduler_warmup, "optimizer.scheduler=constant", 'optimizer.warmup_steps="5%"'
    ) == [
        'recipe.toml: optimizer.warmup_steps: must be 0 with scheduler "constant" (kohya stops after '
        'loading the model): remove it or use scheduler "constant_with_warmup"'
    ]
    assert found(
        project, training.scheduler_warmup, "optimizer.scheduler=adafactor", "optimizer.warmup_steps=10"
    ) == [
        'recipe.toml: optimizer.warmup_steps: must be 0 with scheduler "adafactor" (kohya stops after '
        "loading the model): remove it"
    ]


@covers(training.scheduler_needs)
def test_adafactor_scheduler_needs_adafactor(project: Project) -> None:
    assert found(project, training.scheduler_needs) == []
    assert found(project, training.scheduler_needs, "optimizer.scheduler=adafactor") == [
        'recipe.toml: optimizer.scheduler: "adafactor" works only with optimizer.type = "Adafactor"'
    ]
    assert (
        found(project, training.scheduler_needs, "optimizer.scheduler=adafactor", "optimizer.type=Adafactor")
        == []
    )


@covers(training.scheduler_needs)
def test_cosine_with_min_lr_needs_min_lr_ratio(project: Project) -> None:
    assert found(project, training.scheduler_needs, "optimizer.scheduler=cosine_with_min_lr") == [
        'recipe.toml: optimizer.min_lr_ratio: is required by scheduler "cosine_with_min_lr" (e.g. 0.1)'
    ]
    assert (
        found(
            project,
            training.scheduler_needs,
            "optimizer.scheduler=cosine_with_min_lr",
            "optimizer.min_lr_ratio=0.1",
        )
        == []
    )


@covers(training.scheduler_needs)
def test_piecewise_constant_needs_step_rules(project: Project) -> None:
    assert found(project, training.scheduler_needs, "optimizer.scheduler=piecewise_constant") == [
        'recipe.toml: optimizer.scheduler: "piecewise_constant" needs kohya.lr_scheduler_args with step_rules'
    ]
    # kohya's lr_scheduler_args is a list of "key=value" strings (kohya_passthrough rejects a bare string).
    step_rules = 'kohya.lr_scheduler_args=["step_rules=1:100,0.1"]'
    assert (
        found(project, training.scheduler_needs, "optimizer.scheduler=piecewise_constant", step_rules) == []
    )
    assert found(project, passthrough.kohya_passthrough, step_rules) == []


@covers(training.precision_pairs)
def test_full_precision_needs_matching_mixed_precision(project: Project) -> None:
    assert (
        found(project, training.precision_pairs, "training.full_fp16=true", "training.mixed_precision=fp16")
        == []
    )
    assert found(project, training.precision_pairs, "training.full_fp16=true", "training.full_bf16=true") == [
        'recipe.toml: training.full_fp16: needs training.mixed_precision = "fp16" (got "no"): '
        "change it or turn full_fp16 off",
        'recipe.toml: training.full_bf16: needs training.mixed_precision = "bf16" (got "no"): '
        "change it or turn full_bf16 off",
    ]


@covers(training.xformers_package)
def test_xformers_not_installed(project: Project) -> None:
    assert found(project, training.xformers_package, packages=STACK) == []  # sdpa
    assert found(project, training.xformers_package, "training.attention=xformers", packages=STACK) == [
        'recipe.toml: training.attention: "xformers" is not installed here (it needs an NVIDIA GPU): '
        'pip install xformers, or use attention = "sdpa"'
    ]
    assert (
        found(
            project,
            training.xformers_package,
            "training.attention=xformers",
            packages={**STACK, "xformers": True},
        )
        == []
    )
    assert found(project, training.xformers_package, "training.attention=xformers", packages=NO_STACK) == []


@covers(training.save_interval)
def test_save_interval_longer_than_the_run(project: Project) -> None:
    assert found(project, training.save_interval, "training.save_every_n_epochs=3") == []
    assert found(project, training.save_interval, "training.save_every_n_epochs=5") == [
        "recipe.toml: training.save_every_n_epochs: warning: is 5, more than training.epochs (3): "
        "only the last epoch is saved"
    ]


# --- evaluate ---------------------------------------------------------------------------------


@covers(evaluate.prompt_placeholders)
def test_prompt_placeholders(project: Project) -> None:
    assert found(project, evaluate.prompt_placeholders, 'evaluate.prompts=["{trigger}, smile"]') == []
    assert found(
        project,
        evaluate.prompt_placeholders,
        'evaluate.prompts=["{trigger}, {style}", "smile --n bad"]',
        'evaluate.negative_prompt="lowres --s 4"',
    ) == [
        "recipe.toml: evaluate.prompts[0]: {style} is not a placeholder: only {trigger} is replaced",
        "recipe.toml: evaluate.prompts[1]: must not contain ' --': kohya reads ' --' as the start of an "
        "option (--w, --n, --d…)",
        "recipe.toml: evaluate.negative_prompt: must not contain ' --': kohya reads ' --' as the start of an "
        "option (--w, --n, --d…)",
    ]
    project.write_recipe(RECIPE.replace('trigger = "uiharu_kazari"\n', ""))
    assert found(project, evaluate.prompt_placeholders, 'evaluate.prompts=["{trigger}, smile"]') == [
        "recipe.toml: evaluate.prompts[0]: uses {trigger} but no subset has a trigger: "
        "set a subset's trigger or write the word"
    ]


@covers(evaluate.prompt_placeholders)
def test_prompt_is_checked_as_kohya_reads_it_with_the_trigger_in_place(project: Project) -> None:
    """``trigger = "kazari --w 4096 --s 1000"`` made kohya read the prompt "kazari" and two options."""
    edit_recipe(project, 'trigger = "uiharu_kazari"', 'trigger = "kazari --w 4096 --s 1000"')
    assert found(project, evaluate.prompt_placeholders, 'evaluate.prompts=["{trigger}, smile", "smile"]') == [
        "recipe.toml: dataset.subsets[0].trigger: replaces {trigger} in evaluate.prompts[0], and the prompt "
        "kohya would read, 'kazari --w 4096 --s 1000, smile', must not contain ' --': kohya reads ' --' as "
        "the start of an option (--w, --n, --d…)"
    ]
    edit_recipe(project, 'trigger = "kazari --w 4096 --s 1000"', 'trigger = "#kazari {a|b}"')
    assert found(
        project, evaluate.prompt_placeholders, 'evaluate.prompts=["{trigger}, smile", "a {trigger}"]'
    ) == [
        "recipe.toml: dataset.subsets[0].trigger: replaces {trigger} in evaluate.prompts[0], and the prompt "
        "kohya would read, '#kazari {a|b}, smile', must not contain { or } (other than {trigger}): gen_img "
        "reads braces as a dynamic prompt ({a|b}); use ( ) for emphasis",
        "recipe.toml: dataset.subsets[0].trigger: replaces {trigger} in evaluate.prompts[1], and the prompt "
        "kohya would read, 'a #kazari {a|b}', must not contain { or } (other than {trigger}): gen_img reads "
        "braces as a dynamic prompt ({a|b}); use ( ) for emphasis",
    ]
    # Found by tests/test_free_text.py: a trigger that leaves the prompt unchanged is still the cause.
    edit_recipe(project, 'trigger = "#kazari {a|b}"', 'trigger = "{trigger}"')
    assert [
        p.split(": ")[1]
        for p in found(project, evaluate.prompt_placeholders, 'evaluate.prompts=["{trigger}"]')
    ] == ["dataset.subsets[0].trigger"]


@covers(evaluate.prompt_placeholders)
@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("#1girl", "must not start with '#': kohya skips such lines as comments"),
        (" 1girl", "must not start or end with a space: kohya strips the spaces off each prompt line"),
        ("1girl\u3000", "must not start or end with a space: kohya strips the spaces off each prompt line"),
        ("", "must not be empty: kohya would read the line's first option as the prompt"),
        (
            "n sfw, 1girl",
            "must not start with 'n s': kohya's sampler reads the start of a prompt line as the option --n too",
        ),
        (
            "W 512 1girl",
            "must not start with 'W 5': kohya's sampler reads the start of a prompt line as the option --W too",
        ),
        (
            "1girl --n lowres",
            "must not contain ' --': kohya reads ' --' as the start of an option (--w, --n, --d…)",
        ),
        (
            "{a|b} 1girl",
            "{a|b} is not a placeholder: only {trigger} is replaced",
        ),
    ],
)
def test_prompts_kohya_would_misread(project: Project, prompt: str, message: str) -> None:
    assert found(project, evaluate.prompt_placeholders, f'evaluate.prompts=["{prompt}"]') == [
        f"recipe.toml: evaluate.prompts[0]: {message}"
    ]


@covers(evaluate.grid_epochs_saved)
def test_grid_epochs_must_be_saved(project: Project) -> None:
    """The grid refused them only after training: `lorabuild grid` found epoch 7 of a 3-epoch run."""
    assert found(project, evaluate.grid_epochs_saved, "evaluate.epochs=[1, 3]") == []
    assert found(project, evaluate.grid_epochs_saved) == []  # "all"
    assert found(project, evaluate.grid_epochs_saved, "evaluate.epochs=[2, 7, 3]") == [
        "recipe.toml: evaluate.epochs: epoch(s) 7 are not saved by this training: it saves epochs 1, 2, 3 "
        '(training.epochs and training.save_every_n_epochs); list some of those, or use "all"'
    ]
    assert found(
        project,
        evaluate.grid_epochs_saved,
        "training.epochs=20",
        "training.save_every_n_epochs=2",
        "evaluate.epochs=[3, 4]",
    ) == [
        "recipe.toml: evaluate.epochs: epoch(s) 3 are not saved by this training: it saves epochs 2, 4, 6, "
        '..., 20 (training.epochs and training.save_every_n_epochs); list some of those, or use "all"'
    ]


@covers(evaluate.prompt_placeholders)
def test_prompts_kohya_reads_as_written(project: Project) -> None:
    fine = ["{trigger}, smile", "1girl - solo", "a--b -", "nw 512", "(smile:1.2), 初春", "sweep w/ 5"]
    assert found(project, evaluate.prompt_placeholders, f"evaluate.prompts={json.dumps(fine)}") == []
    assert found(project, evaluate.prompt_placeholders, 'evaluate.negative_prompt="n 4, lowres"') == []
    assert found(project, evaluate.prompt_placeholders, 'evaluate.negative_prompt="lowres "') == [
        "recipe.toml: evaluate.negative_prompt: must not start or end with a space: kohya strips the spaces "
        "off each prompt line"
    ]


# --- [kohya] passthrough ----------------------------------------------------------------------


@covers(passthrough.kohya_passthrough)
def test_kohya_passthrough(project: Project) -> None:
    assert found(project, passthrough.kohya_passthrough) == []
    assert found(project, passthrough.kohya_passthrough, "kohya.multires_noise_discount=0.3") == []
    assert found(
        project,
        passthrough.kohya_passthrough,
        "kohya.learning_rate=1e-3",
        "kohya.noise_offset=0.05",
        "kohya.noise_ofset=0.05",
        'kohya.multires_noise_discount="a"',
        "kohya.disable_mmap_load_safetensors=true",
    ) == [
        "recipe.toml: kohya.learning_rate: is set by the recipe as optimizer.lr: set it there instead",
        "recipe.toml: kohya.noise_offset: is set by the recipe as training.noise_offset: "
        "set it there instead",
        "recipe.toml: kohya.noise_ofset: 'noise_ofset' is not an option of train_network.py "
        "(did you mean 'noise_offset'?); kohya silently ignores unknown config keys.",
        "recipe.toml: kohya.multires_noise_discount: 'multires_noise_discount' must be a number (got \"a\").",
        "recipe.toml: kohya.disable_mmap_load_safetensors: 'disable_mmap_load_safetensors' is not an option of "
        "train_network.py (it is an option of sdxl_train_network.py, flux_train_network.py, "
        "sd3_train_network.py and 3 more); kohya silently ignores unknown config keys.",
    ]
    assert found(project, passthrough.kohya_passthrough, 'kohya.resume="x"', 'kohya.output_dir="o"') == [
        "recipe.toml: kohya.resume: is managed by lorabuild (lorabuild train resumes by itself): "
        "remove it from [kohya]",
        "recipe.toml: kohya.output_dir: is managed by lorabuild (the build folder): remove it from [kohya]",
    ]
    write_checkpoint(model_path(project), "sdxl")
    assert found(project, passthrough.kohya_passthrough, "kohya.disable_mmap_load_safetensors=true") == []


@covers(passthrough.kohya_text_values)
def test_kohya_text_values_are_one_line(project: Project) -> None:
    """``caption_prefix = "a\\nb"`` passed the check: kohya puts it into every caption and prompt."""
    assert found(project, passthrough.kohya_text_values, 'kohya.caption_prefix="masterpiece, "') == []
    assert found(
        project,
        passthrough.kohya_text_values,
        'kohya.caption_prefix="best\\nquality, "',
        'kohya.caption_suffix=", \\u2028end"',
        'kohya.caption_separator="\\t"',
        'kohya.lr_scheduler_args=["a=1", "b=\\u0085"]',
        'kohya.output_config="x\\ny"',  # managed by lorabuild: kohya_passthrough says so
    ) == [
        "recipe.toml: kohya.caption_prefix: must be one line of text without control characters: it has a "
        "line break (U+000A) at position 4 (got 'best\\nquality, ')",
        "recipe.toml: kohya.caption_suffix: must be one line of text without control characters: it has "
        "LINE SEPARATOR (U+2028) at position 2 (got ', \\u2028end')",
        "recipe.toml: kohya.caption_separator: must be one line of text without control characters: it has "
        "a tab (U+0009) at position 0 (got '\\t')",
        "recipe.toml: kohya.lr_scheduler_args[1]: must be one line of text without control characters: it has "
        "a control character (U+0085) at position 2 (got 'b=\\x85')",
    ]


@covers(model.other_builds)
def test_output_name_taken_by_another_recipe(project: Project) -> None:
    assert found(project, model.other_builds) == []
    other = project.build / "Other"
    other.mkdir(parents=True)
    (other / "plan.json").write_text(json.dumps({"name": "Test_v1", "recipe": "../../recipe.toml"}))
    assert found(project, model.other_builds) == []  # this recipe's own earlier build
    (other / "plan.json").write_text(json.dumps({"name": "Test_v1", "recipe": "../../other.toml"}))
    assert found(project, model.other_builds) == [
        f'recipe.toml: name: "Test_v1" is already the output name of another recipe '
        f"({(project.root / 'other.toml').resolve()}); building this one would overwrite its files: "
        "choose another name"
    ]
    assert found(project, model.other_builds, "name=Test_v2") == []


@covers(captions.remove_patterns_match)
def test_remove_pattern_matching_nothing(project: Project) -> None:
    assert found(project, captions.remove_patterns_match) == []
    assert found(
        project, captions.remove_patterns_match, 'captions.remove=["flower", "blonde_hair", "*_eyes"]'
    ) == [
        'recipe.toml: captions.remove[1]: warning: "blonde_hair" matches no tag in any caption',
        'recipe.toml: captions.remove[2]: warning: "*_eyes" matches no tag in any caption',
    ]
    assert (
        found(
            project,
            captions.remove_patterns_match,
            'captions.remove=["short hair", "*_background"]',
            "captions.tag_style=space",
        )
        == []
    )


# --- auto-tagging ------------------------------------------------------------------------------


def add_autotag(project: Project, table: str = '[captions.autotag]\nmodel_dir = "models/wd14"\n') -> None:
    """Append an autotag table to the recipe."""
    path = project.root / project.recipe
    path.write_text(path.read_text(encoding="utf-8") + "\n" + table, encoding="utf-8")


@covers(captions.tagger_model_files)
def test_tagger_model_folder_incomplete(project: Project) -> None:
    assert found(project, captions.tagger_model_files) == []  # no [captions.autotag]
    add_autotag(project)
    assert found(project, captions.tagger_model_files) == [
        "recipe.toml: captions.autotag.model_dir: folder not found: models/wd14: put a WD14 tagger's "
        "model.onnx and selected_tags.csv in it (from a SmilingWolf wd-*-tagger repository; lorabuild "
        "never downloads)"
    ]
    folder = project.root / "models" / "wd14"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"")
    assert found(project, captions.tagger_model_files) == [
        "recipe.toml: captions.autotag.model_dir: models/wd14 has no selected_tags.csv: kohya's WD14 "
        "tagger needs model.onnx and selected_tags.csv there (lorabuild never downloads)"
    ]
    (folder / "selected_tags.csv").write_text("tag_id,name,category,count\n", encoding="utf-8")
    assert found(project, captions.tagger_model_files) == []
    # A subset's own [captions] table brings its own autotag settings.
    add_subset(project, 'source = "data/char"\ntrigger = "x"\n')
    add_autotag(project, '[dataset.subsets.captions.autotag]\nmodel_dir = "models"\n')
    assert found(project, captions.tagger_model_files) == [
        "recipe.toml: dataset.subsets[1].captions.autotag.model_dir: models has no model.onnx or "
        "selected_tags.csv: kohya's WD14 tagger needs model.onnx and selected_tags.csv there (lorabuild "
        "never downloads)"
    ]


@covers(captions.tagger_packages)
def test_tagger_packages_not_installed(project: Project) -> None:
    assert found(project, captions.tagger_packages, packages=STACK) == []  # no [captions.autotag]
    add_autotag(project)
    assert found(project, captions.tagger_packages, packages=NO_STACK) == []  # a machine that only plans
    assert found(project, captions.tagger_packages, packages=STACK) == [
        "recipe.toml: captions.autotag: kohya's WD14 tagger needs onnx and onnxruntime, which are not "
        "installed: pip install onnx onnxruntime"
    ]
    assert found(project, captions.tagger_packages, packages={**STACK, "onnx": True}) == [
        "recipe.toml: captions.autotag: kohya's WD14 tagger needs onnxruntime, which is not installed: "
        "pip install onnxruntime"
    ]
    assert (
        found(project, captions.tagger_packages, packages={**STACK, "onnx": True, "onnxruntime": True}) == []
    )


def add_cutout(
    project: Project, table: str = '[images.remove_background]\nmodel = "models/u2net.onnx"\n'
) -> None:
    project.write_recipe(project.recipe.read_text(encoding="utf-8") + "\n" + table)


@covers(cutout.segmentation_model)
def test_segmentation_model_missing_or_unfit(project: Project) -> None:
    from tests.tiny_segmenter import signature_model, u2net_signature

    assert found(project, cutout.segmentation_model) == []  # no [images.remove_background]
    add_cutout(project)
    assert found(project, cutout.segmentation_model) == [
        "recipe.toml: images.remove_background.model: models/u2net.onnx: not found: name a local .onnx "
        "segmentation model (lorabuild never downloads)"
    ]
    u2net_signature(project.root / "models" / "u2net.onnx")
    assert found(project, cutout.segmentation_model) == []
    signature_model(
        project.root / "models" / "u2net.onnx", [("x", [1, 3, 320, 320])], [("y", [1, 2, 320, 320])]
    )
    assert found(project, cutout.segmentation_model) == [
        "recipe.toml: images.remove_background.model: models/u2net.onnx: gives y: float32[1, 2, 320, 320]; "
        "a segmentation model gives float[1, 1, H, W], one mask"
    ]
    # A subset's own table is checked under its own key; the recipe's, used by no subset, is not.
    project.write_recipe(
        project.recipe.read_text(encoding="utf-8").replace(
            "repeats = 2\n", 'repeats = 2\nremove_background = { model = "models/none.onnx" }\n', 1
        )
    )
    assert found(project, cutout.segmentation_model) == [
        "recipe.toml: dataset.subsets[0].remove_background.model: models/none.onnx: not found: name a local "
        ".onnx segmentation model (lorabuild never downloads)"
    ]


@covers(captions.blip_transformers)
def test_blip_with_transformers_that_took_its_generate(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lorabuild.probe import facts

    monkeypatch.setattr(facts, "package_version", lambda name: "4.54.1")
    add_autotag(project, '[captions.autotag]\ntagger = "blip"\nmodel_dir = "models"\n')
    (message,) = found(project, captions.blip_transformers)
    assert message.startswith(
        "recipe.toml: captions.autotag.tagger: kohya's BLIP captioner (finetune/make_captions.py) stops with "
        "transformers 4.54.1"
    )
    monkeypatch.setenv("LORABUILD_BLIP_ANY_TRANSFORMERS", "1")  # a kohya (or launcher) with a fixed decoder
    assert found(project, captions.blip_transformers) == []


@covers(cutout.segmentation_packages)
def test_segmentation_packages_not_installed(project: Project) -> None:
    add_cutout(project)
    assert found(project, cutout.segmentation_packages, packages=NO_STACK) == []  # a machine that only plans
    assert found(project, cutout.segmentation_packages, packages=STACK) == [
        "recipe.toml: images.remove_background: the segmentation model runs with onnxruntime, and numpy and "
        "onnxruntime are not installed: pip install numpy onnxruntime"
    ]
    assert (
        found(project, cutout.segmentation_packages, packages={**STACK, "numpy": True, "onnxruntime": True})
        == []
    )


# --- pick ---------------------------------------------------------------------------------------


@covers(pick.scoring_weights)
def test_scoring_weights_folder_and_head(project: Project) -> None:
    clip = project.root / "models" / "clip"
    head = project.root / "models" / "head.safetensors"
    assert found(project, pick.scoring_weights) == []
    fake_clip(clip, tokenizer=False)
    write_shapes(head, head_shapes(768))
    assert found(project, pick.scoring_weights, 'pick.clip_model="models/clip"') == [
        f"recipe.toml: pick.clip_model: {clip}: has no tokenizer.json (or vocab.json and merges.txt): copy a "
        "whole CLIP model folder from the Hugging Face Hub on a machine with network, e.g. `huggingface-cli "
        "download openai/clip-vit-large-patch14 --local-dir FOLDER` (lorabuild never downloads)"
    ]
    fake_clip(clip)
    assert found(project, pick.scoring_weights, 'pick.clip_model="models/clip"') == []
    assert found(
        project,
        pick.scoring_weights,
        'pick.clip_model="models/clip"',
        'pick.aesthetic_model="models/head.safetensors"',
    ) == [
        f"recipe.toml: pick.aesthetic_model: {head}: takes 768-number embeddings, but pick.clip_model's CLIP "
        f"({clip}) gives {EMBED}: use the head trained on that CLIP, or the CLIP the head was trained on "
        "(768: ViT-L/14)"
    ]
    assert found(project, pick.scoring_weights, 'pick.aesthetic_model="models/head.safetensors"') == [
        f"recipe.toml: pick.aesthetic_model: {head}: scores CLIP image embeddings, and pick.clip_model names no "
        "CLIP folder: set pick.clip_model to the CLIP the head was trained on (ViT-L/14 for LAION's heads)"
    ]
    write_shapes(head, head_shapes(EMBED))
    assert (
        found(
            project,
            pick.scoring_weights,
            'pick.clip_model="models/clip"',
            'pick.aesthetic_model="models/head.safetensors"',
        )
        == []
    )


@covers(pick.scoring_packages)
def test_scoring_packages_not_installed(project: Project) -> None:
    fake_clip(project.root / "models" / "clip")
    clip = 'pick.clip_model="models/clip"'
    assert found(project, pick.scoring_packages, packages=STACK) == []  # no CLIP folder: nothing runs
    assert found(project, pick.scoring_packages, clip, packages=NO_STACK) == []  # a machine that only plans
    assert found(project, pick.scoring_packages, clip, packages=STACK) == [
        "recipe.toml: pick.clip_model: the CLIP folder is loaded with transformers, which is not installed: "
        "pip install -e '.[train]'"
    ]
    assert found(project, pick.scoring_packages, clip, packages={**STACK, "transformers": True}) == []


@covers(dataset.caption_files)
def test_autotag_covers_images_without_captions(project: Project) -> None:
    (project.root / "data" / "char" / "001.txt").unlink()
    (project.root / "data" / "char" / "002.txt").write_text("")
    assert len(found(project, dataset.caption_files)) == 2
    add_autotag(project)  # every mode tags the images without a caption or with an empty one
    assert found(project, dataset.caption_files) == []


@covers(dataset.trigger_in_captions)
def test_trigger_in_captions_with_autotag(project: Project) -> None:
    (project.root / "data" / "char" / "002.txt").write_text("uiharu_kazari, smile")
    (project.root / "data" / "char" / "003.txt").unlink()
    add_autotag(project)
    # "missing": 003's caption comes from the tagger, which knows no trigger.
    assert found(project, dataset.trigger_in_captions, "captions.prepend_trigger=false") == [
        'recipe.toml: dataset.subsets[0].trigger: warning: "uiharu_kazari" is in only 1 of 4 staged '
        "captions (the WD14 tagger's tags, in 1 caption(s), never hold it): add it to the others or set "
        "captions.prepend_trigger = true"
    ]
    # "all": the tagger's tags replace 002's caption that held the trigger.
    off = ("captions.prepend_trigger=false", "captions.autotag.mode=all")
    assert found(project, dataset.trigger_in_captions, *off) == [
        'recipe.toml: dataset.subsets[0].trigger: "uiharu_kazari" is in none of the staged captions (the '
        "WD14 tagger's tags, in 4 caption(s), never hold it): set captions.prepend_trigger = true or add it "
        "to the captions"
    ]
    # A replace entry that maps a tagger tag to the trigger: the tagger's captions are not judged.
    assert (
        found(project, dataset.trigger_in_captions, *off, 'captions.replace={"1girl"="uiharu_kazari"}') == []
    )
    assert found(project, dataset.trigger_in_captions, "captions.autotag.mode=all") == []  # prepended


@covers(captions.tagger_script)
def test_tagger_script_missing(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORABUILD_SD_SCRIPTS", str(tmp_path / "kohya"))
    assert found(project, captions.tagger_script, packages=STACK) == []  # no [captions.autotag]
    add_autotag(project)
    assert found(project, captions.tagger_script, packages=NO_STACK) == []  # a machine that only plans
    assert found(project, captions.tagger_script, packages=STACK) == [
        f"recipe.toml: captions.autotag: kohya's WD14 tagger {(tmp_path / 'kohya').as_posix()}/finetune/"
        "tag_images_by_wd14_tagger.py is not there: check out kohya sd-scripts at the pinned commit (git "
        "submodule update --init, or lorabuild setup --sd-scripts CLONE; LORABUILD_SD_SCRIPTS names another "
        "checkout)"
    ]
    script = tmp_path / "kohya" / "finetune" / "tag_images_by_wd14_tagger.py"
    script.parent.mkdir(parents=True)
    script.write_text("", encoding="utf-8")
    assert found(project, captions.tagger_script, packages=STACK) == []


# --- launch ------------------------------------------------------------------------------------

DEEPSPEED = ("launch.gpus=2", "launch.deepspeed.zero_stage=2")


@covers(launch.deepspeed_package)
def test_deepspeed_not_installed(project: Project) -> None:
    assert found(project, launch.deepspeed_package, packages=STACK) == []  # no [launch.deepspeed]
    assert found(project, launch.deepspeed_package, *DEEPSPEED, packages=STACK) == [
        "recipe.toml: launch.deepspeed: DeepSpeed is not installed here: DS_BUILD_OPS=0 pip install "
        "deepspeed (or remove [launch.deepspeed])"
    ]
    assert found(project, launch.deepspeed_package, *DEEPSPEED, packages={**STACK, "deepspeed": True}) == []
    assert found(project, launch.deepspeed_package, *DEEPSPEED, packages=NO_STACK) == []


@covers(launch.deepspeed_processes)
def test_deepspeed_needs_several_gpus(project: Project) -> None:
    assert found(project, launch.deepspeed_processes, *DEEPSPEED) == []
    two_ids = ("launch.gpus=[0, 3]", "launch.deepspeed.zero_stage=1")
    assert found(project, launch.deepspeed_processes, *two_ids) == []
    message = (
        "recipe.toml: launch.deepspeed: kohya's DeepSpeed runs only in a multi-GPU launch (it reads "
        "WORLD_SIZE, which accelerate sets for 2 or more processes): set [launch] gpus = 2 or more, or "
        "remove [launch.deepspeed]"
    )
    for gpus in ("1", "0", "[1]"):
        assert found(project, launch.deepspeed_processes, f"launch.gpus={gpus}", DEEPSPEED[1]) == [message]


@covers(launch.deepspeed_offload)
def test_deepspeed_offload(project: Project) -> None:
    offload = "launch.deepspeed.offload_optimizer_device=cpu"
    assert found(project, launch.deepspeed_offload, *DEEPSPEED, offload) == []
    assert found(
        project,
        launch.deepspeed_offload,
        "launch.gpus=2",
        "launch.deepspeed.zero_stage=1",
        "launch.deepspeed.offload_optimizer_device=cpu",
        "launch.deepspeed.offload_param_device=nvme",
    ) == [
        "recipe.toml: launch.deepspeed.offload_optimizer_device: warning: optimizer offload applies to ZeRO "
        "stages 2 and 3 only (zero_stage = 1): it is ignored; set zero_stage = 2",
        "recipe.toml: launch.deepspeed.offload_param_device: warning: parameter offload applies to ZeRO "
        "stage 3 only (zero_stage = 1): it is ignored",
        'recipe.toml: launch.deepspeed.offload_param_nvme_path: offload_param_device = "nvme" needs the NVMe '
        "folder: set offload_param_nvme_path",
    ]


@covers(launch.launch_values_quote)
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            """launch.accelerate_args={ rdzv_conf = 'a="1 2"' }""",
            'launch.accelerate_args.rdzv_conf: \'a="1 2"\' contains a double quote (") at position 2, which '
            "Windows PowerShell 5.1 does not escape when it starts a program, so the program would lose it or "
            "split the argument there; accelerate_args are passed on accelerate's command line: change the value "
            "or leave the option out",
        ),
        (
            "launch.accelerate_args={ rdzv_conf = '' }",
            "launch.accelerate_args.rdzv_conf: '' is empty, and Windows PowerShell 5.1 leaves empty arguments out "
            "of the command line; accelerate_args are passed on accelerate's command line: change the value or "
            "leave the option out",
        ),
        (
            "launch.accelerate_args={ rdzv_conf = '--%' }",
            "launch.accelerate_args.rdzv_conf: '--%' is PowerShell's stop-parsing token, which PowerShell keeps "
            "for itself instead of passing it on; accelerate_args are passed on accelerate's command line: change "
            "the value or leave the option out",
        ),
        (
            "launch.accelerate_args={ rdzv_conf = 'a b\\' }",
            "launch.accelerate_args.rdzv_conf: 'a b\\' ends with a backslash (\\) and has whitespace, so Windows "
            'PowerShell 5.1 passes it as "...\\" and the program reads a double quote instead of the backslash; '
            "accelerate_args are passed on accelerate's command line: change the value or leave the option out",
        ),
        (
            'launch.env.HF_HOME="a\\u0000b"',
            "launch.env.HF_HOME: 'a\\x00b' contains a NUL character (U+0000) at position 1, which no "
            "command-line argument can contain; remove it from the value",
        ),
    ],
)
def test_values_the_scripts_cannot_carry(project: Project, setting: str, message: str) -> None:
    """`compile` refused these with a message that named no key (and told to rename a folder)."""
    assert found(project, launch.launch_values_quote) == []
    assert found(project, launch.launch_values_quote, setting) == [f"recipe.toml: {message}"]


def test_check_refuses_everything_compile_would(project: Project) -> None:
    """Each value above passes the schema, so only the rule stands between it and a failed compile."""
    from lorabuild.stages.check import check

    checked = check(project.recipe, ["launch.accelerate_args={ rdzv_conf = 'a=\"1 2\"' }"], project.build)
    assert checked.plan is None
    assert [p.key for p in checked.problems if p.severity == "error"] == ["launch.accelerate_args.rdzv_conf"]
    fine = check(project.recipe, ["launch.accelerate_args={ rdzv_conf = 'a=1 b=2' }"], project.build)
    assert fine.plan is not None


@covers(launch.multi_gpu_windows)
def test_multi_gpu_on_windows(project: Project) -> None:
    def on(platform: str, *overrides: str) -> list[str]:
        loaded = load_recipe(project.recipe, list(overrides))
        facts = replace(gather(loaded.recipe, loaded.path, project.build), platform=platform)
        return [format_problem(p.at(loaded.display)) for p in launch.multi_gpu_windows(loaded.recipe, facts)]

    assert on("win32") == []
    assert on("linux", "launch.gpus=2") == []
    assert on("win32", "launch.gpus=[0, 1]") == [
        "recipe.toml: launch.gpus: warning: 2 GPUs on Windows: NCCL does not exist there, so the processes "
        'synchronise through gloo, which is much slower; PyTorch 2.4+ may also need USE_LIBUV = "0" in '
        "[launch.env]. WSL2 has NCCL"
    ]


@covers(model.model_files)
def test_model_files(flux_project: Project) -> None:
    assert found(flux_project, model.model_files) == []
    assert found(flux_project, model.model_files, 'model.clip_l="models/t5xxl_fp16.safetensors"') == [
        "recipe.toml: model.clip_l: t5xxl_fp16.safetensors is the T5-XXL text encoder, not the CLIP-L text encoder "
        "(did you mean it for model.t5xxl?): point model.clip_l at the CLIP-L text encoder's file, "
        "e.g. clip_l.safetensors"
    ]


@covers(passthrough.compiled_options)
def test_compiled_options(project: Project) -> None:
    assert found(project, passthrough.compiled_options) == []
    assert found(project, passthrough.compiled_options, "training.cache_text_encoder_outputs=true") == [
        "recipe.toml: training.cache_text_encoder_outputs: SD1.x models are trained by kohya's train_network.py, "
        "which has no --cache_text_encoder_outputs: remove training.cache_text_encoder_outputs"
    ]


@covers(training.memory_preset)
def test_memory_preset(flux_project: Project) -> None:
    assert found(flux_project, training.memory_preset, "launch.vram_gb=8") == []
    assert found(flux_project, training.memory_preset, "launch.vram_gb=4") == [
        "recipe.toml: launch.vram_gb: warning: kohya's docs give FLUX.1 settings down to 8 GB; 4 GB may run out of "
        "memory even with the 8 GB settings applied (try a smaller dataset.resolution)"
    ]
