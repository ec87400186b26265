"""Run a kohya Lumina Image 2.0 script with a tiny model: a test-only launcher, not part of the product.

Usage (kohya's Python, which has torch and kohya's ``library``)::

    python lorabuild/demo/tinylumina.py KOHYA_SCRIPT ARGS...
    python -m accelerate.commands.launch [OPTIONS] lorabuild/demo/tinylumina.py KOHYA_SCRIPT ARGS...

kohya hard-codes Lumina 2's full sizes: ``library/lumina_util.load_lumina_model`` builds
``lumina_models.NextDiT_2B_GQA_patch2_Adaln_Refiner()`` (``LuminaParams.get_2b_config``: 2304 wide,
26 layers), ``load_gemma2`` builds Gemma-2 2B from a local ``GEMMA2_CONFIG`` dict (26 layers, 256,000
tokens) and ``load_ae`` the FLUX autoencoder from ``flux_models.configs["schnell"]``. So the
random-weight files of :mod:`lorabuild.demo.luminamodel` load only once those sizes are shrunk. This
launcher puts the script's folder (kohya's checkout) first on ``sys.path``, imports kohya's modules
and replaces, in this process only and without touching kohya's files:

- ``lumina_models.NextDiT_2B_GQA_patch2_Adaln_Refiner``: builds ``NextDiT`` with
  :data:`~lorabuild.demo.luminasizes.NEXTDIT` (64 wide, 2 layers, 1 refiner layer each);
- ``lumina_util.Gemma2Config``: the config ``load_gemma2`` builds gets ``GEMMA2``'s sizes (2 layers,
  32 wide, the test tokenizer's 260-token vocabulary);
- ``flux_models.configs[...]``'s autoencoder parameters: ``fluxsizes.AUTOENCODER`` (the tiny FLUX
  AE of :mod:`lorabuild.demo.fluxmodel`, 16 latent channels and the 8x downscale kept).

Nothing else changes: the training, caching and sampling code, the LoRA network, the tokenizer loading
(``AutoTokenizer`` from the hub cache the test model provides) and the files kohya writes are
kohya's own. Then it runs ``KOHYA_SCRIPT`` unmodified (:func:`lorabuild.demo.tinylaunch.run_kohya`).
Works for ``lumina_train_network.py`` and ``lumina_minimal_inference.py``.

As the other launchers do, it loads ``luminasizes.py`` and ``fluxsizes.py`` from beside itself by
path (:mod:`lorabuild.demo.tinylaunch` says why); lorabuild's process seam runs kohya scripts
through this file when the machine setting ``LORABUILD_SCRIPT_WRAPPER`` names it. kohya's modules
are imported with :func:`importlib.import_module` at run time (lorabuild never imports kohya's stack).
"""

from __future__ import annotations

import importlib
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


def load_sizes(name: str = "luminasizes") -> ModuleType:
    """``<name>.py`` from beside this file, loaded by path (see :mod:`lorabuild.demo.tinylaunch`)."""
    return load_beside(__file__, f"{name}.py")


def _with(real: Callable[..., Any], tiny: dict[str, Any]) -> Callable[..., Any]:
    """A stand-in for a config class whose keyword arguments ``tiny`` overrides."""

    def build(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, **tiny})

    build._lorabuild_tiny = True  # type: ignore[attr-defined]
    return build


def shrink_kohya(kohya_dir: Path) -> None:
    """Put the tiny sizes into kohya's Lumina loaders (see the module docstring), in this process.

    Args:
        kohya_dir: kohya's checkout; put first on ``sys.path`` so its ``library`` is the one patched.
    """
    sizes = load_sizes()
    flux_sizes = load_sizes("fluxsizes")
    if str(kohya_dir) not in sys.path:
        sys.path.insert(0, str(kohya_dir))
    lumina_models: Any = importlib.import_module("library.lumina_models")
    lumina_util: Any = importlib.import_module("library.lumina_util")
    flux_models: Any = importlib.import_module("library.flux_models")

    def nextdit(params: Any = None, **kwargs: Any) -> Any:
        return lumina_models.NextDiT(**{**sizes.NEXTDIT, **kwargs})

    lumina_models.NextDiT_2B_GQA_patch2_Adaln_Refiner = nextdit
    if not getattr(lumina_util.Gemma2Config, "_lorabuild_tiny", False):
        lumina_util.Gemma2Config = _with(lumina_util.Gemma2Config, sizes.GEMMA2)
    ae_params = flux_models.AutoEncoderParams(**flux_sizes.AUTOENCODER)
    for name, spec in list(flux_models.configs.items()):
        flux_models.configs[name] = replace(spec, ae_params=ae_params)


def main(argv: Sequence[str] | None = None) -> None:
    """Shrink kohya's Lumina sizes, then run the kohya script ``argv[0]`` with the other arguments."""
    run_kohya(__file__, shrink_kohya, argv)


if __name__ == "__main__":
    main()
