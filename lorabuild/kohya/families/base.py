"""What a model family is to lorabuild: :class:`Family`, and the model header it is recognised by.

A family module (``sd15.py``...) builds one :class:`Family` named ``FAMILY``; every field must be
given (none has a default), so a new family says everything lorabuild needs to know about it in
one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Protocol

from lorabuild.kohya.animainfer import AnimaSettings
from lorabuild.kohya.fluxinfer import FluxSettings
from lorabuild.kohya.genimg import GenImgSettings
from lorabuild.kohya.gridrender import GridJob, GridRun
from lorabuild.kohya.hunyuaninfer import HunyuanSettings
from lorabuild.kohya.luminainfer import LuminaSettings
from lorabuild.kohya.sd3infer import Sd3Settings
from lorabuild.problems import Problem, error
from lorabuild.recipe.schema import KohyaValue, Recipe

FamilyRule = Callable[[Recipe], Iterable[Problem]]
"""A pre-flight rule only one family has: the recipe in, problems out (the caller knows the family)."""

NetworkModules = Mapping[str, tuple[str, str | None]]
"""Recipe ``network.module`` -> (kohya ``--network_module``, LyCORIS ``algo`` or None)."""

SD_NETWORK_MODULES: NetworkModules = MappingProxyType(
    {
        "lora": ("networks.lora", None),
        "dylora": ("networks.dylora", None),
        "locon": ("lycoris.kohya", "locon"),
        "loha": ("lycoris.kohya", "loha"),
        "lokr": ("lycoris.kohya", "lokr"),
    }
)
"""The networks kohya's ``train_network.py`` and ``sdxl_train_network.py`` train (LyCORIS's too)."""


class RenderSettings(
    GenImgSettings, FluxSettings, Sd3Settings, AnimaSettings, HunyuanSettings, LuminaSettings, Protocol
):
    """What every grid renderer may read from the grid's settings (the plan's ``GridSettings`` has it all)."""


class GridRenderer(Protocol):
    """How a family's epoch x weight grid is rendered: one kohya process per job of its split.

    :class:`lorabuild.kohya.genimg.GenImg` (SD1/SD2/SDXL),
    :class:`lorabuild.kohya.fluxinfer.FluxInference` (FLUX.1, Chroma),
    :class:`lorabuild.kohya.sd3infer.Sd3Inference` (SD3),
    :class:`lorabuild.kohya.luminainfer.LuminaInference` (Lumina 2; these three share
    :class:`lorabuild.kohya.interactive.InteractiveRenderer`),
    :class:`lorabuild.kohya.animainfer.AnimaInference` (Anima) and
    :class:`lorabuild.kohya.hunyuaninfer.HunyuanInference` (HunyuanImage 2.1) implement it; the grid
    stage drives each through :meth:`split`, :meth:`prepare` and :mod:`lorabuild.kohya.gridrender`'s
    vocabulary. The last two split a job into a process per LoRA setting
    (:func:`lorabuild.kohya.gridrender.job_per_lora_setting`: their scripts merge the LoRA into the
    model as they load it); the others render it whole (:func:`lorabuild.kohya.gridrender.one_job`).
    """

    SCRIPT: ClassVar[str]
    """The kohya script, inside the kohya checkout."""
    NAME: ClassVar[str]
    """How messages name it."""

    def split(self, job: GridJob) -> tuple[GridJob, ...]:
        """``job`` as the jobs one process each renders, in order (just ``job`` when one process can)."""
        ...

    def prepare(self, settings: RenderSettings, job: GridJob) -> GridRun:
        """The command, environment, input files and conversation that render one job of :meth:`split`."""
        ...


@dataclass(frozen=True)
class ModelFile:
    """A model file besides the base model that a family's trainer loads (FLUX's text encoders, AE).

    Attributes:
        key: The ``[model]`` key that names it, and the kohya option it compiles to (``clip_l``).
        label: How messages name it (``the CLIP-L text encoder``).
        component: What :func:`lorabuild.probe.modelfile.probe_model` must find in its header.
        example: A file name users download it as, for messages.
        bundled: The tensor-name prefix by which kohya finds a copy inside the base model (SD3's
            ``text_encoders.clip_l.transformer.``), or None. At the pinned commit kohya detects
            such a copy but loads none of it (sd3_utils strips only ``text_encoders.clip_l.``), so
            a base model holding one is an error (:func:`lorabuild.rules.model.model_files`).
        checkpoint_first: kohya takes the base model's copy over the file the key names (SD3's
            CLIP-G and T5-XXL: sd3_utils.load_clip_g, load_t5xxl; CLIP-L's file wins).
    """

    key: str
    label: str
    component: str
    example: str
    bundled: str | None = None
    checkpoint_first: bool = False


@dataclass(frozen=True)
class TokenizerCache:
    """How kohya lays out the tokenizers it reads from ``--tokenizer_cache_dir``, and what a missing one costs.

    Attributes:
        hub: The folder is a Hugging Face hub cache, one ``models--ORG--NAME`` folder per tokenizer
            (Lumina 2: ``AutoTokenizer.from_pretrained(id, cache_dir=...)``, library/strategy_lumina.py),
            rather than kohya's own ``ORG_NAME`` folders (library/strategy_base.py
            ``TokenizeStrategy._load_tokenizer``).
        note: What a message about a missing tokenizer adds (a gated repository needs a login), or "".
    """

    hub: bool = False
    note: str = ""

    def folder(self, repo_id: str) -> str:
        """The folder under ``--tokenizer_cache_dir`` that holds ``repo_id``'s tokenizer."""
        return "models--" + repo_id.replace("/", "--") if self.hub else repo_id.replace("/", "_")


