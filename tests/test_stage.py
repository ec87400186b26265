"""`lorabuild prepare`: the staged dataset, its conversions, and incremental re-staging.

Every staging in these tests hashes the source folders before and after (``Project.tree_hash``):
the sources must never change, whatever staging does to the hard links that share their bytes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps, features

from lorabuild.build import dataset as stage
from lorabuild.build.dataset import StageReport
from lorabuild.plan.plan import Plan, with_raw_captions
from lorabuild.probe import cache, facts
from lorabuild.probe.imagefix import dhash, hamming, near_duplicates, staged_image_names
from lorabuild.probe.images import ImageInfo, kohya_reads_name
from lorabuild.problems import RecipeError
from lorabuild.stages.check import check, require_plan
from tests.conftest import Project, run_lorabuild, write_image

FOLDER = "build/Test_v1/dataset/2_uiharu_kazari"

# The fixture's captions (tests/conftest.py CAPTIONS) after its recipe's rules: the trigger first,
# the character's traits removed, transparent_background last.
STAGED_CAPTIONS = {
    "000.txt": "uiharu_kazari, 1girl, solo, smile, transparent_background\n",
    "001.txt": "uiharu_kazari, 1girl, solo, school_uniform, white_background\n",
    "002.txt": "uiharu_kazari, 1girl, smile\n",
    "003.txt": "uiharu_kazari, 1girl, solo, looking_at_viewer\n",
}


def plan_of(project: Project, *overrides: str) -> Plan:
    return require_plan(check(project.recipe, list(overrides), Path("build")))


def stage_untouched(project: Project, plan: Plan) -> StageReport:
    """Stage ``plan``, failing if any file under the project's data/ changed."""
    before = project.tree_hash("data")
    try:
        return stage.stage(plan)
    finally:
        assert project.tree_hash("data") == before


def prepare(project: Project, *overrides: str) -> StageReport:
    return stage_untouched(project, plan_of(project, *overrides))


def staged_files(project: Project) -> dict[str, bytes]:
    folder = project.root / FOLDER
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def snapshot(project: Project) -> dict[str, tuple[int, int]]:
    """(mtime_ns, inode) of every file prepare writes: any rewrite shows."""
    root = project.root / "build" / "Test_v1"
    files = [*(root / "dataset").rglob("*"), root / "tags.csv"]
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_ino) for p in files if p.is_file()}


