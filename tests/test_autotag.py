"""Auto-tagging with kohya's WD14 tagger: the pure parts, a fake tagger, and the real script.

The pure tests (merging, argv, the tag list rewrite, reading kohya's JSON, the cache) run
anywhere. The ``real_trainer`` tests run ``vendor/sd-scripts/finetune/tag_images_by_wd14_tagger.py``
for real on a tiny ONNX model that :mod:`tests.tiny_tagger` writes, and skip, saying why, without
kohya's stack, onnx or onnxruntime.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from lorabuild.kohya import runner, tagging
from lorabuild.kohya import tagger as autotag
from lorabuild.kohya.runner import RunResult
from lorabuild.kohya.tagger import (
    AutotagError,
    TaggerPass,
    characters_as_general,
    combine,
    merge_tags,
    needs_tags,
    read_output,
    tagger_argv,
    tagger_env,
    tagger_passes,
)
from lorabuild.problems import RecipeError
from lorabuild.recipe.captions import apply_rules, join_tags
from lorabuild.recipe.load import load_recipe
from lorabuild.recipe.schema import AutotagSection, CaptionRules
from tests.conftest import RECIPE, SD_SCRIPTS, Project, write_image

TAG_LIST = """\
tag_id,name,category,count
9000,general,9,100
9001,sensitive,9,100
9002,questionable,9,100
9003,explicit,9,100
9004,1girl,0,100
9005,short_hair,0,100
9006,uiharu_kazari_(toaru),4,100
"""


def section(model_dir: Path, **kw: object) -> AutotagSection:
    return AutotagSection.model_validate({"model_dir": model_dir, **kw})


def write_model_folder(folder: Path, tag_list: str = TAG_LIST) -> Path:
    """A model folder as the rules and tag_images look at it (the model's bytes are not read)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"not a real model")
    (folder / "selected_tags.csv").write_text(tag_list, encoding="utf-8")
    return folder


# --- merging -----------------------------------------------------------------------------------


def test_merge_tags_by_mode() -> None:
    existing, tagged = ["1girl", "short hair", "smile"], ["1girl", "short_hair", "flower", "flower"]
    assert merge_tags(existing, tagged, "missing") == existing
    assert merge_tags([], tagged, "missing") == tagged
    assert merge_tags(existing, tagged, "all") == tagged
    # merge: the caption's tags first, then the tagger's new ones; short_hair is short hair.
    assert merge_tags(existing, tagged, "merge") == ["1girl", "short hair", "smile", "flower"]
    assert merge_tags([], tagged, "merge") == ["1girl", "short_hair", "flower"]
    with pytest.raises(ValueError, match="unknown autotag mode"):
        merge_tags(existing, tagged, "replace")


def test_which_images_are_tagged() -> None:
    assert needs_tags([], "missing") and not needs_tags(["1girl"], "missing")
    assert needs_tags(["1girl"], "all") and needs_tags(["1girl"], "merge") and needs_tags([], "merge")


def test_tagger_output_then_the_caption_rules() -> None:
    """The tagger's tags reach the staged caption through the rules, as the tutorial edits them."""
    rules = CaptionRules.model_validate(
        {"remove": ["short_hair", "*_theme"], "move_to_end": ["watermark"], "tag_style": "space"}
    )
    tagged = ["watermark", "1girl", "red_theme", "short_hair", "uiharu_kazari"]
    caption = merge_tags(["smile"], tagged, "merge")
    assert (
        join_tags(apply_rules(caption, rules, "kazari")) == "kazari, smile, 1girl, uiharu kazari, watermark"
    )


# --- the runs and their command ----------------------------------------------------------------


def test_passes_dodge_kohyas_character_tag_crash(tmp_path: Path) -> None:
    """kohya's own character tags are never on; characters come from a relabelled run."""
    assert tagger_passes(section(tmp_path)) == (
        TaggerPass(0.35, False, "all"),
        TaggerPass(0.85, True, "character"),
    )
    assert tagger_passes(section(tmp_path, general_threshold=0.5, character_threshold=0.5)) == (
        TaggerPass(0.5, True, "all"),
    )
    assert tagger_passes(section(tmp_path, character_threshold=1.5)) == (TaggerPass(0.35, False, "all"),)


def test_tagger_argv(tmp_path: Path) -> None:
    s = section(tmp_path / "models" / "wd14", undesired_tags=["watermark", "-_-", "short hair"], batch_size=4)
    argv = tagger_argv(
        s,
        TaggerPass(0.85, True, "character"),
        tmp_path / "run" / "model-1" / "wd14",
        tmp_path / "run" / "images",
        tmp_path / "run" / "tags-1.json",
        Path("/opt/sd-scripts"),
        python="/venv/bin/python",
    )
    assert argv == [
        "/venv/bin/python",
        "/opt/sd-scripts/finetune/tag_images_by_wd14_tagger.py",
        str(tmp_path / "run" / "images"),
        "--onnx",
        f"--model_dir={tmp_path / 'run' / 'model-1'}",
        "--repo_id=wd14",
        "--batch_size=4",
        "--general_threshold=0.85",
        "--character_threshold=2.0",
        "--caption_separator=, ",
        f"--output_path={tmp_path / 'run' / 'tags-1.json'}",
        "--undesired_tags=watermark,-_-,short hair,short_hair",
    ]
    # "--option=value" keeps "-_-" a value; test_real_tagger_tags_images passes it to kohya's parser.


def test_tagger_env_puts_kohya_on_the_path() -> None:
    env = tagger_env(Path("/opt/sd-scripts"), {"PYTHONPATH": "/other"})
    assert env == {"PYTHONPATH": os.pathsep.join(["/opt/sd-scripts", "/other"]), "HF_HUB_OFFLINE": "1"}
    assert tagger_env(Path("/opt/sd-scripts"), {})["PYTHONPATH"] == "/opt/sd-scripts"


def test_characters_relabelled_as_general() -> None:
    assert characters_as_general(TAG_LIST).splitlines()[-1] == "9006,uiharu_kazari_(toaru),0,100"
    assert characters_as_general(TAG_LIST).splitlines()[:-1] == TAG_LIST.splitlines()[:-1]


def test_read_output(tmp_path: Path) -> None:
    """kohya's --output_path JSON: absolute image paths -> tags joined with the separator."""
    output = tmp_path / "tags.json"
    output.write_text(
        json.dumps(
            {
                str(tmp_path / "images" / "000000.png"): {
                    "tags": "1girl, short_hair",
                    "image_size": [64, 64],
                },
                str(tmp_path / "images" / "000001.jpg"): {"tags": "", "image_size": [64, 64]},
            }
        ),
        encoding="utf-8",
    )
    names = {"000000.png": Path("/data/a.png"), "000001.jpg": Path("/data/b.jpg")}
    assert read_output(output, names) == {
        Path("/data/a.png"): ["1girl", "short_hair"],
        Path("/data/b.jpg"): [],
    }


def test_combine_runs() -> None:
    passes = (TaggerPass(0.35, False, "all"), TaggerPass(0.85, True, "character"))
    runs = [["1girl", "short_hair"], ["1girl", "kazari"]]
    assert combine(runs, passes, frozenset({"kazari"}), False) == ["1girl", "short_hair", "kazari"]
    assert combine(runs, passes, frozenset({"kazari"}), True) == ["kazari", "1girl", "short_hair"]


# --- the schema --------------------------------------------------------------------------------


def test_autotag_table_in_a_recipe(project: Project) -> None:
    project.write_recipe(
        RECIPE
        + '\n[captions.autotag]\nmodel_dir = "models/wd14"\nmode = "merge"\nundesired_tags = ["watermark"]\n'
    )
    s = load_recipe(project.recipe).recipe.captions.autotag
    assert s is not None and s.mode == "merge" and s.model_dir == Path("models/wd14")
    assert (s.general_threshold, s.character_threshold, s.batch_size) == (0.35, 0.85, 1)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('mode = "some"', "mode: must be one of 'missing', 'all' or 'merge' (got \"some\")"),
        ('undesired_tags = ["a, b"]', "undesired_tags: tags cannot contain commas (got 'a, b')"),
        ("general_treshold = 0.5", "general_treshold: unknown key (did you mean 'general_threshold'?)"),
        ("character_threshold = -1", "character_threshold: must be at least 0.0 (got -1)"),
    ],
)
def test_autotag_table_errors(project: Project, table: str, message: str) -> None:
    project.write_recipe(RECIPE + f'\n[captions.autotag]\nmodel_dir = "models/wd14"\n{table}\n')
    with pytest.raises(RecipeError) as caught:
        load_recipe(project.recipe)
    assert str(caught.value) == f"recipe.toml: captions.autotag.{message}"


