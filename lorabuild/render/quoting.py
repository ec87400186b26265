"""Quoting for bash, PowerShell and TOML: a recipe string reaches kohya exactly as written.

Templates only place values (house style rule 6). Every value they place goes through one of these
filters, so a folder called ``初春 "best" shots $1`` reaches ``train_network.py`` byte for byte or
makes lorabuild fail early with a message saying why and what to do.

bash (``train.sh``)
    Safe strings stay bare for readability. Everything else goes in single quotes, where bash
    expands nothing; an embedded ``'`` is written ``'\\''``. Newlines and non-ASCII text are literal
    inside single quotes. NUL cannot appear in an argument or a file path, so it is an error.

PowerShell literals (``train.ps1``)
    :func:`powershell_quote` always returns a single-quoted string. Nothing expands inside one; a
    quote is doubled. PowerShell also takes the typographic single quotes U+2018 to U+201B as quote
    marks (``IsSingleQuote`` in ``engine/parser/CharTraits.cs``; ``about_Quoting_Rules``), so
    those are doubled too. The tokenizer's ``ScanStringLiteral`` keeps the second of any two
    quote marks in a row. The literal is never left bare: a bare word is a string only in argument
    mode, and in ``$env:X = config.toml`` it would run a command.

Arguments for native programs from PowerShell (:func:`powershell_native_arg`)
    Windows passes a program one command-line string, not an argv. PowerShell builds that string,
    and the program splits it again using the Microsoft C runtime rules ("Parsing C command-line
    arguments": split on space and tab; ``"`` opens and closes quoting; backslashes are literal
    unless they come before a ``"``, where ``2n`` of them become ``n``, and ``2n+1`` become ``n``
    plus a literal ``"``). How PowerShell builds the string depends on the version:

    * Windows PowerShell 5.1, and PowerShell 6.0 to 7.2 (and 7.3+ with
      ``$PSNativeCommandArgumentPassing = 'Legacy'``) all join arguments with spaces and wrap
      an argument in ``"..."`` only when it contains whitespace (.NET ``char.IsWhiteSpace``)
      outside a ``"`` pair.
      Embedded ``"`` are not escaped, so the program drops them or splits the argument there
      (``NeedQuotes`` and ``AppendOneNativeArgument`` in
      ``src/System.Management.Automation/engine/NativeCommandParameterBinder.cs``; PowerShell
      issue #1995). Empty arguments are left out entirely. In 5.1 a trailing backslash is not
      doubled, so ``'C:\\my data\\'`` becomes ``"C:\\my data\\"`` and the program gets
      ``C:\\my data"`` (issues #4358 and #7400). PowerShell Core 6.0 fixed that (PR #4965), even
      in ``Legacy`` mode (issue #26432).
    * PowerShell 7.3 and later default to ``$PSNativeCommandArgumentPassing = 'Windows'``. That is
      ``Standard`` (each argument through ``ProcessStartInfo.ArgumentList``, which .NET's
      ``PasteArguments`` encodes correctly for the C runtime rules, empty strings and ``"``
      included) except for ``cmd.exe``, ``cscript.exe``, ``wscript.exe`` and ``.bat``, ``.cmd``,
      ``.js``, ``.vbs``, ``.wsf`` files, which still get ``Legacy`` (``about_Parsing``,
      "Passing arguments that contain quote characters").
    * Whatever the mode, an argument whose value is exactly ``--%`` is taken as the stop-parsing
      token and is not passed on (``BindParameters``).

    The approach here is to produce only arguments that arrive exactly under every one of those
    rules, and to refuse the rest with a :class:`QuotingError` that names the character and the
    fix. Refused: ``"`` anywhere; the empty string; a trailing backslash in a value that has
    whitespace; ``--%``; NUL. Everything else (spaces, ``$``, backticks, ``;``, newlines,
    non-ASCII) is a single-quoted literal, which PowerShell passes as the plain string. So
    ``train.ps1`` may set ``$PSNativeCommandArgumentPassing = 'Standard'`` (harmless on 5.1, where
    it is an ordinary variable) without depending on it. The values that cannot be passed this way
    belong in ``config.toml``, which kohya reads itself. The program must be an ``.exe``
    (``accelerate.exe`` or ``python.exe``), never a ``.bat``/``.cmd`` shim: ``cmd.exe`` has its own
    rules (``%``, ``^``, ``&``) and 7.3+ passes it arguments the ``Legacy`` way.

    Windows PowerShell 5.1 reads a ``.ps1`` without a byte order mark in the ANSI code page, where
    UTF-8 bytes of ``初春`` can turn into typographic quotes that end a string early. Whoever
    writes ``train.ps1`` must write it as UTF-8 *with* a BOM (Microsoft, "Understanding file
    encoding in VS Code and PowerShell").

TOML (``config.toml``, ``dataset.toml``)
    :func:`toml_basic_string` writes a basic string. kohya reads TOML with the ``toml`` package
    0.10.2, whose hand-written parser has quirks that this output avoids:

    * A ``\\u`` escape before a later ``\\\\u`` (a real backslash, then ``u``) breaks its ``\\u``
      decoder, so ``u`` or ``U`` straight after a backslash is written as ``\\u0075`` or ``\\u0055``.
    * It strips two more characters from each end of any string whose *unescaped* value is ``"``
      or starts with ``""``, taking it for a triple-quoted string. Escaping cannot hide that, so such
      values are written as a multi-line (triple-quoted) basic string, which it reads correctly.
    * Inside an array or an inline table it splits on commas first and glues the pieces back until
      each looks like a whole string. A piece that is just ``"``, or (in an inline table) ends with
      an escaped ``\\"``, passes for one, so a comma that is the first non-space character, or whose
      nearest non-space character before it is ``"``, is written ``\\u002C``.

    Non-ASCII text stays as UTF-8 (both parsers read it; kohya opens TOML files as UTF-8), and
    control characters are escaped so that nothing invisible sits in the file.

Comments (:func:`comment_text`, :func:`make_comment`)
    The generated files say where they came from (recipe file, build name, the command that wrote
    them) in comments. A comment is not a literal: nothing can be quoted there, and a value that
    ends the comment's line turns the rest of the value into code. So a value shown in a comment is
    made one visible line: every character that ``str.isprintable()`` rejects (control characters,
    line and paragraph separators, format characters such as the bidirectional overrides, spaces
    other than U+0020) is written as Python writes it in a string literal, ``\\n``, ``\\r``,
    ``\\t``, ``\\x01``, ``\\u2028``, as :class:`QuotingError` messages show values. A backslash is
    left alone, so that Windows paths stay readable (a name holding a real backslash-n reads the same
    as one holding a newline: in a comment that can only mislead a reader, never the shell). What
    ends a line comment in each file type:

    * bash: ``\\n`` only.
    * PowerShell: ``\\r`` or ``\\n`` (``ScanToEndOfCommentLine`` in
      ``engine/parser/tokenizer.cs``): a lone CR ends the comment, although editors show one line.
      U+0085, U+2028 and U+2029 do not; they are escaped anyway, since editors break lines there.
    * TOML: a newline; and a comment may not hold a control character other than tab at all
      (TOML 1.0, "Comment"), which ``tomllib`` enforces and ``toml`` 0.10.2 does not.
    * make: a newline, unless the line ends with a backslash, which continues the comment onto the
      next line, so :func:`make_comment` also writes a final backslash as ``\\x5c``. ``$`` and ``#``
      mean nothing in a make comment.

Templates (:class:`Quoted`)
    The script templates place only :class:`Quoted` text (what the template filters return, or what
    Python code wrapped after quoting it itself) and integers; :mod:`lorabuild.build.artefacts`'s template
    environment refuses anything else. So every value a template places has gone through a choice
    of quoting, and a template that forgets one fails the first time it is rendered.

Why one module: a quarter of it is this docstring, the evidence each filter rests on; the
filters share their refusals (NUL, lone surrogates) and their wording, and every way a recipe
string reaches a shell, a Makefile, an sbatch script or a TOML file is reviewed in one place.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from lorabuild.problems import LorabuildError, visible

__all__ = [
    "Quoted",
    "QuotingError",
    "bash_quote",
    "comment_text",
    "env_name",
    "make_comment",
    "powershell_native_arg",
    "powershell_quote",
    "powershell_word",
    "sbatch_line_problem",
    "toml_basic_string",
    "utf8",
]


class QuotingError(LorabuildError, ValueError):
    """A value cannot be written so that it arrives unchanged; the message says why and what to do.

    It is a :class:`ValueError` too, so code that only knows it handed over a bad value can catch
    that. The CLI reports it like a recipe error: the value comes from a recipe or a setting.

    Attributes:
        value: The string that could not be quoted.
        problem: What is wrong with it, naming the character and its position.
        fix: What the user can do about it.
    """

    exit_code = 2

    def __init__(self, value: str, problem: str, fix: str) -> None:
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(f"{_show(value)} {problem}; {fix}")


class Quoted(str):
    """Text already written in the syntax of the place it goes: a quoted word, an escaped comment.

    The script templates place nothing else (and integers): see "Templates" in the module docstring.
    Wrap a string in it only right after quoting it for where it goes.
    """

    __slots__ = ()


def _show(value: str) -> str:
    """Show a value in an error message: as written, but with invisible characters escaped.

    Not ``repr()``, which doubles every backslash and so misquotes every Windows path.
    """
    return "'" + comment_text(value) + "'"


# A value in a comment is written as one visible line, as problems are (see "Comments" above).
comment_text = visible


def utf8(text: str, file: str) -> bytes:
    """Encode a whole generated file as UTF-8, refusing what UTF-8 cannot hold with a clear message.

    A file or folder name that is not valid UTF-8 reaches Python as lone surrogates
    (``os.fsdecode``); no UTF-8 file can hold one, and ``str.encode`` would fail with a traceback.

    Args:
        text: The file's text.
        file: Its name, for the message.

    Raises:
        QuotingError: Naming the line that holds the surrogate; it is a ValueError.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        start = text.rfind("\n", 0, exc.start) + 1
        end = text.find("\n", exc.start)
        raise QuotingError(
            text[start : end if end >= 0 else len(text)].strip(),
            f"(a line of {file}) contains an unpaired surrogate (U+{ord(text[exc.start]):04X}): a file or "
            "folder name that is not valid UTF-8, which a UTF-8 file cannot name",
            "rename the file or folder so that its name is valid UTF-8",
        ) from None


