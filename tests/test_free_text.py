"""Every free-text recipe field: refused with its key, or carried byte-exact to where kohya reads it.

The fields are found by walking the schema (every ``str``, ``Path``, list-of-text and table-of-text
field and table key), so a field added later is tested without editing this file; where it is
read by something other than kohya, it has to be named in :data:`NOT_READ_BY_KOHYA`. Random text
(line breaks, control characters, quotes, ``$``, backticks, `` --``, braces, non-ASCII, U+2028…)
goes into one field at a time; then either ``lorabuild check`` refuses it with a problem naming
the field's key, or the compiled build carries it exactly:

* kohya's argv (:class:`~lorabuild.launch.LaunchSpec`) and environment, with ``train.sh`` and
  ``train.ps1`` rendered without a quoting error;
* ``config.toml`` and ``dataset.toml``, read with ``tomllib`` and with the ``toml`` package kohya
  uses (the two must agree), ``network_args`` and ``optimizer_args`` split as kohya splits them;
* ``sample_prompts.txt`` read as kohya's sampler reads it (``readlines``, strip, `` --`` split,
  its option patterns tried on every part) and the grid's ``--from_file`` line as ``gen_img.py``
  reads it;
* each staged caption as kohya reads it: the first line, stripped, is the whole caption.

Nothing is executed: the check runs, the plan is rendered in memory. Each field gets the texts of
:data:`NASTY` and 8 random ones; ``FREE_TEXT_EXAMPLES=400`` tries more.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import toml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from lorabuild.build.artefacts import render
from lorabuild.plan import gridcells
from lorabuild.plan.evaluate import prompt_text
from lorabuild.probe import facts
from lorabuild.problems import RecipeError, Severity
from lorabuild.recipe.captions import normalise
from lorabuild.recipe.keys import _is_recipe_path, _model_of
from lorabuild.recipe.schema import Recipe
from lorabuild.render import toml as tomlout
from lorabuild.stages import grid
from lorabuild.stages.check import check
from tests.conftest import RECIPE, Project

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")

# Keys whose text never reaches kohya: patterns lorabuild matches tags with, what the webui's card
# or sbatch gets, lorabuild's own settings. A new free-text field that kohya does not read must
# be added here (the test says so), after checking where it does go.
NOT_READ_BY_KOHYA = {
    "captions.replace.<key>": "a tag to match, never written",
    "captions.remove[0]": "a pattern",
    "captions.move_to_front[0]": "a pattern",
    "captions.move_to_end[0]": "a pattern",
    "captions.autotag.undesired_tags[0]": "passed to kohya's tagger, which only drops tags with it",
    "dataset.subsets[0].caption_extension": "how lorabuild finds the source captions",
    "images.background": "the colour of the staged copies' flattened transparency",
    "optimizer.warmup_steps": "a percentage, written as a number",
    "launch.slurm.partition": "sbatch's",
    "launch.slurm.account": "sbatch's",
    "launch.slurm.time": "sbatch's",
    "launch.slurm.mem": "sbatch's",
    "launch.slurm.extra[0]": "sbatch's",
    "install.webui": "lorabuild install's",
    "install.comfyui": "lorabuild install's",
    "install.notes": "the webui's card",
    "install.negative_text": "the webui's card",
    "install.preview": "the webui's card",
}

# A table's entries need a key that the table accepts for the value to go anywhere: a real
# accelerate option, a kohya option that takes a string, the tag the fixture's captions hold.
TABLE_KEYS = {
    "launch.accelerate_args": "rdzv_conf",
    "kohya": "wandb_run_name",
    "captions.replace": "smile",
    "launch.env": "SOME_VAR",
}
# Tables the fixture recipe leaves out whose required keys must come with any other key of theirs.
REQUIRED = {"captions.autotag": {"model_dir": "tagger"}}


@dataclass(frozen=True)
class Slot:
    """One place a recipe holds free text.

    Attributes:
        key: The dotted key problems name (``captions.replace.smile``, ``evaluate.prompts[0]``).
        table: The key the override sets.
        shape: ``value``, ``item`` (the first item of a list), ``entry`` (a table's value) or
            ``name`` (a table's key).
        kind: Where the text is looked for: ``kohya`` (anything kohya reads), ``path``,
            ``tag`` (caption rules: as the rules normalise it), or ``none``.
    """

    key: str
    table: str
    shape: str
    kind: str


def _general(key: str) -> str:
    """A subset's own captions table stands for the recipe's: ``dataset.subsets[0].captions.x`` -> ``captions.x``."""
    return re.sub(r"^dataset\.subsets\[0\]\.captions\.", "captions.", key)


def _accepts_text(annotation: Any) -> bool:
    if annotation is str or annotation is Path:
        return True
    if get_origin(annotation) is Literal:
        return False
    return any(_accepts_text(a) for a in get_args(annotation) if not isinstance(a, FieldInfo))


def _slots(model: type[BaseModel] = Recipe, prefix: str = "") -> Iterator[Slot]:
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        inner = _model_of(info.annotation)
        if inner is not None:
            yield from _slots(inner, f"{key}[0]." if get_origin(info.annotation) is list else f"{key}.")
            continue
        annotation = info.annotation
        members = get_args(annotation) if get_origin(annotation) not in (list, dict) else (annotation,)
        for member in members or (annotation,):
            origin = get_origin(member)
            if origin is dict:
                key_type, value_type = get_args(member)
                entry = TABLE_KEYS.get(_general(key), "x")
                if _accepts_text(value_type):
                    yield Slot(f"{key}.{entry}", key, "entry", "kohya")
                if _accepts_text(key_type):
                    yield Slot(f"{key}.<key>", key, "name", "kohya")
            elif origin is list and _accepts_text(member):
                yield Slot(f"{key}[0]", key, "item", "kohya")
        if _accepts_text(annotation) and get_origin(annotation) not in (list, dict):
            yield Slot(key, key, "value", "path" if _is_recipe_path(info) else "kohya")


def _unique(slots: Iterator[Slot]) -> list[Slot]:
    seen: dict[str, Slot] = {}
    for slot in slots:
        kind = slot.kind
        general = _general(slot.key)
        if general in NOT_READ_BY_KOHYA:
            kind = "none"
        elif general.startswith("captions.replace."):
            kind = "tag"
        seen.setdefault(slot.key, Slot(slot.key, slot.table, slot.shape, kind))
    return list(seen.values())


SLOTS = _unique(_slots())


def test_the_walk_finds_the_free_text_fields() -> None:
    keys = {s.key for s in SLOTS}
    assert {
        "name",
        "title",
        "dataset.subsets[0].trigger",
        "captions.replace.smile",
        "evaluate.prompts[0]",
        "evaluate.negative_prompt",
        "model.base",
        "kohya.wandb_run_name",
        "launch.accelerate_args.rdzv_conf",
        "launch.env.SOME_VAR",
        "network.args.x",
        "optimizer.args.x",
        "optimizer.type",
        "dataset.subsets[0].captions.replace.smile",
    } <= keys


# ---- kohya's readers -----------------------------------------------------------------------------

# train_util.line_to_prompt_dict: (pattern, option), tried in this order on every " --" part.
_SAMPLER = [
    (r"w (\d+)", "width"),
    (r"h (\d+)", "height"),
    (r"d (\d+)", "seed"),
    (r"s (\d+)", "sample_steps"),
    (r"l ([\d\.]+)", "scale"),
    (r"g ([\d\.]+)", "guidance_scale"),
    (r"n (.+)", "negative_prompt"),
    (r"ss (.+)", "sample_sampler"),
    (r"cn (.+)", "controlnet_image"),
    (r"ctr (.+)", "cfg_trunc_ratio"),
    (r"rcfg (.+)", "renorm_cfg"),
    (r"fs (.+)", "flow_shift"),
]


def kohya_sample_prompts(text: str) -> list[dict[str, str]]:
    """``sample_prompts.txt`` as kohya's sampler reads it (train_util.load_prompts, line_to_prompt_dict)."""
    lines = io.StringIO(text, newline=None).readlines()  # open(..., "r"): universal newlines
    read = []
    for line in [line.strip() for line in lines if len(line.strip()) > 0 and line[0] != "#"]:
        parts = line.split(" --")
        found = {"prompt": parts[0]}
        for part in parts:
            for pattern, option in _SAMPLER:
                match = re.match(pattern, part, re.IGNORECASE)
                if match:
                    found[option] = match.group(1)
                    break
        read.append(found)
    return read


def gen_img_prompt(line: str) -> dict[str, str]:
    """One ``--from_file`` line as gen_img.py reads it (its --d search, dynamic prompts, " --" split)."""
    lines = [d for d in line.splitlines() if len(d.strip()) > 0 and d[0] != "#"]
    assert len(lines) == 1, lines
    raw = lines[0]
    assert not grid_dynamic(raw), raw
    parts = raw.strip().split(" --")
    found = {"prompt": parts[0]}
    for part in parts[1:]:
        match = re.match(r"n (.+)", part, re.IGNORECASE)
        if match:
            found["negative_prompt"] = match.group(1)
    return found


def grid_dynamic(line: str) -> bool:
    """gen_img's RE_DYNAMIC_PROMPT: the line would be expanded into variants."""
    return bool(re.search(r"\{((e|E)\$\$)?(([\d\-]+)\$\$)?(([^\|\}]+?)\$\$)?(.+?((\|).+?)*?)\}", line))


def kohya_caption(caption: str) -> str:
    """A staged caption file (written as stage.py writes it) read as kohya reads it: first line, stripped."""
    data = (caption + "\n").encode("utf-8")
    lines = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8").readlines()
    return lines[0].strip()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@dataclass(frozen=True)
class Read:
    """Every string kohya reads from a compiled build, and its paths."""

    texts: list[str]
    paths: list[Path]
    captions: list[str]


def what_kohya_reads(plan: Any, recipe: Recipe) -> Read:
    artefacts = render(plan, Path("sd-scripts"))  # raises QuotingError for what the scripts cannot carry
    texts: list[str] = [*plan.launch.argv, *(v for pair in plan.launch.env for v in pair)]
    paths = []
    for name in ("config.toml", "dataset.toml"):
        text = artefacts[name].data.decode("utf-8")
        doc = tomllib.loads(text)
        assert toml.loads(text) == doc, name  # kohya's parser reads what tomllib reads
        texts += _strings(doc)
        paths += [plan.build_dir / s for s in _strings(doc)]
        flat = {k: v for section in doc.values() if isinstance(section, dict) for k, v in section.items()}
        for item in flat.get("network_args", []):
            texts += item.split("=", 1)  # train_network.py
        for item in flat.get("optimizer_args", []):
            key, value = item.split("=")  # train_util.get_optimizer: exactly one "="
            texts += [key, *_strings(ast.literal_eval(value))]
    e = recipe.evaluate
    samples = kohya_sample_prompts(artefacts["sample_prompts.txt"].data.decode("utf-8"))
    assert len(samples) == len(e.prompts) * len(e.seeds)
    width, height = e.width or recipe.dataset.resolution[0], e.height or recipe.dataset.resolution[1]
    for sample in samples:
        # The options are the ones written: nothing in a prompt was read as one.
        expected = {"width": str(width), "height": str(height), "sample_steps": str(e.steps)}
        expected |= {"sample_sampler": e.sampler} | (
            {"negative_prompt": e.negative_prompt} if e.negative_prompt else {}
        )
        assert {k: sample.get(k) for k in [*expected, "negative_prompt"]} == {
            "negative_prompt": None
        } | expected
        assert float(sample["scale"]) == pytest.approx(e.cfg_scale, rel=1e-5)
        texts += [sample["prompt"], sample.get("negative_prompt", "")]
    if e.prompts:
        settings = plan.grid
        assert not grid.prompt_problems(recipe)  # the grid refuses nothing the check passed
        for index, prompt in enumerate(settings.prompts):
            cell = gridcells.Cell(3, 0.8, index, e.seeds[0], prompt, "k")
            read = gen_img_prompt(gridcells.prompt_line(settings, cell, (3,)))
            assert read.get("negative_prompt", "") == e.negative_prompt
            texts.append(read["prompt"])
    captions = []
    for subset in plan.subsets:
        for image in subset.images:
            assert kohya_caption(image.caption) == image.caption
            captions.append(image.caption)
    return Read(texts, paths, captions)


# ---- the property ---------------------------------------------------------------------------------


def setting(slot: Slot, text: str) -> str:
    """The ``--set`` that puts ``text`` in ``slot`` (a table the fixture lacks comes with its required keys)."""
    value: Any = {
        "value": text,
        "item": [text],
        "entry": {TABLE_KEYS.get(_general(slot.table), "x"): text},
        "name": {text: "v"},
    }[slot.shape]
    for table, required in REQUIRED.items():
        general = _general(slot.table)
        if general.startswith(table + "."):
            prefix = slot.table[: len(slot.table) - len(general) + len(table)]
            field = slot.table[len(prefix) + 1 :]
            return f"{prefix}={tomlout.value({**required, field: value})}"
    return f"{slot.table}={tomlout.value(value)}"


def _names(key: str, slot: Slot, message: str) -> bool:
    """Whether a problem at ``key`` (saying ``message``) is about ``slot``'s field (or an item of it)."""
    field = slot.table
    return key == field or key.startswith((field + ".", field + "[")) or field in message


# Pieces that hit kohya's line syntax, the scripts' quoting and TOML far more often than uniform text.
PIECES = [*"\"'\\`$ \t\r\n,;|&<>()[]{}#%~*?!=-:uU0wn", " --", "{trigger}", "\u2028", "\x85", "\x7f", "\x00"]
PIECES += ["\u3000", "初", "春", "🌸", "\u2018"]
FREE_TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=24),
    st.lists(
        st.one_of(st.sampled_from(PIECES), st.characters(blacklist_categories=("Cs",))), max_size=12
    ).map("".join),
)
NASTY = [
    "uiharu\nkazari",
    "kazari --w 4096 --s 1000",
    'a="1 2"',
    "$HOME `id` $(x)",
    "{a|b}",
    "a\u2028b",
    " lead",
    "#x",
    "初春 🌸",
    "a\\",
    "",
    "--%",
    "n sfw",
    "x=y",
    "a\x00b",
    "~0/x",
]


