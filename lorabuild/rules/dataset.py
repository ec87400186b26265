"""Rules on the dataset: resolution and buckets, source folders, images, caption files, triggers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lorabuild.kohya import families
from lorabuild.kohya.buckets import adjusted_settings
from lorabuild.plan.plan import family_of
from lorabuild.plan.subsets import Subsets, bad_image, bucket_settings, epoch_bucket_counts
from lorabuild.probe.facts import Facts
from lorabuild.probe.imagefix import near_duplicates
from lorabuild.problems import Problem, error, warning
from lorabuild.recipe.captions import normalise, split_tags
from lorabuild.recipe.schema import Recipe
from lorabuild.rules.registry import _list, rule, subset_rule

# --- dataset and buckets -----------------------------------------------------------------------


@rule
def resolution_and_buckets(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Resolution and bucket bounds that kohya rounds or asserts on."""
    ds = recipe.dataset
    settings = bucket_settings(recipe)
    steps = settings.reso_steps
    if ds.enable_bucket and any(side % steps for side in ds.resolution):
        yield error(
            "dataset.resolution",
            f"each side must be a multiple of the bucket step {steps} (got {list(ds.resolution)}); "
            f"try {[max(steps, round(s / steps) * steps) for s in ds.resolution]}",
        )
    elif not ds.enable_bucket and any(side % 8 for side in ds.resolution):
        yield error("dataset.resolution", f"each side must be a multiple of 8 (got {list(ds.resolution)})")
    need = families.get(family_of(recipe, facts)).bucket_steps_multiple
    adjusted = adjusted_settings(settings, steps_multiple=need if ds.bucket_reso_steps is not None else None)
    for message in adjusted.errors:
        yield error(_bucket_key(message), message)
    for message in adjusted.warnings:
        yield warning(_bucket_key(message), message)


def _bucket_key(message: str) -> str:
    """The recipe key a bucket message (which starts with kohya's key name) is about."""
    first = message.split(" ", 1)[0]
    return (
        f"dataset.{first}"
        if first in {"min_bucket_reso", "max_bucket_reso", "bucket_reso_steps"}
        else "dataset"
    )