def make_comment(s: str) -> str:
    """Write ``s`` as the text of a Makefile comment line (after ``# ``), on one line.

    As :func:`comment_text`, and a backslash at the very end, which would carry the comment on to
    the next line of the Makefile (and so comment out a rule), is written ``\\x5c``.

    Args:
        s: The whole comment line's text: only its end can continue the line.

    Returns:
        Text that ends the comment where the line ends. Never raises.
    """
    text = comment_text(s)
    return text[:-1] + "\\x5c" if text.endswith("\\") else text


# Characters bash never treats specially in an argument (nor in the value of an assignment).
_BASH_BARE = re.compile(r"[A-Za-z0-9_./:=@%+,-]+")

# PowerShell ends a single-quoted string at any of these (CharTraits.IsSingleQuote).
_PS_SINGLE_QUOTES = frozenset("'\u2018\u2019\u201a\u201b")

# Bare words that PowerShell passes to a native program unchanged in every version. A word may not
# start with a digit (the tokenizer may read a number literal: 1kb, 0x10, 1e3), nor with a dash
# unless it is a plain --flag (5.1 splits -name.ext at the dot; 7.3 changed how -name:value is
# passed). No wildcard (pwsh on Linux globs bare words), no ~ (tilde expansion), nothing outside
# ASCII (the tokenizer takes typographic dashes and quotes for - and quotes).
_PS_NATIVE_BARE = re.compile(r"--?[A-Za-z_][A-Za-z0-9_-]*|[A-Za-z_][A-Za-z0-9_./\\:=+-]*")