@pytest.fixture
def free_text_project(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    # DeepSpeed counts as installed: on a machine with kohya's stack (torch) and no DeepSpeed the
    # check would refuse [launch.deepspeed] whatever its text (that rule has its own test).
    found = facts.installed_packages
    monkeypatch.setattr(facts, "installed_packages", lambda: {**found(), "deepspeed": True})
    text = RECIPE.replace(
        "[network]",
        '[evaluate]\nprompts = ["{trigger}, smile"]\nnegative_prompt = "lowres"\n\n'
        # Two GPUs, so that [launch.deepspeed] paths are valid (DeepSpeed needs 2 processes).
        "[launch]\ngpus = 2\n\n[network]",
    )
    (project.root / "recipe.toml").write_text(text, encoding="utf-8")
    (project.root / "data" / "char" / "000.txt").write_text("1girl, smile, solo", encoding="utf-8")
    tagger = project.root / "tagger"
    tagger.mkdir()
    for name in ("model.onnx", "selected_tags.csv"):
        (tagger / name).write_bytes(b"")
    return project


@pytest.mark.parametrize("slot", SLOTS, ids=[s.key for s in SLOTS])
def test_free_text_is_refused_with_its_key_or_reaches_kohya_exactly(
    free_text_project: Project, slot: Slot
) -> None:
    project = free_text_project

    def one(text: str) -> None:
        try:
            checked = check(project.recipe, [setting(slot, text)], project.build)
        except RecipeError as exc:
            problems = exc.problems
        else:
            problems = [p for p in checked.problems if p.severity is Severity.ERROR]
            if not problems:
                assert checked.plan is not None
                return reaches(checked.loaded.recipe, checked.plan, text)
        assert any(_names(p.key, slot, p.message) for p in problems), (text, problems)

    def reaches(recipe: Recipe, plan: Any, text: str) -> None:
        read = what_kohya_reads(plan, recipe)
        if slot.kind == "none":
            return
        if slot.kind == "path":
            path = _resolved(recipe, slot)
            assert path is None or any(p.resolve() == path.resolve() for p in read.paths), (text, path)
            return
        if slot.kind == "tag":
            tag = normalise(text, recipe.rules_for(recipe.dataset.subsets[0]).tag_style)
            assert not tag or any(tag in c for c in read.captions), (text, read.captions)
            return
        # A prompt reaches kohya with {trigger} replaced, as the recipe documents.
        wanted = prompt_text(recipe, text) if slot.table == "evaluate.prompts" else text
        assert wanted in read.texts, (text, slot.key)
        if slot.key == "dataset.subsets[0].trigger":
            assert f"{text}, smile" in read.texts  # the prompt, {trigger} replaced
            assert all(c.split(", ")[0] == text for c in read.captions)

    run = hypothesis.given(FREE_TEXT)(one)
    for value in NASTY:  # every field gets these, besides the random ones
        run = hypothesis.example(value)(run)
    hypothesis.settings(
        max_examples=int(os.environ.get("FREE_TEXT_EXAMPLES", "8")),
        deadline=None,
        database=None,
        suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
    )(run)()


def _resolved(recipe: Recipe, slot: Slot) -> Path | None:
    node: Any = recipe
    for part in re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\[\d+\]", slot.key):
        node = node[int(part[1:-1])] if part.startswith("[") else getattr(node, part)
    return node if isinstance(node, Path) else None


def test_a_field_kohya_does_not_read_is_named() -> None:
    """Every entry of NOT_READ_BY_KOHYA is a field the walk finds (a renamed field must be renamed here)."""
    general = {_general(s.key) for s in SLOTS}
    assert set(NOT_READ_BY_KOHYA) <= general | {"captions.replace.<key>"}
