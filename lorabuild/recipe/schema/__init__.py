"""The recipe schema: one pydantic model per TOML table; this module holds the root, :class:`Recipe`.

Key names follow kohya's option names where kohya has one (``clip_skip``, ``min_bucket_reso``,
``save_every_n_epochs``), except where the tutorial's concepts read better (``trigger``,
``repeats``, ``source``). Every model forbids unknown keys, so a typo is an error (the loader
adds a "did you mean"). Relative paths are resolved against the recipe file's folder by the
loader (see :data:`RecipePath`).

Rules that involve several fields, or that only warn, are not validators here: they live in
:mod:`lorabuild.rules`, one function each, so that every problem is reported at once and
warnings can be told apart from errors.

The tables live in modules by concern, as axolotl splits its schemas:

- :mod:`~lorabuild.recipe.schema.fields`: the shared value types (:data:`RecipePath`, :data:`Line`,
  kohya's vocabularies) and the tables' base model.
- :mod:`~lorabuild.recipe.schema.training`: ``[model]``, ``[network]``, ``[optimizer]``, ``[training]``.
- :mod:`~lorabuild.recipe.schema.flow`: ``[flow]``, the flow-matching families' (FLUX.1, Chroma) settings.
- :mod:`~lorabuild.recipe.schema.dataset`: ``[dataset]`` and its subsets, ``[captions]``, ``[images]``.
- :mod:`~lorabuild.recipe.schema.launch`: ``[launch]`` with ``[launch.deepspeed]`` and ``[launch.slurm]``.
- :mod:`~lorabuild.recipe.schema.results`: ``[evaluate]``, ``[pick]`` and ``[install]``.

Their names are re-exported here (:data:`__all__`), unlike other packages' ``__init__``: the
schema is one vocabulary, whose models are named after the TOML tables they check, so importers
name a table (``from lorabuild.recipe.schema import Recipe, ImagesSection``) and not the module
that happens to define it; the split is for the schema's readers, and moving a table between
these modules moves no importer.

May import: :mod:`lorabuild.recipe.accelerate`, :mod:`lorabuild.render`, :mod:`lorabuild.problems`.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from lorabuild.recipe.schema.dataset import (
    AutotagSection,
    CaptionRules,
    DatasetSection,
    ImagesSection,
    RemoveBackground,
    Subset,
)
from lorabuild.recipe.schema.fields import (
    Family,
    KohyaValue,
    Line,
    RecipePath,
    Sampler,
    Scheduler,
    _Table,
    line_problem,
)
from lorabuild.recipe.schema.flow import FlowSection, PredictionType, TimestepSampling
from lorabuild.recipe.schema.launch import (
    MANAGED_ACCELERATE_OPTIONS,
    DeepSpeedSection,
    LaunchSection,
    OffloadDevice,
    SlurmSection,
)
from lorabuild.recipe.schema.results import EvaluateSection, InstallSection, PickSection
from lorabuild.recipe.schema.training import ModelSection, NetworkSection, OptimizerSection, TrainingSection

__all__ = [
    "MANAGED_ACCELERATE_OPTIONS",
    "AutotagSection",
    "CaptionRules",
    "DatasetSection",
    "DeepSpeedSection",
    "EvaluateSection",
    "Family",
    "FlowSection",
    "ImagesSection",
    "InstallSection",
    "KohyaValue",
    "LaunchSection",
    "Line",
    "ModelSection",
    "NetworkSection",
    "OffloadDevice",
    "OptimizerSection",
    "PickSection",
    "PredictionType",
    "Recipe",
    "RecipePath",
    "RemoveBackground",
    "Sampler",
    "Scheduler",
    "SlurmSection",
    "Subset",
    "TimestepSampling",
    "TrainingSection",
    "line_problem",
]


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
    flow: FlowSection = Field(
        default_factory=FlowSection,
        description="FLUX.1 and Chroma: guidance, timestep sampling and prediction type (family defaults apply).",
    )
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    pick: PickSection = Field(
        default_factory=PickSection,
        description="Thresholds of the grid's scores and the length of lorabuild pick's shortlist.",
    )
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

    def remove_background_for(self, subset: Subset) -> RemoveBackground | None:
        """The background removal that applies to ``subset`` (None: its images are not cut out)."""
        if subset.remove_background is False:
            return None
        return subset.remove_background or self.images.remove_background