# What the legacy argument passing counts as whitespace (NativeCommandParameterBinder.NeedQuotes):
# .NET's char.IsWhiteSpace, which is U+0009..U+000D, U+0085 and the space, line and paragraph
# separators (Zs, Zl, Zp). Not Python's str.isspace(): that also takes U+001C..U+001F (control
# characters to .NET), and refused values every PowerShell passes exactly.
_DOTNET_WHITESPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
# U+180E and U+200B were space separators in older Unicode versions, which .NET Framework may still use.
_FORMER_SPACES = frozenset("\u180e\u200b")


def _first_index(s: str, predicate: Callable[[str], bool]) -> int | None:
    """The index of the first character of ``s`` that satisfies ``predicate``, or None."""
    return next((i for i, ch in enumerate(s) if predicate(ch)), None)


def _describe(ch: str) -> str:
    """Name a character for an error message: ``a double quote (")``, ``a NUL character (U+0000)``."""
    known = {'"': 'a double quote (")', "\0": "a NUL character (U+0000)", "\\": "a backslash (\\)"}
    if ch in known:
        return known[ch]
    name = unicodedata.name(ch, "unnamed character")
    return f"{name} (U+{ord(ch):04X})"


def _is_surrogate(ch: str) -> bool:
    return "\ud800" <= ch <= "\udfff"


