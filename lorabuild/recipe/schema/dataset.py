"""What is trained on: ``[dataset]`` and its subsets, ``[captions]`` (with ``[captions.autotag]``) and ``[images]``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lorabuild.problems import did_you_mean
from lorabuild.recipe.schema.fields import Line, RecipePath, _Table


class AutotagSection(_Table):
    """``[captions.autotag]``: tag or caption images with one of kohya's own scripts before the caption
    rules run: the WD14 tagger (``finetune/tag_images_by_wd14_tagger.py --onnx``, booru tags), BLIP
    (``finetune/make_captions.py``) or GIT (``finetune/make_captions_by_git.py``), both a sentence.
    The model is read from a local folder; nothing is downloaded.
    """

    tagger: Literal["wd14", "blip", "git"] = Field(
        "wd14",
        description="wd14 (booru tags, for anime), or a natural-language caption for real people and styles: "
        "blip (kohya's make_captions.py) or git (kohya's make_captions_by_git.py).",
    )
    model_dir: RecipePath = Field(
        description="The model folder. wd14: model.onnx and selected_tags.csv, as in a SmilingWolf wd-* tagger "
        "repository (kohya --model_dir/--repo_id point at it). blip: model_large_caption.pth (kohya "
        "--caption_weights) and the bert-base-uncased tokenizer in a bert-base-uncased/ sub-folder. git: a "
        "transformers model folder such as microsoft/git-large-textcaps (kohya --model_id). Nothing is downloaded."
    )
    max_length: int | None = Field(
        None,
        ge=1,
        description="blip, git: longest caption in tokens (kohya --max_length; 75 for BLIP, 50 for GIT).",
    )
    min_length: int = Field(5, ge=0, description="blip: shortest caption in tokens (kohya --min_length).")
    beam_search: bool = Field(
        False, description="blip: beam search instead of nucleus sampling (kohya --beam_search, --num_beams)."
    )
    num_beams: int = Field(1, ge=1, description="blip: beams of the beam search (kohya --num_beams).")
    top_p: float = Field(0.9, gt=0, le=1, description="blip: nucleus sampling's top_p (kohya --top_p).")
    mode: Literal["missing", "all", "merge"] = Field(
        "missing",
        description="Which images to tag: missing (only those without a caption or with an empty one), "
        "all (the tagger's tags replace every caption) or merge (the caption's tags, then the tagger's new ones; "
        "for blip and git: the caption, then the generated sentence).",
    )
    general_threshold: float = Field(
        0.35, ge=0, le=1, description="Confidence needed for a general tag (kohya --general_threshold)."
    )
    character_threshold: float = Field(
        0.85,
        ge=0,
        description="Confidence needed for a character tag; above 1 turns character tags off "
        "(kohya --character_threshold).",
    )
    undesired_tags: list[Line] = Field(
        default_factory=list,
        description="Tags the tagger never writes, exactly as the tagger spells them; short_hair and "
        "short hair both match (kohya --undesired_tags). Use captions.remove for glob patterns.",
    )
    character_tags_first: bool = Field(
        False, description="Put character tags before general tags (kohya --character_tags_first)."
    )
    batch_size: int = Field(
        1, ge=1, description="Images per inference batch; a model with a fixed batch size overrides it."
    )

    @field_validator("undesired_tags")
    @classmethod
    def _plain_tags(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("must not contain empty tags")
        commas = [item for item in value if "," in item]
        if commas:
            # kohya splits --undesired_tags on commas, so such a tag could never match.
            raise ValueError(f"tags cannot contain commas (got {commas[0]!r})")
        return value


SEGMENTATION_KINDS = ("u2net", "isnet-anime", "isnet-general-use", "birefnet")
"""The segmentation models ``[images.remove_background]`` knows how to feed (rembg's model files)."""


class RemoveBackground(_Table):
    """``[images.remove_background]``: cut the subject out of its background in the staged copy.

    A local ONNX segmentation model (rembg's ``u2net``, ``isnet-anime``, ``isnet-general-use``
    or a BiRefNet export; nothing is downloaded) gives each image a mask, which becomes its alpha
    channel; the cut-out is then flattened onto ``[images] background`` (or keeps the alpha with
    ``flatten_transparency = false``). Sources are never written to.
    """

    model: RecipePath = Field(
        description="The segmentation model's .onnx file (rembg's u2net.onnx, isnet-anime.onnx, "
        "isnet-general-use.onnx, or a BiRefNet export)."
    )
    model_kind: Literal["auto", "u2net", "isnet-anime", "isnet-general-use", "birefnet"] = Field(
        "auto",
        description="How the model wants its input (size, mean and deviation) and how its output becomes a "
        "mask; auto tells them from the file name and the model's input size.",
    )
    threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Hard edges: pixels whose mask value reaches this are kept, the others removed. Unset: "
        "soft edges (the mask is the alpha as the model gives it).",
    )
    crop: bool = Field(
        False, description="Crop each image to its subject (plus crop_margin); this changes its bucket."
    )
    crop_margin: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Margin kept around the subject when cropping, as a fraction of the subject's longer side.",
    )
    min_coverage: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Keep the original image when the subject covers less than this fraction of it (the "
        "model found nothing); prepare names each such image.",
    )
    max_coverage: float = Field(
        0.99,
        ge=0,
        le=1,
        description="Keep the original image when the subject covers more than this fraction of it (nothing "
        "to remove, or the model failed); prepare names each such image.",
    )

    @model_validator(mode="after")
    def _coverage_range(self) -> RemoveBackground:
        if self.min_coverage >= self.max_coverage:
            raise ValueError(
                f"min_coverage ({self.min_coverage}) must be below max_coverage ({self.max_coverage})"
            )
        return self


