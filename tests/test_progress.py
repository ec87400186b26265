"""Reading kohya's progress from its output (lines recorded from a real CPU run of the pinned
kohya) and showing it on a terminal and in a plain log."""

from __future__ import annotations

import io
import math

import pytest

from lorabuild.kohya.progress import Display, Kind, Progress, Tracker, format_duration, parse_bar

# Recorded from `lorabuild demo` (kohya 48d368f, CPU), after the pump split it on \r and \n.
RECORDED = [
    "prepare optimizer, data loader etc.",
    "override steps. steps for 10 epochs is / 指定エポックまでのステップ数: 40",
    "running training / 学習開始",
    "  total optimization steps / 学習ステップ数: 40",
    "",
    "steps:   0%|          | 0/40 [00:00<?, ?it/s]",
    "epoch 1/10",
    "",
    "epoch is incremented. current_epoch: 0, epoch: 1",
    "",
    "steps:   2%|▎         | 1/40 [01:13<47:31, 73.10s/it]",
    "steps:   2%|▎         | 1/40 [01:13<47:31, 73.10s/it, avr_loss=1.12]",
    "steps:   5%|▌         | 2/40 [02:38<50:14, 79.33s/it, avr_loss=1.12]",
    "steps:   5%|▌         | 2/40 [02:38<50:14, 79.33s/it, avr_loss=1.18]",
    "steps:  10%|█         | 4/40 [04:48<43:17, 72.16s/it, avr_loss=1.17]",
    "saving checkpoint: output/Kazari_v1-000001.safetensors",
    "",
    "epoch 2/10",
    "",
]


def test_parse_bar_reads_description_counts_rate_and_postfix() -> None:
    assert parse_bar("steps:  37%|███▋      | 370/1000 [05:12<08:52,  1.18it/s, avr_loss=0.0871]") == (
        "steps",
        370,
        1000,
        1.18,
        {"avr_loss": "0.0871"},
    )
    desc, n, total, rate, postfix = parse_bar(
        "steps:   5%|▌  | 2/40 [02:38<50:14, 79.33s/it, avr_loss=1.18]"
    ) or (
        "",
        0,
        0,
        None,
        {},
    )
    assert (desc, n, total, postfix) == ("steps", 2, 40, {"avr_loss": "1.18"})
    assert rate == pytest.approx(1 / 79.33)
    assert parse_bar("steps:   0%|          | 0/40 [00:00<?, ?it/s]") == ("steps", 0, 40, None, {})
    assert parse_bar("100%|██████████| 4/4 [00:02<00:00,  1.41it/s]") == ("", 4, 4, 1.41, {})
    assert parse_bar("Loading pipeline components...:  50%|█████     | 2/4 [00:01<00:01,  1.83it/s]") == (
        "Loading pipeline components...",
        2,
        4,
        1.83,
        {},
    )
    assert parse_bar("steps: 80%|████████  | 32/40 [1:19:44<4:56, 37.03s/it, avr_loss=nan]") is not None
    assert parse_bar("epoch 1/10") is None
    assert parse_bar("num train images * repeats / 学習画像の数×繰り返し回数: 8") is None


def test_tracker_follows_epochs_steps_loss_and_saves() -> None:
    tracker = Tracker(total=40, epochs=10)
    kinds = [tracker.feed(line) for line in RECORDED]
    assert kinds.count(Kind.STEP) == 6 and kinds.count(Kind.EPOCH) == 2 and kinds.count(Kind.SAVED) == 1
    p = tracker.progress
    assert (p.epoch, p.epochs, p.step, p.total, p.loss) == (2, 10, 4, 40, 1.17)
    assert p.saved == ["output/Kazari_v1-000001.safetensors"]
    assert p.rate == pytest.approx(1 / 72.16)
    assert p.eta == pytest.approx(36 * 72.16)
    assert not p.finished
    assert tracker.feed("model saved.") is Kind.DONE and p.finished


def test_after_a_resume_steps_count_on_from_the_resumed_epoch() -> None:
    """kohya's bar restarts at 0 when resuming; the build's step count does not."""
    tracker = Tracker(total=8, epochs=2, start_step=4)
    tracker.feed("steps:   0%|          | 0/8 [00:00<?, ?it/s]")
    tracker.feed("steps:  12%|█▎        | 1/8 [00:03<00:21,  3.00s/it, avr_loss=0.5]")
    p = tracker.progress
    assert (p.step, p.total) == (5, 8)
    assert p.eta == pytest.approx(9.0)  # 3 steps left at 3 s each, not kohya's 21 s


