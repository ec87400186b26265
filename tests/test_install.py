"""lorabuild install: the file set the webui's Lora page reads, in webui and ComfyUI trees."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lorabuild.build.saved import hash_file
from lorabuild.kohya import families
from lorabuild.problems import RecipeError, format_problem
from lorabuild.stages import install as install_stage
from lorabuild.stages.install import install, plan_install
from tests.conftest import RECIPE, Project, run_lorabuild, write_checkpoint, write_safetensors
from tests.finished_build import Finished, finished_build


@pytest.fixture(autouse=True)
def _no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LORABUILD_WEBUI", raising=False)
    monkeypatch.delenv("LORABUILD_COMFYUI", raising=False)
    monkeypatch.setitem(sys.modules, "lorabuild.render.losslog", None)  # no suggestion unless a test adds one


def webui_tree(root: Path) -> Path:
    (root / "models" / "Lora").mkdir(parents=True)
    (root / "models" / "Stable-diffusion").mkdir()
    (root / "webui.py").write_text("# the webui\n")
    return root


def comfy_tree(root: Path) -> Path:
    (root / "models" / "loras").mkdir(parents=True)
    (root / "models" / "checkpoints").mkdir()
    return root


def do_install(f: Finished, *, force: bool = False, dry_run: bool = False, **options: object) -> list[str]:
    planned = plan_install(f.plan, f.checked.loaded.recipe, display="recipe.toml", **options)  # type: ignore[arg-type]
    return [x.action for x in install(planned, force=force, dry_run=dry_run)]


def problems(exc: pytest.ExceptionInfo[RecipeError]) -> str:
    return "\n".join(format_problem(p) for p in exc.value.problems)


def test_webui_gets_model_preview_and_card(project: Project) -> None:
    f = finished_build(project)
    webui = webui_tree(project.root / "webui")
    assert do_install(f, epoch=2, webui=webui) == ["create", "create", "create"]
    lora = webui / "models" / "Lora"
    assert sorted(p.name for p in lora.iterdir()) == [
        "Test_v1.json",
        "Test_v1.preview.png",
        "Test_v1.safetensors",
    ]
    assert (lora / "Test_v1.safetensors").read_bytes() == (
        f.build / "output/Test_v1-000002.safetensors"
    ).read_bytes()
    # The preview is the first sheet's cell at epoch 2 and the default weight (middle of 0.6, 0.8, 1.0).
    assert (lora / "Test_v1.preview.png").read_bytes() == (f.build / "grid/cells/e2_c2.png").read_bytes()
    card = json.loads((lora / "Test_v1.json").read_text(encoding="utf-8"))
    assert card["sd version"] == "SD1"
    assert card["activation text"] == "uiharu_kazari"
    assert card["preferred weight"] == 0.8
    assert card["negative text"] == ""
    assert card["description"] == ""
    assert "Test_v1: epoch 2 of 3" in card["notes"]
    assert set(card) == {
        "description",
        "sd version",
        "activation text",
        "preferred weight",
        "negative text",
        "notes",
    }
    assert not [p for p in lora.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_weight_picks_the_preview_column_and_the_lora_folder_itself_is_accepted(project: Project) -> None:
    f = finished_build(project)
    lora = webui_tree(project.root / "webui") / "models" / "Lora"
    do_install(f, epoch=3, weight=0.6, webui=lora)
    assert (lora / "Test_v1.preview.png").read_bytes() == (f.build / "grid/cells/e3_c1.png").read_bytes()
    assert json.loads((lora / "Test_v1.json").read_text())["preferred weight"] == 0.6


def test_recipe_install_table(project: Project) -> None:
    project.write_recipe(
        RECIPE.replace('name = "Test_v1"', 'name = "Test_v1"\ndescription = "Kazari, 初春飾利"')
        + '\n[install]\nepoch = 1\nweight = 1.0\nwebui = "webui"\nnotes = "good at 0.8-1.0"\nnegative_text = "lowres"\n'
    )
    f = finished_build(project)
    webui_tree(project.root / "webui")
    do_install(f)
    lora = project.root / "webui" / "models" / "Lora"
    card = json.loads((lora / "Test_v1.json").read_text(encoding="utf-8"))
    assert card["description"] == "Kazari, 初春飾利"
    assert card["preferred weight"] == 1.0
    assert card["negative text"] == "lowres"
    assert card["notes"].startswith("good at 0.8-1.0\n\nTest_v1: epoch 1 of 3")
    assert (lora / "Test_v1.safetensors").read_bytes() == (
        f.build / "output/Test_v1-000001.safetensors"
    ).read_bytes()
    assert (lora / "Test_v1.preview.png").read_bytes() == (f.build / "grid/cells/e1_c3.png").read_bytes()


def test_comfyui_and_webui_together_and_env_setting(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = finished_build(project)
    comfy = comfy_tree(project.root / "ComfyUI")
    webui = webui_tree(project.root / "webui")
    monkeypatch.setenv("LORABUILD_WEBUI", str(webui))
    assert do_install(f, comfyui=comfy) == ["create"] * 6
    for folder in (webui / "models" / "Lora", comfy / "models" / "loras"):
        assert (folder / "Test_v1.safetensors").is_file()
        assert (folder / "Test_v1.preview.png").is_file()
        assert (folder / "Test_v1.json").is_file()


def test_dry_run_writes_nothing_and_reinstall_is_a_no_op(project: Project) -> None:
    f = finished_build(project)
    webui = webui_tree(project.root / "webui")
    lora = webui / "models" / "Lora"
    assert do_install(f, webui=webui, dry_run=True) == ["create", "create", "create"]
    assert list(lora.iterdir()) == []
    do_install(f, webui=webui)
    stamps = {p.name: p.stat().st_mtime_ns for p in lora.iterdir()}
    assert do_install(f, webui=webui) == ["identical"] * 3
    assert {p.name: p.stat().st_mtime_ns for p in lora.iterdir()} == stamps


def test_a_different_file_is_never_replaced_without_force(project: Project) -> None:
    f = finished_build(project)
    webui = webui_tree(project.root / "webui")
    lora = webui / "models" / "Lora"
    do_install(f, epoch=2, webui=webui)
    before = {p.name: p.read_bytes() for p in lora.iterdir()}
    with pytest.raises(RecipeError) as exc:
        do_install(f, epoch=3, webui=webui)
    text = problems(exc)
    assert (
        f"{(lora / 'Test_v1.safetensors').as_posix()}: exists and differs from the model of Test_v1 epoch 3"
        in text
    )
    assert "pass --force to replace it" in text
    assert {p.name: p.read_bytes() for p in lora.iterdir()} == before  # nothing written, not even the card
    assert do_install(f, epoch=3, webui=webui, force=True) == ["replace", "replace", "replace"]
    assert (lora / "Test_v1.safetensors").read_bytes() == (
        f.build / "output/Test_v1-000003.safetensors"
    ).read_bytes()


def test_a_card_edited_in_the_webui_is_kept(project: Project) -> None:
    f = finished_build(project)
    webui = webui_tree(project.root / "webui")
    do_install(f, webui=webui)
    card = webui / "models" / "Lora" / "Test_v1.json"
    card.write_text('{"activation text": "my own"}', encoding="utf-8")
    with pytest.raises(RecipeError, match=r"Test_v1\.json: exists and differs from the card"):
        do_install(f, webui=webui)
    assert card.read_text(encoding="utf-8") == '{"activation text": "my own"}'


def test_epoch_not_saved_lists_the_saved_ones(project: Project) -> None:
    f = finished_build(project, epochs=(2, 3))
    webui = webui_tree(project.root / "webui")
    with pytest.raises(RecipeError) as exc:
        do_install(f, epoch=1, webui=webui)
    assert problems(exc) == (
        "--epoch: epoch 1 was not saved: build/Test_v1/output holds epoch(s) 2, 3; "
        "choose one with --epoch N or install.epoch in the recipe"
    )


def test_recipe_epoch_not_saved_names_the_key(project: Project) -> None:
    project.write_recipe(RECIPE + "\n[install]\nepoch = 8\n")
    f = finished_build(project)
    with pytest.raises(RecipeError) as exc:
        do_install(f, webui=webui_tree(project.root / "webui"))
    assert problems(exc).startswith(
        "recipe.toml: install.epoch: epoch 8 was not saved: build/Test_v1/output holds epoch(s) 1, 2, 3"
    )


def test_folder_errors(project: Project) -> None:
    f = finished_build(project)
    with pytest.raises(RecipeError) as exc:
        do_install(f, webui=project.root / "nowhere")
    assert problems(exc) == (
        f"--webui: folder not found: {(project.root / 'nowhere').as_posix()}: give the webui's folder "
        "(the one containing models/Lora) or that Lora folder itself"
    )
    (project.root / "fresh" / "models").mkdir(parents=True)
    with pytest.raises(RecipeError, match="has a models folder but no models/Lora: start the webui once"):
        do_install(f, webui=project.root / "fresh")
    with pytest.raises(RecipeError, match="no folder to install into: pass --webui DIR"):
        do_install(f)


def test_no_grid_installs_without_preview_with_a_warning(project: Project) -> None:
    f = finished_build(project, grid=False)
    webui = webui_tree(project.root / "webui")
    planned = plan_install(f.plan, f.checked.loaded.recipe, webui=webui)
    assert planned.notes == (
        "warning: no grid yet (run lorabuild grid): installing without a preview picture",
    )
    install(planned)
    assert sorted(p.name for p in (webui / "models/Lora").iterdir()) == [
        "Test_v1.json",
        "Test_v1.safetensors",
    ]


def test_weight_not_in_grid_warns(project: Project) -> None:
    f = finished_build(project)
    planned = plan_install(
        f.plan, f.checked.loaded.recipe, weight=0.7, webui=webui_tree(project.root / "webui")
    )
    assert planned.preview is None
    assert (
        "the grid has no picture at epoch 3 and weight 0.7 (its epochs: 1, 2, 3; weights: 0.6, 0.8, 1)"
        in planned.notes[0]
    )


def test_preview_from_an_image_file_is_converted_to_png(project: Project) -> None:
    Image.new("RGB", (40, 30), (1, 2, 3)).save(project.root / "cover.jpg")
    project.write_recipe(RECIPE + '\n[install]\npreview = "cover.jpg"\n')
    f = finished_build(project)
    webui = webui_tree(project.root / "webui")
    do_install(f, webui=webui)
    with Image.open(webui / "models/Lora/Test_v1.preview.png") as image:
        assert (image.format, image.size) == ("PNG", (40, 30))


def test_suggested_epoch_is_a_note_not_a_choice(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    module = types.ModuleType("lorabuild.render.losslog")
    module.read_scalars = lambda logs: {"loss/validation": [(1, 0.3), (2, 0.1)]}  # type: ignore[attr-defined]
    module.suggest_epoch = lambda scalars: 2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lorabuild.render.losslog", module)
    f = finished_build(project)
    planned = plan_install(
        f.plan, f.checked.loaded.recipe, display="recipe.toml", webui=webui_tree(project.root / "w")
    )
    assert planned.epoch == 3
    assert (
        "the validation loss is lowest at epoch 2: lorabuild install recipe.toml --epoch 2"
        in planned.notes[0]
    )
    assert plan_install(f.plan, f.checked.loaded.recipe, epoch=3, webui=project.root / "w").notes == ()


def test_cli_install(project: Project) -> None:
    finished_build(project)
    webui = webui_tree(project.root / "webui")
    dry = run_lorabuild(
        "install", "recipe.toml", "--epoch", "2", "--webui", "webui", "--dry-run", cwd=project.root
    )
    assert dry.returncode == 0, dry.stderr
    assert "would create  webui/models/Lora/Test_v1.safetensors (184 B)" in dry.stdout
    assert '"activation text": "uiharu_kazari"' in dry.stdout
    assert list((webui / "models/Lora").iterdir()) == []
    done = run_lorabuild("install", "recipe.toml", "--epoch", "2", "--webui", "webui", cwd=project.root)
    assert done.returncode == 0, done.stderr
    assert "installed Test_v1 epoch 2 (output/Test_v1-000002.safetensors), weight 0.8" in done.stdout
    again = run_lorabuild("install", "recipe.toml", "--epoch", "3", "--webui", "webui", cwd=project.root)
    assert again.returncode == 2
    assert "pass --force to replace it" in again.stderr
    assert "Traceback" not in again.stderr


def test_install_table_errors_are_one_line_each(project: Project) -> None:
    from lorabuild.recipe.load import load_recipe

    project.write_recipe(RECIPE + "\n[install]\nepoch = 0\npreview = 3\nweight = 3\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(project.recipe)
    assert problems(exc).splitlines() == [
        'recipe.toml: install.epoch: must be a saved epoch\'s number (1 or more), "last" or "suggested" (got 0)',
        "recipe.toml: install.weight: must be at most 2.0 (got 3)",
        'recipe.toml: install.preview: must be "grid", "none" or the path of an image file (got 3)',
    ]


def family_project(project: Project, family: str) -> None:
    """Turn the project into a FLUX.1 or Chroma one: its DiT header, text encoders and autoencoder."""
    files = families.get(family).model_files
    model = "".join(f'{f.key} = "models/{f.example}"\n' for f in files)
    project.write_recipe(
        RECIPE.replace(
            'base = "models/base.safetensors"\nclip_skip = 2\n',
            f'base = "models/dit.safetensors"\nfamily = "{family}"\n{model}',
        )
        .replace("shuffle_caption = true\nkeep_tokens = 1\n", "")
        .replace('mixed_precision = "no"', 'mixed_precision = "bf16"')
    )
    write_checkpoint(project.root / "models" / "dit.safetensors", family)
    for f in files:
        write_safetensors(project.root / "models" / f.example, [f"{f.component}.weight"])


@pytest.mark.parametrize("family", ["flux", "chroma"])
def test_a_flux_family_card_says_flux_for_forge(project: Project, family: str) -> None:
    family_project(project, family)
    f = finished_build(project)
    assert f.plan.family == family
    webui = webui_tree(project.root / "webui")
    assert do_install(f, epoch=2, webui=webui) == ["create", "create", "create"]
    card = json.loads((webui / "models/Lora/Test_v1.json").read_text(encoding="utf-8"))
    # Forge's Lora page files a LoRA under its flux preset by this value (ui_extra_networks_lora.py).
    assert card["sd version"] == "Flux"
    assert card["activation text"] == "uiharu_kazari"


def read_safetensors(path: Path) -> tuple[bytes, dict[str, Any], bytes]:
    """The header's bytes, its JSON and the byte buffer of a safetensors file, read by hand."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + length]
    return header, json.loads(header), data[8 + length :]