# --- tag_images with a stand-in for kohya ------------------------------------------------------


class FakeTagger:
    """Stands in for runner.run: tags each image with every general tag of the run's tag list."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.images: list[int] = []  # images in the folder of each run

    def __call__(
        self,
        argv: Sequence[str],
        cwd: Path,
        log: Path,
        env: Mapping[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> RunResult:
        self.calls.append(list(argv))
        options = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
        model = Path(options["model_dir"]) / options["repo_id"]
        rows = (model / "selected_tags.csv").read_text(encoding="utf-8").splitlines()[1:]
        general = [r.split(",")[1] for r in rows if r.split(",")[2] == "0"]
        images = sorted(Path(argv[2]).iterdir())
        self.images.append(len(images))
        Path(options["output_path"]).write_text(
            json.dumps({str(i): {"tags": ", ".join(general), "image_size": [1, 1]} for i in images}),
            encoding="utf-8",
        )
        log.write_text("fake\n", encoding="utf-8")
        return RunResult(0, False, log)


def test_tag_images_links_runs_and_caches(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTagger()
    monkeypatch.setattr(runner, "run", fake)
    model = write_model_folder(tmp_path / "models" / "wd14")
    images = sorted((project.root / "data" / "char").glob("*.png"))
    images[3].write_bytes(images[0].read_bytes())  # a duplicate, to be tagged once
    before = project.tree_hash("data")
    work = project.build / "Test_v1"
    s = section(model)

    tags = tagging.tag_images(images, s, work, sd_scripts=Path("/opt/sd-scripts"), python="py")
    assert tags == {image: ["1girl", "short_hair", "uiharu_kazari_(toaru)"] for image in images}
    # Two runs (general tags; characters relabelled), one kohya process each, on the same links.
    assert len(fake.calls) == 2
    assert [c[:2] for c in fake.calls] == [
        ["py", "/opt/sd-scripts/finetune/tag_images_by_wd14_tagger.py"]
    ] * 2
    assert project.tree_hash("data") == before
    # 000.png and 003.png are the same bytes (one colour, one size): cached once, by content.
    cache = json.loads(tagging.cache_file(work, autotag.settings_key(s)).read_text(encoding="utf-8"))
    assert cache["version"] == 1 and len(cache["tags"]) == 3 and fake.images == [3, 3]
    assert sorted(p.name for p in (work / "autotag").iterdir()) == sorted(
        [
            tagging.cache_file(work, autotag.settings_key(s)).name,
            "digests.json",
            "tagger-0.log",
            "tagger-1.log",
        ]
    )

    # Nothing new: no run, and no image read again. A new image: one more run for it alone.
    reads: list[Path] = []
    real_digest = autotag.file_digest
    for module in (autotag, tagging):  # the settings key's digest, the images'
        monkeypatch.setattr(module, "file_digest", lambda p: reads.append(p) or real_digest(p))
    assert tagging.tag_images(images, s, work, sd_scripts=Path("/x")) == tags
    assert len(fake.calls) == 2
    assert reads == [model / "selected_tags.csv"]  # the settings key; no image
    extra = write_image(tmp_path / "other" / "new.PNG", (64, 32))
    tagging.tag_images([*images, extra], s, work, sd_scripts=Path("/x"))
    assert len(fake.calls) == 4 and fake.images[2:] == [1, 1]
    assert fake.calls[-1][2].endswith("images")
    # A new threshold is a new cache.
    tagging.tag_images(
        images, section(model, general_threshold=0.5, character_threshold=0.5), work, sd_scripts=Path("/x")
    )
    assert len(fake.calls) == 5
    # An image whose content changed is tagged again.
    write_image(images[1], (64, 64))
    tagging.tag_images(images, s, work, sd_scripts=Path("/x"))
    assert len(fake.calls) == 7


@pytest.mark.parametrize(
    ("mode", "sent", "expected"),
    [
        ("missing", 1, [["smile", "short hair"], ["1girl", "short_hair"]]),
        ("all", 2, [["1girl", "short_hair"], ["1girl", "short_hair"]]),
        ("merge", 2, [["smile", "short hair", "1girl"], ["1girl", "short_hair"]]),
    ],
)
def test_tag_captions_by_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, sent: int, expected: list[list[str]]
) -> None:
    fake = FakeTagger()
    monkeypatch.setattr(runner, "run", fake)
    model = write_model_folder(tmp_path / "wd14")
    captioned, bare = write_image(tmp_path / "a.png"), write_image(tmp_path / "b.png", (64, 64))
    s = section(model, mode=mode, character_threshold=2)  # one run; the fake's tags: 1girl, short_hair
    merged = tagging.tag_captions({captioned: ["smile", "short hair"], bare: []}, s, tmp_path / "build")
    assert [merged[captioned], merged[bare]] == expected
    assert fake.images == [sent]


def test_tag_images_sees_hard_links(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, tuple[int, int]] = {}

    def spy(
        argv: Sequence[str],
        cwd: Path,
        log: Path,
        env: Mapping[str, str] | None = None,
        on_line: object = None,
    ) -> RunResult:
        for entry in Path(argv[2]).iterdir():
            seen[entry.name] = (entry.stat().st_ino, entry.stat().st_dev)
        assert env is not None and env["HF_HUB_OFFLINE"] == "1"
        return FakeTagger()(argv, cwd, log, env)

    monkeypatch.setattr(runner, "run", spy)
    model = write_model_folder(tmp_path / "models" / "wd14")
    source = write_image(tmp_path / "src" / "a.jpeg")
    tagging.tag_images([source], section(model, character_threshold=2), project.build / "x")
    assert seen == {"000000.jpeg": (source.stat().st_ino, source.stat().st_dev)}
    assert not list((project.build / "x" / "autotag").glob("run-*"))  # the links are gone


def test_tag_images_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = write_image(tmp_path / "a.png")
    with pytest.raises(AutotagError, match=r"needs model\.onnx and selected_tags\.csv in this folder"):
        tagging.tag_images([image], section(tmp_path / "none"), tmp_path / "build")
    model = write_model_folder(tmp_path / "wd14")

    def failing(argv: Sequence[str], cwd: Path, log: Path, *_: object) -> RunResult:
        return RunResult(1, False, log)

    monkeypatch.setattr(runner, "run", failing)
    with pytest.raises(
        AutotagError,
        match=r"^kohya's WD14 tagger stopped with exit status 1\. Its whole output is in .*/autotag/tagger-0.log",
    ):
        tagging.tag_images([image], section(model), tmp_path / "build")
    assert tagging.tag_images([], section(model), tmp_path / "build") == {}


# --- the real kohya script ---------------------------------------------------------------------


def kohya_tagger_stack() -> None:
    """Skip unless kohya's tagger can run here (its imports, onnx, onnxruntime)."""
    for name in ("torch", "cv2", "huggingface_hub", "tqdm", "transformers", "diffusers"):
        pytest.importorskip(
            name, reason=f"kohya's Python stack is not installed ({name}): pip install -e '.[train]'"
        )
    for name in ("onnx", "onnxruntime"):
        pytest.importorskip(name, reason=f"kohya's WD14 tagger needs {name}: pip install onnx onnxruntime")


