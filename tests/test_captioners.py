"""``[captions.autotag] tagger = "blip" | "git"``: sentences from kohya's own captioning scripts.

The fast tests check the command lines, the model folder rules and the modes with a stand-in for
the process seam; the ``real_trainer`` tests run kohya's ``finetune/make_captions.py`` (through the
tiny-BLIP launcher, :mod:`lorabuild.demo.tinyblip`) and ``make_captions_by_git.py`` on the tiny
models of :mod:`tests.tiny_captioner`, in ``prepare``, with the three modes.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lorabuild import pipeline
from lorabuild.kohya import runner, tagger
from lorabuild.kohya.tagger import captioner_argv, probe_model_dir
from lorabuild.recipe.schema import AutotagSection
from lorabuild.stages.check import check
from tests.conftest import SD_SCRIPTS, Project

STAGED = Path("build/Test_v1/dataset/2_uiharu_kazari")


def test_blip_argv() -> None:
    section = AutotagSection(
        tagger="blip", model_dir=Path("/m/blip"), beam_search=True, num_beams=3, max_length=40
    )
    assert captioner_argv(section, Path("/b/images"), Path("/k"), python="/venv/bin/python") == [
        "/venv/bin/python",
        "/k/finetune/make_captions.py",
        "/b/images",
        "--caption_weights=/m/blip/model_large_caption.pth",
        "--caption_extension=.caption",
        "--batch_size=1",
        "--max_length=40",
        "--min_length=5",
        "--top_p=0.9",
        "--beam_search",
        "--num_beams=3",
    ]


def test_git_argv() -> None:
    section = AutotagSection(tagger="git", model_dir=Path("/m/git"), batch_size=4)
    assert captioner_argv(section, Path("/b/images"), Path("/k"), python="py") == [
        "py",
        "/k/finetune/make_captions_by_git.py",
        "/b/images",
        "--model_id=/m/git",
        "--caption_extension=.caption",
        "--batch_size=4",
    ]


def test_model_folder_files(tmp_path: Path) -> None:
    assert probe_model_dir(tmp_path, "blip").missing == (
        "model_large_caption.pth",
        "bert-base-uncased/vocab.txt",
    )
    assert probe_model_dir(tmp_path, "git").missing == ("config.json", "preprocessor_config.json")
    assert not probe_model_dir(tmp_path / "none", "git").exists


class FakeCaptioner:
    """Stands in for the process seam: writes ``a girl <n>`` next to each image kohya would caption."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(
        self, argv: Sequence[str], cwd: Path, log: Path, env: Any = None, on_line: Any = None, **_: Any
    ) -> Any:
        self.calls.append(list(argv))
        folder = Path(argv[2])
        for n, image in enumerate(sorted(folder.iterdir())):
            image.with_suffix(".caption").write_text(f"a girl in a field {n}, smiling\n", encoding="utf-8")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("", encoding="utf-8")
        return runner.RunResult(returncode=0, interrupted=False, log=log)


AUTOTAG = '\n[captions.autotag]\ntagger = "{tagger}"\nmodel_dir = "models/{tagger}"\nmode = "{mode}"\n'


def autotag_project(project: Project, tagger_name: str, mode: str) -> None:
    for name in ("001.txt", "003.txt"):
        (project.root / "data" / "char" / name).unlink()
    recipe = (project.root / "recipe.toml").read_text(encoding="utf-8")
    project.write_recipe(recipe + AUTOTAG.format(tagger=tagger_name, mode=mode))


def staged_captions(project: Project) -> dict[str, str]:
    folder = project.root / STAGED
    return {p.stem: p.read_text(encoding="utf-8").strip() for p in sorted(folder.glob("*.txt"))}


