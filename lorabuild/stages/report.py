"""``build/<name>/report.html``: one self-contained page about a build.

The page holds the recipe's summary, the dataset (subsets, buckets, tag frequencies before and
after the caption rules from ``tags.csv``), the loss plot, each grid sheet with its prompt and
seed, the saved LoRA files with their sizes and hashes, the suggested epoch and the install
command. Pictures are embedded as ``data:`` URIs and the styles are inline, so the file works
offline, from ``file://``, mailed or copied alone. Everything a user wrote (prompts, tags, names)
reaches the page through jinja2's autoescaping.

Each section reads what earlier stages left and says what to run when it is not there yet: the
grid (:mod:`lorabuild.stages.grid`, :mod:`lorabuild.render.sheets`) and the loss (:mod:`lorabuild.render.losslog`) are
optional. Hashes come from :class:`lorabuild.build.saved.HashCache`, so a second report reads no model
file again; the page has no timestamp, so an unchanged build gives the same bytes (and the file
is not rewritten).

Why one module: the page is one template's context, each section a small reader of what a stage
left; they share the build's layout, the hash cache and the embedding helpers, and
:func:`write_report` renders them into the one page.
"""

from __future__ import annotations

import base64
import csv
import importlib
import io
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from PIL import Image

from lorabuild import KOHYA_COMMIT, __version__
from lorabuild.build.gridmanifest import Sheet, read_manifest
from lorabuild.build.saved import HashCache, saved_files
from lorabuild.plan.layout import BuildLayout
from lorabuild.plan.plan import Plan
from lorabuild.plan.tags import activation_text
from lorabuild.probe.cache import PROBE_FIELDS, STAGE_MANIFEST, STAGED_FIELDS, read_stage_manifest
from lorabuild.render.units import human_size
from lorabuild.render.writer import Artefact, write_files
from lorabuild.score import Progress, score_build
from lorabuild.score.view import browse_grid, shortlist_rows
from lorabuild.settings import TEMPLATES_DIR

TAGS_SHOWN = 40
"""Tags listed per subset (the most frequent); the rest are counted."""

# An embedded picture larger than this is re-encoded as JPEG (a grid sheet of 10 epochs x 4
# weights at 768 px is ~30 MB as PNG: too heavy for one page).
MAX_EMBED_BYTES = 3_000_000
MAX_EMBED_SIDE = 4096
THUMB_SIDE = 256
LARGE_SIDE = 768
"""The browsable grid's large view: each cell (and nearest training image) once, as JPEG at most this side."""


@dataclass(frozen=True)
class Picture:
    """An image ready to embed: a ``data:`` URI and its pixel size."""

    uri: str
    width: int
    height: int


@dataclass
class ReportData:
    """Everything the template shows, as plain values (the template only places them)."""

    name: str
    title: str
    summary: list[tuple[str, str]]
    subsets: list[dict[str, Any]]
    buckets: list[dict[str, Any]]
    tags: list[dict[str, Any]]
    tags_note: str
    loss: Picture | None
    loss_svg: dict[str, Any] | None
    loss_note: str
    sheets: list[dict[str, Any]]
    grid_note: str
    files: list[dict[str, Any]]
    files_note: str
    suggested_epoch: int | None
    install_epoch: int | None
    install_command: str
    footer: str
    hashed: int = field(default=0)
    shortlist: dict[str, Any] | None = None
    browse: dict[str, Any] | None = None
    cutouts: list[dict[str, Any]] = field(default_factory=list)


