"""Tests for lorabuild.render.quoting: recipe strings reach kohya exactly, through bash, PowerShell and TOML.

bash is tested by running real bash scripts against a stand-in ``accelerate`` that records its argv.
There is no PowerShell here, so the PowerShell rules are tested on their own: a reference reader
for single-quoted literals (in tests/powershell.py, with a PowerShell grammar for whole scripts),
models of how each PowerShell version builds a Windows command line, a reference splitter for the
Microsoft C runtime rules, and golden literals in ``tests/golden/quoting/powershell.txt``
(rewritten when ``LORABUILD_UPDATE_GOLDEN=1``).

The property tests need hypothesis (in the ``test`` extra); they are skipped without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import toml

from lorabuild.problems import LorabuildError
from lorabuild.render.quoting import (
    Quoted,
    QuotingError,
    bash_quote,
    comment_text,
    env_name,
    make_comment,
    powershell_native_arg,
    powershell_quote,
    powershell_word,
    toml_basic_string,
)
from tests.powershell import PS_SINGLE_QUOTES, Script, read_ps_single_quoted

try:
    import hypothesis
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is optional
    hypothesis = None  # type: ignore[assignment]

needs_hypothesis = pytest.mark.skipif(hypothesis is None, reason="hypothesis is not installed")
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")

GOLDEN_POWERSHELL = Path(__file__).parent / "golden" / "quoting" / "powershell.txt"
UPDATE_GOLDEN = os.environ.get("LORABUILD_UPDATE_GOLDEN") == "1"

# (name, value): the strings every quoting function must get right or refuse clearly.
NASTY: list[tuple[str, str]] = [
    ("plain", "config.toml"),
    ("flag", "--config_file"),
    ("number", "08"),
    ("space", "my data"),
    ("single quote", "it's"),
    ("double quote", 'say "cheese"'),
    ("only a double quote", '"'),
    ("two double quotes first", '""x'),
    ("dollar home", "$HOME"),
    ("command substitution", "$(id)"),
    ("backticks", "`id`"),
    ("semicolon", "a;b"),
    ("and and", "a && b"),
    ("pipe", "a|b"),
    ("redirects", "a>b<c"),
    ("newline", "line1\nline2"),
    ("crlf", "a\r\nb"),
    ("tab", "a\tb"),
    ("star", "*.png"),
    ("question mark", "img?.png"),
    ("brackets", "[a]"),
    ("braces", "{a,b}"),
    ("tilde", "~"),
    ("tilde path", "~/lora"),
    ("bang", "wow!"),
    ("history bang", "!!"),
    ("hash", "#not a comment"),
    ("percent", "%PATH%"),
    ("at sign", "@args"),
    ("equals", "lr=1e-4"),
    ("comma", "a,b"),
    ("leading comma", ",x"),
    ("quote then comma", 'say "hi", then'),
    ("backslashes", "C:\\sd\\models"),
    ("unc path", "\\\\server\\share"),
    ("trailing backslash", "C:\\out\\"),
    ("trailing backslash with space", "C:\\my data\\"),
    ("backslash u", "C:\\users\\u1\\U2"),
    ("leading dash", "-rf"),
    ("dash dot", "-x.toml"),
    ("dash colon", "-v:1"),
    ("empty", ""),
    ("japanese", "初春飾利"),
    ("japanese with space", "初春 飾利"),
    ("emoji", "🌸 lora"),
    ("typographic quotes", "‘a’ ‚b‛ “c” „d”"),
    ("typographic dash", "–flag"),
    ("powershell escapes", "`n`$x"),
    ("powershell subexpression", "$(Get-Date)"),
    ("stop parsing", "--%"),
    ("unicode spaces", "a\u3000b\u00a0c"),
    ("unusual line breaks", "a\u2028b\x85c"),
    ("control characters", "\x01\x1b[31m\x7f"),
]
NASTY_IDS = [name for name, _ in NASTY]
NASTY_VALUES = [value for _, value in NASTY]


def _text(**kwargs: Any) -> Any:
    """Arbitrary text without NUL and without lone surrogates (no file or argv can hold either)."""
    return st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), **kwargs)


def _nasty_text(**kwargs: Any) -> Any:
    """Text that hits quoting corner cases far more often than uniform characters do."""
    special = [*"\"'\\`$ \t\r\n,;|&<>()[]{}#%~*?!=-:uU0", "\u2018", "\u2019", "初", "🌸", "\x85", "\x7f"]
    alphabet = st.one_of(
        st.sampled_from(special),
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    )
    return st.text(alphabet, **kwargs)


# ---------------------------------------------------------------------------------------------
# bash: run real scripts against a recording stand-in for accelerate
# ---------------------------------------------------------------------------------------------

RECORDER = """\
import json, os, sys
# Record raw bytes: os.fsencode undoes Python's argv decoding exactly, whatever the locale.
with open(os.environ["LB_RECORD"], "w", encoding="ascii") as f:
    json.dump({
        "argv": [os.fsencode(a).hex() for a in sys.argv[1:]],
        "env": os.fsencode(os.environ["LB_VALUE"]).hex() if "LB_VALUE" in os.environ else None,
    }, f)
