"""A write that fails (full disk, quota, read-only, forbidden) while compiling or staging: one
line naming the folder and the space needed, a non-zero exit, nothing half-written left and the
last finished state intact (issue 10, defect 8).

The failures are injected at every write of a ``prepare`` in turn (``os.write``, which every
file lorabuild writes goes through, and ``shutil.copyfile``, which copies an image where a hard
link is impossible); one test fills a real, tiny tmpfs where the machine allows mounting one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from lorabuild.build import dataset as stage
from tests.conftest import Project, run_cli_here, run_lorabuild, write_image

BUILD = Path("build/Test_v1")
RECORDS = ("dataset/.stage.json", ".lorabuild/stamps.json")  # they hold mtimes and inodes


main = run_cli_here  # in this process, so it meets this process's lock and patches


class Disk:
    """Counts lorabuild's writes; from the ``fail_at``-th on, each writes half its bytes and fails."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int, code: int = errno.ENOSPC) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.code = code
        real_write, real_copyfile = os.write, shutil.copyfile

        def write(fd: int, data: bytes) -> int:
            if self.full():
                real_write(fd, bytes(data[: len(data) // 2]))
                raise OSError(self.code, os.strerror(self.code))
            return real_write(fd, data)

        def copyfile(src: str, dst: str, *, follow_symlinks: bool = True) -> str:
            if self.full():
                Path(dst).write_bytes(Path(src).read_bytes()[:100])
                raise OSError(self.code, os.strerror(self.code), src, None, dst)
            return real_copyfile(src, dst, follow_symlinks=follow_symlinks)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(shutil, "copyfile", copyfile)

    def full(self) -> bool:
        self.calls += 1
        return self.calls >= self.fail_at


def no_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """Staging copies every image (as on another file system than the sources)."""

    def link(source: object, dest: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(stage.os, "link", link)


def files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "lock"
    }


def edit_sources(project: Project) -> None:
    """What the second prepare has to stage: a changed caption and two new images."""
    (project.root / "data/char/002.txt").write_text("1girl, smile, hairband", "utf-8")
    for i in (4, 5):
        write_image(project.root / f"data/char/{i:03d}.png", (512, 512), blue=120 + 10 * i)
        (project.root / f"data/char/{i:03d}.txt").write_text("1girl, solo", "utf-8")


@pytest.fixture
def states(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Iterator[tuple[dict[str, bytes], dict[str, bytes], int]]:
    """The build before and after an edit (each from a clean prepare) and how many writes the
    second prepare makes; the project is left with the first state staged and the edit made."""
    no_links(monkeypatch)
    assert main("prepare", "recipe.toml", monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    shutil.copytree(project.root / "build", tmp_path / "first")
    old = files(project.root / BUILD)
    edit_sources(project)
    with monkeypatch.context() as patch:
        disk = Disk(patch, fail_at=10**9)
        assert main("prepare", "recipe.toml", monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    new = files(project.root / BUILD)
    shutil.rmtree(project.root / "build")
    shutil.copytree(tmp_path / "first", project.root / "build")
    yield old, new, disk.calls


def test_a_full_disk_at_any_write_of_prepare_leaves_whole_files_and_one_line(
    project: Project,
    states: tuple[dict[str, bytes], dict[str, bytes], int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    old, new, writes = states
    assert writes == 8  # 2 copies, 3 captions, the manifest, tags.csv, the stamps (compiled: identical)
    shutil.copytree(project.root / "build", tmp_path / "before")
    for fail_at in range(1, writes + 1):
        shutil.rmtree(project.root / "build")
        shutil.copytree(tmp_path / "before", project.root / "build")
        with monkeypatch.context() as patch:
            Disk(patch, fail_at)
            status, err = main("prepare", "recipe.toml", monkeypatch=monkeypatch, capsys=capsys)
        assert status == 1, (fail_at, err)
        (line,) = err.splitlines()
        assert line.startswith("error: cannot write build/Test_v1"), line
        assert "no space left on device (about " in line and " free there): free some space" in line, line
        now = files(project.root / BUILD)
        assert not [name for name in now if name.endswith(".tmp")], (fail_at, sorted(now))
        for name, data in now.items():
            if name in RECORDS:
                json.loads(data)  # whole: records of what was finished, checked by the run below
                continue
            assert data in (old.get(name), new.get(name)), (fail_at, name)  # whole, old or new
        # The next run (with room) finishes the job, the same as an undisturbed one.
        assert main("prepare", "recipe.toml", monkeypatch=monkeypatch, capsys=capsys)[0] == 0
        now = files(project.root / BUILD)
        assert {k: v for k, v in now.items() if k not in RECORDS} == {
            k: v for k, v in new.items() if k not in RECORDS
        }, fail_at
        staged, wanted = (json.loads(f["dataset/.stage.json"]) for f in (now, new))
        assert staged["images"].keys() == wanted["images"].keys()  # the same records, stat values aside
        assert staged["captions"].keys() == wanted["captions"].keys()


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (errno.ENOSPC, "no space left on device (about "),
        (errno.EDQUOT, "disk quota exceeded (about "),
        (errno.EROFS, "read-only file system: make it writable"),
        (errno.EACCES, "permission denied: make it writable"),
    ],
)
def test_compile_says_which_folder_cannot_be_written(
    project: Project,
    code: int,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    Disk(monkeypatch, fail_at=3, code=code)
    status, err = main("compile", "recipe.toml", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 1
    (line,) = err.splitlines()
    assert line.startswith(f"error: cannot write build/Test_v1: {says}"), line
    assert not list((project.root / "build").rglob("*.tmp"))
    written = sorted(p.name for p in (project.root / BUILD).iterdir() if p.is_file())
    assert len(written) == 2  # the two written before the failure, whole


def test_a_new_caption_cut_short_is_removed(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A caption under a new name is written in place (no temporary file): a failure removes it."""
    real_create = stage._create
    made: list[str] = []

    def create(path: str, data: bytes) -> tuple[int, int, int] | None:
        made.append(path)
        Disk(monkeypatch, fail_at=1)  # the disk fills up while this caption is written
        return real_create(path, data)

    monkeypatch.setattr(stage, "_create", create)
    status, err = main("prepare", "recipe.toml", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 1 and "error: cannot write build/Test_v1/dataset: no space left" in err
    assert made and not Path(made[0]).exists()


def test_any_other_write_that_finds_the_disk_full_is_one_line(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Writes outside the writer and the stage (make's markers: Path.touch) end in one line too."""

    def touch(path: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(Path, "touch", touch)
    status, err = main("run", "recipe.toml", "--until", "compile", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 1
    (line,) = err.splitlines()
    assert line.startswith("error: cannot write build/Test_v1/.lorabuild: no space left on device"), line


# --- a real full disk ------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KB tmpfs (root on Linux only)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root on Linux")
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk(project: Project, tiny_disk: Path) -> None:
    for i in range(4):  # noise does not compress: 4 x 192 KB of copies for a 256 KB disk
        noise = Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3))
        noise.save(project.root / f"data/char/{i:03d}.png")
    build = tiny_disk / "build"
    result = run_lorabuild("prepare", "recipe.toml", "--build-dir", str(build), cwd=project.root)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"error: cannot write {build.as_posix()}/Test_v1/dataset: no space left on device"
    ), line
    assert " KB still to write, " in line and " free there)" in line
    assert "Traceback" not in result.stdout
    assert not [p for p in build.rglob("*") if p.name.endswith(".tmp")]
