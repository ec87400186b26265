"""What a check depends on besides the recipe's own files: which packages are installed here,
whether kohya's tagger script is there, and which builds the build folder already holds.

:func:`lorabuild.probe.facts.gather` records them as facts; :func:`lorabuild.probe.inputs.input_fingerprint`
hashes them, so that a package installed or a build added makes an unchanged ``prepare`` look again.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

from lorabuild.kohya.tagger import SCRIPTS
from lorabuild.settings import sd_scripts_dir

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
    # kohya's WD14 tagger in --onnx mode ([captions.autotag]).
    "onnx",
    "onnxruntime",
    # the segmentation model of [images.remove_background] (lorabuild/kohya/segment.py).
    "numpy",
    # kohya's BLIP captioner ([captions.autotag] tagger = "blip"; kohya's requirements.txt leaves
    # them commented out).
    "timm",
    "fairscale",
    # kohya's --deepspeed ([launch.deepspeed]).
    "deepspeed",
)


def installed_packages() -> dict[str, bool]:
    """Which of :data:`PACKAGES` are importable here (found, not imported)."""
    return {name: importlib.util.find_spec(name) is not None for name in PACKAGES}


def package_version(name: str) -> str | None:
    """The installed version of the distribution ``name``, or None (read from its metadata, not imported)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def tagger_script(tagger: str = "wd14") -> tuple[Path, bool]:
    """kohya's script for ``tagger`` (the WD14 tagger, or the BLIP or GIT captioner) in the sd-scripts
    folder of the settings, and whether it is there."""
    script = sd_scripts_dir() / SCRIPTS[tagger]
    return script, script.is_file()


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
