"""Staging: the dataset in kohya's layout, made from the plan, never touching the sources.

Each subset becomes ``build/<name>/dataset/<repeats>_<trigger>/`` holding its images and one
``.txt`` caption per image, after the caption rules. An image is a hard link to the source
where the file system allows (no admin rights needed on Windows), else a copy; an image kohya
would misread (EXIF orientation, transparency, a format it cannot list) is a converted PNG
(:mod:`lorabuild.probe.imagefix`); an image cut out of its background (``[images.remove_background]``)
is a hard link to its cut-out rendered by :mod:`lorabuild.build.cutout`. An image is staged only once it decodes (:mod:`lorabuild.probe.decodecheck`;
checked for new and changed sources only). ``build/<name>/tags.csv`` gets the tag table of :mod:`lorabuild.plan.tags`.

Sources are never written to: every write goes to a temporary file in the stage and is renamed
into place (:func:`lorabuild.render.writer.write_atomic`), so replacing a staged hard link replaces the
link, never the file it shares with the source. A caption under a name not yet in the stage is
created exclusively instead (``O_EXCL``: it cannot be a link), saving the rename.

**Incremental.** ``dataset/.stage.json`` (the stage manifest) records every staged file: for an
image, its source's path and :class:`~lorabuild.probe.cache.FileKey` (size, mtime, inode) with its
header facts and hashes (the probe cache :func:`lorabuild.probe.facts.gather` reads), how it was staged
(link, copy, or the conversion's key) and the staged file's own key; for a caption, the sha256 of
its text and its key. A file whose record matches the plan and whose staged key is unchanged is
left alone, so a second ``prepare`` with nothing changed costs a ``stat`` per file and writes
nothing. A changed caption re-writes that caption; a changed source re-stages that image (and
deletes kohya's latent caches for it); a source that is gone leaves the stage.

**Interrupted runs converge.** The manifest is written at the end, and on Ctrl-C, with what was
finished. After a harder stop, files staged since the last manifest have no record: a link
already pointing at the source's inode is recognised as it is, a caption is compared byte for
byte, a conversion is done again. Temporary files left behind are removed with everything else
the plan does not name.

**A failed write stops cleanly.** When the build's disk is full (or read-only, or forbidden),
staging raises :class:`~lorabuild.render.writer.WriteError` naming the dataset folder, about how many
bytes it still had to write and how many are free; the file being written is removed, the
manifest keeps what was finished, and the rest of the stage is as the last run left it.

kohya's own files in the stage are kept while they are valid: ``cache_latents_to_disk`` writes
``<stem>.npz`` or ``<stem>_<W>x<H>_<arch>.npz`` next to each image and
``cache_text_encoder_outputs_to_disk`` ``<stem>_te_outputs.npz`` (``<stem>_<arch>_te.npz`` for the
DiT families: ``_flux_te``, ``_lumina_te``...); a re-staged image loses its
latent caches and a re-written caption its text-encoder caches, so kohya computes them again.

Why one module: staging is one incremental algorithm (:class:`_Stager`) over one record format
(``.stage.json``): what a record holds, when a staged file counts as current, and how each kind
of write keeps the sources safe are read together; the file operations here exist only for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from hashlib import sha256
from pathlib import Path
from typing import Any

from lorabuild import __version__
from lorabuild.plan.layout import BuildLayout
from lorabuild.plan.plan import Plan
from lorabuild.plan.subsets import STAGED_CAPTION_EXTENSION, StagedImage
from lorabuild.plan.tags import tags_csv
from lorabuild.probe.cache import (
    PROBE_CACHE_VERSION,
    PROBE_FIELDS,
    STAGE_MANIFEST,
    STAGED_FIELDS,
    probe_record,
    read_stage_manifest,
)
from lorabuild.probe.decodecheck import decode_problems
from lorabuild.probe.imagefix import convert_image
from lorabuild.problems import Problem, RecipeError, error, warning
from lorabuild.render.meter import Progress
from lorabuild.render.writer import Artefact, write_all, write_atomic, write_error, write_files, writing

MANIFEST_VERSION = 1


CAPTION_FIELDS = ("sha256", "staged")
"""What the manifest records about a staged caption: the sha256 of its bytes and its
``[size, mtime_ns, inode]``."""


# kohya's disk caches next to an image: latents (``<stem>.npz`` at older commits,
# ``<stem>_0512x0768_sd.npz`` / ``_sdxl.npz`` now) and text-encoder outputs.
_LATENT_CACHE = re.compile(r"(?P<stem>.+?)(?:_\d{4}x\d{4}_[A-Za-z0-9]+)?\.npz")


# Text-encoder outputs: SDXL's ``_te_outputs``, and each DiT family's ``_<arch>_te``
# (library/strategy_sd3.py, strategy_flux.py, strategy_lumina.py, strategy_anima.py,
# strategy_hunyuan_image.py). kohya checks only that their arrays are there, not the caption they
# were made from, so a rewritten caption must lose them here.
_TEXT_CACHE = re.compile(r"(?P<stem>.+?)(?:_te_outputs|_(?:sd3|flux|lumina|anima|hi)_te)\.npz")


Stat = tuple[int, int, int]
"""(size, mtime_ns, inode) of a staged file."""


@dataclass(frozen=True)
class StageReport:
    """What staging did.

    Attributes:
        linked: Images hard-linked to their source.
        copied: Images copied (the stage is on another file system than the source).
        converted: Images written as converted PNGs.
        cut_out: Images staged as their cut-outs (``[images.remove_background]``; the count of those
            staged anew, made or taken from the cache).
        unchanged: Images already staged as planned.
        captions_written: Caption files written.
        removed: Files and folders removed from the stage (no longer planned, or leftovers).
        problems: Images that failed to convert and were left out (``images.on_bad_image = "skip"``).
        tags: What happened to ``tags.csv``: ``create``, ``update`` or ``identical``.
    """

    linked: int = 0
    copied: int = 0
    converted: int = 0
    unchanged: int = 0
    cut_out: int = 0
    captions_written: int = 0
    removed: int = 0
    problems: tuple[Problem, ...] = ()
    tags: str = "identical"


def _stat(path: Path | str) -> Stat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _manifest_bytes(images: Mapping[str, list[Any]], captions: Mapping[str, list[Any]]) -> bytes:
    """The manifest: a header, then one record per line (readable, diffable, quick to write)."""
    head = {
        "schema_version": MANIFEST_VERSION,
        "lorabuild_version": __version__,
        "probe_version": PROBE_CACHE_VERSION,
        "image_fields": [*STAGED_FIELDS, *PROBE_FIELDS],
        "caption_fields": list(CAPTION_FIELDS),
    }
    parts = [json.dumps(head, ensure_ascii=False)[:-1]]
    for name, records in (("images", images), ("captions", captions)):
        body = ",\n".join(
            f"  {json.dumps(k, ensure_ascii=False)}: {json.dumps(records[k], ensure_ascii=False)}"
            for k in sorted(records)
        )
        parts.append(f', "{name}": {{\n{body}\n}}')
    return ("".join(parts) + "}\n").encode("utf-8")


def _method(image: StagedImage) -> str:
    if image.cutout is not None:
        return f"cutout;{image.cutout.key}"
    return "link" if image.conversion is None else image.conversion.key


def _same_source(image: StagedImage, record: list[Any] | None) -> bool:
    """Whether ``record`` was made from the version of the source the plan was made from."""
    key = image.fingerprint.key if image.fingerprint else None
    head = len(STAGED_FIELDS)
    return key is not None and record is not None and record[head + 1 : head + 4] == key.as_list()


def _is_current(image: StagedImage, record: list[Any] | None, staged: Stat | None) -> bool:
    """Whether the staged image is what the plan asks for, judged from its record and stat."""
    if staged is None:
        return False
    key = image.fingerprint.key if image.fingerprint else None
    if image.cutout is not None:
        # A hard link to the rendered cut-out, whose name is its content's key.
        if staged == _stat(image.cutout.file):
            return True
    elif image.conversion is None and key is not None and staged == (key.size, key.mtime_ns, key.inode):
        return True  # the staged name is a hard link to this very version of the source
    return (
        record is not None
        and record[1] == _method(image)
        and record[2] == list(staged)
        and _same_source(image, record)
    )


class _SourceGone(Exception):
    """The source image cannot be read any more (deleted or locked since the check)."""


def _link_or_copy(source: Path, folder: str, name: str) -> str:
    """Hard-link ``source`` as ``folder/name`` (a copy where linking is impossible); return which.

    Raises:
        _SourceGone: The source cannot be read.
        OSError: The stage cannot be written (the temporary file is removed first).
    """
    with contextlib.suppress(OSError):  # a new name: linked in one step (nothing to replace)
        os.link(source, os.path.join(folder, name))
        return "link"
    tmp = os.path.join(folder, f".{name}.link.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        try:
            os.link(source, tmp)
            how = "link"
        except OSError:
            shutil.copy2(source, tmp)
            how = "copy"
        os.replace(tmp, os.path.join(folder, name))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not (os.path.isfile(source) and os.access(source, os.R_OK)):
            raise _SourceGone(exc.strerror or str(exc)) from exc
        raise
    return how


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _create(path: str, data: bytes) -> Stat | None:
    """Write a new file (none by that name yet) in one go; its stat, or None when the name exists.

    Creating exclusively can never write through a link to a source, so no temporary file is
    needed; a run stopped half-way leaves a short file with no manifest record, which the next
    run compares byte for byte and replaces.
    """
    try:
        fd = os.open(path, _CREATE_FLAGS, 0o666)
    except FileExistsError:
        return None
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):  # ours (created exclusively): no half caption stays
            os.unlink(path)
        raise
    return _stat(path)  # after closing: some file systems set the mtime then


def _convert(image: StagedImage, dest: Path) -> Stat | str:
    """Write the converted copy; its stat, or why it failed."""
    assert image.conversion is not None
    try:
        data = convert_image(image.source, image.conversion)
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError... on broken files
        return f"cannot be converted ({'; '.join(image.conversion.reasons)}): {exc}"
    write_atomic(dest, data, durable=False)
    staged = _stat(dest)
    return staged if staged is not None else "vanished from the stage while it was written"


def _cache_owner(name: str) -> tuple[str, str] | None:
    """``(stem, kind)`` of a kohya cache file (``latents`` or ``text``), or None."""
    if not name.endswith(".npz"):
        return None
    match = _TEXT_CACHE.fullmatch(name)
    if match:
        return match["stem"], "text"
    match = _LATENT_CACHE.fullmatch(name)
    return (match["stem"], "latents") if match else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class _Stager:
    """One staging run: the last run's records, this run's, and the counts."""

    def __init__(self, plan: Plan, progress: Progress | None = None) -> None:
        self.plan = plan
        self.progress = progress
        self.done = 0
        self.todo = 0
        self.root = plan.layout.dataset_dir
        manifest = read_stage_manifest(self.root / STAGE_MANIFEST)
        self.old_images: dict[str, list[Any]] = {}
        self.old_captions: dict[str, list[Any]] = {}
        if manifest is not None and manifest.get("schema_version") == MANIFEST_VERSION:
            self.old_images = manifest["images"]
            self.old_captions = manifest["captions"]
        self.images: dict[str, list[Any]] = {}
        self.captions: dict[str, list[Any]] = {}
        self.counts = {
            "link": 0,
            "copy": 0,
            "convert": 0,
            "cutout": 0,
            "unchanged": 0,
            "captions": 0,
            "removed": 0,
        }
        self.failed: list[tuple[StagedImage, str]] = []
        # (stem, kind) per folder whose kohya caches are stale: re-staged images, re-written captions.
        self.stale: dict[str, set[tuple[str, str]]] = {}

    def run(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conversions: list[tuple[str, StagedImage, Path]] = []
        links: list[tuple[str, StagedImage, str, str]] = []
        cutouts: list[tuple[str, StagedImage, str, str]] = []
        for subset in self.plan.subsets:
            # Paths as strings in the loops: pathlib costs more than the stat calls themselves.
            folder = os.path.join(self.root, subset.folder)
            os.makedirs(folder, exist_ok=True)
            prefix = os.path.join(folder, "")
            self.stale[subset.folder] = set()
            base = os.path.join(os.path.abspath(subset.source), "")
            for image in subset.images:
                rel = f"{subset.folder}/{image.name}"
                record = self.old_images.get(rel)
                staged = _stat(prefix + image.name)
                if _is_current(image, record, staged):
                    self.counts["unchanged"] += 1
                    if not _same_source(image, record):  # edited in place: the link shows the new pixels
                        self._restaged(subset.folder, image)
                    self._record(rel, image, record[0] if record else "link", staged, base)
                elif image.cutout is not None:
                    cutouts.append((rel, image, folder, base))
                elif image.conversion is None:
                    links.append((rel, image, folder, base))
                else:
                    conversions.append((rel, image, Path(folder, image.name)))
        self.todo = len(links) + len(conversions) + len(cutouts)
        self._link_all(links)
        self._convert_all(conversions)
        self._link_cutouts(cutouts)
        failed = {id(image) for image, _ in self.failed}
        for subset in self.plan.subsets:
            for image in subset.images:
                if id(image) not in failed:
                    self._caption(subset.folder, image)

    def _record(self, rel: str, image: StagedImage, how: str, staged: Stat | None, base: str) -> None:
        """Record a staged image; ``base`` is its source folder's absolute path, with a separator."""
        probe = None
        if image.info is not None and image.fingerprint is not None:
            path = base + image.source.name
            probe = probe_record(image.info, image.fingerprint, image.caption_file, path)
        if probe is None:
            probe = [os.path.abspath(image.source)] + [None] * (len(PROBE_FIELDS) - 1)
        entry = [how, _method(image), list(staged) if staged else None, *probe]
        old = self.old_images.get(rel)
        self.images[rel] = old if old == entry else entry  # an unchanged record is kept, not copied

    def _restaged(self, folder: str, image: StagedImage) -> None:
        self.stale[folder].add((Path(image.name).stem, "latents"))

    def _link_all(self, jobs: list[tuple[str, StagedImage, str, str]]) -> None:
        """Link new and changed images once they decode (:mod:`lorabuild.probe.decodecheck`)."""
        progress = self.progress

        def checked(done: int, total: int) -> None:
            if progress is not None:
                progress("checking new images", done, total)

        sources = [image.source for _, image, _, _ in jobs]
        problems: list[str | None] = []
        if jobs:
            # Told how the check goes only when someone listens (stand-ins take the paths alone).
            problems = (
                decode_problems(sources) if progress is None else decode_problems(sources, progress=checked)
            )
        for (rel, image, folder, base), problem in zip(jobs, problems, strict=True):
            if problem is not None:
                self.failed.append((image, problem))
                continue
            try:
                how = _link_or_copy(image.source, folder, image.name)
            except _SourceGone as gone:
                self.failed.append((image, f"cannot be read any more ({gone}): it changed during prepare"))
                continue
            self.counts[how] += 1
            self._restaged(rel.split("/", 1)[0], image)
            self._record(rel, image, how, _stat(os.path.join(folder, image.name)), base)
            self._advanced()

    def _advanced(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress("staging images", self.done, self.todo)

    def _link_cutouts(self, jobs: list[tuple[str, StagedImage, str, str]]) -> None:
        """Link each rendered cut-out (:mod:`lorabuild.build.cutout`; decoded when it was made)."""
        for rel, image, folder, base in jobs:
            assert image.cutout is not None
            try:
                _link_or_copy(image.cutout.file, folder, image.name)
            except _SourceGone as gone:
                self.failed.append((image, f"its cut-out cannot be read ({gone}): prepare again"))
                continue
            self.counts["cutout"] += 1
            self._restaged(rel.split("/", 1)[0], image)
            self._record(rel, image, "cutout", _stat(os.path.join(folder, image.name)), base)
            self._advanced()

    def _convert_all(self, jobs: list[tuple[str, StagedImage, Path]]) -> None:
        """Convert on every core: Pillow decodes and encodes without holding the GIL."""
        if not jobs:
            return
        pool = ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1))
        try:
            results = pool.map(lambda job: _convert(job[1], job[2]), jobs)
            for (rel, image, _), result in zip(jobs, results, strict=True):
                if isinstance(result, str):
                    self.failed.append((image, result))
                    continue
                self.counts["convert"] += 1
                folder = rel.split("/", 1)[0]
                self._restaged(folder, image)
                base = os.path.join(os.path.dirname(os.path.abspath(image.source)), "")
                self._record(rel, image, "convert", result, base)
                self._advanced()
        finally:
            # On Ctrl-C, stop after the conversions under way instead of doing all the others.
            pool.shutdown(wait=True, cancel_futures=True)

    def _caption(self, folder: str, image: StagedImage) -> None:
        name = image.name.rpartition(".")[0] + STAGED_CAPTION_EXTENSION
        rel = f"{folder}/{name}"
        if rel in self.captions:
            return  # two images with one stem (a.png, a.jpg) share a caption file, as in the source
        data = (image.caption + "\n").encode("utf-8")
        digest = sha256(data).hexdigest()
        path = f"{self.root}{os.sep}{folder}{os.sep}{name}"
        staged = _stat(path)
        record = self.old_captions.get(rel)
        if staged is None:
            staged = _create(path, data)
            if staged is not None:
                self.counts["captions"] += 1
                self.captions[rel] = [digest, list(staged)]
                return
            staged = _stat(path)  # there after all (made since the stat): compared below
        if not (staged and record and record[0] == digest and record[1] == list(staged)):
            try:
                with open(path, "rb") as file:
                    current: bytes | None = file.read()
            except OSError:
                current = None
            if current != data:
                write_atomic(Path(path), data, durable=False)
                self.counts["captions"] += 1
                self.stale[folder].add((name.rpartition(".")[0], "text"))
                staged = _stat(path)
        self.captions[rel] = [digest, list(staged) if staged else None]

    def remove_unplanned(self) -> None:
        """Delete what the plan does not name: old images and captions, leftovers, stale caches."""
        folders = {s.folder for s in self.plan.subsets}
        wanted: dict[str, set[str]] = {folder: set() for folder in folders}
        for rel in (*self.images, *self.captions):
            folder, name = rel.split("/", 1)
            wanted[folder].add(name)
        for folder in folders:
            names = wanted[folder]
            stems = {name.rpartition(".")[0] for name in names}
            stale = self.stale.get(folder, set())
            with os.scandir(self.root / folder) as entries:
                present = [e.name for e in entries]
            for name in present:
                if name in names:
                    continue
                owner = _cache_owner(name)
                if owner is not None and owner[0] in stems and owner not in stale:
                    continue
                _remove(self.root / folder / name)
                self.counts["removed"] += 1
        with os.scandir(self.root) as entries:
            present = [e.name for e in entries]
        for name in present:
            path = self.root / name
            # Folders of subsets no longer planned, and temporary files of an interrupted run.
            if (path.is_dir() and name not in folders) or (name.startswith(".") and name.endswith(".tmp")):
                _remove(path)
                self.counts["removed"] += 1

    def remaining_bytes(self) -> int:
        """About how many bytes this run still had to write: copies and conversions of the images
        not staged yet (a hard link takes none), captions not written yet and the manifest."""
        try:
            device: int | None = os.stat(self.root).st_dev
        except OSError:
            device = None
        failed = {id(image) for image, _ in self.failed}
        total = 0
        for subset in self.plan.subsets:
            for image in subset.images:
                if id(image) in failed:
                    continue
                if f"{subset.folder}/{image.name}" not in self.images:
                    total += _image_bytes(image, device)
                caption = f"{subset.folder}/{image.name.rpartition('.')[0]}{STAGED_CAPTION_EXTENSION}"
                if caption not in self.captions:
                    total += len(image.caption.encode("utf-8")) + 1
        return total + len(_manifest_bytes({**self.old_images, **self.images}, self.captions))

    @property
    def changed(self) -> bool:
        return self.images != self.old_images or self.captions != self.old_captions

    def save_manifest(self, complete: bool) -> None:
        """Write the records; after an interruption, merged with the last run's for files not reached."""
        images, captions = self.images, self.captions
        if not complete:
            images = {**self.old_images, **self.images}
            captions = {**self.old_captions, **self.captions}
        path = self.root / STAGE_MANIFEST
        if images == self.old_images and captions == self.old_captions and path.exists():
            return
        write_atomic(path, _manifest_bytes(images, captions), durable=False)


