"""Every shipped recipe with a CPU demo: the header of a LoRA the real kohya trained from it imports
back to a recipe that compiles to the same kohya options (issue #14).

For each family (``lorabuild demo --family``: flux, chroma, sdxl, sd3, anima, hunyuan, lumina; and sd15,
recipes/kazari.toml)
the demo's recipe and ``--set`` overrides are trained once with ``lorabuild run --until train`` (no
grid, no install: the header is all this module reads); the last saved file's header is imported; the
import's TODOs are answered as a user would, with the paths the demo gave (the model files, the
tokenizer cache, the data folder: a header holds names only); the recipe is compiled again. The two
``config.toml`` and ``dataset.toml`` must be equal but for :data:`EXPECTED_DIFFERENCES`, each with
its reason, and each of those must really differ.

Needs kohya's Python stack (run pytest with that Python) and vendor/sd-scripts; skips otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import toml

from lorabuild.importer.model import Imported, NoteKind
from lorabuild.importer.sources import import_sources
from lorabuild.importer.write import write_recipe
from lorabuild.kohya import options as kohya_options
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.compile import compile_build
from tests.conftest import REPO, SD_SCRIPTS

pytestmark = pytest.mark.real_trainer

FAMILIES = ("sd15", "sdxl", "flux", "chroma", "sd3", "anima", "hunyuan", "lumina")

SD15_EXTRA = ("training.epochs=1",)
"""recipes/kazari.toml trains 10 epochs (40 steps of the full-size SD1.5 U-Net, near 20 s each on
a busy 2-core CPU): one is enough for a header, and the override goes into both compiles alike."""

RECIPE_HASH = "lorabuild writes the recipe file's hash: the imported recipe is another file"
TE_CACHE = "kohya writes no ss_ key for cache_text_encoder_outputs"
KOHYA_DEFAULT = (
    "the shipped recipe sets kohya's default explicitly; the import leaves a default out, so kohya "
    "runs with the same value"
)

EXPECTED_DIFFERENCES: dict[str, dict[str, str]] = {
    "sd15": {
        "metadata.training_comment": RECIPE_HASH,
    },
    "sdxl": {
        "metadata.training_comment": RECIPE_HASH,
        "training.no_half_vae": "kohya writes no ss_ key for no_half_vae (the shipped recipe sets it for SDXL's VAE)",
    },
    "flux": {
        "metadata.training_comment": RECIPE_HASH,
        "training.cache_text_encoder_outputs": TE_CACHE,
    },
    "chroma": {
        "metadata.training_comment": RECIPE_HASH,
        "training.cache_text_encoder_outputs": TE_CACHE,
    },
    "sd3": {
        "metadata.training_comment": RECIPE_HASH,
        "training.cache_text_encoder_outputs": TE_CACHE,
        "flow.weighting_scheme": KOHYA_DEFAULT + " (ss_weighting_scheme is 'uniform')",
        "flow.training_shift": KOHYA_DEFAULT + " (and sd3_train_network.py writes no ss_training_shift)",
        "flow.t5xxl_max_token_length": KOHYA_DEFAULT + " (and kohya writes no ss_t5xxl_max_token_length)",
    },
    "anima": {
        "metadata.training_comment": RECIPE_HASH,
        "dataset.toml:datasets[0].bucket_reso_steps": (
            "kohya writes no ss_ key for bucket_reso_steps: the demo's CPU override (16, for the tiny "
            "model) comes back as the family's 64 (the shipped recipe's own value, which would round-trip)"
        ),
    },
    "hunyuan": {
        "metadata.training_comment": RECIPE_HASH,
        "flow.attn_mode": 'kohya writes no ss_ key for attn_mode (the shipped recipe sets the docs\' "torch")',
        "flow.split_attn": "kohya writes no ss_ key for split_attn (the docs' command sets it)",
        "training.cache_text_encoder_outputs_to_disk": (
            "kohya writes no ss_ key for cache_text_encoder_outputs_to_disk (HunyuanImage's memory preset "
            "caches to disk: kohya's in-memory cache crashes at the pinned commit)"
        ),
    },
    "lumina": {
        "metadata.training_comment": RECIPE_HASH,
    },
}
"""Per family, the options of ``config.toml`` (``section.option``) and ``dataset.toml``
(``dataset.toml:path``) that the header of the trained LoRA cannot give back, and why. Every other
option of both files round-trips. An entry whose reason is :data:`KOHYA_DEFAULT` is checked to be
kohya's argparse default on the side that leaves it out: the same kohya run."""


@dataclass(frozen=True)
class Trained:
    family: str
    root: Path
    build: Path
    paths: dict[str, str]
    """The demo's path overrides (recipe key -> value): what a user gives for the header's TODOs."""
    seconds: float


