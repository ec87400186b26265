"""No text a user controls becomes code in a generated file: not even in a comment.

The recipe file's own name is the sharpest case: it is not checked by any rule, it can hold a
newline, a lone CR (which ends a PowerShell comment), control characters, quotes, ``$``... and
the generated files name it in their comments (train.sh, train.ps1, the sbatch script, queue.sh,
queue.ps1, the Makefile, the TOML headers). Each test compiles the same recipe twice, once as
``recipe.toml`` and once under a hostile name, and checks that only comments differ, that the
scripts run the same program with the same argv byte for byte (bash scripts really run, against
recording stand-ins), that PowerShell scripts parse to the same code with a real PowerShell grammar
(tests/powershell.py), and that the TOML files are TOML to both ``tomllib`` and kohya's ``toml``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import toml

from lorabuild.batch import makefile, makegen
from lorabuild.batch import queue as runqueue
from lorabuild.batch.queue import ScriptBuild
from lorabuild.batch.slurm import write_sbatch
from lorabuild.kohya.launch import SD_SCRIPTS_PREFIX
from lorabuild.plan.plan import Plan
from lorabuild.render.quoting import QuotingError, toml_basic_string
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.compile import compile_build
from tests.conftest import RECIPE, Project
from tests.powershell import (
    LINE_COMMENT_ENDS,
    PS_SINGLE_QUOTES,
    Script,
    line_comment_at,
    read_ps_single_quoted,
)
from tests.test_sweep import lorabuild

try:
    import hypothesis
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    hypothesis = None  # type: ignore[assignment]

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")

PLAIN = "recipe.toml"
# Recipe file names that try to end a comment and run ``echo PWNED>x`` (which would leave a file
# named x in the working folder), or otherwise break the file they are shown in.
HOSTILE = {
    "newline": "evil\necho PWNED>x\n.toml",
    "carriage return": "evil\recho PWNED>x\r.toml",  # a PowerShell comment ends at a lone CR
    "crlf": "evil\r\necho PWNED>x\r\n.toml",
    "control characters": "evil\x01\x1b[31m\x7f.toml",  # TOML forbids them in comments
    "unicode line breaks": "evil\x85echo PWNED>x\u2028\u2029\x0b\x0c.toml",
    "bidi override": "evil\u202egnp.toml",
    "shell syntax": "$(echo PWNED>x) `echo PWNED>x` 'q' \"d\"; echo PWNED>x #.toml",
    "powershell syntax": "$(Write-Output PWNED) <# #> @x ‘q’.toml",
    "trailing backslash": "evil\\",  # continues a make comment onto the next line
    "option-like": " --x -rf.toml",
    "non-ASCII": "初春 🌸 飾利.toml",
}
IDS = list(HOSTILE)
NAMES = list(HOSTILE.values())

# Records each call's argv (as hex, so bytes arrive exactly whatever the locale), one JSON line a call.
RECORDER = """\
import json, os, sys
with open(os.environ["RECORD"], "a", encoding="ascii") as f:
    f.write(json.dumps([os.fsencode(a).hex() for a in sys.argv[1:]]) + "\\n")
"""


def stand_in(folder: Path, name: str) -> Path:
    """A program called ``name`` in ``folder`` that records its arguments to ``$RECORD``."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    program.write_text(f"#!{sys.executable}\n{RECORDER}", encoding="utf-8")
    program.chmod(0o755)
    return program


def recorded(record: Path) -> list[list[str]]:
    """Every recorded call's argv, decoded from the bytes that arrived."""
    if not record.exists():
        return []
    calls = [json.loads(line) for line in record.read_text(encoding="ascii").splitlines()]
    return [[os.fsdecode(bytes.fromhex(a)) for a in call] for call in calls]


