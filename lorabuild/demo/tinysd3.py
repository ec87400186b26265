"""Run a kohya SD3 script with a tiny model: a test-only launcher, not part of the product.

Usage (kohya's Python, which has torch and kohya's ``library``)::

    python lorabuild/demo/tinysd3.py KOHYA_SCRIPT ARGS...
    python -m accelerate.commands.launch [OPTIONS] lorabuild/demo/tinysd3.py KOHYA_SCRIPT ARGS...

kohya reads the SD3 MMDiT's shape from the checkpoint, so :mod:`lorabuild.demo.sd3model`'s
one-block MMDiT loads as it is. The rest is hard-coded at SD3's full sizes, and this launcher
shrinks exactly these, in this process only and without touching kohya's files (the sizes are
:mod:`lorabuild.demo.sd3sizes`'s, loaded by path as ``tinyflux.py`` loads its own):

- ``library.sd3_utils.CLIPTextConfig``: wrapped so that ``load_clip_l`` (hidden 768, 12 layers) and
  ``load_clip_g`` (hidden 1280, 32 layers), whose configs are local variables, build the tiny CLIP-L
  and CLIP-G (told apart by the width kohya asks for); vocabulary, positions and token ids stay;
- ``library.flux_utils.T5Config``: wrapped so that ``load_t5xxl`` (which ``sd3_utils.load_t5xxl``
  calls) builds the tiny T5 (d_model 4096, 24 layers -> ``T5XXL``);
- ``library.sd3_models.VAEEncoder`` and ``VAEDecoder``: wrapped so that ``SDVAE`` (ch 128, ch_mult
  1-2-4-4, two res blocks) builds the tiny VAE (``VAE``);
- ``library.strategy_sd3.Sd3TextEncodingStrategy.concat_encodings``: the same code with T5-XXL's
  width 4096, written there as a literal (the CLIP encodings are padded to it, and an absent T5
  output is 77 x 4096 zeros), replaced by the tiny T5 width.

Still at full size, and never reached with the tiny model's settings: the zero encodings
``encode_tokens`` makes for captions its ``clip_l_dropout_rate``/``clip_g_dropout_rate``/
``t5_dropout_rate`` drop (768, 1280, 4096 wide), so those rates must stay 0.

Nothing else changes: the tokenizers, training, sampling, the LoRA network (``networks.lora_sd3``)
and the files kohya writes are kohya's own. Then it runs ``KOHYA_SCRIPT`` unmodified with
``runpy.run_path(script, run_name="__main__")`` and ``sys.argv = [script, *ARGS]``: works for
``sd3_train_network.py`` and ``sd3_minimal_inference.py``. lorabuild's process seam runs kohya's
scripts through this file when the machine setting ``LORABUILD_SCRIPT_WRAPPER`` names it.

kohya's modules are imported with :func:`importlib.import_module` at run time: lorabuild never
imports kohya's Python stack (the import-linter contract in ``pyproject.toml``).
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


KOHYA_T5_WIDTH = 4096
"""The T5-XXL width kohya writes as a literal in strategy_sd3.Sd3TextEncodingStrategy.concat_encodings."""


def load_sizes() -> ModuleType:
    """``sd3sizes.py`` from beside this file, loaded by path (see :mod:`lorabuild.demo.tinylaunch`)."""
    return load_beside(__file__, "sd3sizes.py")


def _with(real: Callable[..., Any], tiny: dict[str, Any]) -> Callable[..., Any]:
    """A stand-in for a class whose keyword arguments ``tiny`` overrides."""

    def build(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, **tiny})

    return build


def _clip_config(real: Callable[..., Any], by_width: dict[int, dict[str, Any]]) -> Callable[..., Any]:
    """A stand-in for ``CLIPTextConfig`` that shrinks CLIP-L or CLIP-G by the full width kohya asks for."""

    def build(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, **by_width.get(kwargs.get("hidden_size", 0), {})})

    return build


def shrink_kohya(kohya_dir: Path) -> None:
    """Put the tiny sizes into kohya's SD3 code (see the module docstring), in this process.

    Args:
        kohya_dir: kohya's checkout; put first on ``sys.path`` so its ``library`` is the one patched.
    """
    sizes = load_sizes()
    if str(kohya_dir) not in sys.path:
        sys.path.insert(0, str(kohya_dir))
    torch: Any = importlib.import_module("torch")
    sd3_utils: Any = importlib.import_module("library.sd3_utils")
    sd3_models: Any = importlib.import_module("library.sd3_models")
    flux_utils: Any = importlib.import_module("library.flux_utils")
    strategy_sd3: Any = importlib.import_module("library.strategy_sd3")

    sd3_utils.CLIPTextConfig = _clip_config(sd3_utils.CLIPTextConfig, sizes.CLIP_WIDTHS)
    flux_utils.T5Config = _with(flux_utils.T5Config, sizes.T5XXL)
    sd3_models.VAEEncoder = _with(sd3_models.VAEEncoder, sizes.VAE)
    sd3_models.VAEDecoder = _with(sd3_models.VAEDecoder, sizes.VAE)
    width = sizes.T5_WIDTH

    def concat_encodings(self: Any, lg_out: Any, t5_out: Any, lg_pooled: Any) -> Any:
        # kohya's body, with its 4096 (KOHYA_T5_WIDTH) replaced by the tiny T5 width.
        lg_out = torch.nn.functional.pad(lg_out, (0, width - lg_out.shape[-1]))
        if t5_out is None:
            t5_out = torch.zeros((lg_out.shape[0], 77, width), device=lg_out.device, dtype=lg_out.dtype)
        return torch.cat([lg_out, t5_out], dim=-2), lg_pooled

    strategy_sd3.Sd3TextEncodingStrategy.concat_encodings = concat_encodings


def main(argv: Sequence[str] | None = None) -> None:
    """Shrink kohya's sizes, then run the kohya script ``argv[0]`` with the other arguments."""
    run_kohya(__file__, shrink_kohya, argv)


if __name__ == "__main__":
    main()
