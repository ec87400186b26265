"""Facts about the world a recipe points at, probed once before any rule or plan runs.

This is the imperative shell around the pure core: :func:`gather` touches the disk (folder
listings, image headers, caption files, the model header, which packages are installed) and
returns frozen values; :mod:`lorabuild.rules` and :mod:`lorabuild.plan` only read them.

Image facts are cached in the stage manifest (:mod:`~lorabuild.probe.cache`): an unchanged image
costs a ``stat``. The packages and the other builds are probed by :mod:`~lorabuild.probe.environment`.
Nothing here writes: a check with no stage yet simply probes everything.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from lorabuild.kohya import families
from lorabuild.kohya.tagger import BLIP_CHECK_OFF, TaggerModel, autotag_sections, probe_model_dir
from lorabuild.probe.cache import (
    STAGE_MANIFEST,
    FileKey,
    Fingerprint,
    cached_caption,
    image_from_record,
    load_probe_cache,
)
from lorabuild.probe.clipfolder import AestheticHead, ClipFolder, probe_aesthetic, probe_clip
from lorabuild.probe.decodecheck import decode_ahead
from lorabuild.probe.environment import existing_builds, installed_packages, package_version, tagger_script
from lorabuild.probe.imagefix import content_hash, dhash
from lorabuild.probe.images import ImageInfo, images_below, list_folder, probe_images, why_kohya_skips
from lorabuild.probe.modelfile import ModelInfo, probe_model
from lorabuild.probe.segmentation import Segmenter, remove_background_sections
from lorabuild.probe.segmentation import probe as probe_segmenter
from lorabuild.recipe.captions import CaptionFile, read_caption
from lorabuild.recipe.schema import Recipe

# Files kohya itself leaves next to an image under its stem (cache_latents_to_disk writes
# ``<stem>.npz``): never captions, so never a hint that caption_extension is wrong.
_NOT_CAPTIONS = frozenset({".npz"})


@dataclass(frozen=True)
class SubsetFacts:
    """What a subset's source folder holds.

    Attributes:
        source: The folder.
        state: ``ok``, ``missing`` or ``not_a_folder``.
        images: The images lorabuild stages, sorted by name: those kohya would read (top level,
            supported extensions) and those it would skip but Pillow reads (``.gif``, ``.tif``,
            ``.avif``, ``.Jpg`` on Linux…), which are staged under a name or in a format kohya reads.
        captions: The caption of each image (same order); ``path`` is None when missing.
        other_caption_files: Count of caption-like files per other extension (``.caption``,
            ``.tags``…) that sit next to an image under its stem.
        skipped: Image-like files that are not staged (hidden files, formats Pillow cannot read
            here), each with the reason and what to do.
        subfolders_with_images: Sub-folders holding images (the "No data found" layout).
        fingerprints: Each image's :class:`Fingerprint` (same order as ``images``).
        images_below: Image files in sub-folders at any depth, which kohya never reads, per
            folder relative to ``source`` (:func:`lorabuild.probe.images.images_below`; hidden
            folders, the build root and other subsets' sources left out).
    """

    source: Path
    state: str
    images: tuple[ImageInfo, ...] = ()
    captions: tuple[CaptionFile, ...] = ()
    other_caption_files: Mapping[str, int] = field(default_factory=dict)
    skipped: tuple[tuple[Path, str], ...] = ()
    subfolders_with_images: tuple[str, ...] = ()
    fingerprints: tuple[Fingerprint, ...] = ()
    images_below: Mapping[str, int] = field(default_factory=dict)

    def fingerprint(self, index: int) -> Fingerprint:
        """The fingerprint of ``images[index]`` (an empty one when none was taken)."""
        return self.fingerprints[index] if index < len(self.fingerprints) else Fingerprint()


@dataclass(frozen=True)
class PathFacts:
    """What is at a path the recipe names for kohya to read (a VAE, starting weights, a cache folder).

    Attributes:
        kind: ``file``, ``folder`` or ``missing``.
        folders: For a folder, the names of the folders directly inside it.
    """

    kind: Literal["file", "folder", "missing"]
    folders: frozenset[str] = frozenset()


def probe_path(path: Path) -> PathFacts:
    """What is at ``path`` (one ``stat``, and a listing of a folder's top level)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return PathFacts("missing")
    if not stat.S_ISDIR(st.st_mode):
        return PathFacts("file")
    try:
        with os.scandir(path) as entries:
            return PathFacts("folder", frozenset(e.name for e in entries if e.is_dir()))
    except OSError:
        return PathFacts("folder")


MODEL_FILE_KEYS = tuple(dict.fromkeys(f.key for family in families.ALL for f in family.model_files))
"""Every ``[model]`` key that names a model file besides the base model, in the families' order."""


@dataclass(frozen=True)
class Facts:
    """Everything probed for one recipe.

    Attributes:
        model: The base model's header facts.
        subsets: One entry per ``dataset.subsets`` item.
        packages: Which of :data:`PACKAGES` are importable here.
        other_builds: Builds already in the build folder: output name -> recipe file that made it.
        tagger_models: Each ``[captions.autotag]`` model folder and what it holds.
        tagger_script: kohya's WD14 tagger script and whether it is there, when the recipe sets
            ``[captions.autotag]`` (None otherwise).
        transformers_version: The installed transformers' version, when an autotag table uses
            kohya's BLIP captioner (None otherwise, when not installed, or with the setting
            :data:`lorabuild.kohya.tagger.BLIP_CHECK_OFF`).
        segmenters: Each ``remove_background`` table's model, by its key path: what it is fed
            (:class:`~lorabuild.probe.segmentation.Segmenter`), or why it cannot be used (a sentence).
        platform: ``sys.platform`` of the machine that checks (and, as a rule, trains).
        paths: What is at each of ``model.vae``, ``model.tokenizer_cache_dir`` and
            ``network.weights`` that the recipe sets.
        components: The header of each model file the recipe sets besides the base model, by its
            ``[model]`` key (``clip_l``, ``t5xxl``, ``ae``).
        clip_model: ``pick.clip_model``'s folder (:class:`~lorabuild.probe.clipfolder.ClipFolder`), or
            why it cannot be used (a sentence); None when the recipe sets none.
        aesthetic_model: ``pick.aesthetic_model``'s head, or why it cannot be used; None when unset.
    """

    model: ModelInfo
    subsets: tuple[SubsetFacts, ...]
    packages: Mapping[str, bool]
    other_builds: Mapping[str, str] = field(default_factory=dict)
    tagger_models: Mapping[Path, TaggerModel] = field(default_factory=dict)
    tagger_script: tuple[Path, bool] | None = None
    segmenters: Mapping[str, Segmenter | str] = field(default_factory=dict)
    transformers_version: str | None = None
    platform: str = field(default_factory=lambda: sys.platform)
    paths: Mapping[Path, PathFacts] = field(default_factory=dict)
    components: Mapping[str, ModelInfo] = field(default_factory=dict)
    clip_model: ClipFolder | str | None = None
    aesthetic_model: AestheticHead | str | None = None

    @property
    def training_stack(self) -> bool:
        """Whether kohya's Python stack is installed here (so package checks are meaningful)."""
        return bool(self.packages.get("accelerate") and self.packages.get("torch"))


def gather(recipe: Recipe, recipe_file: Path, build_root: Path | None = None) -> Facts:
    """Probe the model, every subset, the installed packages and the other builds for ``recipe``."""
    others = existing_builds(build_root) if build_root else {}
    mine = recipe_file.resolve()
    cache = load_probe_cache(build_root / recipe.name / "dataset" / STAGE_MANIFEST) if build_root else {}
    # Not counted as images lost in a sub-folder: the builds, other subsets' own folders.
    not_below = {os.path.realpath(s.source) for s in recipe.dataset.subsets}
    if build_root is not None:
        not_below.add(os.path.realpath(build_root))
    subsets = [
        probe_subset(s.source, s.caption_extension, cache, not_below=not_below)
        for s in recipe.dataset.subsets
    ]
    return Facts(
        model=probe_model(recipe.model.base),
        subsets=tuple(fingerprint_images(subsets, recipe.images.duplicates)),
        packages=installed_packages(),
        other_builds={name: str(path) for name, path in others.items() if path != mine},
        tagger_models={
            s.model_dir: probe_model_dir(s.model_dir, s.tagger) for _, s in autotag_sections(recipe)
        },
        tagger_script=tagger_script(autotag_sections(recipe)[0][1].tagger)
        if autotag_sections(recipe)
        else None,
        segmenters={key: probe_segmenter(table) for key, table in remove_background_sections(recipe)},
        transformers_version=package_version("transformers")
        if any(s.tagger == "blip" for _, s in autotag_sections(recipe)) and not os.environ.get(BLIP_CHECK_OFF)
        else None,
        paths={
            path: probe_path(path)
            for path in (recipe.model.vae, recipe.model.tokenizer_cache_dir, recipe.network.weights)
            if path is not None
        },
        components={
            key: probe_model(path)
            for key in MODEL_FILE_KEYS
            if (path := getattr(recipe.model, key)) is not None
        },
        clip_model=probe_clip(recipe.pick.clip_model) if recipe.pick.clip_model else None,
        aesthetic_model=probe_aesthetic(recipe.pick.aesthetic_model) if recipe.pick.aesthetic_model else None,
    )


def probe_subset(
    source: Path,
    caption_extension: str,
    cache: Mapping[str, list[Any]] | None = None,
    *,
    not_below: Collection[str] = (),
) -> SubsetFacts:
    """List ``source`` the way kohya does and read its image headers and captions.

    Args:
        source: The subset's folder.
        caption_extension: The subset's caption extension (with its dot).
        cache: Probe records by absolute path (:func:`load_probe_cache`); a record is used for a
            file whose :class:`FileKey` it matches, and its caption text for an unchanged caption.
        not_below: Real paths of folders whose images are not counted in
            :attr:`SubsetFacts.images_below` (the build root, the subsets' sources).

    Returns:
        The folder's facts.
    """
    if not source.exists():
        return SubsetFacts(source, "missing")
    if not source.is_dir():
        return SubsetFacts(source, "not_a_folder")
    listing = list_folder(source)
    # Names as strings from here on: for 10,000 images pathlib costs more than the stat calls.
    prefix = os.path.join(os.path.abspath(source), "")
    plain = (caption_extension, *_NOT_CAPTIONS)  # the bulk of other files; never images
    reasons = {p.name: why_kohya_skips(p) for p in listing.optional_images}
    reasons.update((p.name, why_kohya_skips(p)) for p in listing.other_files if not p.name.endswith(plain))
    # Files kohya would skip but lorabuild can stage under a name or in a format kohya reads;
    # hidden files stay out (they are usually an editor's or a tagger's leftovers).
    candidates = [
        p
        for p in (*listing.optional_images, *listing.other_files)
        if reasons.get(p.name) is not None and not p.name.startswith(".")
    ]
    paths = [*listing.images, *candidates]
    names = [p.name for p in paths]
    probed = _probe_cached(paths, names, prefix, cache or {})
    staged: list[tuple[str, ImageInfo, Fingerprint, list[Any] | None]] = []
    skipped: list[tuple[Path, str]] = []
    for index, (name, item) in enumerate(zip(names, probed, strict=True)):
        if index < len(listing.images) or item[0].problem is None:
            staged.append((name, *item))
        else:  # not an image Pillow reads here (or broken): kohya skips it and lorabuild cannot convert it
            skipped.append((paths[index], reasons[name] or item[0].problem or ""))
    if candidates:
        staged.sort(key=lambda item: item[0])
    staged_names = {item[0] for item in staged}
    stems = {_stem(item[0]) for item in staged}
    unstaged = {p for p, _ in skipped}
    others: dict[str, int] = {}
    for path in listing.other_files:
        name = path.name
        if name.endswith(plain) or name in staged_names:
            continue
        reason = reasons.get(name)
        if reason:
            if path not in unstaged:
                skipped.append((path, reason))
        elif _stem(name) in stems:
            others[path.suffix] = others.get(path.suffix, 0) + 1
    captions: list[CaptionFile] = []
    prints: list[Fingerprint] = []
    for name, _info, fingerprint, record in staged:
        caption_name = _stem(name) + caption_extension
        caption, caption_key = _read_caption_cached(source / caption_name, caption_name, prefix, record)
        captions.append(caption)
        prints.append(
            Fingerprint(fingerprint.key, fingerprint.sha256, fingerprint.dhash, caption_key)
            if caption_key
            else fingerprint
        )
    return SubsetFacts(
        source=source,
        state="ok",
        images=tuple(item[1] for item in staged),
        captions=tuple(captions),
        other_caption_files=dict(sorted(others.items())),
        skipped=tuple(sorted(skipped, key=lambda item: item[0].name)),
        subfolders_with_images=tuple(sorted(p.name for p in listing.subfolders if _has_images(p))),
        fingerprints=tuple(prints),
        images_below=images_below(source, not_below, listing.subfolders),
    )


def _stem(name: str) -> str:
    """``Path(name).stem`` without building a Path."""
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def _read_caption_cached(
    path: Path, name: str, prefix: str, record: list[Any] | None
) -> tuple[CaptionFile, FileKey | None]:
    """An image's caption file and its key; its text comes from ``record`` when the file is unchanged."""
    key = FileKey.of(prefix + name)
    if key is None:
        return read_caption(path), None  # missing (or unreadable: read_caption says why)
    text = cached_caption(record, name, key)
    if text is not None:
        return CaptionFile(path, text), key
    caption = read_caption(path)
    return caption, key if caption.path is not None and caption.problem is None else None


def _probe_cached(
    paths: Sequence[Path], names: Sequence[str], prefix: str, cache: Mapping[str, list[Any]]
) -> list[tuple[ImageInfo, Fingerprint, list[Any] | None]]:
    """Probe ``paths`` (named ``names`` in the folder ``prefix``), taking unchanged files' facts from ``cache``."""
    results: list[tuple[ImageInfo, Fingerprint, list[Any] | None] | None] = []
    keys: list[FileKey | None] = []
    for path, name in zip(paths, names, strict=True):
        full = prefix + name
        key = FileKey.of(full)
        keys.append(key)
        record = cache.get(full) if key is not None else None
        results.append(image_from_record(path, key, record) if record is not None else None)
    missing = [i for i, result in enumerate(results) if result is None]
    # New and changed images are the ones staging will decode: start that now, where prepare asked.
    decode_ahead([paths[i] for i in missing])
    for i, info in zip(missing, probe_images([paths[i] for i in missing]), strict=True):
        results[i] = (info, Fingerprint(keys[i]), None)
    return [result for result in results if result is not None]


_T = TypeVar("_T")


def _parallel(fn: Callable[[Path], _T], paths: Sequence[Path], threads: bool = True) -> list[_T]:
    """``fn`` over ``paths`` on every core (Pillow and hashlib release the GIL while they work)."""
    workers = os.cpu_count() or 1
    if not threads or workers == 1 or len(paths) < 8:
        return [fn(path) for path in paths]
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        return list(pool.map(fn, paths))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C stops after the files under way


def _content_hash(path: Path) -> str | None:
    try:
        return content_hash(path)
    except OSError:  # gone or unreadable since it was listed: the next check sees it
        return None


def fingerprint_images(subsets: Sequence[SubsetFacts], duplicates: str) -> list[SubsetFacts]:
    """Add the hashes ``images.duplicates`` needs to every readable image's fingerprint.

    ``exact`` hashes the contents of files that share their size with another image (files of a
    unique size cannot be copies, so most datasets hash nothing); ``near`` adds a perceptual hash
    of every image, which decodes it (a JPEG at 1/8 scale). Hashes already in the probe cache
    are reused.
    """
    if duplicates == "off":
        return list(subsets)
    prints: dict[str, Fingerprint] = {}
    paths: dict[str, Path] = {}
    by_size: dict[int, list[str]] = {}
    for sf in subsets:
        for index, info in enumerate(sf.images):
            fingerprint = sf.fingerprint(index)
            name = str(info.path)
            if info.problem is None and fingerprint.key is not None and name not in prints:
                prints[name] = fingerprint
                paths[name] = info.path
                by_size.setdefault(fingerprint.key.size, []).append(name)
    to_hash = [
        name for group in by_size.values() if len(group) > 1 for name in group if prints[name].sha256 is None
    ]
    # Hashing a small file costs less than handing it to a thread; big files hash on every core.
    sizes = [key.size for n in to_hash if (key := prints[n].key) is not None]
    large = sum(sizes) > 256 * 1024 * len(sizes)  # more than 256 KiB a file on average
    hashes = _parallel(_content_hash, [paths[n] for n in to_hash], threads=large)
    for name, digest in zip(to_hash, hashes, strict=True):
        prints[name] = replace(prints[name], sha256=digest)
    to_dhash = [n for n, f in prints.items() if f.dhash is None] if duplicates == "near" else []
    for name, value in zip(to_dhash, _parallel(dhash, [paths[n] for n in to_dhash]), strict=True):
        prints[name] = replace(prints[name], dhash=value)
    if not to_hash and not to_dhash:
        return list(subsets)
    return [
        replace(
            sf,
            fingerprints=tuple(
                prints.get(str(info.path), sf.fingerprint(index)) for index, info in enumerate(sf.images)
            ),
        )
        for sf in subsets
    ]


def _has_images(folder: Path) -> bool:
    try:
        return bool(list_folder(folder).images)
    except OSError:
        return False