def colour_images(folder: Path) -> dict[str, Path]:
    """Square one-colour images (RGB); the tiny tagger's tags follow the colour."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for name, colour in (("red.png", (255, 0, 0)), ("blue.jpg", (0, 0, 255)), ("green.webp", (0, 255, 0))):
        Image.new("RGB", (64, 64), colour).save(folder / name, quality=100, lossless=True)
        images[name] = folder / name
    return images


def counting_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real = runner.run

    def run(argv: Sequence[str], *args: object, **kw: object) -> RunResult:
        calls.append(list(argv))
        return real(argv, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "run", run)
    return calls


@pytest.mark.real_trainer
def test_real_tagger_tags_images(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kohya's tagger, for real: thresholds per category, undesired tags, sources untouched, cached."""
    kohya_tagger_stack()
    from tests.tiny_tagger import write_tagger

    model = write_tagger(tmp_path / "models" / "tiny_wd14")
    images = colour_images(project.root / "data" / "colours")
    (project.root / "data" / "colours" / "red.txt").write_text("smile", encoding="utf-8")
    before = project.tree_hash("data")
    calls = counting_runs(monkeypatch)
    s = section(model, undesired_tags=["watermark", "-_-"])  # "-_-" must not read as an option
    lines: list[str] = []

    tags = tagging.tag_images(
        list(images.values()), s, project.build / "T", python=sys.executable, on_line=lines.append
    )
    assert tags == {
        # 1girl (0.9) and short_hair (0.5) pass 0.35; watermark (0.95) is undesired;
        # uiharu_kazari (0.9) passes 0.85 and misaka_mikoto (0.7 on red) does not.
        images["red.png"]: ["1girl", "red_theme", "short_hair", "uiharu_kazari"],
        images["blue.jpg"]: ["1girl", "blue_theme", "short_hair", "uiharu_kazari"],
        images["green.webp"]: ["1girl", "short_hair", "uiharu_kazari"],
    }
    assert len(calls) == 2 and any("using existing" in line for line in lines)  # not downloaded
    assert project.tree_hash("data") == before  # no caption written next to an image, nothing changed

    # The staged caption of red.png, with its own caption kept ("merge") and the rules applied.
    rules = CaptionRules.model_validate({"remove": ["short_hair"], "tag_style": "space"})
    merged = merge_tags(["smile"], tags[images["red.png"]], "merge")
    assert join_tags(apply_rules(merged, rules, "kazari")) == "kazari, smile, 1girl, red theme, uiharu kazari"

    # A second prepare tags nothing.
    assert tagging.tag_images(list(images.values()), s, project.build / "T") == tags
    assert len(calls) == 2


