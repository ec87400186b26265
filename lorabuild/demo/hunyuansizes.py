"""The tiny HunyuanImage 2.1 sizes: the one definition the test model and its launcher share.

:mod:`lorabuild.demo.hunyuanmodel` builds random-weight files of these sizes, and
``lorabuild/demo/tinyhunyuan.py`` puts the same sizes into kohya's hard-coded HunyuanImage configs
before it runs a kohya script. The sizes are coupled:

- the DiT's text input (``text_states_dim``) is Qwen2.5-VL's hidden width, and its byT5 mapper's
  input (``in_dim``) is byT5's ``d_model``;
- the DiT's head width (``hidden_size / heads_num``) is ``sum(rope_dim_list)``; Qwen's head width
  (``hidden_size / num_attention_heads``) is twice ``sum(mrope_section)``;
- the vision tower's ``out_hidden_size`` is Qwen's hidden width;
- the VAE keeps 64 latent channels (the DiT's ``in_channels``) and six levels (its 32x compression);
  its widths are multiples of 32 (``GroupNorm(32, ...)``) and the last one a multiple of 128
  (twice the latent channels: the encoder averages channel groups into them);
- byT5 keeps its width (1472: get_byt5_prompt_embeds_from_tokens writes zeros that wide for a
  caption without quoted text) and 12 layers (lorabuild's header probe tells byT5 from T5-XXL by
  that count), with narrow attention and feed-forward parts.

Plain values only (standard library): ``tinyhunyuan.py`` loads this file by path, inside kohya's Python.

May import: the standard library only.
"""

from __future__ import annotations

from typing import Any, Final

QWEN_WIDTH: Final = 64
QWEN_HEADS: Final = 2  # head width 32
BYT5_WIDTH: Final = 1472  # kept: kohya writes 1472-wide zeros for captions without quoted text
DIT_WIDTH: Final = 64
DIT_HEADS: Final = 2  # head width 32

# library/hunyuan_image_models.py, HYImageDiffusionTransformer.__init__: exact source lines -> tiny lines.
DIT_LINES: Final[dict[str, str]] = {
    "self.rope_dim_list = [64, 64]": "self.rope_dim_list = [16, 16]",
    "self.hidden_size = 3584": f"self.hidden_size = {DIT_WIDTH}",
    "self.heads_num = 28": f"self.heads_num = {DIT_HEADS}",
    "mm_double_blocks_depth = 20": "mm_double_blocks_depth = 1",
    "mm_single_blocks_depth = 40": "mm_single_blocks_depth = 1",
    "text_states_dim = 3584": f"text_states_dim = {QWEN_WIDTH}",
    "ByT5Mapper(in_dim=1472, out_dim=2048, hidden_dim=2048,": f"ByT5Mapper(in_dim={BYT5_WIDTH}, out_dim=64, hidden_dim=64,",
}

# library/hunyuan_image_vae.py, HunyuanVAE2D.__init__.
VAE_LINES: Final[dict[str, str]] = {
    "block_out_channels = (128, 256, 512, 512, 1024, 1024)": "block_out_channels = (32, 32, 64, 64, 128, 128)",
    "layers_per_block = 2": "layers_per_block = 1",
}

# Qwen2.5-VL 7B (transformers.Qwen2_5_VLConfig), text part: top level and text_config alike.
QWEN_TEXT: Final[dict[str, Any]] = {
    "hidden_size": QWEN_WIDTH,
    "intermediate_size": 2 * QWEN_WIDTH,
    "num_hidden_layers": 3,  # kohya reads hidden_states[-3]
    "num_attention_heads": QWEN_HEADS,
    "num_key_value_heads": 1,
    "max_window_layers": 3,
    "rope_scaling": {"mrope_section": [4, 6, 6], "rope_type": "default", "type": "default"},
}
QWEN_VISION: Final[dict[str, Any]] = {
    "depth": 1,
    "fullatt_block_indexes": [0],
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": QWEN_WIDTH,
}

# byT5-small (transformers.T5Config, built by kohya's load_byt5).
BYT5: Final[dict[str, Any]] = {
    "d_model": BYT5_WIDTH,
    "d_ff": 2 * BYT5_WIDTH,
    "d_kv": 16,
    "num_heads": 2,
    "num_layers": 12,
    "num_decoder_layers": 1,
}
