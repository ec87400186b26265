"""kohya's dataset (a ``--dataset_config`` document, or ``train_data_dir``'s folders) back into
``[dataset]`` and ``[[dataset.subsets]]``, and a ``sample_prompts`` file into ``[evaluate]``.

kohya finds each dataset value in the first of subset, dataset, ``[general]`` and the command
line's options that sets it (``config_util.BlueprintGenerator.generate``); :func:`read_dataset`
does the same search. The recipe has one dataset: its ``[dataset]`` values are what kohya's first
dataset gets, and a subset gets an override where its value differs (or its table set one).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from lorabuild.importer.model import Imported, path_value
from lorabuild.kohya import options as kohya_options

# Command-line options that are dataset values for kohya (its argparse fallback), by their
# dataset-config name (ARGPARSE_OPTNAME_TO_CONFIG_OPTNAME renames two).
_ARGPARSE_NAMES = {"train_batch_size": "batch_size", "dataset_repeats": "num_repeats"}
_DATASET_KEYS = {
    # recipe [dataset] key: (kohya dataset-config name, kohya's default)
    "batch_size": ("batch_size", 1),
    "enable_bucket": ("enable_bucket", False),
    "min_bucket_reso": ("min_bucket_reso", 256),
    "max_bucket_reso": ("max_bucket_reso", 1024),
    "bucket_reso_steps": ("bucket_reso_steps", 64),
    "bucket_no_upscale": ("bucket_no_upscale", False),
    "validation_split": ("validation_split", 0.0),
    "validation_seed": ("validation_seed", None),
    "caption_dropout_rate": ("caption_dropout_rate", 0.0),
    "caption_tag_dropout_rate": ("caption_tag_dropout_rate", 0.0),
}
# Subset values a recipe has both for the dataset and per subset, with kohya's defaults.
_OVERRIDABLE = {
    "shuffle_caption": False,
    "keep_tokens": 0,
    "flip_aug": False,
    "color_aug": False,
    "random_crop": False,
}
_SUBSET_READ = frozenset(
    {"image_dir", "num_repeats", "class_tokens", "is_reg", "caption_extension", *_OVERRIDABLE}
)
_DATASET_READ = frozenset(
    {"resolution", "subsets", "prior_loss_weight", *(k for k, _ in _DATASET_KEYS.values())}
)

ARGPARSE_DATASET_OPTIONS = frozenset(
    {
        "resolution",
        "caption_extension",
        *_ARGPARSE_NAMES,
        *_OVERRIDABLE,
        *(k for k, _ in _DATASET_KEYS.values()),
    }
    - {"batch_size"}
)
"""kohya's command-line options that this module reads as dataset values."""

_REPEATS_FOLDER = re.compile(r"^(\d+)_(.*)$")


def repeats_folder(name: str) -> tuple[int, str] | None:
    """A DreamBooth folder name ``N_name`` as kohya reads it: (repeats, class tokens), or None.

    kohya splits the name at ``_``: the first part must be an integer (``extract_dreambooth_params``).
    """
    match = _REPEATS_FOLDER.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def _search(key: str, levels: Sequence[Mapping[str, object]], default: object = None) -> object:
    """The first level's value that is not None (kohya's ``search_value``), else ``default``."""
    for level in levels:
        value = level.get(key)
        if value is not None:
            return value
    return default