def cut_out(path: Path, size: tuple[int, int] = (64, 96), hidden: tuple[int, int, int] = (255, 0, 0)) -> Path:
    """A cut-out: an opaque subject on transparent pixels whose (invisible) colour is ``hidden``."""
    image = Image.new("RGBA", size, (*hidden, 0))
    image.paste((30, 160, 60, 255), (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def sideways_photo(path: Path, orientation: int = 6, size: tuple[int, int] = (96, 64)) -> Path:
    """A JPEG stored as the camera's sensor saw it, with an EXIF tag saying how to show it."""
    image = Image.new("RGB", size, (20, 20, 200))
    image.paste((250, 250, 0), (0, 0, size[0] // 3, size[1] // 2))  # a corner that shows the turn
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif.tobytes(), quality=95)
    return path


# --- the tutorial's dataset steps ------------------------------------------------------------------

TUTORIAL_RECIPE = """\
name = "Test_v1"

[model]
base = "models/base.safetensors"

[dataset]
resolution = 512
batch_size = 2
shuffle_caption = true
keep_tokens = 1

[[dataset.subsets]]
source = "data/kazari"
trigger = "uiharu_kazari"              # the trigger word, first in every caption
repeats = 2                            # the folder becomes 2_uiharu_kazari

[captions]
replace = { open_mouth = "smile" }     # a tag the tagger got wrong
remove = ["flower", "*_flower", "hair_ornament", "short_hair", "brown_hair"]  # her inherent traits
move_to_end = ["transparent_background"]  # meaningless concepts last

[images]
background = "white"                   # cut-outs flattened onto white, not onto what alpha hides
on_bad_image = "skip"                  # a truncated download is left out, with a warning
"""


def test_tutorial_dataset_steps(project: Project) -> None:
    """The Done-when of issue #3: the tutorial's dataset steps, each one recipe line, on generated files."""
    data = project.root / "data" / "kazari"
    cut_out(data / "000.png")
    (data / "000.txt").write_text(
        "1girl, solo, flower, hair_ornament, short_hair, brown_hair, smile, transparent_background", "utf-8"
    )
    cut_out(data / "001.png", (96, 64), hidden=(0, 0, 0))
    (data / "001.txt").write_text(
        "flower, 1girl, transparent_background, hair_flower, looking_at_viewer, open_mouth, brown_hair, "
        "short_hair, red_flower, school_uniform",
        "utf-8",
    )
    write_image(data / "002.png", (64, 64), blue=90)  # no caption: the trigger alone, with a warning
    truncated = write_image(data / "003.png", (64, 64), blue=140)
    truncated.write_bytes(truncated.read_bytes()[:-40])
    (data / "003.txt").write_text("1girl, solo", "utf-8")
    write_image(data / "004.png", (64, 64), blue=190)
    (data / "004.txt").write_text("1girl, short_hair, open_mouth, smile, white_background", "utf-8")
    project.write_recipe(TUTORIAL_RECIPE)
    before = project.tree_hash("data")

    result = run_lorabuild("prepare", "recipe.toml", cwd=project.root)

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        'recipe.toml: data/kazari/003.png: warning: left out of the stage (images.on_bad_image = "skip"): '
        "the file is truncated (no PNG end chunk): re-export or delete it",
        "recipe.toml: dataset.subsets[0].source: warning: 1 of 5 image(s) have no .txt caption and will get "
        "the trigger alone: 002.png",
    ]
    staged = project.root / "build" / "Test_v1" / "dataset" / "2_uiharu_kazari"
    captions = {p.name: p.read_text("utf-8") for p in sorted(staged.glob("*.txt"))}
    assert captions == {
        "000.txt": "uiharu_kazari, 1girl, solo, smile, transparent_background\n",
        "001.txt": "uiharu_kazari, 1girl, looking_at_viewer, smile, school_uniform, transparent_background\n",
        "002.txt": "uiharu_kazari\n",
        "004.txt": "uiharu_kazari, 1girl, smile, white_background\n",
    }
    assert sorted(p.name for p in staged.iterdir()) == [
        "000.png", "000.txt", "001.png", "001.txt", "002.png", "002.txt", "004.png", "004.txt",
    ]  # fmt: skip
    # kohya's convert("RGB") would show the colour hidden under the transparent pixels...
    with Image.open(data / "000.png") as source:
        assert source.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    # ...the staged copy is flattened onto white, the subject unchanged.
    for name in ("000.png", "001.png"):
        with Image.open(staged / name) as image:
            assert image.mode == "RGB"
            assert image.getpixel((0, 0)) == (255, 255, 255)
            assert image.getpixel((image.width // 2, image.height // 2)) == (30, 160, 60)
    # Images that need nothing are hard links to the sources.
    assert (staged / "002.png").stat().st_ino == (data / "002.png").stat().st_ino
    assert project.tree_hash("data") == before
    assert "2 linked, 0 copied, 2 converted" in result.stdout


# --- layout and links ------------------------------------------------------------------------------


def test_prepare_links_images_and_writes_rule_edited_captions(project: Project) -> None:
    report = prepare(project)
    assert (report.linked, report.converted, report.captions_written) == (4, 0, 4)
    files = staged_files(project)
    assert {k: v.decode() for k, v in files.items() if k.endswith(".txt")} == STAGED_CAPTIONS
    for name in ("000.png", "001.png", "002.png", "003.png"):
        source = project.root / "data" / "char" / name
        assert (project.root / FOLDER / name).stat().st_ino == source.stat().st_ino
    assert report.tags == "create"
    assert (
        (project.root / "build" / "Test_v1" / "tags.csv")
        .read_text("utf-8")
        .startswith("subset,folder,tag,before,after\n0,2_uiharu_kazari,1girl,4,4\n")
    )


def test_images_are_copied_where_linking_fails(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(source: object, dest: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(stage.os, "link", no_links)
    report = prepare(project)
    assert (report.linked, report.copied) == (0, 4)
    for name in ("000.png", "003.png"):
        source, copy = project.root / "data" / "char" / name, project.root / FOLDER / name
        assert copy.read_bytes() == source.read_bytes()
        assert copy.stat().st_ino != source.stat().st_ino
    again = prepare(project)
    assert (again.copied, again.unchanged) == (0, 4)


# --- incremental ---------------------------------------------------------------------------------


def test_second_prepare_does_no_work(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare(project)
    before = snapshot(project)
    probed: list[object] = []
    read: list[object] = []
    real_probe, real_read = facts.probe_images, facts.read_caption
    monkeypatch.setattr(facts, "probe_images", lambda paths: probed.extend(paths) or real_probe(paths))
    monkeypatch.setattr(facts, "read_caption", lambda path: read.append(path) or real_read(path))

    report = prepare(project)

    assert report == StageReport(unchanged=4, tags="identical")
    assert snapshot(project) == before  # not one file rewritten, the manifest included
    assert probed == [] and read == []  # image headers and captions came from the manifest


def test_changing_one_caption_restages_that_caption(project: Project) -> None:
    prepare(project)
    before = snapshot(project)
    caption = project.root / "data" / "char" / "002.txt"
    caption.write_text("1girl, smile, hairband", "utf-8")
    report = prepare(project)
    assert (report.captions_written, report.unchanged, report.linked) == (1, 4, 0)
    after = snapshot(project)
    changed = sorted(k for k in after if after[k] != before.get(k))
    assert changed == ["dataset/.stage.json", "dataset/2_uiharu_kazari/002.txt", "tags.csv"]
    assert (project.root / FOLDER / "002.txt").read_text("utf-8") == "uiharu_kazari, 1girl, smile, hairband\n"


def test_deleting_a_source_image_removes_it_from_the_stage(project: Project) -> None:
    prepare(project)
    (project.root / "data" / "char" / "001.png").unlink()
    (project.root / "data" / "char" / "001.txt").unlink()
    report = prepare(project)
    assert (report.removed, report.unchanged) == (2, 3)
    assert sorted(staged_files(project)) == ["000.png", "000.txt", "002.png", "002.txt", "003.png", "003.txt"]


def test_an_edited_image_loses_its_kohya_caches(project: Project) -> None:
    prepare(project)
    folder = project.root / FOLDER
    caches = ["000_0512x0512_sd.npz", "000_te_outputs.npz", "002.npz", "002_te_outputs.npz"]
    for name in caches:
        (folder / name).write_bytes(b"PK")
    assert prepare(project).removed == 0  # kohya's caches of unchanged images stay
    # An image edited in place (the staged link shows the new pixels) and a new caption.
    write_image(project.root / "data" / "char" / "000.png", (512, 512), blue=250)
    (project.root / "data" / "char" / "002.txt").write_text("1girl", "utf-8")
    report = prepare(project)
    assert report.removed == 2
    assert sorted(p.name for p in folder.glob("*.npz")) == ["000_te_outputs.npz", "002.npz"]


def test_the_dit_families_text_encoder_caches_follow_their_captions(project: Project) -> None:
    """``<stem>_<arch>_te.npz`` (FLUX, SD3, Lumina 2, Anima, HunyuanImage) are kept while the caption is."""
    prepare(project)
    folder = project.root / FOLDER
    caches = [
        "000_flux_te.npz",
        "000_0064x0064_lumina.npz",
        "001_lumina_te.npz",
        "001_sd3_te.npz",
        "002_lumina_te.npz",
        "002_anima_te.npz",
        "002_0064x0064_lumina.npz",
        "003_hi_te.npz",
    ]
    for name in caches:
        (folder / name).write_bytes(b"PK")
    assert prepare(project).removed == 0  # kohya's caches of unchanged images and captions stay
    (project.root / "data" / "char" / "002.txt").write_text("1girl", "utf-8")
    report = prepare(project)
    assert report.removed == 2  # 002's text-encoder outputs; its latents stay
    assert sorted(p.name for p in folder.glob("*.npz")) == sorted(
        set(caches) - {"002_lumina_te.npz", "002_anima_te.npz"}
    )


def test_interrupted_prepare_converges(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = prepare(project)
    assert clean.captions_written == 4
    expected = staged_files(project)
    (project.root / "build").rename(project.root / "first")

    # Ctrl-C after two captions: what was done is recorded, the rest is done by the next run.
    calls = 0
    real_create = stage._create  # how a new caption is written

    def interrupted(path: str, data: bytes) -> tuple[int, int, int] | None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return real_create(path, data)

    monkeypatch.setattr(stage, "_create", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(project)
    monkeypatch.setattr(stage, "_create", real_create)
    manifest = json.loads((project.root / "build/Test_v1/dataset/.stage.json").read_text("utf-8"))
    assert sorted(manifest["captions"]) == ["2_uiharu_kazari/000.txt", "2_uiharu_kazari/001.txt"]
    # A harder stop leaves a temporary file behind.
    (project.root / FOLDER / ".003.txt.x1y2.tmp").write_bytes(b"uiharu")

    report = prepare(project)
    assert (report.linked, report.unchanged, report.captions_written, report.removed) == (0, 4, 2, 1)
    assert staged_files(project) == expected

    # Without any manifest (lost, or from another version): links are recognised by their inode
    # and captions by their bytes, so nothing is written.
    (project.root / "build/Test_v1/dataset/.stage.json").unlink()
    report = prepare(project)
    assert (report.linked, report.unchanged, report.captions_written) == (0, 4, 0)


def test_stray_files_and_old_subsets_are_removed(project: Project) -> None:
    prepare(project)
    dataset = project.root / "build" / "Test_v1" / "dataset"
    (dataset / "2_uiharu_kazari" / "notes.txt").write_text("mine", "utf-8")
    (dataset / "1_old").mkdir()
    (dataset / "1_old" / "a.png").write_bytes(b"x")
    report = prepare(project)
    assert report.removed == 2
    assert sorted(p.name for p in dataset.iterdir()) == [".stage.json", "2_uiharu_kazari"]
    assert "notes.txt" not in staged_files(project)


def test_a_new_subset_folder_name_restages(project: Project) -> None:
    prepare(project)
    report = prepare(project, "dataset.subsets[0].repeats=3")
    assert report.linked == 4 and report.removed == 1  # the old 2_uiharu_kazari folder
    dataset = project.root / "build" / "Test_v1" / "dataset"
    assert sorted(p.name for p in dataset.iterdir()) == [".stage.json", "3_uiharu_kazari"]


# --- conversions ---------------------------------------------------------------------------------


def test_exif_orientation_is_applied_and_bucketed_by_the_staged_size(project: Project) -> None:
    folder = project.root / "data" / "char"
    photo = sideways_photo(folder / "004.jpg", size=(768, 512))
    (folder / "004.txt").write_text("1girl, outdoors", "utf-8")
    plan = plan_of(project)
    image = next(i for s in plan.subsets for i in s.images if i.source == Path("data/char/004.jpg"))
    assert (image.name, image.size, image.bucket) == ("004.png", (512, 768), (384, 640))
    assert image.conversion is not None and image.conversion.reasons == ("EXIF orientation 6",)
    # Buckets count the staged size: 001.png and the photo share 384x640 (2 images x 2 repeats).
    assert dict(plan.bucket_counts)[(384, 640)] == 4

    report = stage_untouched(project, plan)
    assert (report.converted, report.linked) == (1, 4)
    with Image.open(project.root / FOLDER / "004.png") as staged, Image.open(photo) as source:
        upright = ImageOps.exif_transpose(source)
        assert staged.size == upright.size == (512, 768)
        assert staged.getpixel((5, 5)) == upright.getpixel((5, 5))
        assert staged.getpixel((500, 5)) == upright.getpixel((500, 5))
        assert not staged.getexif().get(0x0112)  # no orientation left for a viewer to apply twice
    # Left as kohya reads it, the photo would be landscape: 640x384, then a bucket of 2 samples.
    unrotated = plan_of(project, "images.exif_orientation=false")
    assert (640, 384) in dict(unrotated.bucket_counts)


def test_every_orientation_matches_pillows_exif_transpose(tmp_path: Path) -> None:
    from lorabuild.probe.imagefix import convert_image, plan_conversion
    from lorabuild.probe.images import probe_image
    from lorabuild.recipe.schema import ImagesSection

    for orientation in range(2, 9):
        path = sideways_photo(tmp_path / f"{orientation}.jpg", orientation)
        conversion = plan_conversion(probe_image(path), ImagesSection())
        assert conversion is not None
        import io

        staged = Image.open(io.BytesIO(convert_image(path, conversion)))
        expected = ImageOps.exif_transpose(Image.open(path))
        assert staged.size == expected.size == conversion.size
        assert staged.tobytes() == expected.convert("RGB").tobytes(), orientation


def test_transparency_is_flattened_onto_the_background_colour(project: Project) -> None:
    cut_out(project.root / "data" / "char" / "004.png")
    report = prepare(project, 'images.background="#102030"')
    assert report.converted == 1
    with Image.open(project.root / FOLDER / "004.png") as image:
        assert image.mode == "RGB" and image.getpixel((0, 0)) == (16, 32, 48)
    # Kept for kohya's alpha_mask: the image is linked as it is.
    report = prepare(project, "images.flatten_transparency=false")
    assert report.linked == 1
    staged = project.root / FOLDER / "004.png"
    assert staged.stat().st_ino == (project.root / "data" / "char" / "004.png").stat().st_ino


def test_formats_kohya_cannot_read_are_converted(project: Project) -> None:
    folder = project.root / "data" / "char"
    Image.new("P", (64, 64), 3).save(folder / "a.gif")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(folder / "b.tif")
    Image.new("RGB", (64, 64), (4, 5, 6)).save(folder / "c.Jpg", format="JPEG")
    Image.new("RGB", (64, 64), (7, 8, 9)).save(folder / "003.gif")  # 003.png exists
    for stem in ("a", "b", "c"):
        (folder / f"{stem}.txt").write_text(f"tag_{stem}", "utf-8")
    extra = []
    if features.check("avif"):
        Image.new("RGB", (64, 64), (10, 11, 12)).save(folder / "d.avif")
        extra = ["d.png", "d.txt"]

    report = prepare(project)

    names = sorted(staged_files(project))
    converted = ["003.gif.png", "003.gif.txt", "a.png", "a.txt", "b.png", "b.txt", "c.jpg", "c.txt", *extra]
    assert names == sorted([*STAGED_CAPTIONS, "000.png", "001.png", "002.png", "003.png", *converted])
    assert all(kohya_reads_name(n, case_sensitive=True) for n in names if not n.endswith(".txt"))
    assert report.converted == 3 + len(extra) // 2  # the .gifs, the .tif (and the .avif)
    # c.Jpg is JPEG already: a link under the name kohya lists, not a conversion.
    assert (project.root / FOLDER / "c.jpg").stat().st_ino == (folder / "c.Jpg").stat().st_ino
    # 003.gif shares its stem, and so its caption, with 003.png.
    files = staged_files(project)
    assert files["003.gif.txt"] == files["003.txt"] == STAGED_CAPTIONS["003.txt"].encode()
    with Image.open(project.root / FOLDER / "b.png") as image:
        assert image.format == "PNG" and image.getpixel((0, 0)) == (1, 2, 3)


def test_staged_names_avoid_collisions() -> None:
    def info(name: str, fmt: str) -> ImageInfo:
        return ImageInfo(Path(name), 8, 8, fmt, False, False, None)

    infos = [info("a.gif", "GIF"), info("a.png", "PNG"), info("a.gif.png", "PNG"), info("B.JPEG", "JPEG")]
    infos.append(info("x.jfif", "JPEG"))
    conversion = object()
    names = staged_image_names(infos, [conversion, None, None, None, None])  # type: ignore[list-item]
    assert names == ["a_2.png", "a.png", "a.gif.png", "B.JPEG", "x.jpg"]


def test_a_failed_conversion_is_an_error_or_skipped(project: Project) -> None:
    # Complete to the probe (its end chunk is there) but corrupt inside: only decoding finds it.
    path = project.root / "data" / "char" / "004.png"
    Image.effect_noise((64, 64), 40).convert("RGBA").save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 40
    data[start : start + 32] = bytes(b ^ 0xFF for b in data[start : start + 32])
    path.write_bytes(bytes(data))

    with pytest.raises(RecipeError) as caught:
        prepare(project)
    assert [p.key for p in caught.value.problems] == ["data/char/004.png"]
    message = caught.value.problems[0].message
    assert message.startswith("cannot be converted (transparency flattened onto white): ")
    assert message.endswith(": re-export or delete it")
    assert sorted(staged_files(project)) == sorted(
        [*STAGED_CAPTIONS, "000.png", "001.png", "002.png", "003.png"]
    )

    report = prepare(project, "images.on_bad_image=skip")
    assert [p.message.split(":")[0] for p in report.problems] == [
        'left out of the stage (images.on_bad_image = "skip")'
    ]
    assert "004.png" not in staged_files(project)


def test_a_source_gone_while_staging_is_a_bad_image(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_of(project)
    monkeypatch.setattr(stage, "decode_problems", lambda paths: [None] * len(paths))  # checked before
    (project.root / "data" / "char" / "002.png").unlink()  # deleted after the check
    with pytest.raises(RecipeError) as caught:
        stage.stage(plan)
    (problem,) = caught.value.problems
    assert problem.key == "data/char/002.png"
    assert problem.message.startswith("cannot be read any more (No such file or directory): ")
    assert not [name for name in staged_files(project) if name.endswith(".tmp") or name == "002.png"]


def test_autotag_hook_gives_captions_before_the_rules(project: Project) -> None:
    plan = plan_of(project)
    source = Path("data/char/001.png")
    tagged = with_raw_captions(
        plan, check(project.recipe, [], Path("build")).loaded.recipe, {source: "flower, 1girl, cat"}
    )
    stage_untouched(project, tagged)
    assert (project.root / FOLDER / "001.txt").read_text("utf-8") == "uiharu_kazari, 1girl, cat\n"
    assert (project.root / FOLDER / "000.txt").read_text("utf-8") == STAGED_CAPTIONS["000.txt"]


# --- fingerprints --------------------------------------------------------------------------------


def test_dhash_sees_through_resizing_and_reencoding(tmp_path: Path) -> None:
    from lorabuild.demo.synthetic import make_dataset

    a, b = make_dataset(tmp_path, n=2, size=128, trigger="")
    Image.open(b).convert("RGB").resize((90, 90)).save(tmp_path / "b.jpg", quality=60)
    ha, hb, hb2 = dhash(a), dhash(b), dhash(tmp_path / "b.jpg")
    assert ha is not None and hb is not None and hb2 is not None
    assert hamming(hb, hb2) <= 2 < hamming(ha, hb)
    assert dhash(tmp_path / "missing.png") is None


def test_near_duplicates_pairs_each_image_with_the_first_alike() -> None:
    base = 0x0123_4567_89AB_CDEF
    hashes: list[int | None] = [base, base ^ 0b111, ~base & (2**64 - 1), None, base ^ (0b1 << 40), 0, 0]
    assert near_duplicates(hashes, 4) == [(1, 0), (4, 0)]
    assert near_duplicates(hashes, 2) == [(4, 0)]
    # A folder of near-identical images is not quadratic: each is compared with the first.
    many: list[int | None] = [base ^ (1 << (i % 64)) for i in range(5000)]
    assert len(near_duplicates(many, 4)) == 4999


def test_manifest_records_are_versioned(project: Project) -> None:
    prepare(project)
    path = project.root / "build/Test_v1/dataset/.stage.json"
    document = json.loads(path.read_text("utf-8"))
    assert document["schema_version"] == 1
    record = dict(zip(document["image_fields"], document["images"]["2_uiharu_kazari/000.png"], strict=True))
    assert record["how"] == "link" and record["width"] == 512 and record["caption"] == "000.txt"
    assert record["path"] == os.path.abspath(project.root / "data" / "char" / "000.png")
    # A manifest from another lorabuild version is ignored, never misread.
    document["lorabuild_version"] = "0.0.0"
    path.write_text(json.dumps(document), "utf-8")
    assert cache.load_probe_cache(path) == {}
    assert prepare(project).unchanged == 4


@pytest.mark.real_trainer
def test_kohya_buckets_and_reads_the_converted_stage(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kohya's own dataset loader, on a stage with a rotated photo, a cut-out and a GIF: the
    buckets are the plan's (the staged, upright sizes) and every caption starts with the trigger."""
    from tests.test_real_trainer import kohya

    train_network = kohya("train_network")
    train_util = kohya("library.train_util")
    config_util = kohya("library.config_util")
    folder = project.root / "data" / "char"
    sideways_photo(folder / "004.jpg", size=(768, 512))
    cut_out(folder / "005.png", (512, 768))
    Image.new("P", (768, 512), 5).save(folder / "006.gif")
    from lorabuild.stages.compile import compile_build

    plan = plan_of(project)
    compile_build(plan)
    assert stage_untouched(project, plan).converted == 3
    monkeypatch.chdir(plan.build_dir)
    parser = train_network.setup_parser()
    argv = ["--config_file", "config.toml", "--dataset_config", "dataset.toml"]
    monkeypatch.setattr(sys, "argv", ["train_network.py", *argv])
    args = train_util.read_config_from_file(parser.parse_args(argv), parser)
    blueprint = config_util.BlueprintGenerator(
        config_util.ConfigSanitizer(True, True, args.masked_loss, True)
    )
    group, _ = config_util.generate_dataset_group_by_blueprint(
        blueprint.generate(config_util.load_user_config(args.dataset_config), args).dataset_group
    )
    buckets = {
        tuple(reso): len(bucket)
        for ds in group.datasets
        for reso, bucket in zip(ds.bucket_manager.resos, ds.bucket_manager.buckets, strict=True)
        if bucket
    }
    assert buckets == dict(plan.bucket_counts)
    infos = [info for ds in group.datasets for info in ds.image_data.values()]
    sizes = {Path(info.absolute_path).name: tuple(info.image_size) for info in infos}
    assert sizes["004.png"] == (512, 768)  # upright, as the plan bucketed it
    assert all(info.caption.startswith("uiharu_kazari") for info in infos)
