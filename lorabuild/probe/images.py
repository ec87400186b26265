"""Facts about image files, read from their headers: which files kohya trains on, their sizes,
transparency and EXIF orientation, and whether a file is damaged.

Nothing here decodes pixels in the common case. ``lorabuild check`` probes every image of a
dataset before each build, so a probe costs one ``open``, Pillow's lazy header parse and one
read of the file's last bytes. Only a file whose tail looks wrong (a PNG without its end chunk,
a JPEG without its end marker, a WebP or BMP shorter than its header says) is decoded, to tell
a truncated file (kohya fails on it minutes into a run, with ``OSError: image file is truncated``
while caching latents) from one that merely carries extra bytes.

What kohya does with these files, at the pinned commit (``library/train_util.py``):

* It finds images with ``glob_images``: the top level of ``image_dir`` only, file names ending in
  ``.png .jpg .jpeg .webp .bmp`` in lower or upper case (``.avif`` / ``.jxl`` only when the
  optional ``pillow_avif`` / ``jxlpy`` / ``pillow_jxl`` packages import). Python's glob matches
  case-sensitively on Linux and macOS (``photo.Jpg`` is skipped) and case-insensitively on
  Windows, and never matches names starting with ``.``.
* It reads sizes for bucketing with ``BaseDataset.get_image_size``: the ``imagesize`` package
  first, Pillow only when that fails. Neither applies EXIF orientation. ``imagesize`` reports
  extended WebP files (``VP8X``: those with alpha, EXIF, ICC or animation) one pixel short in
  each direction; :attr:`ImageInfo.width` and :attr:`ImageInfo.height` repeat that, because
  buckets are chosen from those numbers.
* It loads pixels with ``load_image``: ``Image.open`` then ``convert("RGB")``, or
  ``convert("RGBA")`` when the subset sets ``alpha_mask``. EXIF orientation is never applied, so
  a photo a camera stored sideways is trained sideways. Converting to RGB drops the alpha channel
  without compositing: transparent areas become whatever colour the file stores under them
  (often black).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from PIL import Image, UnidentifiedImageError

# kohya's IMAGE_EXTENSIONS (train_util.py, top of the dataset region) lists each of these in lower
# and upper case; glob_images matches "*" + extension for every entry.
IMAGE_EXTENSIONS: Final[tuple[str, ...]] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

# Added to kohya's list only when an optional plugin imports (pillow_avif; jxlpy or pillow_jxl),
# so a dataset that relies on them may find its images silently ignored.
OPTIONAL_IMAGE_EXTENSIONS: Final[tuple[str, ...]] = (".avif", ".jxl")

# Image formats people put in datasets that kohya never picks up, whatever is installed.
_OTHER_IMAGE_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {".gif", ".tif", ".tiff", ".heic", ".heif", ".jfif", ".jpe", ".jp2", ".psd", ".tga", ".ico", ".svg"}
)

# How much of a file's end the integrity check reads: enough for an end marker followed by
# a little padding, small enough to cost one read.
_TAIL_BYTES: Final = 1024

_PNG_IEND: Final = b"IEND\xaeB`\x82"  # chunk type and its fixed CRC
_JPEG_EOI: Final = b"\xff\xd9"
_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_EXIF_ORIENTATION_TAG: Final = 0x0112


def _default_case_sensitive() -> bool:
    # glob.glob matches through fnmatch, which folds case exactly where os.path.normcase does.
    return os.path.normcase("A") == "A"


def kohya_reads_name(name: str, *, optional: bool = False, case_sensitive: bool | None = None) -> bool:
    """Whether kohya's ``glob_images`` picks up a file of this name.

    Args:
        name: The file name (no folder).
        optional: Match :data:`OPTIONAL_IMAGE_EXTENSIONS` (``.avif``, ``.jxl``) instead of
            :data:`IMAGE_EXTENSIONS`.
        case_sensitive: Match as Python's glob does on Linux and macOS (``True``: only all-lower
            or all-upper extensions) or on Windows (``False``); default: this system.

    Returns:
        True when kohya would list the file as an image.
    """
    if case_sensitive is None:
        case_sensitive = _default_case_sensitive()
    if name.startswith("."):  # glob's "*" never matches a leading dot
        return False
    extensions = OPTIONAL_IMAGE_EXTENSIONS if optional else IMAGE_EXTENSIONS
    if not case_sensitive:
        name = name.lower()
        return name.endswith(extensions)
    return name.endswith(extensions) or name.endswith(tuple(e.upper() for e in extensions))


@dataclass(frozen=True)
class FolderListing:
    """The top level of one image folder, sorted by name as kohya sorts it.

    Attributes:
        folder: The folder listed.
        images: Entries kohya trains on (its ``glob_images``). Like kohya this includes a
            sub-folder or broken link whose name ends in an image extension; probing it reports
            the problem.
        optional_images: ``.avif`` / ``.jxl`` files, which kohya reads only when an optional
            plugin is installed in its environment.
        other_files: Every other file (captions, unsupported or mis-named images, ``.DS_Store``).
        subfolders: Sub-folders; kohya does not look inside them.
    """

    folder: Path
    images: tuple[Path, ...]
    optional_images: tuple[Path, ...]
    other_files: tuple[Path, ...]
    subfolders: tuple[Path, ...]


def list_folder(folder: Path, *, case_sensitive: bool | None = None) -> FolderListing:
    """List a folder's entries the way kohya discovers images in it.

    Mirrors ``glob_images`` in kohya's ``library/train_util.py``: top level only, names matched
    by extension as Python's glob matches them, duplicates removed, sorted by path.

    Args:
        folder: An ``image_dir``.
        case_sensitive: See :func:`kohya_reads_name`; default: this system.

    Returns:
        The folder's entries, grouped.

    Raises:
        OSError: The folder cannot be listed (missing, not a folder, no permission).
    """
    images: list[Path] = []
    optional: list[Path] = []
    others: list[Path] = []
    subfolders: list[Path] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            path = folder / entry.name
            if kohya_reads_name(entry.name, case_sensitive=case_sensitive):
                images.append(path)
            elif kohya_reads_name(entry.name, optional=True, case_sensitive=case_sensitive):
                optional.append(path)
            elif entry.is_dir():
                subfolders.append(path)
            else:
                others.append(path)
    return FolderListing(folder, _sorted(images), _sorted(optional), _sorted(others), _sorted(subfolders))


_ANY_IMAGE: Final = frozenset({*IMAGE_EXTENSIONS, *OPTIONAL_IMAGE_EXTENSIONS, *_OTHER_IMAGE_EXTENSIONS})


def images_below(
    folder: Path, skip: Collection[str] = (), subfolders: Iterable[Path] | None = None
) -> dict[str, int]:
    """Image files in the sub-folders of ``folder``, at any depth: kohya never reads them.

    kohya's ``glob_images`` lists only the top of an image folder (and lorabuild stages only
    that), so images a user sorted into ``folder/more/`` are silently left out of training.
    Files are counted by name (any image extension, any case), never opened, so a check stays
    quick. Hidden files and folders (``.git``, ``.thumbnails``), links to folders and the folders
    in ``skip`` are left out.

    Args:
        folder: A subset's source folder.
        skip: Real paths (:func:`os.path.realpath`) of folders not to count: the build root
            (when it lies inside), other subsets' sources.
        subfolders: ``folder``'s sub-folders when already listed (:attr:`FolderListing.subfolders`),
            which saves listing a large ``folder`` again.

    Returns:
        Each sub-folder that directly holds images, as a ``/``-separated path relative to
        ``folder``, with its count; sorted by path.
    """
    found: dict[str, int] = {}
    top = os.fspath(folder)
    if subfolders is None:
        stack = [top]
    else:
        stack = [
            os.fspath(p)
            for p in subfolders
            if not p.name.startswith(".") and not p.is_symlink() and os.path.realpath(p) not in skip
        ]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError:
            continue
        count = 0
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if os.path.realpath(entry.path) not in skip:
                    stack.append(entry.path)
            elif current is not top and os.path.splitext(name)[1].lower() in _ANY_IMAGE:
                count += 1
        if count:
            found[os.path.relpath(current, top).replace(os.sep, "/")] = count
    return dict(sorted(found.items()))


def _sorted(paths: Iterable[Path]) -> tuple[Path, ...]:
    # kohya sorts path strings; within one folder that is the order of the names' code points.
    return tuple(sorted(paths, key=lambda p: p.name))


def why_kohya_skips(path: Path, *, case_sensitive: bool | None = None) -> str | None:
    """Why kohya ignores a file that looks like an image, for files in ``other_files``.

    Args:
        path: A file that :func:`list_folder` did not put in ``images``.
        case_sensitive: See :func:`kohya_reads_name`; default: this system.

    Returns:
        A sentence ending in what to do, or None when the file does not look like an image.
    """
    name = path.name
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS and suffix not in OPTIONAL_IMAGE_EXTENSIONS:
        if suffix in _OTHER_IMAGE_EXTENSIONS:
            return f"kohya does not read {suffix} files: convert it to PNG or JPEG"
        return None
    if name.startswith("."):
        return (
            "kohya skips hidden files (the name starts with '.'): rename it, or delete it if it is a leftover"
        )
    if suffix in OPTIONAL_IMAGE_EXTENSIONS:
        return (
            f"kohya reads {suffix} files only when an optional plugin is installed in its environment"
            f" ({'pillow-avif-plugin' if suffix == '.avif' else 'pillow-jxl-plugin'}): install it,"
            " or convert the file to PNG"
        )
    if not kohya_reads_name(name, case_sensitive=case_sensitive):
        return (
            f"kohya skips it on Linux and macOS: it matches only '{suffix}' or '{suffix.upper()}',"
            f" not '{path.suffix}': rename it"
        )
    return None


@dataclass(frozen=True)
class ImageInfo:
    """What lorabuild knows about one image file without decoding it.

    Attributes:
        path: The file.
        width: Width kohya uses for bucketing (see the module docstring for the WebP quirk);
            0 when the file cannot be read.
        height: Height kohya uses for bucketing; 0 when the file cannot be read.
        format: Pillow's name for the format (``PNG``, ``JPEG``, ``WEBP``, ``BMP``, ``MPO``...),
            whatever the file's extension says; empty when the file cannot be read.
        has_alpha: The file declares transparency (an alpha channel or a transparent palette
            entry). Its pixels may all be opaque; kohya drops the channel unless ``alpha_mask``.
        exif_transposed: EXIF orientation 5 to 8: viewers show the image rotated a quarter turn
            (width and height swapped); kohya ignores the tag and trains it as stored.
        problem: None when kohya can use the file; otherwise what is wrong and what to do, as a
            sentence (``the file is truncated (no PNG end chunk): re-export or delete it``).
        orientation: The EXIF orientation tag (1 to 8; 1 when absent). Anything but 1 means
            viewers show the image differently from how kohya trains it.
        decoded_size: ``(width, height)`` of the decoded pixels when that differs from the size
            kohya buckets by, else None.
    """

    path: Path
    width: int
    height: int
    format: str
    has_alpha: bool
    exif_transposed: bool
    problem: str | None
    orientation: int = 1
    decoded_size: tuple[int, int] | None = None

    @property
    def pixel_size(self) -> tuple[int, int]:
        """``(width, height)`` of the pixels kohya decodes (what it crops and resizes)."""
        return self.decoded_size if self.decoded_size is not None else (self.width, self.height)


def _unreadable(path: Path, problem: str) -> ImageInfo:
    return ImageInfo(path, 0, 0, "", False, False, problem)


def probe_image(path: Path) -> ImageInfo:
    """Read one image file's header and check that the file is complete.

    Args:
        path: The image file.

    Returns:
        Its facts; never raises for a bad file, :attr:`ImageInfo.problem` says what is wrong.
    """
    try:
        with open(path, "rb") as file:
            return _probe_open_file(path, file)
    except FileNotFoundError:
        return _unreadable(path, "cannot be opened: the file does not exist (a broken link?)")
    except (IsADirectoryError, PermissionError) as exc:  # Windows says PermissionError for a folder
        if isinstance(exc, IsADirectoryError) or path.is_dir():
            return _unreadable(
                path, "is a folder, not an image, yet kohya takes it for one by its name: rename it"
            )
        return _unreadable(path, "cannot be opened: permission denied")
    except OSError as exc:
        return _unreadable(path, f"cannot be opened: {exc.strerror or exc}")


def _probe_open_file(path: Path, file: IO[bytes]) -> ImageInfo:
    head = file.read(32)
    if not head:
        return _unreadable(path, "the file is empty (0 bytes): re-export or delete it")
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    try:
        image = Image.open(file)
    except Image.DecompressionBombError as exc:
        return _unreadable(path, f"cannot be read as an image: {exc}: downscale it")
    except Exception as exc:  # a plugin's parser can raise anything on a broken header
        shortfall = _shortfall(head, size)
        if shortfall is not None:
            return _unreadable(path, f"the file is truncated ({shortfall}): re-export or delete it")
        if isinstance(exc, UnidentifiedImageError):
            return _unreadable(
                path,
                "cannot be read as an image (Pillow does not recognise its contents):"
                " re-export it as PNG or JPEG, or delete it",
            )
        return _unreadable(
            path, f"cannot be read as an image ({type(exc).__name__}: {exc}): re-export or delete it"
        )
    with image:
        fmt = image.format or ""
        decoded = image.size
        has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
        exif = image.info.get("exif")
        header_end = file.tell()  # for JPEG: where the first scan's data starts
    orientation = _exif_orientation(exif) if isinstance(exif, bytes) else 1
    tail_start = max(0, size - _TAIL_BYTES)
    file.seek(tail_start)
    tail = file.read()
    problem = None
    truncation = _truncation(fmt, head, tail, tail_start, size, header_end)
    if truncation is not None and not _decodes(path):
        problem = f"the file is truncated ({truncation}): re-export or delete it"
    width, height = _kohya_size(fmt, head, decoded)
    return ImageInfo(
        path=path,
        width=width,
        height=height,
        format=fmt,
        has_alpha=has_alpha,
        exif_transposed=orientation >= 5,
        problem=problem,
        orientation=orientation,
        decoded_size=None if (width, height) == decoded else decoded,
    )


def _truncation(
    fmt: str, head: bytes, tail: bytes, tail_start: int, size: int, header_end: int
) -> str | None:
    """Why the file's end does not look like the end of a complete file, or None."""
    if fmt == "PNG":
        return None if _PNG_IEND in tail else "no PNG end chunk"
    if fmt in ("JPEG", "MPO"):
        # Scan data never contains FF D9 (0xFF is always byte-stuffed there), so an end marker
        # anywhere after the first scan starts closes the image; bytes after it are ignored.
        position = tail.rfind(_JPEG_EOI)
        return None if position >= 0 and tail_start + position >= header_end else "no JPEG end marker"
    return _shortfall(head, size)