def test_embed_preview_writes_the_picture_and_trigger_into_the_copy_only(project: Project) -> None:
    project.write_recipe(RECIPE + "\n[install]\nembed_preview = true\n")
    f = finished_build(project)
    source = f.build / "output/Test_v1-000002.safetensors"
    before = (source.read_bytes(), source.stat().st_mtime_ns)
    webui = webui_tree(project.root / "webui")
    comfy = comfy_tree(project.root / "ComfyUI")
    planned = plan_install(f.plan, f.checked.loaded.recipe, epoch=2, webui=webui, comfyui=comfy)
    assert planned.embedded == ("ssmd_cover_images", "modelspec.trigger_phrase")
    assert [x.action for x in install(planned)] == ["create"] * 6
    assert (source.read_bytes(), source.stat().st_mtime_ns) == before  # the build's file is only read

    for lora in (webui / "models/Lora", comfy / "models/loras"):
        installed = lora / "Test_v1.safetensors"
        raw, header, tensors = read_safetensors(installed)
        _, original, original_tensors = read_safetensors(source)
        assert tensors == original_tensors  # every tensor byte as the build saved it
        # A valid header: the webui asserts it opens with {" (read_metadata_from_safetensors); padded
        # with spaces so the buffer starts on an 8-byte boundary; metadata values are strings.
        assert raw.startswith(b'{"') and len(raw) % 8 == 0 and raw.rstrip(b" ").endswith(b"}")
        assert {k: v for k, v in header.items() if k != "__metadata__"} == {
            k: v for k, v in original.items() if k != "__metadata__"
        }
        metadata = header["__metadata__"]
        assert all(isinstance(v, str) for v in metadata.values())
        assert metadata["format"] == "pt"  # what the file held is kept
        assert metadata["modelspec.trigger_phrase"] == "uiharu_kazari"
        # As the webui's fetch_cover_images and ComfyUI's get_model_previews read it.
        covers = json.loads(metadata["ssmd_cover_images"])
        assert base64.b64decode(covers[0]) == (lora / "Test_v1.preview.png").read_bytes()
        with Image.open(io.BytesIO(base64.b64decode(covers[0]))) as image:
            assert image.format == "PNG"
        # The card names the installed bytes; the webui's LoRA hash (tensor bytes) is the build's.
        card = json.loads((lora / "Test_v1.json").read_text(encoding="utf-8"))
        assert f"file sha256 {hashlib.sha256(installed.read_bytes()).hexdigest()}." in card["notes"]
        assert hash_file(installed).model_hash == hash_file(source).model_hash
        assert hash_file(installed).sha256 != hash_file(source).sha256
        assert not [p for p in lora.iterdir() if p.name.startswith(".")]
    assert do_install(f, epoch=2, webui=webui, comfyui=comfy) == ["identical"] * 6


