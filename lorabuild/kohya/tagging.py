"""Auto-tagging: kohya's WD14 tagger run on links to the images that need tags, cached by content.

kohya writes a caption next to every image of the folder it is given. lorabuild gives it a
temporary folder (under ``build/<name>/autotag/``) of hard links, or copies across file systems,
to just the images that need tags, and asks for ``--output_path`` JSON instead of caption files,
so no tagger file lands next to a source image or in the stage. The command lines and the tag
list's rewrite are :mod:`lorabuild.kohya.tagger`'s.

Results are cached in ``build/<name>/autotag/<settings key>.json``: each image's content sha256
mapped to its tags. The settings key hashes everything that changes the tagger's output (the
model file's size and mtime, the tag list's bytes, the thresholds, the undesired tags, the
options and the kohya commit), so a second ``prepare`` tags nothing and a new threshold re-tags
everything. ``autotag/digests.json`` remembers each image's sha256 by path, size and mtime, so
unchanged images are not read again. Deleting ``build/<name>/autotag/`` clears both; the last
tagging's output is in ``build/<name>/autotag/tagger-<run>.log``.

:func:`tag_captions` is the verb for staging: it sends the images ``mode`` selects to
:func:`tag_images` and joins the tags with each caption's own through :func:`merge_tags`; the
caption rules (:func:`lorabuild.recipe.captions.apply_rules`) then run on the result.
:func:`lorabuild.stages.prepare.autotag_plan` applies it to a plan (the half that needs the plan).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lorabuild.kohya.scriptrun import run_script
from lorabuild.kohya.tagger import (
    BLIP_TOKENIZER,
    CACHE_VERSION,
    CAPTION_EXTENSION,
    MODEL_FILES,
    NAMES,
    TAGGER_NAME,
    AutotagError,
    captioner_argv,
    character_tags,
    characters_as_general,
    combine,
    file_digest,
    merge_tags,
    needs_tags,
    probe_model_dir,
    read_output,
    settings_key,
    tagger_argv,
    tagger_env,
    tagger_passes,
)
from lorabuild.recipe.captions import split_tags
from lorabuild.recipe.schema import AutotagSection
from lorabuild.render.meter import Progress
from lorabuild.render.writer import write_atomic
from lorabuild.settings import sd_scripts_dir

# Extensions kohya's tagger lists (library.train_util.IMAGE_EXTENSIONS without the optional
# AVIF/JXL plugins). PIL recognises an image by its content, so a link to any other image is
# named .png for kohya to list it.
_LISTED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})


def content_digests(images: Sequence[Path], memo: Path, progress: Progress | None = None) -> dict[Path, str]:
    """sha256 of each image, re-read only when its size or mtime changed since the ``memo`` file.

    The memo (absolute path -> ``[size, mtime_ns, sha256]``) keeps a warm ``prepare`` from reading
    every image again; ``progress`` is told how the reading goes (when there is any).
    """
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    digests: dict[Path, str] = {}
    changed = False
    for image in images:
        stat = image.stat()
        name = os.path.abspath(image)
        entry = known.get(name)
        if isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns]:
            digests[image] = str(entry[2])
            continue
        digests[image] = file_digest(image)
        known[name] = [stat.st_size, stat.st_mtime_ns, digests[image]]
        changed = True
        if progress is not None:
            progress("reading images", len(digests), len(images))
    if changed:
        write_atomic(memo, (json.dumps(known, indent=0, sort_keys=True) + "\n").encode())
    return digests


def cache_file(work_dir: Path, key: str) -> Path:
    """Where results for one settings key are cached."""
    return work_dir / "autotag" / f"{key[:16]}.json"


def tag_images(
    images: Sequence[Path],
    section: AutotagSection,
    work_dir: Path,
    *,
    sd_scripts: Path | None = None,
    python: str = sys.executable,
    on_line: Callable[[str], None] | None = None,
) -> dict[Path, list[str]]:
    """Tag ``images`` with kohya's WD14 tagger, running it only for images not tagged before.

    Args:
        images: The images to tag (staged or source files; none is written to).
        section: The ``[captions.autotag]`` settings.
        work_dir: The build folder; the cache, the temporary links and the logs go in ``autotag/``.
        sd_scripts: The kohya checkout (default: :func:`lorabuild.settings.sd_scripts_dir`).
        python: The Python with kohya's stack, onnx and onnxruntime.
        on_line: Receives each line the tagger prints (default: printed).

    Returns:
        Each image's tags, in the tagger's order (after its thresholds and undesired tags, before
        the caption rules).

    Raises:
        AutotagError: The model folder is incomplete, or the tagger failed or skipped an image.
    """
    if not images:
        return {}
    model = probe_model_dir(section.model_dir, section.tagger)
    if model.missing:
        raise AutotagError(
            f"{section.model_dir}: {NAMES[section.tagger]} needs {' and '.join(model.missing)} in this folder"
        )
    key = settings_key(section)
    path = cache_file(work_dir, key)
    cache = _load_cache(path, key)
    digests = content_digests(images, work_dir / "autotag" / "digests.json")
    todo: dict[str, Path] = {}
    for image, digest in digests.items():
        if digest not in cache:
            todo.setdefault(digest, image)  # identical images are tagged once
    if todo:
        if sd_scripts is None:
            sd_scripts = sd_scripts_dir()
        run = _run_tagger if section.tagger == "wd14" else _run_captioner
        tagged = run(list(todo.values()), section, work_dir, sd_scripts, python, on_line)
        cache.update({digest: tagged[image] for digest, image in todo.items()})
        _save_cache(path, key, cache)
    return {image: list(cache[digests[image]]) for image in images}


def tag_captions(
    captions: Mapping[Path, Sequence[str]],
    section: AutotagSection,
    work_dir: Path,
    *,
    sd_scripts: Path | None = None,
    python: str = sys.executable,
    on_line: Callable[[str], None] | None = None,
) -> dict[Path, list[str]]:
    """Each image's caption tags with the tagger's merged in by ``section.mode``.

    Args:
        captions: Each image's own caption tags (split; empty when it has no caption).
        section: The ``[captions.autotag]`` settings.
        work_dir: The build folder (see :func:`tag_images`).
        sd_scripts: The kohya checkout (see :func:`tag_images`).
        python: The Python with kohya's stack, onnx and onnxruntime.
        on_line: Receives each line the tagger prints (default: printed).

    Returns:
        The tags the caption rules get for every image of ``captions``; images the mode leaves
        alone (``missing`` with a caption) keep theirs and are not sent to the tagger.
    """
    todo = [image for image, tags in captions.items() if needs_tags(tags, section.mode)]
    tagged = tag_images(todo, section, work_dir, sd_scripts=sd_scripts, python=python, on_line=on_line)
    return {
        image: merge_tags(tags, tagged[image], section.mode) if image in tagged else list(tags)
        for image, tags in captions.items()
    }


def _run_tagger(
    images: list[Path],
    section: AutotagSection,
    work_dir: Path,
    sd_scripts: Path,
    python: str,
    on_line: Callable[[str], None] | None,
) -> dict[Path, list[str]]:
    root = work_dir / "autotag"
    root.mkdir(parents=True, exist_ok=True)
    passes = tagger_passes(section)
    tag_list = section.model_dir / MODEL_FILES[1]
    characters = character_tags(tag_list)
    with tempfile.TemporaryDirectory(prefix="run-", dir=root) as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        names: dict[str, Path] = {}
        for n, image in enumerate(images):
            suffix = image.suffix.lower()
            name = f"{n:06d}{suffix if suffix in _LISTED_SUFFIXES else '.png'}"
            _link(image, folder / name)
            names[name] = image
        runs = []
        for n, tagger_pass in enumerate(passes):
            # kohya's repo id is the folder's name; "wd14" keeps it free of "/" and of a download.
            model = Path(tmp) / f"model-{n}" / "wd14"
            model.mkdir(parents=True)
            _link(section.model_dir / MODEL_FILES[0], model / MODEL_FILES[0], large=True)
            text = tag_list.read_text(encoding="utf-8")
            if tagger_pass.characters_as_general:
                text = characters_as_general(text)
            (model / MODEL_FILES[1]).write_text(text, encoding="utf-8")
            output = Path(tmp) / f"tags-{n}.json"
            argv = tagger_argv(section, tagger_pass, model, folder, output, sd_scripts, python)
            runs.append(
                _run_once(argv, Path(tmp), root / f"tagger-{n}.log", sd_scripts, output, names, on_line)
            )
    return {
        image: combine([r[image] for r in runs], passes, characters, section.character_tags_first)
        for image in images
    }


def _run_captioner(
    images: list[Path],
    section: AutotagSection,
    work_dir: Path,
    sd_scripts: Path,
    python: str,
    on_line: Callable[[str], None] | None,
) -> dict[Path, list[str]]:
    """Caption ``images`` with kohya's BLIP or GIT script; each caption split at commas like a caption file."""
    root = work_dir / "autotag"
    root.mkdir(parents=True, exist_ok=True)
    name = NAMES[section.tagger]
    with tempfile.TemporaryDirectory(prefix="run-", dir=root) as tmp:
        work = Path(os.path.abspath(tmp))
        folder = work / "images"
        folder.mkdir()
        names: dict[str, Path] = {}
        for n, image in enumerate(images):
            suffix = image.suffix.lower()
            file_name = f"{n:06d}{suffix if suffix in _LISTED_SUFFIXES else '.png'}"
            _link(image, folder / file_name)
            names[file_name] = image
        env = tagger_env(sd_scripts)
        cwd = work
        if section.tagger == "blip":
            # kohya's BLIP loads its tokenizer by name (BertTokenizer.from_pretrained("bert-base-uncased")):
            # offline, from a Hugging Face cache that holds the model folder's copy under that name. Its
            # script reads ./blip/med_config.json after changing into finetune/, from kohya's folder.
            env["HF_HUB_CACHE"] = str(_tokenizer_cache(work / "hub", section.model_dir / BLIP_TOKENIZER))
            cwd = Path(os.path.abspath(sd_scripts))
        argv = captioner_argv(section, folder, sd_scripts, python)
        log = root / f"{section.tagger}.log"
        run = run_script(name, argv, cwd, log, env, on_line, sd_scripts=sd_scripts)
        if run.interrupted:
            raise AutotagError(run.interrupted_message("captioning"))
        if run.failed:
            raise AutotagError(run.failure_message())
        captions: dict[Path, list[str]] = {}
        for file_name, image in names.items():
            caption = folder / (Path(file_name).stem + CAPTION_EXTENSION)
            if caption.is_file():
                captions[image] = split_tags(caption.read_text(encoding="utf-8").strip())
    skipped = sorted(str(image) for image in images if image not in captions)
    if skipped:
        raise AutotagError(
            f"{name} could not caption {', '.join(skipped)}; its output is in {log.as_posix()}"
        )
    return captions


