"""What a base model file is, read from its header without loading the weights.

An SDXL checkpoint handed to the SD1.5 trainer (or the reverse) fails in kohya only after minutes
of loading, with a state_dict size mismatch. The tensor names tell the family at once:

* ``.safetensors``: the JSON header at the start of the file lists every tensor name.
* ``.ckpt``/``.pt`` (zip-based torch pickles): the tensor names are strings inside
  ``data.pkl``; they are read with :mod:`pickletools` opcode by opcode, never unpickled, so
  nothing in the file runs.
* diffusers folders: ``model_index.json`` and the text encoder's ``config.json``.
"""

from __future__ import annotations

import json
import pickletools
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lorabuild.kohya import families
from lorabuild.kohya.families import ModelHeader

# Tensor-name prefixes of models lorabuild does not train (the families it trains recognise their
# own: lorabuild.kohya.families), in the order that decides between them.
# An SD3 MMDiT without the model.diffusion_model. prefix is SD3 (lorabuild.kohya.families.sd3 is the
# prefixed single file), but kohya's loader reads the prefixed names only (sd3_utils.load_mmdit).
# A Lumina 2 DiT in diffusers' layout (Lumina2Transformer2DModel: time_caption_embed.*, attn.to_q...)
# is no Lumina 2 model for kohya: lumina_util.load_lumina_model loads Alpha-VLLM's names with
# strict=False and never calls its convert_diffusers_sd_to_alpha_vllm, so every weight stays empty.
_UNTRAINED: tuple[tuple[str, str], ...] = (
    ("joint_blocks.", "sd3-mmdit"),
    ("time_caption_embed.", "lumina2-diffusers"),
    ("lora_unet_", "lora"),
    ("lora_te", "lora"),
)

UNTRAINED_LABELS = {
    "sd3-mmdit": "SD3 MMDiT-only (without the model.diffusion_model. prefix that kohya's SD3 loader reads)",
    "lumina2-diffusers": "Lumina 2 DiT in diffusers' layout (kohya's Lumina loader reads only Alpha-VLLM's, as in "
    "lumina-image-2.safetensors or Comfy-Org's lumina_2_model_bf16.safetensors, and would load none of its weights)",
}
"""How messages name the base models lorabuild recognises but does not train."""

COMPONENT_LABELS = {
    "clip_l": "the CLIP-L text encoder",
    "clip_g": "the CLIP-G text encoder",
    "t5xxl": "the T5-XXL text encoder",
    "ae": "the FLUX autoencoder",
    "vae": "an SD VAE",
    "qwen3": "the Qwen3 text encoder",
    "qwen_image_vae": "the Qwen-Image VAE",
    "qwen2_5_vl": "the Qwen2.5-VL text encoder",
    "byt5": "the byT5 text encoder",
    "hunyuan_vae": "the HunyuanImage-2.1 VAE",
    "gemma2": "the Gemma-2 text encoder",
}
"""What a model file that is not a base model is, as messages name it (:func:`component_from_names`)."""

# A CLIP text encoder in transformers' layout (kohya's load_clip_l state dict; SD3's clip_g too).
_CLIP_LAYER = "text_model.encoder.layers."
# Qwen3's decoder layers (transformers' Qwen3Model, bare or under "model."): its attention has
# q_norm, which Qwen2's has not (library/anima_utils.py load_qwen3_text_encoder strips "model.").
_QWEN3_LAYER = ("model.layers.0.self_attn.q_norm.", "layers.0.self_attn.q_norm.")
# Gemma-2's decoder layers (transformers' Gemma2Model, bare, under "model." as ComfyUI's
# gemma_2_2b_fp16.safetensors, or Neta-Lumina's prefix; library/lumina_util.py load_gemma2 strips each):
# the norm before its feed-forward, which Gemma 1, Qwen and Llama have not.
_GEMMA2_LAYER = tuple(
    f"{prefix}layers.0.pre_feedforward_layernorm."
    for prefix in ("", "model.", "text_encoders.gemma2_2b.transformer.model.")
)
# The Qwen-Image VAE's mid-block attention (one fused to_qkv), in ComfyUI's layout or the official
# one (library/qwen_image_autoencoder_kl.py convert_comfyui_state_dict maps the first to the second).
_QWEN_IMAGE_VAE = ("decoder.middle.1.to_qkv.", "decoder.mid_block.attentions.0.to_qkv.")