def _shortfall(head: bytes, size: int) -> str | None:
    """For formats whose header states the file size (WebP's RIFF, BMP): a file shorter than that."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        expected = struct.unpack_from("<I", head, 4)[0] + 8
    elif head[:2] == b"BM" and len(head) >= 6:
        expected = struct.unpack_from("<I", head, 2)[0]
    else:
        return None
    return None if size >= expected else f"its header says {expected} bytes, the file has {size}"


def _decodes(path: Path) -> bool:
    """Whether Pillow decodes the whole file, as kohya's ``load_image`` will."""
    try:
        with Image.open(path) as image:
            image.load()
    except Exception:
        return False
    return True


def _kohya_size(fmt: str, head: bytes, decoded: tuple[int, int]) -> tuple[int, int]:
    """The size kohya's ``get_image_size`` reports: the ``imagesize`` package, else Pillow."""
    if fmt == "WEBP" and head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8X":
            # imagesize reads the canvas size fields, which store size - 1, without adding 1.
            return (
                int.from_bytes(head[24:27], "little"),
                int.from_bytes(head[27:30], "little"),
            )
        if chunk == b"VP8 ":
            # imagesize keeps the two scaling bits above the 14-bit size (zero in practice).
            width, height = struct.unpack_from("<HH", head, 26)
            return width, height
    return decoded