class CaptionRules(_Table):
    """``[captions]``: rule-based tag editing applied to the staged copy of each caption.

    The rules run in this order: split on commas; normalise (trim, collapse spaces,
    ``tag_style``); ``replace``; ``remove``; ``dedupe``; ``move_to_front`` / ``move_to_end``;
    ``prepend_trigger``. With ``autotag`` set, the tagger's tags are merged into the caption
    (by its ``mode``) before all of these.
    """

    tag_style: Literal["keep", "underscore", "space"] = Field(
        "keep",
        description="Rewrite tags with underscores (short_hair) or spaces (short hair); keep leaves them.",
    )
    replace: dict[Line, Line] = Field(
        default_factory=dict, description='Tags to rename, as {wrong = "right"} (fix a tagger\'s mistakes).'
    )
    remove: list[Line] = Field(
        default_factory=list,
        description="Tags to delete: exact tags or glob patterns like '*_hair'. Remove the character's "
        "inherent traits so that the trigger learns them.",
    )
    dedupe: bool = Field(True, description="Drop repeated tags, keeping the first.")
    move_to_front: list[Line] = Field(
        default_factory=list, description="Tags (or globs) moved to the front, in this order."
    )
    move_to_end: list[Line] = Field(
        default_factory=list,
        description="Tags (or globs) pushed to the end, such as transparent_background.",
    )
    prepend_trigger: bool = Field(
        True, description="Put the subset's trigger first in every caption (pair with keep_tokens = 1)."
    )
    autotag: AutotagSection | None = Field(
        None,
        description="Tag images with kohya's WD14 tagger before these rules run (its tags pass through them).",
    )

    @field_validator("remove", "move_to_front", "move_to_end")
    @classmethod
    def _no_empty_patterns(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("must not contain empty tags")
        return value


class Subset(_Table):
    """``[[dataset.subsets]]``: one folder of images with captions."""

    source: RecipePath = Field(
        description="Folder with the images and their caption files, directly inside. Never modified."
    )
    trigger: Line | None = Field(
        None,
        min_length=1,
        description="Trigger word the LoRA learns (kohya class_tokens); also names the staged folder.",
    )
    repeats: int = Field(
        1, ge=1, description="How many times each image is seen per epoch (kohya num_repeats)."
    )
    caption_extension: str = Field(
        ".txt", pattern=r"^\.?[A-Za-z0-9_.\-]+$", description="Extension of the caption files in source."
    )
    is_reg: bool = Field(False, description="Regularisation (prior) images (kohya is_reg).")
    shuffle_caption: bool | None = Field(
        None, description="Override dataset.shuffle_caption for this subset."
    )
    keep_tokens: int | None = Field(None, ge=0, description="Override dataset.keep_tokens for this subset.")
    flip_aug: bool | None = Field(None, description="Override dataset.flip_aug for this subset.")
    color_aug: bool | None = Field(None, description="Override dataset.color_aug for this subset.")
    random_crop: bool | None = Field(None, description="Override dataset.random_crop for this subset.")
    captions: CaptionRules | None = Field(
        None, description="Caption rules for this subset; replaces the recipe's [captions] table for it."
    )
    remove_background: RemoveBackground | Literal[False] | None = Field(
        None,
        description="Background removal for this subset: a table of its own replaces "
        "[images.remove_background] for it, false turns it off; unset uses the recipe's.",
    )

    @field_validator("trigger")
    @classmethod
    def _one_tag(cls, value: str | None) -> str | None:
        # The trigger is prepended to captions as one tag; kohya splits a caption into tags at
        # commas (shuffle_caption, keep_tokens) and lorabuild trims each tag, so anything else
        # would not be the word the LoRA learns.
        if value is None:
            return value
        if "," in value:
            raise ValueError(
                f"must be one caption tag, without a comma (got {value!r}): kohya splits captions into "
                "tags at commas; write it with spaces or underscores, e.g. uiharu_kazari"
            )
        if value != value.strip():
            raise ValueError(
                f"must not start or end with a space (got {value!r}): each caption tag is trimmed, so "
                "the captions would hold it without them"
            )
        return value

    @field_validator("caption_extension")
    @classmethod
    def _leading_dot(cls, value: str) -> str:
        return value if value.startswith(".") else "." + value


class DatasetSection(_Table):
    """``[dataset]``: resolution, batching, bucketing and caption handling (kohya dataset config)."""

    resolution: tuple[int, int] = Field(
        (512, 512),
        description="Training size as [width, height] or one number for a square (kohya resolution).",
    )
    batch_size: int = Field(1, ge=1, description="Images per step (kohya batch_size).")
    enable_bucket: bool = Field(True, description="Aspect-ratio buckets (kohya enable_bucket).")
    min_bucket_reso: int = Field(256, ge=64, description="Smallest bucket side (kohya min_bucket_reso).")
    max_bucket_reso: int = Field(1024, ge=64, description="Largest bucket side (kohya max_bucket_reso).")
    bucket_reso_steps: int | None = Field(
        None,
        ge=8,
        description="Bucket side granularity; 64 for SD1/2 and SDXL unless set (kohya bucket_reso_steps).",
    )
    bucket_no_upscale: bool = Field(False, description="Never upscale images into a bucket (kohya).")
    shuffle_caption: bool = Field(False, description="Shuffle tags each time an image is used.")
    keep_tokens: int = Field(0, ge=0, description="Leading tags kept in place while shuffling (kohya).")
    flip_aug: bool = Field(False, description="Random horizontal flips (kohya flip_aug).")
    color_aug: bool = Field(False, description="Random colour changes; incompatible with cache_latents.")
    random_crop: bool = Field(
        False, description="Random instead of centre crops; incompatible with cache_latents."
    )
    caption_dropout_rate: float = Field(
        0.0, ge=0, le=1, description="Chance of training an image uncaptioned."
    )
    caption_tag_dropout_rate: float = Field(0.0, ge=0, le=1, description="Chance of dropping each tag.")
    validation_split: float = Field(
        0.0, ge=0, lt=1, description="Fraction of each subset held out to measure validation loss."
    )
    validation_seed: int | None = Field(
        None, description="Seed of the validation split (defaults to training.seed)."
    )
    subsets: list[Subset] = Field(min_length=1, description="The image folders to train on.")

    @field_validator("resolution", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("resolution")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 64:
            raise ValueError(f"each side must be at least 64 (got {list(value)})")
        return value


class ImagesSection(_Table):
    """``[images]``: checks on every image, and the fixes made in its staged copy (never the source).

    kohya reads pixels with a plain ``Image.open(...).convert("RGB")``: it ignores EXIF orientation,
    drops the alpha channel without compositing, and lists only ``.png .jpg .jpeg .webp .bmp``
    names. Where that would train something other than what the user sees, ``lorabuild prepare``
    stages a converted PNG instead of a link to the source.
    """

    on_bad_image: Literal["error", "skip"] = Field(
        "error",
        description="An image that does not decode (truncated, corrupt, not an image) or is smaller than "
        "min_side: error stops the build; skip leaves it out of the stage with a warning.",
    )
    min_side: int = Field(
        0,
        ge=0,
        description="Smallest allowed shorter side, in pixels; smaller images are bad images (see "
        "on_bad_image). 0 turns the check off.",
    )
    exif_orientation: bool = Field(
        True,
        description="Apply EXIF orientation in the staged copy (kohya ignores the tag and trains a camera's "
        "sideways photo sideways).",
    )
    flatten_transparency: bool = Field(
        True,
        description="Composite images with transparency onto background in the staged copy (kohya's RGB "
        "conversion shows whatever colour the transparent pixels hide, often black). Turn it off to keep "
        "the alpha channel for kohya's alpha_mask.",
    )
    background: str = Field(
        "white",
        description='Colour that transparent areas are flattened onto: a name ("white", "black", "gray") or '
        '"#RRGGBB".',
    )
    duplicates: Literal["off", "exact", "near"] = Field(
        "exact",
        description="Report duplicate images: exact (identical files; only files of equal size are hashed), "
        "near (also look-alikes by a perceptual hash, which decodes a thumbnail of every image once; "
        "the hashes are kept in the stage manifest) or off.",
    )
    remove_background: RemoveBackground | None = Field(
        None,
        description="Cut every image's subject out of its background with a local segmentation model, "
        "then flatten it onto background (subsets may override it).",
    )
    near_distance: int = Field(
        4,
        ge=0,
        le=16,
        description="How many of the 64 bits of two perceptual hashes may differ for the images to be reported "
        'as near-duplicates (duplicates = "near").',
    )

    @field_validator("background")
    @classmethod
    def _colour(cls, value: str) -> str:
        from PIL import ImageColor  # lazy: Pillow (~12 ms) only for a recipe that sets a background colour

        try:
            colour = ImageColor.getrgb(value)
        except ValueError:
            hint = did_you_mean(value.lower(), ImageColor.colormap)
            raise ValueError(
                f'is not a colour: use a name like "white" or a hex colour like "#RRGGBB" (got {value!r}){hint}'
            ) from None
        if len(colour) == 4 and colour[3] != 255:
            raise ValueError(
                f"must be an opaque colour: transparent pixels are flattened onto it (got {value!r})"
            )
        return value
