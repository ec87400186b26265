"""The model family a source is for: from the script it names, the options it sets, or the base
model's header when the file is on this machine."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lorabuild.importer.model import Imported, ImportFailed, is_rooted
from lorabuild.kohya import families
from lorabuild.kohya import options as kohya_options
from lorabuild.probe.modelfile import probe_model


def infer_family(
    flat: Mapping[str, object], script: str | None, imp: Imported, base: Path | None = None
) -> str | None:
    """The recipe's family from the script's name and the options, or None when nothing tells.

    Args:
        flat: kohya's options.
        script: The training script the source names, or None.
        imp: Where a TODO goes when nothing tells.
        base: The folder a relative ``pretrained_model_name_or_path`` is relative to: when the
            options alone do not tell, the model's header is read (as ``lorabuild check`` would).
    """
    model_type = flat.get("model_type")
    if script is not None:
        candidates = [f for f in families.ALL if f.train_script == script]
        if not candidates:
            trains = ", ".join(sorted({f.train_script for f in families.ALL}))
            raise ImportFailed(
                imp.source,
                f"{script} trains a model family lorabuild does not build (it runs {trains})",
            )
    else:
        flow = any(flat.get(k) is not None for k in ("model_type", "clip_l", "t5xxl", "ae")) or "flux" in str(
            flat.get("network_module", "")
        )
        sdxl_only = set(kohya_options.options("sdxl_train_network.py")) - set(
            kohya_options.options("train_network.py")
        )
        if flat.get("qwen3") is not None or flat.get("llm_adapter_path") is not None:
            candidates = [f for f in families.ALL if f.train_script == "anima_train_network.py"]
        elif flat.get("gemma2") is not None or flat.get("system_prompt") is not None:
            candidates = [f for f in families.ALL if f.train_script == "lumina_train_network.py"]
        elif flat.get("byt5") is not None:
            candidates = [f for f in families.ALL if f.train_script == "hunyuan_image_train_network.py"]
        elif flat.get("clip_g") is not None:
            candidates = [f for f in families.ALL if f.train_script == "sd3_train_network.py"]
        elif flow:
            candidates = [f for f in families.ALL if f.model_type is not None]
        elif any(k in sdxl_only for k in flat):
            candidates = [f for f in families.ALL if f.train_script == "sdxl_train_network.py"]
        elif flat.get("v2"):
            candidates = [f for f in families.ALL if f.v2]
        else:
            detected = _from_header(flat.get("pretrained_model_name_or_path"), base)
            if detected is not None:
                imp.comments["model.family"] = "read from the base model's header"
                return detected
            imp.todo(
                "model.family",
                "the source does not tell the model family: lorabuild reads it from the base model's "
                "header (or set model.family)",
            )
            return None
    if len(candidates) > 1:
        if any(f.model_type for f in candidates):
            wanted = model_type or "flux"  # kohya's --model_type default
            candidates = [f for f in candidates if f.model_type == wanted] or candidates
        else:
            candidates = [f for f in candidates if f.v2 == bool(flat.get("v2"))] or candidates
    return candidates[0].name


def _from_header(model: object, base: Path | None) -> str | None:
    """The family the base model's header tells, when the file is here."""
    if not isinstance(model, str) or not model:
        return None
    path = Path(model) if is_rooted(model) or base is None else base / model
    if not path.exists():
        return None
    family = probe_model(path).family
    return family if family in families.names() else None
