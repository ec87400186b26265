"""The tiny SD3 sizes: the one definition the test model (:mod:`lorabuild.demo.sd3model`) and its launcher
(``lorabuild/demo/tinysd3.py``) share.

kohya reads the MMDiT's whole shape from the checkpoint (``sd3_utils.analyze_state_dict_state``:
depth = ``x_embedder`` width / 64, patch size, position-embedding grid, ``y``/context widths, qk-norm,
the layers with a second attention), so the MMDiT is shrunk by the file alone: depth 1 (hidden 64,
one head of 64). CLIP-L, CLIP-G, T5-XXL and the VAE are built from sizes kohya hard-codes
(``sd3_utils.load_clip_l``/``load_clip_g``'s ``CLIPTextConfig``, ``flux_utils.load_t5xxl``'s
``T5Config``, ``sd3_models.VAEEncoder``/``VAEDecoder``'s defaults), and the text encodings are
padded to T5-XXL's 4096 in ``strategy_sd3.Sd3TextEncodingStrategy.concat_encodings``; the launcher
shrinks those. The sizes are coupled:

- the context (``context_embedder`` input) is T5's ``d_model``, and CLIP-L and CLIP-G's widths
  side by side (padded to it) must not exceed it;
- the pooled vector (``y_embedder`` input, ``adm_in_channels``) is CLIP-L's and CLIP-G's projections
  side by side;
- CLIP-G keeps more than 12 layers: lorabuild's probe tells a CLIP-G file from CLIP-L by depth;
- the VAE keeps 16 latent channels (the MMDiT's ``in_channels`` is fixed at 16) and four levels
  (the 8x downscale), with a width that is a multiple of 32 (``GroupNorm(32, ...)``).

Plain values only (standard library), because ``tinysd3.py`` loads this file by path inside
kohya's Python, before and without importing lorabuild.

May import: the standard library only.
"""

from __future__ import annotations

from typing import Any, Final

CLIP_L_WIDTH: Final = 32
CLIP_G_WIDTH: Final = 32
T5_WIDTH: Final = 64  # >= CLIP_L_WIDTH + CLIP_G_WIDTH: the CLIP encodings are padded to it
MMDIT_DEPTH: Final = 1  # hidden 64 * depth, depth heads (sd3_models.MMDiT)
POS_EMBED_MAX_SIZE: Final = 32  # patches per side: up to 512 px (latent 64, patch 2)

# CLIP-L's and CLIP-G's text models (transformers.CLIPTextConfig), with projection; vocabulary and
# 77 positions are real.
CLIP_L: Final[dict[str, Any]] = {
    "hidden_size": CLIP_L_WIDTH,
    "intermediate_size": 2 * CLIP_L_WIDTH,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "projection_dim": CLIP_L_WIDTH,
}
CLIP_G: Final[dict[str, Any]] = {
    "hidden_size": CLIP_G_WIDTH,
    "intermediate_size": 2 * CLIP_G_WIDTH,
    "num_hidden_layers": 13,
    "num_attention_heads": 2,
    "projection_dim": CLIP_G_WIDTH,
}
CLIP_WIDTHS: Final = {768: CLIP_L, 1280: CLIP_G}
"""kohya's full CLIP widths (sd3_utils: CLIP-L 768, CLIP-G 1280) -> the tiny model's sizes."""

# T5-XXL's encoder (transformers.T5Config): gated-GELU like the real one, the real vocabulary.
T5XXL: Final[dict[str, Any]] = {
    "vocab_size": 32128,
    "d_model": T5_WIDTH,
    "d_ff": 2 * T5_WIDTH,
    "d_kv": 32,
    "num_heads": 2,
    "num_layers": 1,
    "num_decoder_layers": 1,
    "feed_forward_proj": "gated-gelu",
}

# library.sd3_models.SD3Params of the tiny MMDiT, in SD3.5 Large's layout: qk-norm ("rms"), no
# second attention in the x blocks (kohya names that model_type "5-large").
MMDIT: Final[dict[str, Any]] = {
    "patch_size": 2,
    "depth": MMDIT_DEPTH,
    "num_patches": POS_EMBED_MAX_SIZE**2,
    "pos_embed_max_size": POS_EMBED_MAX_SIZE,
    "adm_in_channels": CLIP_L_WIDTH + CLIP_G_WIDTH,
    "qk_norm": "rms",
    "x_block_self_attn_layers": [],
    "context_embedder_in_features": T5_WIDTH,
    "context_embedder_out_features": 64 * MMDIT_DEPTH,
    "model_type": "5-large",
}

# library.sd3_models.VAEEncoder / VAEDecoder keyword arguments (the full VAE: ch 128, ch_mult
# (1, 2, 4, 4), two res blocks a level).
VAE: Final[dict[str, Any]] = {"ch": 32, "ch_mult": (1, 1, 1, 1), "num_res_blocks": 1}