def _legacy_whitespace(ch: str) -> bool:
    """Whether legacy argument passing may count ``ch`` as whitespace and wrap the argument in quotes."""
    return ch in _DOTNET_WHITESPACE or ch in _FORMER_SPACES


def _reject_nul(s: str, where: str, fix: str) -> None:
    index = s.find("\0")
    if index >= 0:
        raise QuotingError(s, f"contains {_describe(chr(0))} at position {index}, which {where}", fix)


def _reject_surrogates(s: str, where: str) -> None:
    # os.fsdecode() turns bytes that are not UTF-8 into lone surrogates; they cannot be encoded as
    # UTF-8, so they would fail later, at write time, with a less helpful message.
    index = _first_index(s, _is_surrogate)
    if index is not None:
        raise QuotingError(
            s,
            f"contains an unpaired surrogate (U+{ord(s[index]):04X}) at position {index}, which {where}",
            "rename the file or folder so that its name is valid UTF-8",
        )


def bash_quote(s: str) -> str:
    """Quote ``s`` as one bash word that expands to exactly ``s``.

    Strings made only of ``A-Z a-z 0-9 _ . / : = @ % + , -`` stay bare, so that ``train.sh`` reads
    like a command a person would type. Anything else is put in single quotes, inside which bash
    expands nothing (``$``, backticks, ``!``, globs, ``~``); a single quote is written ``'\\''``.
    Newlines, tabs, CR and non-ASCII characters are kept literally inside the quotes.

    Args:
        s: The exact string the program should receive.

    Returns:
        A bash word, e.g. ``--config_file``, ``''`` or ``'it'\\''s $HOME'``. Use it as an argument
        or an assignment value; as the first word of a command, a bare ``a=b`` is an assignment.

    Raises:
        QuotingError: ``s`` contains NUL, which no argument, environment value or path can hold.
            It is a ValueError.
    """
    _reject_nul(s, "no command-line argument can contain", "remove it from the value")
    if _BASH_BARE.fullmatch(s):
        return s
    return "'" + s.replace("'", "'\\''") + "'"


def powershell_quote(s: str) -> str:
    """Quote ``s`` as a PowerShell single-quoted string literal that evaluates to exactly ``s``.

    The result is always quoted, so it is a string both in expression mode
    (``$env:HF_HOME = '...'``) and in argument mode. Inside single quotes PowerShell expands
    nothing (``$``, backtick, ``$(...)``); each of ``'`` and the typographic single quotes
    U+2018, U+2019, U+201A and U+201B is doubled, because PowerShell ends a string at any of them.
    Newlines are kept literally. For an argument to a native program use
    :func:`powershell_native_arg`, which also checks that the program will receive it unchanged.

    Args:
        s: The exact string the script should hold.

    Returns:
        A literal such as ``'C:\\data\\初春'`` or ``'it''s'``.

    Raises:
        QuotingError: ``s`` contains NUL or an unpaired surrogate, which cannot be written into a
            UTF-8 script.
    """
    _reject_nul(s, "cannot be written into a PowerShell script", "remove it from the value")
    _reject_surrogates(s, "cannot be written into a UTF-8 PowerShell script")
    return "'" + "".join(ch * 2 if ch in _PS_SINGLE_QUOTES else ch for ch in s) + "'"