"""


def run_train_sh(
    tmp_path: Path, args: list[str], env_value: str | None = None, locale: str = "C.UTF-8"
) -> tuple[list[bytes], bytes | None]:
    """Write a train.sh-like script that runs ``accelerate launch ARGS``, run it, return what arrived."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    accelerate = bin_dir / "accelerate"
    accelerate.write_text(f"#!{sys.executable}\n{RECORDER}", encoding="utf-8")
    accelerate.chmod(0o755)
    lines = ["#!/usr/bin/env bash", "set -euo pipefail"]
    if env_value is not None:
        lines.append(f"export LB_VALUE={bash_quote(env_value)}")
    lines.append(" ".join(["accelerate", "launch", *(bash_quote(a) for a in args)]))
    script = tmp_path / "train.sh"
    script.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    record = tmp_path / "record.json"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "LB_RECORD": str(record),
        "LC_ALL": locale,
        "HOME": str(tmp_path / "home"),
    }
    subprocess.run(["bash", str(script)], env=env, check=True, timeout=60, capture_output=True)
    recorded = json.loads(record.read_text(encoding="ascii"))
    argv = [bytes.fromhex(a) for a in recorded["argv"]]
    assert argv[0] == b"launch"
    return argv[1:], None if recorded["env"] is None else bytes.fromhex(recorded["env"])


@needs_bash
@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_bash_every_nasty_string_in_one_command_arrives_byte_exact(tmp_path: Path, locale: str) -> None:
    values = list(NASTY_VALUES)
    env_value = "\n".join(values)
    argv, env = run_train_sh(tmp_path, values, env_value=env_value, locale=locale)
    assert argv == [v.encode("utf-8") for v in values]
    assert env == env_value.encode("utf-8")


@needs_bash
@pytest.mark.parametrize("value", NASTY_VALUES, ids=NASTY_IDS)
def test_bash_nasty_string_arrives_byte_exact(tmp_path: Path, value: str) -> None:
    argv, env = run_train_sh(tmp_path, [value, "--config_file", "config.toml"], env_value=value)
    assert argv == [value.encode("utf-8"), b"--config_file", b"config.toml"]
    assert env == value.encode("utf-8")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("--config_file", "--config_file"),
        ("config.toml", "config.toml"),
        ("lr=1e-4", "lr=1e-4"),
        ("/opt/sd-scripts/train_network.py", "/opt/sd-scripts/train_network.py"),
        ("", "''"),
        ("my data", "'my data'"),
        ("it's", "'it'\\''s'"),
        ("~", "'~'"),
        ("初春", "'初春'"),
        ("a\nb", "'a\nb'"),
    ],
)
def test_bash_quote_leaves_safe_strings_bare_and_single_quotes_the_rest(value: str, expected: str) -> None:
    assert bash_quote(value) == expected


def test_bash_quote_refuses_nul_with_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"NUL character \(U\+0000\) at position 1"):
        bash_quote("a\0b")


