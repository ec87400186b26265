"""kohya's WD14 tagger as lorabuild drives it: its model folder, its command lines, its output.

What the check, the rules and the stamps ask of the tagger, without running it: where the recipe
sets ``[captions.autotag]`` (:func:`autotag_sections`), whether a model folder is complete
(:func:`probe_model_dir`), the settings key of its cache (:func:`settings_key`); and the pure
pieces a run is made of (:func:`tagger_passes`, :func:`tagger_argv`, :func:`read_output`,
:func:`merge_tags`). :mod:`lorabuild.kohya.tagging` runs it on the images that need tags and
caches the result.

``[captions.autotag]`` runs the pinned kohya's ``finetune/tag_images_by_wd14_tagger.py`` with
``--onnx`` on a local model folder holding ``model.onnx`` and ``selected_tags.csv`` (the layout of
the SmilingWolf ``wd-*-tagger`` repositories). Nothing is downloaded: kohya loads the model from
``<--model_dir>/<--repo_id>/`` and goes to Hugging Face only when that folder does not exist (or
with ``--force_download``). lorabuild gives it a folder that exists, ``<tmp>/model-N/wd14/``,
holding a link to the model and a copy of the tag list, as ``--model_dir=<tmp>/model-N
--repo_id=wd14``, and sets ``HF_HUB_OFFLINE=1`` besides.

The copy is there because, at the pinned commit, kohya's tagger stops with
``UnboundLocalError: character_tags`` as soon as a character tag of a ``selected_tags.csv`` model
passes ``--character_threshold`` (its ``run_batch`` assigns ``character_tags`` in the other model
format's branch, which makes the name local). So kohya never reads a character tag as one: its
character tags are always off (``--character_threshold=2``); one run with the tag list as is
gives the general tags, and one run with the character tags relabelled as general tags, at the
character threshold, gives the character tags (:func:`tagger_passes`; one run is enough when
the thresholds are equal or character tags are off).

kohya writes a caption next to every image of the folder it is given; :func:`tagger_argv` asks for
``--output_path`` JSON instead, which :func:`read_output` reads back.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lorabuild import KOHYA_COMMIT
from lorabuild.problems import LorabuildError
from lorabuild.recipe.captions import normalise
from lorabuild.recipe.schema import AutotagSection, Recipe

TAGGER_SCRIPT = "finetune/tag_images_by_wd14_tagger.py"
"""The tagger inside the kohya checkout."""

TAGGER_NAME = "kohya's WD14 tagger"
"""How messages name it."""

MODEL_FILES = ("model.onnx", "selected_tags.csv")
"""What kohya's tagger reads from the model folder in ``--onnx`` mode (the SmilingWolf format)."""

SEPARATOR = ", "
"""kohya's ``--caption_separator`` (its default), used to split the tags back out of its output."""

CACHE_VERSION = 1

CAPTIONER_SCRIPTS = {"blip": "finetune/make_captions.py", "git": "finetune/make_captions_by_git.py"}
"""kohya's natural-language captioners (``[captions.autotag] tagger``), inside the kohya checkout."""

SCRIPTS = {"wd14": TAGGER_SCRIPT, **CAPTIONER_SCRIPTS}
"""Each tagger's script."""

NAMES = {"wd14": TAGGER_NAME, "blip": "kohya's BLIP captioner", "git": "kohya's GIT captioner"}
"""How messages name each tagger."""

BLIP_WEIGHTS = "model_large_caption.pth"
"""BLIP's caption weights in the model folder (kohya --caption_weights; the file Salesforce publishes)."""

BLIP_TOKENIZER = "bert-base-uncased"
"""The sub-folder of BLIP's model folder holding the tokenizer kohya's BLIP loads by this name."""

FOLDER_FILES = {
    "wd14": MODEL_FILES,
    "blip": (BLIP_WEIGHTS, f"{BLIP_TOKENIZER}/vocab.txt"),
    "git": ("config.json", "preprocessor_config.json"),
}
"""What each tagger needs in its model folder."""

