"""Run a kohya Anima script with a tiny model: a test-only launcher, not part of the product.

Usage (kohya's Python, which has torch and kohya's ``library``)::

    python lorabuild/demo/tinyanima.py KOHYA_SCRIPT ARGS...
    python -m accelerate.commands.launch [OPTIONS] lorabuild/demo/tinyanima.py KOHYA_SCRIPT ARGS...

kohya hard-codes Anima's full sizes: the DiT's ``dit_config`` is a local dict of
``library/anima_utils.load_anima_model`` (2048 wide, 28 blocks), the LLM adapter's widths are
literals in ``anima_models.Anima.__init__`` (1024, 6 layers), Qwen3-0.6B's config is read from
kohya's ``configs/qwen3_06b/config.json`` and the Qwen-Image VAE's from a JSON string inside
``qwen_image_autoencoder_kl.load_vae``. So the random-weight files of
:mod:`lorabuild.demo.animamodel` load only once those sizes are shrunk. This launcher puts the
script's folder (kohya's checkout) first on ``sys.path``, imports kohya's modules and wraps, in this
process only and without touching kohya's files, the constructors those loaders call:

- ``anima_models.Anima.__init__`` and ``anima_models.LLMAdapter.__init__``: their keyword arguments
  are overridden with :data:`~lorabuild.demo.animasizes.DIT` and ``LLM_ADAPTER`` (1 block, 64 wide;
  a 1-layer, 32-wide adapter);
- ``transformers.Qwen3Config.from_pretrained``: the config it reads gets ``QWEN3``'s sizes (1 layer,
  32 wide; the real vocabulary, so kohya's own Qwen3 tokenizer still fits);
- ``qwen_image_autoencoder_kl.AutoencoderKLQwenImage.__init__``: ``VAE``'s width, channel
  multipliers and residual blocks (its 16 latent channels and 8x downscale are kept).

Nothing else changes: the tokenizers (kohya's ``configs/qwen3_06b`` and ``configs/t5_old``), the
training, caching and sampling code, the LoRA network and the files kohya writes are kohya's own.
Then it runs ``KOHYA_SCRIPT`` unmodified with ``runpy.run_path(script, run_name="__main__")``. Works
for ``anima_train_network.py`` and ``anima_minimal_inference.py``.

As ``tinyflux.py`` does, it loads ``animasizes.py`` from beside itself by path (kohya's Python need
not have lorabuild installed, and lorabuild's folder on ``sys.path`` would shadow kohya's ``tools``);
lorabuild's process seam runs kohya scripts through this file when the machine setting
``LORABUILD_SCRIPT_WRAPPER`` names it. kohya's modules are imported with
:func:`importlib.import_module` at run time (lorabuild never imports kohya's stack).
"""

from __future__ import annotations

import functools
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
    """``animasizes.py`` from beside this file, loaded by path (see :mod:`lorabuild.demo.tinylaunch`)."""
    return load_beside(__file__, "animasizes.py")


def _init_with(cls: Any, tiny: dict[str, Any], positional: Sequence[str] = ()) -> None:
    """Make ``cls(...)`` build with ``tiny``'s keyword arguments (``positional`` names its leading ones)."""
    real: Callable[..., None] = cls.__init__
    if getattr(real, "_lorabuild_tiny", False):
        return

    @functools.wraps(real)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        named = dict(zip(positional, args, strict=False))
        real(self, *args[len(named) :], **{**named, **kwargs, **tiny})

    init._lorabuild_tiny = True  # type: ignore[attr-defined]
    cls.__init__ = init


def shrink_kohya(kohya_dir: Path) -> None:
    """Put the tiny sizes into kohya's Anima loaders (see the module docstring), in this process.

    Args:
        kohya_dir: kohya's checkout; put first on ``sys.path`` so its ``library`` is the one patched.
    """
    sizes = load_sizes()
    if str(kohya_dir) not in sys.path:
        sys.path.insert(0, str(kohya_dir))
    anima_models: Any = importlib.import_module("library.anima_models")
    vae_module: Any = importlib.import_module("library.qwen_image_autoencoder_kl")
    transformers: Any = importlib.import_module("transformers")

    _init_with(anima_models.Anima, sizes.DIT)
    _init_with(
        anima_models.LLMAdapter, sizes.LLM_ADAPTER, ("source_dim", "target_dim", "model_dim", "num_layers")
    )
    _init_with(vae_module.AutoencoderKLQwenImage, sizes.VAE)

    config_class = transformers.Qwen3Config
    real = config_class.from_pretrained.__func__
    if not getattr(real, "_lorabuild_tiny", False):

        def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
            config = real(cls, *args, **kwargs)
            for key, value in sizes.QWEN3.items():
                setattr(config, key, value)
            return config

        from_pretrained._lorabuild_tiny = True  # type: ignore[attr-defined]
        config_class.from_pretrained = classmethod(from_pretrained)


def main(argv: Sequence[str] | None = None) -> None:
    """Shrink kohya's sizes, then run the kohya script ``argv[0]`` with the other arguments."""
    run_kohya(__file__, shrink_kohya, argv)


if __name__ == "__main__":
    main()
