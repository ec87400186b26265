"""Reading kohya's TensorBoard logs without TensorBoard (render/tfevents.py, render/losslog.py), and plotting the loss with Pillow."""

from __future__ import annotations

import math
import os
import shutil
import struct
from pathlib import Path

import pytest
from PIL import Image

from lorabuild.render import losslog
from lorabuild.render.fonts import FontBook
from lorabuild.render.losslog import (
    EPOCH_LOSS,
    STEP_AVERAGE,
    STEP_LOSS,
    VALIDATION_EPOCH,
    epoch_table,
    load_scalars,
    nice_ticks,
    plot_loss,
    read_scalars,
    suggest_epoch,
)
from lorabuild.render.tfevents import crc32c, decode_event, read_records, tfrecord
from tests.conftest import Project, run_lorabuild

FIXTURE = Path(__file__).parent / "data" / "kohya_logs"  # a real kohya run: 40 steps, 10 epochs

# --- a tiny writer of TensorBoard events (protobuf by hand) ---------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def simple_value(tag: str, value: float) -> bytes:
    """A ``Summary.Value`` with ``simple_value`` (what torch's SummaryWriter writes)."""
    return _field(1, 2, tag.encode()) + _field(2, 5, struct.pack("<f", value))


def tensor_value(tag: str, tensor: bytes) -> bytes:
    """A ``Summary.Value`` holding a ``TensorProto`` (TF2-style scalars)."""
    return _field(1, 2, tag.encode()) + _field(8, 2, tensor)


def event(step: int, values: list[bytes], wall_time: float = 1_700_000_000.0) -> bytes:
    summary = b"".join(_field(1, 2, v) for v in values)
    return _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step)) + _field(5, 2, summary)


