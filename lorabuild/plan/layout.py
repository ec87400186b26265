"""The layout of a build folder, ``build/<name>/``: where every file lorabuild and kohya write sits.

- :class:`BuildLayout`: each file and folder, by its name relative to the build folder (what the
  compiled files write: kohya, ``train.sh`` and gen_img run there) and as a path on this machine.
- :func:`relpath`, :func:`portable_path`, :func:`is_rooted`: how a build file refers to a path.

What kohya names the files it saves in ``output/`` is :mod:`lorabuild.kohya.outputs`'s.

Standard library only (and :mod:`lorabuild.kohya.outputs`, which is too): :mod:`lorabuild.build.markers`
takes :data:`STATE_DIR` from here, and
``python -m lorabuild.batch.makefile``, which every ``make`` runs, must not load pydantic or the
planner (``lorabuild/plan/__init__.py`` imports nothing for the same reason).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import ClassVar

from lorabuild.kohya.outputs import OUTPUT_DIR

STATE_DIR = ".lorabuild"
"""The folder inside a build folder where lorabuild and make keep what they remember."""


@dataclass(frozen=True)
class BuildLayout:
    """Where each file of one build folder sits (ARCHITECTURE.md's table of the build folder).

    The upper-case class attributes are names relative to the build folder, as the compiled files
    write them; the properties are the same files as paths under :attr:`root`.

    Attributes:
        root: The build folder, ``<build root>/<name>``.
    """

    root: Path

    CONFIG_TOML: ClassVar[str] = "config.toml"
    DATASET_TOML: ClassVar[str] = "dataset.toml"
    SAMPLE_PROMPTS: ClassVar[str] = "sample_prompts.txt"
    TRAIN_SH: ClassVar[str] = "train.sh"
    TRAIN_PS1: ClassVar[str] = "train.ps1"
    PLAN_JSON: ClassVar[str] = "plan.json"
    DATASET: ClassVar[str] = "dataset"
    """The staged dataset: one ``<repeats>_<trigger>`` folder per subset (kohya's ``image_dir``)."""
    OUTPUT: ClassVar[str] = OUTPUT_DIR
    """What kohya saves (``--output_dir``)."""
    LOGS: ClassVar[str] = "logs"
    """kohya's TensorBoard logs (``--logging_dir``) and lorabuild's logs of kohya's output."""
    TRAIN_LOG: ClassVar[str] = "logs/train.log"
    GRID: ClassVar[str] = "grid"
    CELLS: ClassVar[str] = "grid/cells"
    GRID_MANIFEST: ClassVar[str] = "grid/grid.json"
    GRID_LOG: ClassVar[str] = "logs/grid.log"
    STATE: ClassVar[str] = STATE_DIR
    HASHES: ClassVar[str] = f"{STATE_DIR}/hashes.json"
    SCORES: ClassVar[str] = f"{STATE_DIR}/scores.json"
    TAGS_CSV: ClassVar[str] = "tags.csv"
    REPORT: ClassVar[str] = "report.html"
    LOSS_PNG: ClassVar[str] = "loss.png"

    @staticmethod
    def staged(folder: str) -> str:
        """A subset's staged folder relative to the build folder: ``dataset/<folder>``."""
        return f"{BuildLayout.DATASET}/{folder}"

    @property
    def dataset_dir(self) -> Path:
        """``dataset/``."""
        return self.root / self.DATASET

    @property
    def output_dir(self) -> Path:
        """``output/``."""
        return self.root / self.OUTPUT

    @property
    def logs_dir(self) -> Path:
        """``logs/``."""
        return self.root / self.LOGS

    @property
    def train_log(self) -> Path:
        """``logs/train.log``: kohya's whole output of the last training."""
        return self.root / self.TRAIN_LOG

    @property
    def grid_dir(self) -> Path:
        """``grid/``."""
        return self.root / self.GRID

    @property
    def cells_dir(self) -> Path:
        """``grid/cells/``: one PNG per grid cell, named by its content key."""
        return self.root / self.CELLS

    @property
    def grid_manifest(self) -> Path:
        """``grid/grid.json``: the sheets' layout."""
        return self.root / self.GRID_MANIFEST

    @property
    def grid_log(self) -> Path:
        """``logs/grid.log``: gen_img's output."""
        return self.root / self.GRID_LOG

    @property
    def state_dir(self) -> Path:
        """``.lorabuild/``: stamps, digests, the lock, make's markers."""
        return self.root / self.STATE

    @property
    def hashes(self) -> Path:
        """``.lorabuild/hashes.json``: the saved LoRA files' hashes (:mod:`lorabuild.build.saved`)."""
        return self.root / self.HASHES

    @property
    def scores(self) -> Path:
        """``.lorabuild/scores.json``: perceptual hashes of grid cells and training images (:mod:`lorabuild.score`)."""
        return self.root / self.SCORES

    @property
    def tags_csv(self) -> Path:
        """``tags.csv``: tag frequencies before and after the caption rules."""
        return self.root / self.TAGS_CSV

    @property
    def report(self) -> Path:
        """``report.html``."""
        return self.root / self.REPORT

    @property
    def loss_png(self) -> Path:
        """``loss.png``."""
        return self.root / self.LOSS_PNG


def relpath(target: Path, start: Path) -> str:
    """``target`` relative to ``start`` with forward slashes (absolute if on another drive)."""
    try:
        return PurePosixPath(Path(os.path.relpath(target, start))).as_posix()
    except ValueError:  # Windows: different drives
        return target.resolve().as_posix()


def portable_path(target: Path, build_dir: Path) -> str:
    """How a build file refers to ``target``: relative inside the project, else absolute.

    The project is the folder holding the build root (``<project>/build/<name>``). Paths into it
    stay relative, so the project can be copied or moved whole; paths outside it (a model in a
    shared folder, a cache) are written absolute rather than as a long climb of ``../``.
    """
    project = build_dir.resolve().parent.parent
    resolved = target.resolve()
    if resolved == project or project in resolved.parents:
        return relpath(resolved, build_dir.resolve())
    return resolved.as_posix()


def is_rooted(path: str) -> bool:
    """Whether a path as :func:`portable_path` writes it names a place without a folder to start from.

    True for an absolute path on any system: ``/opt/sd-scripts``, ``C:/kohya``, ``D:\\kohya``,
    ``\\\\server\\share\\kohya``, ``//server/share``, and also for ``\\kohya`` and ``C:kohya``, which
    Windows resolves against the current drive or its current folder, never against a script's
    folder. A script uses a rooted path as it is; PowerShell's ``Join-Path`` would glue it onto
    the script's folder (``Join-Path C:\\build D:\\kohya`` is ``C:\\build\\D:\\kohya``).
    """
    windows = PureWindowsPath(path)
    return bool(windows.drive or windows.root) or PurePosixPath(path).is_absolute()
