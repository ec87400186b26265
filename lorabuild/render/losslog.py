"""kohya's training loss, read from its TensorBoard event files without TensorBoard, and plotted.

kohya (``--logging_dir logs --log_prefix NAME_``) writes
``logs/NAME_<YYYYmmddHHMMSS>/network_train/events.out.tfevents.*``, one folder per run, so a
resumed build has several. :mod:`lorabuild.render.tfevents` reads each file's records and scalars;
KOHYA.md section 9 lists kohya's tags:

- per optimizer step (x = global step): ``loss/current``, ``loss/average``, ``lr/<group>``;
- per epoch (x = epoch): ``loss/epoch_average``, ``loss/validation/epoch_average``;
- step validation (x = global step): ``loss/validation/step_average``.

:func:`load_scalars` merges every run by step (a later run wins for a step both logged) and says
which files were damaged (a CRC mismatch, a partial last record while kohya is still writing)
while keeping every good record. :func:`plot_loss` draws the loss curves with Pillow;
:func:`summarise` is what ``lorabuild loss`` shows.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageDraw

from lorabuild.problems import LorabuildError
from lorabuild.render.fonts import Font, FontBook, FontWarning, system_book
from lorabuild.render.tfevents import ProtobufError, ScalarEvent, decode_event, read_records
from lorabuild.render.writer import Artefact, write_files

STEP_LOSS = "loss/current"
STEP_AVERAGE = "loss/average"
EPOCH_LOSS = "loss/epoch_average"
VALIDATION_EPOCH = "loss/validation/epoch_average"
VALIDATION_STEP = "loss/validation/step_average"
LOSS_TAGS = (STEP_LOSS, STEP_AVERAGE, EPOCH_LOSS, VALIDATION_EPOCH, VALIDATION_STEP)

EVENTS_GLOB = "events.out.tfevents.*"

Scalars = dict[str, list[tuple[int, float]]]


# --- reading a build's logs ----------------------------------------------------------------------


@dataclass(frozen=True)
class ScalarLog:
    """Every scalar of a build's runs, merged by step.

    Attributes:
        scalars: Tag -> ``(step, value)`` pairs sorted by step (x = epoch for the epoch tags);
            NaN and infinite values are kept as logged.
        files: The event files read, oldest run first.
        notes: What was wrong with some files (damage is named by file; good records are kept).
    """

    scalars: Scalars
    files: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()


def event_files(logs_dir: Path) -> list[Path]:
    """Every TensorBoard event file under ``logs_dir`` (any depth), in name order."""
    if not logs_dir.is_dir():
        return []
    return sorted(p for p in logs_dir.rglob(EVENTS_GLOB) if p.is_file())


def load_scalars(logs_dir: Path) -> ScalarLog:
    """Read and merge every event file under ``logs_dir`` (``build/<name>/logs``).

    Files are ordered by the wall time of their first event (the run folder's timestamp and the
    file name say the same for kohya); for a tag logged at the same step by two files, the later
    file's value wins, so a resumed run replaces the steps it re-did.
    """
    loaded: list[tuple[float, Path, list[ScalarEvent]]] = []
    notes: list[str] = []
    for path in event_files(logs_dir):
        try:
            records = read_records(path)
        except OSError as exc:
            notes.append(f"{path}: cannot read it ({exc.strerror or exc})")
            continue
        if records.damage:
            notes.append(records.damage)
        first = math.inf
        events: list[ScalarEvent] = []
        bad = 0
        for data in records.records:
            try:
                wall_time, decoded = decode_event(data)
            except (ProtobufError, struct.error):
                bad += 1
                continue
            first = min(first, wall_time) if wall_time else first
            events.extend(decoded)
        if bad:
            notes.append(f"{path}: {bad} record(s) are not TensorBoard events and were skipped")
        loaded.append((first, path, events))
    loaded.sort(key=lambda item: (item[0], str(item[1])))
    merged: dict[str, dict[int, float]] = {}
    for _, _, events in loaded:
        for e in events:
            merged.setdefault(e.tag, {})[e.step] = e.value
    scalars = {tag: sorted(by_step.items()) for tag, by_step in sorted(merged.items())}
    return ScalarLog(scalars, tuple(p for _, p, _ in loaded), tuple(notes))


def read_scalars(logs_dir: Path) -> Scalars:
    """Tag -> ``(step, value)`` pairs of every run under ``logs_dir``; see :func:`load_scalars`."""
    return load_scalars(logs_dir).scalars


def finite(points: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """``points`` without NaN and infinite values."""
    return [(x, y) for x, y in points if math.isfinite(y)]


def suggest_epoch(scalars: Scalars) -> int | None:
    """The epoch with the lowest validation loss (``loss/validation/epoch_average``).

    ``None`` when the run logged no (finite) validation loss: training loss alone does not say
    which epoch generalises best. Ties go to the earlier epoch.
    """
    points = finite(scalars.get(VALIDATION_EPOCH, []))
    if not points:
        return None
    return min(points, key=lambda p: (p[1], p[0]))[0]


@dataclass(frozen=True)
class EpochRow:
    """One epoch's losses (``None`` where not logged)."""

    epoch: int
    loss: float | None
    validation: float | None