def read_dataset(
    imp: Imported, flat: Mapping[str, object], doc: Mapping[str, object] | None, base: Path | None
) -> None:
    """Set ``dataset.*`` and ``dataset.subsets`` from kohya's dataset config (or ``train_data_dir``)."""
    argparse = {_ARGPARSE_NAMES.get(k, k): v for k, v in flat.items() if v is not None}
    if doc is None:
        general: Mapping[str, object] = {}
        datasets: list[Mapping[str, object]] = [{"subsets": _folder_subsets(imp, flat, base)}]
    else:
        for message in kohya_options.check_dataset_config(doc):
            imp.unrepresentable("dataset_config", f"kohya would refuse it: {message}")
        raw_general = doc.get("general")
        general = raw_general if isinstance(raw_general, Mapping) else {}
        raw = doc.get("datasets")
        datasets = [d for d in raw if isinstance(d, Mapping)] if isinstance(raw, list) else []
        if not datasets:
            imp.todo("dataset.subsets", "the dataset config has no [[datasets]]: add the image folders")
            datasets = [{"subsets": []}]
    first = datasets[0]
    top = [first, general, argparse]
    resolution = _resolution(_search("resolution", top))
    if resolution is None:
        imp.todo(
            "dataset.resolution", "the source sets no resolution (kohya requires one): 512 x 512 assumed"
        )
        resolution = [512, 512]
    imp.set("dataset.resolution", resolution)
    for key, (name, default) in _DATASET_KEYS.items():
        value = _search(name, top, default)
        if value is not None:
            imp.set(f"dataset.{key}", float(value) if isinstance(value, int) and "rate" in key else value)
    dataset_level = {key: _search(key, top, default) for key, default in _OVERRIDABLE.items()}
    for key, value in dataset_level.items():
        imp.set(f"dataset.{key}", value)
    if first.get("prior_loss_weight") is not None:
        imp.set("training.prior_loss_weight", float(str(first["prior_loss_weight"])))
    for index, other in enumerate(datasets[1:], start=1):
        differing = [
            name
            for name in ("resolution", *(n for n, _ in _DATASET_KEYS.values()))
            if _search(name, [other, general, argparse]) != _search(name, top)
        ]
        imp.unrepresentable(
            f"datasets[{index}]",
            "a recipe has one dataset: its subsets join the first"
            + (f", whose {', '.join(differing)} they get" if differing else ""),
        )
    subsets: list[dict[str, object]] = []
    extras: dict[str, list[object]] = {}
    for ds in datasets:
        raw_subsets = ds.get("subsets")
        for subset in raw_subsets if isinstance(raw_subsets, list) else []:
            if not isinstance(subset, Mapping):
                continue
            levels = [subset, ds, general, argparse]
            subsets.append(_subset(imp, len(subsets), subset, levels, dataset_level, base))
            for key in {*subset, *ds, *general} - _SUBSET_READ - _DATASET_READ:
                extras.setdefault(key, []).append(_search(key, levels))
    if not subsets:
        subsets.append({"source": Path("data/TODO")})
        imp.todo("dataset.subsets[0].source", "the source names no image folder: set it to your images")
    imp.set("dataset.subsets", subsets)
    _extra_keys(imp, extras, len(subsets))


def _subset(
    imp: Imported,
    index: int,
    subset: Mapping[str, object],
    levels: Sequence[Mapping[str, object]],
    dataset_level: Mapping[str, object],
    base: Path | None,
) -> dict[str, object]:
    key = f"dataset.subsets[{index}]"
    image_dir = subset.get("image_dir")
    out: dict[str, object] = {}
    if isinstance(image_dir, str) and image_dir:
        out["source"] = path_value(image_dir, base)
    else:
        out["source"] = Path("data/TODO")
        why = "fine-tuning metadata (metadata_file)" if subset.get("metadata_file") else "no image_dir"
        imp.todo(f"{key}.source", f"the subset has {why}: set the folder of its images and captions")
    trigger = _search("class_tokens", levels[:1])
    if isinstance(trigger, str) and trigger.strip():
        if "," in trigger or trigger != trigger.strip():
            imp.unrepresentable(
                f"{key} class_tokens",
                f"{trigger!r} is not one caption tag: left out (captions hold the words)",
            )
        else:
            out["trigger"] = trigger
    out["repeats"] = _search("num_repeats", levels, 1)
    if subset.get("is_reg"):
        out["is_reg"] = True
    out["caption_extension"] = _search("caption_extension", levels, ".caption")
    for name, default in _OVERRIDABLE.items():
        value = _search(name, levels, default)
        if name in subset or value != dataset_level[name]:
            out[name] = value
    return out