def write_report(plan: Plan, build_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """Write ``build/<name>/report.html`` atomically (only when its bytes change); returns its path.

    ``progress`` is told how the scoring of the grid's pictures advances (:func:`score_build`).
    """
    build = build_dir if build_dir is not None else plan.build_dir
    html = render_report(collect(plan, build, progress))
    write_files(build, {BuildLayout.REPORT: Artefact(html.encode("utf-8"))})
    return BuildLayout(build).report


def render_report(data: ReportData) -> str:
    """The page's HTML for ``data`` (``templates/report.html.j2``, autoescaped)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2").render(r=data)


def collect(plan: Plan, build: Path, progress: Progress | None = None) -> ReportData:
    """Read what the build's stages left and gather the page's values."""
    scalars = _scalars(build)
    suggested = _suggest(scalars)
    loss, loss_svg, loss_note = _loss(build, scalars)
    tags, tags_note = tag_tables(plan, build)
    sheets, grid_note = grid_sheets(build)
    shortlist, browse = pick_view(plan, build, progress)
    files, files_note, hashed = saved_table(plan, build, suggested)
    epochs = plan.epochs
    saved_epochs = {f["epoch"] for f in files}
    install_epoch = suggested if suggested in saved_epochs else (max(saved_epochs) if saved_epochs else None)
    recipe = plan.recipe_file.as_posix()
    command = f"lorabuild install {shlex.quote(recipe)}" + (
        f" --epoch {install_epoch}" if install_epoch is not None else ""
    )
    return ReportData(
        name=plan.name,
        title=plan.config.metadata.metadata_title or plan.name,
        summary=summary_rows(plan),
        subsets=subset_rows(plan),
        buckets=bucket_rows(plan),
        tags=tags,
        tags_note=tags_note,
        loss=loss,
        loss_svg=loss_svg,
        loss_note=loss_note,
        sheets=sheets,
        grid_note=grid_note,
        files=files,
        files_note=files_note,
        suggested_epoch=suggested,
        install_epoch=install_epoch,
        install_command=command,
        footer=f"lorabuild {__version__}, kohya sd-scripts {KOHYA_COMMIT[:12]}, recipe sha256 "
        f"{plan.recipe_hash[:12]}, {epochs} epoch(s)",
        hashed=hashed,
        shortlist=shortlist,
        browse=browse,
        cutouts=cutout_rows(plan),
    )


def summary_rows(plan: Plan) -> list[tuple[str, str]]:
    """The recipe summary: (label, value) rows from the compiled config and the plan."""
    cfg = plan.config
    model, network, optimizer = cfg.model, cfg.network, cfg.optimizer
    training, saving, metadata = cfg.training, cfg.saving, cfg.metadata
    dataset = plan.dataset_config.dataset
    rows: list[tuple[str, str]] = [("name", plan.name)]
    if metadata.metadata_title and metadata.metadata_title != plan.name:
        rows.append(("title", metadata.metadata_title))
    if metadata.metadata_description:
        rows.append(("description", metadata.metadata_description))
    if metadata.metadata_author:
        rows.append(("author", metadata.metadata_author))
    rows.append(("trigger", activation_text(plan) or "(none)"))
    rows.append(("base model", model.pretrained_model_name_or_path))
    rows.append(("family", f"{plan.family} ({plan.script})"))
    if model.clip_skip:
        rows.append(("clip skip", str(model.clip_skip)))
    net = f"{network.network_module}, dim {network.network_dim}, alpha {_num(network.network_alpha)}"
    if network.network_args:
        net += " (" + ", ".join(network.network_args) + ")"
    rows.append(("network", net))
    opt = f"{optimizer.optimizer_type}, lr {_num(optimizer.learning_rate)}"
    for value, label in ((optimizer.unet_lr, "U-Net lr"), (optimizer.text_encoder_lr, "text encoder lr")):
        if value is not None:
            opt += f", {label} {_num(value)}"
    if optimizer.lr_scheduler:
        opt += f", {optimizer.lr_scheduler} schedule"
    if optimizer.lr_warmup_steps:
        opt += f", warm-up {_num(optimizer.lr_warmup_steps)}"
    rows.append(("optimizer", opt))
    rows.append(("resolution", "×".join(str(x) for x in dataset.resolution)))
    rows.append(("batch size", str(dataset.batch_size)))
    rows.append(("epochs", str(training.max_train_epochs)))
    rows.append(
        (
            "steps",
            f"{plan.batches_per_epoch} batches per epoch, {plan.steps_per_epoch} per epoch, {plan.total_steps} in all",
        )
    )
    every = saving.save_every_n_epochs
    rows.append(
        (
            "saved",
            "every epoch"
            if every == 1
            else f"every {every} epochs and the last"
            if every
            else "the last epoch",
        )
    )
    if training.mixed_precision:
        rows.append(
            (
                "precision",
                f"mixed precision {training.mixed_precision}, files saved as {saving.save_precision}",
            )
        )
    rows.append(("recipe", plan.recipe_file.as_posix()))
    return rows


def _num(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "?" if value is None else str(value)


def subset_rows(plan: Plan) -> list[dict[str, Any]]:
    """One row per subset: staged folder, source, trigger, images, repeats, samples per epoch."""
    return [
        {
            "folder": BuildLayout.staged(s.folder),
            "source": s.source.as_posix(),
            "trigger": s.trigger or "",
            "images": len(s.images),
            "repeats": s.repeats,
            "samples": len(s.images) * s.repeats,
            "reg": s.is_reg,
        }
        for s in plan.subsets
    ]


CUTOUT_EXAMPLES = 6
"""Before/after pairs shown per subset with ``[images.remove_background]``."""


def cutout_rows(plan: Plan) -> list[dict[str, Any]]:
    """Per subset staged with cut-outs: how many, and the first few as before/after thumbnails.

    Read from the stage manifest (``dataset/.stage.json``), which records each image staged as a
    cut-out (method ``cutout;<key>``) with its source's path.
    """
    manifest = read_stage_manifest(plan.layout.dataset_dir / STAGE_MANIFEST)
    if manifest is None or not isinstance(manifest.get("images"), dict):
        return []
    records: dict[str, list[Any]] = manifest["images"]
    path_at = len(STAGED_FIELDS) + PROBE_FIELDS.index("path")
    rows = []
    for subset in plan.subsets:
        pairs: list[dict[str, Any]] = []
        count = 0
        for image in subset.images:
            record = records.get(f"{subset.folder}/{image.name}")
            if not (isinstance(record, list) and str(record[1]).startswith("cutout;")):
                continue
            count += 1
            if len(pairs) < CUTOUT_EXAMPLES:
                before = embed(Path(str(record[path_at])), thumb=True)
                after = embed(plan.layout.dataset_dir / subset.folder / image.name, thumb=True)
                if before is not None and after is not None:
                    pairs.append({"name": image.name, "before": before, "after": after})
        if count:
            rows.append(
                {
                    "folder": BuildLayout.staged(subset.folder),
                    "count": count,
                    "images": len(subset.images),
                    "pairs": pairs,
                }
            )
    return rows


def bucket_rows(plan: Plan) -> list[dict[str, Any]]:
    """One row per bucket: resolution, samples per epoch and the bar's width in percent."""
    most = max((n for _, n in plan.bucket_counts), default=0) or 1
    return [
        {"resolution": f"{w}×{h}", "samples": n, "percent": round(100 * n / most, 1)}
        for (w, h), n in plan.bucket_counts
    ]


def tag_tables(plan: Plan, build: Path) -> tuple[list[dict[str, Any]], str]:
    """Per subset, the most frequent tags before and after the rules (from ``tags.csv``)."""
    try:
        text = BuildLayout(build).tags_csv.read_text(encoding="utf-8")
    except OSError:
        return [], f"no {BuildLayout.TAGS_CSV} yet: run lorabuild prepare"
    rows_by_subset: dict[int, list[dict[str, Any]]] = {}
    try:
        for row in csv.DictReader(io.StringIO(text)):
            rows_by_subset.setdefault(int(row["subset"]), []).append(
                {"tag": row["tag"], "before": int(row["before"]), "after": int(row["after"])}
            )
    except (KeyError, ValueError, csv.Error):
        return [], f"{BuildLayout.TAGS_CSV} could not be read: run lorabuild prepare again"
    tables = []
    for subset in plan.subsets:
        rows = rows_by_subset.get(subset.index, [])
        images = len(subset.images) or 1
        shown = rows[:TAGS_SHOWN]
        for r in shown:
            r["removed"] = r["before"] > 0 and r["after"] == 0
            r["added"] = r["before"] == 0 and r["after"] > 0
            r["percent"] = round(100 * max(r["before"], r["after"]) / images, 1)
        tables.append(
            {
                "folder": BuildLayout.staged(subset.folder),
                "images": len(subset.images),
                "rows": shown,
                "more": len(rows) - len(shown),
                "total": len(rows),
            }
        )
    return tables, ""


def _losslog() -> Any:
    try:
        return importlib.import_module("lorabuild.render.losslog")
    except ImportError:
        return None


def _scalars(build: Path) -> dict[str, list[tuple[int, float]]]:
    losslog = _losslog()
    logs = BuildLayout(build).logs_dir
    if losslog is None or not logs.is_dir():
        return {}
    try:
        scalars = losslog.read_scalars(logs)
    except Exception:  # an unreadable or half-written event file must not stop the report
        return {}
    return dict(scalars) if scalars else {}


def _suggest(scalars: dict[str, list[tuple[int, float]]]) -> int | None:
    losslog = _losslog()
    if losslog is None or not scalars:
        return None
    try:
        epoch = losslog.suggest_epoch(scalars)
    except Exception:
        return None
    return int(epoch) if epoch is not None else None


def _loss(
    build: Path, scalars: dict[str, list[tuple[int, float]]]
) -> tuple[Picture | None, dict[str, Any] | None, str]:
    """The loss plot: losslog's PNG, else an inline SVG of the loss series, else why there is none."""
    if not scalars:
        if _losslog() is None:
            return None, None, "no loss plot: lorabuild.render.losslog is not available in this version"
        return None, None, "no training logs yet: run lorabuild train"
    losslog = _losslog()
    reason = ""
    try:
        plotted = losslog.plot_loss(scalars, BuildLayout(build).loss_png, title=f"{build.name}: loss")
    except Exception:
        plotted = None
    # plot_loss returns a LossPlot (path, reason, notes); a bare path is accepted too.
    png = getattr(plotted, "path", plotted)
    reason = str(getattr(plotted, "reason", "") or "")
    if isinstance(png, str | Path) and Path(png).is_file():
        picture = embed(Path(png))
        if picture is not None:
            return picture, None, ""
    svg = loss_svg(scalars)
    if svg is None:
        return None, None, reason or "the training logs hold no loss values yet"
    return None, svg, ""


SVG_COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c")


def loss_svg(
    scalars: dict[str, list[tuple[int, float]]], width: int = 720, height: int = 260
) -> dict[str, Any] | None:
    """Polylines of the series whose name says loss, scaled into one chart (for the template)."""
    series = {k: v for k, v in sorted(scalars.items()) if "loss" in k.lower() and v}
    if not series:
        return None
    series = dict(list(series.items())[: len(SVG_COLOURS)])
    steps = [s for values in series.values() for s, _ in values]
    losses = [v for values in series.values() for _, v in values]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(losses), max(losses)
    pad = 30
    lines = []
    for colour, (name, values) in zip(SVG_COLOURS, series.items(), strict=False):
        points = " ".join(
            f"{pad + (s - x0) / max(1, x1 - x0) * (width - 2 * pad):.1f},"
            f"{height - pad - (v - y0) / ((y1 - y0) or 1) * (height - 2 * pad):.1f}"
            for s, v in values
        )
        lines.append({"name": name, "colour": colour, "points": points})
    return {
        "width": width,
        "height": height,
        "lines": lines,
        "x_range": f"step {x0} – {x1}",
        "y_range": f"loss {y0:.4g} – {y1:.4g}",
    }


def grid_sheets(build: Path) -> tuple[list[dict[str, Any]], str]:
    """Each grid sheet with its prompt and seed: the composed sheet, else a table of its cells."""
    sheets = read_manifest(build)
    if sheets is None:
        return [], "no grid yet: run lorabuild grid"
    if not sheets:
        return [], "the grid manifest lists no sheets: run lorabuild grid"
    return [_sheet(build, s) for s in sheets], ""


def _sheet(build: Path, sheet: Sheet) -> dict[str, Any]:
    image = embed(build / sheet.image) if (build / sheet.image).is_file() else None
    cells: list[dict[str, Any]] = []
    if image is None:
        for r, row in enumerate(sheet.rows):
            row_cells = sheet.cells[r] if r < len(sheet.cells) else ()
            pictures = []
            for c in range(len(sheet.columns)):
                rel = row_cells[c] if c < len(row_cells) else None
                pictures.append(embed(build / rel, thumb=True) if rel and (build / rel).is_file() else None)
            cells.append({"label": row.label, "pictures": pictures})
        if not any(p for row in cells for p in row["pictures"]):
            cells = []  # nothing rendered yet: the page says so instead of an empty table
    return {
        "id": sheet.id,
        "prompt": sheet.prompt,
        "negative_prompt": sheet.negative_prompt,
        "seed": sheet.seed,
        "image": image,
        "columns": [c.label for c in sheet.columns],
        "rows": cells,
    }


def pick_view(
    plan: Plan, build: Path, progress: Progress | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``lorabuild pick``'s shortlist for the page, and the browsable grid (None without a grid)."""
    listed = score_build(plan, build, progress)
    install = f"lorabuild install {shlex.quote(plan.recipe_file.as_posix())}"
    sheets = read_manifest(build)

    def picture(rel: str, large: bool) -> dict[str, Any] | None:
        path = build / rel
        p = embed(path, thumb=True, side=LARGE_SIDE if large else THUMB_SIDE) if path.is_file() else None
        return None if p is None else {"uri": p.uri, "width": p.width, "height": p.height}

    browse = browse_grid(sheets, listed, install, picture) if sheets else None
    return shortlist_rows(listed, install), browse


def saved_table(plan: Plan, build: Path, suggested: int | None) -> tuple[list[dict[str, Any]], str, int]:
    """The saved LoRA files with epoch, size and hashes; how many files were read to hash them."""
    files = saved_files(plan, build)
    if not files:
        return [], "no LoRA file saved yet: run lorabuild train", 0
    cache = HashCache(build)
    rows = []
    for f in files:
        try:
            hashes = cache.of(f.rel)
        except OSError:
            continue
        rows.append(
            {
                "file": f.rel,
                "epoch": f.epoch,
                "numbered": f.numbered,
                "size": human_size(f.size),
                "bytes": f.size,
                "sha256": hashes.sha256,
                "short_hash": hashes.short_hash or "",
                "suggested": f.epoch == suggested,
            }
        )
    cache.save()
    return rows, "", cache.hashed


def embed(path: Path, thumb: bool = False, side: int = THUMB_SIDE) -> Picture | None:
    """The image as a ``data:`` URI (re-encoded as JPEG when large; at most ``side`` pixels when ``thumb``)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            fmt = image.format
            too_big = len(data) > MAX_EMBED_BYTES or max(size) > MAX_EMBED_SIDE
            if thumb or too_big or fmt not in ("PNG", "JPEG", "WEBP", "GIF"):
                longest = side if thumb else MAX_EMBED_SIDE
                image.thumbnail((longest, longest))
                rgb = image.convert("RGBA")
                flat = Image.new("RGB", rgb.size, "white")
                flat.paste(rgb, mask=rgb.getchannel("A"))
                out = io.BytesIO()
                flat.save(out, format="JPEG", quality=88)
                data, fmt, size = out.getvalue(), "JPEG", flat.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    mime = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}[fmt or "PNG"]
    return Picture(f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", size[0], size[1])