@needs_bash
@needs_hypothesis
def test_bash_property_any_text_arrives_byte_exact(tmp_path_factory: pytest.TempPathFactory) -> None:
    @hypothesis.settings(max_examples=50, deadline=None, database=None)
    @hypothesis.given(
        st.lists(st.one_of(_text(max_size=30), _nasty_text(max_size=12)), min_size=1, max_size=6)
    )
    def check(values: list[str]) -> None:
        argv, _ = run_train_sh(tmp_path_factory.mktemp("bash"), values)
        assert argv == [v.encode("utf-8") for v in values]

    check()


# ---------------------------------------------------------------------------------------------
# PowerShell: reference reader for literals, command-line models, reference splitter
# ---------------------------------------------------------------------------------------------

# Characters that mean something to PowerShell in argument mode (about_Parsing,
# about_Special_Characters), plus wildcards (pwsh globs bare words on Unix) and ~ (tilde expansion).
PS_ARGUMENT_MODE_SPECIAL = set("`$@#'\"(){}[],;|&<>*?~") | set(PS_SINGLE_QUOTES) | set("\u201c\u201d\u201e")


def is_plain_bareword(token: str) -> bool:
    """Whether every PowerShell version passes ``token`` to a native program as the same string.

    Conservative: ASCII, nothing special in argument mode, not a number (``08``, ``1kb``), and a
    leading dash only for a plain ``--flag`` (5.1 splits ``-a.b`` and mangles ``-a:b``).
    """
    if (
        not token
        or not token.isascii()
        or any(ch.isspace() or ch in PS_ARGUMENT_MODE_SPECIAL for ch in token)
    ):
        return False
    if token.startswith("-"):
        return re.fullmatch(r"--?[A-Za-z_][A-Za-z0-9_-]*", token) is not None
    return token[0].isalpha() or token[0] == "_"


def ps_argument_value(token: str) -> str:
    """The string PowerShell hands to the binder for one argument token from a generated script."""
    if token[:1] in PS_SINGLE_QUOTES:
        value, rest = read_ps_single_quoted(token)
        assert rest == "", f"text after the literal: {rest!r}"
        return value
    assert is_plain_bareword(token), f"bare word PowerShell may change: {token!r}"
    return token


