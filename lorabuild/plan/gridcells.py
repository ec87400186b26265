"""The evaluation grid's cells: what each one's pixels depend on, and the gen_img lines that render them.

Pure, from the plan's :class:`~lorabuild.plan.evaluate.GridSettings` and the digests of the files
a cell reads (the stage :mod:`lorabuild.stages.grid` computes those and runs gen_img).

- **Content-addressed cells.** A cell's file is ``grid/cells/<key>.png``, where the key
  (:func:`cell_key`) hashes everything its pixels depend on (base model and LoRA file digests,
  weight, prompt, negative prompt, seed, sampler, steps, CFG, size, clip skip, prompt length,
  precision, kohya commit; for FLUX.1/Chroma also the CLIP-L, T5-XXL and AE digests, the model
  type, T5 mask and guidance). The no-LoRA baseline does not depend on the epoch, so its one cell
  per prompt and seed serves every row.
- **One model load, batched.** :func:`plan_grid` orders the cells so that those of one epoch and
  weight follow each other (gen_img batches consecutive lines with equal settings); each
  :func:`prompt_line` selects its epoch's network with ``--am`` and switches the others off, and
  :func:`use_pre_calc` says when merging the weights per batch (``--network_pre_calc``) is faster.
  KOHYA.md section 8.2 has the gen_img facts this relies on.
- **Sheets.** A :class:`SheetPlan` per prompt and seed lays the cells out, rows by epoch and
  columns by weight; :func:`lorabuild.build.gridmanifest.manifest` turns them into ``grid/grid.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lorabuild.kohya.gridrender import GridImage
from lorabuild.plan.evaluate import GridSettings
from lorabuild.plan.layout import BuildLayout

# Bump when what a key covers, or how a cell is rendered, changes: old cells are then not reused.
KEY_VERSION = 1


@dataclass(frozen=True)
class Cell:
    """One image of the grid.

    Attributes:
        epoch: The epoch whose LoRA file it uses; None for the no-LoRA baseline.
        weight: The LoRA weight; None for the baseline.
        prompt_index: Index into the settings' prompts.
        seed: The seed.
        prompt: The prompt text.
        key: Hash of everything its pixels depend on; its file is ``grid/cells/<key>.png``.
    """

    epoch: int | None
    weight: float | None
    prompt_index: int
    seed: int
    prompt: str
    key: str

    @property
    def file(self) -> str:
        """The cell's image, relative to the build folder."""
        return f"{BuildLayout.CELLS}/{self.key}.png"


@dataclass(frozen=True)
class SheetPlan:
    """One prompt and seed: rows by epoch, columns by weight (the baseline first)."""

    id: str
    prompt_index: int
    prompt: str
    seed: int
    epochs: tuple[int, ...]
    columns: tuple[float | None, ...]
    cells: tuple[tuple[Cell, ...], ...]


@dataclass(frozen=True)
class GridPlan:
    """Every cell of a build's grid and how the sheets lay them out.

    Attributes:
        settings: The shared settings.
        epochs: The rows, in order.
        lora_files: Each epoch's LoRA file (relative to the build folder or absolute).
        cells: Every distinct cell (the baseline once per prompt and seed), in render order.
        sheets: One per prompt and seed.
    """

    settings: GridSettings
    epochs: tuple[int, ...]
    lora_files: Mapping[int, str]
    cells: tuple[Cell, ...]
    sheets: tuple[SheetPlan, ...]

    @property
    def key(self) -> str:
        """A hash of every cell's key: the grid's inputs as a whole."""
        return json_digest([c.key for c in self.cells])


def json_digest(doc: object) -> str:
    """sha256 of ``doc`` as compact JSON with sorted keys (hex)."""
    blob = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def cell_key(
    settings: GridSettings,
    *,
    base_digest: str,
    vae_digest: str | None,
    lora_digest: str | None,
    weight: float | None,
    prompt: str,
    seed: int,
    kohya: str,
    model_digests: Mapping[str, str] | None = None,
) -> str:
    """The content key of one cell (32 hex digits): what its pixels depend on, and nothing else.

    The epoch number is not part of it (the LoRA file's digest is), nor the batch a cell is
    rendered in, nor the other networks loaded beside it (their weight is 0). ``model_digests``
    are the other model files' (FLUX's ``clip_l``, ``t5xxl``, ``ae``); absent for the SD families,
    whose keys stay as they were.
    """
    doc = {
        "version": KEY_VERSION,
        "kohya": kohya,
        "base": base_digest,
        "vae": vae_digest,
        "lora": None if lora_digest is None else {"digest": lora_digest, "module": settings.network_module},
        "weight": weight,
        "prompt": prompt,
        "negative_prompt": settings.negative_prompt,
        "seed": seed,
        **settings.image_inputs(),
    }
    if model_digests:
        doc["models"] = dict(model_digests)
    return json_digest(doc)[:32]


