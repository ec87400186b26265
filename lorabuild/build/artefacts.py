"""Rendering a :class:`~lorabuild.plan.plan.Plan` into the bytes of each build artefact.

Structured files (``dataset.toml``, ``config.toml``, ``plan.json``) are serialised from the plan's
data; the two scripts come from the jinja2 templates in ``templates/``, which only place values
through the quoting filters of :mod:`lorabuild.render.quoting` (the template environment refuses any other
text, see :func:`_environment`). Nothing here touches the disk except reading the templates.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jinja2

from lorabuild import __version__
from lorabuild.kohya.launch import SD_SCRIPTS_PREFIX, LaunchSpec
from lorabuild.plan.layout import BuildLayout, is_rooted, portable_path, relpath
from lorabuild.plan.plan import Plan
from lorabuild.render.quoting import (
    Quoted,
    bash_quote,
    comment_text,
    env_name,
    powershell_native_arg,
    powershell_quote,
    powershell_word,
    utf8,
)
from lorabuild.render.toml import dumps
from lorabuild.render.writer import Artefact
from lorabuild.settings import TEMPLATES_DIR

ARTEFACTS = (
    BuildLayout.DATASET_TOML,
    BuildLayout.CONFIG_TOML,
    BuildLayout.SAMPLE_PROMPTS,
    BuildLayout.TRAIN_SH,
    BuildLayout.TRAIN_PS1,
    BuildLayout.PLAN_JSON,
)


def _bash_arg(arg: str) -> str:
    if arg.startswith(SD_SCRIPTS_PREFIX):
        return '"$SD_SCRIPTS"/' + bash_quote(arg.removeprefix(SD_SCRIPTS_PREFIX))
    return bash_quote(arg)


def _ps_arg(arg: str) -> str:
    """An element of the script's argument array: always a quoted string (a bare word in ``@( )``
    would run as a command), checked to reach the program unchanged on every PowerShell."""
    if arg.startswith(SD_SCRIPTS_PREFIX):
        return f"(Join-Path $SdScripts {powershell_quote(arg.removeprefix(SD_SCRIPTS_PREFIX))})"
    powershell_native_arg(arg)  # raises QuotingError for what PowerShell 5.1 would mangle
    return powershell_quote(arg)


def argument_lines(argv: tuple[str, ...]) -> list[list[str]]:
    """Group argv for display: an option and its value share a line."""
    lines: list[list[str]] = []
    for arg in argv:
        if lines and lines[-1][-1].startswith("--") and not arg.startswith("--") and len(lines[-1]) == 1:
            lines[-1].append(arg)
        else:
            lines.append([arg])
    return lines


def _bash_command(argv: tuple[str, ...]) -> list[str]:
    """The command's lines for bash: the program (with its sub-command) first, then one option each."""
    head = 2 if len(argv) > 1 and argv[1] == "launch" else 1
    return [" ".join(_bash_arg(a) for a in argv[:head])] + [
        " ".join(_bash_arg(a) for a in line) for line in argument_lines(argv[head:])
    ]


class UnquotedValueError(jinja2.TemplateError):
    """A template placed a value without a quoting filter (a bug in the template, not in the recipe)."""


def _placed(value: object) -> object:
    """The environment's ``finalize``: let through only quoted text and integers."""
    if isinstance(value, Quoted) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise UnquotedValueError(
        f"a template places {value!r} without a quoting filter: pass it through one of "
        f"{', '.join(sorted(FILTERS))} (lorabuild/render/quoting.py), or quote it in Python and wrap it in Quoted"
    )


def _quoting(function: Callable[[str], str]) -> Callable[[str], Quoted]:
    def quoted(value: str) -> Quoted:
        return Quoted(function(value))

    return quoted


# The template filters: each says where the value goes.
FILTERS: dict[str, Callable[[str], str]] = {
    "bash": bash_quote,  # a bash word
    "ps": powershell_quote,  # a PowerShell single-quoted literal
    "ps_word": powershell_word,  # a word of a PowerShell command shown to a person
    "comment": comment_text,  # text inside a bash, PowerShell or TOML comment
    "env_name": env_name,  # an environment variable's name after `export ` or `$env:`
}


