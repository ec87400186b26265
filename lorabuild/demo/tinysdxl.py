"""Run a kohya SDXL script with a tiny model: a test-only launcher, not part of the product.

Usage (kohya's Python, which has torch and kohya's ``library``)::

    python lorabuild/demo/tinysdxl.py KOHYA_SCRIPT ARGS...
    python -m accelerate.commands.launch [OPTIONS] lorabuild/demo/tinysdxl.py KOHYA_SCRIPT ARGS...

kohya hard-codes SDXL's full sizes (a 2.6 B-parameter U-Net, CLIP-L, CLIP-bigG and the VAE), so the
random-weight checkpoint of :mod:`lorabuild.demo.sdxlmodel` loads only once those sizes are shrunk.
This launcher puts the script's folder (kohya's checkout) first on ``sys.path``, imports kohya's
modules and replaces, in this process only and without touching kohya's files:

- ``library.sdxl_original_unet``'s ``MODEL_CHANNELS``, ``TIME_EMBED_DIM``, ``CONTEXT_DIM`` and
  ``ADM_IN_CHANNELS`` (:data:`~lorabuild.demo.sdxlsizes.UNET`), which ``SdxlUNet2DConditionModel``
  reads when it is built;
- ``library.sdxl_original_unet.Transformer2DModel``: subclassed under the same name, because the U-Net passes its depths
  (2 and 10) and ``cross_attention_dim=2048`` as literals; the subclass forces one layer and
  ``CONTEXT_DIM``;
- ``library.sdxl_model_util.CLIPTextConfig``: wrapped, because the loader builds both text encoders'
  configs as local variables; the full width it asks for (768 or 1280) says which encoder it is;
- ``library.model_util``'s ``VAE_PARAMS_*`` (the VAE config every SD loader builds from).

Nothing else changes: the tokenizers, training and sampling code, the LoRA network and the files
kohya writes are kohya's own. Then it runs ``KOHYA_SCRIPT`` unmodified with
``runpy.run_path(script, run_name="__main__")``. Works for ``sdxl_train_network.py`` and
``gen_img.py --sdxl`` (both load the checkpoint through ``sdxl_model_util``).

Like ``tinyflux.py`` it loads its sizes (``sdxlsizes.py``) by path, since it runs as a script in
kohya's Python, where lorabuild may not be importable; lorabuild's process seam runs kohya scripts
through this file when the machine setting ``LORABUILD_SCRIPT_WRAPPER`` names it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if __package__ or TYPE_CHECKING:
    from lorabuild.demo.tinylaunch import load_beside, run_kohya
else:  # run as a script: this folder is sys.path[0] (lorabuild.demo.tinylaunch says why)
    from tinylaunch import load_beside, run_kohya


def load_sizes() -> ModuleType:
    """``sdxlsizes.py`` from beside this file, loaded by path (see :mod:`lorabuild.demo.tinylaunch`)."""
    return load_beside(__file__, "sdxlsizes.py")


def _transformer(real: type[Any], layers: int, context: int) -> type[Any]:
    """kohya's ``Transformer2DModel`` with the tiny depth and context width forced.

    A subclass of the same name, not a function: kohya's LoRA finds the modules it wraps by their
    class name, and the trainer checks ``isinstance`` against it.
    """
    if getattr(real, "_lorabuild_tiny", False):
        return real  # already shrunk in this process

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        real.__init__(
            self, *args, **{**kwargs, "num_transformer_layers": layers, "cross_attention_dim": context}
        )

    return type(real.__name__, (real,), {"__init__": __init__, "_lorabuild_tiny": True})


def _text_config(real: Callable[..., Any], tiny: dict[int, dict[str, Any]]) -> Callable[..., Any]:
    """A stand-in for ``CLIPTextConfig`` that shrinks the encoder whose full width it is asked for."""
    if getattr(real, "_lorabuild_tiny", False):
        return real

    def build(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, **tiny.get(kwargs.get("hidden_size", 0), {})})

    build._lorabuild_tiny = True  # type: ignore[attr-defined]
    return build


def shrink_kohya(kohya_dir: Path) -> None:
    """Put the tiny sizes into kohya's SDXL configs (see the module docstring), in this process.

    Args:
        kohya_dir: kohya's checkout; put first on ``sys.path`` so its ``library`` is the one patched.
    """
    sizes = load_sizes()
    if str(kohya_dir) not in sys.path:
        sys.path.insert(0, str(kohya_dir))
    unet: Any = importlib.import_module("library.sdxl_original_unet")
    model_util: Any = importlib.import_module("library.model_util")
    sdxl_model_util: Any = importlib.import_module("library.sdxl_model_util")

    for name, value in sizes.UNET.items():
        setattr(unet, name, value)
    unet.Transformer2DModel = _transformer(
        unet.Transformer2DModel, sizes.TRANSFORMER_LAYERS, sizes.UNET["CONTEXT_DIM"]
    )
    sdxl_model_util.CLIPTextConfig = _text_config(sdxl_model_util.CLIPTextConfig, sizes.TEXT_ENCODERS)
    for name, value in sizes.VAE.items():
        setattr(model_util, name, value)


def main(argv: Sequence[str] | None = None) -> None:
    """Shrink kohya's sizes, then run the kohya script ``argv[0]`` with the other arguments."""
    run_kohya(__file__, shrink_kohya, argv)


if __name__ == "__main__":
    main()
