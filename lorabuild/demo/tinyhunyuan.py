"""Run a kohya HunyuanImage 2.1 script with a tiny model: a test-only launcher, not part of the product.

Usage (kohya's Python)::

    python lorabuild/demo/tinyhunyuan.py KOHYA_SCRIPT ARGS...

kohya hard-codes HunyuanImage 2.1's full sizes (a 17 B DiT, Qwen2.5-VL 7B, byT5 and the 32x VAE),
mostly as literals inside constructors, so the random-weight files of
:mod:`lorabuild.demo.hunyuanmodel` load only once those sizes are shrunk. In this process only,
without touching kohya's files, this launcher:

- recompiles ``HYImageDiffusionTransformer.__init__`` (library/hunyuan_image_models.py) and
  ``HunyuanVAE2D.__init__`` (library/hunyuan_image_vae.py) from kohya's own source with the literal
  lines of :data:`~lorabuild.demo.hunyuansizes.DIT_LINES` and ``VAE_LINES`` replaced (each must be
  found exactly once, so a changed kohya fails here, loudly);
- wraps ``Qwen2_5_VLConfig`` and ``T5Config`` in library/hunyuan_image_text_encoder.py, whose
  loaders build them from JSON strings, to force the tiny text-encoder sizes.

Then it runs ``KOHYA_SCRIPT`` unmodified with ``runpy.run_path``. Like ``tinyflux.py`` it loads its
sizes by path (it runs inside kohya's Python, where lorabuild may not be importable).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if __package__ or TYPE_CHECKING:
    from lorabuild.demo.tinylaunch import load_beside, run_kohya
else:  # run as a script: this folder is sys.path[0] (lorabuild.demo.tinylaunch says why)
    from tinylaunch import load_beside, run_kohya


def load_sizes() -> ModuleType:
    """``hunyuansizes.py`` from beside this file, loaded by path (see :mod:`lorabuild.demo.tinylaunch`)."""
    return load_beside(__file__, "hunyuansizes.py")


def _recompile_init(cls: Any, module: ModuleType, lines: Mapping[str, str]) -> None:
    """Replace ``cls.__init__`` by kohya's own, recompiled with ``lines`` replaced."""
    if getattr(cls, "_lorabuild_tiny", False):
        return
    source = textwrap.dedent(inspect.getsource(cls.__init__))
    for old, new in lines.items():
        if source.count(old) != 1:
            raise RuntimeError(
                f"{cls.__name__}.__init__ has not exactly one {old!r}: is kohya at the pinned commit?"
            )
        source = source.replace(old, new)
    namespace: dict[str, Any] = {}
    # The class's module globals, and __class__ for the zero-argument super() in kohya's __init__.
    code = "def _outer(__class__):\n" + textwrap.indent(source, "    ") + "\n    return __init__\n"
    exec(compile(code, f"<tiny {cls.__name__}.__init__>", "exec"), module.__dict__, namespace)
    cls.__init__ = namespace["_outer"](cls)
    cls._lorabuild_tiny = True


def _config(
    real: Callable[..., Any], shrink: Callable[[dict[str, Any]], dict[str, Any]]
) -> Callable[..., Any]:
    if getattr(real, "_lorabuild_tiny", False):
        return real

    def build(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **shrink(dict(kwargs)))

    build._lorabuild_tiny = True  # type: ignore[attr-defined]
    return build


def shrink_kohya(kohya_dir: Path) -> None:
    """Put the tiny sizes into kohya's HunyuanImage code (see the module docstring), in this process."""
    sizes = load_sizes()
    if str(kohya_dir) not in sys.path:
        sys.path.insert(0, str(kohya_dir))
    models: Any = importlib.import_module("library.hunyuan_image_models")
    vae: Any = importlib.import_module("library.hunyuan_image_vae")
    text: Any = importlib.import_module("library.hunyuan_image_text_encoder")
    _recompile_init(models.HYImageDiffusionTransformer, models, sizes.DIT_LINES)
    _recompile_init(vae.HunyuanVAE2D, vae, sizes.VAE_LINES)

    def qwen(config: dict[str, Any]) -> dict[str, Any]:
        layers = sizes.QWEN_TEXT["num_hidden_layers"]
        text_config = {**config.get("text_config", {}), **sizes.QWEN_TEXT}
        text_config["layer_types"] = ["full_attention"] * layers
        return {
            **config,
            **sizes.QWEN_TEXT,
            "text_config": text_config,
            "vision_config": {**config.get("vision_config", {}), **sizes.QWEN_VISION},
        }

    text.Qwen2_5_VLConfig = _config(text.Qwen2_5_VLConfig, qwen)
    text.T5Config = _config(text.T5Config, lambda config: {**config, **sizes.BYT5})


def main(argv: Sequence[str] | None = None) -> None:
    """Shrink kohya's sizes, then run the kohya script ``argv[0]`` with the other arguments."""
    run_kohya(__file__, shrink_kohya, argv)


if __name__ == "__main__":
    main()
