"""Run a kohya FLUX script with a tiny model: a test-only launcher, not part of the product.

Usage (kohya's Python, which has torch and kohya's ``library``)::

    python lorabuild/demo/tinyflux.py KOHYA_SCRIPT ARGS...
    python -m accelerate.commands.launch [OPTIONS] lorabuild/demo/tinyflux.py KOHYA_SCRIPT ARGS...

kohya hard-codes FLUX.1's full sizes (a 12 B-parameter DiT, CLIP-L, T5-XXL), so the random-weight
files of :mod:`lorabuild.demo.fluxmodel` load only once those sizes are shrunk. This launcher puts
the script's folder (kohya's checkout) first on ``sys.path``, imports kohya's modules and replaces,
in this process only and without touching kohya's files:

- ``library.flux_models.configs["dev"]`` and ``["schnell"]``: their ``params`` (the DiT:
  :data:`~lorabuild.demo.fluxsizes.FLUX_DEV`, ``FLUX_SCHNELL``) and ``ae_params`` (the autoencoder:
  ``AUTOENCODER``); kohya's ``load_flow_model`` and ``load_ae`` read them when they are called;
- ``library.chroma_models.chroma_params`` (Chroma's DiT: ``CHROMA``);
- ``library.flux_utils.CLIPConfig`` and ``T5Config``: wrapped so that ``load_clip_l`` and
  ``load_t5xxl``, whose configs are local variables, build tiny text encoders (``CLIP_L``, ``T5XXL``;
  ``sd3_utils`` reuses ``load_t5xxl``).

Nothing else changes: the tokenizers, the training and sampling code, the LoRA network and the
files kohya writes are kohya's own. Then it runs ``KOHYA_SCRIPT`` unmodified with
``runpy.run_path(script, run_name="__main__")`` and ``sys.argv = [script, *ARGS]``. Works for
``flux_train_network.py`` and ``flux_minimal_inference.py`` (and any script that loads FLUX through
``library.flux_utils``).

The sizes live in ``fluxsizes.py`` beside this file, the one definition :mod:`lorabuild.demo.fluxmodel`
builds from. This file is run as a script, by kohya's Python, where lorabuild may not be importable
(kohya's venv does not install it) and where putting lorabuild's repository on ``sys.path`` would
shadow kohya's own top-level ``tools`` package. So it loads ``fluxsizes.py`` by its path (it is
standard-library only), which works however this file is started; imported as
``lorabuild.demo.tinyflux`` it does the same. lorabuild's process seam runs kohya scripts through
this file when the machine setting ``LORABUILD_SCRIPT_WRAPPER`` names it.

kohya's modules are imported with :func:`importlib.import_module` at run time: lorabuild never
imports kohya's Python stack (the import-linter contract in ``pyproject.toml``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if __package__ or TYPE_CHECKING:
    from lorabuild.demo.tinylaunch import load_beside, run_kohya
else:  # run as a script: this folder is sys.path[0] (lorabuild.demo.tinylaunch says why)
    from tinylaunch import load_beside, run_kohya


def load_sizes() -> ModuleType:
    """``fluxsizes.py`` from beside this file, loaded by path (see :mod:`lorabuild.demo.tinylaunch`)."""
    return load_beside(__file__, "fluxsizes.py")


def _with(real: Callable[..., Any], tiny: dict[str, Any]) -> Callable[..., Any]:
    """A stand-in for a transformers config class whose keyword arguments ``tiny`` overrides."""

    def build(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, **tiny})

    return build


def shrink_kohya(kohya_dir: Path) -> None:
    """Put the tiny sizes into kohya's configs (see the module docstring), in this process.

    Args:
        kohya_dir: kohya's checkout; put first on ``sys.path`` so its ``library`` is the one patched.
    """
    sizes = load_sizes()
    if str(kohya_dir) not in sys.path:
        sys.path.insert(0, str(kohya_dir))
    flux_models: Any = importlib.import_module("library.flux_models")
    chroma_models: Any = importlib.import_module("library.chroma_models")
    flux_utils: Any = importlib.import_module("library.flux_utils")

    ae_params = flux_models.AutoEncoderParams(**sizes.AUTOENCODER)
    for name, params in (("dev", sizes.FLUX_DEV), ("schnell", sizes.FLUX_SCHNELL)):
        spec = flux_models.configs[name]
        flux_models.configs[name] = replace(
            spec, params=flux_models.FluxParams(**params), ae_params=ae_params
        )
    chroma_models.chroma_params = chroma_models.ChromaParams(**sizes.CHROMA)
    # load_clip_l builds a CLIPConfig (not CLIPTextConfig) whose top-level keys the text model reads.
    flux_utils.CLIPConfig = _with(flux_utils.CLIPConfig, sizes.CLIP_L)
    flux_utils.T5Config = _with(flux_utils.T5Config, sizes.T5XXL)


def main(argv: Sequence[str] | None = None) -> None:
    """Shrink kohya's sizes, then run the kohya script ``argv[0]`` with the other arguments."""
    run_kohya(__file__, shrink_kohya, argv)


if __name__ == "__main__":
    main()