def _exif_orientation(exif: bytes) -> int:
    """The orientation tag of an EXIF block (1 when absent or unreadable), from IFD0 only."""
    data = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    if data[:4] == b"II*\x00":
        order = "<"
    elif data[:4] == b"MM\x00*":
        order = ">"
    else:
        return 1
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        for index in range(count):
            tag, kind, _, value = struct.unpack_from(order + "HHI4s", data, ifd + 2 + 12 * index)
            if tag == _EXIF_ORIENTATION_TAG and kind == 3:  # SHORT, stored in the value field
                (orientation,) = struct.unpack_from(order + "H", value)
                return orientation if 1 <= orientation <= 8 else 1
    except struct.error:
        return 1
    return 1


def probe_images(paths: Sequence[Path], workers: int | None = None) -> list[ImageInfo]:
    """Probe many images, in the order given.

    Probing is mostly Python (Pillow's header parsers) under the GIL, so threads do not pay:
    on 2 cores, 10,000 512-px PNG/JPEG files took about 1.05 s in one thread and 1.7 s with 2
    or 8 threads (``bench/bench_images.py``); with the files evicted from the page cache, 2.9 s
    in one thread and 3.3 to 4.7 s with 16. The option stays for slow network drives.

    Args:
        paths: Image files.
        workers: Threads to probe with; default (None) and 1 probe in the calling thread.

    Returns:
        One :class:`ImageInfo` per path, in the same order.
    """
    if workers is None or workers <= 1 or len(paths) < 2:
        return [probe_image(path) for path in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(probe_image, paths))