def _environment(newline: str = "\n") -> jinja2.Environment:
    """The environment of the script templates: every ``{{ value }}`` must come out of a filter of
    :data:`FILTERS` (or be an integer, or text that Python quoted and wrapped in Quoted); anything
    else raises :class:`UnquotedValueError` when the template is rendered.

    Args:
        newline: The template's own line ends (``"\\r\\n"`` for a ``.ps1``). A line break inside a
            value is part of the value and stays as written: converting the rendered text would
            turn a quoted ``a<LF>b`` into ``a<CR><LF>b``.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        finalize=_placed,
        newline_sequence=newline,  # type: ignore[arg-type]  # a Literal of the three line ends
    )
    env.filters.update({name: _quoting(function) for name, function in FILTERS.items()})
    return env


def render_script(template: str, plan: Plan, sd_scripts: Path) -> str:
    """Render ``train.sh.j2`` or ``train.ps1.j2`` (with CRLF line ends) for ``plan``'s launch command."""
    launch: LaunchSpec = plan.launch
    kohya = portable_path(sd_scripts, plan.build_dir)
    return (
        _environment("\r\n" if template.endswith(".ps1.j2") else "\n")
        .get_template(template)
        .render(
            name=plan.name,
            script=plan.script,
            version=__version__,
            recipe=relpath(plan.recipe_file, plan.build_dir),
            sd_scripts=kohya,
            # An absolute kohya folder (outside the project) is used as it is, a relative one from
            # the script's folder: train.sh does that by cd-ing there, train.ps1 must decide.
            sd_scripts_rooted=is_rooted(kohya),
            env=launch.env,
            bash_command=[Quoted(line) for line in _bash_command(launch.argv)],
            ps_program=Quoted(powershell_quote(launch.argv[0])),
            ps_lines=[
                Quoted(", ".join(_ps_arg(a) for a in line)) for line in argument_lines(launch.argv[1:])
            ],
        )
    )


def _header(plan: Plan, what: str) -> str:
    recipe = comment_text(relpath(plan.recipe_file, plan.build_dir))
    return (
        f'{what} for the LoRA "{comment_text(plan.name)}".\n'
        f"Generated by lorabuild {__version__} from {recipe}: edit the recipe, not this file.\n"
        "Paths are relative to this folder (train.sh and train.ps1 run from here)."
    )


def render(plan: Plan, sd_scripts: Path) -> dict[str, Artefact]:
    """Every artefact of the build folder, as bytes."""
    config_header = _header(plan, f"kohya sd-scripts --config_file ({plan.script})") + (
        "\nkohya merges every [section] into one set of options: sections only group them for reading."
    )
    ps1 = render_script("train.ps1.j2", plan, sd_scripts)
    return {
        BuildLayout.DATASET_TOML: Artefact(
            utf8(
                dumps(plan.dataset_config.document(), _header(plan, "kohya sd-scripts --dataset_config")),
                "dataset.toml",
            )
        ),
        BuildLayout.CONFIG_TOML: Artefact(utf8(dumps(plan.config.document(), config_header), "config.toml")),
        BuildLayout.SAMPLE_PROMPTS: Artefact(utf8(plan.sample_prompts, "sample_prompts.txt")),
        BuildLayout.TRAIN_SH: Artefact(
            utf8(render_script("train.sh.j2", plan, sd_scripts), "train.sh"), executable=True
        ),
        # Windows PowerShell 5.1 reads a script without a byte-order mark in the ANSI code page,
        # which garbles non-ASCII paths and names: write UTF-8 with BOM (and CRLF line ends).
        BuildLayout.TRAIN_PS1: Artefact(b"\xef\xbb\xbf" + utf8(ps1, "train.ps1")),
        BuildLayout.PLAN_JSON: Artefact(
            utf8(json.dumps(plan.manifest(), indent=2, ensure_ascii=False) + "\n", "plan.json")
        ),
    }
