"""The tiny FLUX/Chroma sizes: the one definition the test model and its launcher share.

:mod:`lorabuild.demo.fluxmodel` builds random-weight files of these sizes, and
``lorabuild/demo/tinyflux.py`` puts the same sizes into kohya's hard-coded configs before it runs a
kohya script, so the files load with every key matched. The sizes are coupled:

- the DiT's ``context_in_dim`` is T5's ``d_model`` and its ``vec_in_dim`` is CLIP-L's width (the
  pooled output of a ``CLIPTextModel`` has the hidden width, no projection);
- ``hidden_size / num_heads`` (the head width) is ``sum(axes_dim)``, the rotary embedding's width;
- ``in_channels`` is 16 latent channels × a 2×2 patch: kohya writes ``16 * 2 * 2`` in its sampling;
- the autoencoder keeps 16 latent channels and four levels (three halvings: the 8× downscale that
  latent caching assumes), and a width that is a multiple of 32 (``GroupNorm(32, ...)``);
- Chroma's ``approximator_in_dim`` stays 64: kohya splits it into timestep, guidance and
  modulation-index embeddings of 16, 16 and 32.

Plain values only (standard library), because ``tinyflux.py`` loads this file by path, before and
without importing lorabuild: it runs as a script inside kohya's Python.

May import: the standard library only.
"""

from __future__ import annotations

from typing import Any, Final

CLIP_L_WIDTH: Final = 32
T5_WIDTH: Final = 32
DIT_WIDTH: Final = 64
DIT_HEADS: Final = 2
AXES_DIM: Final = (8, 12, 12)  # sums to DIT_WIDTH // DIT_HEADS
LATENT_CHANNELS: Final = 16

# CLIP-L's text model (transformers.CLIPTextConfig); the vocabulary and 77 positions are real.
CLIP_L: Final[dict[str, Any]] = {
    "vocab_size": 49408,
    "hidden_size": CLIP_L_WIDTH,
    "intermediate_size": 2 * CLIP_L_WIDTH,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "max_position_embeddings": 77,
    "projection_dim": CLIP_L_WIDTH,
    "hidden_act": "quick_gelu",
}

# T5-XXL's encoder (transformers.T5Config): gated-GELU like the real one, the real vocabulary.
T5XXL: Final[dict[str, Any]] = {
    "vocab_size": 32128,
    "d_model": T5_WIDTH,
    "d_ff": 2 * T5_WIDTH,
    "d_kv": 16,
    "num_heads": 2,
    "num_layers": 1,
    "num_decoder_layers": 1,
    "feed_forward_proj": "gated-gelu",  # wi_0/wi_1, as kohya's T5-XXL config
}

# library.flux_models.FluxParams for "dev" (schnell: the same without guidance_embed).
FLUX_DEV: Final[dict[str, Any]] = {
    "in_channels": LATENT_CHANNELS * 2 * 2,
    "vec_in_dim": CLIP_L_WIDTH,
    "context_in_dim": T5_WIDTH,
    "hidden_size": DIT_WIDTH,
    "mlp_ratio": 2.0,
    "num_heads": DIT_HEADS,
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": list(AXES_DIM),
    "theta": 10_000,
    "qkv_bias": True,
    "guidance_embed": True,
}
FLUX_SCHNELL: Final[dict[str, Any]] = {**FLUX_DEV, "guidance_embed": False}

# library.flux_models.AutoEncoderParams (dev and schnell share it; kohya's load_ae reads "dev").
AUTOENCODER: Final[dict[str, Any]] = {
    "resolution": 256,
    "in_channels": 3,
    "ch": 32,
    "out_ch": 3,
    "ch_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "z_channels": LATENT_CHANNELS,
    "scale_factor": 0.3611,
    "shift_factor": 0.1159,
}

# library.chroma_models.ChromaParams (kohya builds Chroma from the module's chroma_params).
CHROMA: Final[dict[str, Any]] = {
    "in_channels": LATENT_CHANNELS * 2 * 2,
    "context_in_dim": T5_WIDTH,
    "hidden_size": DIT_WIDTH,
    "mlp_ratio": 2.0,
    "num_heads": DIT_HEADS,
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": list(AXES_DIM),
    "theta": 10_000,
    "qkv_bias": True,
    "guidance_embed": True,
    "approximator_in_dim": 64,
    "approximator_depth": 1,
    "approximator_hidden_size": 32,
    "_use_compiled": False,
}
