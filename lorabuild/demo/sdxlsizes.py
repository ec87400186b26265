"""The tiny SDXL sizes: the one definition the test model and its launcher share.

:mod:`lorabuild.demo.sdxlmodel` builds a random-weight checkpoint of these sizes, and
``lorabuild/demo/tinysdxl.py`` puts the same sizes into kohya's hard-coded SDXL configs before it
runs a kohya script, so the checkpoint loads with every key matched. The sizes are coupled:

- the U-Net's cross-attention width (``CONTEXT_DIM``) is the two text encoders' widths together:
  kohya concatenates CLIP-L's and CLIP-bigG's hidden states (768 + 1280 = 2048 at full size);
- its size-conditioning input (``ADM_IN_CHANNELS``) is CLIP-bigG's projection width plus six
  256-wide size embeddings (sdxl_train_util.get_size_embeddings: 1280 + 1536 = 2816 at full size);
- ``MODEL_CHANNELS`` is a multiple of 32 (``GroupNorm(32, ...)``) whose double is a multiple of 64:
  kohya's attention heads are 64 wide (``2 * MODEL_CHANNELS // 64`` heads at the middle level);
- CLIP-L keeps 12 layers, narrow: kohya reads its ``hidden_states[11]`` (strategy_sdxl.py);
  CLIP-bigG needs two, as kohya reads its penultimate layer;
- the VAE keeps 4 latent channels and four levels (three halvings: the 8x downscale latent caching
  assumes) and a width that is a multiple of 32.

Plain values only (standard library), because ``tinysdxl.py`` loads this file by path, before and
without importing lorabuild: it runs as a script inside kohya's Python.

May import: the standard library only.
"""

from __future__ import annotations

from typing import Any, Final

CLIP_L_WIDTH: Final = 32
CLIP_G_WIDTH: Final = 32
SIZE_EMBEDDINGS: Final = 6 * 256  # original size, crop and target size, 2 x 256 each

# library/sdxl_original_unet.py's module constants.
MODEL_CHANNELS: Final = 32
UNET: Final[dict[str, int]] = {
    "MODEL_CHANNELS": MODEL_CHANNELS,
    "TIME_EMBED_DIM": MODEL_CHANNELS * 4,
    "CONTEXT_DIM": CLIP_L_WIDTH + CLIP_G_WIDTH,
    "ADM_IN_CHANNELS": CLIP_G_WIDTH + SIZE_EMBEDDINGS,
}
TRANSFORMER_LAYERS: Final = 1
"""Each of the U-Net's transformer blocks' depth (literals 2 and 10 in SdxlUNet2DConditionModel)."""

# The CLIPTextConfig keywords library/sdxl_model_util.py's loader gets overridden, keyed by the
# full width that tells which encoder it builds; the vocabulary and 77 positions are real.
CLIP_L: Final[dict[str, Any]] = {
    "hidden_size": CLIP_L_WIDTH,
    "intermediate_size": 2 * CLIP_L_WIDTH,
    "num_hidden_layers": 12,
    "num_attention_heads": 2,
    "projection_dim": CLIP_L_WIDTH,
}
CLIP_G: Final[dict[str, Any]] = {
    "hidden_size": CLIP_G_WIDTH,
    "intermediate_size": 2 * CLIP_G_WIDTH,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "projection_dim": CLIP_G_WIDTH,
}
TEXT_ENCODERS: Final[dict[int, dict[str, Any]]] = {768: CLIP_L, 1280: CLIP_G}

# library/model_util.py's VAE_PARAMS_* constants (the SD/SDXL VAE).
VAE: Final[dict[str, Any]] = {
    "VAE_PARAMS_CH": 32,
    "VAE_PARAMS_CH_MULT": [1, 1, 1, 1],
    "VAE_PARAMS_NUM_RES_BLOCKS": 1,
}
