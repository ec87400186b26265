"""Shared fixtures: a throwaway lorabuild project (recipe, images, captions, model header)."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SD_SCRIPTS = REPO / "vendor" / "sd-scripts"

# Tensor names that mark each family's checkpoint (a few are enough for lorabuild's probe).
FAMILY_KEYS = {
    "sd15": [
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
        "model.diffusion_model.out.0.bias",
    ],
    "sd2": ["cond_stage_model.model.transformer.resblocks.0.ln_1.bias", "model.diffusion_model.out.0.bias"],
    "sdxl": ["conditioner.embedders.1.model.ln_final.bias", "model.diffusion_model.label_emb.0.0.bias"],
    # library/flux_models.py (BFL layout): dev has guidance_in, schnell does not.
    "flux": [
        "double_blocks.0.img_attn.proj.bias",
        "single_blocks.0.modulation.lin.bias",
        "guidance_in.in_layer.bias",
    ],
    # library/chroma_models.py: the approximator replaces vector_in and guidance_in.
    "chroma": [
        "distilled_guidance_layer.in_proj.bias",
        "double_blocks.0.img_attn.proj.bias",
        "single_blocks.0.linear1.bias",
    ],
    # library/sd3_models.py MMDiT in SAI's single-file layout (SD3.5 Large: qk-norm, no attn2).
    "sd3": [
        "model.diffusion_model.joint_blocks.0.context_block.attn.ln_k.weight",
        "model.diffusion_model.x_embedder.proj.weight",
        "first_stage_model.decoder.conv_in.weight",
    ],
    # library/anima_models.py, under the released files' "net." prefix: the LLM adapter is Anima's own.
    "anima": [
        "net.blocks.0.adaln_modulation_cross_attn.1.weight",
        "net.llm_adapter.blocks.0.self_attn.q_proj.weight",
        "net.t_embedding_norm.weight",
    ],
    # library/hunyuan_image_models.py: FLUX-like blocks, and the byT5 mapper only it has.
    "hunyuan": [
        "byt5_in.fc1.weight",
        "double_blocks.0.img_attn_qkv.weight",
        "single_blocks.0.linear1.weight",
        "txt_in.individual_token_refiner.blocks.0.norm1.weight",
    ],
    # library/lumina_models.py NextDiT (Alpha-VLLM's layout, as the released lumina-image-2.safetensors):
    # the caption refiner is Lumina's own.
    "lumina": [
        "cap_embedder.1.weight",
        "context_refiner.0.attention.qkv.weight",
        "layers.0.feed_forward.w1.weight",
        "noise_refiner.0.adaLN_modulation.0.weight",
        "x_embedder.weight",
    ],
}


# Headers of the model files a family loads besides the base model (lorabuild.probe.modelfile tells
# them apart by these names), by [model] key.
COMPONENT_KEYS = {
    "clip_l": ["text_model.encoder.layers.0.mlp.fc1.weight", "text_model.final_layer_norm.weight"],
    "t5xxl": ["encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"],
    "ae": ["encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight"],
    # CLIP-G has 32 layers (CLIP-L 12): the probe tells them apart by depth.
    "clip_g": ["text_model.encoder.layers.31.mlp.fc1.weight", "text_model.final_layer_norm.weight"],
    # Anima: Qwen3-0.6B (ComfyUI's qwen_3_06b_base.safetensors) and the Qwen-Image VAE in ComfyUI's layout.
    "qwen3": ["model.embed_tokens.weight", "model.layers.0.self_attn.q_norm.weight"],
    "qwen_image_vae": [
        "conv1.weight",
        "decoder.middle.1.to_qkv.weight",
        "encoder.downsamples.0.residual.0.gamma",
    ],
    # HunyuanImage 2.1 (library/hunyuan_image_text_encoder.py, hunyuan_image_vae.py).
    "text_encoder": [
        "model.layers.0.mlp.up_proj.weight",
        "visual.blocks.0.attn.qkv.weight",
        "lm_head.weight",
    ],
    "byt5": [
        "encoder.block.0.layer.0.SelfAttention.q.weight",
        "encoder.block.11.layer.1.DenseReluDense.wo.weight",
        "shared.weight",
    ],
    "hunyuan_vae": [
        "encoder.down.5.block.0.conv1.weight",
        "decoder.up.0.block.0.conv1.weight",
        "encoder.conv_in.weight",
    ],
    # Lumina 2: Gemma-2 2B as ComfyUI's gemma_2_2b_fp16.safetensors (under "model."); its AE is FLUX's ("ae").
    "gemma2": [
        "model.embed_tokens.weight",
        "model.layers.0.pre_feedforward_layernorm.weight",
        "model.layers.0.self_attn.q_proj.weight",
    ],
}

# The COMPONENT_KEYS entry for a [model] key whose file differs by family: model.vae is the
# Qwen-Image VAE for Anima and HunyuanImage-2.1's own VAE for HunyuanImage.
FAMILY_COMPONENTS = {("anima", "vae"): "qwen_image_vae", ("hunyuan", "vae"): "hunyuan_vae"}


def component_names(family: str, key: str) -> list[str] | None:
    """The header names of the file a ``family`` recipe's ``model.<key>`` points at (None: no component)."""
    return COMPONENT_KEYS.get(FAMILY_COMPONENTS.get((family, key), key))


