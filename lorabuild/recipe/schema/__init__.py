"""The recipe schema: one pydantic model per TOML table.

Key names follow kohya's option names where kohya has one (``clip_skip``, ``min_bucket_reso``,
``save_every_n_epochs``), except where the tutorial's concepts read better (``trigger``,
``repeats``, ``source``). Every model forbids unknown keys, so a typo is an error (the loader
adds a "did you mean"). Relative paths are resolved against the recipe file's folder by the
loader (see :data:`RecipePath`).

Rules that involve several fields, or that only warn, are not validators here: they live in
:mod:`lorabuild.rules`, one function each, so that every problem is reported at once and
warnings can be told apart from errors.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from lorabuild.problems import did_you_mean
from lorabuild.recipe.accelerate import check_accelerate_args
from lorabuild.render.quoting import QuotingError, env_name, sbatch_line_problem


_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\- ]*$"


class Recipe(_Table):
    """A lorabuild recipe: everything needed to build one LoRA."""

    name: str = Field(
        max_length=100,
        description="Output name (kohya output_name): files are saved as NAME-000001.safetensors … "
        "Letters, digits, '.', '_', '-' and spaces.",
    )
    title: str | None = Field(
        None, min_length=1, description="Human title written into the LoRA's metadata (the name when unset)."
    )
    description: str | None = Field(None, description="Description written into the LoRA's metadata.")
    author: str | None = Field(None, description="Author written into the LoRA's metadata.")
    model: ModelSection
    dataset: DatasetSection
    captions: CaptionRules = Field(
        default_factory=CaptionRules, description="Caption rules for every subset."
    )
    images: ImagesSection = Field(
        default_factory=ImagesSection,
        description="Image checks and the fixes made in staged copies (EXIF orientation, transparency, "
        "formats kohya cannot read).",
    )
    network: NetworkSection = Field(default_factory=NetworkSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    launch: LaunchSection = Field(default_factory=LaunchSection)
    install: InstallSection = Field(
        default_factory=InstallSection,
        description="What lorabuild install copies into the webui's or ComfyUI's LoRA folder, and its card.",
    )
    kohya: dict[str, KohyaValue] = Field(
        default_factory=dict,
        description="Any other kohya option as option = value; checked against the options the pinned "
        "kohya accepts.",
    )

    @field_validator("name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if not re.fullmatch(_NAME_PATTERN, value) or value != value.strip():
            raise ValueError(
                f"must be usable as a file name: letters, digits, '.', '_', '-' and inner spaces (got {value!r})"
            )
        return value

    def rules_for(self, subset: Subset) -> CaptionRules:
        """The caption rules that apply to ``subset``."""
        return subset.captions or self.captions
