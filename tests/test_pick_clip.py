"""``[pick] clip_model`` and ``aesthetic_model``: the user's own CLIP folder and aesthetic head.

The check reads the folder's files alone (no torch): a missing tokenizer, a head of the wrong
width, a head without a CLIP are refused, naming the key, the folder and the file. The scores come
from a tiny random-weight CLIP (tests.tiny_clip) run by lorabuild/kohya/clipscore.py in kohya's
Python, over the constructed grid of tests.test_pick; what holds whatever the weights: a cell
that is a training image's exact copy has a CLIP cosine of 1 to it, and that image is its nearest.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lorabuild.probe.clipfolder import probe_aesthetic, probe_clip
from lorabuild.problems import format_problem
from lorabuild.score import clip as score_clip
from lorabuild.score import reason, score_build
from lorabuild.score.collect import training_files
from lorabuild.score.hashes import HashCache
from lorabuild.stages.check import check
from lorabuild.stages.report import write_report
from tests.conftest import Project, run_lorabuild
from tests.finished_build import Finished
from tests.test_pick import scored_build
from tests.tiny_clip import EMBED, fake_clip, head_shapes, write_clip, write_head, write_shapes

pytest.importorskip("imagehash", reason="the score extra (PyPI imagehash) is not installed")

needs_torch = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "open_clip")),
    reason="the CLIP scorer runs in kohya's Python stack (torch, transformers; the test tokenizer comes from "
    "open-clip-torch), which is not installed: pip install -e '.[train]'",
)


def problems(project: Project, *overrides: str) -> list[str]:
    """The check's problems on ``pick.*`` keys, as printed."""
    checked = check(project.recipe, list(overrides), project.build)
    return [format_problem(p) for p in checked.problems if p.key.startswith("pick.")]


# --- the check: files only, no torch ------------------------------------------------------------


def test_a_complete_folder_passes_the_check(project: Project) -> None:
    fake_clip(project.root / "models" / "clip")
    write_shapes(project.root / "models" / "head.safetensors", head_shapes(EMBED))
    assert (
        problems(project, 'pick.clip_model="models/clip"', 'pick.aesthetic_model="models/head.safetensors"')
        == []
    )
    found = probe_clip(project.root / "models" / "clip")
    assert not isinstance(found, str) and found.embed_dim == EMBED


def test_a_folder_without_its_tokenizer_is_refused_naming_the_file(project: Project) -> None:
    fake_clip(project.root / "models" / "clip", tokenizer=False)
    (message,) = problems(project, 'pick.clip_model="models/clip"')
    assert message.startswith(
        f"recipe.toml: pick.clip_model: {project.root / 'models' / 'clip'}: has no tokenizer.json "
        "(or vocab.json and merges.txt): copy a whole CLIP model folder from the Hugging Face Hub"
    )
    assert "huggingface-cli download openai/clip-vit-large-patch14 --local-dir FOLDER" in message
    assert message.endswith("(lorabuild never downloads)")


@pytest.mark.parametrize(
    ("remove", "said"),
    [
        ("preprocessor_config.json", "has no preprocessor_config.json:"),
        ("model.safetensors", "has no weights (model.safetensors or pytorch_model.bin):"),
        ("config.json", "has no config.json:"),
    ],
)
def test_each_missing_file_is_named(project: Project, remove: str, said: str) -> None:
    folder = fake_clip(project.root / "models" / "clip")
    (folder / remove).unlink()
    (message,) = problems(project, 'pick.clip_model="models/clip"')
    assert f"pick.clip_model: {folder}: {said}" in message


def test_a_text_encoder_alone_or_a_missing_folder_is_refused(project: Project) -> None:
    folder = fake_clip(project.root / "models" / "clip")
    (folder / "config.json").write_text('{"model_type": "clip_text_model"}')
    (message,) = problems(project, 'pick.clip_model="models/clip"')
    assert "config.json is not a CLIP model's (model_type 'clip_text_model', not 'clip'" in message
    (message,) = problems(project, 'pick.clip_model="models/nothing"')
    assert message.startswith(
        f"recipe.toml: pick.clip_model: {project.root / 'models' / 'nothing'}: folder not found:"
    )


def test_an_aesthetic_head_of_the_wrong_width_is_refused(project: Project) -> None:
    fake_clip(project.root / "models" / "clip")
    write_shapes(project.root / "models" / "head.safetensors", head_shapes(768))
    (message,) = problems(
        project, 'pick.clip_model="models/clip"', 'pick.aesthetic_model="models/head.safetensors"'
    )
    assert message == (
        f"recipe.toml: pick.aesthetic_model: {project.root / 'models' / 'head.safetensors'}: takes 768-number "
        f"embeddings, but pick.clip_model's CLIP ({project.root / 'models' / 'clip'}) gives {EMBED}: use the head "
        "trained on that CLIP, or the CLIP the head was trained on (768: ViT-L/14)"
    )