@rule
def keep_tokens_without_shuffle(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """keep_tokens does nothing unless captions are shuffled or tags dropped."""
    ds = recipe.dataset
    for i, s in enumerate(ds.subsets):
        keep = s.keep_tokens if s.keep_tokens is not None else ds.keep_tokens
        shuffle = s.shuffle_caption if s.shuffle_caption is not None else ds.shuffle_caption
        if keep and not shuffle and not ds.caption_tag_dropout_rate:
            key = f"dataset.subsets[{i}].keep_tokens" if s.keep_tokens is not None else "dataset.keep_tokens"
            yield warning(
                key, "has no effect without shuffle_caption = true (kohya only keeps tokens while shuffling)"
            )
            if s.keep_tokens is None:
                return  # the dataset-level setting: one warning is enough


@rule
def latents_cache_with_augmentation(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya asserts: "when caching latents, either color_aug or random_crop cannot be used"."""
    if not (recipe.training.cache_latents or recipe.training.cache_latents_to_disk):
        return
    ds = recipe.dataset
    for name in ("color_aug", "random_crop"):
        message = (
            "cannot be used with cached latents: set training.cache_latents and training.cache_latents_to_disk "
            f"to false, or turn {name} off"
        )
        # kohya reads each subset's own value; the dataset's applies only where a subset sets none.
        if getattr(ds, name) and any(getattr(s, name) is None for s in ds.subsets):
            yield error(f"dataset.{name}", message)
        for i, s in enumerate(ds.subsets):
            if getattr(s, name):
                yield error(f"dataset.subsets[{i}].{name}", message)


@rule
def duplicate_sources(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """The same folder twice is almost always a copy-paste slip."""
    seen: dict[tuple[Path, bool], int] = {}
    for i, s in enumerate(recipe.dataset.subsets):
        first = seen.setdefault((s.source, s.is_reg), i)
        if first != i:
            yield warning(
                f"dataset.subsets[{i}].source",
                f"is the same folder as dataset.subsets[{first}]: remove one of the two subsets",
            )


@rule
def source_folders(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Folders that would give kohya's "No data found" (it exits 0 without training)."""
    for i, sf in enumerate(facts.subsets):
        key = f"dataset.subsets[{i}].source"
        if sf.state == "missing":
            yield error(key, f"folder not found: {sf.source}")
        elif sf.state == "not_a_folder":
            yield error(key, f"is a file, not a folder: {sf.source}")
        elif not sf.images and sf.subfolders_with_images:
            yield error(
                key,
                f"has no images directly inside, but its sub-folders {_list(sf.subfolders_with_images)} do "
                '(kohya would stop with "No data found"): point source at the folder that holds the images, '
                "one subset per folder",
            )
        elif not sf.images:
            yield error(
                key,
                f"has no images directly inside {sf.source} (kohya reads .png .jpg .jpeg .webp .bmp): "
                'kohya would stop with "No data found": put the images directly in that folder',
            )
        for path, reason in sf.skipped:
            yield warning(str(path), reason)


@rule
def images_in_subfolders(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Images in sub-folders of a folder that has images of its own are never trained: kohya's
    ``glob_images`` reads only the top of an image folder, and lorabuild stages only that."""
    for i, (subset, sf) in enumerate(zip(recipe.dataset.subsets, facts.subsets, strict=True)):
        if not sf.images or not sf.images_below:
            continue  # no images at the top: source_folders says what to do
        total = sum(sf.images_below.values())
        folders = _list(f"{name}/ ({count})" for name, count in sf.images_below.items())
        top = subset.source.as_posix()
        first = f"{subset.source.name}/{next(iter(sf.images_below))}"
        yield warning(
            f"dataset.subsets[{i}].source",
            f"{total} image(s) in sub-folders will not be trained: {folders}: kohya reads only the images "
            f"directly in {top}: add each sub-folder as a subset of its own (a [[dataset.subsets]] whose "
            f'source ends in "{first}"), or move the images up into {top}',
        )


@rule
def image_files(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Unreadable or truncated images (kohya: OSError while caching latents, minutes in)."""
    for sf in facts.subsets:
        for info in sf.images:
            if info.problem:
                yield _bad_image_problem(recipe, str(info.path), info.problem)


def _bad_image_problem(recipe: Recipe, key: str, reason: str) -> Problem:
    """An error, or with ``images.on_bad_image = "skip"`` a warning that the image is left out."""
    if recipe.images.on_bad_image == "skip":
        return warning(key, f'left out of the stage (images.on_bad_image = "skip"): {reason}')
    return error(key, reason)


@rule
def image_min_side(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Images below ``images.min_side``: kohya would upscale them into their bucket, blurred."""
    if not recipe.images.min_side:
        return
    for sf in facts.subsets:
        for info in sf.images:
            reason = None if info.problem else bad_image(info, recipe.images)
            if reason:
                yield _bad_image_problem(recipe, str(info.path), reason)


@subset_rule
def every_image_left_out(recipe: Recipe, facts: Facts, subsets: Subsets) -> Iterator[Problem]:
    """A subset whose every image is skipped would stage nothing (kohya: "No data found")."""
    if recipe.images.on_bad_image != "skip":
        return  # every bad image is an error already
    for i, (sf, planned) in enumerate(zip(facts.subsets, subsets, strict=True)):
        if sf.images and not planned.images:
            yield error(
                f"dataset.subsets[{i}].source",
                f'all {len(sf.images)} image(s) are left out of the stage (images.on_bad_image = "skip"), so kohya '
                "would find no data: fix or replace them (see the warnings above)",
            )


# Beyond this many duplicates of one kind, one line counts the rest (a scraped folder can hold thousands).
DUPLICATES_SHOWN = 20


@rule
def duplicate_images(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """The same picture twice is trained twice as often as the others (``images.duplicates``)."""
    mode = recipe.images.duplicates
    if mode == "off":
        return
    near = mode == "near"
    seen: set[str] = set()
    images = []
    for sf in facts.subsets:
        for index, info in enumerate(sf.images):
            fingerprint = sf.fingerprint(index)
            # Only hashed images can be duplicates: with "exact", those that share their size.
            if info.problem is None and (near or fingerprint.sha256) and str(info.path) not in seen:
                seen.add(str(info.path))
                images.append((info.path, fingerprint))
    first: dict[str, Path] = {}
    exact: list[tuple[int, Path]] = []
    for index, (path, fingerprint) in enumerate(images):
        if fingerprint.sha256 is not None:
            original = first.setdefault(fingerprint.sha256, path)
            if original != path:
                exact.append((index, original))
    for index, original in exact[:DUPLICATES_SHOWN]:
        yield warning(
            str(images[index][0]),
            f"is an exact copy of {original}: delete one (a duplicate is trained twice as often as the "
            'other images), or set images.duplicates = "off"',
        )
    if len(exact) > DUPLICATES_SHOWN:
        yield warning(
            "images.duplicates",
            f"{len(exact) - DUPLICATES_SHOWN} more image(s) are exact copies of others: delete them",
        )
    if not near:
        return
    # Exact copies are reported above; comparing them again would only repeat it.
    copies = {index for index, _ in exact}
    hashes = [None if i in copies else fingerprint.dhash for i, (_, fingerprint) in enumerate(images)]
    alike = near_duplicates(hashes, recipe.images.near_distance)
    for index, match in alike[:DUPLICATES_SHOWN]:
        bits = ((hashes[index] or 0) ^ (hashes[match] or 0)).bit_count()
        yield warning(
            str(images[index][0]),
            f"looks almost the same as {images[match][0]} ({bits} of 64 perceptual-hash bits differ): "
            "delete one unless both are wanted (images.near_distance sets how alike is too alike)",
        )
    if len(alike) > DUPLICATES_SHOWN:
        yield warning(
            "images.duplicates",
            f"{len(alike) - DUPLICATES_SHOWN} more image(s) look almost the same as others: delete the ones "
            "you do not want, or lower images.near_distance",
        )


@rule
def caption_files(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Captions in another extension, missing captions, non-UTF-8 or empty caption files."""
    for i, (subset, sf) in enumerate(zip(recipe.dataset.subsets, facts.subsets, strict=True)):
        if sf.state != "ok" or not sf.images:
            continue
        key = f"dataset.subsets[{i}]"
        have = sum(1 for c in sf.captions if c.path is not None)
        for ext, count in sf.other_caption_files.items():
            if count > have:
                yield error(
                    f"{key}.caption_extension",
                    f'is "{subset.caption_extension}" but {count} image(s) have "{ext}" captions '
                    f'(and {have} have "{subset.caption_extension}"): set caption_extension = "{ext}"',
                )
        missing = [info.path.name for info, c in zip(sf.images, sf.captions, strict=True) if c.path is None]
        # With [captions.autotag], every mode tags the images without a caption (or an empty one).
        tagged = recipe.rules_for(subset).autotag is not None
        # When every caption is missing but another extension has them, the error above says why.
        if missing and not tagged and not (len(missing) == len(sf.images) and sf.other_caption_files):
            rules_ = recipe.rules_for(subset)
            what = "the trigger alone" if subset.trigger and rules_.prepend_trigger else "an empty caption"
            yield warning(
                f"{key}.source",
                f"{len(missing)} of {len(sf.images)} image(s) have no {subset.caption_extension} caption "
                f"and will get {what}: {_list(missing)}",
            )
        for c in sf.captions:
            if c.problem and c.path is not None:
                yield error(str(c.path), c.problem)
            elif c.path is not None and not c.text.strip() and not tagged:
                holds = (
                    "only the trigger"
                    if subset.trigger and recipe.rules_for(subset).prepend_trigger
                    else "nothing"
                )
                yield warning(str(c.path), f"is empty: the staged caption will hold {holds}")


@subset_rule
def trigger_in_captions(recipe: Recipe, facts: Facts, subsets: Subsets) -> Iterator[Problem]:
    """A trigger that no staged caption contains is never learnt as a word."""
    for i, (subset, planned) in enumerate(zip(recipe.dataset.subsets, subsets, strict=True)):
        if not subset.trigger or not planned.images or subset.is_reg:
            continue
        rules_ = recipe.rules_for(subset)
        staged = [image.caption for image in planned.images]
        tagger_only = 0
        if rules_.autotag is not None and not rules_.prepend_trigger:
            # The tagger's tags replace a caption ("all") or fill an empty one: they hold the
            # trigger only through a captions.replace entry that maps a tagger tag to it.
            mode = rules_.autotag.mode
            from_tagger = [mode == "all" or not split_tags(image.source_caption) for image in planned.images]
            tagger_only = sum(from_tagger)
            wanted = normalise(subset.trigger, rules_.tag_style)
            if any(normalise(v, rules_.tag_style) == wanted for v in rules_.replace.values()):
                staged = [text for text, tagged in zip(staged, from_tagger, strict=True) if not tagged]
            else:
                staged = ["" if tagged else text for text, tagged in zip(staged, from_tagger, strict=True)]
            if not staged:
                continue  # every caption comes from the tagger: which tags it gives is not known yet
        with_trigger = sum(1 for text in staged if subset.trigger in [t.strip() for t in text.split(",")])
        key = f"dataset.subsets[{i}].trigger"
        why = f" (the WD14 tagger's tags, in {tagger_only} caption(s), never hold it)" if tagger_only else ""
        # The advice names the captions table that applies to this subset, and only what would help.
        table = f"dataset.subsets[{i}].captions" if subset.captions is not None else "captions"
        prepend = "" if rules_.prepend_trigger else f"{table}.prepend_trigger = true"
        if with_trigger == 0:
            fix = f"set {prepend} or add it to the captions" if prepend else "add it to the captions"
            yield error(key, f'"{subset.trigger}" is in none of the staged captions{why}: {fix}')
        elif with_trigger < len(staged):
            fix = f"add it to the others or set {prepend}" if prepend else "add it to the others"
            yield warning(
                key,
                f'"{subset.trigger}" is in only {with_trigger} of {len(staged)} staged captions{why}: {fix}',
            )


@subset_rule
def small_buckets(recipe: Recipe, facts: Facts, subsets: Subsets) -> Iterator[Problem]:
    """Buckets with fewer samples than the batch size give short, noisier batches."""
    if not recipe.dataset.enable_bucket or any(sf.state != "ok" for sf in facts.subsets):
        return
    counts = epoch_bucket_counts(subsets)
    small = [f"{w}x{h} ({n})" for (w, h), n in sorted(counts.items()) if n < recipe.dataset.batch_size]
    if small:
        yield warning(
            "dataset.batch_size",
            f"{len(small)} bucket(s) hold fewer samples than the batch size {recipe.dataset.batch_size}: "
            f"{_list(small)}; crop images to common aspect ratios or lower the batch size",
        )


@subset_rule
def image_fits_without_buckets(recipe: Recipe, facts: Facts, subsets: Subsets) -> Iterator[Problem]:
    """Without buckets kohya asserts each image already fits the resolution."""
    ds = recipe.dataset
    if ds.enable_bucket:
        return
    width, height = ds.resolution
    # The staged sizes: an EXIF-rotated photo is staged upright, its sides swapped.
    for subset in subsets:
        for image in subset.images:
            w, h = image.size
            if w < width or h < height:
                yield error(
                    str(image.source),
                    f"is {w}x{h}, smaller than the resolution "
                    f"{width}x{height} while dataset.enable_bucket is false (kohya: image size is small)",
                )
            elif (w > width or h > height) and not ds.random_crop:
                yield error(
                    str(image.source),
                    f"is {w}x{h}, larger than {width}x{height} "
                    "with buckets off: set dataset.enable_bucket = true or resize it",
                )


@rule
def regularisation_balance(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """kohya: "some of reg images are not used"."""
    train = sum(
        len(sf.images) * s.repeats
        for s, sf in zip(recipe.dataset.subsets, facts.subsets, strict=True)
        if not s.is_reg
    )
    reg = sum(
        len(sf.images) * s.repeats
        for s, sf in zip(recipe.dataset.subsets, facts.subsets, strict=True)
        if s.is_reg
    )
    if reg > train > 0:
        yield warning(
            "dataset.subsets",
            f"{reg} regularisation samples but only {train} training samples: "
            f"{reg - train} regularisation samples are never used: lower the regularisation repeats or add training images",
        )


@rule
def no_training_subset(recipe: Recipe, facts: Facts) -> Iterator[Problem]:
    """Only regularisation subsets means nothing to learn."""
    if all(s.is_reg for s in recipe.dataset.subsets):
        yield error("dataset.subsets", "every subset has is_reg = true: add at least one training subset")
