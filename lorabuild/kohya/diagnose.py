"""Known ways a kohya run fails, each turned into one sentence saying what happened and what to do.

:func:`diagnose` reads the end of kohya's output (and its exit status) and returns the first
matching :class:`Diagnosis`, most specific first. The fixes name recipe keys, so a user acts on
the recipe rather than on kohya's options. Failures lorabuild's check catches before any model
loads (USERS.md) are not repeated here; these are the ones only a run shows.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lorabuild.kohya import families


@dataclass(frozen=True)
class Diagnosis:
    """What went wrong and how to fix it.

    Attributes:
        problem: What happened, in words a non-programmer can follow.
        fix: What to change or run.
    """

    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.problem}: {self.fix}"


OOM_FIX = (
    "lower dataset.batch_size, set training.gradient_checkpointing = true, use an 8-bit optimizer "
    '(optimizer.type = "AdamW8bit"), keep training.cache_latents = true, or lower dataset.resolution'
)

# Python module -> the pip package that provides it (where the names differ or are ambiguous).
PIP_PACKAGES = {
    "lycoris": "lycoris-lora",
    "cv2": "opencv-python",
    "lion_pytorch": "lion-pytorch",
    "prodigyopt": "prodigyopt",
    "prodigyplus": "prodigy-plus-schedule-free",
    "pytorch_optimizer": "pytorch-optimizer",
    "schedulefree": "schedulefree",
    "dadaptation": "dadaptation",
    "bitsandbytes": "bitsandbytes",
    "came_pytorch": "came-pytorch",
    "open_clip": "open-clip-torch",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "sklearn": "scikit-learn",
    "google": "protobuf",
    "huggingface_hub": "huggingface-hub",
    "wandb": "wandb",
    "tensorboard": "tensorboard",
    "voluptuous": "voluptuous",
    "safetensors": "safetensors",
    "sentencepiece": "sentencepiece",
    "imagesize": "imagesize",
    "einops": "einops",
    "ftfy": "ftfy",
    "toml": "toml",
    "rich": "rich",
}
# Modules that are part of kohya's pinned stack: the fix is installing the whole stack.
KOHYA_STACK = {"torch", "torchvision", "accelerate", "transformers", "diffusers", "numpy"}

_Rule = Callable[[str, re.Match[str]], Diagnosis]


def _line_of(text: str, match: re.Match[str]) -> str:
    """The whole line a match is on."""
    end = text.find("\n", match.end())
    return text[text.rfind("\n", 0, match.start()) + 1 : end if end >= 0 else len(text)]


def _oom(text: str, match: re.Match[str]) -> Diagnosis:
    where = "the GPU" if re.search(r"CUDA|MPS|HIP|XPU", _line_of(text, match)) else "the machine"
    return Diagnosis(f"{where} ran out of memory while training", OOM_FIX)


def _xformers_missing(text: str, match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "xformers is not installed",
        'set training.attention = "sdpa" (works on every device), or install xformers built '
        "for your torch and CUDA (pip install xformers; CUDA GPUs only)",
    )


def _missing_module(text: str, match: re.Match[str]) -> Diagnosis:
    module = match["module"] or match["main"]
    top = module.split(".")[0]
    if top == "xformers":
        return _xformers_missing(text, match)
    if top == "library" or top == "networks":
        return Diagnosis(
            "kohya's own modules could not be imported",
            "check that the kohya checkout is complete (lorabuild doctor), then "
            "pip install --no-deps -e vendor/sd-scripts",
        )
    if top in KOHYA_STACK:
        return Diagnosis(
            f"kohya's Python stack is not installed here (no module '{top}')",
            "install it into the Python that runs lorabuild: pip install -e '.[train]' "
            "(or make setup-train), then check with lorabuild doctor",
        )
    package = PIP_PACKAGES.get(top, top.replace("_", "-"))
    return Diagnosis(
        f"kohya needs the Python package '{package}' (module '{top}'), which is not installed",
        f"pip install {package} (into the Python that runs lorabuild)",
    )


def _nan_latents(text: str, match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"the VAE produced NaN (not a number) while encoding {match[1].strip()}",
        "set training.no_half_vae = true (SDXL's VAE overflows in fp16), or use "
        'training.mixed_precision = "bf16" where the GPU supports it',
    )


def _no_data(text: str, match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        'kohya found no training images ("No data found") and saved nothing',
        "check that each dataset.subsets source folder holds images, run lorabuild check, "
        "then lorabuild train again (it restages build/<name>/dataset)",
    )


def _xformers_broken(text: str, match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "xformers cannot run here (it needs a CUDA GPU and a build that matches torch)",
        'set training.attention = "sdpa", or reinstall xformers for your torch version '
        "(lorabuild doctor shows both)",
    )


def _tokenizer(text: str, match: re.Match[str]) -> Diagnosis:
    if "strategy_lumina.py" in text:
        # library/strategy_lumina.py: AutoTokenizer.from_pretrained(GEMMA_ID, cache_dir=--tokenizer_cache_dir).
        return Diagnosis(
            "kohya could not load Lumina 2's Gemma tokenizer, google/gemma-2-2b (not in the tokenizer cache, and "
            "no connection to the Hugging Face hub or no access to that gated repository)",
            "accept google/gemma-2-2b's licence on huggingface.co, log in (huggingface-cli login) and run once "
            "online, or set model.tokenizer_cache_dir to a Hugging Face hub cache that holds "
            "models--google--gemma-2-2b/",
        )
    return Diagnosis(
        "kohya could not download the CLIP tokenizer (no connection to the Hugging Face hub)",
        "run once with a network connection, or set model.tokenizer_cache_dir to a folder that "
        "holds openai_clip-vit-large-patch14/",
    )


def _bad_image(text: str, match: re.Match[str]) -> Diagnosis:
    name = match["file"] if "file" in match.groupdict() and match["file"] else "an image"
    return Diagnosis(
        f"{name} could not be read (truncated or not an image)",
        "re-save or remove it from the source folder, then run lorabuild check",
    )


def _bad_model(text: str, match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "the base model file could not be read (corrupt, incomplete download, or not a model)",
        "download model.base again and compare its size with the original",
    )


def _size_mismatch(text: str, match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "the base model's weights do not fit the kohya script chosen for its family",
        "check model.family ("
        + ", ".join(f'an {f.label} checkpoint needs "{f.name}"' for f in families.ALL)
        + ") "
        "and model.v_parameterization",
    )


def _no_gpu(text: str, match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "torch cannot use a GPU here",
        "install a CUDA build of torch (lorabuild doctor shows what is installed), or train on the "
        'CPU with training.mixed_precision = "no" and training.attention = "sdpa"',
    )


def _state_at_end(text: str, match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "the saved training state is already at the last step, so there is nothing to resume",
        "start over with lorabuild train --fresh",
    )


def _disk_full(text: str, match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "the disk is full", "free some space (old builds' output/ folders), then run lorabuild train again"
    )


def _bitsandbytes(text: str, match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "bitsandbytes (8-bit optimizers) cannot run here",
        'use optimizer.type = "AdamW" (or "Lion"), or install a bitsandbytes build for your '
        "GPU (lorabuild doctor)",
    )


# Most specific first: the first rule whose pattern occurs in the output wins.
RULES: tuple[tuple[re.Pattern[str], _Rule], ...] = (
    (re.compile(r"NaN detected in latents:?\s*(.*)"), _nan_latents),
    (
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|MPS backend out of memory|"
            r"HIP out of memory|XPU out of memory|DefaultCPUAllocator: (?:can't allocate memory|not enough memory)|"
            r"std::bad_alloc|^MemoryError\b",
            re.MULTILINE,
        ),
        _oom,
    ),
    (re.compile(r"No data found"), _no_data),
    (re.compile(r"ImportError: No xformers"), _xformers_missing),
    (
        re.compile(r"No operator found for `?memory_efficient_attention|xFormers wasn't build with CUDA"),
        _xformers_broken,
    ),
    # The exception itself, or `python -m` failing to find a module; never a warning that names one.
    (
        re.compile(
            r"(?:ModuleNotFoundError|ImportError): No module named '(?P<module>[\w.]+)'|"
            r"^\S*python[\d.]*(?:\.exe)?: No module named (?P<main>[\w.]+)",
            re.MULTILINE,
        ),
        _missing_module,
    ),
    (
        re.compile(
            r"couldn't connect to 'https://huggingface\.co'|Can't load tokenizer for|"
            r"LocalEntryNotFoundError|We couldn't connect to"
        ),
        _tokenizer,
    ),
    (
        re.compile(
            r"image file is truncated(?: \(\d+ bytes not processed\))?|cannot identify image file '(?P<file>[^']+)'"
        ),
        _bad_image,
    ),
    (
        re.compile(
            r"Error while deserializing header|HeaderTooLarge|invalid load key|PytorchStreamReader failed|"
            r"MetadataIncompleteBuffer"
        ),
        _bad_model,
    ),
    (re.compile(r"size mismatch for "), _size_mismatch),
    (
        re.compile(
            r"Torch not compiled with CUDA enabled|Found no NVIDIA driver|CUDA driver version is insufficient|"
            r"no kernel image is available for execution"
        ),
        _no_gpu,
    ),
    (re.compile(r"max_train_steps should be greater than initial step"), _state_at_end),
    (re.compile(r"No space left on device"), _disk_full),
    (
        re.compile(
            r"bitsandbytes was compiled without GPU support|CUDA Setup failed despite GPU being available"
        ),
        _bitsandbytes,
    ),
)

_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Interrupt)):\s*(.*)$")


def diagnose(lines: Sequence[str], returncode: int = 1, nan_step: int | None = None) -> Diagnosis | None:
    """The first known failure in kohya's output, or None.

    Args:
        lines: The end of kohya's output (a few hundred lines are enough).
        returncode: kohya's exit status (negative: killed by that signal).
        nan_step: The first step at which the loss was NaN, when the progress showed one.
    """
    text = "\n".join(lines)
    for pattern, explain in RULES:
        # The last occurrence: the exception itself comes after any source line quoting it.
        matches = list(pattern.finditer(text))
        if matches:
            match = matches[-1]
            return explain(text, match)
    if nan_step is not None:
        return Diagnosis(
            f"the loss became NaN (not a number) at step {nan_step}, so the saved LoRA files are unusable",
            'lower optimizer.lr; with fp16 try training.mixed_precision = "bf16" or, for SDXL, '
            "training.no_half_vae = true",
        )
    # accelerate reports a killed trainer as "... died with <Signals.SIGKILL: 9>." and exits 1.
    if returncode in (-getattr(signal, "SIGKILL", 9), 137) or "died with <Signals.SIGKILL: 9>" in text:
        return Diagnosis(
            "kohya was killed by the system (SIGKILL), most often because the machine ran out of memory",
            "close other programs, or " + OOM_FIX,
        )
    return None


def last_error(lines: Sequence[str]) -> str | None:
    """The last ``SomethingError: message`` line of a Python traceback, if any.

    accelerate's own ``subprocess.CalledProcessError`` (the launcher saying its child failed) comes
    last; the child's error before it is the one that says what went wrong.
    """
    wrapper = None
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line.strip())
        if not match or match[1] in ("KeyboardInterrupt",):
            continue
        if match[1].endswith("CalledProcessError"):
            wrapper = wrapper or line.strip()
            continue
        return line.strip()
    return wrapper
