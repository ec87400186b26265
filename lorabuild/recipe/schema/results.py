"""What becomes of the trained LoRA files: ``[evaluate]`` (samples and the epoch x weight grid)
and ``[install]`` (the epoch copied into the webui or ComfyUI, and its card).
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


class InstallSection(_Table):
    """``[install]``: the epoch ``lorabuild install`` copies into the webui or ComfyUI, and its card.

    The webui reads ``NAME.json`` beside ``NAME.safetensors`` for a LoRA's card (description, SD
    version, activation text, preferred weight, negative text, notes) and ``NAME.preview.png`` as
    its picture; ``embed_preview`` also puts the picture and the trigger into the installed copy's
    header. The install folders are machine settings: prefer ``--webui`` / ``--comfyui`` or
    ``LORABUILD_WEBUI`` / ``LORABUILD_COMFYUI`` over writing them into a shared recipe.
    """

    epoch: int | Literal["last"] = Field(
        "last",
        description='The epoch to install: a saved epoch\'s number (the tutorial chose 8 from its grid) or "last". '
        "lorabuild install --epoch N overrides it; lorabuild report suggests the lowest validation loss.",
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
        if value == "last" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f'must be a saved epoch\'s number (1 or more) or "last" (got {value!r})')

    @field_validator("preview", mode="before")
    @classmethod
    def _preview(cls, value: Any) -> Any:
        if isinstance(value, str | Path) and str(value).strip():
            return value
        raise ValueError(f'must be "grid", "none" or the path of an image file (got {value!r})')