PACKAGES = {"wd14": ("onnx", "onnxruntime"), "blip": ("timm", "fairscale"), "git": ()}
"""What each tagger imports beyond kohya's own stack (pip names too)."""


class AutotagError(LorabuildError):
    """kohya's tagger could not tag the images."""


@dataclass(frozen=True)
class TaggerModel:
    """What a tagger model folder holds.

    Attributes:
        path: The folder (``autotag.model_dir``).
        exists: Whether it is a folder.
        missing: The files of :data:`MODEL_FILES` it lacks.
    """

    path: Path
    exists: bool
    missing: tuple[str, ...]


def probe_model_dir(path: Path, tagger: str = "wd14") -> TaggerModel:
    """Look for the files ``tagger`` (``wd14``, ``blip``, ``git``) needs in ``path``."""
    files = FOLDER_FILES[tagger]
    if not path.is_dir():
        return TaggerModel(path, False, files)
    return TaggerModel(path, True, tuple(name for name in files if not (path / name).is_file()))


def autotag_sections(recipe: Recipe) -> list[tuple[str, AutotagSection]]:
    """Every ``[captions.autotag]`` table in ``recipe`` with its key path (the recipe's, then each subset's)."""
    sections = []
    if recipe.captions.autotag is not None:
        sections.append(("captions.autotag", recipe.captions.autotag))
    for i, subset in enumerate(recipe.dataset.subsets):
        if subset.captions is not None and subset.captions.autotag is not None:
            sections.append((f"dataset.subsets[{i}].captions.autotag", subset.captions.autotag))
    return sections


def needs_tags(existing: Sequence[str], mode: str) -> bool:
    """Whether an image whose caption holds ``existing`` tags is sent to the tagger under ``mode``."""
    return mode != "missing" or not existing


def merge_tags(existing: Sequence[str], tagged: Sequence[str], mode: str) -> list[str]:
    """The tags a caption holds once the tagger's ``tagged`` tags are merged in by ``mode``.

    Args:
        existing: The caption's own tags (split, in order; empty when it has none).
        tagged: The tagger's tags for the image.
        mode: ``missing`` keeps a caption that has tags and uses the tagger's otherwise; ``all``
            uses the tagger's alone; ``merge`` keeps the caption's tags in order and appends the
            tagger's that it does not already hold (``short_hair`` and ``short hair`` are one tag).
    """
    if mode == "missing":
        return list(existing) if existing else list(tagged)
    if mode == "all":
        return list(tagged)
    if mode != "merge":
        raise ValueError(f"unknown autotag mode {mode!r}")
    seen = {_same_tag_key(t) for t in existing}
    merged = list(existing)
    for tag in tagged:
        key = _same_tag_key(tag)
        if key not in seen:
            seen.add(key)
            merged.append(tag)
    return merged


def _same_tag_key(tag: str) -> str:
    return normalise(tag, "space")


def undesired_argument(tags: Sequence[str]) -> str:
    """kohya's ``--undesired_tags`` value: each tag as written and with underscores for spaces.

    kohya compares the tag list's names (``short_hair``) exactly, so ``short hair`` in a recipe is
    passed in both spellings.
    """
    forms: dict[str, None] = {}
    for tag in tags:
        text = " ".join(tag.split())
        forms[text] = None
        forms[text.replace(" ", "_")] = None
    return ",".join(forms)


# kohya's --character_threshold above 1 means "no character tags" (probabilities never reach it).
CHARACTER_TAGS_OFF = 2.0

# kohya's selected_tags.csv categories.
_GENERAL, _CHARACTER = "0", "4"


@dataclass(frozen=True)
class TaggerPass:
    """One run of kohya's tagger.

    Attributes:
        threshold: kohya ``--general_threshold`` for this run.
        characters_as_general: The run's tag list lists character tags as general tags, so that
            they pass ``threshold``; kohya's own character tags are always off (see the module).
        keep: Which of the run's tags count: ``all``, or only ``character`` tags.
    """

    threshold: float
    characters_as_general: bool
    keep: Literal["all", "character"]


