"""Images in a sub-folder of a subset's source: kohya reads only the top of an image folder, so
they are never trained; ``check`` and ``prepare`` say so (issue 10, defect 7)."""

from __future__ import annotations

import os
from pathlib import Path

from lorabuild.problems import format_problem
from lorabuild.stages.check import check
from tests.conftest import Project, run_lorabuild, write_image

WARNING = (
    "recipe.toml: dataset.subsets[0].source: warning: 3 image(s) in sub-folders will not be trained: "
    "more/ (3): kohya reads only the images directly in data/char: add each sub-folder as a subset of "
    'its own (a [[dataset.subsets]] whose source ends in "char/more"), or move the images up into data/char'
)


def add_more(project: Project, folder: str = "data/char/more", count: int = 3) -> None:
    for i in range(count):
        write_image(project.root / folder / f"m{i}.png", (64, 64), blue=200 + i)


def warnings_about_subfolders(project: Project, *overrides: str, build: str = "build") -> list[str]:
    checked = check(project.recipe, list(overrides), Path(build))
    return [format_problem(p) for p in checked.problems if "sub-folders will not be trained" in p.message]


def test_check_and_prepare_name_the_sub_folder_and_its_images(project: Project) -> None:
    project.add_images(sizes=[(512, 512)] * 6)
    add_more(project)
    result = run_lorabuild("check", "recipe.toml", cwd=project.root)
    assert result.returncode == 0, result.stderr
    assert WARNING in result.stderr.splitlines()
    assert run_lorabuild("check", "recipe.toml", "--strict", cwd=project.root).returncode == 2
    prepared = run_lorabuild("prepare", "recipe.toml", cwd=project.root)
    assert prepared.returncode == 0, prepared.stderr
    assert WARNING in prepared.stderr.splitlines()


def test_every_folder_below_is_counted_and_listed(project: Project) -> None:
    add_more(project, "data/char/more", 2)
    add_more(project, "data/char/more/older", 1)
    (project.root / "data/char/notes").mkdir()
    (project.root / "data/char/notes/readme.txt").write_text("no images here")
    (project.root / "data/char/raw").mkdir()
    (project.root / "data/char/raw/IMG_1.JPG").write_bytes(b"not even decoded: counted by name")
    (warning,) = warnings_about_subfolders(project)
    assert "4 image(s) in sub-folders will not be trained: more/ (2), more/older/ (1), raw/ (1): " in warning


def test_hidden_folders_the_build_folder_and_other_subsets_are_not_counted(project: Project) -> None:
    add_more(project, "data/char/.thumbnails", 2)
    add_more(project, "data/char/extra", 2)
    (project.root / "data/char/link").symlink_to(project.root / "data/char/extra")  # not followed
    second = project.recipe.read_text("utf-8").replace(
        "[captions]", '[[dataset.subsets]]\nsource = "data/char/extra"\ntrigger = "kazari"\n\n[captions]', 1
    )
    project.recipe.write_text(second, "utf-8")
    # The build folder inside the source: staging puts images there.
    build = "data/char/build"
    assert run_lorabuild("prepare", "recipe.toml", "--build-dir", build, cwd=project.root).returncode == 0
    assert list((project.root / build).rglob("*.png"))
    assert warnings_about_subfolders(project, build=build) == []


def test_a_folder_with_no_images_at_its_top_keeps_its_error(project: Project) -> None:
    for path in (project.root / "data/char").iterdir():
        path.unlink()
    add_more(project)
    assert warnings_about_subfolders(project) == []  # source_folders' "No data found" error instead
    errors = [p.message for p in check(project.recipe, [], Path("build")).problems]
    assert any("has no images directly inside, but its sub-folders more do" in m for m in errors)


def test_images_are_counted_by_name_below_the_top_only(tmp_path: Path) -> None:
    from lorabuild.probe.images import images_below

    for i in range(3):
        (tmp_path / "a" / "b").mkdir(parents=True, exist_ok=True)
        (tmp_path / "a" / "b" / f"{i}.webp").write_bytes(b"")
    (tmp_path / "top.png").write_bytes(b"")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"")
    assert images_below(tmp_path) == {"a/b": 3}
    assert images_below(tmp_path, subfolders=[tmp_path / "a"]) == {"a/b": 3}  # the top listed already
    assert images_below(tmp_path, {os.path.realpath(tmp_path / "a")}) == {}