def run_lorabuild(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``lorabuild`` command line in a fresh process, as a user does."""
    return subprocess.run(
        [sys.executable, "-m", "lorabuild", *args], cwd=cwd, capture_output=True, text=True, encoding="utf-8"
    )


def run_cli_here(
    *args: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """Run the command line in this process (so it meets this process's lock and patches): status, stderr."""
    from lorabuild import cli

    monkeypatch.setattr(sys, "argv", ["lorabuild", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.main()
    return int(exited.value.code or 0), capsys.readouterr().err


def write_safetensors(path: Path, names: list[str]) -> Path:
    """A real (tiny) safetensors file with one float32 scalar per name."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    for i, name in enumerate(names):
        header[name] = {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * (4 * len(names)))
    return path


def write_checkpoint(path: Path, family: str = "sd15") -> Path:
    """A safetensors checkpoint whose header says ``family``."""
    return write_safetensors(path, FAMILY_KEYS[family])


def write_image(path: Path, size: tuple[int, int] = (512, 512), mode: str = "RGB", blue: int = 40) -> Path:
    """A small real image (one colour; ``blue`` tells images of one size apart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (200, 120, blue, 255) if mode == "RGBA" else (200, 120, blue)
    Image.new(mode, size, colour[: len(mode)]).save(path)
    return path


CAPTIONS = [
    "1girl, solo, flower, hair_ornament, short_hair, brown_hair, smile, transparent_background",
    "1girl, solo, flower, short_hair, brown_hair, school_uniform, white_background",
    "flower, hair_ornament, 1girl, smile, brown_hair",
    "1girl, solo, short_hair, flower, looking_at_viewer",
]

RECIPE = """\
name = "Test_v1"

[model]
base = "models/base.safetensors"
clip_skip = 2

[dataset]
resolution = [512, 512]
batch_size = 2
shuffle_caption = true
keep_tokens = 1

[[dataset.subsets]]
source = "data/char"
trigger = "uiharu_kazari"
repeats = 2

[captions]
remove = ["flower", "hair_ornament", "short_hair", "brown_hair"]
move_to_end = ["transparent_background"]

[network]
dim = 8
alpha = 4

[optimizer]
type = "AdamW"
lr = 1e-4
scheduler = "cosine"

[training]
epochs = 3
mixed_precision = "no"
attention = "sdpa"
"""


def problems(project: Project, *overrides: str) -> list[str]:
    """``lorabuild check``'s problems for ``project`` with ``--set`` ``overrides``, each as it prints it."""
    from lorabuild.problems import format_problem
    from lorabuild.stages.check import check

    return [format_problem(p) for p in check(project.recipe, list(overrides), project.build).problems]


class Project:
    """A temporary project folder with a recipe, a dataset and a model header."""

    def __init__(self, root: Path):
        self.root = root
        self.recipe = root / "recipe.toml"
        self.build = root / "build"

    def write_recipe(self, text: str = RECIPE, name: str = "recipe.toml") -> Path:
        path = self.root / name
        path.write_text(text, encoding="utf-8")
        return path

    def write_models(self, checkpoints: Mapping[str, str], components: Mapping[str, str] = {}) -> None:
        """Headers under ``models/``: each checkpoint (file stem -> family) and model file (stem -> component)."""
        models = self.root / "models"
        for stem, family in checkpoints.items():
            write_checkpoint(models / f"{stem}.safetensors", family)
        for stem, component in components.items():
            write_safetensors(models / f"{stem}.safetensors", COMPONENT_KEYS[component])

    def add_images(
        self,
        folder: str = "data/char",
        sizes: list[tuple[int, int]] | None = None,
        captions: list[str] | None = None,
        ext: str = ".txt",
    ) -> list[Path]:
        sizes = sizes or [(512, 512), (512, 768), (768, 512), (512, 512)]
        captions = captions if captions is not None else CAPTIONS
        paths = []
        for i, size in enumerate(sizes):
            # A colour per image: no two are the same picture (lorabuild reports duplicates).
            image = write_image(self.root / folder / f"{i:03d}.png", size, blue=40 + 10 * i)
            if i < len(captions):
                image.with_suffix(ext).write_text(captions[i], encoding="utf-8")
            paths.append(image)
        return paths

    def tree_hash(self, folder: str) -> str:
        """A hash of every file's name, bytes and mtime under ``folder`` (sources must not change)."""
        digest = hashlib.sha256()
        for path in sorted((self.root / folder).rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(self.root)}:{stat.st_mtime_ns}:".encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A ready project: recipe.toml, 4 captioned images in data/char, an SD1.5 model header."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORABUILD_BUILD_DIR", raising=False)
    p = Project(tmp_path)
    p.recipe = Path("recipe.toml")  # relative, as a user types it (messages show it as written)
    p.write_recipe()
    p.add_images()
    write_checkpoint(tmp_path / "models" / "base.safetensors", "sd15")
    return p


FLUX_RECIPE = """\
name = "Flux_v1"

[model]
base = "models/flux1-dev.safetensors"
clip_l = "models/clip_l.safetensors"
t5xxl = "models/t5xxl_fp16.safetensors"
ae = "models/ae.safetensors"

[dataset]
resolution = [512, 512]

[[dataset.subsets]]
source = "data/char"
trigger = "uiharu_kazari"
repeats = 2

[network]
dim = 8
alpha = 1
train = "unet"

[training]
epochs = 2
"""


@pytest.fixture
def flux_project(project: Project) -> Project:
    """The ``project`` with a FLUX.1 dev DiT, its CLIP-L, T5-XXL and autoencoder headers and a FLUX recipe."""
    project.write_recipe(FLUX_RECIPE)
    project.write_models(
        {"flux1-dev": "flux", "chroma": "chroma"}, {"clip_l": "clip_l", "t5xxl_fp16": "t5xxl", "ae": "ae"}
    )
    return project


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[[str], Project]:
    """Make extra projects in sub-folders."""

    def make(name: str) -> Project:
        root = tmp_path / name
        root.mkdir()
        return Project(root)

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked real_trainer, saying why, when kohya is not checked out."""
    if (SD_SCRIPTS / "train_network.py").is_file():
        return
    skip = pytest.mark.skip(
        reason="vendor/sd-scripts is not checked out: run `git submodule update --init` "
        "(or `lorabuild setup --sd-scripts PATH`) to run the tests against the real kohya trainer"
    )
    for item in items:
        if "real_trainer" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def gpu_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped recipes are written for an NVIDIA GPU (xformers): on a machine with kohya's
    stack but no GPU packages, the check would refuse them. Tests of what they compile to count
    xformers as installed (the rule that refuses it has its own test)."""
    from lorabuild.probe import facts

    found = facts.installed_packages
    monkeypatch.setattr(facts, "installed_packages", lambda: {**found(), "xformers": True})