# .NET char.IsWhiteSpace: U+0009..U+000D, U+0020, U+0085, U+00A0 and the Zs/Zl/Zp characters.
DOTNET_WHITESPACE = set("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}


# Space separators in older Unicode data (U+180E until 6.3, U+200B until 4.0.1), which .NET Framework,
# under Windows PowerShell 5.1, may still count as whitespace: powershell_native_arg refuses a trailing
# backslash with one of them too.
FORMER_DOTNET_WHITESPACE = {"\u180e", "\u200b"}


def legacy_need_quotes(arg: str) -> bool:
    """NativeCommandParameterBinder.NeedQuotes: whitespace outside a pair of (unescaped) quotes."""
    quote_count = 0
    following_backslash = False
    need = False
    for ch in arg:
        if ch == '"' and not following_backslash:
            quote_count += 1
        elif ch in DOTNET_WHITESPACE and quote_count % 2 == 0:
            need = True
        following_backslash = ch == "\\"
    return need


def legacy_command_line(args: list[str], *, doubles_trailing_backslashes: bool) -> str:
    """The command line of Legacy argument passing: 5.1 (False) or PowerShell 6.0+ (True)."""
    parts = []
    for arg in args:
        if arg == "":
            continue  # Legacy leaves empty arguments out.
        if legacy_need_quotes(arg):
            trailing = len(arg) - len(arg.rstrip("\\"))
            parts.append('"' + arg + ("\\" * trailing if doubles_trailing_backslashes else "") + '"')
        else:
            parts.append(arg)
    return " ".join(parts)


def standard_command_line(args: list[str]) -> str:
    """The command line .NET's PasteArguments builds from ProcessStartInfo.ArgumentList (Standard)."""
    parts = []
    for arg in args:
        if arg and not any(ch in DOTNET_WHITESPACE or ch == '"' for ch in arg):
            parts.append(arg)
            continue
        out = ['"']
        index = 0
        while index < len(arg):
            ch = arg[index]
            if ch == "\\":
                run = len(arg[index:]) - len(arg[index:].lstrip("\\"))
                index += run
                if index == len(arg):
                    out.append("\\" * (2 * run))
                elif arg[index] == '"':
                    out.append("\\" * (2 * run + 1) + '"')
                    index += 1
                else:
                    out.append("\\" * run)
            elif ch == '"':
                out.append('\\"')
                index += 1
            else:
                out.append(ch)
                index += 1
        out.append('"')
        parts.append("".join(out))
    return " ".join(parts)


def split_command_line(line: str) -> list[str]:
    """Split the arguments part of a command line as the Microsoft C runtime does.

    Rules from "Parsing C command-line arguments" (learn.microsoft.com): arguments are separated
    by spaces and tabs; "..." groups; 2n backslashes before a quote give n backslashes and the
    quote is a delimiter; 2n+1 give n backslashes and a literal quote; other backslashes are
    literal; inside quotes, "" is a literal quote and ends the quoted part.
    """
    args: list[str] = []
    index, length = 0, len(line)
    while True:
        while index < length and line[index] in " \t":
            index += 1
        if index >= length:
            return args
        arg: list[str] = []
        in_quotes = False
        while index < length:
            ch = line[index]
            if ch == "\\":
                end = index
                while end < length and line[end] == "\\":
                    end += 1
                run = end - index
                if end < length and line[end] == '"':
                    arg.append("\\" * (run // 2))
                    if run % 2:
                        arg.append('"')
                        end += 1
                else:
                    arg.append("\\" * run)
                index = end
            elif ch == '"':
                if in_quotes and index + 1 < length and line[index + 1] == '"':
                    arg.append('"')
                    index += 2
                    in_quotes = False
                else:
                    in_quotes = not in_quotes
                    index += 1
            elif ch in " \t" and not in_quotes:
                break
            else:
                arg.append(ch)
                index += 1
        args.append("".join(arg))


def legacy_5_1_command_line(args: list[str]) -> str:
    return legacy_command_line(args, doubles_trailing_backslashes=False)


def legacy_6_command_line(args: list[str]) -> str:
    return legacy_command_line(args, doubles_trailing_backslashes=True)


COMMAND_LINE_MODELS: dict[str, Callable[[list[str]], str]] = {
    "Windows PowerShell 5.1 (Legacy)": legacy_5_1_command_line,
    "PowerShell 6.0-7.2, or 7.3+ Legacy": legacy_6_command_line,
    "PowerShell 7.3+ Standard/Windows": standard_command_line,
}


def received_by_program(tokens: list[str], model: Callable[[list[str]], str]) -> list[str]:
    """What a C-runtime program gets for argument tokens written in a .ps1, under one model."""
    return split_command_line(model([ps_argument_value(t) for t in tokens]))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # The examples table of Microsoft's "Parsing C command-line arguments".
        ('"a b c" d e', ["a b c", "d", "e"]),
        ('"ab\\"c" "\\\\" d', ['ab"c', "\\", "d"]),
        ('a\\\\\\b d"e f"g h', ["a\\\\\\b", "de fg", "h"]),
        ('a\\\\\\"b c d', ['a\\"b', "c", "d"]),
        ('a\\\\\\\\"b c" d e', ["a\\\\b c", "d", "e"]),
        ('a"b"" c d', ['ab"', "c", "d"]),
    ],
)
def test_reference_splitter_follows_the_microsoft_examples(line: str, expected: list[str]) -> None:
    assert split_command_line(line) == expected


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["my data\\"], '"my data\\"'),  # issue #7400: the program gets `my data"`
        (['say "cheese"'], '"say "cheese""'),
        (["a", "", "b"], "a b"),
    ],
)
def test_legacy_model_reproduces_the_known_5_1_bugs(args: list[str], line: str) -> None:
    cmdline = legacy_command_line(args, doubles_trailing_backslashes=False)
    assert cmdline == line
    assert split_command_line(cmdline) != args


@needs_hypothesis
def test_standard_model_and_splitter_agree_on_any_text() -> None:
    @hypothesis.settings(max_examples=200, deadline=None, database=None)
    @hypothesis.given(st.lists(_nasty_text(max_size=12), max_size=4))
    def check(args: list[str]) -> None:
        assert split_command_line(standard_command_line(args)) == args

    check()


