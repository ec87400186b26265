"""A stand-in for ``accelerate launch`` and kohya's train_network.py, for testing lorabuild's
plumbing (incremental runs, the lock, resume bookkeeping, exit statuses) in well under a second.

It is never evidence that training works: tests/test_train.py runs the real trainer.

It reads the compiled config.toml and plan.json, prints what kohya prints (tqdm bars split by
carriage returns, ``epoch N/M``, ``saving checkpoint: ...``, ``model saved.``), writes small
safetensors files with kohya's ``ss_epoch``/``ss_steps`` metadata, state folders with
``--save_state``, and mimics kohya's resume: ``--resume`` + ``--initial_epoch`` skip epochs, and
the global step restarts at 0. ``FAKE_KOHYA`` selects a failure: ``no_data`` (exit 0, saves
nothing), ``oom`` (traceback, exit 1), ``nan`` (loss NaN), ``kill_after:N`` (SIGKILL itself
after saving epoch N), ``hang`` (waits for a signal after the first step). Every call appends
its argv to ``$FAKE_KOHYA_CALLS`` when set.

Its ``gen_img.py`` (:data:`FAKE_GEN_IMG`) writes the small PNGs its prompt file names with
``--f``; ``FAKE_GEN_IMG=oom`` fails, ``skip_last`` leaves the last one out.

Its ``flux_minimal_inference.py`` (:data:`FAKE_FLUX_INFERENCE`) talks like kohya's ``--interactive``
loop: ``Enter prompt ...``, one stdin line, a PNG named by the second (``%Y%m%d_%H%M%S.png``, so
unpaced lines overwrite each other), ``Saved image to PATH``; an empty line ends it. It stops with
status 3 when a line arrives before it asked for one (the feeder did not wait for its output), and
logs its argv and every line to ``$FAKE_FLUX_CALLS``. ``FAKE_FLUX=interrupt_after:N`` sends lorabuild
SIGINT once the Nth image has been moved away.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

TRAINER = r"""
import json, os, signal, struct, sys, time, tomllib, zipfile
from pathlib import Path

args = sys.argv[1:]
if os.environ.get("FAKE_KOHYA_CALLS"):
    with open(os.environ["FAKE_KOHYA_CALLS"], "a") as f:
        f.write(json.dumps(args) + "\n")
config = {}
for section in tomllib.loads(Path(args[args.index("--config_file") + 1]).read_text()).values():
    config.update(section)
plan = json.loads(Path("plan.json").read_text())
mode = os.environ.get("FAKE_KOHYA", "ok")
name, ext = config["output_name"], config.get("save_model_as", "safetensors")
epochs, total = int(config["max_train_epochs"]), int(plan["total_steps"])
per_epoch = total // epochs
every = config.get("save_every_n_epochs")
save_state = config.get("save_state", False)
out = Path(config["output_dir"])
print("running training / 学習開始", flush=True)
print(f"  total optimization steps / 学習ステップ数: {total}", flush=True)
if mode == "no_data":
    print("No data found. Please verify arguments (train_data_dir must be the parent of folders with images)")
    sys.exit(0)
if mode == "oom":
    print("Traceback (most recent call last):", file=sys.stderr)
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.", file=sys.stderr)
    sys.exit(1)

start_epoch = 0
if "--resume" in args:
    state = Path(args[args.index("--resume") + 1])
    assert (state / "train_state.json").is_file(), state
    print(f"resume from {state}", flush=True)
    if "--initial_epoch" in args:
        start_epoch = int(args[args.index("--initial_epoch") + 1]) - 1
    else:
        start_epoch = json.loads((state / "train_state.json").read_text())["current_step"] // per_epoch


