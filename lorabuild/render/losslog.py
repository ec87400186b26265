"""kohya's training loss, read from its TensorBoard event files without TensorBoard.

kohya (``--logging_dir logs --log_prefix NAME_``) writes
``logs/NAME_<YYYYmmddHHMMSS>/network_train/events.out.tfevents.*``, one folder per run, so a
resumed build has several. Each file is a TFRecord stream (``u64 length``, masked CRC-32C of the
length, the bytes, masked CRC-32C of the bytes) of ``tensorboard.Event`` protobuf messages; this
module decodes the few fields that hold scalars (KOHYA.md section 9 lists kohya's tags):

- per optimizer step (x = global step): ``loss/current``, ``loss/average``, ``lr/<group>``;
- per epoch (x = epoch): ``loss/epoch_average``, ``loss/validation/epoch_average``;
- step validation (x = global step): ``loss/validation/step_average``.

:func:`load_scalars` merges every run by step (a later run wins for a step both logged) and says
which files were damaged (a CRC mismatch, a partial last record while kohya is still writing)
while keeping every good record. :func:`plot_loss` draws the loss curves with Pillow.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from lorabuild.render.fonts import Font, FontBook, system_book
from lorabuild.render.writer import Artefact, write_files

STEP_LOSS = "loss/current"
STEP_AVERAGE = "loss/average"
EPOCH_LOSS = "loss/epoch_average"
VALIDATION_EPOCH = "loss/validation/epoch_average"
VALIDATION_STEP = "loss/validation/step_average"
LOSS_TAGS = (STEP_LOSS, STEP_AVERAGE, EPOCH_LOSS, VALIDATION_EPOCH, VALIDATION_STEP)

EVENTS_GLOB = "events.out.tfevents.*"

Scalars = dict[str, list[tuple[int, float]]]


# --- CRC-32C (Castagnoli), as TFRecord uses it ---------------------------------------------------


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """``data`` framed as one TFRecord (used by tests and fixtures to write event files)."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


@dataclass(frozen=True)
class Records:
    """The records of one TFRecord file, and what was wrong with it (empty when nothing)."""

    records: list[bytes]
    damage: str = ""