# A revision name for the cache entry lorabuild makes (any 40 hex digits do; offline nothing checks it).
_REVISION = "0" * 40


def _tokenizer_cache(hub: Path, tokenizer: Path) -> Path:
    """A Hugging Face hub cache in ``hub`` whose ``bert-base-uncased`` is the files of ``tokenizer``."""
    repo = hub / f"models--{BLIP_TOKENIZER}"
    snapshot = repo / "snapshots" / _REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(_REVISION, encoding="utf-8")
    for path in tokenizer.iterdir():
        if path.is_file():
            _link(path, snapshot / path.name)
    return hub


def _run_once(
    argv: list[str],
    cwd: Path,
    log: Path,
    sd_scripts: Path,
    output: Path,
    names: Mapping[str, Path],
    on_line: Callable[[str], None] | None,
) -> dict[Path, list[str]]:
    run = run_script(TAGGER_NAME, argv, cwd, log, tagger_env(sd_scripts), on_line, sd_scripts=sd_scripts)
    if run.interrupted:
        raise AutotagError(run.interrupted_message("tagging"))
    if run.failed:
        raise AutotagError(run.failure_message())
    if not output.is_file():
        raise AutotagError(run.missing_message(output.name))
    tags = read_output(output, names)
    skipped = sorted(str(image) for image in names.values() if image not in tags)
    if skipped:
        raise AutotagError(
            f"{TAGGER_NAME} could not read {', '.join(skipped)}; its output is in {log.as_posix()}"
        )
    return tags


def _link(source: Path, dest: Path, large: bool = False) -> None:
    """Hard-link ``source`` to ``dest``; else (another file system) a symbolic link for a
    ``large`` file, else a copy."""
    try:
        os.link(source, dest)
        return
    except OSError:
        pass
    if large:
        try:
            os.symlink(os.path.abspath(source), dest)
            return
        except OSError:  # Windows without the symlink privilege
            pass
    shutil.copyfile(source, dest)


def _load_cache(path: Path, key: str) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or data.get("settings") != key:
        return {}
    tags = data.get("tags")
    if not isinstance(tags, dict):
        return {}
    return {str(k): [str(t) for t in v] for k, v in tags.items() if isinstance(v, list)}


def _save_cache(path: Path, key: str, cache: Mapping[str, list[str]]) -> None:
    document = {"version": CACHE_VERSION, "settings": key, "tags": dict(sorted(cache.items()))}
    write_atomic(path, (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode())