def save(path, epoch, step):
    meta = {"ss_epoch": str(epoch), "ss_steps": str(step), "ss_output_name": name}
    header = json.dumps({"__metadata__": meta, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (-len(header) % 8)
    print(f"\nsaving checkpoint: {path}", flush=True)
    Path(path).write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<f", float(epoch)))


global_step = 0  # kohya restarts its global step when resuming
sys.stderr.write(f"steps:   0%|          | 0/{total} [00:00<?, ?it/s]")
sys.stderr.flush()
for epoch in range(start_epoch, epochs):
    print(f"\nepoch {epoch + 1}/{epochs}\n", flush=True)
    for _ in range(per_epoch):
        global_step += 1
        loss = "nan" if mode == "nan" and global_step > 1 else f"{1 / global_step:.4f}"
        pct = 100 * global_step // total
        sys.stderr.write(f"\rsteps: {pct:3d}%|#   | {global_step}/{total} [00:01<00:01, 50.00it/s, avr_loss={loss}]")
        sys.stderr.flush()
        if mode == "hang":
            print("\nwaiting", flush=True)
            while True:
                time.sleep(0.05)
    out.mkdir(exist_ok=True)
    if epoch + 1 < epochs and every and (epoch + 1) % every == 0:
        save(out / f"{name}-{epoch + 1:06d}.{ext}", epoch + 1, global_step)
        if save_state:
            state = out / f"{name}-{epoch + 1:06d}-state"
            state.mkdir(exist_ok=True)
            (state / "train_state.json").write_text(json.dumps({"current_epoch": epoch + 1, "current_step": global_step}))
            # Whole files, as accelerate's save_state leaves them: torch.save's zip archives, safetensors.
            for f in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
                with zipfile.ZipFile(state / f, "w") as archive:
                    archive.writestr("archive/data.pkl", b"x")
            header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
            (state / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    if mode.startswith("kill_after:") and epoch + 1 == int(mode.split(":")[1]):
        os.kill(os.getpid(), signal.SIGKILL)
sys.stderr.write("\n")
save(out / f"{name}.{ext}", epochs, global_step)
if save_state:
    (out / f"{name}-state").mkdir(exist_ok=True)
    (out / f"{name}-state" / "train_state.json").write_text("{}")
print("model saved.", flush=True)
"""

# accelerate's simple launcher: options, then the script and its arguments, run as a child; a
# failure of the child is raised as CalledProcessError (exit status 1), as accelerate 1.6 does.
LAUNCHER = r"""
import subprocess, sys
args = sys.argv[1:]
i = next(i for i, a in enumerate(args) if a.endswith(".py"))
cmd = [sys.executable, *args[i:]]
process = subprocess.Popen(cmd)
process.wait()
if process.returncode != 0:
    raise subprocess.CalledProcessError(returncode=process.returncode, cmd=cmd)
"""

# A stand-in for kohya's gen_img.py: one small PNG per prompt-file line, named by its --f.
FAKE_GEN_IMG = r"""
import json, os, re, sys, zlib, struct
args = sys.argv[1:]
if os.environ.get("FAKE_GEN_IMG_CALLS"):
    with open(os.environ["FAKE_GEN_IMG_CALLS"], "a") as f:
        f.write(json.dumps(args) + "\n")
mode = os.environ.get("FAKE_GEN_IMG", "ok")
outdir = args[args.index("--outdir") + 1]
lines = [l for l in open(args[args.index("--from_file") + 1], encoding="utf-8").read().splitlines() if l.strip()]
print("loading model...", flush=True)
if mode == "oom":
    print("Traceback (most recent call last):")
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    sys.exit(1)
os.makedirs(outdir, exist_ok=True)

def png(path, rgb):
    raw = b"".join(b"\x00" + bytes(rgb) * 4 for _ in range(4))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)

for i, line in enumerate(lines):
    print(f"prompt {i + 1}/{len(lines)}: {line.split(' --')[0]}", flush=True)
    if mode == "skip_last" and i == len(lines) - 1:
        continue
    name = re.search(r" --f (\S+)", line)[1]
    h = zlib.crc32(line.encode())
    png(os.path.join(outdir, name), (h & 255, (h >> 8) & 255, (h >> 16) & 255))
print("done!")
"""


# A stand-in for kohya's flux_minimal_inference.py --interactive (see the module's docstring).
FAKE_FLUX_INFERENCE = r"""
import json, os, select, signal, struct, sys, time, zlib
args = sys.argv[1:]
calls = os.environ.get("FAKE_FLUX_CALLS")

def record(kind, value):
    if calls:
        with open(calls, "a") as f:
            f.write(json.dumps([kind, value]) + "\n")

record("argv", args)
mode = os.environ.get("FAKE_FLUX", "ok")
outdir = args[args.index("--output_dir") + 1]
loras = []
if "--lora_weights" in args:
    for a in args[args.index("--lora_weights") + 1:]:
        if a.startswith("--"):
            break
        loras.append(a)
print("Loading t5xxl...", flush=True)

def png(path, rgb):
    raw = b"".join(b"\x00" + bytes(rgb) * 4 for _ in range(4))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)

saved = 0
while True:
    if select.select([0], [], [], 0)[0]:  # unbuffered reads below: nothing hides in a buffer
        print("a prompt line arrived before it was asked for", flush=True)
        sys.exit(3)
    print("Enter prompt (empty to exit). Options: --w <width> --h <height> --s <steps> --d <seed> --g <guidance> --m <multipliers for LoRA> --n <negative prompt>, `-` for empty negative prompt --c <cfg_scale>", flush=True)
    raw = b""
    while not raw.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            print("EOF on stdin", flush=True)
            sys.exit(4)
        raw += byte
    line = raw.decode("utf-8").rstrip("\n")
    if line == "":
        break
    record("line", line)
    options = line.split("--")
    if any(o.strip().startswith("m") for o in options[1:]):
        m = [o.strip()[1:].strip() for o in options[1:] if o.strip().startswith("m")][0]
        if len(m.split(",")) != len(loras):
            print(f"Invalid number of multipliers, expected {len(loras)}", flush=True)
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, time.strftime("%Y%m%d_%H%M%S") + ".png")
    h = zlib.crc32(line.encode())
    png(path, (h & 255, (h >> 8) & 255, (h >> 16) & 255))
    sys.stderr.write(f"INFO     Saved image to {path}          flux_minimal_inference.py:387\n")
    sys.stderr.flush()
    saved += 1
    if mode.startswith("interrupt_after:") and saved == int(mode.split(":")[1]):
        while os.path.exists(path):
            time.sleep(0.01)
        os.kill(os.getppid(), signal.SIGINT)
        while True:
            time.sleep(0.05)
