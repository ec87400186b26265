"""Install a chosen epoch into the AUTOMATIC1111 webui's or ComfyUI's LoRA folder, with its card.

``lorabuild install RECIPE --epoch 8`` copies ``build/<name>/output/<name>-000008.safetensors`` as
``<name>.safetensors`` into the webui's ``models/Lora`` (and/or ComfyUI's ``models/loras``), with:

- ``<name>.preview.png``: the cover picture, by default the grid cell of the first prompt and
  seed at the chosen epoch and weight (``build/<name>/grid/grid.json``);
- ``<name>.json``: the card the webui's Lora page reads (``extensions-builtin/Lora``: its user
  metadata editor writes and reads the keys ``description``, ``sd version`` (SD1, SD2, SDXL,
  Unknown), ``activation text`` (added to the prompt with the LoRA: the trigger), ``preferred
  weight`` (0: the webui's default multiplier), ``negative text`` and ``notes``).

ComfyUI has no card standard; the same three files are written there (LoRA managers read the
preview beside the file). With ``install.embed_preview`` the installed copy gets a header of its own
(:func:`embedded_header`): the preview as ``ssmd_cover_images`` and the trigger as
``modelspec.trigger_phrase``, for UIs that read no sidecar; its tensor bytes are the build's, so the
webui's LoRA hash (``sshs_model_hash``, the SHA-256 of the tensor bytes) is unchanged, while the
file's SHA-256 (on the card, and Civitai's AutoV2) is the copy's. The build's own file is never
written. Nothing is overwritten that differs from what would be written unless
``force``; an identical file is left alone, so a second install is a no-op. Every file is written
through a temporary file and a rename. :func:`plan_install` decides everything without writing;
:func:`install` then writes (or, with ``dry_run``, only reports).

Why one module: install decides, then applies: :func:`plan_install` makes the whole
:class:`InstallPlan` (targets, epoch, preview, card) and :func:`install` writes it all or nothing.
The two halves share the plan's types and are read together; apart, neither would be a verb.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from lorabuild import __version__
from lorabuild.build.gridmanifest import read_manifest
from lorabuild.build.saved import HashCache, SavedFile, epoch_files
from lorabuild.kohya import families
from lorabuild.plan.plan import Plan
from lorabuild.plan.tags import activation_text
from lorabuild.problems import Problem, RecipeError, error
from lorabuild.recipe.schema import Recipe
from lorabuild.render.safetensors_header import HeaderError, header_bytes, read_header, spliced_sha256
from lorabuild.render.units import human_size
from lorabuild.render.writer import write_atomic
from lorabuild.score import Candidate, label, reason, score_build
from lorabuild.settings import comfyui_dir, webui_dir

# (what, where the LoRA folder sits in the app's folder, env variable, recipe key, flag)
_APPS = {
    "webui": ("the webui", ("models", "Lora"), "LORABUILD_WEBUI", "install.webui", "--webui"),
    "comfyui": ("ComfyUI", ("models", "loras"), "LORABUILD_COMFYUI", "install.comfyui", "--comfyui"),
}


@dataclass(frozen=True)
class Target:
    """One app's LoRA folder to install into.

    Attributes:
        app: ``webui`` or ``comfyui``.
        folder: The LoRA folder itself (``.../models/Lora``).
    """

    app: str
    folder: Path


COMFYUI_HEADER_LIMIT = 8 * 1024 * 1024
"""The largest header ComfyUI reads for an embedded cover (app/model_manager.py ``get_model_previews``)."""


@dataclass(frozen=True)
class NewHeader:
    """The installed copy's own header, in front of the build file's tensor bytes (``install.embed_preview``).

    Attributes:
        head: The length prefix and the header the copy starts with.
        offset: Where the tensor bytes start in the build's file (they are copied from there on).
        keys: The ``__metadata__`` keys written.
        sha256: SHA-256 of the copy (the head, then the tensor bytes).
    """

    head: bytes
    offset: int
    keys: tuple[str, ...]
    sha256: str


@dataclass(frozen=True)
class InstallFile:
    """One file the install writes (or found already in place).

    Attributes:
        path: Where it goes.
        what: ``model``, ``preview`` or ``card``.
        action: ``create``, ``replace`` (a different file was there; only with force),
            ``identical`` (nothing to write) or ``conflict`` (a different file is there).
        source: The file copied (the model), else None.
        data: The bytes written (preview, card), else None.
        size: Bytes it will hold.
        header: The model copy's own header, when it gets one (else the file is copied as it is).
    """

    path: Path
    what: str
    action: str
    source: Path | None
    data: bytes | None
    size: int
    header: NewHeader | None = None


@dataclass(frozen=True)
class InstallPlan:
    """Everything an install will do, decided before anything is written.

    Attributes:
        name: The LoRA's name (``<name>.safetensors``).
        epoch: The chosen epoch.
        weight: The preferred weight on the card (and the preview's column).
        source: The epoch's file in the build.
        card: The sidecar document.
        preview: Where the cover picture comes from (None: no preview).
        files: The files per target, in the order they are written.
        notes: Warnings and hints for the user (no preview, a suggested epoch).
        embedded: The metadata keys written into the copies' header (empty: the copies are the
            build's file byte for byte).
    """

    name: str
    epoch: int
    weight: float
    source: SavedFile
    card: dict[str, object]
    preview: Path | None
    files: tuple[InstallFile, ...]
    notes: tuple[str, ...]
    embedded: tuple[str, ...] = ()

    @property
    def conflicts(self) -> list[InstallFile]:
        """Files that are in place and differ from what would be written."""
        return [f for f in self.files if f.action == "conflict"]


def default_weight(plan: Plan, recipe: Recipe) -> float:
    """``install.weight``, else the middle of the grid's weights (the upper middle of an even count)."""
    if recipe.install.weight is not None:
        return recipe.install.weight
    weights = sorted(plan.grid.weights)
    return weights[len(weights) // 2]


def card(plan: Plan, recipe: Recipe, epoch: int, weight: float, sha256: str) -> dict[str, object]:
    """The webui's sidecar (``<name>.json``) for ``epoch`` of the build.

    ``sha256`` is the installed file's (with ``install.embed_preview``, the copy's, not the build's).
    ``notes`` holds the recipe's ``install.notes`` and then where the file came from, so that a
    card still says which epoch and recipe it is after the build folder is gone. Nothing in it
    changes between two installs of the same file, so a second install is a no-op.
    """
    provenance = (
        f"{plan.name}: epoch {epoch} of {plan.epochs}, installed by lorabuild {__version__} from "
        f"{plan.recipe_file.name} (recipe sha256 {plan.recipe_hash[:12]}); file sha256 {sha256}."
    )
    notes = recipe.install.notes.strip()
    return {
        "description": recipe.description or recipe.title or "",
        "sd version": families.get(plan.family).sd_version,
        "activation text": activation_text(plan),
        "preferred weight": weight,
        "negative text": recipe.install.negative_text,
        "notes": f"{notes}\n\n{provenance}" if notes else provenance,
    }


def card_bytes(document: dict[str, object]) -> bytes:
    """The card as the webui reads it: UTF-8 JSON (it opens the file with ``encoding="utf8"``)."""
    return (json.dumps(document, indent=4, ensure_ascii=False) + "\n").encode("utf-8")


def lora_folder(app: str, given: Path, key: str, file: str = "") -> Path:
    """The LoRA folder for ``app`` from what the user gave: the app's folder or the LoRA folder.

    Raises:
        RecipeError: The folder does not exist, or is the app's folder without its LoRA folder.
    """
    label, sub, _, _, _ = _APPS[app]
    expected = "/".join(sub)
    if not given.is_dir():
        raise RecipeError(
            [
                Problem(
                    key,
                    f"folder not found: {given.as_posix()}: give {label}'s folder (the one containing "
                    f"{expected}) or that {sub[-1]} folder itself",
                    file=file,
                )
            ]
        )
    models = _child(given, sub[0])
    if models is not None:
        lora = _child(models, sub[1])
        if lora is None:
            raise RecipeError(
                [
                    Problem(
                        key,
                        f"{given.as_posix()} has a {sub[0]} folder but no {expected}: start {label} once "
                        f"(it creates the folder), create it, or give the {sub[-1]} folder itself",
                        file=file,
                    )
                ]
            )
        return lora
    return given


def _child(folder: Path, name: str) -> Path | None:
    """``folder/name`` as a folder, matching the name's case loosely (models/lora on Linux)."""
    exact = folder / name
    if exact.is_dir():
        return exact
    try:
        return next((c for c in folder.iterdir() if c.name.lower() == name.lower() and c.is_dir()), None)
    except OSError:
        return None


def targets(
    recipe: Recipe, display: str, webui: Path | None = None, comfyui: Path | None = None
) -> list[Target]:
    """The LoRA folders to install into: each app's flag, else its recipe key, else its setting.

    Raises:
        RecipeError: No folder is configured, or one does not exist.
    """
    chosen = {
        "webui": (webui, recipe.install.webui, webui_dir()),
        "comfyui": (comfyui, recipe.install.comfyui, comfyui_dir()),
    }
    found: list[Target] = []
    problems: list[Problem] = []
    for app, (flag, key_value, env) in chosen.items():
        _, _, env_name, key, flag_name = _APPS[app]
        if flag is not None:
            given, where, file = flag, flag_name, ""
        elif key_value is not None:
            given, where, file = key_value, key, display
        elif env is not None:
            given, where, file = env, env_name, ""
        else:
            continue
        try:
            found.append(Target(app, lora_folder(app, given, where, file)))
        except RecipeError as exc:
            problems.extend(exc.problems)
    if problems:
        raise RecipeError(problems)
    if not found:
        raise RecipeError(
            [
                error(
                    "install",
                    "no folder to install into: pass --webui DIR (the webui folder containing models/Lora) "
                    "or --comfyui DIR (ComfyUI's folder containing models/loras), set LORABUILD_WEBUI or "
                    "LORABUILD_COMFYUI, or set install.webui in the recipe",
                ).at(display)
            ]
        )
    return found


def choose_epoch(
    plan: Plan, recipe: Recipe, display: str, epoch: int | None, suggested: Candidate | None = None
) -> SavedFile:
    """The saved file of the chosen epoch (``--epoch``, else ``install.epoch``; "last" = the final epoch,
    "suggested" = ``suggested``'s, the first of the shortlist: :func:`suggestion`).

    Raises:
        RecipeError: Nothing was saved yet, or not that epoch (the message lists what was).
    """
    files = epoch_files(plan)
    epochs = plan.epochs
    where = plan.layout.output_dir.as_posix()
    if epoch is not None:
        wanted, key, file = epoch, "--epoch", ""
    else:
        value = recipe.install.epoch
        chosen = suggested.epoch if suggested is not None else epochs
        wanted, key, file = (value if isinstance(value, int) else chosen), "install.epoch", display
    if not files:
        raise RecipeError(
            [
                Problem(
                    key,
                    f"no LoRA file is saved in {where} yet: run lorabuild train {display or 'RECIPE'} first",
                    file=file,
                )
            ]
        )
    if wanted not in files:
        saved = ", ".join(str(e) for e in sorted(files))
        raise RecipeError(
            [
                Problem(
                    key,
                    f"epoch {wanted} was not saved: {where} holds epoch(s) {saved}; choose one with "
                    "--epoch N or install.epoch in the recipe",
                    file=file,
                )
            ]
        )
    return files[wanted]


def suggestion(plan: Plan, recipe: Recipe, display: str) -> tuple[Candidate, str]:
    """The first of ``lorabuild pick``'s shortlist (``install.epoch = "suggested"``) and a note saying why.

    Raises:
        RecipeError: The shortlist is empty (no grid, or every epoch x weight ruled out): the
            message says why and how to choose instead.
    """
    listed = score_build(plan)
    first = listed.first
    if first is None:
        why = (
            "every epoch x weight was ruled out ("
            + "; ".join(f"{label(c)}: {c.ruled_out[0]}" for c in listed.ruled_out[:3])
            + (", …" if len(listed.ruled_out) > 3 else "")
            + ")"
            if listed.ruled_out
            else "; ".join(listed.notes) or "nothing was scored"
        )
        raise RecipeError(
            [
                error(
                    "install.epoch",
                    f'"suggested": the shortlist is empty: {why}; choose an epoch with --epoch N '
                    f"(lorabuild pick {display or 'RECIPE'} says why each was ruled out)",
                ).at(display)
            ]
        )
    return (
        first,
        f'note: install.epoch = "suggested": {label(first)}, the first of lorabuild pick\'s shortlist: {reason(first, listed)}',
    )


def choose_preview(
    plan: Plan, recipe: Recipe, display: str, epoch: int, weight: float
) -> tuple[Path | None, str]:
    """The cover picture, and a warning when there is none to take from the grid.

    Raises:
        RecipeError: ``install.preview`` names a file that does not exist.
    """
    setting = recipe.install.preview
    if setting == "none":
        return None, ""
    if isinstance(setting, Path):
        if not setting.is_file():
            raise RecipeError(
                [
                    error(
                        "install.preview",
                        f'image not found: {setting.as_posix()}: give an image file, "grid" or "none"',
                    ).at(display)
                ]
            )
        return setting, ""
    sheets = read_manifest(plan.build_dir)
    if not sheets:
        return None, "no grid yet (run lorabuild grid): installing without a preview picture"
    cell = sheets[0].cell(epoch, weight)
    if cell is None or not (plan.build_dir / cell).is_file():
        columns = ", ".join(f"{c.weight:g}" for c in sheets[0].columns if c.weight is not None)
        epochs = ", ".join(str(r.epoch) for r in sheets[0].rows)
        return None, (
            f"the grid has no picture at epoch {epoch} and weight {weight:g} (its epochs: {epochs}; weights: "
            f"{columns}): installing without a preview picture; choose a grid weight with --weight, or set "
            "install.preview to an image"
        )
    return plan.build_dir / cell, ""


def preview_png(source: Path) -> bytes:
    """The picture as PNG bytes (a PNG is taken as it is; other formats are converted)."""
    data = source.read_bytes()
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        out = io.BytesIO()
        converted = image if image.mode in ("RGB", "RGBA", "L", "LA", "P") else image.convert("RGB")
        converted.save(out, format="PNG")
        return out.getvalue()


def _action(path: Path, same: bool) -> str:
    if not path.exists():
        return "create"
    return "identical" if same else "conflict"


def _same_file(a: Path, b: Path, header: NewHeader | None = None) -> bool:
    """Whether ``a`` holds ``b``'s bytes, or with ``header`` that head and then ``b``'s tensor bytes.

    Sizes first; then the two are read side by side.
    """
    head, offset = (header.head, header.offset) if header is not None else (b"", 0)
    try:
        if a.stat().st_size != len(head) + b.stat().st_size - offset:
            return False
        with a.open("rb") as fa, b.open("rb") as fb:
            if fa.read(len(head)) != head:
                return False
            fb.seek(offset)
            while True:
                x, y = fa.read(1 << 20), fb.read(1 << 20)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


def _same_data(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def plan_install(
    plan: Plan,
    recipe: Recipe,
    *,
    display: str = "",
    epoch: int | None = None,
    weight: float | None = None,
    webui: Path | None = None,
    comfyui: Path | None = None,
) -> InstallPlan:
    """Decide what installing ``plan``'s chosen epoch writes, without writing anything.

    Args:
        plan: The build's plan.
        recipe: Its recipe (the ``[install]`` table).
        display: The recipe file as messages name it.
        epoch: ``--epoch`` (overrides ``install.epoch``).
        weight: ``--weight`` (overrides ``install.weight``).
        webui: ``--webui``: the webui folder or its Lora folder.
        comfyui: ``--comfyui``: ComfyUI's folder or its loras folder.

    Raises:
        RecipeError: With what is wrong (no such epoch, no folder, a weight out of range).
    """
    if weight is not None and not 0 < weight <= 2:
        raise RecipeError(
            [error("--weight", f"must be above 0 and at most 2, the webui's range (got {weight:g})")]
        )
    where = targets(recipe, display, webui, comfyui)
    suggested, why = (None, "")
    if epoch is None and recipe.install.epoch == "suggested":
        suggested, why = suggestion(plan, recipe, display)
    source = choose_epoch(plan, recipe, display, epoch, suggested)
    chosen_weight = weight if weight is not None else default_weight(plan, recipe)
    if suggested is not None and weight is None and recipe.install.weight is None:
        chosen_weight = suggested.weight
    preview, warning = choose_preview(plan, recipe, display, source.epoch, chosen_weight)
    preview_data = preview_png(preview) if preview is not None else None
    notes = [why] if why else []
    notes.extend([f"warning: {warning}"] if warning else [])
    header, header_notes = embedded_header(plan, recipe, display, source, preview_data)
    notes.extend(header_notes)
    hashes = HashCache(plan.build_dir)
    sha256 = header.sha256 if header is not None else hashes.of(source.rel).sha256
    hashes.save()
    document = card(plan, recipe, source.epoch, chosen_weight, sha256)
    notes.extend(_suggestion(plan, recipe, display, epoch, source.epoch))
    card_data = card_bytes(document)
    ext = source.path.suffix
    size = source.size if header is None else len(header.head) + source.size - header.offset
    files: list[InstallFile] = []
    for target in where:
        model = target.folder / f"{plan.name}{ext}"
        files.append(
            InstallFile(
                model,
                "model",
                _action(model, _same_file(model, source.path, header)),
                source.path,
                None,
                size,
                header,
            )
        )
        if preview_data is not None:
            cover = target.folder / f"{plan.name}.preview.png"
            files.append(
                InstallFile(
                    cover,
                    "preview",
                    _action(cover, _same_data(cover, preview_data)),
                    None,
                    preview_data,
                    len(preview_data),
                )
            )
        sidecar = target.folder / f"{plan.name}.json"
        files.append(
            InstallFile(
                sidecar,
                "card",
                _action(sidecar, _same_data(sidecar, card_data)),
                None,
                card_data,
                len(card_data),
            )
        )
    return InstallPlan(
        plan.name,
        source.epoch,
        chosen_weight,
        source,
        document,
        preview,
        tuple(files),
        tuple(notes),
        header.keys if header is not None else (),
    )


def embedded_header(
    plan: Plan, recipe: Recipe, display: str, source: SavedFile, preview: bytes | None
) -> tuple[NewHeader | None, list[str]]:
    """The installed copy's header with the preview and the trigger in it (``install.embed_preview``).

    ``ssmd_cover_images`` is a JSON list of base64 images without a ``data:`` prefix: the webui
    decodes it so (``modules/ui_extra_networks.py`` ``find_embedded_preview``, ``fetch_cover_images``),
    and so does ComfyUI (``app/model_manager.py`` ``get_model_previews``). ``modelspec.trigger_phrase``
    is the card's activation text (kohya's ``library/sai_model_spec.py`` names the key; kohya writes
    none). No ``ss_*`` key changes: kohya's ``sshs_legacy_hash`` is taken over a header of those
    alone, and ``sshs_model_hash`` over the tensor bytes, which are copied as they are.

    Returns:
        The header (None: the file is installed as it is) and warnings for the user.

    Raises:
        RecipeError: The build's file is not a readable safetensors file.
    """
    if not recipe.install.embed_preview:
        return None, []
    if source.path.suffix != ".safetensors":
        return None, [
            f"warning: install.embed_preview: {source.rel} is not a safetensors file: installing it as it is"
        ]
    updates: dict[str, str] = {}
    if preview is not None:
        updates["ssmd_cover_images"] = json.dumps([base64.b64encode(preview).decode("ascii")])
    trigger = activation_text(plan)
    if trigger:
        updates["modelspec.trigger_phrase"] = trigger
    if not updates:
        return None, [
            "warning: install.embed_preview: no preview picture and no trigger to embed: installing the file "
            "as it is"
        ]
    try:
        found = read_header(source.path)
        head = header_bytes(found, updates)
    except (HeaderError, OSError) as exc:
        raise RecipeError(
            [error("install.embed_preview", f"cannot rewrite the header of {source.rel}: {exc}").at(display)]
        ) from exc
    notes = []
    if len(head) - 8 > COMFYUI_HEADER_LIMIT and preview is not None:
        notes.append(
            f"warning: install.embed_preview: the header with the picture is {human_size(len(head))}; ComfyUI "
            f"reads no embedded cover from a header over {human_size(COMFYUI_HEADER_LIMIT)} (the preview file "
            "beside the LoRA still shows): choose a smaller install.preview"
        )
    sha256 = spliced_sha256(head, source.path, found.data_offset)
    return NewHeader(head, found.data_offset, tuple(updates), sha256), notes


def _suggestion(plan: Plan, recipe: Recipe, display: str, flag: int | None, chosen: int) -> list[str]:
    """A hint when the epoch was left to the default and the validation loss is lowest elsewhere."""
    if flag is not None or "epoch" in recipe.install.model_fields_set:
        return []
    try:
        losslog = importlib.import_module("lorabuild.render.losslog")
        suggested = losslog.suggest_epoch(losslog.read_scalars(plan.layout.logs_dir))
    except Exception:  # no loss module or no readable logs: no suggestion
        return []
    if suggested is None or suggested == chosen:
        return []
    return [
        f"note: installing the last epoch ({chosen}); the validation loss is lowest at epoch {suggested}: "
        f"lorabuild install {display or 'RECIPE'} --epoch {suggested} installs that one (look at the grid first)"
    ]


def install(planned: InstallPlan, *, force: bool = False, dry_run: bool = False) -> list[InstallFile]:
    """Write what :func:`plan_install` decided; returns each file with what happened to it.

    Raises:
        RecipeError: A different file is in place of one to write, and not ``force`` (nothing is
            written then, not even the other files).
    """
    conflicts = planned.conflicts
    if conflicts and not force:
        raise RecipeError(
            [
                error(
                    f.path.as_posix(),
                    f"exists and differs from the {f.what} of {planned.name} epoch {planned.epoch}: "
                    "nothing was installed; pass --force to replace it",
                )
                for f in conflicts
            ]
        )
    done: list[InstallFile] = []
    for f in planned.files:
        action = "replace" if f.action == "conflict" else f.action
        if not dry_run and action != "identical":
            if f.source is not None:
                copy_atomic(f.source, f.path, f.header)
            elif f.data is not None:
                write_bytes_atomic(f.path, f.data)
        done.append(replace(f, action=action))
    return done


def copy_atomic(source: Path, dest: Path, header: NewHeader | None = None) -> None:
    """Copy ``source`` to ``dest`` through a temporary file in ``dest``'s folder and a rename.

    With ``header``, the copy starts with that head and then ``source``'s bytes from its offset
    (the same tensor bytes behind a new header); ``source`` itself is only read.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            if header is not None:
                out.write(header.head)
                src.seek(header.offset)
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically (the folder must exist: install never creates it)."""
    write_atomic(dest, data)


def describe(files: Sequence[InstallFile], dry_run: bool) -> list[str]:
    """One line per file for the terminal: ``create  PATH (SIZE)``, or ``would create`` in a dry run."""
    lines = []
    for f in files:
        verb = f.action if not dry_run or f.action == "identical" else f"would {f.action}"
        lines.append(f"{verb:>13}  {f.path.as_posix()} ({human_size(f.size)})")
    return lines
