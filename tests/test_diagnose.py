"""Known kohya failures, read from the end of its output, become one sentence with a fix.

The snippets are the ends of real kohya/torch outputs (messages as the pinned kohya, torch and
accelerate word them), trimmed to the lines that matter plus some of the noise around them.
"""

from __future__ import annotations

import pytest

from lorabuild.kohya.diagnose import diagnose, last_error


def lines(text: str) -> list[str]:
    return text.strip("\n").splitlines()


CUDA_OOM = lines("""
steps:   0%|          | 0/1600 [00:00<?, ?it/s]
epoch 1/10
Traceback (most recent call last):
  File "/k/train_network.py", line 1390, in train
    loss = self.process_batch(
  File "/k/library/original_unet.py", line 598, in forward
    hidden_states = self.attn1(self.norm1(hidden_states)) + hidden_states
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.25 GiB. GPU 0 has a total capacity of 7.79 GiB of which 412.69 MiB is free. Including non-PyTorch memory, this process has 7.37 GiB memory in use.
Traceback (most recent call last):
  File "/venv/bin/accelerate", line 8, in <module>
subprocess.CalledProcessError: Command '['/venv/bin/python', 'train_network.py', '--config_file', 'config.toml']' returned non-zero exit status 1.
""")

CPU_OOM = lines("""
caching latents...
RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to allocate 3276800000 bytes.
""")

NAN_LATENTS = lines("""
caching latents...
 50%|█████     | 2/4 [00:01<00:01,  1.37it/s]
Traceback (most recent call last):
  File "/k/library/train_util.py", line 3098, in cache_batch_latents
    raise RuntimeError(f"NaN detected in latents: {info.absolute_path}")
RuntimeError: NaN detected in latents: /home/u/build/X/dataset/2_x/003.png
""")

LYCORIS = lines("""
import network module: lycoris.kohya
Traceback (most recent call last):
  File "/k/train_network.py", line 628, in train
    network_module = importlib.import_module(args.network_module)
ModuleNotFoundError: No module named 'lycoris'
""")

NO_ACCELERATE = lines("""
/usr/bin/python3: Error while finding module specification for 'accelerate.commands.launch' (ModuleNotFoundError: No module named 'accelerate')
""")

NO_DATA = lines("""
found directory dataset contains 0 image files
No data found. Please verify arguments (train_data_dir must be the parent of folders with images) / 画像がありません。引数指定を確認してください（train_data_dirには画像があるフォルダではなく、画像があるフォルダの親フォルダを指定する必要があります）
""")

NO_XFORMERS = lines("""
Enable xformers for U-Net
Traceback (most recent call last):
  File "/k/library/train_util.py", line 3369, in replace_unet_modules
    import xformers.ops
ModuleNotFoundError: No module named 'xformers'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
ImportError: No xformers / xformersがインストールされていないようです
""")

XFORMERS_ON_CPU = lines("""
NotImplementedError: No operator found for `memory_efficient_attention_forward` with inputs:
     query       : shape=(2, 4096, 8, 40) (torch.float32)
`cutlassF-pt` is not supported because:
    device=cpu (supported: {'cuda'})
""")

TOKENIZER_OFFLINE = lines("""
OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached files.
""")

# lumina_train_network.py without google/gemma-2-2b in --tokenizer_cache_dir, offline (seen with the tiny model).
GEMMA_TOKENIZER_OFFLINE = lines("""
  File "/k/sd-scripts/lumina_train_network.py", line 90, in get_tokenize_strategy
    return strategy_lumina.LuminaTokenizeStrategy(args.system_prompt, args.gemma2_max_token_length, args.tokenizer_cache_dir)
  File "/k/sd-scripts/library/strategy_lumina.py", line 30, in __init__
    self.tokenizer: GemmaTokenizerFast = AutoTokenizer.from_pretrained(
OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached files.
""")

TRUNCATED = lines("""
  File "/venv/lib/python3.11/site-packages/PIL/ImageFile.py", line 319, in load
    raise OSError(msg)
OSError: image file is truncated (3 bytes not processed)
""")