print("Done!", flush=True)
"""


class FakeKohya:
    """Where the stand-in lives, and what it was called with."""

    def __init__(self, root: Path):
        self.sd_scripts = root / "sd-scripts"
        self.pylib = root / "pylib"
        self.calls_file = root / "calls.jsonl"
        self.sd_scripts.mkdir(parents=True)
        for script in ("train_network.py", "sdxl_train_network.py"):
            (self.sd_scripts / script).write_text(TRAINER, encoding="utf-8")
        (self.sd_scripts / "gen_img.py").write_text(FAKE_GEN_IMG, encoding="utf-8")
        commands = self.pylib / "accelerate" / "commands"
        commands.mkdir(parents=True)
        (self.pylib / "accelerate" / "__init__.py").write_text("")
        (commands / "__init__.py").write_text("")
        (commands / "launch.py").write_text(LAUNCHER, encoding="utf-8")

    @property
    def calls(self) -> list[list[str]]:
        """The argv (after the script) of each run, oldest first."""
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]

    def env(self) -> dict[str, str]:
        """Environment variables that make lorabuild run the stand-in."""
        pythonpath = os.pathsep.join(p for p in (str(self.pylib), os.environ.get("PYTHONPATH", "")) if p)
        return {
            "LORABUILD_SD_SCRIPTS": str(self.sd_scripts),
            "PYTHONPATH": pythonpath,
            "FAKE_KOHYA_CALLS": str(self.calls_file),
        }


@pytest.fixture
def fake_kohya(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> FakeKohya:
    """lorabuild, in this process and in children, trains with the stand-in."""
    fake = FakeKohya(tmp_path_factory.mktemp("fake-kohya"))
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("FAKE_KOHYA", raising=False)
    assert sys.executable
    return fake