# Words PowerShell reads as that very string in argument mode: no quotes, no $ ` @ # ( ) { } , ; | & < >,
# no wildcard or ~, not a number (no digit first, nor a dot then a digit), not a parameter (no dash first).
_PS_WORD = re.compile(r"(?!\.[0-9])[A-Za-z_./\\][A-Za-z0-9_./\\:=+-]*")


def powershell_word(s: str) -> str:
    """Write ``s`` as a word of a PowerShell command line shown to a person, e.g. in a comment.

    A bare word when PowerShell reads it as exactly ``s`` (``../../recipes/kazari.toml``), else a
    single-quoted literal as :func:`powershell_quote` writes it. Unlike that function it never
    refuses: the result is for reading and copying, and what it shows still goes through
    :func:`comment_text` (a NUL or a lone surrogate comes out escaped there). Not for arguments
    that a script passes: use :func:`powershell_native_arg`.
    """
    if _PS_WORD.fullmatch(s):
        return s
    return "'" + "".join(ch * 2 if ch in _PS_SINGLE_QUOTES else ch for ch in s) + "'"


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_SBATCH_NAMES = {"\n": "a line break (U+000A)", "\r": "a carriage return (U+000D)", "\t": "a tab (U+0009)"}


def sbatch_line_problem(text: str) -> str | None:
    """Why ``text`` cannot be written on an ``#SBATCH`` line of lorabuild's array script, or None.

    The check of ``[launch.slurm]`` (:mod:`lorabuild.recipe.schema`) and of the script itself
    (:func:`lorabuild.batch.slurm.render_sbatch`), so that ``check`` refuses what compiling would.
    A line break ends the ``#SBATCH`` line (bash would run the rest: the line is a comment to it);
    sbatch refuses a script with a carriage return, and other control characters split or hide
    the option. A value with a space is written in double quotes, which sbatch reads without
    escapes, so a double quote cannot be written at all.

    Returns:
        ``contains <the character> at position <n>: <why>``, or None when ``text`` can be written.
    """
    for index, ch in enumerate(text):
        if ch == '"':
            return (
                f"contains {_describe(ch)} at position {index}: sbatch reads an #SBATCH value in double "
                "quotes without escapes, so it cannot hold one"
            )
        if unicodedata.category(ch) == "Cc":
            name = _SBATCH_NAMES.get(ch, f"a control character (U+{ord(ch):04X})")
            return f"contains {name} at position {index}: an #SBATCH line cannot hold line breaks or control characters"
    return None


def env_name(s: str) -> str:
    """Check that ``s`` can be written bare as an environment variable's name.

    bash's ``export NAME=...`` and PowerShell's ``$env:NAME = ...`` both take a name of ASCII
    letters, digits and ``_`` that does not start with a digit; nothing in either can quote one.

    Returns:
        ``s`` itself.

    Raises:
        QuotingError: For any other name; it is a ValueError.
    """
    if not _ENV_NAME.fullmatch(s):
        raise QuotingError(
            s,
            "is not an environment variable name that bash and PowerShell scripts can set",
            "use ASCII letters, digits and _ only, not starting with a digit",
        )
    return s