@pytest.mark.real_trainer
def test_real_tagger_one_run_for_equal_thresholds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kohya_tagger_stack()
    from tests.tiny_tagger import write_tagger

    model = write_tagger(tmp_path / "wd14")
    images = colour_images(tmp_path / "images")
    calls = counting_runs(monkeypatch)
    s = section(
        model, general_threshold=0.6, character_threshold=0.6, character_tags_first=True, batch_size=2
    )
    tags = tagging.tag_images(
        [images["red.png"], images["green.webp"]], s, tmp_path / "build", on_line=lambda _: None
    )
    assert tags == {
        images["red.png"]: ["uiharu_kazari", "misaka_mikoto", "1girl", "red_theme", "watermark"],
        images["green.webp"]: ["uiharu_kazari", "1girl", "watermark"],
    }
    assert len(calls) == 1


@pytest.mark.real_trainer
def test_kohya_tagger_still_stops_on_character_tags(tmp_path: Path) -> None:
    """Why lorabuild relabels character tags: the pinned kohya crashes on its own character tags.

    When this fails, kohya's tagger handles character tags again and :func:`tagger_passes` can
    let kohya apply --character_threshold itself, in one run.
    """
    kohya_tagger_stack()
    from tests.tiny_tagger import write_tagger

    write_tagger(tmp_path / "wd14")
    images = colour_images(tmp_path / "images")
    images["blue.jpg"].unlink()
    images["green.webp"].unlink()
    argv = [
        sys.executable,
        str(SD_SCRIPTS / autotag.TAGGER_SCRIPT),
        str(tmp_path / "images"),
        "--onnx",
        f"--model_dir={tmp_path}",
        "--repo_id=wd14",
        "--character_threshold=0.85",
        f"--output_path={tmp_path / 'out.json'}",
    ]
    result = runner.run(argv, tmp_path, tmp_path / "log.txt", tagger_env(SD_SCRIPTS), lambda _: None)
    log = (tmp_path / "log.txt").read_text(encoding="utf-8")
    assert result.returncode != 0 and "UnboundLocalError" in log and "character_tags" in log
