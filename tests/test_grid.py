"""The grid stage: cell planning and keys, the gen_img prompt file and argv, caching, failures.

The plumbing tests run a stand-in for kohya's ``gen_img.py`` (it writes the PNGs its prompt file
names with ``--f``) through the real process seam; the ``real_trainer`` test renders a small
grid with the real gen_img on the CPU test model.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from lorabuild.build.gridmanifest import read_manifest
from lorabuild.kohya import families
from lorabuild.kohya.options import options
from lorabuild.plan import gridcells
from lorabuild.plan.evaluate import GridSettings
from lorabuild.probe import modelfile
from lorabuild.problems import RecipeError
from lorabuild.recipe.load import LoadedRecipe, load_recipe
from lorabuild.rules import evaluate
from lorabuild.stages import grid
from lorabuild.stages.check import check, require_plan
from tests.conftest import RECIPE, SD_SCRIPTS, Project, run_lorabuild, write_safetensors
from tests.fakekohya import FAKE_FLUX_INFERENCE, FAKE_GEN_IMG

GRID_RECIPE = RECIPE.replace(
    "epochs = 3\n", "epochs = 3\nsave_every_n_epochs = 1\nmax_token_length = 225\n"
) + (
    "\n[evaluate]\n"
    'prompts = ["{trigger}, 1girl, smile", "{trigger}, from side"]\n'
    'negative_prompt = "lowres, bad hands"\n'
    "seeds = [1, 2]\n"
    "weights = [0.5, 1.0]\n"
    "steps = 4\n"
    "width = 64\n"
    "height = 64\n"
)


@pytest.fixture
def fake_gen_img(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kohya folder whose gen_img.py is the stand-in; returns the file its calls are logged to."""
    root = tmp_path_factory.mktemp("fake-sd-scripts")
    (root / "gen_img.py").write_text(FAKE_GEN_IMG, encoding="utf-8")
    calls = root / "calls.jsonl"
    monkeypatch.setenv("LORABUILD_SD_SCRIPTS", str(root))
    monkeypatch.setenv("FAKE_GEN_IMG_CALLS", str(calls))
    monkeypatch.delenv("FAKE_GEN_IMG", raising=False)
    return calls


