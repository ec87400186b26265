"""Facts about the world a recipe points at, probed once before any rule or plan runs.

This is the imperative shell around the pure core: :func:`gather` touches the disk (folder
listings, image headers, caption files, the model header, which packages are installed) and
returns frozen values; :mod:`lorabuild.rules` and :mod:`lorabuild.plan` only read them.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lorabuild.captions import CaptionFile, read_caption
from lorabuild.images import ImageInfo, list_folder, probe_images, why_kohya_skips
from lorabuild.modelfile import ModelInfo, probe_model
from lorabuild.schema import Recipe

# Packages whose presence decides whether an optimizer, network or attention setting can work.
PACKAGES = (
    "accelerate",
    "torch",
    "lycoris",
    "lion_pytorch",
    "bitsandbytes",
    "xformers",
    "prodigyopt",
    "dadaptation",
    "schedulefree",
    "transformers",
)

# Files kohya itself leaves next to an image under its stem (cache_latents_to_disk writes
# ``<stem>.npz``): never captions, so never a hint that caption_extension is wrong.
_NOT_CAPTIONS = frozenset({".npz"})


@dataclass(frozen=True)
class SubsetFacts:
    """What a subset's source folder holds.

    Attributes:
        source: The folder.
        state: ``ok``, ``missing`` or ``not_a_folder``.
        images: The images kohya would read (top level, supported extensions), sorted by name.
        captions: The caption of each image (same order); ``path`` is None when missing.
        other_caption_files: Count of caption-like files per other extension (``.caption``,
            ``.tags``…) that sit next to an image under its stem.
        skipped: Image-like files kohya ignores (``.gif``, ``.Jpg`` on Linux, ``.avif``…), each with
            the reason and what to do.
        subfolders_with_images: Sub-folders holding images (the "No data found" layout).
    """

    source: Path
    state: str
    images: tuple[ImageInfo, ...] = ()
    captions: tuple[CaptionFile, ...] = ()
    other_caption_files: Mapping[str, int] = field(default_factory=dict)
    skipped: tuple[tuple[Path, str], ...] = ()
    subfolders_with_images: tuple[str, ...] = ()


@dataclass(frozen=True)
class Facts:
    """Everything probed for one recipe.

    Attributes:
        model: The base model's header facts.
        subsets: One entry per ``dataset.subsets`` item.
        packages: Which of :data:`PACKAGES` are importable here.
        other_builds: Builds already in the build folder: output name -> recipe file that made it.
    """

    model: ModelInfo
    subsets: tuple[SubsetFacts, ...]
    packages: Mapping[str, bool]
    other_builds: Mapping[str, str] = field(default_factory=dict)

    @property
    def training_stack(self) -> bool:
        """Whether kohya's Python stack is installed here (so package checks are meaningful)."""
        return bool(self.packages.get("accelerate") and self.packages.get("torch"))


def gather(recipe: Recipe, recipe_file: Path, build_root: Path | None = None) -> Facts:
    """Probe the model, every subset, the installed packages and the other builds for ``recipe``."""
    others = existing_builds(build_root) if build_root else {}
    mine = recipe_file.resolve()
    return Facts(
        model=probe_model(recipe.model.base),
        subsets=tuple(probe_subset(s.source, s.caption_extension) for s in recipe.dataset.subsets),
        packages={name: importlib.util.find_spec(name) is not None for name in PACKAGES},
        other_builds={name: str(path) for name, path in others.items() if path != mine},
    )


def probe_subset(source: Path, caption_extension: str) -> SubsetFacts:
    """List ``source`` the way kohya does and read its image headers and captions."""
    if not source.exists():
        return SubsetFacts(source, "missing")
    if not source.is_dir():
        return SubsetFacts(source, "not_a_folder")
    listing = list_folder(source)
    stems = {p.stem for p in listing.images}
    others: dict[str, int] = {}
    skipped: list[tuple[Path, str]] = [(p, why_kohya_skips(p) or "") for p in listing.optional_images]
    for path in listing.other_files:
        reason = why_kohya_skips(path)
        if reason:
            skipped.append((path, reason))
        elif path.stem in stems and path.suffix not in (caption_extension, *_NOT_CAPTIONS):
            others[path.suffix] = others.get(path.suffix, 0) + 1
    return SubsetFacts(
        source=source,
        state="ok",
        images=tuple(probe_images(listing.images)),
        captions=tuple(read_caption(p.with_name(p.stem + caption_extension)) for p in listing.images),
        other_caption_files=dict(sorted(others.items())),
        skipped=tuple(skipped),
        subfolders_with_images=tuple(sorted(p.name for p in listing.subfolders if _has_images(p))),
    )


def _has_images(folder: Path) -> bool:
    try:
        return bool(list_folder(folder).images)
    except OSError:
        return False


def existing_builds(build_root: Path) -> dict[str, Path]:
    """Output names of the builds under ``build_root`` and their recipe files, from ``plan.json``."""
    builds: dict[str, Path] = {}
    if not build_root.is_dir():
        return builds
    for plan in sorted(build_root.glob("*/plan.json")):
        try:
            data = json.loads(plan.read_text(encoding="utf-8"))
            builds[str(data["name"])] = (plan.parent / str(data["recipe"])).resolve()
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return builds