def prepare(project: Project, *overrides: str) -> pipeline.RunReport:
    return pipeline.run(check(project.recipe, list(overrides), project.build), until="prepare")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "missing",
            {"001": "uiharu_kazari, a girl in a field 0, smiling", "002": "uiharu_kazari, 1girl, smile"},
        ),
        (
            "all",
            {
                "001": "uiharu_kazari, a girl in a field 1, smiling",
                "002": "uiharu_kazari, a girl in a field 2, smiling",
            },
        ),
        (
            "merge",
            {
                "001": "uiharu_kazari, a girl in a field 1, smiling",
                "002": "uiharu_kazari, 1girl, smile, a girl in a field 2, smiling",
            },
        ),
    ],
)
def test_modes_with_sentences(
    project: Project, monkeypatch: pytest.MonkeyPatch, mode: str, expected: dict[str, str]
) -> None:
    fake = FakeCaptioner()
    monkeypatch.setattr(runner, "run", fake)
    monkeypatch.setattr(tagger, "preflight", lambda *args: None)
    # The stand-in captions with any transformers (the installed one may be kohya's 4.54.1, which BLIP cannot).
    monkeypatch.setenv(tagger.BLIP_CHECK_OFF, "1")
    (project.root / "models" / "blip" / "bert-base-uncased").mkdir(parents=True)
    (project.root / "models" / "blip" / "model_large_caption.pth").write_bytes(b"weights")
    (project.root / "models" / "blip" / "bert-base-uncased" / "vocab.txt").write_text(
        "[PAD]\n", encoding="utf-8"
    )
    autotag_project(project, "blip", mode)
    before = project.tree_hash("data")
    prepare(project)
    captions = staged_captions(project)
    assert {k: captions[k] for k in expected} == expected
    assert len(fake.calls) == 1 and fake.calls[0][1].endswith("finetune/make_captions.py")
    assert project.tree_hash("data") == before
    prepare(project)  # nothing changed: no captioning
    prepare(project, "captions.move_to_end=['smiling']")  # new rules: the cached sentences
    assert len(fake.calls) == 1


def test_check_names_a_missing_captioner_folder(project: Project) -> None:
    autotag_project(project, "git", "missing")
    checked = check(project.recipe, [], project.build)
    (problem,) = [p for p in checked.problems if p.key == "captions.autotag.model_dir"]
    assert problem.message.startswith("folder not found: models/git: put a GIT model folder (config.json and")


# --- kohya's real scripts on tiny models -------------------------------------------------------

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None,
    reason="kohya's Python stack is not installed (torch, transformers): pip install -e '.[train]'",
)


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_captioner import write_blip

    return write_blip(tmp_path_factory.mktemp("blip") / "blip", SD_SCRIPTS)


@pytest.fixture(scope="module")
def git_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_captioner import write_git

    return write_git(tmp_path_factory.mktemp("git") / "git")


def _real(
    project: Project, monkeypatch: pytest.MonkeyPatch, name: str, folder: Path, mode: str
) -> dict[str, str]:
    import shutil

    from tests.tiny_captioner import TINYBLIP, WORDS

    shutil.copytree(folder, project.root / "models" / name)
    if name == "blip":
        monkeypatch.setenv("LORABUILD_SCRIPT_WRAPPER", str(TINYBLIP))
        # The launcher gives kohya's decoder the generate() transformers 4.50+ took away (see it).
        monkeypatch.setenv(tagger.BLIP_CHECK_OFF, "1")
    # The checkout's real folder: the launcher goes before a script found inside it by its real path.
    monkeypatch.setenv(
        "LORABUILD_SD_SCRIPTS", os.path.realpath(SD_SCRIPTS / "train_network.py").rpartition(os.sep)[0]
    )
    autotag_project(project, name, mode)
    before = project.tree_hash("data")
    report = prepare(project)
    assert report.stages[1].ran
    assert project.tree_hash("data") == before
    captions = staged_captions(project)
    for stem in ("001", "003"):  # no caption file: the generated sentence, the trigger first
        # Random weights may end a sentence at once: its words, if any, are the vocabulary's.
        words = captions[stem].removeprefix("uiharu_kazari").replace(",", " ").split()
        assert captions[stem].startswith("uiharu_kazari") and set(words) <= set(WORDS)
    assert (project.build / "Test_v1" / "autotag" / f"{name}.log").is_file()
    return captions


