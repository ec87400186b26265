"""The tiny Lumina Image 2.0 sizes: the one definition the test model and its launcher share.

:mod:`lorabuild.demo.luminamodel` builds random-weight files of these sizes, and
``lorabuild/demo/tinylumina.py`` puts the same sizes into kohya's hard-coded configs before it runs a
kohya script, so the files load with every key matched. The sizes are coupled:

- Gemma-2's hidden width is the NextDiT's ``cap_feat_dim`` (its caption embedder reads Gemma's
  second-to-last hidden states, library/strategy_lumina.py);
- the NextDiT's head width (``dim / n_heads``) is ``sum(axes_dims)``, its rotary embedding's width
  (NextDiT asserts it), each axis even;
- the NextDiT keeps 16 input channels (the FLUX autoencoder's latents; lumina_minimal_inference.py
  writes ``latent_channels = 16``) and 2x2 patches (kohya's bucket step 16);
- Gemma-2's vocabulary is the test tokenizer's (:data:`VOCAB_SIZE`: 256 bytes and Gemma's four special
  tokens at Gemma's ids), so every id the tokenizer gives has an embedding;
- the autoencoder is FLUX's tiny one (``fluxsizes.AUTOENCODER``, which the launcher also reads):
  Lumina 2 uses the FLUX.1 AE (lumina_util.load_ae builds it from ``flux_models.configs["schnell"]``).

Plain values only (standard library), because ``tinylumina.py`` loads this file by path, before and
without importing lorabuild: it runs as a script inside kohya's Python.

May import: the standard library only.
"""

from __future__ import annotations

from typing import Any, Final

GEMMA2_WIDTH: Final = 32
DIT_WIDTH: Final = 64
DIT_HEADS: Final = 2
AXES_DIMS: Final = (8, 12, 12)  # sums to DIT_WIDTH // DIT_HEADS
LATENT_CHANNELS: Final = 16

SPECIAL_TOKENS: Final = ("<pad>", "<eos>", "<bos>", "<unk>")
"""Gemma's special tokens at Gemma's ids 0-3 (kohya's GEMMA2_CONFIG: pad 0, eos 1, bos 2)."""
VOCAB_SIZE: Final = len(SPECIAL_TOKENS) + 256
"""The test tokenizer's vocabulary: the special tokens, then one token per byte (no merges)."""

# kohya's GEMMA2_CONFIG (library/lumina_util.load_gemma2; 2304 wide, 26 layers, 256,000 tokens)
# with these keys replaced. Two layers: kohya reads the second-to-last hidden states.
GEMMA2: Final[dict[str, Any]] = {
    "hidden_size": GEMMA2_WIDTH,
    "intermediate_size": 2 * GEMMA2_WIDTH,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "query_pre_attn_scalar": 16,
    "vocab_size": VOCAB_SIZE,
}

# library.lumina_models.NextDiT's keyword arguments; LuminaParams.get_2b_config has dim 2304, 26
# layers, 2 refiner layers each, 24 heads (8 key/value), axes_dims [32, 32, 32], cap_feat_dim 2304.
NEXTDIT: Final[dict[str, Any]] = {
    "patch_size": 2,
    "in_channels": LATENT_CHANNELS,
    "dim": DIT_WIDTH,
    "n_layers": 2,
    "n_refiner_layers": 1,
    "n_heads": DIT_HEADS,
    "n_kv_heads": 1,
    "multiple_of": 16,
    "axes_dims": list(AXES_DIMS),
    "axes_lens": [300, 512, 512],
    "qk_norm": True,
    "cap_feat_dim": GEMMA2_WIDTH,
}
