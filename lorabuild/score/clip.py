"""CLIP scores with the user's own weights (``[pick] clip_model``, ``aesthetic_model``), never downloaded.

The folder is checked from its files when the recipe is checked
(:mod:`lorabuild.probe.clipfolder`, :mod:`lorabuild.rules.pick`); here it is run:
:mod:`lorabuild.kohya.clipscore` in kohya's Python (torch, transformers), through the one process
seam, embeds every picture and prompt that the hash cache does not hold yet. Embeddings (and the
aesthetic score) are cached in ``.lorabuild/scores.json`` under the model's key (the folder's and
the head's files by name, size and mtime: hashing a 1.7 GB model on every pick would cost more
than it is worth), pictures by their content key like the hashes, prompts by their text. Then,
pure arithmetic on normalised embeddings:

- **prompt match**: the cosine between a cell and its prompt (CLIP score / 100);
- **style**: the cosine between a cell and the nearest training image (1: the same picture);
- **aesthetic**: the head's score of the cell (the LAION scale, about 1 to 10).

A run that fails (torch missing, a folder transformers refuses) is said in a note naming its
log, ``.lorabuild/clip.log``; the other scores go on.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lorabuild.kohya import clipscore
from lorabuild.kohya.scriptrun import ScriptInterrupted, run_script
from lorabuild.probe.clipfolder import ClipFolder, probe_clip
from lorabuild.recipe.schema import PickSection
from lorabuild.score.hashes import HashCache
from lorabuild.score.measures import GridCell, ModelScores, TrainingImage

CLIP_NAME = "the CLIP scorer"
"""How messages name the script's run."""

CLIP_SCRIPT = Path(clipscore.__file__)
"""The script kohya's Python runs."""

CLIP_LOG = ".lorabuild/clip.log"
"""The last run's output, relative to the build folder."""


def model_key(folder: ClipFolder, aesthetic: Path | None) -> str:
    """What decides an embedding besides the picture: the CLIP folder's and the head's files."""
    files = [*folder.files, *([aesthetic] if aesthetic else [])]
    data = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        data.append([os.path.abspath(file), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """The dot product of two normalised embeddings: their cosine."""
    return float(sum(x * y for x, y in zip(a, b, strict=True)))


def clip_scores(
    pick: PickSection,
    cache: HashCache,
    cells: Sequence[GridCell],
    training: Sequence[TrainingImage],
    notes: list[str],
    *,
    python: str = sys.executable,
    on_line: Callable[[str], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, ModelScores]:
    """Each cell's CLIP scores (prompt match, style, aesthetic); empty without ``pick.clip_model``."""
    if pick.clip_model is None:
        return {}
    folder = probe_clip(pick.clip_model)
    if isinstance(folder, str):  # checked with the recipe: it changed since
        notes.append(f"CLIP scores not computed: pick.clip_model: {pick.clip_model}: {folder}")
        return {}
    key = model_key(folder, pick.aesthetic_model)
    kind = f"clip:{key[:16]}"
    rels = sorted({c.file for c in cells} | {t.file for t in training})
    prompts = sorted({c.prompt for c in cells})
    images = {rel: cache.get(cache.file_key(rel), kind) for rel in rels}
    texts = {p: cache.get(_text_key(p), kind) for p in prompts}
    todo = [rel for rel, value in images.items() if value is None and cache.file_key(rel) is not None]
    todo_texts = [p for p, value in texts.items() if value is None]
    if todo or todo_texts:
        done = _run(pick, cache.build, todo, todo_texts, python, on_line, progress, notes)
        if done is None:
            return {}
        for rel, value in zip(todo, done["images"], strict=True):
            cache.put(cache.file_key(rel), kind, value)
            images[rel] = value
        for prompt, value in zip(todo_texts, done["texts"], strict=True):
            cache.put(_text_key(prompt), kind, value)
            texts[prompt] = value
    references = [
        (t.name, images[t.file]["embedding"]) for t in training if isinstance(images.get(t.file), dict)
    ]
    if not references:
        notes.append(
            "CLIP similarity to the training images not scored: no staged training image could be read"
        )
    found = {}
    for c in cells:
        said = images.get(c.file)
        if not isinstance(said, dict):
            continue
        embed = said["embedding"]
        text = texts.get(c.prompt)
        style, style_image = max(((cosine(embed, e), name) for name, e in references), default=(None, None))
        found[c.file] = ModelScores(
            prompt_match=cosine(embed, text) if isinstance(text, list) else None,
            style=style,
            style_image=style_image,
            aesthetic=said.get("aesthetic"),
        )
    return found


def _text_key(prompt: str) -> str:
    return "text:" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def _run(
    pick: PickSection,
    build: Path,
    images: Sequence[str],
    texts: Sequence[str],
    python: str,
    on_line: Callable[[str], None] | None,
    progress: Callable[[str, int, int], None] | None,
    notes: list[str],
) -> Mapping[str, Any] | None:
    """Run the script for ``images`` (relative to ``build``) and ``texts``; None (and a note) when it failed.

    Raises:
        ScriptInterrupted: lorabuild was asked to stop while it ran.
    """
    emit = on_line or (lambda line: None)

    def handle(line: str) -> None:
        if not line.startswith(clipscore.PROGRESS):
            emit(line)
            return
        done, _, total = line[len(clipscore.PROGRESS) :].partition("/")
        if progress is not None and done.strip().isdigit() and total.strip().isdigit():
            progress("CLIP", int(done), int(total))

    log = build / CLIP_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clip-", dir=log.parent) as tmp:
        out = Path(os.path.abspath(tmp)) / "out.json"
        job = {
            "model": os.path.abspath(pick.clip_model) if pick.clip_model else None,
            "aesthetic": os.path.abspath(pick.aesthetic_model) if pick.aesthetic_model else None,
            "images": [os.path.abspath(build / rel) for rel in images],
            "texts": list(texts),
            "out": str(out),
        }
        job_file = Path(os.path.abspath(tmp)) / "job.json"
        job_file.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
        run = run_script(CLIP_NAME, [python, str(CLIP_SCRIPT), str(job_file)], Path(tmp), log, None, handle)
        if run.interrupted:
            raise ScriptInterrupted(run.interrupted_message("CLIP scoring"), run.signum)
        if run.failed:
            notes.append(
                f"CLIP scores not computed (pick.clip_model {pick.clip_model}): {run.failure_message()}"
            )
            return None
        try:
            done = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            notes.append(f"CLIP scores not computed: {run.missing_message('its scores')}")
            return None
    if (
        not isinstance(done, dict)
        or len(done.get("images", ())) != len(images)
        or len(done.get("texts", ())) != len(texts)
    ):
        notes.append(
            f"CLIP scores not computed: {CLIP_NAME} wrote scores for other pictures; its output is in {log}"
        )
        return None
    return done
