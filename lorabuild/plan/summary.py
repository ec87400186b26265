"""The plan summary ``lorabuild check`` prints: what kohya will train, in kohya's own numbers."""

from __future__ import annotations

import json
from collections.abc import Iterable

from lorabuild.kohya import families
from lorabuild.plan.layout import BuildLayout, relpath
from lorabuild.plan.plan import Plan
from lorabuild.problems import Problem, format_problem

# Beyond this many images the per-image bucket list is only shown with --verbose.
IMAGE_LIST_LIMIT = 40


def plan_summary(plan: Plan, verbose: bool = False) -> str:
    """A readable account of the plan."""
    cfg = plan.config
    ds = plan.dataset_config.dataset
    width, height = ds.resolution
    lines = [f"{plan.name}  ({plan.recipe_file.as_posix()})"]
    lines.append(
        f"  model    {cfg.model.pretrained_model_name_or_path}: {families.get(plan.family).label} "
        f"-> kohya {plan.script}"
    )
    bucket_text = (
        f"buckets {ds.min_bucket_reso}-{ds.max_bucket_reso} step {ds.bucket_reso_steps}"
        + (" no upscale" if ds.bucket_no_upscale else "")
        if ds.enable_bucket
        else "no buckets"
    )
    lines.append(f"  dataset  {width}x{height}, batch {ds.batch_size}, {bucket_text}")
    for s in plan.subsets:
        samples = len(s.images) * s.repeats
        kind = " (regularisation)" if s.is_reg else ""
        lines.append(
            f"    [{s.index}] {s.source.as_posix()} -> {BuildLayout.staged(s.folder)}: "
            f"{len(s.images)} images x {s.repeats} repeats = {samples} samples{kind}"
        )
    lines.append("  buckets  samples per epoch, repeats included:")
    lines.extend(f"    {w}x{h}: {n}" for (w, h), n in plan.bucket_counts)
    images = [(s.index, img) for s in plan.subsets for img in s.images]
    if verbose or len(images) <= IMAGE_LIST_LIMIT:
        lines.append("  images   the bucket each image falls in:")
        lines.extend(
            f"    [{i}] {img.name} {img.size[0]}x{img.size[1]} -> {img.bucket[0]}x{img.bucket[1]}"
            for i, img in images
        )
    else:
        lines.append(f"  images   {len(images)} (use --verbose to list the bucket of each)")
    epochs = plan.epochs
    accumulation = cfg.training.gradient_accumulation_steps or 1
    per_epoch = plan.total_steps // epochs
    accum_text = f" / {accumulation} accumulation" if accumulation > 1 else ""
    if plan.num_processes > 1:  # each process takes its share of the batches (kohya: ceil(batches / n / acc))
        accum_text = f" / {plan.num_processes} GPUs" + accum_text
    lines.append(
        f"  steps    {plan.batches_per_epoch} batches per epoch{accum_text} = {per_epoch} steps per epoch "
        f"x {epochs} epochs = {plan.total_steps} steps"
    )
    lines.append(
        f"  saves    {len(plan.outputs)} file(s) in {relpath(plan.build_dir, plan.build_dir.parent.parent)}/:"
    )
    lines.extend(f"    {f}" for f in plan.outputs)
    lines.extend(defaults_lines(plan))
    return "\n".join(lines)


def defaults_lines(plan: Plan) -> list[str]:
    """The values the family and the memory preset gave keys the recipe leaves out, and why."""
    resolved = plan.defaults
    if resolved is None or not (resolved.applied or resolved.preset or resolved.skipped):
        return []
    lines = ["  defaults keys the recipe leaves out (set a key to override it):"]
    for a in resolved.applied:
        lines.append(f"    {a.key} = {_toml(a.value)}  ({a.source}: {a.why})")
    if resolved.preset:
        lines.append(f"    memory preset: {resolved.preset}")
    lines.extend(f"    not applied: {why}" for why in resolved.skipped)
    return lines


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def problem_lines(problems: Iterable[Problem]) -> list[str]:
    """Each problem on one line."""
    return [format_problem(p) for p in problems]