def test_a_nan_loss_is_remembered_with_its_step() -> None:
    tracker = Tracker(total=40)
    tracker.feed("steps:  5%|▌  | 2/40 [00:02<00:38, 1.00it/s, avr_loss=0.3]")
    tracker.feed("steps:  8%|▊  | 3/40 [00:03<00:37, 1.00it/s, avr_loss=nan]")
    tracker.feed("steps: 10%|█  | 4/40 [00:04<00:36, 1.00it/s, avr_loss=nan]")
    assert tracker.progress.nan_step == 3 and math.isnan(tracker.progress.loss or 0)


def test_summary_and_durations() -> None:
    p = Progress(epoch=2, epochs=10, step=37, total=60, loss=0.0871, rate=2.0)
    assert p.summary() == "epoch 2/10  step 37/60 (61%)  loss 0.0871  ETA 0:00:12"
    assert Progress(step=0).summary() == "step 0"
    assert format_duration(3 * 3600 + 61) == "3:01:01"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_display_passes_text_through_and_prints_progress_sparingly() -> None:
    out = io.StringIO()
    clock = Clock()
    display = Display(Tracker(total=40, epochs=10), out, tty=False, every=30, clock=clock)
    for line in RECORDED:
        clock.now += 2
        display(line)
    display("caching latents...")
    display(" 50%|█████     | 2/4 [00:01<00:01,  1.37it/s]")  # other bars: not in a plain log
    display.close()
    text = out.getvalue()
    assert "steps:" not in text and "1.37it/s" not in text
    assert "epoch 1/10\n" in text and "saving checkpoint: output/Kazari_v1-000001.safetensors\n" in text
    progress_lines = [line for line in text.splitlines() if line.startswith("progress:")]
    # the first step done, then one at epoch 2 (the others came within 30 s)
    assert progress_lines == [
        "progress: epoch 1/10  step 1/40 (2%)  loss 1.12  ETA 0:47:31",
        "progress: epoch 2/10  step 4/40 (10%)  loss 1.17  ETA 0:43:18",
    ]
    assert "\n\n\n" not in text  # kohya's doubled blank lines collapse


def test_plain_display_prints_the_last_step_with_its_own_loss() -> None:
    """kohya draws each step twice, first with the previous step's loss: the second one counts."""
    out = io.StringIO()
    display = Display(Tracker(total=2), out, tty=False, every=1000, clock=Clock())
    display("steps:   0%|  | 0/2 [00:00<?, ?it/s]")
    display("steps:  50%|# | 1/2 [00:01<00:01,  1.00it/s]")
    display("steps:  50%|# | 1/2 [00:01<00:01,  1.00it/s, avr_loss=0.5]")
    display("steps: 100%|##| 2/2 [00:02<00:00,  1.00it/s, avr_loss=0.5]")
    display("steps: 100%|##| 2/2 [00:02<00:00,  1.00it/s, avr_loss=0.4]")
    display.close()
    assert out.getvalue().splitlines() == [
        "progress: step 1/2 (50%)  loss 0.5  ETA 0:00:01",
        "progress: step 2/2 (100%)  loss 0.4",
    ]


def test_terminal_display_keeps_one_status_line_below_the_text() -> None:
    out = io.StringIO()
    display = Display(Tracker(total=40, epochs=10), out, tty=True)
    display("epoch 1/10")
    display("steps:   2%|▎         | 1/40 [01:13<47:31, 73.10s/it, avr_loss=1.12]")
    display("saving checkpoint: output/X-000001.safetensors")
    display("caching latents: 100%|██████████| 4/4 [00:02<00:00,  1.41it/s]")
    display.close()
    text = out.getvalue()
    status = "[....................] epoch 1/10  step 1/40 (2%)  loss 1.12  ETA 0:47:31"
    assert text.startswith("epoch 1/10\n\r\x1b[K" + status)
    # a kohya line clears the status, prints, and redraws it
    assert "\r\x1b[Ksaving checkpoint: output/X-000001.safetensors\n" + status in text
    assert "\r\x1b[Kcaching latents: 4/4" in text
    assert text.endswith("\n")