@pytest.mark.parametrize(
    ("output", "problem", "fix"),
    [
        (CUDA_OOM, "the GPU ran out of memory while training", "lower dataset.batch_size"),
        (CPU_OOM, "the machine ran out of memory while training", "training.gradient_checkpointing = true"),
        (
            NAN_LATENTS,
            "the VAE produced NaN (not a number) while encoding /home/u/build/X/dataset/2_x/003.png",
            "training.no_half_vae = true",
        ),
        (
            LYCORIS,
            "kohya needs the Python package 'lycoris-lora' (module 'lycoris'), which is not installed",
            "pip install lycoris-lora",
        ),
        (
            NO_ACCELERATE,
            "kohya's Python stack is not installed here (no module 'accelerate')",
            "pip install -e '.[train]'",
        ),
        (
            NO_DATA,
            'kohya found no training images ("No data found") and saved nothing',
            "dataset.subsets source folder",
        ),
        (NO_XFORMERS, "xformers is not installed", 'training.attention = "sdpa"'),
        (XFORMERS_ON_CPU, "xformers cannot run here", 'training.attention = "sdpa"'),
        (TOKENIZER_OFFLINE, "kohya could not download the CLIP tokenizer", "model.tokenizer_cache_dir"),
        (
            GEMMA_TOKENIZER_OFFLINE,
            "kohya could not load Lumina 2's Gemma tokenizer, google/gemma-2-2b",
            "a Hugging Face hub cache that holds models--google--gemma-2-2b/",
        ),
        (TRUNCATED, "an image could not be read (truncated or not an image)", "re-save or remove it"),
    ],
)
def test_known_failures_get_a_diagnosis_with_a_fix(output: list[str], problem: str, fix: str) -> None:
    diagnosis = diagnose(output, 1)
    assert diagnosis is not None
    assert diagnosis.problem.startswith(problem)
    assert fix in diagnosis.fix
    assert "\n" not in str(diagnosis)


def test_a_warning_that_names_a_missing_module_is_not_the_cause() -> None:
    output = [
        "A matching Triton is not available, some optimizations will not be enabled",
        "No module named 'triton'",
        "Traceback (most recent call last):",
        "ValueError: something else entirely",
    ]
    assert diagnose(output, 1) is None
    assert last_error(output) == "ValueError: something else entirely"


def test_a_nan_loss_is_diagnosed_from_the_progress() -> None:
    diagnosis = diagnose(["steps: 100%|##| 2/2 [00:02<00:00, 1.00it/s, avr_loss=nan]"], 0, nan_step=3)
    assert diagnosis is not None
    assert (
        diagnosis.problem
        == "the loss became NaN (not a number) at step 3, so the saved LoRA files are unusable"
    )
    assert "lower optimizer.lr" in diagnosis.fix


def test_a_silent_sigkill_is_most_likely_the_oom_killer() -> None:
    diagnosis = diagnose(["steps:   5%|▌  | 2/40 [00:02<00:38, 1.00it/s]"], -9)
    assert diagnosis is not None and "ran out of memory" in diagnosis.problem


def test_unknown_failures_are_not_guessed() -> None:
    assert diagnose(["Traceback (most recent call last):", "KeyError: 'foo'"], 1) is None
    assert last_error(["KeyError: 'foo'", "", "  something after"]) == "KeyError: 'foo'"


def test_the_error_named_is_kohyas_not_accelerates_wrapper() -> None:
    """accelerate ends with its own CalledProcessError; the child's KeyError before it says what failed."""
    output = [
        "Traceback (most recent call last):",
        '  File "networks/lora_lumina.py", line 786, in state_dict',
        "KeyError: 'lora_unet_context_refiner_0_attention_qkv.lora_down.0.weight'",
        "Traceback (most recent call last):",
        "subprocess.CalledProcessError: Command '['python', 'lumina_train_network.py']' returned non-zero exit status 1.",
    ]
    assert last_error(output) == "KeyError: 'lora_unet_context_refiner_0_attention_qkv.lora_down.0.weight'"
    assert last_error(output[3:]) == output[-1].strip()
