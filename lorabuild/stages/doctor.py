"""``lorabuild doctor`` and ``lorabuild setup``: is this machine ready to train, and if not, what to do.

The doctor probes the Python that trains (the one running lorabuild: ``accelerate`` is started
through it) in a child process, so a broken torch cannot take lorabuild down: Python, torch and
CUDA, xformers (and whether it was built for the installed torch), bitsandbytes, accelerate and
its default config, kohya's pinned packages, and the kohya checkout's commit. Each finding is a
:class:`Finding` with a fix when something is wrong.

A kohya checkout with git metadata is verified by its HEAD; one without (a copied folder, an
unpacked archive) by the git blob id of each source file, against ``data/kohya_sources.json``
(written by ``tools/kohya_manifest.py`` from a clone at the pinned commit).

Why one module: ``setup`` puts kohya in place and then verifies it with the doctor's own check of
the checkout (:func:`check_kohya`: its HEAD, or its files' blob ids). As two stages they could not
share that check (stages are independent), and it cannot move below the stages' layer without the
build layer's ``git_head``; the two commands are one topic, a machine ready to train.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import requires
from pathlib import Path
from typing import Any, Literal

from lorabuild import KOHYA_COMMIT, __version__
from lorabuild.build.state import git_head
from lorabuild.kohya.runner import capture
from lorabuild.problems import LorabuildError
from lorabuild.settings import REPO_ROOT

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "data" / "kohya_sources.json"
KOHYA_URL = "https://github.com/kohya-ss/sd-scripts"

Status = Literal["ok", "warn", "fail"]

# Distributions the probe reports: kohya's stack, and what only some recipes need.
PACKAGES = (
    "torch",
    "torchvision",
    "accelerate",
    "transformers",
    "diffusers",
    "safetensors",
    "huggingface-hub",
    "voluptuous",
    "toml",
    "opencv-python",
    "lion-pytorch",
    "bitsandbytes",
    "xformers",
    "open-clip-torch",
    "lycoris-lora",
)


@dataclass(frozen=True)
class Finding:
    """One thing the doctor looked at.

    Attributes:
        name: What (``torch``, ``kohya``…).
        status: ``ok``, ``warn`` (works, with a caveat) or ``fail`` (training will not work).
        value: What was found.
        fix: What to do, when not ok.
    """

    name: str
    status: Status
    value: str
    fix: str = ""


class SetupError(LorabuildError):
    """``lorabuild setup`` could not install kohya."""


def is_source_file(path: str) -> bool:
    """The files of kohya that decide its behaviour (and that the manifest lists)."""
    return path.endswith(".py") or path in ("requirements.txt",)


def blob_id(path: Path) -> str:
    """git's id of a file's content: sha1 of ``blob <size>\\0<bytes>``."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def load_manifest() -> dict[str, str]:
    """Source file -> blob id of the pinned kohya commit (empty when the manifest is missing)."""
    try:
        doc = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if doc.get("commit") != KOHYA_COMMIT:
        return {}
    return dict(doc.get("files", {}))


def check_kohya(folder: Path) -> Finding:
    """Whether ``folder`` holds kohya sd-scripts at the pinned commit."""
    short = KOHYA_COMMIT[:7]
    fix_missing = (
        "run `git submodule update --init vendor/sd-scripts`, or on a machine without GitHub "
        "`lorabuild setup --sd-scripts PATH` with a local clone of " + KOHYA_URL
    )
    shown = _display(folder)
    if not (folder / "train_network.py").is_file():
        return Finding("kohya", "fail", f"{shown} has no kohya checkout", fix_missing)
    head = git_head(folder)
    if head is not None:
        if head == KOHYA_COMMIT:
            return Finding("kohya", "ok", f"{shown} at {short} (git HEAD)")
        return Finding(
            "kohya",
            "fail",
            f"{shown} is at {head[:7]}, lorabuild drives {short}",
            f"git -C {shown} checkout {KOHYA_COMMIT} (or `git submodule update vendor/sd-scripts`)",
        )
    manifest = load_manifest()
    if not manifest:
        return Finding(
            "kohya", "warn", f"{shown}: no git metadata and no manifest to verify it against", fix_missing
        )
    missing, changed = verify_sources(folder, manifest)
    if not missing and not changed:
        return Finding("kohya", "ok", f"{shown} at {short} (all {len(manifest)} source files match)")
    parts = []
    if changed:
        parts.append(f"{len(changed)} changed ({', '.join(changed[:3])}{', …' if len(changed) > 3 else ''})")
    if missing:
        parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})")
    return Finding(
        "kohya",
        "fail",
        f"{shown} differs from {short}: " + "; ".join(parts),
        "replace it with a clean checkout: `lorabuild setup --sd-scripts PATH --force` with a clone of "
        + KOHYA_URL,
    )