def epoch_table(scalars: Scalars) -> list[EpochRow]:
    """Per-epoch average training and validation loss, by epoch."""
    train = dict(scalars.get(EPOCH_LOSS, []))
    val = dict(scalars.get(VALIDATION_EPOCH, []))
    return [EpochRow(e, train.get(e), val.get(e)) for e in sorted(set(train) | set(val))]


# --- plotting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossPlot:
    """What :func:`plot_loss` did.

    Attributes:
        path: The PNG written (or left identical); ``None`` when there was nothing to plot.
        reason: Why nothing was plotted (empty when ``path`` is set).
        notes: Remarks to show with the plot (values skipped as NaN/inf).
    """

    path: Path | None
    reason: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Series:
    label: str
    points: list[tuple[int, float]]
    colour: tuple[int, int, int]
    width: int
    markers: bool = False


@dataclass
class _Panel:
    box: tuple[int, int, int, int]  # left, top, right, bottom of the plotting area
    xlabel: str
    series: list[_Series] = field(default_factory=list)


WIDTH, HEIGHT = 960, 640
BACKGROUND = (255, 255, 255)
AXIS = (60, 60, 60)
GRID = (228, 228, 228)
COLOURS = {
    STEP_LOSS: (174, 199, 232),
    STEP_AVERAGE: (31, 119, 180),
    VALIDATION_STEP: (255, 127, 14),
    EPOCH_LOSS: (44, 160, 44),
    VALIDATION_EPOCH: (214, 39, 40),
}


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering ``low..high``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        pad = abs(low) * 0.05 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    t = first
    while t <= high + step * 1e-9:
        if t >= low - step * 1e-9:
            ticks.append(round(t, 12))
        t += step
    if len(ticks) < 2:
        ticks = [first, first + step]
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.6g}"