def test_powershell_quote_is_always_a_quoted_literal() -> None:
    # Bare words are strings only in argument mode; `$env:X = config.toml` would run a command.
    assert powershell_quote("config.toml") == "'config.toml'"
    assert powershell_quote("") == "''"
    assert powershell_quote("it's") == "'it''s'"
    assert powershell_quote("\u2018a\u2019") == "'\u2018\u2018a\u2019\u2019'"
    assert powershell_quote("$HOME `n") == "'$HOME `n'"


@pytest.mark.parametrize("value", NASTY_VALUES, ids=NASTY_IDS)
def test_powershell_quote_reads_back_exactly(value: str) -> None:
    assert read_ps_single_quoted(powershell_quote(value)) == (value, "")


@needs_hypothesis
def test_powershell_quote_property_reads_back_exactly() -> None:
    @hypothesis.settings(max_examples=300, deadline=None, database=None)
    @hypothesis.given(st.one_of(_text(), _nasty_text()))
    def check(value: str) -> None:
        assert read_ps_single_quoted(powershell_quote(value)) == (value, "")

    check()


def expected_native_refusal(value: str) -> str | None:
    """Why powershell_native_arg must refuse ``value`` (a word from its message), or None."""
    if "\0" in value:
        return "NUL"
    if '"' in value:
        return "double quote"
    if value == "":
        return "empty"
    if value == "--%":
        return "stop-parsing"
    if value.endswith("\\") and any(ch in DOTNET_WHITESPACE | FORMER_DOTNET_WHITESPACE for ch in value):
        return "trailing backslash"
    return None


def check_native_arg(value: str) -> None:
    """powershell_native_arg refuses exactly the values it must, and passes the rest exactly."""
    reason = expected_native_refusal(value)
    if reason is not None:
        with pytest.raises(QuotingError) as caught:
            powershell_native_arg(value)
        assert reason in str(caught.value)
        return
    token = powershell_native_arg(value)
    tokens = ["launch", token, "--config_file", "config.toml"]
    for name, model in COMMAND_LINE_MODELS.items():
        assert received_by_program(tokens, model) == ["launch", value, "--config_file", "config.toml"], name


@pytest.mark.parametrize("value", NASTY_VALUES, ids=NASTY_IDS)
def test_powershell_native_arg_arrives_exactly_or_is_refused(value: str) -> None:
    check_native_arg(value)


@needs_hypothesis
def test_powershell_native_arg_property() -> None:
    @hypothesis.settings(max_examples=400, deadline=None, database=None)
    @hypothesis.given(st.one_of(_text(max_size=20), _nasty_text(max_size=12)))
    # Failed once in about 7 runs: U+001F is whitespace to Python's str.isspace(), not to .NET's
    # char.IsWhiteSpace, so the value was refused although every PowerShell passes it exactly.
    @hypothesis.example("\x1f\\")
    @hypothesis.example("a\x1c\\")
    @hypothesis.example("a\u180e\\")  # a space separator in old Unicode data: refused
    def check(value: str) -> None:
        check_native_arg(value)

    check()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("--config_file", "--config_file"),
        ("config.toml", "config.toml"),
        ("C:\\sd-scripts\\train_network.py", "C:\\sd-scripts\\train_network.py"),
        ("C:\\out\\", "C:\\out\\"),
        ("08", "'08'"),
        ("-x.toml", "'-x.toml'"),
        ("-v:1", "'-v:1'"),
        ("~", "'~'"),
        ("*.png", "'*.png'"),
        ("my data", "'my data'"),
        ("初春", "'初春'"),
        ("–flag", "'–flag'"),
    ],
)
def test_powershell_native_arg_leaves_only_plain_words_bare(value: str, expected: str) -> None:
    assert powershell_native_arg(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            'C:\\my "best"\\set',
            '\'C:\\my "best"\\set\' contains a double quote (") at position 6, which Windows PowerShell 5.1 '
            "does not escape when it starts a program, so the program would lose it or split the argument "
            "there; rename the folder or file so that its name has no double quote, or set the value in the "
            "recipe so that it goes into config.toml, not on the command line",
        ),
        (
            "C:\\my data\\",
            "'C:\\my data\\' ends with a backslash (\\) and has whitespace, so Windows PowerShell 5.1 passes "
            'it as "...\\" and the program reads a double quote instead of the backslash; remove the '
            "trailing backslash (C:\\my data\\ becomes C:\\my data), or set the value in the recipe so that "
            "it goes into config.toml, not on the command line",
        ),
        (
            "",
            "'' is empty, and Windows PowerShell 5.1 leaves empty arguments out of the command line; "
            "give the option a value or leave the option out",
        ),
    ],
)
def test_powershell_native_arg_error_names_the_character_and_the_fix(value: str, message: str) -> None:
    with pytest.raises(QuotingError) as caught:
        powershell_native_arg(value)
    assert str(caught.value) == message
    assert caught.value.value == value