def run_bash(
    script: Path, cwd: Path, bin_dir: Path, record: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script.resolve())],
        cwd=cwd,
        env={
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "RECORD": str(record),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_bash_syntax(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def assert_nothing_injected(result: subprocess.CompletedProcess[str], *folders: Path) -> None:
    """No injected ``echo PWNED>x`` ran (scripts may print the recipe's name, payload and all)."""
    assert "PWNED" not in (result.stdout + result.stderr).splitlines()
    for folder in folders:
        assert not (folder / "x").exists(), f"an injected command wrote {folder / 'x'}"


def only_comments_differ(plain: str, hostile: str) -> list[tuple[str, str]]:
    """Check that two bash scripts (or Makefiles) have the same lines except comment lines; return
    the pairs of comment lines that differ."""
    a, b = plain.split("\n"), hostile.split("\n")
    assert len(a) == len(b), "the hostile name added or removed lines"
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    for x, y in pairs:
        assert x.lstrip().startswith("#") and y.lstrip().startswith("#"), (x, y)
    return pairs


_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[nrt])")


def unescape(shown: str) -> str:
    """Read back what a comment shows: its ``\\n``, ``\\x01``, ``\\u2028`` escapes decoded."""
    return _ESCAPE.sub(lambda m: m[0].encode("ascii").decode("unicode_escape"), shown)


def shown_as(plain_line: str, hostile_line: str, plain_value: str) -> str:
    """What ``hostile_line`` shows where ``plain_line`` shows ``plain_value``."""
    before, after = plain_line.split(plain_value, 1)
    assert hostile_line.startswith(before) and hostile_line.endswith(after), (plain_line, hostile_line)
    return hostile_line[len(before) : len(hostile_line) - len(after)]


def compile_recipe(name: str) -> Plan:
    plan = require_plan(check(Path(name), [], Path("build")))
    compile_build(plan)
    return plan


def compiled(project: Project, name: str) -> tuple[Plan, dict[str, bytes]]:
    """Compile the project's recipe saved as ``name``; the plan and every file in the build folder."""
    project.write_recipe(RECIPE, name)
    # Another recipe's build of the same name is refused (it would be overwritten): start afresh.
    shutil.rmtree(project.root / "build", ignore_errors=True)
    plan = compile_recipe(name)
    return plan, {p.name: p.read_bytes() for p in plan.build_dir.iterdir() if p.is_file()}


@pytest.fixture
def plain(project: Project) -> tuple[Plan, dict[str, bytes]]:
    return compiled(project, PLAIN)


def expected_argv(plan: Plan, sd_scripts: str) -> list[str]:
    """What ``accelerate`` must receive from train.sh: the plan's argv, with the kohya folder."""
    return [
        sd_scripts + "/" + a.removeprefix(SD_SCRIPTS_PREFIX) if a.startswith(SD_SCRIPTS_PREFIX) else a
        for a in plan.launch.argv[1:]
    ]


# --- PowerShell's rules, checked against the grammar --------------------------------------------


def test_grammar_ends_a_line_comment_where_powershell_does() -> None:
    """tree-sitter-powershell and PowerShell's tokenizer agree: only CR and LF end a line comment,
    so a lone CR in a value turns what follows into a command, while U+0085, U+2028, U+2029, VT,
    FF stay inside the comment."""
    for separator in ["\r", "\n", "\r\n", "\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c"]:
        source = f"# comment{separator}Remove-Item x\n$y = 1\n"
        script = Script(source.encode("utf-8"))
        assert script.errors() == []
        assert script.comments() == [line_comment_at(source, 0)]
        commands = [script.text(n) for n in script.nodes() if n.type == "command"]
        assert commands == (["Remove-Item x"] if separator[0] in LINE_COMMENT_ENDS else [])


# --- train.sh and train.ps1 (issue 10, defect 1) ------------------------------------------------


@needs_bash
@pytest.mark.parametrize("name", NAMES, ids=IDS)
def test_train_sh_shows_the_recipe_name_in_comments_only(
    project: Project, plain: tuple[Plan, dict[str, bytes]], tmp_path: Path, name: str
) -> None:
    plan, files = compiled(project, name)
    script = plan.build_dir / "train.sh"
    assert_bash_syntax(script)
    pairs = only_comments_differ(plain[1]["train.sh"].decode(), files["train.sh"].decode())
    assert len(pairs) == 2  # "Generated by ... from RECIPE" and "lorabuild compile RECIPE"
    rel = "../../" + name
    if "\\" not in name:  # a real backslash reads like an escape: only the escapes are reversible
        assert unescape(shown_as(*pairs[0], "../../" + PLAIN)) == rel
        assert shlex.split(unescape(shown_as(*pairs[1], "../../" + PLAIN))) == [rel]

    kohya = tmp_path / "kohya sd-scripts"
    bin_dir, record, elsewhere = tmp_path / "bin", tmp_path / "calls.jsonl", tmp_path / "elsewhere"
    stand_in(bin_dir, "accelerate")
    elsewhere.mkdir()
    result = run_bash(script.resolve(), elsewhere, bin_dir, record, LORABUILD_SD_SCRIPTS=str(kohya))
    assert result.returncode == 0, result.stderr
    assert_nothing_injected(result, elsewhere, plan.build_dir, project.root)
    assert recorded(record) == [expected_argv(plan, str(kohya))]


@pytest.mark.parametrize("name", NAMES, ids=IDS)
def test_train_ps1_shows_the_recipe_name_in_comments_only(
    project: Project, plain: tuple[Plan, dict[str, bytes]], name: str
) -> None:
    _, files = compiled(project, name)
    before, after = Script(plain[1]["train.ps1"]), Script(files["train.ps1"])
    assert after.errors() == []
    after.comments_follow_the_line_comment_rule()
    assert after.code() == before.code()
    pairs = [(x, y) for x, y in zip(before.comments(), after.comments(), strict=True) if x != y]
    assert len(before.comments()) == len(after.comments()) and len(pairs) == 2
    if "\\" not in name:
        rel = "../../" + name
        assert unescape(shown_as(*pairs[0], "../../" + PLAIN)) == rel
        word = unescape(shown_as(*pairs[1], "../../" + PLAIN))
        assert (read_ps_single_quoted(word) if word[:1] in PS_SINGLE_QUOTES else (word, "")) == (rel, "")


# --- config.toml and dataset.toml (issue 10, defect 2) ------------------------------------------


@pytest.mark.parametrize("name", NAMES, ids=IDS)
def test_toml_files_stay_toml_whatever_the_recipe_is_called(
    project: Project, plain: tuple[Plan, dict[str, bytes]], name: str
) -> None:
    _, files = compiled(project, name)
    for file in ("config.toml", "dataset.toml"):
        text = files[file].decode("utf-8")
        assert tomllib.loads(text) == toml.loads(text) == tomllib.loads(plain[1][file].decode("utf-8"))
        only_comments_differ(plain[1][file].decode("utf-8"), text)
    assert files["sample_prompts.txt"] == plain[1]["sample_prompts.txt"]


# --- the sbatch script (issue 10, defect 1) -----------------------------------------------------


def sbatch(project: Project, name: str, script: str) -> Path:
    project.write_recipe(RECIPE + "\n[launch]\ngpus = 0\n", name)
    path = project.root / script
    write_sbatch([Path(name)], path, Path("build"), stages=("check", "compile"))
    return path


@needs_bash
@pytest.mark.parametrize("name", NAMES, ids=IDS)
def test_sbatch_script_shows_the_recipe_name_in_comments_only(
    project: Project, tmp_path: Path, name: str
) -> None:
    plain, hostile = sbatch(project, PLAIN, "plain.sbatch"), sbatch(project, name, "hostile.sbatch")
    assert_bash_syntax(hostile)
    head = [t.split("set -euo pipefail\n")[0] for t in (plain.read_text(), hostile.read_text())]
    only_comments_differ(*head)

    bin_dir, record, elsewhere = tmp_path / "bin", tmp_path / "calls.jsonl", tmp_path / "elsewhere"
    lorabuild_stand_in = stand_in(bin_dir, "lorabuild")
    elsewhere.mkdir()
    result = run_bash(
        hostile, elsewhere, bin_dir, record, SLURM_ARRAY_TASK_ID="0", LORABUILD=str(lorabuild_stand_in)
    )
    assert result.returncode == 0, result.stderr
    assert_nothing_injected(result, elsewhere, project.root)
    recipe, root = str(project.root / name), str(project.root / "build")
    assert recorded(record) == [
        ["check", recipe, "--build-dir", root],
        ["run", recipe, "--build-dir", root, "--until", "compile"],
    ]


# --- queue.sh and queue.ps1 (issue 10, defect 1) ------------------------------------------------

QUEUE_NAMES = ["newline", "carriage return", "unicode line breaks", "shell syntax", "powershell syntax"]


@needs_bash
@pytest.mark.parametrize("which", QUEUE_NAMES)
def test_queue_scripts_show_the_recipe_name_in_comments_only(
    project: Project, capsys: pytest.CaptureFixture[str], tmp_path: Path, which: str
) -> None:
    name = HOSTILE[which]
    scripts = {}
    for file in (PLAIN, name):
        project.write_recipe(RECIPE, file)
        shutil.rmtree(project.root / "build", ignore_errors=True)  # another recipe's build of that name
        code, _, err = lorabuild(capsys, "queue", file)
        assert code == 0, err
        build = project.root / "build"
        scripts[file] = {s: (build / s).read_bytes() for s in ("queue.sh", "queue.ps1")}
    queue_sh = project.root / "build" / "queue.sh"
    assert_bash_syntax(queue_sh)
    (pair,) = only_comments_differ(*(scripts[f]["queue.sh"].decode() for f in (PLAIN, name)))
    assert shlex.split(unescape(shown_as(*pair, PLAIN)))[-1] == name

    before, after = (Script(scripts[f]["queue.ps1"]) for f in (PLAIN, name))
    assert after.errors() == []
    after.comments_follow_the_line_comment_rule()
    assert after.code() == before.code()
    assert len(after.comments()) == len(before.comments())

    # queue.sh runs the compiled train.sh, which runs accelerate (a stand-in here).
    bin_dir, record, elsewhere = tmp_path / "bin", tmp_path / "calls.jsonl", tmp_path / "elsewhere"
    stand_in(bin_dir, "accelerate")
    elsewhere.mkdir()
    kohya = str(tmp_path / "kohya")
    result = run_bash(queue_sh, elsewhere, bin_dir, record, LORABUILD_SD_SCRIPTS=kohya)
    assert result.returncode == 1  # the stand-in trains nothing: the queue says so
    assert_nothing_injected(result, elsewhere, project.root, project.root / "build" / "Test_v1")
    plan = require_plan(check(Path(name), [], Path("build")))
    assert recorded(record) == [expected_argv(plan, kohya)]


# --- the Makefile -----------------------------------------------------------------------------------


def make_logical_lines(text: str) -> list[str]:
    """The Makefile's lines as GNU make reads them: a line that ends with an odd number of
    backslashes goes on with the next one (comments included)."""
    lines: list[str] = []
    pending = ""
    for line in text.split("\n"):
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines + ([pending] if pending else [])


def makefile_of(project: Project, recipe: str) -> tuple[str, str]:
    """The Makefile for ``recipe``: its text and what ``make -n all`` would run."""
    makegen.write_makefile([Path(recipe)], Path("Makefile"), Path("build"))
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    dry = subprocess.run(["make", "-n", "all"], cwd=project.root, env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    return (project.root / "Makefile").read_text(encoding="utf-8"), dry.stdout


def extending_makefile(project: Project, base: str) -> tuple[str, str]:
    """A Makefile for child.toml, which extends ``base``: its text and ``make -n``'s output."""
    project.write_recipe(RECIPE, base)
    project.write_recipe(f"extends = {toml_basic_string(base)}\n", "child.toml")
    return makefile_of(project, "child.toml")


@needs_make
@pytest.mark.parametrize("name", NAMES, ids=IDS)
def test_makefile_shows_an_extended_file_in_comments_only(project: Project, name: str) -> None:
    """A file the recipe extends is named in the Makefile's comments only (make cannot spell it
    as a prerequisite): a newline or a final backslash there must not add or hide a rule."""
    spelt = makegen.make_path(name)
    plain = "base-plain.toml" if spelt else "base#plain.toml"  # a prerequisite, or a comment
    plain_text, plain_dry = extending_makefile(project, plain)
    text, dry = extending_makefile(project, name)
    assert dry == plain_dry
    a, b = make_logical_lines(plain_text), make_logical_lines(text)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x == y or (x.startswith("#") and y.startswith("#")) or y == x.replace(plain, str(spelt)), (
            x,
            y,
        )


@pytest.mark.parametrize("separator", ["\u2028", "\x85", "\x1e"])
def test_makefile_fingerprint_reads_paths_with_unicode_line_breaks(project: Project, separator: str) -> None:
    """The Makefile lists each build's inputs as JSON on a comment line; Python's str.splitlines()
    would cut that line at U+2028, U+0085 or U+001E (make itself does not)."""
    folder = f"data/a{separator}b"
    project.add_images(folder=folder)
    project.write_recipe(RECIPE.replace('"data/char"', json.dumps(folder)))
    makegen.write_makefile([Path(PLAIN)], Path("Makefile"), Path("build"))
    (project.root / "build" / "Test_v1").mkdir(parents=True)
    assert makefile.main(["inputs", "Makefile"]) == 0
    assert (project.root / "build" / "Test_v1" / ".lorabuild" / "inputs.stamp").is_file()
    (entry,) = makefile.manifest(Path("Makefile"))
    assert any(separator in p for p in entry["paths"])


# --- any name at all -----------------------------------------------------------------------------


if hypothesis is not None:
    _SPECIAL = [
        *"\n\r\t\x01\x1b\x7f\x0b\x0c\x1c\x1e\x85'\"`$\\#;&|<>(){}[]*?!~%@ -",
        " --",
        "\r\n",
        "\u2028",
        "\u2029",
        "\u202e",
        "\u200b",
        "\ufeff",
        "‘",
        "’",
        "初",
        "🌸",
        "echo PWNED>x",
    ]
    _FILE_NAME = st.lists(
        st.one_of(
            st.sampled_from(_SPECIAL),
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"),
        ),
        min_size=1,
        max_size=12,
    ).map(lambda parts: "".join(parts) + ".toml")


@needs_bash
@pytest.mark.skipif(hypothesis is None, reason="hypothesis is not installed")
def test_any_recipe_file_name_is_shown_safely_everywhere(
    project: Project, plain: tuple[Plan, dict[str, bytes]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whatever the recipe file is called: train.sh, queue.sh and the sbatch script pass ``bash -n``
    with only comments changed, train.sh runs the same argv and nothing else, train.ps1 and
    queue.ps1 parse to the same code, the TOML files read the same in tomllib and toml, and the
    Makefile runs the same commands (or is refused: a make recipe line cannot hold a line break)."""
    plain_ps1 = Script(plain[1]["train.ps1"])
    plain_make = makefile_of(project, PLAIN)
    queue_build = [ScriptBuild("Test_v1", "Test_v1", "output/Test_v1.safetensors")]
    plain_queue = runqueue.render_queue(queue_build, ["lorabuild", "queue", PLAIN])
    plain_toml = {f: tomllib.loads(plain[1][f].decode()) for f in ("config.toml", "dataset.toml")}

    @hypothesis.settings(max_examples=60, deadline=None, database=None)
    @hypothesis.given(_FILE_NAME)
    def check_name(name: str) -> None:
        hypothesis.assume(len(name.encode("utf-8")) <= 200)
        tmp = tmp_path_factory.mktemp("any")
        plan, files = compiled(project, name)
        try:
            script = plan.build_dir / "train.sh"
            assert_bash_syntax(script)
            only_comments_differ(plain[1]["train.sh"].decode(), files["train.sh"].decode())
            ps1 = Script(files["train.ps1"])
            assert ps1.errors() == []
            ps1.comments_follow_the_line_comment_rule()
            assert ps1.code() == plain_ps1.code()
            for file, data in plain_toml.items():
                text = files[file].decode("utf-8")
                assert tomllib.loads(text) == toml.loads(text) == data

            bin_dir, record = tmp / "bin", tmp / "calls.jsonl"
            stand_in(bin_dir, "accelerate")
            result = run_bash(script, tmp, bin_dir, record, LORABUILD_SD_SCRIPTS="/kohya")
            assert result.returncode == 0, result.stderr
            assert_nothing_injected(result, tmp, plan.build_dir, project.root)
            assert recorded(record) == [expected_argv(plan, "/kohya")]

            queue = runqueue.render_queue(queue_build, ["lorabuild", "queue", name])
            (tmp / "queue.sh").write_bytes(queue["queue.sh"].data)
            assert_bash_syntax(tmp / "queue.sh")
            only_comments_differ(plain_queue["queue.sh"].data.decode(), queue["queue.sh"].data.decode())
            queue_ps1 = Script(queue["queue.ps1"].data)
            assert queue_ps1.errors() == []
            queue_ps1.comments_follow_the_line_comment_rule()
            assert queue_ps1.code() == Script(plain_queue["queue.ps1"].data).code()

            hostile = project.root / "any.sbatch"
            write_sbatch([Path(name)], hostile, Path("build"), stages=("compile",))
            assert_bash_syntax(hostile)

            try:
                text, dry = makefile_of(project, name)
            except makegen.MakefileError as exc:  # a line break cannot reach a make recipe line
                assert "line break" in str(exc) and any(c in name for c in "\n\r")
            else:
                word = makegen.shell_word(name).replace("$$", "$")
                assert dry == plain_make[1].replace(PLAIN, word)
                lines = [x for x in make_logical_lines(text) if not x.startswith("# Not prerequisites")]
                assert len(lines) == len(make_logical_lines(plain_make[0]))  # nothing added or hidden
        finally:
            (project.root / name).unlink()

    check_name()


# --- values with line breaks in the CRLF PowerShell scripts ----------------------------------


def test_train_ps1_keeps_line_breaks_inside_values_as_written(project: Project) -> None:
    """train.ps1 has CRLF line ends; a line break inside a quoted value is part of the value and
    must stay as the recipe wrote it (turning every LF into CRLF changed "a\\nb" to "a\\r\\nb")."""
    value = "a\nb\r\nc\rd"
    project.write_recipe(RECIPE + f"\n[launch]\nenv = {{ HF_HOME = {toml_basic_string(value)} }}\n")
    plan = compile_recipe(PLAIN)
    script = Script((plan.build_dir / "train.ps1").read_bytes())
    assert script.errors() == []
    (assigned,) = script.assignments("$env:HF_HOME")
    assert script.evaluate(assigned, {}) == value
    outside = script.code().replace(script.text(assigned), "")
    assert "\n" not in outside.replace("\r\n", "") and outside.endswith("\r\n")


def test_queue_ps1_keeps_line_breaks_inside_values_as_written() -> None:
    folder = "build\nA"
    script = Script(runqueue.render_queue([ScriptBuild("A", folder, "o")], ["lorabuild"])["queue.ps1"].data)
    (builds,) = script.assignments("$Builds")
    assert [b["Folder"] for b in script.evaluate(builds, {"$PSScriptRoot": "C:\\q"})] == [folder]


def test_a_recipe_name_that_is_not_utf8_is_refused_with_a_message(project: Project) -> None:
    """A file name that is not valid UTF-8 (lone surrogates through os.fsdecode) cannot be named in
    a UTF-8 file: refused with a QuotingError, not a UnicodeEncodeError traceback."""
    name = os.fsdecode(b"bad\xff.toml")
    project.write_recipe(RECIPE, name)
    with pytest.raises(QuotingError, match=r"not valid UTF-8.*rename the file or folder"):
        compile_recipe(name)
    with pytest.raises(QuotingError, match=r"a line of a\.sbatch"):
        write_sbatch([Path(name)], project.root / "a.sbatch", Path("build"))
    with pytest.raises(QuotingError, match=r"a line of Makefile"):
        makegen.write_makefile([Path(name)], Path("Makefile"), Path("build"))
    # Where it only appears in a comment, it is shown escaped instead.
    queue = runqueue.render_queue([ScriptBuild("A", "A", "o")], ["lorabuild", "queue", name])
    assert "#   lorabuild queue 'bad\\udcff.toml'\n" in queue["queue.sh"].data.decode()