def tagger_passes(section: AutotagSection) -> tuple[TaggerPass, ...]:
    """The runs that give ``section``'s general and character tags without kohya's crash."""
    general, character = section.general_threshold, section.character_threshold
    if character > 1:
        return (TaggerPass(general, False, "all"),)
    if character == general:
        return (TaggerPass(general, True, "all"),)
    return (TaggerPass(general, False, "all"), TaggerPass(character, True, "character"))


def tagger_argv(
    section: AutotagSection,
    tagger_pass: TaggerPass,
    model_dir: Path,
    image_dir: Path,
    output: Path,
    sd_scripts: Path,
    python: str = sys.executable,
) -> list[str]:
    """The command that tags every image in ``image_dir`` into the JSON file ``output``.

    Args:
        section: The autotag settings.
        tagger_pass: Which run this is.
        model_dir: The folder kohya loads ``model.onnx`` and ``selected_tags.csv`` from.
        image_dir: The images (kohya lists the folder's top level).
        output: Where kohya writes its JSON (``--output_path``) instead of caption files.
        sd_scripts: The kohya checkout.
        python: The Python with kohya's stack.

    Values are passed as ``--option=value`` so that a tag starting with ``-`` is not read as an
    option.
    """
    model_dir = Path(os.path.abspath(model_dir))
    argv = [
        python,
        str(sd_scripts / TAGGER_SCRIPT),
        str(image_dir),
        "--onnx",
        # kohya loads <model_dir>/<repo_id> and downloads only when that folder is missing.
        f"--model_dir={model_dir.parent}",
        f"--repo_id={model_dir.name}",
        f"--batch_size={section.batch_size}",
        f"--general_threshold={tagger_pass.threshold}",
        f"--character_threshold={CHARACTER_TAGS_OFF}",
        f"--caption_separator={SEPARATOR}",
        # One JSON file instead of a caption file beside each image.
        f"--output_path={output}",
    ]
    if section.undesired_tags:
        argv.append(f"--undesired_tags={undesired_argument(section.undesired_tags)}")
    return argv