def test_quoting_error_is_a_lorabuild_error_and_a_value_error() -> None:
    assert issubclass(QuotingError, LorabuildError)
    assert issubclass(QuotingError, ValueError)
    assert QuotingError.exit_code == 2


def test_powershell_functions_refuse_what_a_utf8_script_cannot_hold() -> None:
    for function in (powershell_quote, powershell_native_arg):
        with pytest.raises(QuotingError, match="NUL"):
            function("a\0b")
        with pytest.raises(QuotingError, match="surrogate"):
            function("a\udc80b")


def _golden_powershell() -> str:
    lines = [
        "# PowerShell literals for the nasty strings in tests/test_quoting.py.",
        "# Regenerate with LORABUILD_UPDATE_GOLDEN=1 pytest tests/test_quoting.py and review the diff.",
        "# Every field is a Python string literal, so that control characters stay visible.",
    ]
    for name, value in NASTY:
        try:
            native = repr(powershell_native_arg(value))
        except QuotingError as error:
            native = f"refused: {error.problem}"
        lines += [
            "",
            f"[{name}]",
            f"value                 = {value!r}",
            f"powershell_quote      = {powershell_quote(value)!r}",
            f"powershell_native_arg = {native}",
        ]
    return "\n".join(lines) + "\n"


def test_powershell_golden_literals() -> None:
    text = _golden_powershell()
    if UPDATE_GOLDEN:
        GOLDEN_POWERSHELL.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN_POWERSHELL.write_text(text, encoding="utf-8", newline="\n")
    assert GOLDEN_POWERSHELL.exists(), f"missing {GOLDEN_POWERSHELL}; run with LORABUILD_UPDATE_GOLDEN=1"
    assert GOLDEN_POWERSHELL.read_text(encoding="utf-8") == text


# ---------------------------------------------------------------------------------------------
# TOML: round trip through tomllib and toml 0.10.2 (what kohya reads with)
# ---------------------------------------------------------------------------------------------

# Where a string literal can sit in kohya's config.toml and dataset.toml.
TOML_CONTEXTS: dict[str, tuple[Callable[[str], str], Callable[[dict[str, Any]], Any]]] = {
    "top level": (lambda lit: f"k = {lit}\n", lambda doc: doc["k"]),
    "table": (lambda lit: f"[general]\nk = {lit}\nafter = 1\n", lambda doc: doc["general"]["k"]),
    "array of tables": (
        lambda lit: f"[[datasets]]\n[[datasets.subsets]]\nimage_dir = {lit}\nnum_repeats = 10\n",
        lambda doc: doc["datasets"][0]["subsets"][0]["image_dir"],
    ),
    "array": (
        lambda lit: f"network_args = [{lit}, {lit}]\n",
        lambda doc: doc["network_args"][0] if doc["network_args"][0] == doc["network_args"][1] else None,
    ),
    "inline table": (lambda lit: f"t = {{ k = {lit} }}\n", lambda doc: doc["t"]["k"]),
}


def check_toml_round_trip(value: str, context: str) -> None:
    render, get = TOML_CONTEXTS[context]
    document = render(toml_basic_string(value))
    assert get(tomllib.loads(document)) == value, ("tomllib", document)
    assert get(toml.loads(document)) == value, ("toml", document)


@pytest.mark.parametrize("context", list(TOML_CONTEXTS))
@pytest.mark.parametrize("value", NASTY_VALUES, ids=NASTY_IDS)
def test_toml_nasty_string_round_trips(value: str, context: str) -> None:
    check_toml_round_trip(value, context)


