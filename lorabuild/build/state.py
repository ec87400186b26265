"""What a build folder remembers between runs: stage stamps, file digests and the build lock.

Everything lives in ``build/<name>/.lorabuild/``:

``stamps.json``
    One :class:`Stamp` per stage: the key of the inputs it last ran with and how that run ended
    (``started``, ``done``, ``failed``, ``interrupted``). A stage is up to date when its stamp is
    ``done`` with the key its inputs hash to now (see :func:`prepare_key` and :func:`train_key`).
``digests.json``
    sha256 of the dataset's files, reused while a file's size, modification time and inode are
    unchanged (like git's index), so an unchanged rebuild reads no image data.
``lock``
    Held (``flock``) by the lorabuild process working on the build; its text names that process
    for the message another one gets (:func:`build_lock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from lorabuild import KOHYA_COMMIT
from lorabuild.build.markers import path_state
from lorabuild.kohya.config import SamplingOptions
from lorabuild.kohya.tagger import settings_keys
from lorabuild.plan.layout import BuildLayout
from lorabuild.plan.plan import Plan
from lorabuild.probe.inputs import input_fingerprint, tree_state
from lorabuild.probe.segmentation import settings_key as cutout_key
from lorabuild.problems import LorabuildError
from lorabuild.recipe.load import LoadedRecipe
from lorabuild.render.writer import Written, write_atomic

STAMPS_VERSION = 1
_CHUNK = 1 << 20

# Files kohya (or the OS) adds to the staged dataset that are not training inputs.
_NOT_DATASET = (".npz",)
_NOT_DATASET_NAMES = ("metadata_cache.json", ".DS_Store", "Thumbs.db")


def state_dir(build_dir: Path) -> Path:
    """``build/<name>/.lorabuild``."""
    return BuildLayout(build_dir).state_dir


@dataclass(frozen=True)
class Stamp:
    """How a stage last ran.

    Attributes:
        key: Hash of the inputs it ran with.
        status: ``started``, ``done``, ``failed`` or ``interrupted``.
        at: When it ended (or started), as ``time.time()``.
        detail: Stage-specific notes (for train: resumed_from, outputs).
    """

    key: str
    status: str
    at: float = field(default_factory=time.time)
    detail: Mapping[str, Any] = field(default_factory=dict)


def load_stamps(build_dir: Path) -> dict[str, Stamp]:
    """Every stage's stamp (none when the file is missing, unreadable or of another version)."""
    try:
        doc = json.loads((state_dir(build_dir) / "stamps.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("version") != STAMPS_VERSION:
        return {}
    stamps = {}
    for stage, raw in doc.get("stages", {}).items():
        try:
            stamps[stage] = Stamp(raw["key"], raw["status"], float(raw["at"]), dict(raw.get("detail", {})))
        except (KeyError, TypeError, ValueError):
            continue
    return stamps


def save_stamp(build_dir: Path, stage: str, stamp: Stamp) -> None:
    """Record ``stamp`` for ``stage`` (atomically; other stages' stamps are kept)."""
    stamps = load_stamps(build_dir)
    stamps[stage] = stamp
    doc = {
        "version": STAMPS_VERSION,
        "stages": {name: {**asdict(s), "detail": dict(s.detail)} for name, s in sorted(stamps.items())},
    }
    write_atomic(state_dir(build_dir) / "stamps.json", (json.dumps(doc, indent=2) + "\n").encode())


def is_done(stamp: Stamp | None, key: str) -> bool:
    """Whether ``stamp`` records a finished run with inputs ``key``."""
    return stamp is not None and stamp.status == "done" and stamp.key == key


PREPARED = "prepare-command"
"""The stamp of the last ``lorabuild prepare`` that finished: its key is the inputs' fingerprint
(:func:`lorabuild.probe.inputs.input_fingerprint`), its detail the build's state after it
(:func:`build_state`), the files that state covers, the lines it printed and its summary."""


def build_state(build_dir: Path, files: Iterable[str]) -> str:
    """A hash of ``stat`` of the build's ``files`` and of everything under ``dataset/``, two
    levels deep (each subset folder's images and captions): any file staged, removed or
    rewritten since changes it. Reads no file."""
    digest = hashlib.sha256()
    for name in sorted(set(files)):
        digest.update(tree_state(build_dir / name).encode("utf-8", "surrogateescape"))
    digest.update(tree_state(BuildLayout(build_dir).dataset_dir, depth=2).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def prepared(build_dir: Path, key: str, strict: bool = False) -> Stamp | None:
    """The :data:`PREPARED` stamp when the last prepare ran with inputs ``key`` and the build is
    as it left it (so preparing again would do nothing); None otherwise, and with ``strict``
    when that run warned (the warnings must fail this one)."""
    stamp = load_stamps(build_dir).get(PREPARED)
    if stamp is None or not is_done(stamp, key):
        return None
    detail = stamp.detail
    files, lines = detail.get("files"), detail.get("lines")
    if not (isinstance(files, list) and isinstance(lines, list) and isinstance(detail.get("summary"), str)):
        return None
    if (strict and detail.get("warned")) or detail.get("state") != build_state(build_dir, files):
        return None
    return stamp


def save_prepared(
    build_dir: Path, key: str, files: Iterable[str], lines: Iterable[str], summary: str
) -> None:
    """Record a finished prepare (see :data:`PREPARED`); ``lines`` are the problems it printed."""
    files = sorted(set(files))
    lines = list(lines)
    detail = {
        "state": build_state(build_dir, files),
        "files": files,
        "lines": lines,
        "warned": bool(lines),
        "summary": summary,
    }
    save_stamp(build_dir, PREPARED, Stamp(key, "done", detail=detail))


def prepare_inputs(loaded: LoadedRecipe) -> str:
    """What the prepare stamp hashes beyond the plan: the recipe sections staging reads, the
    tagger's settings (model file, tag list, thresholds; :func:`lorabuild.kohya.tagger.settings_keys`)
    and the segmentation model's (:func:`lorabuild.probe.segmentation.settings_key`)."""
    sections = loaded.section_hash("dataset", "captions", "images")
    recipe = loaded.recipe
    cutouts = [
        cutout_key(table, recipe.images)
        for subset in recipe.dataset.subsets
        if (table := recipe.remove_background_for(subset)) is not None
    ]
    return ",".join([sections, *settings_keys(recipe), *cutouts])


def prepare_fingerprint(loaded: LoadedRecipe, build_root: Path) -> str | None:
    """What ``lorabuild prepare`` reads, hashed without opening an image or caption
    (:func:`lorabuild.probe.inputs.input_fingerprint`; None when a file changed too recently to tell);
    take it before the check, so that a file changed while preparing shows next time."""
    return input_fingerprint(loaded.recipe, loaded.section_hash(), loaded.path, build_root)


def already_prepared(
    loaded: LoadedRecipe, build_root: Path, key: str | None, strict: bool = False
) -> Stamp | None:
    """The last prepare's stamp when its inputs were ``key`` and the build is as it left it:
    preparing again would do nothing (:func:`prepared`)."""
    return None if key is None else prepared(build_root / loaded.recipe.name, key, strict)


def record_prepared(
    plan: Plan, key: str | None, written: Sequence[Written], lines: Sequence[str], summary: str
) -> None:
    """Remember a finished prepare (its inputs ``key``, the build's state, what it printed)."""
    if key is None:
        return
    files = [w.path.relative_to(plan.build_dir).as_posix() for w in written]
    save_prepared(plan.build_dir, key, [*files, BuildLayout.TAGS_CSV, "autotag", "cutout"], lines, summary)


class Digests:
    """sha256 of files, cached by inode, size and mtime in ``.lorabuild/digests.json``."""

    def __init__(self, build_dir: Path):
        self.path = state_dir(build_dir) / "digests.json"
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self._cache: dict[str, list[Any]] = raw if isinstance(raw, dict) else {}
        except (OSError, ValueError):
            self._cache = {}
        self._used: dict[str, list[Any]] = {}
        self.hashed = 0

    def of(self, path: Path) -> str:
        """The file's sha256 (read only when its size or modification time changed).

        Entries are keyed by device and inode, so a staged hard link and its source are read once.
        """
        st = os.stat(path)
        name = f"{st.st_dev}:{st.st_ino}"
        ident = [st.st_size, st.st_mtime_ns]
        cached = self._cache.get(name) or self._used.get(name)
        if cached is not None and cached[:2] == ident:
            self._used[name] = cached
            return str(cached[2])
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        self.hashed += 1
        self._used[name] = [*ident, digest.hexdigest()]
        return digest.hexdigest()

    def save(self) -> None:
        """Keep the digests used in this run (files no longer used are forgotten)."""
        if self._used != self._cache:
            write_atomic(self.path, json.dumps(self._used, sort_keys=True).encode())
            self._cache = dict(self._used)


def _hash(doc: object) -> str:
    blob = json.dumps(doc, sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def prepare_key(plan: Plan, digests: Digests, recipe_sections: str = "") -> str:
    """What staging reads: each image's content and staged caption, the folders, the rules' hash.

    Args:
        plan: The build plan.
        digests: The digest cache.
        recipe_sections: A hash of the recipe sections staging reads (dataset, captions), for
            anything staging derives that the plan does not spell out.
    """
    return _hash(
        {
            "recipe": recipe_sections,
            "subsets": [
                {
                    "folder": s.folder,
                    "images": [[i.name, digests.of(i.source), i.caption] for i in s.images],
                }
                for s in plan.subsets
            ],
        }
    )


def staged_dataset_digest(plan: Plan, digests: Digests) -> str:
    """The staged dataset as kohya reads it: every file under ``dataset/`` but latent caches."""
    root = plan.layout.dataset_dir
    entries = []
    if root.is_dir():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(_NOT_DATASET) or name in _NOT_DATASET_NAMES or name.startswith("."):
                    continue
                path = Path(dirpath) / name
                entries.append([path.relative_to(root).as_posix(), digests.of(path)])
    return _hash(entries)


def train_key(plan: Plan, dataset_digest: str, sd_scripts: Path) -> str:
    """What the trained weights depend on.

    The compiled ``--config_file`` without what only affects samples and the training comment,
    the ``--dataset_config``, the launch command, the staged dataset's content, the model files
    it names (by size and modification time: hashing gigabytes would take longer than a no-op
    should) and the kohya commit. Editing ``[evaluate]`` changes none of them.
    """
    # In-training samples do not change the weights (kohya saves and restores the RNG around them),
    # nor does the training comment, which changes with every edit of the recipe (its hash); the
    # other metadata (title, trigger, author) is written into the LoRA files, so it counts.
    weighted = replace(
        plan.config,
        sampling=SamplingOptions(sample_prompts=None, sample_every_n_epochs=None, sample_sampler=None),
        metadata=replace(plan.config.metadata, training_comment=None),
    )
    model, network = plan.config.model, plan.config.network
    named = {
        "pretrained_model_name_or_path": model.pretrained_model_name_or_path,
        "vae": model.vae,
        "tokenizer_cache_dir": model.tokenizer_cache_dir,
        "network_weights": network.network_weights,
    }
    model_files = {
        key: path_fingerprint(plan.build_dir / value) for key, value in named.items() if value is not None
    }
    return _hash(
        {
            "config": weighted.document(),
            "dataset_config": plan.dataset_config.document(),
            "launch": [list(plan.launch.argv), [list(e) for e in plan.launch.env]],
            "dataset": dataset_digest,
            "models": model_fingerprints_sorted(model_files),
            "kohya": kohya_revision(sd_scripts),
        }
    )


def model_fingerprints_sorted(files: Mapping[str, object]) -> list[list[object]]:
    """``files`` as a sorted list (stable JSON)."""
    return [[k, files[k]] for k in sorted(files)]


def path_fingerprint(path: Path) -> list[object]:
    """(size, mtime) of a file, or of every file in a folder; ``missing`` when absent
    (:func:`lorabuild.build.markers.path_state`, which make's input stamps use too)."""
    return path_state(path)


def git_head(folder: Path) -> str | None:
    """The commit checked out in ``folder`` read from its git metadata (no git process), or None.

    Handles a ``.git`` folder, a ``.git`` file (submodules, worktrees), symbolic and packed refs.
    """
    dot_git = folder / ".git"
    try:
        if dot_git.is_file():
            target = dot_git.read_text(encoding="utf-8").strip().removeprefix("gitdir:").strip()
            dot_git = (folder / target).resolve()
        head = (dot_git / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head or None
    ref = head.removeprefix("ref:").strip()
    common = dot_git
    with contextlib.suppress(OSError):  # worktrees keep refs in the common folder
        common = (dot_git / (dot_git / "commondir").read_text(encoding="utf-8").strip()).resolve()
    for base in (dot_git, common):
        with contextlib.suppress(OSError):
            return (base / ref).read_text(encoding="utf-8").strip()
        with contextlib.suppress(OSError):
            for line in (base / "packed-refs").read_text(encoding="utf-8").splitlines():
                sha, _, name = line.partition(" ")
                if name.strip() == ref:
                    return sha
    return None


def kohya_revision(sd_scripts: Path) -> str:
    """The kohya commit a build trains with: the checkout's own when it has git metadata, else
    the pinned one (a checkout without metadata is verified by ``lorabuild doctor``)."""
    return git_head(sd_scripts) or KOHYA_COMMIT


# --- the build lock ------------------------------------------------------------------------------


class BuildLocked(LorabuildError):
    """Another lorabuild process is working on the build; :attr:`holder` says which (:func:`describe_holder`)."""

    exit_code = 1

    def __init__(self, message: str, holder: str = ""):
        super().__init__(message)
        self.holder = holder


@dataclass
class BuildLock:
    """The held lock of one build; :meth:`note` adds facts for others to read (the trainer's pid)."""

    path: Path
    handle: IO[str]
    info: dict[str, Any]

    def note(self, **facts: Any) -> None:
        """Add ``facts`` to what the lock file says about its holder."""
        self.info.update(facts)
        _write_info(self.handle, self.info)


def _write_info(handle: IO[str], info: Mapping[str, Any]) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(info) + "\n")
    handle.flush()


def _try_lock(handle: IO[str]) -> bool:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt  # lazy: Windows only

        handle.seek(1 << 20)  # lock a byte past the text, which stays readable by others
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        except OSError:
            return False
        return True
    import fcntl  # lazy: POSIX only

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(handle: IO[str]) -> None:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt  # lazy: Windows only

        handle.seek(1 << 20)
        with contextlib.suppress(OSError):
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        return
    import fcntl  # lazy: POSIX only

    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def describe_holder(info: Mapping[str, Any]) -> str:
    """``pid 1234, "lorabuild train recipe.toml", since 20:14:03`` from a lock file's text."""
    parts = [f"pid {info.get('pid', '?')}"]
    if info.get("host") and info.get("host") != socket.gethostname():
        parts[0] += f" on {info['host']}"
    if info.get("command"):
        parts.append(f'"{info["command"]}"')
    if isinstance(info.get("started"), int | float):
        parts.append("since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"])))
    if info.get("trainer_pid"):
        parts.append(f"kohya's pid {info['trainer_pid']}")
    return ", ".join(parts)


def current_command() -> str:
    """How this process was started, as a user would type it."""
    return " ".join(["lorabuild", *sys.argv[1:]])


@contextlib.contextmanager
def build_lock(build_dir: Path, command: str | None = None) -> Iterator[BuildLock]:
    """Hold the build's lock for the duration; raise :class:`BuildLocked` naming the holder.

    The lock is an OS file lock, so it is released when its process ends in any way (even
    SIGKILL): a lock file left behind never blocks a later run.
    """
    path = state_dir(build_dir) / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+", encoding="utf-8")
    try:
        if not _try_lock(handle):
            handle.seek(0)
            try:
                info = json.loads(handle.read() or "{}")
            except ValueError:
                info = {}
            holder = describe_holder(info)
            raise BuildLocked(
                f"{build_dir.as_posix()} is in use by another lorabuild ({holder}): "
                "wait for it to finish, or stop it (Ctrl-C in its terminal, or kill "
                f"{info.get('pid', 'its process')}), then run this again",
                holder,
            )
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command or current_command(),
            "started": time.time(),
        }
        _write_info(handle, info)
        lock = BuildLock(path, handle, info)
        try:
            yield lock
        finally:
            with contextlib.suppress(OSError):
                _write_info(handle, {})
            _unlock(handle)
    finally:
        handle.close()
