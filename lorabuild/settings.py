"""Machine settings: where things live on this machine, kept out of recipes so they stay portable.

Each setting has an environment variable; the CLI's options override them.
"""

from __future__ import annotations

import os
from pathlib import Path

# The repository lorabuild runs from: kohya is vendored beside the package as a submodule.
REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = REPO_ROOT / "templates"


def sd_scripts_dir() -> Path:
    """The kohya sd-scripts checkout (``LORABUILD_SD_SCRIPTS``, else ``vendor/sd-scripts``)."""
    configured = os.environ.get("LORABUILD_SD_SCRIPTS")
    return Path(configured).expanduser() if configured else REPO_ROOT / "vendor" / "sd-scripts"


def build_root() -> Path:
    """Where builds go (``LORABUILD_BUILD_DIR``, else ``build`` in the current folder)."""
    return Path(os.environ.get("LORABUILD_BUILD_DIR", "build"))


def webui_dir() -> Path | None:
    """The AUTOMATIC1111 webui folder ``lorabuild install`` copies into (``LORABUILD_WEBUI``), or None."""
    configured = os.environ.get("LORABUILD_WEBUI")
    return Path(configured).expanduser() if configured else None


def comfyui_dir() -> Path | None:
    """The ComfyUI folder ``lorabuild install`` copies into (``LORABUILD_COMFYUI``), or None."""
    configured = os.environ.get("LORABUILD_COMFYUI")
    return Path(configured).expanduser() if configured else None


def script_wrapper() -> Path | None:
    """A Python file every kohya script is run through (``LORABUILD_SCRIPT_WRAPPER``), or None.

    Its path goes right before the kohya script's in the command lorabuild runs (``python -m
    accelerate.commands.launch ... WRAPPER {sd_scripts}/flux_train_network.py ...``); the wrapper
    gets the script and its arguments. Tests use it to run kohya with shrunk model sizes
    (``lorabuild/demo/tinyflux.py``). The generated ``train.sh``/``train.ps1`` never include it.
    """
    configured = os.environ.get("LORABUILD_SCRIPT_WRAPPER")
    return Path(configured).expanduser() if configured else None