@needs_hypothesis
@pytest.mark.parametrize("context", list(TOML_CONTEXTS))
def test_toml_property_round_trips(context: str) -> None:
    @hypothesis.settings(max_examples=250, deadline=None, database=None)
    @hypothesis.given(st.one_of(_text(), _nasty_text(max_size=14)))
    def check(value: str) -> None:
        check_toml_round_trip(value, context)

    check()


def test_toml_file_round_trips_the_way_kohya_reads_it(tmp_path: Path) -> None:
    lines = ["[[datasets]]"]
    for name, value in NASTY:
        lines += [
            "[[datasets.subsets]]",
            f"name = {toml_basic_string(name)}",
            f"image_dir = {toml_basic_string(value)}",
        ]
    path = tmp_path / "dataset.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    with open(path, encoding="utf-8") as f:  # as train_util.read_config_from_file does
        from_file = toml.load(f)
    by_path = toml.load(path)  # as config_util.load_user_config does
    with open(path, "rb") as f:
        strict = tomllib.load(f)
    for document in (from_file, by_path, strict):
        assert [s["image_dir"] for s in document["datasets"][0]["subsets"]] == NASTY_VALUES


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("初春 飾利", '"初春 飾利"'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("a\tb\nc\rd", '"a\\tb\\nc\\rd"'),
        ("\x00\x1b\x7f", '"\\u0000\\u001B\\u007F"'),
        ("\x85\u2028", '"\x85\u2028"'),
        # The three workarounds for toml 0.10.2:
        ("C:\\users\\U1", '"C:\\\\\\u0075sers\\\\\\u00551"'),
        ('"', '"""\\""""'),
        ('""x', '"""\\"\\"x"""'),
        (" ,x", '" \\u002Cx"'),
        ('say "hi" , then', '"say \\"hi\\" \\u002C then"'),
    ],
)
def test_toml_basic_string_output(value: str, expected: str) -> None:
    assert toml_basic_string(value) == expected


@pytest.mark.skipif(toml.__version__ != "0.10.2", reason="documents toml 0.10.2 behaviour")
@pytest.mark.parametrize(
    "document",
    [
        'k = "\\""',  # a lone quote: toml 0.10.2 reads ''
        'k = "\\"\\"x"',  # starts with two quotes: toml 0.10.2 reads ''
        'k = "\\u0001\\\\u"',  # a \u escape, then a real backslash and u: an error
        'k = [",x"]',  # an array element that starts with a comma: an error
        't = { k = "a\\",b" }',  # a comma after an escaped quote in an inline table: an error
    ],
)
def test_toml_0_10_2_misreads_the_plain_escapes_that_the_workarounds_avoid(document: str) -> None:
    expected = tomllib.loads(document)
    try:
        got = toml.loads(document)
    except Exception:  # any failure is what this test documents
        return
    assert got != expected


def test_toml_basic_string_refuses_lone_surrogates() -> None:
    with pytest.raises(QuotingError, match="surrogate"):
        toml_basic_string("bad\udcffname")


# ---------------------------------------------------------------------------------------------
# Comments: one visible line in bash, PowerShell, TOML and make; templates place nothing unquoted
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("../../recipes/kazari.toml", "../../recipes/kazari.toml"),
        ("C:\\sd\\models", "C:\\sd\\models"),  # backslashes stay: Windows paths read as written
        ("初春 🌸 'it' \"q\" $HOME `id` #x", "初春 🌸 'it' \"q\" $HOME `id` #x"),
        ("evil\necho PWNED>x\n.toml", "evil\\necho PWNED>x\\n.toml"),
        ("a\rb\r\nc\td", "a\\rb\\r\\nc\\td"),
        ("\x01\x1b[31m\x7f", "\\x01\\x1b[31m\\x7f"),
        ("a\x85b\u2028c\u2029d\x0be\x0cf", "a\\x85b\\u2028c\\u2029d\\x0be\\x0cf"),
        ("gnp\u202etxt\u200b\ufeff", "gnp\\u202etxt\\u200b\\ufeff"),  # bidi override, zero-width
        ("a\u3000b\u00a0c", "a\\u3000b\\xa0c"),  # spaces other than U+0020 are visible too
        ("bad\udcffname", "bad\\udcffname"),
    ],
)
def test_comment_text_escapes_what_could_end_or_hide_in_a_comment(value: str, expected: str) -> None:
    assert comment_text(value) == expected
    assert comment_text(expected) == expected  # already one visible line: unchanged