def powershell_native_arg(s: str) -> str:
    """Write ``s`` as an argument to a native program (``accelerate.exe``) in a ``.ps1`` script.

    The program receives exactly ``s`` on Windows PowerShell 5.1 and on PowerShell 7.x, whatever
    ``$PSNativeCommandArgumentPassing`` says (see the module docstring for the rules). A value that
    cannot be passed that way under every version is refused rather than mangled.

    Args:
        s: The exact string the program should receive.

    Returns:
        A bare word for plain flags, names and paths (``--config_file``, ``config.toml``,
        ``C:\\sd-scripts\\train_network.py``); otherwise a single-quoted literal, as
        :func:`powershell_quote` returns.

    Raises:
        QuotingError: ``s`` has a double quote, is empty, ends with a backslash although it has
            whitespace, is exactly ``--%``, or contains NUL or an unpaired surrogate. The message
            names the character and the fix. It is a ValueError.
    """
    _reject_nul(s, "no command-line argument can contain", "remove it from the value")
    _reject_surrogates(s, "cannot be written into a UTF-8 PowerShell script")
    via_config = "or set the value in the recipe so that it goes into config.toml, not on the command line"
    quote_at = s.find('"')
    if quote_at >= 0:
        raise QuotingError(
            s,
            f"contains {_describe(s[quote_at])} at position {quote_at}, which Windows PowerShell 5.1 does "
            "not escape when it starts a program, so the program would lose it or split the argument there",
            f"rename the folder or file so that its name has no double quote, {via_config}",
        )
    if not s:
        raise QuotingError(
            s,
            "is empty, and Windows PowerShell 5.1 leaves empty arguments out of the command line",
            "give the option a value or leave the option out",
        )
    if s == "--%":
        raise QuotingError(
            s,
            "is PowerShell's stop-parsing token, which PowerShell keeps for itself instead of passing it on",
            "set the value in the recipe so that it goes into config.toml, not on the command line",
        )
    if s.endswith("\\") and _first_index(s, _legacy_whitespace) is not None:
        raise QuotingError(
            s,
            f"ends with {_describe(s[-1])} and has whitespace, so Windows PowerShell 5.1 passes it as "
            '"...\\" and the program reads a double quote instead of the backslash',
            f"remove the trailing backslash (C:\\my data\\ becomes C:\\my data), {via_config}",
        )
    if _PS_NATIVE_BARE.fullmatch(s):
        return s
    return powershell_quote(s)


# TOML escapes with a short form; every other control character is written \uXXXX.
_TOML_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_is_control(ch: str) -> bool:
    # TOML forbids U+0000..U+001F (tab aside) and U+007F raw in a basic string.
    return ch < " " or ch == "\x7f"


def toml_basic_string(s: str) -> str:
    """Write ``s`` as a TOML string literal that ``tomllib`` and ``toml`` 0.10.2 both read as ``s``.

    The result is a basic string (``"..."``): ``"`` and ``\\`` are escaped, newline, tab, CR,
    backspace and form feed use their short escapes, and other control characters (U+0000 to
    U+001F, U+007F) are written ``\\uXXXX``. Non-ASCII text is kept as it is; the file must be
    written as UTF-8, which is what kohya reads. Three workarounds for the ``toml`` package, which
    kohya uses, are described in the module docstring; one of them makes the result a multi-line
    (triple-quoted) basic string for values that are ``"`` or start with ``""``.

    Args:
        s: The exact string kohya should read.

    Returns:
        A TOML string literal, usable as a value, in an array or in an inline table.

    Raises:
        QuotingError: ``s`` contains an unpaired surrogate, which TOML (UTF-8) cannot hold.
    """
    _reject_surrogates(s, "cannot be written into a UTF-8 TOML file")
    pieces: list[str] = []
    last_visible = ""  # the nearest character before this one that is not whitespace
    for index, ch in enumerate(s):
        if ch in _TOML_SHORT_ESCAPES:
            pieces.append(_TOML_SHORT_ESCAPES[ch])
        elif _toml_is_control(ch):
            pieces.append(f"\\u{ord(ch):04X}")
        elif ch in "uU" and index > 0 and s[index - 1] == "\\":
            # toml 0.10.2 decodes \u escapes before it unescapes \\, and loses count of real
            # backslashes after the first \u escape: keep "\\u" out of the output.
            pieces.append(f"\\u{ord(ch):04X}")
        elif ch == "," and last_visible in ("", '"'):
            # toml 0.10.2 splits arrays and inline tables on every comma, then glues the pieces
            # back until each looks like a whole string; `"` alone, or `"...\\"` in an inline
            # table, already does. An escaped comma is not a place to split.
            pieces.append("\\u002C")
        else:
            pieces.append(ch)
        if not ch.isspace():
            last_visible = ch
    body = "".join(pieces)
    if s == '"' or s.startswith('""'):
        # toml 0.10.2 takes any string whose value starts with two quotes for a """ string and
        # strips two more characters from each end; a real """ string survives that.
        return f'"""{body}"""'
    return f'"{body}"'
