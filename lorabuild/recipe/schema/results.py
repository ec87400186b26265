"""What becomes of the trained LoRA files: ``[evaluate]`` (samples and the epoch x weight grid),
``[pick]`` (the thresholds of the grid's scores and the shortlist) and ``[install]`` (the epoch
copied into the webui or ComfyUI, and its card).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from lorabuild.recipe.schema.fields import Line, RecipePath, Sampler, _Table


class EvaluateSection(_Table):
    """``[evaluate]``: prompts for samples during training and for the epoch x weight grid."""

    prompts: list[Line] = Field(
        default_factory=list, description="Prompts; {trigger} is replaced by the first subset's trigger."
    )
    negative_prompt: Line = Field("", description="Negative prompt for every image.")
    seeds: list[Annotated[int, Field(ge=0, le=2**32 - 1)]] = Field(
        default_factory=lambda: [1234], min_length=1, description="Seeds, one image each."
    )
    weights: list[float] = Field(
        default_factory=lambda: [0.6, 0.8, 1.0], min_length=1, description="LoRA weights to compare."
    )
    epochs: Literal["all"] | list[int] = Field("all", description='Epochs to compare: "all" or a list.')
    sampler: Sampler = Field("euler_a", description="Sampler (kohya sample_sampler).")
    steps: int = Field(28, ge=1, le=1000, description="Sampling steps.")
    cfg_scale: float = Field(
        7.0,
        gt=0,
        description="CFG scale (FLUX.1 and Chroma: --c of kohya's inference, default 1.0 for FLUX.1, which "
        "its distilled guidance steers instead, and 4.0 for Chroma).",
    )
    guidance: float | None = Field(
        None,
        ge=0,
        description="FLUX.1/Chroma only: the inference guidance (kohya's --g; the family gives 3.5 for "
        "FLUX.1-dev's distilled guidance, 0.0 for Chroma). Not [flow] guidance_scale, which is the training's.",
    )
    width: int | None = Field(
        None, ge=64, multiple_of=8, description="Image width; the training width if unset."
    )
    height: int | None = Field(
        None, ge=64, multiple_of=8, description="Image height; the training height if unset."
    )
    baseline: bool = Field(True, description="Add a column without the LoRA.")
    sample_every_n_epochs: int | None = Field(
        None,
        ge=1,
        description="Render the prompts during training every N epochs (kohya sample_every_n_epochs).",
    )


class PickSection(_Table):
    """``[pick]``: the grid's scores (``lorabuild pick``, the report) and the shortlist they make.

    Distances are between 64-bit perceptual hashes (pHash, PyPI ``imagehash``): 0 is the same
    picture, about 32 two unrelated ones. The scores flag; the shortlist ranks what no flag
    rules out, by validation loss where the recipe has a split. A shortlist, not a verdict.
    """

    copy_distance: int = Field(
        6,
        ge=0,
        le=64,
        description="Memorisation: a grid cell whose pHash is at most this far from a training image's is a copy "
        "of it (its epoch x weight is ruled out), unless the no-LoRA baseline is as close.",
    )
    collapse_distance: float = Field(
        6.0,
        ge=0,
        le=64,
        description="Collapse: one prompt's cells across seeds whose mean pHash distance is at most this are one "
        "picture (ruled out), unless the baseline's seeds are as alike. Needs two seeds or more.",
    )
    effect_min: float = Field(
        3.0,
        ge=0,
        le=64,
        description="Effect: a weight whose cells are on average at most this far from the no-LoRA baseline of "
        "the same prompt and seed does nothing (ruled out). Needs evaluate.baseline.",
    )
    effect_max: float = Field(
        30.0,
        ge=0,
        le=64,
        description="Effect: at least this far from the baseline on average, the LoRA replaces the picture "
        "(a warning: ranked after the others, not ruled out).",
    )
    shortlist: int = Field(3, ge=1, le=50, description="Epoch x weight pairs on the shortlist.")
    likeness: bool = Field(
        True,
        description="Also score likeness to the training images with the packaged models that are installed "
        "(animeface: anime faces' hair and eye colours; dlib with face-recognition-models: photoreal "
        "faces' identity); never downloads a model.",
    )
    face_distance: float = Field(
        0.6,
        gt=0,
        le=2,
        description="Photoreal likeness: a cell whose most prominent face's dlib descriptor is further than this "
        "(Euclidean) from every training image's face shows another person (flagged; an epoch x weight where "
        "most faces do is ruled out). 0.6 is dlib's same-person threshold; lower is stricter.",
    )
    clip_model: RecipePath | None = Field(
        None,
        description="A local Hugging Face CLIP folder of your own (config.json, model.safetensors or "
        "pytorch_model.bin, tokenizer.json or vocab.json and merges.txt, preprocessor_config.json), e.g. "
        "a copy of openai/clip-vit-large-patch14: scores each cell's prompt adherence and its CLIP "
        "similarity to the training images. Run with kohya's Python (torch, transformers), strictly "
        "offline: never downloaded.",
    )
    aesthetic_model: RecipePath | None = Field(
        None,
        description="A LAION improved-aesthetic-predictor head (.pth or .safetensors: the MLP layers.N.weight "
        "and .bias on L2-normalised CLIP image embeddings, e.g. sac+logos+ava1-l14-linearMSE.pth for "
        "ViT-L/14): an aesthetic score per cell. Needs pick.clip_model, whose embedding width it must take.",
    )
    prompt_min: float = Field(
        0.18,
        ge=-1,
        le=1,
        description="CLIP prompt adherence: an epoch x weight whose cells' mean cosine between picture and "
        "prompt is under this ignores its prompts (a warning: ranked after the others). ViT-L/14 gives "
        "about 0.25 to 0.35 for a picture of its prompt. Needs pick.clip_model.",
    )
    aesthetic_min: float = Field(
        4.5,
        description="Aesthetic: an epoch x weight whose cells' mean aesthetic score (the LAION scale, about 1 "
        "to 10) is under this is warned about (ranked after the others). Needs pick.aesthetic_model.",
    )


class InstallSection(_Table):
    """``[install]``: the epoch ``lorabuild install`` copies into the webui or ComfyUI, and its card.

    The webui reads ``NAME.json`` beside ``NAME.safetensors`` for a LoRA's card (description, SD
    version, activation text, preferred weight, negative text, notes) and ``NAME.preview.png`` as
    its picture; ``embed_preview`` also puts the picture and the trigger into the installed copy's
    header. The install folders are machine settings: prefer ``--webui`` / ``--comfyui`` or
    ``LORABUILD_WEBUI`` / ``LORABUILD_COMFYUI`` over writing them into a shared recipe.
    """

    epoch: int | Literal["last", "suggested"] = Field(
        "last",
        description='The epoch to install: a saved epoch\'s number (the tutorial chose 8 from its grid), "last", '
        'or "suggested": the first of lorabuild pick\'s shortlist (its epoch, and its weight unless '
        "install.weight or --weight says otherwise). lorabuild install --epoch N overrides it.",
    )
    weight: float | None = Field(
        None,
        gt=0,
        le=2,
        description="Preferred weight on the webui's card (its slider goes to 2); the preview is the grid "
        "cell at this weight. Unset: the middle of evaluate.weights (0.8 with the defaults).",
    )
    webui: RecipePath | None = Field(
        None,
        description="The AUTOMATIC1111 webui folder (holding models/Lora) or its Lora folder; "
        "--webui and this key win over LORABUILD_WEBUI.",
    )
    comfyui: RecipePath | None = Field(
        None,
        description="The ComfyUI folder (holding models/loras) or its loras folder; "
        "--comfyui and this key win over LORABUILD_COMFYUI.",
    )
    notes: str = Field("", description="Notes on the webui's card (the build's provenance is added below).")
    negative_text: str = Field(
        "", description="Negative prompt the webui adds with the LoRA (its card's negative text)."
    )
    preview: Literal["grid", "none"] | RecipePath = Field(
        "grid",
        description='The cover picture: "grid" (the grid cell of the first prompt and seed at the chosen '
        'epoch and weight), an image file, or "none".',
    )
    embed_preview: bool = Field(
        False,
        description="Also write the preview picture (as ssmd_cover_images, which the webui and ComfyUI show "
        "when no preview file is beside the LoRA) and the trigger (as modelspec.trigger_phrase) into the "
        "installed copy's header, for UIs that read no sidecar files. Only the copy changes, never the "
        "build's file; the tensors stay byte for byte, so the webui's LoRA hash (sshs_model_hash) stays too, "
        "while the file's SHA-256 (Civitai's AutoV2) becomes the copy's.",
    )

    @field_validator("epoch", mode="before")
    @classmethod
    def _epoch(cls, value: Any) -> Any:
        # One message instead of one per member of the union.
        if value in ("last", "suggested") or (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1
        ):
            return value
        raise ValueError(
            f'must be a saved epoch\'s number (1 or more), "last" or "suggested" (got {value!r})'
        )

    @field_validator("preview", mode="before")
    @classmethod
    def _preview(cls, value: Any) -> Any:
        if isinstance(value, str | Path) and str(value).strip():
            return value
        raise ValueError(f'must be "grid", "none" or the path of an image file (got {value!r})')