def write_events(path: Path, events: list[bytes], wall_time: float = 1_700_000_000.0) -> Path:
    """An event file as TensorBoard writes it: a ``file_version`` event, then ``events``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    file_version = _field(1, 1, struct.pack("<d", wall_time)) + _field(3, 2, b"brain.Event:2")
    path.write_bytes(tfrecord(file_version) + b"".join(tfrecord(e) for e in events))
    return path


def write_run(
    logs: Path, folder: str, steps: range, loss: float, start: float, epochs: range = range(0)
) -> Path:
    """A kohya-like run folder: per-step loss (constant ``loss``), per-epoch averages."""
    evs = [
        event(s, [simple_value(STEP_LOSS, loss), simple_value(STEP_AVERAGE, loss)], start + s) for s in steps
    ]
    evs += [event(e, [simple_value(EPOCH_LOSS, loss + e / 100)], start + 1000 + e) for e in epochs]
    return write_events(
        logs / folder / "network_train" / f"events.out.tfevents.{int(start)}.host.1.0", evs, start
    )


# --- records and decoding ------------------------------------------------------------------------


def test_crc32c_matches_the_castagnoli_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


def test_the_real_kohya_log_reads_as_kohya_wrote_it() -> None:
    log = load_scalars(FIXTURE)
    assert log.notes == ()
    assert len(log.files) == 1
    s = log.scalars
    assert set(s) == {STEP_LOSS, STEP_AVERAGE, EPOCH_LOSS, "lr/textencoder", "lr/unet", "lr/group1"}
    assert [x for x, _ in s[STEP_LOSS]] == list(range(1, 41))
    assert [x for x, _ in s[EPOCH_LOSS]] == list(range(1, 11))
    # values as TensorBoard's EventAccumulator reports them for this file
    assert s[STEP_LOSS][0] == (1, pytest.approx(1.1163573265075684, abs=1e-7))
    assert s[STEP_AVERAGE][-1] == (40, pytest.approx(1.0224249362945557, abs=1e-7))
    assert s["lr/unet"][-1] == (40, pytest.approx(3.9999998989515007e-05, rel=1e-6))
    assert s[EPOCH_LOSS][-1] == (10, pytest.approx(1.0224249362945557, abs=1e-7))


def test_reader_agrees_with_tensorboards_event_accumulator(tmp_path: Path) -> None:
    ea_module = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard is not installed here (it is in kohya's venv: /work/kenv/bin/python -m pytest)",
    )
    write_run(tmp_path, "B_20250101000000", range(1, 6), 0.5, 1_700_000_000.0, epochs=range(1, 3))
    for folder in (FIXTURE, tmp_path):
        ours = read_scalars(folder)
        for path in losslog.event_files(folder):
            acc = ea_module.EventAccumulator(str(path))
            acc.Reload()
            for tag in acc.Tags()["scalars"]:
                theirs = [(e.step, e.value) for e in acc.Scalars(tag)]
                assert ours[tag] == [(st, pytest.approx(v, rel=1e-7)) for st, v in theirs], tag


def test_tensor_scalars_decode_float_val_double_val_and_tensor_content() -> None:
    float_val = _field(1, 0, _varint(1)) + _field(5, 2, struct.pack("<f", 0.25))  # DT_FLOAT, packed
    double_val = _field(1, 0, _varint(2)) + _field(6, 1, struct.pack("<d", 0.125))  # DT_DOUBLE, unpacked
    content = _field(1, 0, _varint(2)) + _field(4, 2, struct.pack("<d", 0.75))  # raw bytes
    half = _field(1, 0, _varint(19)) + _field(13, 2, _varint(struct.unpack("<H", struct.pack("<e", 1.5))[0]))
    vector = _field(1, 0, _varint(1)) + _field(5, 2, struct.pack("<ff", 1.0, 2.0))  # not a scalar
    raw = event(
        -3,
        [
            tensor_value("a", float_val),
            tensor_value("b", double_val),
            tensor_value("c", content),
            tensor_value("d", half),
            tensor_value("e", vector),
        ],
        wall_time=12.5,
    )
    wall_time, values = decode_event(raw)
    assert wall_time == 12.5
    assert {v.tag: v.value for v in values} == {"a": 0.25, "b": 0.125, "c": 0.75, "d": 1.5}
    assert {v.step for v in values} == {-3}  # int64 two's complement


def test_a_record_failing_its_crc_is_skipped_and_the_file_named(tmp_path: Path) -> None:
    path = write_events(
        tmp_path / "events.out.tfevents.1.h", [event(s, [simple_value(STEP_LOSS, s)]) for s in (1, 2, 3)]
    )
    records = [event(s, [simple_value(STEP_LOSS, s)]) for s in (1, 2, 3)]
    blob = bytearray(path.read_bytes())
    second = len(blob) - len(tfrecord(records[2])) - 4 - len(records[1]) // 2  # inside step 2's data
    blob[second] ^= 0xFF
    path.write_bytes(bytes(blob))
    records = read_records(path)
    assert len(records.records) == 3  # file_version + steps 1 and 3
    assert str(path) in records.damage and "fails its CRC and was skipped" in records.damage
    log = load_scalars(tmp_path)
    assert log.scalars[STEP_LOSS] == [(1, 1.0), (3, 3.0)]
    assert any(str(path) in n for n in log.notes)


def test_a_length_failing_its_crc_ends_the_file(tmp_path: Path) -> None:
    path = write_events(
        tmp_path / "events.out.tfevents.1.h", [event(s, [simple_value(STEP_LOSS, s)]) for s in (1, 2)]
    )
    first_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    blob = bytearray(path.read_bytes())
    blob[12 + first_len + 4] ^= 0x01  # the second record's length
    path.write_bytes(bytes(blob))
    records = read_records(path)
    assert len(records.records) == 1  # the file_version record before the damage is kept
    assert "record length at byte" in records.damage and "rest of the file is unreadable" in records.damage


def test_a_truncated_file_keeps_its_complete_records(tmp_path: Path) -> None:
    path = write_events(
        tmp_path / "events.out.tfevents.1.h", [event(s, [simple_value(STEP_LOSS, s)]) for s in (1, 2, 3)]
    )
    blob = path.read_bytes()
    for cut in (5, 20):  # inside the last record's header, inside its data
        path.write_bytes(blob[:-cut])
        log = load_scalars(tmp_path)
        assert log.scalars[STEP_LOSS] == [(1, 1.0), (2, 2.0)]
        assert len(log.notes) == 1 and str(path) in log.notes[0] and "partial record" in log.notes[0]


def test_garbage_records_are_counted_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1.h"
    path.write_bytes(tfrecord(b"\xff\xff\xff") + tfrecord(event(1, [simple_value(STEP_LOSS, 0.5)])))
    log = load_scalars(tmp_path)
    assert log.scalars[STEP_LOSS] == [(1, 0.5)]
    assert "1 record(s) are not TensorBoard events" in log.notes[0]


def test_resumed_runs_merge_by_step_later_run_wins(tmp_path: Path) -> None:
    # The later run sorts first by name: the wall time of its events decides, not the name.
    write_run(tmp_path, "B_20250101000000", range(1, 11), 1.0, 1_700_000_000.0, epochs=range(1, 3))
    write_run(tmp_path, "A_20250102000000", range(6, 16), 2.0, 1_700_100_000.0, epochs=range(2, 4))
    s = read_scalars(tmp_path)
    assert [x for x, _ in s[STEP_LOSS]] == list(range(1, 16))
    assert dict(s[STEP_LOSS]) == {**{i: 1.0 for i in range(1, 6)}, **{i: 2.0 for i in range(6, 16)}}
    assert [e for e, _ in s[EPOCH_LOSS]] == [1, 2, 3]
    assert [v for _, v in s[EPOCH_LOSS]] == pytest.approx([1.01, 2.02, 2.03])


def test_no_logs_at_all(tmp_path: Path) -> None:
    assert read_scalars(tmp_path / "does-not-exist") == {}
    assert load_scalars(tmp_path).files == ()


# --- epochs --------------------------------------------------------------------------------------


def test_suggest_epoch_is_the_lowest_finite_validation_loss() -> None:
    scalars = {
        VALIDATION_EPOCH: [(1, 0.9), (2, math.nan), (3, 0.4), (4, 0.4), (5, 0.6)],
        EPOCH_LOSS: [(5, 0.1)],
    }
    assert suggest_epoch(scalars) == 3
    assert suggest_epoch({EPOCH_LOSS: [(1, 0.5), (2, 0.1)]}) is None
    assert suggest_epoch({VALIDATION_EPOCH: [(1, math.nan)]}) is None


def test_epoch_table_joins_training_and_validation() -> None:
    rows = epoch_table({EPOCH_LOSS: [(1, 0.5), (2, 0.4)], VALIDATION_EPOCH: [(2, 0.6)]})
    assert [(r.epoch, r.loss, r.validation) for r in rows] == [(1, 0.5, None), (2, 0.4, 0.6)]


# --- plotting ------------------------------------------------------------------------------------


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0.93, 1.24, 6) == [1.0, 1.1, 1.2]
    assert nice_ticks(1, 40, 8) == [10, 20, 30, 40]
    assert nice_ticks(0, 7e-5, 6) == pytest.approx([0, 2e-5, 4e-5, 6e-5])
    assert len(nice_ticks(2.0, 2.0)) >= 2  # a flat line still gets an axis


def _ink(img: Image.Image, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> int:
    counts = img.crop(box).convert("RGB").getcolors(1 << 24) or []
    return sum(n for n, c in counts if c == colour)


def test_plot_draws_both_panels_with_curves_axes_and_legend(tmp_path: Path) -> None:
    scalars = read_scalars(FIXTURE)
    result = plot_loss(scalars, tmp_path / "loss.png", title="Kazari_v1", fonts=FontBook([]))
    assert result.path == tmp_path / "loss.png" and result.reason == "" and result.notes == ()
    with Image.open(result.path) as img:
        assert img.size == (losslog.WIDTH, losslog.HEIGHT)
        top, bottom = (
            img.crop((0, 0, img.width, img.height // 2)),
            img.crop((0, img.height * 2 // 3, img.width, img.height)),
        )
        assert _ink(top, (0, 0, top.width, top.height), losslog.COLOURS[STEP_AVERAGE]) > 200
        assert _ink(top, (0, 0, top.width, top.height), losslog.COLOURS[STEP_LOSS]) > 100
        assert _ink(bottom, (0, 0, bottom.width, bottom.height), losslog.COLOURS[EPOCH_LOSS]) > 100
        # tick labels left of the axis
        assert _ink(img, (0, 60, 70, img.height - 40), losslog.AXIS) > 50


def test_plot_skips_nan_and_inf_and_says_how_many(tmp_path: Path) -> None:
    scalars = {
        STEP_LOSS: [(1, 1.0), (2, math.nan), (3, math.inf), (4, 0.5)],
        STEP_AVERAGE: [(1, 1.0), (4, 0.7)],
    }
    result = plot_loss(scalars, tmp_path / "loss.png", fonts=FontBook([]))
    assert result.path is not None
    assert result.notes == ("2 NaN/inf value(s) of loss/current not drawn",)
    assert plot_loss({STEP_LOSS: [(1, math.nan)]}, tmp_path / "nan.png").reason.startswith("every loss value")
    assert not (tmp_path / "nan.png").exists()


def test_plot_with_only_epoch_losses_and_validation(tmp_path: Path) -> None:
    scalars = {EPOCH_LOSS: [(1, 0.5), (2, 0.4), (3, 0.35)], VALIDATION_EPOCH: [(1, 0.6), (2, 0.5), (3, 0.55)]}
    result = plot_loss(scalars, tmp_path / "loss.png", fonts=FontBook([]))
    assert result.path is not None
    with Image.open(result.path) as img:
        assert _ink(img, (0, 0, img.width, img.height), losslog.COLOURS[VALIDATION_EPOCH]) > 50


def test_no_loss_scalars_means_no_plot_and_a_reason(tmp_path: Path) -> None:
    result = plot_loss({"lr/unet": [(1, 1e-4)]}, tmp_path / "loss.png")
    assert result.path is None
    assert "no loss scalars were logged" in result.reason and "lr/unet" in result.reason
    assert plot_loss({}, tmp_path / "loss.png").reason.endswith("tags found: none)")
    assert not (tmp_path / "loss.png").exists()


def test_an_unchanged_plot_is_not_rewritten(tmp_path: Path) -> None:
    scalars = {STEP_LOSS: [(1, 1.0), (2, 0.5)]}
    out = tmp_path / "loss.png"
    plot_loss(scalars, out, fonts=FontBook([]))
    os.utime(out, ns=(1_000_000_000, 1_000_000_000))
    plot_loss(scalars, out, fonts=FontBook([]))
    assert out.stat().st_mtime_ns == 1_000_000_000
    plot_loss({STEP_LOSS: [(1, 1.0), (2, 0.6)]}, out, fonts=FontBook([]))
    assert out.stat().st_mtime_ns != 1_000_000_000
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]  # no temporary files left


def test_the_fixture_stays_small() -> None:
    size = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert size < 50_000


# --- lorabuild loss ------------------------------------------------------------------------------


def test_loss_command_prints_epochs_and_writes_the_plot(project: Project) -> None:
    logs = project.root / "build" / "Test_v1" / "logs"
    shutil.copytree(FIXTURE, logs)
    val = [
        event(e, [simple_value(VALIDATION_EPOCH, 1.0 + abs(e - 4) / 100)], 1_795_643_900.0 + e)
        for e in range(1, 11)
    ]
    write_events(
        logs / "Test_v1_20261125220000" / "network_train" / "events.out.tfevents.1795643900.vm.1.0",
        val,
        1_795_643_900.0,
    )
    result = run_lorabuild("loss", "recipe.toml", cwd=project.root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["epoch", "loss", "validation"]
    assert lines[1].split()[:2] == ["1", "1.1637"]
    assert "<- lowest validation loss" in lines[4] and lines[4].split()[0] == "4"
    assert lines[-1] == "wrote build/Test_v1/loss.png"
    assert (logs.parent / "loss.png").is_file()


def test_loss_command_before_training_says_what_to_do(project: Project) -> None:
    result = run_lorabuild("loss", "recipe.toml", cwd=project.root)
    assert result.returncode == 1
    assert "no TensorBoard logs under" in result.stderr and "lorabuild train RECIPE" in result.stderr
    assert "Traceback" not in result.stderr