def _extra_keys(imp: Imported, extras: Mapping[str, list[object]], count: int) -> None:
    """Dataset values a recipe does not model: into [kohya] when one value holds for every subset."""
    known = kohya_options.options(imp.script or "train_network.py")
    for key, values in sorted(extras.items()):
        present = [v for v in values if v is not None]
        if not present:
            continue
        if key in known and len(present) == count and all(v == present[0] for v in present):
            if present[0] != known[key].default:
                imp.set(f"kohya.{key}", present[0])
            continue
        imp.unrepresentable(
            f"dataset_config {key}",
            f"{present[0]!r}: a recipe sets it for every subset as a [kohya] option"
            + ("" if key in known else ", and kohya has no such command-line option")
            + ": left out",
        )


def _folder_subsets(imp: Imported, flat: Mapping[str, object], base: Path | None) -> list[dict[str, object]]:
    """``train_data_dir`` and ``reg_data_dir``'s ``N_name`` folders as kohya reads them (without a dataset config)."""
    subsets: list[dict[str, object]] = []
    for option, is_reg in (("train_data_dir", False), ("reg_data_dir", True)):
        folder = flat.get(option)
        if not isinstance(folder, str) or not folder:
            continue
        parent = path_value(folder, base)
        local = Path(parent)
        if not local.is_dir():
            subsets.append({"image_dir": str(parent), "is_reg": is_reg})
            imp.todo(
                f"dataset.subsets[{len(subsets) - 1}]",
                f"{option} {folder!r} is not here to list its N_name folders: one subset per folder, "
                "with its repeats and trigger",
            )
            continue
        for child in sorted(p for p in local.iterdir() if p.is_dir()):
            parsed = repeats_folder(child.name)
            if parsed is None or parsed[0] < 1:
                imp.unrepresentable(f"{option} {child.name}", "kohya skips a folder without N_ repeats")
                continue
            repeats, tokens = parsed
            subsets.append(
                {
                    "image_dir": str(child),
                    "num_repeats": repeats,
                    "class_tokens": tokens or None,
                    "is_reg": is_reg,
                }
            )
    return subsets


def _resolution(value: object) -> list[int] | None:
    """kohya's resolution (an int, ``[w, h]``, or the command line's ``"W,H"``) as ``[w, h]``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return [value, value]
    if isinstance(value, list | tuple) and len(value) == 2:
        return [int(str(v)) for v in value]
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if all(p.isdigit() for p in parts) and len(parts) in (1, 2):
            return [int(parts[0]), int(parts[-1])]
    return None


# --- sample prompts -------------------------------------------------------------------------------

_PROMPT_OPTIONS = {
    "w": "width",
    "h": "height",
    "s": "steps",
    "l": "cfg_scale",
    "n": "negative_prompt",
    "g": "guidance",
}


def read_sample_prompts(imp: Imported, path: Path) -> None:
    """A kohya sample-prompts file (``prompt --w 512 --d 42 ...`` lines) as ``[evaluate]``."""
    read_prompt_lines(imp, path.read_text(encoding="utf-8", errors="replace"), path.name)


def read_prompt_lines(imp: Imported, text: str, where: str) -> None:
    """kohya's sample-prompt lines (a file's text, or a GUI's inline prompts) as ``[evaluate]``.

    ``where`` names their source in a TODO when there is no prompt.
    """
    prompts: list[str] = []
    seeds: list[int] = []
    first: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        text, *options = re.split(r"\s--(?=\w)", " " + line)
        if text.strip() and text.strip() not in prompts:
            prompts.append(text.strip())
        for option in options:
            name, _, value = option.partition(" ")
            if name == "d" and value.strip().isdigit() and int(value) not in seeds:
                seeds.append(int(value))
            elif name in _PROMPT_OPTIONS and name not in first:
                first[name] = value.strip()
    if not prompts:
        imp.todo("evaluate.prompts", f"{where} holds no prompt: write the prompts")
        return
    imp.set("evaluate.prompts", prompts)
    if seeds:
        imp.set("evaluate.seeds", seeds)
    for name, value in first.items():
        key = f"evaluate.{_PROMPT_OPTIONS[name]}"
        if name == "n":
            imp.set(key, value)
            continue
        try:
            number: float = float(shlex.split(value)[0]) if value else 0.0
        except (ValueError, IndexError):
            continue
        imp.set(key, int(number) if name in "whs" else number)
