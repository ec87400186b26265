"""The user's own scoring weights (``[pick] clip_model``, ``aesthetic_model``), checked from their files alone.

A CLIP folder is what ``transformers.CLIPModel.from_pretrained`` and its tokenizer and image
processor read offline: ``config.json`` (a ``clip`` model), the weights (``model.safetensors``,
``pytorch_model.bin`` or a sharded index of either), the tokenizer (``tokenizer.json``, or
``vocab.json`` and ``merges.txt``) and ``preprocessor_config.json``. The aesthetic head is the
LAION improved-aesthetic-predictor's MLP (``layers.N.weight`` and ``.bias``, linear layers from
the CLIP image embedding down to one number), as ``.safetensors`` or as torch's ``.pth``.

Everything here reads JSON and file headers only, in about a millisecond: the check never
imports torch. A ``.pth`` file's tensor shapes are read by unpickling its ``data.pkl`` with a
stand-in for each torch class (any other class is refused, so nothing in the file runs). The
models themselves are loaded by :mod:`lorabuild.kohya.clipscore` in kohya's Python.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorabuild.render.safetensors_header import HeaderError, read_header

CLIP_HOWTO = (
    "copy a whole CLIP model folder from the Hugging Face Hub on a machine with network, e.g. "
    "`huggingface-cli download openai/clip-vit-large-patch14 --local-dir FOLDER` "
    "(lorabuild never downloads)"
)
AESTHETIC_HOWTO = (
    "use the LAION improved-aesthetic-predictor's head for your CLIP, e.g. sac+logos+ava1-l14-linearMSE.pth "
    "for ViT-L/14 (github.com/christophschuhmann/improved-aesthetic-predictor; lorabuild never downloads)"
)
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
"""What ``from_pretrained`` loads the weights from, in its order of preference."""


@dataclass(frozen=True)
class ClipFolder:
    """A CLIP folder that looks loadable.

    Attributes:
        folder: The folder.
        embed_dim: The width of its image and text embeddings (768 for ViT-L/14).
        files: The files that decide the model (their size and mtime key the scores' cache).
    """

    folder: Path
    embed_dim: int
    files: tuple[Path, ...]


@dataclass(frozen=True)
class AestheticHead:
    """An aesthetic head that looks loadable.

    Attributes:
        file: The file.
        input_width: The embedding width its first layer takes.
        layers: Each linear layer's ``(outputs, inputs)``.
    """

    file: Path
    input_width: int
    layers: tuple[tuple[int, int], ...]


def probe_clip(folder: Path) -> ClipFolder | str:
    """What ``folder`` holds, or a sentence saying what is missing or wrong and how to get it."""
    if not folder.exists():
        return f"folder not found: {CLIP_HOWTO}"
    if not folder.is_dir():
        return f"is a file, not a folder: name the CLIP model's folder (config.json and the weights beside it); {CLIP_HOWTO}"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"has no config.json: {CLIP_HOWTO}"
    except (OSError, ValueError) as exc:
        return f"config.json cannot be read as JSON ({exc}): {CLIP_HOWTO}"
    if not isinstance(config, dict) or config.get("model_type") != "clip":
        kind = config.get("model_type") if isinstance(config, dict) else None
        return (
            f"config.json is not a CLIP model's (model_type {kind!r}, not 'clip'; a text or vision "
            f"encoder alone cannot score prompts): {CLIP_HOWTO}"
        )
    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        return f"has no weights (model.safetensors or pytorch_model.bin): {CLIP_HOWTO}"
    lacking = []
    if not (folder / "tokenizer.json").is_file():
        lacking += [name for name in ("vocab.json", "merges.txt") if not (folder / name).is_file()]
        if lacking:
            lacking = [f"tokenizer.json (or {' and '.join(lacking)})"]
    if not (folder / "preprocessor_config.json").is_file():
        lacking.append("preprocessor_config.json")
    if lacking:
        return f"has no {' and no '.join(lacking)}: {CLIP_HOWTO}"
    embed_dim = config.get("projection_dim", 512)  # CLIPConfig's default
    if weights.name == "model.safetensors":
        try:
            fields = read_header(weights).fields
        except (HeaderError, OSError) as exc:
            return f"model.safetensors cannot be read ({exc}): {CLIP_HOWTO}"
        projections = {
            name: _shape(fields.get(f"{name}.weight")) for name in ("visual_projection", "text_projection")
        }
        absent = [f"{name}.weight" for name, shape in projections.items() if shape is None]
        if absent:
            return f"model.safetensors has no {' and no '.join(absent)}: not a whole CLIPModel; {CLIP_HOWTO}"
        embed_dim = projections["visual_projection"][0]  # type: ignore[index]
    if not isinstance(embed_dim, int) or embed_dim < 1:
        return f"config.json's projection_dim is {embed_dim!r}, not a width: {CLIP_HOWTO}"
    files = tuple(folder / name for name in sorted(_names(folder)) if name.endswith(_MODEL_SUFFIXES))
    return ClipFolder(folder, embed_dim, files)


_MODEL_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")


def _names(folder: Path) -> list[str]:
    try:
        return [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []


def _shape(entry: Any) -> tuple[int, ...] | None:
    if isinstance(entry, Mapping):
        shape = entry.get("shape")
        if isinstance(shape, list) and all(isinstance(n, int) for n in shape):
            return tuple(shape)
    return None


def probe_aesthetic(file: Path) -> AestheticHead | str:
    """The head's layers, or a sentence saying what is wrong with ``file`` and what to use."""
    if not file.exists():
        return f"file not found: {AESTHETIC_HOWTO}"
    if file.is_dir():
        return f"is a folder: name the head's .pth or .safetensors file itself; {AESTHETIC_HOWTO}"
    try:
        if file.suffix.lower() == ".safetensors":
            shapes = {k: s for k, v in read_header(file).fields.items() if (s := _shape(v)) is not None}
        else:
            shapes = torch_shapes(file)
    except (HeaderError, OSError, ValueError) as exc:
        return f"cannot be read ({exc}): {AESTHETIC_HOWTO}"
    return _head(file, shapes)


def _head(file: Path, shapes: Mapping[str, Sequence[int]]) -> AestheticHead | str:
    indices = sorted(
        int(name.split(".")[1])
        for name in shapes
        if name.startswith("layers.") and name.endswith(".weight") and name.split(".")[1].isdigit()
    )
    if not indices:
        names = ", ".join(sorted(shapes)[:4]) or "none"
        return f"has no layers.N.weight tensors (it holds {names}): not an aesthetic head; {AESTHETIC_HOWTO}"
    layers: list[tuple[int, int]] = []
    for index in indices:
        weight = tuple(shapes[f"layers.{index}.weight"])
        bias = shapes.get(f"layers.{index}.bias")
        if len(weight) != 2 or (bias is not None and tuple(bias) != (weight[0],)):
            return f"layers.{index} is not a linear layer (weight {list(weight)}): not an aesthetic head; {AESTHETIC_HOWTO}"
        if layers and layers[-1][0] != weight[1]:
            return (
                f"layers.{index} takes {weight[1]} numbers but the layer before gives {layers[-1][0]}: "
                f"not an aesthetic head; {AESTHETIC_HOWTO}"
            )
        layers.append((weight[0], weight[1]))
    if layers[-1][0] != 1:
        return f"its last layer gives {layers[-1][0]} numbers, not one score: not an aesthetic head; {AESTHETIC_HOWTO}"
    return AestheticHead(file, layers[0][1], tuple(layers))


class _Stand:
    """Stands for a torch storage class in a checkpoint's pickle."""


def _rebuild_tensor(storage: Any, offset: int, size: Sequence[int], *rest: Any) -> tuple[int, ...]:
    return tuple(size)


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    return data


class _ShapeUnpickler(pickle.Unpickler):
    """Unpickles a torch ``state_dict`` into ``{name: shape}``, running nothing from the file."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return _Stand
        raise pickle.UnpicklingError(f"holds a {module}.{name}, not only tensors")

    def persistent_load(self, pid: Any) -> Any:
        return None


def torch_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """The tensors' names and shapes in a ``torch.save``'d state dict, without torch.

    Raises:
        ValueError: Not torch's zip format, or a pickle with more than tensors in it.
        OSError: The file cannot be read.
    """
    try:
        with zipfile.ZipFile(file) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                raise ValueError("no data.pkl inside: not a torch.save file")
            data = archive.read(name)
    except zipfile.BadZipFile:
        raise ValueError(
            "not torch's zip format (saved by torch before 1.6?): re-save it with torch.save or as .safetensors"
        ) from None
    try:
        loaded = _ShapeUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError) as exc:
        raise ValueError(f"its pickle {exc}") from None
    if not isinstance(loaded, Mapping):
        raise ValueError("it holds no state dict")
    return {str(k): v for k, v in loaded.items() if isinstance(v, tuple)}