def plan_grid(
    settings: GridSettings,
    epochs: Sequence[int],
    lora_files: Mapping[int, str],
    lora_digests: Mapping[int, str],
    *,
    base_digest: str,
    vae_digest: str | None,
    kohya: str,
    model_digests: Mapping[str, str] | None = None,
) -> GridPlan:
    """Every cell of the grid for the chosen ``epochs`` (each with its LoRA file and digest).

    Render order: epoch by epoch, weight by weight, then prompt and seed, so that the cells that
    share a network multiplier are consecutive (one gen_img batch); the baselines come first.
    """
    rows = tuple(sorted(set(epochs)))
    columns: tuple[float | None, ...] = ((None,) if settings.baseline else ()) + tuple(settings.weights)
    order: dict[str, Cell] = {}
    table: dict[tuple[int, int, int | None, float | None], Cell] = {}

    def make(epoch: int | None, weight: float | None, p: int, seed: int) -> Cell:
        key = cell_key(
            settings,
            base_digest=base_digest,
            vae_digest=vae_digest,
            lora_digest=None if epoch is None else lora_digests[epoch],
            weight=weight,
            prompt=settings.prompts[p],
            seed=seed,
            kohya=kohya,
            model_digests=model_digests,
        )
        cell = order.setdefault(key, Cell(epoch, weight, p, seed, settings.prompts[p], key))
        return cell

    pairs = [(p, seed) for p in range(len(settings.prompts)) for seed in settings.seeds]
    if settings.baseline:
        for p, seed in pairs:
            base_cell = make(None, None, p, seed)
            for epoch in rows:
                table[(p, seed, epoch, None)] = base_cell
    for epoch in rows:
        for weight in settings.weights:
            for p, seed in pairs:
                table[(p, seed, epoch, weight)] = make(epoch, weight, p, seed)
    sheets = tuple(
        SheetPlan(
            id=f"p{p:02d}_s{seed}",
            prompt_index=p,
            prompt=settings.prompts[p],
            seed=seed,
            epochs=rows,
            columns=columns,
            cells=tuple(tuple(table[(p, seed, epoch, w)] for w in columns) for epoch in rows),
        )
        for p, seed in pairs
    )
    return GridPlan(settings, rows, {e: lora_files[e] for e in rows}, tuple(order.values()), sheets)


def network_order(cells: Sequence[Cell]) -> tuple[int, ...]:
    """The epochs whose LoRA files a render of ``cells`` loads, in ``--network_weights`` order."""
    return tuple(sorted({c.epoch for c in cells if c.epoch is not None}))


def grid_image(settings: GridSettings, cell: Cell, networks: Sequence[int]) -> GridImage:
    """What a renderer needs to render ``cell`` as ``<key>.png`` with the LoRA files of ``networks`` loaded.

    Every line carries its seed, size, steps and scale, so no line depends on the command's
    defaults or on the lines before it; every loaded network gets a multiplier: the cell's epoch
    the cell's weight, every other one 0 (all 0 for the baseline).
    """
    multipliers = tuple(
        cell.weight if cell.epoch == epoch and cell.weight is not None else 0.0 for epoch in networks
    )
    name = f"{cell.key}.png"
    return GridImage(
        settings.prompt_line(cell.prompt, cell.seed, multipliers=multipliers, image_name=name), name
    )


def prompt_line(settings: GridSettings, cell: Cell, networks: Sequence[int]) -> str:
    """The gen_img ``--from_file`` line that renders ``cell`` into ``<key>.png`` (``--am``: the multipliers)."""
    return grid_image(settings, cell, networks).line.gen_img_line()


def prompt_file_text(settings: GridSettings, cells: Sequence[Cell], networks: Sequence[int]) -> str:
    """The whole ``--from_file`` prompt file for ``cells`` (in the given order)."""
    return "".join(prompt_line(settings, c, networks) + "\n" for c in cells)


def batch_size(cells: Sequence[Cell], cap: int) -> int:
    """The longest run of consecutive cells that share a network multiplier, at most ``cap``.

    gen_img splits a batch wherever the multipliers change, so a larger batch would only hold
    one multiplier's cells anyway; a run this long fills each batch.
    """
    longest = run = 0
    previous: tuple[int | None, float | None] | None = None
    for cell in cells:
        current = (cell.epoch, cell.weight)
        run = run + 1 if current == previous else 1
        previous = current
        longest = max(longest, run)
    return max(1, min(cap, longest))


def use_pre_calc(settings: GridSettings, batch: int, networks: int) -> bool:
    """Whether ``--network_pre_calc`` is the faster way to switch networks for this grid.

    Without it every forward pass runs each loaded network's LoRA branch: per batch about
    ``steps x 2 (CFG) x batch x tokens x 2 d r`` extra multiply-adds per layer and network. With it
    gen_img restores and re-merges *every* loaded network into the weights at each batch: about
    ``d x d x r`` per layer and network. Both grow with the number of networks, so they cross
    where ``steps x batch x tokens`` is about ``d / 4``; at the U-Net's deepest attention layers
    (d = 1280, tokens = (W/32) x (H/32)) that is ``steps x batch x tokens >= 320``. A 512 px grid
    at 20 steps merges (1,280 >> 320); the CPU demo's 64 px cells at 2 steps do not (8 << 320):
    there the merge cost twice the sampling (measured: 117 s against 70 s).
    """
    if networks == 0:
        return False
    tokens = max(1, settings.width // 32) * max(1, settings.height // 32)
    return settings.steps * batch * tokens >= 320