def _prepare(family: str, root: Path) -> tuple[Path, list[str]]:
    from lorabuild.demo import demo

    if family == "sd15":
        return demo.DEMO_RECIPE, [*demo.prepare_demo(root), *SD15_EXTRA]
    return demo.TINY_DEMOS[family].prepare(root)


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    for name in ("torch", "accelerate", "transformers", "safetensors", "sentencepiece", "diffusers"):
        pytest.importorskip(name, reason=f"kohya's Python stack is not installed ({name})")
    family: str = request.param
    root = tmp_path_factory.mktemp(family)
    with pytest.MonkeyPatch.context() as patch:
        # The prepare_* functions set LORABUILD_SCRIPT_WRAPPER (and HF_HUB_OFFLINE): undone after.
        patch.setenv("LORABUILD_SCRIPT_WRAPPER", "")
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("LORABUILD_SD_SCRIPTS", str(SD_SCRIPTS))
        recipe, overrides = _prepare(family, root)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "lorabuild",
                "run",
                str(recipe),
                "--until",
                "train",  # no grid: the header is all this module reads
                *(arg for o in overrides for arg in ("--set", o)),
                "--build-dir",
                str(root / "build"),
            ],
            cwd=root,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=900,
            env=env,
        )
        seconds = time.monotonic() - started
        print(f"\n[{family}] lorabuild run --until train: {seconds:.1f} s")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        (build,) = [p for p in (root / "build").iterdir() if (p / "config.toml").is_file()]
        paths = {}
        for override in overrides:
            key, _, value = override.partition("=")
            if key.startswith("model.") or key.startswith("dataset.subsets["):
                paths[key] = json.loads(value)
        yield Trained(family, root, build, paths, seconds)


def _set(imported: Imported, key: str, value: str) -> None:
    """A dotted recipe key, ``dataset.subsets[0].source`` included, as the TODO's answer."""
    if key.startswith("dataset.subsets["):
        index, _, field = key.removeprefix("dataset.subsets[").partition("].")
        subsets = imported.values["dataset.subsets"]
        assert isinstance(subsets, list)
        subsets[int(index)][field] = Path(value)
    else:
        imported.set(key, Path(value))


def _flat(doc: object, prefix: str = "") -> dict[str, object]:
    """A TOML document as ``a.b[0].c`` -> value."""
    if isinstance(doc, dict):
        out: dict[str, object] = {}
        for key, value in doc.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(doc, list) and any(isinstance(item, dict) for item in doc):
        out = {}
        for index, item in enumerate(doc):
            out.update(_flat(item, f"{prefix}[{index}]"))
        return out
    return {prefix: doc}


def _differences(before: object, after: object) -> dict[str, tuple[object, object]]:
    """``path`` -> (before, after) for every value that differs."""
    old, new = _flat(before), _flat(after)
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def test_the_lora_header_imports_to_the_recipe_it_was_trained_from(trained: Trained) -> None:
    (saved,) = [
        p for p in (trained.build / "output").glob("*.safetensors") if "-0000" not in p.name
    ]  # the last epoch's file: its name has no epoch number
    imported = import_sources([saved])
    todo = {n.key for n in imported.notes if n.kind is NoteKind.TODO}
    # Every model file and the data folder the header cannot hold is a TODO, and the demo's paths
    # answer them all (with the tokenizer cache, a local folder no header names and no TODO asks).
    asked = {key for key in todo if key.startswith(("model.", "dataset.subsets["))}
    assert {"model.base", "dataset.subsets[0].source"} <= asked <= set(trained.paths), (
        sorted(todo),
        trained.paths,
    )
    for key, value in trained.paths.items():
        _set(imported, key, value)

    out = trained.root / "imported.toml"
    write_recipe(imported, out)
    again = require_plan(check(out, [], trained.root / "again"))
    compile_build(again)
    differs: dict[str, tuple[object, object]] = {}
    for name in ("config.toml", "dataset.toml"):
        before = toml.loads((trained.build / name).read_text(encoding="utf-8"))
        after = toml.loads((again.build_dir / name).read_text(encoding="utf-8"))
        prefix = "" if name == "config.toml" else f"{name}:"
        differs.update({prefix + k: v for k, v in _differences(before, after).items()})
    print(f"[{trained.family}] differs: {differs}")
    expected = EXPECTED_DIFFERENCES[trained.family]
    assert set(differs) == set(expected), f"{trained.family}: {differs}\n{out.read_text(encoding='utf-8')}"
    script = str(json.loads((trained.build / "plan.json").read_text(encoding="utf-8"))["script"])
    for key, reason in expected.items():
        if reason.startswith(KOHYA_DEFAULT):
            option = kohya_options.options(script)[key.rpartition(".")[2]]
            assert None in differs[key] and option.default in differs[key], (key, differs[key])
