"""What kohya names the files a training run leaves in ``output/``, and how a run resumes from them.

:class:`TrainingOutputs` is every file a run saves, by epoch (the plan's
:attr:`~lorabuild.plan.plan.Plan.saves`). With ``--output_name NAME``, kohya saves an intermediate epoch as ``NAME-0000EE.ext`` and the last
one as ``NAME.ext``; with ``--save_state``, each intermediate save's accelerate state as the
folder ``NAME-0000EE-state`` and the last as ``NAME-state`` (step-based saves put ``-stepNNNNNNNN``
where the epoch goes). ``--resume STATE --initial_epoch E+1`` continues after epoch E's state.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

OUTPUT_DIR = "output"
"""The ``--output_dir`` lorabuild gives kohya, relative to the build folder (where kohya runs)."""

STATE_FILES = ("train_state.json", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")
"""Files of an accelerate state folder that kohya's resume needs; ``random_states_0.pkl`` is written last."""


def state_is_complete(folder: Path) -> bool:
    """Whether an accelerate state folder was written to the end: every file there and whole.

    A file that merely exists is not enough: a run killed while saving leaves a truncated one, and
    accelerate's ``load_state`` skips an unreadable ``random_states_0.pkl`` with only an info line,
    so the resumed run would draw other noise than an uninterrupted one, silently. ``torch.save``
    writes zip archives, whole when their end-of-archive record is there; the network's weights are
    whole when the safetensors header's last tensor ends at the end of the file.
    """
    network = next(
        (folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None
    )
    if network is None or not all((folder / name).is_file() for name in STATE_FILES):
        return False
    torch_files = [folder / n for n in STATE_FILES if n.endswith((".bin", ".pkl"))]
    if network.suffix == ".bin":
        torch_files.append(network)
    elif not _whole_safetensors(network):
        return False
    return all(zipfile.is_zipfile(f) for f in torch_files) and _whole_json(folder / "train_state.json")


def _whole_safetensors(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
        return bool(8 + size + max(ends, default=0) == path.stat().st_size)
    except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError):
        return False


def _whole_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def resume_args(state: str, epoch: int) -> list[str]:
    """kohya's options that continue a run after ``epoch`` from its saved ``state`` folder.

    ``--initial_epoch`` numbers the epochs on, whatever step count the state holds.
    ``--skip_until_initial_step`` is not used: at an epoch boundary there is nothing to skip, and
    kohya miscounts its epochs with it under gradient accumulation (KOHYA.md 6.10 rows 154-158).
    """
    return ["--resume", state, "--initial_epoch", str(epoch + 1)]


def saved_name_pattern(name: str) -> re.Pattern[str]:
    """Every name kohya gives what a run with ``--output_name name`` saves: LoRA files and states."""
    return re.compile(rf"^{re.escape(name)}(?:-\d{{6}}|-step\d{{8}})?(?:-state|\.(?:safetensors|ckpt|pt))$")


def saved_epochs(epochs: int, save_every_n_epochs: int | None) -> list[int]:
    """The epochs whose LoRA file a run keeps: every Nth, and always the last."""
    every = save_every_n_epochs or epochs
    return [e for e in range(1, epochs) if e % every == 0] + [epochs]


@dataclass(frozen=True, kw_only=True)
class TrainingOutputs:
    """What a training run saves in ``output/``, in kohya's names (paths relative to the build folder).

    Attributes:
        name: kohya's ``output_name``.
        ext: The file extension (kohya's ``save_model_as``).
        epochs: Epochs trained (``max_train_epochs``).
        saved: The epochs whose file is kept (every ``save_every_n_epochs``, and the last).
        save_state: Whether each save comes with its training state (kohya's ``save_state``).
    """

    name: str
    ext: str
    epochs: int
    saved: tuple[int, ...]
    save_state: bool

    def epoch_file(self, epoch: int) -> str:
        """An epoch's LoRA file as kohya names intermediate saves: ``output/NAME-0000EE.ext``."""
        return f"{OUTPUT_DIR}/{self.name}-{epoch:06d}.{self.ext}"

    def kohya_file(self, epoch: int) -> str:
        """The file kohya itself writes for ``epoch`` (the last one without a number)."""
        return f"{OUTPUT_DIR}/{self.name}.{self.ext}" if epoch == self.epochs else self.epoch_file(epoch)

    def state(self, epoch: int) -> str:
        """The state folder kohya writes after ``epoch`` (not the last)."""
        return f"{OUTPUT_DIR}/{self.name}-{epoch:06d}-state"

    def expected(self) -> tuple[str, ...]:
        """Files a training run leaves.

        Every saved epoch as ``NAME-0000EE.ext``, the last included: kohya saves the last epoch only
        as ``NAME.ext``, and ``lorabuild train`` links it to its numbered name once training
        succeeded, so both names are listed. With ``save_state``, each intermediate save's state
        folder (what a resume starts from) and the final state.
        """
        files = [self.epoch_file(e) for e in self.saved]
        files.append(f"{OUTPUT_DIR}/{self.name}.{self.ext}")
        if self.save_state:
            files.extend(self.state(e) + "/" for e in self.saved[:-1])
            files.append(f"{OUTPUT_DIR}/{self.name}-state/")
        return tuple(files)