def verify_sources(folder: Path, manifest: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The manifest's files missing from ``folder``, and those whose content differs."""
    missing, changed = [], []
    for rel, blob in manifest.items():
        path = folder / rel
        if not path.is_file():
            missing.append(rel)
        elif blob_id(path) != blob:
            changed.append(rel)
    return missing, changed


def _display(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


# --- probing the training Python ------------------------------------------------------------------

PROBE = r"""
import importlib.metadata as md, json, os, sys
names = json.loads(sys.argv[1])
out = {"python": sys.version.split()[0], "executable": sys.executable, "packages": {}, "requires": {}}
for name in names:
    try:
        out["packages"][name] = md.version(name)
        out["requires"][name] = md.requires(name) or []
    except md.PackageNotFoundError:
        out["packages"][name] = None
try:
    import torch
    t = {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if t["cuda_available"]:
        t["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        t["memory_gb"] = [round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1) for i in range(torch.cuda.device_count())]
        t["bf16"] = torch.cuda.is_bf16_supported()
    mps = getattr(torch.backends, "mps", None)
    t["mps"] = bool(mps and mps.is_available())
    out["torch"] = t
except Exception as exc:
    out["torch_error"] = f"{type(exc).__name__}: {exc}"
if out["packages"].get("xformers") and out.get("torch", {}).get("cuda_available"):
    try:
        import xformers.ops  # noqa: F401
    except Exception as exc:
        out["xformers_error"] = f"{type(exc).__name__}: {exc}"
try:
    from accelerate.commands.config.config_args import default_config_file
    out["accelerate_config"] = {"path": default_config_file, "exists": os.path.isfile(default_config_file)}
    if os.path.isfile(default_config_file):
        text = open(default_config_file, encoding="utf-8").read()
        try:
            import yaml
            doc = yaml.safe_load(text) or {}
        except Exception:
            doc = json.loads(text)
        out["accelerate_config"]["values"] = {k: doc.get(k) for k in ("distributed_type", "num_processes", "mixed_precision", "use_cpu", "gpu_ids", "deepspeed_config", "fsdp_config") if doc.get(k) not in (None, {}, "")}
except Exception as exc:
    out["accelerate_config_error"] = f"{type(exc).__name__}: {exc}"
print("PROBE " + json.dumps(out))
"""


def probe(python: str = sys.executable, timeout: float = 300.0) -> dict[str, Any]:
    """What the training Python has installed (run in a child process)."""
    done = capture([python, "-c", PROBE, json.dumps(PACKAGES)], timeout=timeout)
    for line in done.stdout.splitlines():
        if line.startswith("PROBE "):
            result: dict[str, Any] = json.loads(line.removeprefix("PROBE "))
            return result
    return {"probe_error": (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]}


def train_pins() -> dict[str, str]:
    """Package -> pinned version of lorabuild's ``train`` extra (kohya's stack)."""
    requirements: Iterable[str]
    try:
        requirements = [r for r in (requires("lorabuild") or []) if 'extra == "train"' in r]
    except Exception:
        requirements = []
    if not requirements:
        try:
            doc = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
            requirements = doc["project"]["optional-dependencies"]["train"]
        except (OSError, KeyError, ValueError):
            requirements = []
    pins = {}
    for requirement in requirements:
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*==\s*([^;\s]+)", requirement)
        if match:
            pins[_canonical(match[1])] = match[2]
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _torch_base(version: str) -> str:
    return version.split("+")[0]


def findings(info: Mapping[str, Any], sd_scripts: Path, pins: Mapping[str, str]) -> list[Finding]:
    """Judge a probe's result (pure: tests feed it recorded probes)."""
    out: list[Finding] = []
    install = "pip install -e '.[train]' (or make setup-train) in lorabuild's folder"
    if "probe_error" in info:
        return [
            Finding(
                "python", "fail", f"{sys.executable} could not be probed: {info['probe_error']}", install
            ),
            check_kohya(sd_scripts),
        ]
    python = str(info.get("python", "?"))
    py_status: Status = "ok" if tuple(int(p) for p in python.split(".")[:2]) >= (3, 10) else "fail"
    out.append(
        Finding(
            "python",
            py_status,
            f"{python} ({info.get('executable')})",
            "" if py_status == "ok" else "use Python 3.10 or 3.11",
        )
    )
    out.append(Finding("lorabuild", "ok", f"{__version__}, drives kohya {KOHYA_COMMIT[:7]}"))
    out.append(check_kohya(sd_scripts))

    packages: Mapping[str, str | None] = info.get("packages", {})
    torch = info.get("torch")
    if torch is None:
        error = info.get("torch_error", "not installed")
        out.append(Finding("torch", "fail", str(error), install))
    else:
        pinned = pins.get("torch")
        version = str(torch["version"])
        if pinned and _torch_base(version) != pinned:
            out.append(
                Finding(
                    "torch",
                    "warn",
                    f"{version}; lorabuild is tested with {pinned}",
                    f"pip install torch=={pinned} torchvision=={pins.get('torchvision', '')} (together, from the "
                    "index for your CUDA version)",
                )
            )
        else:
            out.append(Finding("torch", "ok", version))
        if torch.get("cuda_available"):
            devices = ", ".join(
                f"{name} ({memory} GB)"
                for name, memory in zip(torch.get("devices", []), torch.get("memory_gb", []), strict=False)
            )
            bf16 = "bf16 supported" if torch.get("bf16") else 'no bf16: use mixed_precision = "fp16"'
            out.append(Finding("CUDA", "ok", f"{torch.get('cuda')}: {devices}; {bf16}"))
        elif torch.get("mps"):
            out.append(
                Finding(
                    "CUDA",
                    "warn",
                    "no CUDA; Apple MPS available",
                    'kohya on MPS is untested: use mixed_precision = "no" and attention = "sdpa"',
                )
            )
        else:
            cuda_build = torch.get("cuda")
            why = (
                f"torch is built for CUDA {cuda_build} but sees no GPU"
                if cuda_build
                else "torch is a CPU-only build"
            )
            out.append(
                Finding(
                    "CUDA",
                    "warn",
                    f"no GPU ({why}): training runs on the CPU, very slowly",
                    'on the CPU set training.mixed_precision = "no" and training.attention = "sdpa"; for a GPU, '
                    "install the NVIDIA driver and a CUDA build of torch",
                )
            )

    out.append(_xformers(info, packages, torch))
    bnb = packages.get("bitsandbytes")
    out.append(
        Finding("bitsandbytes", "ok", bnb)
        if bnb
        else Finding(
            "bitsandbytes",
            "warn",
            "not installed: 8-bit optimizers (AdamW8bit, Lion8bit) are unavailable",
            "pip install bitsandbytes",
        )
    )
    out.append(_accelerate(info, packages))
    out.append(_pinned_packages(packages, pins))
    return out


def _xformers(
    info: Mapping[str, Any], packages: Mapping[str, str | None], torch: Mapping[str, Any] | None
) -> Finding:
    version = packages.get("xformers")
    cuda = bool(torch and torch.get("cuda_available"))
    if not version:
        if cuda:
            return Finding(
                "xformers",
                "ok",
                'not installed (attention = "sdpa" needs none; pip install xformers for "xformers")',
            )
        return Finding("xformers", "ok", "not installed (needs CUDA; not used on this machine)")
    wanted = next(
        (r for r in info.get("requires", {}).get("xformers", []) if re.match(r"^torch\s*==", r)), None
    )
    if wanted and torch:
        built_for = wanted.split("==", 1)[1].split(";")[0].strip()
        if _torch_base(str(torch["version"])) != built_for:
            return Finding(
                "xformers",
                "fail",
                f"{version} was built for torch {built_for}, but torch {torch['version']} is installed",
                f'use training.attention = "sdpa", or install the xformers release built for torch {_torch_base(str(torch["version"]))}',
            )
    if not cuda:
        return Finding(
            "xformers",
            "warn",
            f"{version}, but there is no CUDA GPU: it cannot run here",
            'use training.attention = "sdpa" on this machine',
        )
    if info.get("xformers_error"):
        return Finding(
            "xformers",
            "fail",
            f"{version} does not load: {info['xformers_error']}",
            'use training.attention = "sdpa", or reinstall xformers',
        )
    return Finding("xformers", "ok", version)


def _accelerate(info: Mapping[str, Any], packages: Mapping[str, str | None]) -> Finding:
    version = packages.get("accelerate")
    if not version:
        return Finding(
            "accelerate", "fail", "not installed", "pip install -e '.[train]' (or make setup-train)"
        )
    config = info.get("accelerate_config") or {}
    if not config.get("exists"):
        return Finding(
            "accelerate", "ok", f"{version}; no default config (lorabuild passes its own launch settings)"
        )
    values = config.get("values", {})
    shown = ", ".join(f"{k}={v}" for k, v in values.items()) or "empty"
    distributed = str(values.get("distributed_type", "NO")).upper()
    if distributed not in ("NO", "") or values.get("deepspeed_config") or values.get("fsdp_config"):
        return Finding(
            "accelerate",
            "warn",
            f"{version}; config {config.get('path')} ({shown})",
            "lorabuild launches one process with its own precision and dynamo settings, but a distributed, "
            f"DeepSpeed or FSDP setup in this file still applies: run `accelerate config` (this machine, no "
            f"distributed training) or delete {config.get('path')}",
        )
    return Finding("accelerate", "ok", f"{version}; config {config.get('path')} ({shown})")


def _pinned_packages(packages: Mapping[str, str | None], pins: Mapping[str, str]) -> Finding:
    installed = {_canonical(k): v for k, v in packages.items()}
    missing, different = [], []
    for name, pinned in sorted(pins.items()):
        if name in ("torch", "torchvision") or name not in installed:
            continue  # torch is its own finding; unprobed names are not judged
        have = installed[name]
        if have is None:
            missing.append(name)
        elif have != pinned:
            different.append(f"{name} {have} (pinned {pinned})")
    if missing:
        return Finding(
            "packages",
            "fail",
            f"kohya's stack is incomplete: {', '.join(missing)} not installed",
            "pip install -e '.[train]' (or make setup-train)",
        )
    if different:
        return Finding(
            "packages",
            "warn",
            "versions differ from kohya's pins: " + ", ".join(different),
            "pip install -e '.[train]' to install the pinned versions",
        )
    judged = [
        f"{n} {installed[n]}" for n in sorted(pins) if n not in ("torch", "torchvision") and installed.get(n)
    ]
    return Finding("packages", "ok", "kohya's pins: " + ", ".join(judged) if judged else "no pins to compare")


def format_findings(items: Iterable[Finding]) -> str:
    """One line per finding, a fix line under each that is not ok."""
    lines = []
    for item in items:
        lines.append(f"  {item.status:<5} {item.name:<13} {item.value}")
        if item.fix and item.status != "ok":
            lines.append(f"        {'':<13} fix: {item.fix}")
    return "\n".join(lines)


# --- setup ------------------------------------------------------------------------------------


def setup_sd_scripts(source: Path, dest: Path, force: bool = False) -> str:
    """Put kohya at the pinned commit into ``dest`` from a local clone ``source`` (no network).

    Returns:
        What was done, for the user.

    Raises:
        SetupError: ``source`` is not a clone holding the pinned commit, ``dest`` holds something
            else (without ``force``), or git failed.
    """
    if capture(["git", "--version"]).returncode != 0:
        raise SetupError("git is not installed: install git, then run lorabuild setup again")
    if not source.is_dir():
        raise SetupError(f"{source.as_posix()} is not a folder: give the path of a clone of {KOHYA_URL}")
    has = capture(["git", "-C", str(source), "cat-file", "-e", f"{KOHYA_COMMIT}^{{commit}}"])
    if has.returncode != 0:
        raise SetupError(
            f"{source.as_posix()} is not a git clone holding kohya commit {KOHYA_COMMIT}: update it "
            f"(`git -C {source.as_posix()} fetch`) or clone {KOHYA_URL} there"
        )
    if (dest / "train_network.py").is_file() and check_kohya(dest).status == "ok" and not force:
        return f"{_display(dest)} already holds kohya {KOHYA_COMMIT[:7]}: nothing to do"
    if dest.exists() and any(dest.iterdir()):
        if not force:
            raise SetupError(
                f"{_display(dest)} already holds files that are not kohya {KOHYA_COMMIT[:7]}: move them away, "
                "or run lorabuild setup again with --force to replace them"
            )
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        ["git", "clone", "--quiet", "--no-checkout", str(source.resolve()), str(dest)],
        ["git", "-C", str(dest), "-c", "advice.detachedHead=false", "checkout", "--quiet", KOHYA_COMMIT],
    ]
    for argv in steps:
        done = capture(argv, timeout=600)
        if done.returncode != 0:
            raise SetupError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    finding = check_kohya(dest)
    if finding.status != "ok":
        raise SetupError(f"kohya was copied, but {finding.value}")
    return (
        f"installed kohya {KOHYA_COMMIT[:7]} into {_display(dest)} from {source.as_posix()} ({finding.value}); "
        f"next: pip install -e '.[train]' && pip install --no-deps -e {_display(dest)}, then lorabuild doctor"
    )


def environment_summary() -> dict[str, str]:
    """Settings that decide where things are (shown by the doctor)."""
    return {k: v for k, v in os.environ.items() if k.startswith("LORABUILD_")}