def _image_bytes(image: StagedImage, device: int | None) -> int:
    """What staging ``image`` writes: a converted PNG's estimate, a copy's size, or 0 for a link."""
    try:
        st = os.stat(image.source)
    except OSError:
        return 0
    if image.cutout is not None:
        return 0  # a hard link to the rendered cut-out
    if image.conversion is not None:
        width, height = image.info.pixel_size if image.info is not None else (0, 0)
        return max(st.st_size, width * height * 3 // 2)  # a PNG of a photo: about half its pixels' bytes
    return 0 if st.st_dev == device else st.st_size


def stage(plan: Plan, progress: Progress | None = None) -> StageReport:
    """Stage every subset of ``plan`` into ``plan.build_dir / "dataset"`` and write ``tags.csv``;
    ``progress`` is told how the decode check of new images and their staging advance.

    Returns:
        What was done.

    Raises:
        RecipeError: Images failed to convert and ``images.on_bad_image`` is ``error`` (the rest
            is staged first).
        WriteError: The build folder cannot be written (full, read-only...): what was staged
            is recorded, nothing half-written is left.
    """
    stager = _Stager(plan, progress)
    try:
        stager.run()
        stager.remove_unplanned()
    except OSError as exc:
        with contextlib.suppress(OSError):  # keep what was finished, if there is room for it
            stager.save_manifest(complete=False)
        raise write_error(stager.root, exc, stager.remaining_bytes()) from exc
    except BaseException:  # Ctrl-C: record what was finished
        stager.save_manifest(complete=False)
        raise
    with writing(stager.root):
        stager.save_manifest(complete=True)
    staged = plan
    if stager.failed:
        left_out = {id(image) for image, _ in stager.failed}
        staged = replace(
            plan,
            subsets=tuple(
                replace(s, images=tuple(i for i in s.images if id(i) not in left_out)) for s in plan.subsets
            ),
        )
    csv_path = plan.layout.tags_csv
    if stager.changed or not csv_path.exists():
        (written,) = write_files(plan.build_dir, {BuildLayout.TAGS_CSV: Artefact(tags_csv(staged))})
        tags = written.action
    else:
        tags = "identical"  # the same captions as when it was written
    problems = _failures(plan, stager.failed)
    if plan.on_bad_image != "skip" and problems:
        raise RecipeError(problems)
    c = stager.counts
    return StageReport(
        linked=c["link"],
        copied=c["copy"],
        converted=c["convert"],
        unchanged=c["unchanged"],
        captions_written=c["captions"],
        removed=c["removed"],
        cut_out=c["cutout"],
        problems=tuple(problems),
        tags=tags,
    )


def _failures(plan: Plan, failed: Iterable[tuple[StagedImage, str]]) -> list[Problem]:
    skip = plan.on_bad_image == "skip"
    problems = []
    for image, reason in failed:
        if skip:
            problems.append(
                warning(str(image.source), f'left out of the stage (images.on_bad_image = "skip"): {reason}')
            )
        else:
            problems.append(error(str(image.source), f"{reason}: re-export or delete it"))
    return problems