_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class ModelInfo:
    """What the base model is.

    Attributes:
        path: The model path.
        kind: ``file``, ``diffusers`` (a folder), ``missing`` or ``unknown`` (exists, not a model).
        family: A family's name (``sd15``, ``flux``...), ``sd3``, ``lora`` (a LoRA, not a base
            model) or None when the header does not tell.
        v_prediction: True when the model says it predicts v (diffusers scheduler config).
        detail: Why the family could not be told, or where it was read from.
        component: What a file that is no base model holds (``clip_l``...), or None.
        bundled: The ``[model]`` keys of the model files a single-file base model holds itself
            (SD3's text encoders in SAI's layout: :attr:`lorabuild.kohya.families.ModelFile.bundled`).
    """

    path: Path
    kind: str
    family: str | None
    v_prediction: bool = False
    detail: str = ""
    component: str | None = None
    bundled: frozenset[str] = frozenset()

    @property
    def what(self) -> str:
        """What the file is, for messages (``the T5-XXL text encoder``, ``a FLUX.1 model``)."""
        if self.component is not None:
            return COMPONENT_LABELS[self.component]
        if self.family == "lora":
            return "a LoRA"
        if self.family is not None:
            label = UNTRAINED_LABELS.get(self.family) or families.get(self.family).label
            return f"a {label} model"
        return "a file lorabuild cannot identify"


