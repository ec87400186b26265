"""The tiny Anima sizes: the one definition the test model and its launcher share.

:mod:`lorabuild.demo.animamodel` builds random-weight files of these sizes, and
``lorabuild/demo/tinyanima.py`` puts the same sizes into kohya's hard-coded configs before it runs a
kohya script, so the files load with every key matched. The sizes are coupled:

- Qwen3's hidden width is the LLM adapter's ``source_dim`` (the adapter attends to Qwen3's hidden
  states) and, for a DiT without the adapter, the DiT's ``crossattn_emb_channels``;
- the adapter's ``target_dim`` (its output) is the DiT's ``crossattn_emb_channels``, the context
  width of its cross-attention; its ``model_dim`` divides by its head count;
- the DiT keeps 16 latent channels (the Qwen-Image VAE's ``z_dim``; kohya writes
  ``Anima.LATENT_CHANNELS``) and its 2x2 patches;
- the VAE keeps its three spatial halvings (the 8x downscale that latent caching and
  ``anima_minimal_inference.py`` assume) and its temporal flags; only its width, channel
  multipliers and residual blocks shrink.

Plain values only (standard library), because ``tinyanima.py`` loads this file by path, before and
without importing lorabuild: it runs as a script inside kohya's Python.

May import: the standard library only.
"""

from __future__ import annotations

from typing import Any, Final

QWEN3_WIDTH: Final = 32
CONTEXT_WIDTH: Final = 32
DIT_WIDTH: Final = 64
LATENT_CHANNELS: Final = 16

# transformers.Qwen3Config for configs/qwen3_06b (kohya reads that folder's config.json): the real
# vocabulary (the tokenizer is kohya's own), one layer.
QWEN3: Final[dict[str, Any]] = {
    "hidden_size": QWEN3_WIDTH,
    "intermediate_size": 2 * QWEN3_WIDTH,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "max_window_layers": 1,
}

# Keyword arguments library/anima_utils.load_anima_model's fixed dit_config is overridden with.
DIT: Final[dict[str, Any]] = {
    "model_channels": DIT_WIDTH,
    "num_heads": 2,
    "num_blocks": 1,
    "crossattn_emb_channels": CONTEXT_WIDTH,
    "adaln_lora_dim": 16,
}

# library/anima_models.LLMAdapter: Anima.__init__ builds it with 1024 everywhere and 6 layers.
LLM_ADAPTER: Final[dict[str, Any]] = {
    "source_dim": QWEN3_WIDTH,
    "target_dim": CONTEXT_WIDTH,
    "model_dim": CONTEXT_WIDTH,
    "num_layers": 1,
    "num_heads": 2,
}

# library/qwen_image_autoencoder_kl.AutoencoderKLQwenImage: load_vae's VAE_CONFIG_JSON has
# base_dim 96, dim_mult [1, 2, 4, 4], num_res_blocks 2.
VAE: Final[dict[str, Any]] = {
    "base_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
}