def test_an_aesthetic_head_needs_a_clip_and_its_layers(project: Project) -> None:
    head = write_shapes(project.root / "models" / "head.safetensors", head_shapes(EMBED))
    (message,) = problems(project, 'pick.aesthetic_model="models/head.safetensors"')
    assert "pick.aesthetic_model: " in message and "pick.clip_model names no CLIP folder" in message
    write_shapes(head, {"weight": (1, EMBED)})
    assert "has no layers.N.weight tensors (it holds weight): not an aesthetic head" in str(
        probe_aesthetic(head)
    )
    shapes = head_shapes(EMBED)
    shapes["layers.2.weight"] = (128, 1000)
    write_shapes(head, shapes)
    assert "layers.2 takes 1000 numbers but the layer before gives 1024" in str(probe_aesthetic(head))


def test_the_check_of_the_folder_imports_no_torch(project: Project) -> None:
    fake_clip(project.root / "models" / "clip")
    result = run_lorabuild("check", "recipe.toml", "--set", 'pick.clip_model="models/clip"', cwd=project.root)
    assert result.returncode == 0, result.stderr
    code = (
        "import sys; from pathlib import Path; from lorabuild.probe.clipfolder import probe_clip; "
        "probe_clip(Path('models/clip')); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_failed_run_is_a_note_naming_its_log(project: Project) -> None:
    # Files the check accepts, weights that no CLIPModel loads (or no torch to load them with).
    fake_clip(project.root / "models" / "clip")
    f = scored_build(project, overrides=('pick.clip_model="models/clip"',))
    listed = score_build(f.plan)
    (note,) = [n for n in listed.notes if n.startswith("CLIP scores not computed")]
    assert note.startswith(f"CLIP scores not computed (pick.clip_model {project.root / 'models' / 'clip'}): ")
    assert note.endswith(f"{(f.build / '.lorabuild' / 'clip.log').as_posix()}")
    # The other scores go on.
    assert len(listed.scores) == 18 and {(c.epoch, c.weight) for c in listed.ruled_out} == {
        (1, 0.6),
        (2, 0.8),
        (3, 1.0),
    }


# --- the scores: a tiny random CLIP in kohya's Python -------------------------------------------


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip")


def clip_build(project: Project, folder: Path, *overrides: str, head: str = "head.pth") -> Finished:
    """tests.test_pick's build, scored with the tiny CLIP and a head; epoch 3 x 1, seed 1 is an exact
    copy of the training image data/char/002.png."""
    shutil.copytree(folder, project.root / "models" / "clip")
    write_head(project.root / "models" / head)
    f = scored_build(
        project,
        overrides=('pick.clip_model="models/clip"', f'pick.aesthetic_model="models/{head}"', *overrides),
    )
    shutil.copyfile(project.root / "data" / "char" / "002.png", f.build / "grid" / "cells" / "e3_w1_s1.png")
    return f


@needs_torch
@pytest.mark.parametrize("head", ["head.pth", "head.safetensors"])
def test_clip_scores_every_cell(project: Project, clip_folder: Path, head: str) -> None:
    f = clip_build(project, clip_folder, head=head)
    told: list[tuple[str, int, int]] = []
    listed = score_build(f.plan, progress=lambda step, done, total: told.append((step, done, total)))
    assert not [n for n in listed.notes if "CLIP" in n]
    # The script's progress lines reach the progress line: 18 cells + 4 training images (no baselines).
    clip = [t for t in told if t[0] == "CLIP"]
    assert clip and clip[-1] == ("CLIP", 22, 22) and [t[1] for t in clip] == sorted(t[1] for t in clip)
    by_cell = {(s.cell.epoch, s.cell.weight, s.cell.seed): s.models for s in listed.scores}
    assert len(by_cell) == 18
    for said in by_cell.values():
        assert said.prompt_match is not None and -1.0 <= said.prompt_match <= 1.0
        assert said.style is not None and said.style_image is not None
        assert said.aesthetic is not None
    copied = by_cell[(3, 1.0, 1)]
    assert copied.style == pytest.approx(1.0, abs=1e-4)
    assert copied.style_image == "data/char/002.png"
    # Identical pictures: one embedding, one aesthetic score (epoch 2 x 0.8 collapsed on one picture).
    assert by_cell[(2, 0.8, 1)].aesthetic == pytest.approx(by_cell[(2, 0.8, 2)].aesthetic, abs=1e-5)
    # One prompt: one text embedding, so the same picture matches it the same.
    assert by_cell[(2, 0.8, 1)].prompt_match == pytest.approx(by_cell[(2, 0.8, 2)].prompt_match, abs=1e-5)
    assert "CLIP prompt match" in reason(listed.picks[0], listed)


@needs_torch
def test_clip_thresholds_warn_and_the_cache_runs_nothing_twice(
    project: Project, clip_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = clip_build(project, clip_folder, "pick.prompt_min=1", "pick.aesthetic_min=1000")
    first = score_build(f.plan)
    for c in (*first.picks, *first.rest):
        assert any(
            w.startswith("ignores its prompts: CLIP cosine ") and w.endswith("(under 1)") for w in c.warnings
        )
        assert any(w.startswith("aesthetic score ") and w.endswith("(under 1000)") for w in c.warnings)

    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CLIP scorer ran again")

    monkeypatch.setattr(score_clip, "_run", no_run)
    second = score_build(f.plan)
    assert [s.models for s in second.scores] == [s.models for s in first.scores]


@needs_torch
def test_pick_and_report_show_the_clip_scores(project: Project, clip_folder: Path) -> None:
    f = clip_build(project, clip_folder)
    sets = ["evaluate.seeds=[1, 2]", "pick.likeness=false", 'pick.clip_model="models/clip"']
    sets.append('pick.aesthetic_model="models/head.pth"')
    result = run_lorabuild("pick", "recipe.toml", *(a for s in sets for a in ("--set", s)), cwd=project.root)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[1]
    assert "; CLIP prompt match " in first and "; CLIP similarity to the nearest training image " in first
    assert "; aesthetic score " in first
    html = write_report(f.plan, f.build).read_text(encoding="utf-8")
    assert "prompt 0." in html or "prompt -0." in html
    assert "clip 1.00" in html  # the cell that is a training image's copy
    assert "aesthetic " in html


def test_scores_from_cached_embeddings_need_no_torch(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The arithmetic on embeddings the cache holds: cosines, the nearest training image, the warnings."""
    folder = fake_clip(project.root / "models" / "clip", width=3)
    f = scored_build(project, overrides=('pick.clip_model="models/clip"', "pick.prompt_min=0.5"))
    found = probe_clip(folder)
    assert not isinstance(found, str)
    kind = f"clip:{score_clip.model_key(found, None)[:16]}"
    cache = HashCache(f.build)
    axes = {0: [1.0, 0.0, 0.0], 1: [0.0, 1.0, 0.0], 2: [0.0, 0.0, 1.0], 3: [0.0, 0.6, 0.8]}
    staged = {name: rel for rel, name in training_files(f.plan)}
    for i, axis in axes.items():
        cache.put(
            cache.file_key(staged[f"data/char/{i:03d}.png"]), kind, {"embedding": axis, "aesthetic": None}
        )
    prompt = [0.6, 0.8, 0.0]
    cache.put(score_clip._text_key("uiharu_kazari, smile"), kind, prompt)
    cells = sorted(p.name for p in (f.build / "grid" / "cells").glob("e*.png"))
    for name in cells:
        embed = [0.0, 0.0, 1.0] if name.startswith("e3_") else [1.0, 0.0, 0.0]
        cache.put(cache.file_key(f"grid/cells/{name}"), kind, {"embedding": embed, "aesthetic": 5.0})
    cache.save()
    monkeypatch.setattr(score_clip, "_run", lambda *a, **k: pytest.fail("the CLIP scorer ran"))
    listed = score_build(f.plan)
    by_cell = {(s.cell.epoch, s.cell.weight, s.cell.seed): s.models for s in listed.scores}
    assert (
        by_cell[(3, 0.8, 2)].style == pytest.approx(1.0)
        and by_cell[(3, 0.8, 2)].style_image == "data/char/002.png"
    )
    assert by_cell[(1, 0.8, 1)].style_image == "data/char/000.png"
    assert by_cell[(3, 0.8, 2)].prompt_match == pytest.approx(0.0)
    assert by_cell[(1, 0.8, 1)].prompt_match == pytest.approx(0.6)
    assert by_cell[(1, 0.8, 1)].aesthetic == 5.0
    pairs = {(c.epoch, c.weight): c for c in (*listed.picks, *listed.rest, *listed.ruled_out)}
    assert any(w.startswith("ignores its prompts: CLIP cosine 0.000 ") for w in pairs[(3, 0.8)].warnings)
    assert not any(w.startswith("ignores its prompts") for w in pairs[(1, 0.8)].warnings)