def test_embed_preview_without_a_picture_embeds_the_trigger(project: Project) -> None:
    project.write_recipe(RECIPE + '\n[install]\nembed_preview = true\npreview = "none"\n')
    f = finished_build(project)
    webui = webui_tree(project.root / "webui")
    planned = plan_install(f.plan, f.checked.loaded.recipe, webui=webui)
    assert planned.embedded == ("modelspec.trigger_phrase",)
    install(planned)
    _, header, _ = read_safetensors(webui / "models/Lora/Test_v1.safetensors")
    assert "ssmd_cover_images" not in header["__metadata__"]


def test_embed_preview_warns_when_comfyui_would_not_read_the_header(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(install_stage, "COMFYUI_HEADER_LIMIT", 64)
    project.write_recipe(RECIPE + "\n[install]\nembed_preview = true\n")
    f = finished_build(project)
    planned = plan_install(f.plan, f.checked.loaded.recipe, webui=webui_tree(project.root / "webui"))
    assert any("ComfyUI reads no embedded cover from a header over 64 B" in n for n in planned.notes)


def test_embed_preview_refuses_a_broken_file(project: Project) -> None:
    project.write_recipe(RECIPE + "\n[install]\nembed_preview = true\n")
    f = finished_build(project)
    (f.build / "output/Test_v1-000003.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(RecipeError) as exc:
        do_install(f, webui=webui_tree(project.root / "webui"))
    assert problems(exc).startswith(
        "recipe.toml: install.embed_preview: cannot rewrite the header of output/Test_v1-000003.safetensors: "
    )