def calls_of(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def grid_project(
    project: Project, epochs: tuple[int, ...] = (1, 2, 3), text: str = GRID_RECIPE
) -> tuple[LoadedRecipe, grid.Plan]:
    project.write_recipe(text)
    checked = check(project.recipe, [], Path("build"))
    plan = require_plan(checked)
    for epoch in epochs:
        write_safetensors(
            plan.build_dir / f"output/Test_v1-{epoch:06d}.safetensors", [f"lora_unet_e{epoch}.alpha"]
        )
    return checked.loaded, plan


def settings(**changes: object) -> GridSettings:
    base = GridSettings(
        family="sd15",
        base="models/base.safetensors",
        vae=None,
        tokenizer_cache_dir="/cache/tokenizers",
        v_parameterization=False,
        clip_skip=2,
        embeddings_multiples=3,
        network_module="networks.lora",
        dtype="fp32",
        no_half_vae=False,
        prompts=("kazari, smile", "kazari, side"),
        negative_prompt="lowres",
        seeds=(1, 2),
        weights=(0.5, 1.0),
        baseline=True,
        sampler="euler_a",
        steps=4,
        cfg_scale=7.0,
        width=64,
        height=64,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


DIGESTS = {1: "d1", 2: "d2", 3: "d3"}
FILES = {e: f"output/N-{e:06d}.safetensors" for e in DIGESTS}


def plan_of(
    s: GridSettings,
    digests: dict[int, str] = DIGESTS,
    epochs: tuple[int, ...] = (1, 2, 3),
    base: str = "b",
) -> gridcells.GridPlan:
    return gridcells.plan_grid(s, epochs, FILES, digests, base_digest=base, vae_digest=None, kohya="abc")


# --- planning and keys ---------------------------------------------------------------------------


def test_cells_and_sheets() -> None:
    g = plan_of(settings())
    # 2 prompts x 2 seeds x (3 epochs x 2 weights + one baseline shared by every row)
    assert len(g.cells) == 4 * 7
    assert len({c.key for c in g.cells}) == len(g.cells)
    assert [s.id for s in g.sheets] == ["p00_s1", "p00_s2", "p01_s1", "p01_s2"]
    sheet = g.sheets[3]
    assert sheet.epochs == (1, 2, 3) and sheet.columns == (None, 0.5, 1.0)
    assert {row[0].key for row in sheet.cells} == {sheet.cells[0][0].key}  # one baseline per sheet
    assert sheet.cells[0][0].epoch is None and sheet.cells[0][0].weight is None
    assert (sheet.cells[2][2].epoch, sheet.cells[2][2].weight, sheet.cells[2][2].seed) == (3, 1.0, 2)
    assert sheet.cells[1][1].prompt == "kazari, side"
    # Render order: baselines first, then each epoch and weight's cells next to each other.
    runs = [(c.epoch, c.weight) for c in g.cells]
    assert runs[:4] == [(None, None)] * 4
    assert runs[4:8] == [(1, 0.5)] * 4
    assert gridcells.batch_size(g.cells, 8) == 4 and gridcells.batch_size(g.cells, 2) == 2


def test_no_baseline() -> None:
    g = plan_of(settings(baseline=False))
    assert len(g.cells) == 4 * 6
    assert g.sheets[0].columns == (0.5, 1.0)


def keys(g: gridcells.GridPlan) -> dict[tuple[int | None, float | None, int, int], str]:
    return {(c.epoch, c.weight, c.prompt_index, c.seed): c.key for c in g.cells}


def changed(a: gridcells.GridPlan, b: gridcells.GridPlan) -> set[tuple[int | None, float | None, int, int]]:
    ka, kb = keys(a), keys(b)
    return {k for k in ka if ka[k] != kb.get(k)}


def test_keys_change_only_with_their_inputs() -> None:
    s = settings()
    g = plan_of(s)
    assert keys(plan_of(s)) == keys(g)  # stable
    # A retrained epoch: only its cells.
    only_two = changed(g, plan_of(s, {**DIGESTS, 2: "other"}))
    assert only_two and {k[0] for k in only_two} == {2}
    assert len(only_two) == 2 * 4
    # A new seed list: the old seed's cells keep their keys.
    g2 = plan_of(replace(s, seeds=(1, 3)))
    assert all(keys(g)[k] == v for k, v in keys(g2).items() if k[3] == 1)
    # One prompt edited: only its cells.
    edited = changed(g, plan_of(replace(s, prompts=("kazari, smile", "kazari, back"))))
    assert {k[2] for k in edited} == {1} and len(edited) == 14
    # The epoch number is not in the key: the same file under another epoch is the same cell.
    same = plan_of(s, {1: "d1", 2: "d2", 3: "d1"})
    assert len(same.cells) == len(g.cells) - 2 * 4  # rendered once, shown in both rows
    assert same.sheets[0].cells[2][1].key == same.sheets[0].cells[0][1].key == keys(g)[(1, 0.5, 0, 1)]
    # What every cell shares changes every cell.
    everything = set(keys(g))
    for change in (
        {"negative_prompt": "bad"},
        {"steps": 5},
        {"sampler": "ddim"},
        {"cfg_scale": 6.5},
        {"width": 128},
        {"clip_skip": 1},
        {"embeddings_multiples": 1},
        {"dtype": "fp16"},
    ):
        assert changed(g, plan_of(replace(s, **change))) == everything, change  # type: ignore[arg-type]
    assert changed(g, plan_of(s, base="other base")) == everything
    assert (
        changed(
            g,
            gridcells.plan_grid(s, (1, 2, 3), FILES, DIGESTS, base_digest="b", vae_digest=None, kohya="new"),
        )
        == everything
    )


# --- the prompt file and argv --------------------------------------------------------------------


def test_prompt_lines() -> None:
    s = settings(seeds=(1234,), prompts=("kazari, smile",))
    g = plan_of(s, epochs=(2, 3))
    cells = {(c.epoch, c.weight): c for c in g.cells}
    networks = gridcells.network_order(g.cells)
    assert networks == (2, 3)
    line = gridcells.prompt_line(s, cells[(3, 0.5)], networks)
    assert line == (
        "kazari, smile --n lowres --w 64 --h 64 --s 4 --l 7.0 --d 1234 --am 0.0,0.5 "
        f"--f {cells[(3, 0.5)].key}.png"
    )
    assert " --am 0.0,0.0 " in gridcells.prompt_line(s, cells[(None, None)], networks)
    # Without a negative prompt or loaded networks, those options are left out.
    bare = gridcells.prompt_line(replace(s, negative_prompt=""), cells[(None, None)], ())
    assert " --n " not in bare and " --am " not in bare
    text = gridcells.prompt_file_text(s, g.cells, networks)
    assert text.count("\n") == len(g.cells) and not text.startswith("#")


def gen_img_argv(s: GridSettings, **options: Any) -> list[str]:
    """The command the family's grid renderer builds for ``s``."""
    return families.get(s.family).grid.argv(s, **options)


def test_argv_uses_only_gen_img_options() -> None:
    s = settings(vae="vae.safetensors", dtype="fp16", no_half_vae=True)
    argv = gen_img_argv(
        s,
        script="/k/gen_img.py",
        outdir="grid/.render/out",
        prompt_file="grid/.render/prompts.txt",
        network_files=["output/a.safetensors", "output/b.safetensors"],
        batch=4,
        python="py",
    )
    assert argv[:3] == ["py", "/k/gen_img.py", "--v1"]
    known = options("gen_img.py")
    spellings = {o for spec in known.values() for o in spec.option_strings}
    used = [a for a in argv[2:] if a.startswith("--")]
    assert set(used) <= spellings, set(used) - spellings
    for name in ("network_module", "network_weights"):
        assert known[name].kind == "list"

    def value(option: str) -> list[str]:
        i = argv.index(option)
        rest = argv[i + 1 :]
        end = next((j for j, a in enumerate(rest) if a.startswith("--")), len(rest))
        return rest[:end]

    assert value("--network_module") == ["networks.lora", "networks.lora"]
    assert value("--network_weights") == ["output/a.safetensors", "output/b.safetensors"]
    assert value("--max_embeddings_multiples") == ["3"] and value("--clip_skip") == ["2"]
    assert value("--sampler") == ["euler_a"] and s.sampler in (known["sampler"].choices or ())
    assert value("--W") == ["64"] and value("--batch_size") == ["4"]
    assert value("--tokenizer_cache_dir") == ["/cache/tokenizers"] and value("--vae") == ["vae.safetensors"]
    assert "--fp16" in argv and "--no_half_vae" in argv and "--network_pre_calc" in argv
    sdxl = gen_img_argv(
        settings(family="sdxl", clip_skip=None, dtype="fp32"),
        script="g",
        outdir="o",
        prompt_file="p",
        network_files=[],
    )
    assert "--sdxl" in sdxl and "--clip_skip" not in sdxl and "--network_module" not in sdxl
    assert not any(a in sdxl for a in ("--fp16", "--bf16", "--network_pre_calc"))
    v = gen_img_argv(
        settings(family="sd2", v_parameterization=True),
        script="g",
        outdir="o",
        prompt_file="p",
        network_files=[],
    )
    assert "--v2" in v and "--v_parameterization" in v


def test_every_recipe_sampler_is_a_gen_img_sampler() -> None:
    from typing import get_args

    from lorabuild.recipe.schema import Sampler

    assert set(get_args(Sampler)) <= set(options("gen_img.py")["sampler"].choices or ())


def test_prompt_problems_are_the_checks_own(project: Project) -> None:
    """The grid refuses what the check's rule refuses (the same function), and a recipe without prompts."""
    project.write_recipe(GRID_RECIPE)
    loaded = load_recipe(project.recipe)
    assert grid.prompt_problems(loaded.recipe) == []
    loaded = load_recipe(
        project.recipe, ['evaluate.prompts=["{style}", "a --n b"]', 'evaluate.negative_prompt="x --w 5"']
    )
    problems = grid.prompt_problems(loaded.recipe)
    assert problems == list(evaluate.prompt_problems(loaded.recipe))
    assert [p.key for p in problems] == [
        "evaluate.prompts[0]",
        "evaluate.prompts[1]",
        "evaluate.negative_prompt",
    ]
    loaded = load_recipe(project.recipe, ["evaluate.prompts=[]"])
    (problem,) = grid.prompt_problems(loaded.recipe)
    assert problem.key == "evaluate.prompts" and "[evaluate] prompts = [" in problem.message


def test_choose_epochs() -> None:
    assert grid.choose_epochs([1, 2, 3], [1, 3], "all") == [1, 3]
    assert grid.choose_epochs([1, 2, 3], [1, 2, 3], [3, 1, 3]) == [1, 3]
    with pytest.raises(grid.GridError, match="run lorabuild train first"):
        grid.choose_epochs([1, 2], [], "all")
    with pytest.raises(RecipeError) as info:
        grid.choose_epochs([2, 4], [2, 4], [2, 3, 5])
    (problem,) = info.value.problems
    assert problem.key == "evaluate.epochs" and "3, 5 are not saved" in problem.message
    assert "2, 4" in problem.message
    with pytest.raises(grid.GridError, match=r"epoch\(s\) 4 are missing"):
        grid.choose_epochs([2, 4], [2], [2, 4])


def test_parse_epochs() -> None:
    assert grid.parse_epochs("2, 4,8") == [2, 4, 8]
    for bad in ("", "2,x", "0", "-1"):
        with pytest.raises(ValueError, match="like 2,4,8"):
            grid.parse_epochs(bad)


# --- rendering through the process seam (stand-in gen_img) ---------------------------------------


def test_render_then_nothing_to_render(project: Project, fake_gen_img: Path) -> None:
    loaded, plan = grid_project(project)
    said: list[str] = []
    report = grid.render_grid(plan, loaded, say=said.append)
    assert (report.cells, report.rendered) == (28, 28)
    (argv,) = calls_of(fake_gen_img)
    assert argv.count("networks.lora") == 3
    assert "--network_pre_calc" not in argv  # 64 px at 4 steps: running the networks costs less than merging
    assert argv[argv.index("--network_weights") + 1 : argv.index("--network_weights") + 4] == [
        f"output/Test_v1-{e:06d}.safetensors" for e in (1, 2, 3)
    ]
    build = plan.build_dir
    assert (build / "logs" / "grid.log").read_text().count("prompt ") == 28
    assert not list((build / "grid").glob(".render-*"))  # the temporary folder is gone
    sheets = read_manifest(build)
    assert sheets is not None and len(sheets) == 4
    sheet = sheets[0]
    assert sheet.prompt == "uiharu_kazari, 1girl, smile" and sheet.seed == 1
    assert [r.epoch for r in sheet.rows] == [1, 2, 3]
    assert [c.weight for c in sheet.columns] == [None, 0.5, 1.0]
    for row in sheet.cells:
        for rel in row:
            assert rel is not None and (build / rel).is_file()
    assert sheet.cells[0][0] == sheet.cells[2][0]  # the baseline serves every row
    assert sheet.cell(2, 1.0) != sheet.cell(3, 1.0)
    assert [p.name for p in report.sheets] == [f"sheet_{s.id}.png" for s in sheets]
    assert all(p.is_file() for p in report.sheets)

    said.clear()
    again = grid.render_grid(plan, loaded, say=said.append)
    assert again.rendered == 0 and len(calls_of(fake_gen_img)) == 1
    assert any("nothing to render" in line for line in said)


def test_only_changed_cells_are_rendered(project: Project, fake_gen_img: Path) -> None:
    loaded, plan = grid_project(project)
    grid.render_grid(plan, loaded)
    # Epoch 2 retrained (new bytes): only its cells, with only its network loaded.
    write_safetensors(plan.build_dir / "output/Test_v1-000002.safetensors", ["other.alpha", "x.alpha"])
    report = grid.render_grid(plan, loaded)
    assert report.rendered == 2 * 4
    argv = calls_of(fake_gen_img)[-1]
    assert argv.count("networks.lora") == 1 and "output/Test_v1-000002.safetensors" in argv
    # --epochs picks rows; --force renders them again.
    report = grid.render_grid(plan, loaded, epochs=[1], force=True)
    assert (report.cells, report.rendered) == (12, 12)
    sheets = read_manifest(plan.build_dir)
    assert sheets is not None and [r.epoch for r in sheets[0].rows] == [1]


def test_a_missing_png_fails_and_keeps_the_rest(
    project: Project, fake_gen_img: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded, plan = grid_project(project, epochs=(1,))
    monkeypatch.setenv("FAKE_GEN_IMG", "skip_last")
    with pytest.raises(grid.GridError) as info:
        grid.render_grid(plan, loaded)
    message = str(info.value)
    assert "status 0 but did not write 1 of 12 cell(s)" in message
    assert (plan.build_dir / "logs" / "grid.log").as_posix() in message
    assert info.value.exit_code == 2
    monkeypatch.setenv("FAKE_GEN_IMG", "ok")
    assert grid.render_grid(plan, loaded).rendered == 1  # the 11 written cells were kept


def test_gen_img_failure_is_diagnosed(
    project: Project, fake_gen_img: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded, plan = grid_project(project, epochs=(1,))
    monkeypatch.setenv("FAKE_GEN_IMG", "oom")
    with pytest.raises(grid.GridError) as info:
        grid.render_grid(plan, loaded)
    message = str(info.value)
    assert message.startswith("gen_img failed (0 of 12 cell(s) rendered): the GPU ran out of memory")
    assert "logs/grid.log" in message and "OutOfMemoryError" in message


def test_errors_before_rendering(project: Project, fake_gen_img: Path) -> None:
    loaded, plan = grid_project(project, epochs=())
    with pytest.raises(grid.GridError, match="run lorabuild train first"):
        grid.render_grid(plan, loaded)
    with pytest.raises(RecipeError) as info:  # the check refuses it before the grid would
        grid_project(project, text=GRID_RECIPE + "epochs = [2, 7]\n")
    assert [(p.file, p.key) for p in info.value.problems] == [("recipe.toml", "evaluate.epochs")]
    assert "7 are not saved" in info.value.problems[0].message
    loaded, plan = grid_project(project, text=RECIPE)
    with pytest.raises(RecipeError, match=re.escape("add `[evaluate] prompts = [")):
        grid.render_grid(plan, loaded)
    assert calls_of(fake_gen_img) == []


def test_blank_cells_are_reported(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), (0, 0, 0)).save(tmp_path / "black.png")
    noisy = Image.new("RGB", (8, 8), (0, 0, 0))
    noisy.putpixel((3, 3), (9, 9, 9))
    noisy.save(tmp_path / "noisy.png")
    assert grid.is_blank(tmp_path / "black.png") and not grid.is_blank(tmp_path / "noisy.png")
    assert grid.is_png(tmp_path / "noisy.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "noisy.png").read_bytes()[:-5])
    assert not grid.is_png(tmp_path / "cut.png") and not grid.is_png(tmp_path / "absent.png")


def test_cli(project: Project, fake_gen_img: Path) -> None:
    project.write_recipe(GRID_RECIPE)
    first = run_lorabuild("grid", "recipe.toml", "--epochs", "1")
    assert first.returncode == 2, first.stderr
    assert "run lorabuild train first" in first.stderr and "Traceback" not in first.stderr
    grid_project(project)
    ok = run_lorabuild("grid", "recipe.toml", "--epochs", "1,3")
    assert ok.returncode == 0, ok.stderr
    assert "ok: Test_v1: 20 cell(s), rendered 20" in ok.stdout
    again = run_lorabuild("grid", "recipe.toml", "--epochs", "1,3")
    assert "rendered nothing" in again.stdout and len(calls_of(fake_gen_img)) == 1
    bad = run_lorabuild("grid", "recipe.toml", "--epochs", "4")
    assert bad.returncode == 2 and "--epochs: epoch(s) 4 are not saved" in bad.stderr


# --- the real gen_img ----------------------------------------------------------------------------


def tiny_lora(model_dir: Path, path: Path, seed: int, dim: int = 4, scale: float = 0.05) -> Path:
    """A small random LoRA for the test model: every U-Net attention projection and TE q/v, kohya's names."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, folder, pattern in (
        ("lora_unet_", "unet", r"(.*attn[12]\.to_(?:q|k|v|out\.0))\.weight$"),
        ("lora_te_", "text_encoder", r"(text_model\.encoder\.layers\.\d+\.self_attn\.(?:q|v)_proj)\.weight$"),
    ):
        (file,) = sorted((model_dir / folder).glob("*.safetensors"))
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                m = re.match(pattern, name)
                if not m:
                    continue
                out_dim, in_dim = f.get_slice(name).get_shape()[:2]
                module = prefix + m[1].replace(".", "_")
                tensors[f"{module}.lora_down.weight"] = torch.randn(dim, in_dim, generator=generator) * scale
                tensors[f"{module}.lora_up.weight"] = torch.randn(out_dim, dim, generator=generator) * scale
                tensors[f"{module}.alpha"] = torch.tensor(float(dim))
    assert len(tensors) > 30
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora"})
    return path


@pytest.mark.real_trainer
def test_real_gen_img_renders_a_small_grid(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("torch", "diffusers", "transformers", "safetensors"):
        pytest.importorskip(
            name, reason=f"kohya's Python stack is not installed ({name}): pip install -e '.[train]'"
        )
    import numpy as np

    from lorabuild.demo.testmodel import ensure_test_model

    model = ensure_test_model()
    monkeypatch.setenv("LORABUILD_SD_SCRIPTS", str(SD_SCRIPTS))
    text = GRID_RECIPE.replace(
        'base = "models/base.safetensors"',
        f'base = {json.dumps(str(model.model_dir))}\nfamily = "sd15"\ntokenizer_cache_dir = {json.dumps(str(model.tokenizer_cache_dir))}',
    )
    text = re.sub(
        r"resolution = \[512, 512\]",
        "resolution = [64, 64]\nmin_bucket_reso = 64\nmax_bucket_reso = 128",
        text,
    )
    text = re.sub(r"(?s)\[evaluate\].*", "", text) + (
        '[evaluate]\nprompts = ["{trigger}, 1girl, smile"]\nseeds = [7]\nweights = [1.0]\nsteps = 2\n'
    )
    project.write_recipe(text)
    checked = check(project.recipe, [], Path("build"))
    plan = require_plan(checked)
    for epoch in (1, 3):
        tiny_lora(model.model_dir, plan.build_dir / f"output/Test_v1-{epoch:06d}.safetensors", seed=epoch)
    # Merged weights (--network_pre_calc): with the networks run as branches instead (what 64 px
    # at 2 steps would choose), epoch 1's cell at this seed samples to NaN on the random-weight
    # test model, a black image (test_blank_cells_are_reported covers how that is told).
    report = grid.render_grid(plan, checked.loaded, epochs=[1, 3], pre_calc=True)
    assert (report.cells, report.rendered) == (3, 3)
    assert report.blank == ()
    sheets = read_manifest(plan.build_dir)
    assert sheets is not None
    (sheet,) = sheets
    pixels = {}
    for row, epoch in zip(sheet.cells, (1, 3), strict=True):
        for rel, weight in zip(row, ("base", "1.0"), strict=True):
            assert rel is not None
            with Image.open(plan.build_dir / rel) as im:
                assert im.size == (64, 64)
                pixels[(epoch, weight)] = np.asarray(im.convert("RGB"), dtype=np.int16)
    for image in pixels.values():
        assert image.std() > 1  # not one flat (NaN -> black) colour
    assert (pixels[(1, "base")] == pixels[(3, "base")]).all()
    assert not (pixels[(1, "1.0")] == pixels[(1, "base")]).all()
    assert not (pixels[(1, "1.0")] == pixels[(3, "1.0")]).all()
    log = (plan.build_dir / "logs" / "grid.log").read_text(encoding="utf-8")
    assert "network mul: [1.0, 0.0]" in log and "network mul: [0.0, 1.0]" in log
    again = grid.render_grid(plan, checked.loaded, epochs=[1, 3])
    assert again.rendered == 0


def test_pre_calc_is_chosen_where_merging_costs_less_than_running_every_network() -> None:
    tutorial = settings(width=512, height=512, steps=20)
    cpu_demo = settings(width=64, height=64, steps=2)
    assert gridcells.use_pre_calc(tutorial, batch=1, networks=10)
    assert not gridcells.use_pre_calc(cpu_demo, batch=1, networks=10)
    assert gridcells.use_pre_calc(settings(steps=80), batch=4, networks=10)  # 80 x 4 x (2 x 2) = 1280 >= 320
    assert not gridcells.use_pre_calc(tutorial, batch=1, networks=0)  # the baseline alone: nothing to merge


# --- FLUX.1 / Chroma: flux_minimal_inference.py --interactive (stand-in) -------------------------

FLUX_RECIPE = (
    GRID_RECIPE.replace(
        'base = "models/base.safetensors"\nclip_skip = 2\n',
        'base = "models/flux.safetensors"\nfamily = "flux"\nclip_l = "models/clip_l.safetensors"\n'
        't5xxl = "models/t5xxl.safetensors"\nae = "models/ae.safetensors"\n',
    )
    .replace("max_token_length = 225\n", "")
    .replace("shuffle_caption = true\n", "")
    .replace('attention = "sdpa"\n', 'attention = "sdpa"\n\n[launch]\nenv = { HF_HOME = "/hf" }\n')
)


@pytest.fixture
def fake_flux(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kohya folder whose flux_minimal_inference.py is the stand-in; returns the file it logs to."""
    root = tmp_path_factory.mktemp("fake-sd-scripts")
    (root / "flux_minimal_inference.py").write_text(FAKE_FLUX_INFERENCE, encoding="utf-8")
    calls = root / "calls.jsonl"
    monkeypatch.setenv("LORABUILD_SD_SCRIPTS", str(root))
    monkeypatch.setenv("FAKE_FLUX_CALLS", str(calls))
    monkeypatch.delenv("FAKE_FLUX", raising=False)
    monkeypatch.delenv("LORABUILD_SCRIPT_WRAPPER", raising=False)
    return calls


def flux_calls(log: Path) -> tuple[list[list[str]], list[str]]:
    """The stand-in's argv of each run, and every line it was fed."""
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [v for k, v in entries if k == "argv"], [v for k, v in entries if k == "line"]


def flux_dit(project: Project) -> None:
    """A DiT file the recipe names the family of (the probe still files real FLUX headers as untrainable)."""
    write_safetensors(project.root / "models" / "flux.safetensors", ["dit.weight"])


def flux_project(project: Project, text: str = FLUX_RECIPE) -> tuple[LoadedRecipe, grid.Plan]:
    models = project.root / "models"
    flux_dit(project)
    for name in ("clip_l", "t5xxl", "ae"):
        write_safetensors(models / f"{name}.safetensors", [f"{name}.weight"])
    return grid_project(project, epochs=(1, 2), text=text)


def test_flux_grid_is_one_paced_process(project: Project, fake_flux: Path) -> None:
    loaded, plan = flux_project(project)
    settings = plan.grid
    assert (settings.guidance, settings.cfg_scale, settings.flux_dtype) == (3.5, 1.0, "float32")
    said: list[str] = []
    report = grid.render_grid(plan, loaded, epochs=[1, 2], say=said.append)
    # 2 prompts x 2 seeds x (2 epochs x 2 weights + the baseline)
    assert (report.cells, report.rendered) == (20, 20)
    (argv,), lines = flux_calls(fake_flux)
    assert len(lines) == 20  # every line was asked for (the stand-in stops on an early one)
    work = argv[argv.index("--output_dir") + 1]
    assert re.fullmatch(r"grid/\.render-\d+/out", work)
    assert argv[argv.index("--ckpt_path") :] == [
        "--ckpt_path",
        "../../models/flux.safetensors",
        "--model_type",
        "flux",
        "--clip_l",
        "../../models/clip_l.safetensors",
        "--t5xxl",
        "../../models/t5xxl.safetensors",
        "--ae",
        "../../models/ae.safetensors",
        "--dtype",
        "float32",
        "--output_dir",
        work,
        "--lora_weights",
        "output/Test_v1-000001.safetensors;1.0",
        "output/Test_v1-000002.safetensors;1.0",
        "--interactive",
    ]
    # Baselines first (every multiplier 0), then each epoch and weight: only that epoch's file on.
    assert lines[0] == (
        "uiharu_kazari, 1girl, smile --w 64 --h 64 --s 4 --d 1 --g 3.5 --c 1.0 --m 0.0,0.0 --n lowres, bad hands"
    )
    multipliers = [line.split(" --m ")[1].split(" --")[0] for line in lines]
    assert (
        multipliers == ["0.0,0.0"] * 4 + ["0.5,0.0"] * 4 + ["1.0,0.0"] * 4 + ["0.0,0.5"] * 4 + ["0.0,1.0"] * 4
    )
    # Named by the second, the stand-in's files would overwrite each other: every cell is its own.
    build = plan.build_dir
    sheets = read_manifest(build)
    assert sheets is not None and len(sheets) == 4
    files = {rel for s in sheets for row in s.cells for rel in row}
    assert len(files) == 20 and all(rel is not None and grid.is_png(build / rel) for rel in files)
    assert len({(build / rel).read_bytes() for rel in files if rel}) == 20
    assert [line for line in said if line.startswith("grid: cell ")][-1] == "grid: cell 20/20"
    assert any("with flux_minimal_inference" in line for line in said)
    assert not list((build / "grid").glob(".render-*"))
    assert "Saved image to" in (build / "logs" / "grid.log").read_text()
    assert grid.render_grid(plan, loaded, epochs=[1, 2]).rendered == 0
    assert len(flux_calls(fake_flux)[0]) == 1


def test_flux_argv_uses_only_flux_minimal_inference_options(project: Project) -> None:
    _, plan = flux_project(project)
    renderer = families.get(plan.grid.family).grid
    argv = renderer.argv(plan.grid, script="/k/flux_minimal_inference.py", outdir="o", network_files=["a"])
    known = options("flux_minimal_inference.py")
    spellings = {o for spec in known.values() for o in spec.option_strings}
    used = [a for a in argv[2:] if a.startswith("--")]
    assert used and set(used) <= spellings, set(used) - spellings
    assert known["lora_weights"].kind == "list" and known["interactive"].kind == "flag"
    assert argv[argv.index("--model_type") + 1] in (known["model_type"].choices or ())


def test_flux_keys_cover_its_model_files_and_guidance(project: Project, fake_flux: Path) -> None:
    loaded, plan = flux_project(project)
    before = {c.key for c in grid.plan_build_grid(plan, loaded).cells}
    write_safetensors(project.root / "models" / "t5xxl.safetensors", ["t5xxl.other"])
    assert not before & {c.key for c in grid.plan_build_grid(plan, loaded).cells}
    s = plan.grid
    keyed = plan_of(s)
    for change in ({"guidance": 2.0}, {"apply_t5_attn_mask": True}, {"model_type": "chroma"}):
        assert changed(keyed, plan_of(replace(s, **change))) == set(keys(keyed)), change  # type: ignore[arg-type]


def test_flux_grid_interrupted_keeps_the_finished_cells(
    project: Project, fake_flux: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded, plan = flux_project(project)
    monkeypatch.setenv("FAKE_FLUX", "interrupt_after:3")
    with pytest.raises(grid.GridInterrupted) as info:
        grid.render_grid(plan, loaded, epochs=[1])
    assert info.value.exit_code == 130
    assert "grid interrupted (SIGINT): 3 of 12 cell(s) rendered and kept" in str(info.value)
    monkeypatch.setenv("FAKE_FLUX", "ok")
    assert grid.render_grid(plan, loaded, epochs=[1]).rendered == 9


def test_chroma_grid_line(project: Project, fake_flux: Path) -> None:
    text = FLUX_RECIPE.replace('family = "flux"', 'family = "chroma"').replace(
        'clip_l = "models/clip_l.safetensors"\n', ""
    )
    text = text.replace('negative_prompt = "lowres, bad hands"\n', "")
    loaded, plan = flux_project(project, text)
    grid.render_grid(plan, loaded, epochs=[1])
    (argv,), lines = flux_calls(fake_flux)
    assert "--clip_l" not in argv and argv[argv.index("--model_type") + 1] == "chroma"
    assert "--apply_t5_attn_mask" in argv
    assert lines[0].startswith(
        "uiharu_kazari, 1girl, smile --w 64 --h 64 --s 4 --d 1 --g 0.0 --c 4.0 --m 0.0 --n low quality"
    )
    # kohya's in-training sampler: Chroma's --g 0 and --l 4 (docs/flux_train_network.md), a negative prompt.
    assert " --l 4 --g 0 --ss euler_a --n low quality, ugly" in plan.sample_prompts


def test_flux_prompts_must_not_hold_dashes(project: Project) -> None:
    project.write_recipe(FLUX_RECIPE.replace("{trigger}, from side", "{trigger}, a--b"))
    flux_dit(project)
    checked = check(project.recipe, [], Path("build"))
    assert [(p.key, p.message) for p in checked.problems if p.key.startswith("evaluate")] == [
        (
            "evaluate.prompts[1]",
            "must not contain '--' for FLUX.1/Chroma: flux_minimal_inference.py splits its prompt lines at every '--'",
        )
    ]


@pytest.mark.real_trainer
def test_real_flux_minimal_inference_renders_the_whole_grid_in_one_process(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A tiny FLUX.1-dev LoRA trained by the real kohya (2 epochs), its grid (2 epochs x 2 weights and the
    baseline) rendered by the real flux_minimal_inference.py through tinyflux.py: one process, every cell a PNG."""
    import time

    from tests import test_real_flux as real

    for name in ("torch", "accelerate", "transformers", "safetensors", "sentencepiece", "open_clip"):
        pytest.importorskip(
            name, reason=f"kohya's Python stack is not installed ({name}): pip install -e '.[train]'"
        )
    from lorabuild.demo.fluxmodel import ensure_flux_test_model

    model = ensure_flux_test_model(sd_scripts=SD_SCRIPTS)
    folder = tmp_path_factory.mktemp("flux-dev-grid")
    options = {
        "pretrained_model_name_or_path": model.flux_dev.as_posix(),
        "clip_l": model.clip_l.as_posix(),
        **real.common_options(model, folder / "output"),
        "guidance_scale": 1.0,
        "timestep_sampling": "flux_shift",
        "learning_rate": 1e-2,  # a visible effect at 64 px (FAMILIES.md: 1e-4 changes < 0.01/255)
    }
    loras, _ = real.train(folder, options)
    monkeypatch.setenv("LORABUILD_SD_SCRIPTS", str(SD_SCRIPTS))
    monkeypatch.setenv("LORABUILD_SCRIPT_WRAPPER", str(real.LAUNCHER))
    env = {**real.ENV, "HF_HOME": str(model.hf_home)}
    env.pop("PYTHONUNBUFFERED")
    text = FLUX_RECIPE.replace(
        'env = { HF_HOME = "/hf" }', "env = " + json.dumps(env).replace(":", " =")
    ).replace('base = "models/flux.safetensors"', f"base = {json.dumps(str(model.flux_dev))}")
    for name in ("clip_l", "t5xxl", "ae"):
        text = text.replace(f'"models/{name}.safetensors"', json.dumps(str(getattr(model, name))))
    text = re.sub(r"(?s)\[evaluate\].*", "", text) + (
        '[evaluate]\nprompts = ["{trigger}, a red square"]\nseeds = [7]\nweights = [0.5, 1.0]\nsteps = 2\n'
        "width = 64\nheight = 64\n"
    )
    project.write_recipe(text)
    # main's probe still files a FLUX header as a family lorabuild does not train (the WIP families).
    monkeypatch.delitem(modelfile.UNTRAINED_LABELS, "flux", raising=False)
    checked = check(project.recipe, [], Path("build"))
    plan = require_plan(checked)
    for epoch, lora in zip((1, 2), loras, strict=True):
        target = plan.build_dir / f"output/Test_v1-{epoch:06d}.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lora.read_bytes())
    started = time.monotonic()
    report = grid.render_grid(plan, checked.loaded, epochs=[1, 2])
    wall = time.monotonic() - started
    print(
        f"\n[tiny FLUX] lorabuild grid, {report.cells} cells in one flux_minimal_inference process: {wall:.1f} s"
    )
    assert (report.cells, report.rendered) == (5, 5)
    log = (plan.build_dir / "logs" / "grid.log").read_text(encoding="utf-8")
    assert log.count("Saved image to") == 5 and log.count("Loading t5xxl") <= 1
    assert "Invalid number of multipliers" not in log
    sheets = read_manifest(plan.build_dir)
    assert sheets is not None
    (sheet,) = sheets
    files = {rel for row in sheet.cells for rel in row}
    assert len(files) == 5
    for rel in files:
        assert rel is not None and grid.is_png(plan.build_dir / rel)
        with Image.open(plan.build_dir / rel) as im:
            assert im.size == (64, 64)