def read_records(path: Path) -> Records:
    """Every intact record of a TFRecord file.

    A record whose data CRC fails is skipped and reading goes on (its length was intact); a
    length whose CRC fails, or a partial last record, ends the file. Either way ``damage`` says
    what happened, naming the file; the good records are kept.
    """
    blob = path.read_bytes()
    records: list[bytes] = []
    problems: list[str] = []
    pos = 0
    while pos < len(blob):
        if len(blob) - pos < 12:
            problems.append(f"ends in a partial record ({len(blob) - pos} bytes) at byte {pos}")
            break
        header = blob[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", blob[pos + 8 : pos + 12])
        if masked_crc32c(header) != length_crc:
            problems.append(f"record length at byte {pos} fails its CRC; the rest of the file is unreadable")
            break
        end = pos + 12 + length + 4
        if end > len(blob):
            problems.append(
                f"ends in a partial record ({len(blob) - pos} of {end - pos} bytes) at byte {pos}"
            )
            break
        data = blob[pos + 12 : pos + 12 + length]
        (data_crc,) = struct.unpack("<I", blob[end - 4 : end])
        if masked_crc32c(data) != data_crc:
            problems.append(f"record at byte {pos} fails its CRC and was skipped")
        else:
            records.append(data)
        pos = end
    damage = ""
    if problems:
        damage = f"{path}: " + "; ".join(problems) + f" (kept {len(records)} good record(s))"
    return Records(records, damage)


# --- minimal protobuf decoding -------------------------------------------------------------------


class ProtobufError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint longer than 10 bytes")


def fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """The ``(field number, wire type, value)`` triples of a protobuf message.

    Varints come back as unsigned ints; 64- and 32-bit fields and length-delimited fields as
    their raw bytes.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ProtobufError("truncated field")
        yield number, wire, value


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# TensorFlow DataType enum values -> struct format of one little-endian element.
_DTYPES = {1: "<f", 2: "<d", 3: "<i", 9: "<q", 19: "<e"}  # float, double, int32, int64, half
_DT_BFLOAT16 = 14


def _tensor_scalar(buf: bytes) -> float | None:
    """The one value of a scalar ``TensorProto``; ``None`` for anything else."""
    dtype = 0
    values: list[float] = []
    content = b""
    dims = 0
    elements = 1
    for number, wire, value in fields(buf):
        if number == 1 and isinstance(value, int):
            dtype = value
        elif number == 2 and isinstance(value, bytes):  # TensorShapeProto: dim = 2 {size = 1}
            for n, _, dim in fields(value):
                if n == 2 and isinstance(dim, bytes):
                    dims += 1
                    for dn, _, size in fields(dim):
                        if dn == 1 and isinstance(size, int):
                            elements *= _int64(size)
        elif number == 4 and isinstance(value, bytes):
            content = value
        elif number in (5, 6) and isinstance(value, bytes):  # float_val / double_val
            fmt = "<f" if number == 5 else "<d"
            width = struct.calcsize(fmt)
            if wire == 2:  # packed
                values.extend(v for (v,) in struct.iter_unpack(fmt, value[: len(value) // width * width]))
            else:
                values.append(struct.unpack(fmt, value)[0])
        elif number == 13:  # half_val: IEEE half bits in int32 varints (packed or not)
            bits = _varints(value) if isinstance(value, bytes) else [value]
            values.extend(struct.unpack("<e", struct.pack("<H", b & 0xFFFF))[0] for b in bits)
        elif number in (7, 10):  # int_val / int64_val
            ints = _varints(value) if isinstance(value, bytes) else [value]
            values.extend(float(_int64(i)) for i in ints)
    if dims and elements != 1:
        return None
    if values:
        return values[0] if len(values) == 1 else None
    if content:
        if dtype == _DT_BFLOAT16 and len(content) == 2:
            return float(struct.unpack("<f", b"\0\0" + content)[0])
        element = _DTYPES.get(dtype)
        if element is not None and len(content) == struct.calcsize(element):
            return float(struct.unpack(element, content)[0])
    return None


def _varints(buf: bytes) -> list[int]:
    out = []
    pos = 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v)
    return out


@dataclass(frozen=True)
class ScalarEvent:
    """One scalar from an event file."""

    tag: str
    step: int
    value: float
    wall_time: float


def decode_event(buf: bytes) -> tuple[float, list[ScalarEvent]]:
    """The wall time and scalar values of one serialised ``tensorboard.Event``.

    Reads ``Event{wall_time=1, step=2, summary=5}``, ``Summary{value=1}`` and
    ``Summary.Value{tag=1, simple_value=2, tensor=8}``; other fields are skipped.
    """
    wall_time = 0.0
    step = 0
    summaries: list[bytes] = []
    for number, _, value in fields(buf):
        if number == 1 and isinstance(value, bytes) and len(value) == 8:
            wall_time = struct.unpack("<d", value)[0]
        elif number == 2 and isinstance(value, int):
            step = _int64(value)
        elif number == 5 and isinstance(value, bytes):
            summaries.append(value)
    events = []
    for summary in summaries:
        for number, _, value in fields(summary):
            if number != 1 or not isinstance(value, bytes):
                continue
            tag = ""
            scalar: float | None = None
            for vn, _, v in fields(value):
                if vn == 1 and isinstance(v, bytes):
                    tag = v.decode("utf-8", "replace")
                elif vn == 2 and isinstance(v, bytes) and len(v) == 4:
                    scalar = struct.unpack("<f", v)[0]
                elif vn == 8 and isinstance(v, bytes):
                    scalar = _tensor_scalar(v)
            if tag and scalar is not None:
                events.append(ScalarEvent(tag, step, float(scalar), wall_time))
    return wall_time, events


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
    from io import BytesIO

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


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def summarise(build_dir: Path, title: str = "") -> LossSummary:
    """Read ``build_dir/logs``, write ``build_dir/loss.png`` and return what to print.

    Raises:
        LorabuildError: There is no TensorBoard event file under ``build_dir/logs`` (not trained yet).
    """
    import warnings

    from lorabuild.problems import LorabuildError
    from lorabuild.render.fonts import FontWarning

    logs = build_dir / "logs"
    log = load_scalars(logs)
    if not log.files:
        raise LorabuildError(
            f"no TensorBoard logs under {logs.as_posix()} ({EVENTS_GLOB} files): train the build first "
            "(`lorabuild train RECIPE`); kohya writes them when logging_dir is set, as lorabuild's config.toml does"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FontWarning)
        plot = plot_loss(log.scalars, build_dir / "loss.png", title=title)
    font_notes = tuple(str(w.message) for w in caught if issubclass(w.category, FontWarning))
    return LossSummary(
        epoch_table(log.scalars), suggest_epoch(log.scalars), plot, log.notes + plot.notes + font_notes
    )
