"""Run kohya's BLIP captioner with a tiny BLIP: a test-only launcher, not part of the product.

Usage (kohya's Python, which has torch, timm and kohya's ``library``)::

    python lorabuild/demo/tinyblip.py {sd_scripts}/finetune/make_captions.py ARGS...
    python lorabuild/demo/tinyblip.py --write-weights OUT.pth {sd_scripts}

kohya's ``finetune/make_captions.py`` hard-codes BLIP's large captioner: ``blip_decoder(...,
vit="large", med_config="./blip/med_config.json")`` builds a ViT-L/16 image encoder (300 M
parameters) and a BERT-base text decoder from kohya's own config file. This launcher puts the
script's folder first on ``sys.path``, imports kohya's ``blip.blip`` and replaces, in this process
only and without touching kohya's files:

- ``blip.blip.create_vit``: a ViT of :data:`VISION`'s sizes whatever ``vit`` asks for (still 16-px
  patches of the 384-px image kohya feeds);
- ``blip.blip.BertConfig``: a subclass whose ``from_json_file`` reads kohya's config, then shrinks
  it to :data:`TEXT` and sets the vocabulary to the tokenizer's size (so every token the random
  decoder draws is a word of the test's small vocabulary);
- ``blip.blip.BertLMHeadModel``: kohya's decoder with transformers' ``GenerationMixin`` among its
  bases. At the pinned commit kohya's BLIP calls ``generate()`` on it, which transformers 4.50 and
  later (kohya pins 4.54.1) no longer provide: the unpatched script stops after loading the model
  (:data:`lorabuild.kohya.tagger.BLIP_GENERATE_BROKEN`; ``lorabuild check`` says so). The tests
  apply this fix to show that everything else works; :data:`KEEP_KOHYA_DECODER` leaves it out.

Nothing else changes: kohya's image transform, the tokenizer loading (offline, from the cache
lorabuild makes), the checkpoint loading (``--caption_weights``, a local file), nucleus sampling or
beam search, and the caption files are kohya's own. Then it runs the script unmodified with
``runpy.run_path(script, run_name="__main__")``. With ``--write-weights`` it saves a random-weight
checkpoint of those sizes (``{"model": state_dict}``, the layout kohya's ``load_checkpoint``
reads) instead; the tokenizer must be loadable then too (``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``).

lorabuild's process seam runs kohya scripts through this file when the machine setting
``LORABUILD_SCRIPT_WRAPPER`` names it. kohya's modules are imported with
:func:`importlib.import_module` at run time: lorabuild never imports kohya's Python stack.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys
from pathlib import Path
from typing import Any

KEEP_KOHYA_DECODER = "TINYBLIP_KEEP_KOHYA_DECODER"
"""Set to leave kohya's BLIP decoder as it is (a test shows that it still stops)."""

VISION = {"embed_dim": 32, "depth": 1, "num_heads": 2}
"""The tiny image encoder (BLIP-large: 1024 wide, 24 blocks, 16 heads)."""

TEXT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
"""The tiny text decoder (kohya's med_config.json: BERT-base, 768 wide, 12 layers)."""


def shrink(finetune: Path) -> Any:
    """Import kohya's ``blip.blip`` from ``finetune`` and shrink it (see the module); return it."""
    for path in (str(finetune.parent), str(finetune)):
        if path not in sys.path:
            sys.path.insert(0, path)
    blip: Any = importlib.import_module("blip.blip")
    vit: Any = importlib.import_module("blip.vit")

    def create_vit(
        name: str,
        image_size: int,
        use_grad_checkpointing: bool = False,
        ckpt_layer: int = 0,
        drop_path_rate: float = 0,
    ) -> tuple[Any, int]:
        encoder = vit.VisionTransformer(img_size=image_size, patch_size=16, **VISION)
        return encoder, VISION["embed_dim"]

    base = blip.BertConfig

    class TinyBertConfig(base):  # type: ignore[misc, valid-type]
        @classmethod
        def from_json_file(cls, path: str) -> Any:
            config = base.from_json_file(path)
            for key, value in TEXT.items():
                setattr(config, key, value)
            config.vocab_size = len(blip.init_tokenizer())
            return config

    blip.create_vit = create_vit
    blip.BertConfig = TinyBertConfig
    if not os.environ.get(KEEP_KOHYA_DECODER):
        generation: Any = importlib.import_module("transformers.generation")

        class GeneratingDecoder(blip.BertLMHeadModel, generation.GenerationMixin):  # type: ignore[misc]
            """kohya's decoder with ``generate()``, which transformers 4.50+ no longer gives it."""

        blip.BertLMHeadModel = GeneratingDecoder
    return blip


def write_weights(out: Path, sd_scripts: Path) -> None:
    """Save a random-weight tiny BLIP captioner as kohya's ``--caption_weights`` reads it."""
    torch: Any = importlib.import_module("torch")
    blip = shrink(sd_scripts / "finetune")
    torch.manual_seed(0)
    config = sd_scripts / "finetune" / "blip" / "med_config.json"
    model = blip.blip_decoder(pretrained="", image_size=384, vit="large", med_config=str(config))
    torch.save({"model": model.state_dict()}, str(out))


def main(argv: list[str]) -> None:
    """Run ``argv[0]`` (kohya's BLIP script) shrunk, or write weights (``--write-weights OUT SD_SCRIPTS``)."""
    if argv[:1] == ["--write-weights"]:
        write_weights(Path(argv[1]), Path(argv[2]))
        return
    script = os.path.abspath(argv[0])
    shrink(Path(script).parent)
    sys.argv = [script, *argv[1:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
