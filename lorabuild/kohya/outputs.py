"""What kohya names the files a training run leaves in ``output/``, and how a run resumes from them.

With ``--output_name NAME``, kohya saves an intermediate epoch as ``NAME-0000EE.ext`` and the last
one as ``NAME.ext``; with ``--save_state``, each intermediate save's accelerate state as the
folder ``NAME-0000EE-state`` and the last as ``NAME-state`` (step-based saves put ``-stepNNNNNNNN``
where the epoch goes). ``--resume STATE --initial_epoch E+1`` continues after epoch E's state.
"""

from __future__ import annotations

import re
from pathlib import Path

STATE_FILES = ("train_state.json", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")
"""Files of an accelerate state folder that kohya's resume needs; ``random_states_0.pkl`` is written last."""


def state_folder(name: str, epoch: int) -> str:
    """The state folder kohya writes after intermediate ``epoch``, relative to the build folder."""
    return f"output/{name}-{epoch:06d}-state"


def state_is_complete(folder: Path) -> bool:
    """Whether an accelerate state folder was written to the end."""
    return all((folder / name).is_file() for name in STATE_FILES) and any(
        (folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")
    )


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