def render_loss_png(
    scalars: Scalars, title: str = "", fonts: FontBook | None = None
) -> tuple[bytes | None, str, tuple[str, ...]]:
    """The loss plot as PNG bytes, or ``None`` and the reason; plus notes (skipped values).

    Top panel, x = step: ``loss/current`` (faint), ``loss/average`` (solid) and step validation;
    bottom panel, x = epoch: ``loss/epoch_average`` and ``loss/validation/epoch_average`` with
    markers. NaN and infinite values are left out and counted in a note.
    """
    fonts = fonts or system_book()
    skipped = {tag: sum(1 for _, v in scalars.get(tag, []) if not math.isfinite(v)) for tag in LOSS_TAGS}
    notes = tuple(f"{n} NaN/inf value(s) of {tag} not drawn" for tag, n in skipped.items() if n)
    step_tags = [t for t in (STEP_LOSS, STEP_AVERAGE, VALIDATION_STEP) if finite(scalars.get(t, []))]
    epoch_tags = [t for t in (EPOCH_LOSS, VALIDATION_EPOCH) if finite(scalars.get(t, []))]
    if not step_tags and not epoch_tags:
        present = [t for t in LOSS_TAGS if scalars.get(t)]
        if present:
            return None, f"every loss value logged ({', '.join(present)}) is NaN or infinite", notes
        others = ", ".join(sorted(scalars)[:6]) or "none"
        return (
            None,
            f"no loss scalars were logged ({', '.join(LOSS_TAGS[:3])}...; tags found: {others})",
            notes,
        )

    img = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(img)
    small = fonts.font("0123456789.e-+ loss step epoch", 13)
    top = 12
    if title:
        title_font = fonts.font(title, 18)
        draw.text((WIDTH // 2, top), title, font=title_font, fill=AXIS, anchor="mt")
        top += 30
    bottom = HEIGHT - (22 if notes else 6)
    left, right = 78, WIDTH - 20
    panels: list[_Panel] = []
    if step_tags and epoch_tags:
        split = top + int((bottom - top) * 0.62)
        panels.append(_Panel((left, top + 8, right, split - 40), "step"))
        panels.append(_Panel((left, split + 8, right, bottom - 40), "epoch"))
    else:
        panels.append(_Panel((left, top + 8, right, bottom - 40), "step" if step_tags else "epoch"))
    labels = {
        STEP_LOSS: "loss (step)",
        STEP_AVERAGE: "loss (moving average)",
        VALIDATION_STEP: "validation loss (step)",
        EPOCH_LOSS: "loss (epoch average)",
        VALIDATION_EPOCH: "validation loss (epoch)",
    }
    for panel in panels:
        tags = step_tags if panel.xlabel == "step" else epoch_tags
        for tag in tags:
            panel.series.append(
                _Series(
                    labels[tag],
                    finite(scalars[tag]),
                    COLOURS[tag],
                    width=1 if tag == STEP_LOSS else 2,
                    markers=panel.xlabel == "epoch" or tag == VALIDATION_STEP,
                )
            )
        _draw_panel(draw, panel, small)
    if notes:
        draw.text((left, HEIGHT - 4), "; ".join(notes), font=small, fill=(150, 60, 60), anchor="ld")

    out = BytesIO()
    img.save(out, "PNG", optimize=False)
    return out.getvalue(), "", notes


def _draw_panel(draw: ImageDraw.ImageDraw, panel: _Panel, font: Font) -> None:
    left, top, right, bottom = panel.box
    xs = [x for s in panel.series for x, _ in s.points]
    ys = [y for s in panel.series for _, y in s.points]
    xticks = [t for t in nice_ticks(min(xs), max(xs), 8) if float(t).is_integer()] or [min(xs), max(xs)]
    yticks = nice_ticks(min(ys), max(ys), 6)
    x0, x1 = min(min(xs), xticks[0]), max(max(xs), xticks[-1])
    y0, y1 = min(min(ys), yticks[0]), max(max(ys), yticks[-1])
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1
    pad = (y1 - y0) * 0.04  # keep the curves and markers off the frame
    y0, y1 = y0 - pad, y1 + pad
    if panel.xlabel == "epoch":
        xpad = (x1 - x0) * 0.02
        x0, x1 = x0 - xpad, x1 + xpad

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    for t in yticks:
        y = py(t)
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.line([(left - 4, y), (left, y)], fill=AXIS)
        draw.text((left - 7, y), _fmt(t), font=font, fill=AXIS, anchor="rm")
    for t in xticks:
        x = px(t)
        draw.line([(x, top), (x, bottom)], fill=GRID)
        draw.line([(x, bottom), (x, bottom + 4)], fill=AXIS)
        draw.text((x, bottom + 6), _fmt(t), font=font, fill=AXIS, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline=AXIS)
    draw.text(((left + right) / 2, bottom + 22), panel.xlabel, font=font, fill=AXIS, anchor="mt")
    draw.text((left - 7, top - 6), "loss", font=font, fill=AXIS, anchor="rb")
    for s in panel.series:
        pts = [(px(x), py(y)) for x, y in s.points]
        if len(pts) > 1:
            draw.line(pts, fill=s.colour, width=s.width, joint="curve")
        if s.markers or len(pts) == 1:
            for x, y in pts:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=s.colour)
    # Legend: in the corner of the panel that hides the fewest points.
    widths = [draw.textlength(s.label, font=font) for s in panel.series]
    box_w, box_h = max(widths) + 40, 18 * len(panel.series) + 4
    points = [(px(x), py(y)) for s in panel.series for x, y in s.points]
    corners = [
        (right - 10 - box_w, top + 6),
        (left + 10, top + 6),
        (right - 10 - box_w, bottom - 6 - box_h),
        (left + 10, bottom - 6 - box_h),
    ]

    def hidden(corner: tuple[float, float]) -> int:
        cx, cy = corner
        return sum(1 for x, y in points if cx - 6 <= x <= cx + box_w + 6 and cy - 6 <= y <= cy + box_h + 6)

    bx, by = min(corners, key=hidden)
    draw.rectangle([bx, by, bx + box_w, by + box_h], fill=BACKGROUND, outline=GRID)
    for i, s in enumerate(panel.series):
        y = by + 18 * i + 11
        draw.line([(bx + 6, y), (bx + 28, y)], fill=s.colour, width=max(s.width, 2))
        draw.text((bx + 34, y), s.label, font=font, fill=AXIS, anchor="lm")


def plot_loss(scalars: Scalars, out_png: Path, title: str = "", fonts: FontBook | None = None) -> LossPlot:
    """Draw the loss curves (see :func:`render_loss_png`) to ``out_png``, atomically.

    The file is rewritten only when its bytes change. Returns the path, or ``None`` with the
    reason when no loss scalar was logged (or every one is NaN/inf).
    """
    data, reason, notes = render_loss_png(scalars, title, fonts)
    if data is None:
        return LossPlot(None, reason, notes)
    write_files(out_png.parent, {out_png.name: Artefact(data)})
    return LossPlot(out_png, "", notes)


# --- the `lorabuild loss` summary ----------------------------------------------------------------


@dataclass(frozen=True)
class LossSummary:
    """What ``lorabuild loss`` shows for a build.

    Attributes:
        rows: Per-epoch losses.
        suggested: The epoch with the lowest validation loss (``None`` without validation).
        plot: The loss plot written to ``build/<name>/loss.png`` (or why not).
        notes: Damaged files, skipped values and missing fonts, for the user.
    """

    rows: list[EpochRow]
    suggested: int | None
    plot: LossPlot
    notes: tuple[str, ...]

    def table(self) -> str:
        """The per-epoch losses as an aligned text table; the suggested epoch is marked."""
        if not self.rows:
            return "no per-epoch loss was logged yet (kohya logs loss/epoch_average at the end of each epoch)"
        has_val = any(r.validation is not None for r in self.rows)
        header = f"{'epoch':>5}  {'loss':>10}" + (f"  {'validation':>10}" if has_val else "")
        lines = [header]
        for r in self.rows:
            line = f"{r.epoch:>5}  {_cell(r.loss):>10}"
            if has_val:
                line += f"  {_cell(r.validation):>10}"
            if r.epoch == self.suggested:
                line += "  <- lowest validation loss"
            lines.append(line)
        return "\n".join(lines)


class NoLossLogs(LorabuildError):
    """A build has no TensorBoard event file yet."""


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def summarise(build_dir: Path, title: str = "", draw: bool = True) -> LossSummary:
    """Read ``build_dir/logs``, write ``build_dir/loss.png`` and return what to print.

    With ``draw`` False only the logs are read (another process holds the build, which may be
    writing them): the summary's plot is then ``None`` with the reason ``not drawn``.

    Raises:
        NoLossLogs: There is no TensorBoard event file under ``build_dir/logs`` (not trained yet).
    """
    logs = build_dir / "logs"
    log = load_scalars(logs)
    if not log.files:
        raise NoLossLogs(
            f"no TensorBoard logs under {logs.as_posix()} ({EVENTS_GLOB} files): train the build first "
            "(`lorabuild train RECIPE`); kohya writes them when logging_dir is set, as lorabuild's config.toml does"
        )
    if not draw:
        plot = LossPlot(None, "not drawn")
        return LossSummary(epoch_table(log.scalars), suggest_epoch(log.scalars), plot, log.notes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FontWarning)
        plot = plot_loss(log.scalars, build_dir / "loss.png", title=title)
    font_notes = tuple(str(w.message) for w in caught if issubclass(w.category, FontWarning))
    return LossSummary(
        epoch_table(log.scalars), suggest_epoch(log.scalars), plot, log.notes + plot.notes + font_notes
    )