@pytest.mark.real_trainer
@needs_torch
@pytest.mark.parametrize("mode", ["missing", "all", "merge"])
def test_real_blip(project: Project, monkeypatch: pytest.MonkeyPatch, blip_folder: Path, mode: str) -> None:
    captions = _real(project, monkeypatch, "blip", blip_folder, mode)
    if mode == "missing":
        assert captions["002"] == "uiharu_kazari, 1girl, smile"
    elif mode == "merge":
        assert captions["002"].startswith("uiharu_kazari, 1girl, smile, ")
    else:
        assert "1girl" not in captions["002"]


@pytest.mark.real_trainer
@needs_torch
@pytest.mark.parametrize("mode", ["missing", "all", "merge"])
def test_real_git(project: Project, monkeypatch: pytest.MonkeyPatch, git_folder: Path, mode: str) -> None:
    captions = _real(project, monkeypatch, "git", git_folder, mode)
    if mode == "missing":
        assert captions["002"] == "uiharu_kazari, 1girl, smile"
    elif mode == "merge":
        assert captions["002"].startswith("uiharu_kazari, 1girl, smile")
    assert sys.executable


@pytest.mark.real_trainer
@needs_torch
def test_kohya_blip_still_stops_with_its_transformers(
    project: Project, monkeypatch: pytest.MonkeyPatch, blip_folder: Path
) -> None:
    """kohya's BLIP decoder has no generate() with transformers 4.50+: when this fails, kohya or its
    pin changed, and :data:`lorabuild.kohya.tagger.BLIP_GENERATE_BROKEN` and its rule can go."""
    import shutil

    from tests.tiny_captioner import TINYBLIP

    shutil.copytree(blip_folder, project.root / "models" / "blip")
    monkeypatch.setenv("LORABUILD_SCRIPT_WRAPPER", str(TINYBLIP))
    monkeypatch.setenv("TINYBLIP_KEEP_KOHYA_DECODER", "1")
    monkeypatch.setenv(
        "LORABUILD_SD_SCRIPTS", os.path.realpath(SD_SCRIPTS / "train_network.py").rpartition(os.sep)[0]
    )
    autotag_project(project, "blip", "missing")
    checked = check(project.recipe, [], project.build)
    (problem,) = [p for p in checked.problems if p.key == "captions.autotag.tagger"]
    assert "'BertLMHeadModel' object has no attribute 'generate'" in problem.message
    monkeypatch.setenv(tagger.BLIP_CHECK_OFF, "1")
    with pytest.raises(tagger.AutotagError, match="has no attribute 'generate'"):
        prepare(project)


def test_check_says_kohyas_blip_cannot_run_with_new_transformers(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lorabuild.probe import facts

    monkeypatch.setattr(facts, "package_version", lambda name: "4.54.1")
    (project.root / "models" / "blip" / "bert-base-uncased").mkdir(parents=True)
    (project.root / "models" / "blip" / "model_large_caption.pth").write_bytes(b"weights")
    (project.root / "models" / "blip" / "bert-base-uncased" / "vocab.txt").write_text(
        "[PAD]\n", encoding="utf-8"
    )
    autotag_project(project, "blip", "missing")
    checked = check(project.recipe, [], project.build)
    (problem,) = [p for p in checked.problems if p.key == "captions.autotag.tagger"]
    assert problem.message.startswith(
        "kohya's BLIP captioner (finetune/make_captions.py) stops with transformers 4.54.1"
    )
    assert 'Use tagger = "git"' in problem.message
    monkeypatch.setattr(facts, "package_version", lambda name: "4.49.0")
    checked = check(project.recipe, [], project.build)
    assert not [p for p in checked.problems if p.key == "captions.autotag.tagger"]