def tagger_env(sd_scripts: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the tagger: kohya's ``library`` importable, Hugging Face offline.

    The script imports ``library.train_util`` but runs from ``finetune/``, so kohya's folder goes on
    ``PYTHONPATH`` (ahead of any value in ``base``, default ``os.environ``).
    """
    current = (os.environ if base is None else base).get("PYTHONPATH", "")
    path = os.pathsep.join(p for p in (str(sd_scripts), current) if p)
    return {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}


def read_output(output: Path, names: Mapping[str, Path]) -> dict[Path, list[str]]:
    """Read the tagger's ``--output_path`` JSON back as tags per image.

    Args:
        output: The JSON file: ``{image path: {"tags": "a, b", "image_size": [w, h]}}``.
        names: File name of each link given to the tagger -> the image it stands for.

    Returns:
        Tags per image, for the images the tagger reported (it skips those it cannot read).
    """
    data = json.loads(output.read_text(encoding="utf-8"))
    tags: dict[Path, list[str]] = {}
    for key, entry in data.items():
        image = names.get(Path(key).name)
        if image is not None:
            tags[image] = [t.strip() for t in str(entry["tags"]).split(SEPARATOR.strip()) if t.strip()]
    return tags


def read_tag_list(path: Path) -> list[tuple[str, str]]:
    """The ``(name, category)`` rows of a ``selected_tags.csv`` (header ``tag_id,name,category,count``)."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return [(row[1], row[2]) for row in rows[1:] if len(row) >= 3]


def character_tags(path: Path) -> frozenset[str]:
    """The names of the character tags (category 4) in a ``selected_tags.csv``."""
    return frozenset(name for name, category in read_tag_list(path) if category == _CHARACTER)


def characters_as_general(csv_text: str) -> str:
    """``selected_tags.csv`` with every character tag (category 4) listed as a general tag (0).

    kohya maps output ``4 + i`` to the ``i``-th general tag, then the character tags, in file
    order; WD14 lists general tags before character tags, so relabelling keeps every index.
    """
    rows = list(csv.reader(io.StringIO(csv_text)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(rows[0])
    for row in rows[1:]:
        writer.writerow([*row[:2], _GENERAL, *row[3:]] if len(row) >= 3 and row[2] == _CHARACTER else row)
    return out.getvalue()


def combine(
    runs: Sequence[Sequence[str]],
    passes: Sequence[TaggerPass],
    characters: frozenset[str],
    characters_first: bool,
) -> list[str]:
    """One image's tags from each run's: general tags, then character tags (or the other way)."""
    tags: list[str] = []
    for run_tags, tagger_pass in zip(runs, passes, strict=True):
        tags.extend(t for t in run_tags if tagger_pass.keep == "all" or t in characters)
    tags = list(dict.fromkeys(tags))
    general = [t for t in tags if t not in characters]
    character = [t for t in tags if t in characters]
    return character + general if characters_first else general + character


def settings_key(section: AutotagSection) -> str:
    """A hash of everything that decides the tagger's output for an image (the cache key)."""
    if section.tagger != "wd14":
        return captioner_key(section)
    model = section.model_dir / MODEL_FILES[0]
    stat = model.stat()
    # Hashing a 300 MB model on every prepare would cost more than the check is worth; its size
    # and mtime change when it is replaced. The tag list is small and hashed whole.
    settings: dict[str, Any] = {
        "version": CACHE_VERSION,
        "kohya_commit": KOHYA_COMMIT,
        "model": [stat.st_size, stat.st_mtime_ns],
        "tags_csv": file_digest(section.model_dir / MODEL_FILES[1]),
        "general_threshold": section.general_threshold,
        "character_threshold": section.character_threshold,
        "undesired_tags": undesired_argument(section.undesired_tags),
        "character_tags_first": section.character_tags_first,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def captioner_key(section: AutotagSection) -> str:
    """:func:`settings_key` for BLIP and GIT: the model folder's files by size and mtime (the small
    ones, the tokenizer's and configs, by content), the options, kohya's commit."""
    files: dict[str, Any] = {}
    for path in sorted(p for p in section.model_dir.rglob("*") if p.is_file()):
        stat = path.stat()
        name = path.relative_to(section.model_dir).as_posix()
        files[name] = file_digest(path) if stat.st_size < 1 << 20 else [stat.st_size, stat.st_mtime_ns]
    settings: dict[str, Any] = {
        "version": CACHE_VERSION,
        "kohya_commit": KOHYA_COMMIT,
        "tagger": section.tagger,
        "files": files,
        "options": caption_options(section),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def caption_options(section: AutotagSection) -> list[str]:
    """The options of kohya's captioner for ``section`` (``--option=value``), besides the paths."""
    options = [f"--batch_size={section.batch_size}"]
    if section.max_length is not None:
        options.append(f"--max_length={section.max_length}")
    if section.tagger == "blip":
        options += [f"--min_length={section.min_length}", f"--top_p={section.top_p}"]
        if section.beam_search:
            options += ["--beam_search", f"--num_beams={section.num_beams}"]
    return options


CAPTION_EXTENSION = ".caption"
"""What kohya's captioners write next to each image (``--caption_extension``), read back by lorabuild."""


def captioner_argv(
    section: AutotagSection, image_dir: Path, sd_scripts: Path, python: str = sys.executable
) -> list[str]:
    """The command that captions every image in ``image_dir`` with BLIP or GIT (a ``.caption`` file each).

    BLIP loads ``--caption_weights`` (a path: kohya downloads only a URL); GIT loads ``--model_id``
    with transformers' ``from_pretrained``, which reads a local folder as it is.
    """
    model_dir = Path(os.path.abspath(section.model_dir))
    argv = [
        python,
        str(sd_scripts / CAPTIONER_SCRIPTS[section.tagger]),
        str(Path(os.path.abspath(image_dir))),
    ]
    if section.tagger == "blip":
        argv.append(f"--caption_weights={model_dir / BLIP_WEIGHTS}")
    else:
        argv.append(f"--model_id={model_dir}")
    return [*argv, f"--caption_extension={CAPTION_EXTENSION}", *caption_options(section)]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


TAGGER_PACKAGES = ("onnx", "onnxruntime")
"""What kohya's tagger imports in ``--onnx`` mode beyond kohya's own stack (pip names too)."""


BLIP_GENERATE_BROKEN = (4, 50)
"""From this transformers version on, kohya's BLIP captioner stops: its ``blip/med.py``
``BertLMHeadModel`` calls ``generate()``, which ``PreTrainedModel`` no longer inherits from
``GenerationMixin`` (``AttributeError: 'BertLMHeadModel' object has no attribute 'generate'``, after
the model has loaded). kohya pins transformers 4.54.1 at the pinned commit, so its BLIP captioning
cannot run there (``tests/test_captioners.py`` checks that it still stops)."""


def blip_problem(transformers_version: str | None) -> str | None:
    """Why kohya's BLIP captioner cannot run with this transformers, or None."""
    if transformers_version is None:
        return None
    try:
        version = tuple(int(part) for part in transformers_version.split(".")[:2])
    except ValueError:
        return None
    if version < BLIP_GENERATE_BROKEN:
        return None
    return (
        f"kohya's BLIP captioner (finetune/make_captions.py) stops with transformers {transformers_version} "
        "(\"'BertLMHeadModel' object has no attribute 'generate'\", after loading the model): its BLIP decoder "
        'needs transformers below 4.50, and kohya pins 4.54.1. Use tagger = "git", or run prepare with a '
        "transformers below 4.50"
    )


def preflight(sd_scripts: Path, python: str = sys.executable, tagger: str = "wd14") -> None:
    """Fail with a clear message, before anything is tagged or staged, when the tagger cannot run.

    Checks that the kohya checkout holds the tagger and, for lorabuild's own Python (the one
    that runs it by default), that onnx and onnxruntime are importable. The pre-flight rules
    (:func:`lorabuild.rules.captions.tagger_script`, :func:`lorabuild.rules.captions.tagger_packages`)
    say the same at check time on a machine with kohya's stack; this catches a machine that only plans.

    Raises:
        AutotagError: What is missing and how to install it.
    """
    script = sd_scripts / SCRIPTS[tagger]
    name = NAMES[tagger]
    if not script.is_file():
        raise AutotagError(
            f"[captions.autotag]: {name} {script.as_posix()} is not there: check out kohya "
            "sd-scripts at the pinned commit (git submodule update --init, or lorabuild setup "
            "--sd-scripts CLONE; LORABUILD_SD_SCRIPTS names another checkout)"
        )
    if os.path.abspath(python) != os.path.abspath(sys.executable):
        return  # another interpreter's packages cannot be looked up from here
    if tagger == "blip" and not os.environ.get(BLIP_CHECK_OFF):
        problem = blip_problem(_version("transformers"))
        if problem:
            raise AutotagError(f"[captions.autotag]: {problem}")
    missing = [n for n in ("torch", *PACKAGES[tagger]) if importlib.util.find_spec(n) is None]
    if missing:
        install = "pip install -e '.[train]' " if "torch" in missing else "pip install "
        raise AutotagError(
            f"[captions.autotag]: {name} needs {' and '.join(missing)}, not installed for "
            f"{sys.executable}: {install}{' '.join(n for n in missing if n != 'torch')}".rstrip()
        )


BLIP_CHECK_OFF = "LORABUILD_BLIP_ANY_TRANSFORMERS"
"""Set (to anything) to run kohya's BLIP whatever transformers is installed: for a kohya or a
launcher (``LORABUILD_SCRIPT_WRAPPER``) that fixes its decoder; the check then says nothing."""


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def settings_keys(recipe: Recipe) -> list[str]:
    """:func:`settings_key` of every autotag table in ``recipe`` (empty when none is set).

    Part of the prepare stamp (:func:`lorabuild.build.state.prepare_key`): a new threshold, model file
    or tag list makes ``lorabuild run`` prepare again. A model folder that cannot be read counts
    as a setting of its own (the check reports it).
    """
    keys = []
    for _, section in autotag_sections(recipe):
        try:
            keys.append(settings_key(section))
        except OSError as exc:
            keys.append(f"unreadable: {section.model_dir}: {exc.strerror}")
    return keys