KOHYA_CACHE = TokenizerCache()
"""kohya's own layout (``--tokenizer_cache_dir/ORG_NAME``), for every family but Lumina 2."""


@dataclass(frozen=True)
class Default:
    """A value a family (or a memory preset) gives a recipe key the recipe leaves out.

    Attributes:
        key: The dotted recipe key (``training.mixed_precision``).
        value: The value it gets.
        why: Why, for ``lorabuild check``'s list of applied defaults.
        unless: Why the value must not be applied to a recipe, or None when it may
            (a memory preset's text-encoder cache, say, for a recipe that shuffles captions).
    """

    key: str
    value: KohyaValue
    why: str
    unless: Callable[[Recipe], str | None] | None = None


@dataclass(frozen=True)
class MemoryPreset:
    """kohya's documented settings for a GPU of at least ``min_gb`` GB (``[launch] vram_gb``).

    Attributes:
        min_gb: The smallest card, in GB, these settings are for.
        settings: The values, each with its reason.
        source: Where the figures come from (kohya's docs, a section), shown by the check.
    """

    min_gb: int
    settings: tuple[Default, ...]
    source: str


@dataclass(frozen=True)
class ModelHeader:
    """What a base model says about itself without its weights being loaded (read by
    :mod:`lorabuild.probe.modelfile`).

    Attributes:
        tensor_names: A checkpoint file's tensor names (empty for a diffusers folder).
        pipeline: A diffusers folder's ``model_index.json`` ``_class_name``; None for a file.
        components: A diffusers folder's sub-folders (``unet``, ``text_encoder_2``...).
        text_encoder_width: ``text_encoder/config.json``'s ``hidden_size``, when it is a number.
    """

    tensor_names: tuple[str, ...] = ()
    pipeline: str | None = None
    components: frozenset[str] = frozenset()
    text_encoder_width: int | None = None

    def has_prefix(self, prefixes: tuple[str, ...]) -> bool:
        """Whether a tensor name starts with one of ``prefixes``."""
        return any(name.startswith(prefixes) for name in self.tensor_names)


@dataclass(frozen=True)
class Family:
    """A model family: everything lorabuild does differently for it, and nothing else.

    Attributes:
        name: The recipe's ``model.family`` value, and the plan's (``plan.json``).
        label: How messages and the plan summary name it (``SD1.x``).
        train_script: kohya's training script for it, inside the kohya checkout.
        network_modules: The recipe's ``network.module`` choices it trains, each as the kohya
            ``--network_module`` and LyCORIS ``algo`` it compiles to.
        recognise: Whether a base model's header is one of this family's. The registry tries the
            newest family first, so a family need not rule out older ones' signs.
        v2: kohya ``--v2`` (SD2's text encoder and model config).
        bucket_steps_multiple: What kohya wants ``bucket_reso_steps`` to divide by.
        vae_overflows_in_fp16: The stock VAE gives NaN in fp16, so the grid keeps it in fp32
            (``--no_half_vae``) when rendering in fp16.
        grid: How the epoch x weight grid is rendered.
        sd_version: The webui card's ``sd version`` (``SD1``, ``SD2``, ``SDXL``, Forge's ``Flux``; see
            :mod:`lorabuild.stages.install`).
        rules: Its own pre-flight rules.
        model_files: The model files its trainer loads besides the base model, each a ``[model]`` key.
        tokenizers: The Hugging Face ids of the tokenizers kohya loads for it (each read from, or
            downloaded into, ``--tokenizer_cache_dir``; library/strategy_*.py).
        tokenizer_cache: How ``--tokenizer_cache_dir`` holds them.
        model_type: kohya ``--model_type`` (``flux_train_network.py``: flux or chroma), or None.
        defaults: The values it gives recipe keys the recipe leaves out (kohya's documented settings
            where they differ from kohya's argparse defaults).
        memory: kohya's documented settings by GPU memory, largest card first (``[launch] vram_gb``).
    """

    name: str
    label: str
    train_script: str
    network_modules: NetworkModules
    recognise: Callable[[ModelHeader], bool]
    v2: bool
    bucket_steps_multiple: int
    vae_overflows_in_fp16: bool
    grid: GridRenderer
    sd_version: str
    rules: tuple[FamilyRule, ...]
    model_files: tuple[ModelFile, ...]
    tokenizers: tuple[str, ...]
    tokenizer_cache: TokenizerCache
    model_type: str | None
    defaults: tuple[Default, ...]
    memory: tuple[MemoryPreset, ...]

    def problems(self, recipe: Recipe) -> Iterator[Problem]:
        """What is wrong with ``recipe`` for this family: a network it does not train, then its rules."""
        module = recipe.network.module
        if module not in self.network_modules:
            choices = ", ".join(f'"{m}"' for m in self.network_modules)
            yield error("network.module", f'"{module}" cannot train {self.label} models: use {choices}')
        for check in self.rules:
            yield from check(recipe)