@pytest.mark.parametrize(
    ("value", "expected"), [("a\\", "a\\x5c"), ("a\\\\", "a\\\\x5c"), ("C:\\a", "C:\\a")]
)
def test_make_comment_keeps_the_comment_on_its_line(value: str, expected: str) -> None:
    assert make_comment(value) == expected
    assert make_comment("x\ny\\") == "x\\ny\\x5c"


def _comment_files(text: str) -> dict[str, str]:
    return {
        "bash": f"# {text}\necho ok\n",
        "toml": f"# {text}\nk = 1\n",
        "make": f"# {text}\nall:\n\t@echo ok\n",
    }


@pytest.mark.parametrize("value", [*NASTY_VALUES, "a\\", "evil\\\\"], ids=[*NASTY_IDS, "backslash", "two"])
def test_comments_hold_any_value_in_every_file_type(tmp_path: Path, value: str) -> None:
    """A comment holding the value is one comment, and the next line runs, in real bash, real
    make, tomllib and toml, and the PowerShell grammar."""
    files = _comment_files(comment_text(value))
    files["make"] = _comment_files(make_comment(value))["make"]
    assert tomllib.loads(files["toml"]) == toml.loads(files["toml"]) == {"k": 1}
    script = Script(f"# {comment_text(value)}\r\nexit 0\r\n".encode())
    assert script.errors() == [] and len(script.comments()) == 1
    assert script.code().strip() == "exit 0"
    if shutil.which("bash"):
        done = subprocess.run(["bash", "-c", files["bash"]], capture_output=True, text=True, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr
    if shutil.which("make"):
        (tmp_path / "Makefile").write_text(files["make"], encoding="utf-8")
        done = subprocess.run(["make", "-s"], capture_output=True, text=True, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("../../recipes/kazari.toml", "../../recipes/kazari.toml"),
        ("C:\\sd\\a.toml", "C:\\sd\\a.toml"),
        ("lorabuild", "lorabuild"),
        ("my recipe.toml", "'my recipe.toml'"),
        ("it's.toml", "'it''s.toml'"),
        ("‘q’.toml", "'‘‘q’’.toml'"),
        ("$HOME.toml", "'$HOME.toml'"),
        ("1kb", "'1kb'"),
        (".5", "'.5'"),
        ("-rf", "'-rf'"),
        ("~/a", "'~/a'"),
        ("", "''"),
    ],
)
def test_powershell_word_is_bare_only_when_powershell_reads_it_so(value: str, expected: str) -> None:
    word = powershell_word(value)
    assert word == expected
    if word.startswith("'"):
        assert read_ps_single_quoted(word) == (value, "")


def test_env_name_takes_only_names_both_shells_can_set() -> None:
    assert env_name("HF_HOME") == "HF_HOME"
    for bad in ("", "1X", "A-B", "A B", "A=B", "É", "A\nB"):
        with pytest.raises(QuotingError, match="environment variable name"):
            env_name(bad)


def test_templates_refuse_a_value_placed_without_a_quoting_filter() -> None:
    from lorabuild.build.artefacts import UnquotedValueError, _environment

    env = _environment()
    assert (
        env.from_string("{{ x | bash }} {{ x | comment }} {{ n }}").render(x="a\nb", n=3) == "'a\nb' a\\nb 3"
    )
    for placed in ("{{ x }}", "{{ x | upper }}", "{{ x | bash | upper }}", "{{ [x] | join(' ') }}"):
        with pytest.raises(UnquotedValueError, match="without a quoting filter"):
            env.from_string(placed).render(x="a")
    assert env.from_string("{{ x }}").render(x=Quoted("quoted in Python")) == "quoted in Python"
    with pytest.raises(UnquotedValueError):
        env.from_string("{{ flag }}").render(flag=True)  # a bool is not a number to place