def probe_model(path: Path) -> ModelInfo:
    """Read the header of the base model at ``path`` (file or diffusers folder)."""
    if path.is_dir():
        return _probe_diffusers(path)
    if not path.exists():
        return ModelInfo(path, "missing", None, detail="not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            names = _safetensors_names(path)
        elif zipfile.is_zipfile(path):
            names = _pickle_strings(path)
        else:
            return ModelInfo(
                path, "file", None, detail="an old-style (non-zip) checkpoint; its header cannot be read"
            )
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        return ModelInfo(path, "unknown", None, detail=f"unreadable header: {exc}")
    family = family_from_names(names)
    component = None if family else component_from_names(names)
    if component is not None:
        return ModelInfo(
            path, "file", None, detail=f"{COMPONENT_LABELS[component]}, not a base model", component=component
        )
    return ModelInfo(
        path,
        "file",
        family,
        detail="" if family else "no known tensor names in its header",
        bundled=bundled_from_names(names),
    )


def bundled_from_names(names: Iterable[str]) -> frozenset[str]:
    """The ``[model]`` keys of the model files a checkpoint carries inside it, by their tensor-name prefixes."""
    header = ModelHeader(tensor_names=tuple(names))
    return frozenset(
        f.key
        for family in families.ALL
        for f in family.model_files
        if f.bundled is not None and header.has_prefix((f.bundled,))
    )


def family_from_names(names: Iterable[str]) -> str | None:
    """The family a checkpoint's tensor names tell: a family lorabuild trains first, else another."""
    header = ModelHeader(tensor_names=tuple(names))
    family = families.detect(header)
    if family is not None:
        return family.name
    found = {kind for prefix, kind in _UNTRAINED if header.has_prefix((prefix,))}
    return next((kind for _, kind in _UNTRAINED if kind in found), None)


def component_from_names(names: Iterable[str]) -> str | None:
    """What a file that is no base model holds, from its tensor names: a text encoder or an autoencoder.

    Told apart as kohya's loaders would load them: CLIP in transformers' layout (more than 12
    layers is CLIP-G), Qwen2.5-VL's language model with its vision tower (``model.layers.*`` and
    ``visual.*``; hunyuan_image_text_encoder.load_qwen2_5_vl), T5's ``encoder.block.*`` (exactly 12
    blocks is byT5-small, HunyuanImage's glyph encoder; T5-XXL has 24), Qwen3's normed attention
    (``layers.0.self_attn.q_norm``), Gemma-2's norm before its feed-forward
    (``layers.0.pre_feedforward_layernorm``; lumina_util.load_gemma2), the Qwen-Image VAE's fused mid-block attention (``to_qkv``), and
    an autoencoder's ``encoder.down.*``: six levels is HunyuanImage-2.1's 32x VAE
    (library/hunyuan_image_vae.py), otherwise ``quant_conv`` tells SD's VAE from FLUX's.
    """
    names = list(names)
    if any(n.startswith("visual.") for n in names) and any(n.startswith("model.layers.") for n in names):
        return "qwen2_5_vl"
    clip_layers = {n[len(_CLIP_LAYER) :].split(".", 1)[0] for n in names if n.startswith(_CLIP_LAYER)}
    if clip_layers:
        deepest = max((int(i) for i in clip_layers if i.isdigit()), default=0)
        return "clip_g" if deepest >= 12 else "clip_l"
    if any(n.startswith(("encoder.block.", "shared.")) for n in names):
        return "byt5" if _deepest(names, "encoder.block.") == _BYT5_BLOCKS - 1 else "t5xxl"
    if any(n.startswith(_GEMMA2_LAYER) for n in names):
        return "gemma2"
    if any(n.startswith(_QWEN3_LAYER) for n in names):
        return "qwen3"
    if any(n.startswith(_QWEN_IMAGE_VAE) for n in names):
        return "qwen_image_vae"
    if any(n.startswith("encoder.down.") for n in names) and any(n.startswith("decoder.up.") for n in names):
        if _deepest(names, "encoder.down.") >= _HUNYUAN_VAE_LEVELS - 1:
            return "hunyuan_vae"
        return "vae" if any(n.startswith("quant_conv.") for n in names) else "ae"
    return None


_BYT5_BLOCKS = 12  # byT5-small's encoder (hunyuan_image_text_encoder.load_byt5: num_layers 12)
_HUNYUAN_VAE_LEVELS = 6  # block_out_channels (128, 256, 512, 512, 1024, 1024); SD's and FLUX's have 4


def _deepest(names: Iterable[str], prefix: str) -> int:
    """The largest block number right after ``prefix`` in ``names`` (-1 when none)."""
    numbers = (n[len(prefix) :].split(".", 1)[0] for n in names if n.startswith(prefix))
    return max((int(i) for i in numbers if i.isdigit()), default=-1)


def _safetensors_names(path: Path) -> list[str]:
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("file too short for a safetensors header")
        (size,) = struct.unpack("<Q", head)
        if size > _SAFETENSORS_MAX_HEADER:
            raise ValueError("safetensors header length is implausible")
        header = json.loads(f.read(size))
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not a JSON object")
    return [k for k in header if k != "__metadata__"]


def _pickle_strings(path: Path) -> list[str]:
    """Strings in a torch zip checkpoint's pickle, read opcode by opcode without unpickling."""
    with zipfile.ZipFile(path) as archive:
        pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ValueError("no data.pkl inside the zip")
        data = archive.read(pkl)
    strings = []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8") and isinstance(
            arg, str
        ):
            strings.append(arg)
    return strings


def _probe_diffusers(path: Path) -> ModelInfo:
    index = path / "model_index.json"
    if not index.is_file():
        return ModelInfo(path, "unknown", None, detail="a folder without model_index.json")
    try:
        pipeline = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
    except (OSError, ValueError) as exc:
        return ModelInfo(path, "unknown", None, detail=f"model_index.json cannot be read: {exc}")
    v_prediction = (
        _read_json(path / "scheduler" / "scheduler_config.json").get("prediction_type") == "v_prediction"
    )
    hidden = _read_json(path / "text_encoder" / "config.json").get("hidden_size")
    header = ModelHeader(
        pipeline=str(pipeline),
        components=_subfolders(path),
        text_encoder_width=hidden if isinstance(hidden, int) else None,
    )
    family = families.detect(header)
    if family is not None:
        return ModelInfo(path, "diffusers", family.name, v_prediction, detail=pipeline)
    return ModelInfo(path, "diffusers", None, v_prediction, detail=f"{pipeline}, text encoder size {hidden}")


def _subfolders(path: Path) -> frozenset[str]:
    try:
        return frozenset(entry.name for entry in path.iterdir() if entry.is_dir())
    except OSError:
        return frozenset()


def _read_json(path: Path) -> dict[str, object]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
