"""The kohya training launch in a bash, PowerShell or ``.bat`` script: its argv, then its options.

Each shell is read by its own rules, resolving the variables the script sets before the launch:

- bash (:func:`bash_words`): ``\\`` line continuations, quotes, comments, ``NAME=value`` and
  ``export NAME=value``, arrays ``NAME=(...)`` / ``NAME+=(...)`` and ``"${NAME[@]}"``, ``$NAME``,
  ``${NAME}``, ``${NAME:-default}`` and ``$(dirname "$0")``; statements run in order. ``if``/``elif``/``else``
  run the branch their ``[ ... ]``/``[[ ... ]]``/``test`` condition takes (``=``, ``==``, ``!=``,
  ``-z``, ``-n``, ``-eq``... and ``!``, on what the script sets; a variable it does not set is
  empty, so a script's fallbacks win over what the environment does not say); a branch on a
  condition it cannot tell (a command's exit status, a file test) runs, as if taken.
- PowerShell (:mod:`lorabuild.importer.powershell`): the tree-sitter PowerShell grammar.
- ``.bat`` (:func:`bat_words`): ``^`` continuations, ``REM``/``::`` comments, ``set NAME=value``,
  ``%NAME%`` and ``%~dp0``.

The launch is the first command with a word naming kohya's ``*train_network.py``: the words before
it are ``accelerate launch``'s (or ``python``'s), the words after it kohya's flags, read with the
script's option table (:func:`parse_flags`). Paths are relative to the script's folder (the
scripts lorabuild writes, and most others, ``cd`` there first).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

from lorabuild.importer.model import ENV_WORD, Imported, ImportFailed, is_secret
from lorabuild.kohya import families
from lorabuild.kohya import options as kohya_options

SHELLS = frozenset({".sh", ".bash", ".ps1", ".bat", ".cmd"})
"""The script suffixes :func:`read_script` reads."""

_TRAINER = re.compile(r"(?:^|[\\/])([A-Za-z0-9_]*train[A-Za-z0-9_]*\.py)$")
_LORA_SCRIPTS = frozenset(f.train_script for f in families.ALL) | {
    s for s in kohya_options.SCRIPTS if s.endswith("_train_network.py")
}


@dataclass
class Launch:
    """A kohya training launch.

    Attributes:
        script: The training script's file name (``flux_train_network.py``).
        options: kohya's options from its flags (``config_file``/``dataset_config`` included), typed
            by the script's option table.
        accelerate: ``accelerate launch``'s own options before the script (flags as True).
    """

    script: str
    options: dict[str, object] = field(default_factory=dict)
    accelerate: dict[str, str | bool] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def read_script(path: Path) -> Launch:
    """The training launch in the script at ``path``.

    Raises:
        ImportFailed: The file is not text, or holds no kohya LoRA training launch.
    """
    name = path.as_posix()
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFailed(name, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    suffix = path.suffix.lower()
    folder = str(path.parent) or "."
    if suffix == ".ps1":
        from lorabuild.importer import powershell  # lazy: the grammar (tree-sitter) only for a .ps1

        commands: Iterator[list[str]] = powershell.commands(text, folder)
    elif suffix in (".bat", ".cmd"):
        commands = bat_words(text, folder)
    else:
        commands = bash_words(text, folder)
    env: dict[str, str] = {}
    for words in commands:
        if words and words[0] == ENV_WORD:
            env[words[1]] = words[2]
            continue
        launch = launch_from_words(words, name)
        if launch is not None:
            launch.env = env
            return launch
    raise ImportFailed(name, "has no kohya LoRA training launch (no command runs a *train_network.py script)")


def launch_from_words(words: Sequence[str], source: str) -> Launch | None:
    """The launch in one command's words, or None when it runs no kohya trainer."""
    for index, word in enumerate(words):
        match = _TRAINER.search(word.strip())
        if not match:
            continue
        script = match.group(1)
        if script not in _LORA_SCRIPTS:
            raise ImportFailed(
                source,
                f"runs kohya's {script}, which does not train a LoRA: lorabuild imports "
                f"{', '.join(sorted({f.train_script for f in families.ALL}))} launches",
            )
        if script not in kohya_options.SCRIPTS:
            return Launch(script=script)
        launch = Launch(script=script, options=parse_flags(words[index + 1 :], script))
        launch.accelerate = _accelerate_flags(words[:index])
        return launch
    return None


def parse_flags(words: Sequence[str], script: str) -> dict[str, object]:
    """kohya's flags (``--name value``, ``--name=value``, ``--flag``, ``--list a b``) as typed options."""
    known = kohya_options.options(script)
    by_string = {s: spec for spec in known.values() for s in spec.option_strings}
    options: dict[str, object] = {}
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("-"):
            continue  # a stray word: argparse would stop on it; nothing to import
        flag, eq, inline = word.partition("=")
        spec = by_string.get(flag)
        name = spec.name if spec else flag.lstrip("-").replace("-", "_")
        values: list[str] = [inline] if eq else []
        if not eq and (spec is None or spec.kind != "flag"):
            while index < len(words) and not _is_flag(words[index]):
                values.append(words[index])
                index += 1
                if spec is None or spec.kind == "value":
                    break
        if spec is not None and spec.kind == "flag":
            options[name] = True
        elif spec is not None and spec.kind == "list":
            options[name] = [_typed(v, spec.type) for v in values]
        elif values:
            options[name] = _typed(values[0], spec.type if spec else "str")
        else:
            options[name] = True
    return options


def _is_flag(word: str) -> bool:
    return word.startswith("--") or (word.startswith("-") and not _is_number(word))


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _typed(text: str, kind: str) -> object:
    """A command-line value as kohya's argparse type converts it."""
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "int_or_float":
            return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text
    if kind == "bool":
        return text.lower() in ("1", "true", "yes")
    return text


def _accelerate_flags(words: Sequence[str]) -> dict[str, str | bool]:
    """``accelerate launch``'s options among the words before the script (``python`` has none we keep)."""
    if not any(w in ("launch", "accelerate.commands.launch") or w.endswith("accelerate") for w in words):
        return {}
    found: dict[str, str | bool] = {}
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("--"):
            continue
        flag, eq, inline = word.partition("=")
        name = flag[2:].replace("-", "_")
        if eq:
            found[name] = inline
        elif index < len(words) and not words[index].startswith("-") and not _TRAINER.search(words[index]):
            found[name] = words[index]
            index += 1
        else:
            found[name] = True
    return found


# accelerate options lorabuild writes itself from the recipe (kohya/launch.py, plan.launch_spec).
_MANAGED_ACCELERATE = frozenset(
    {"num_processes", "num_machines", "mixed_precision", "dynamo_backend", "multi_gpu"}
)


def env_keys(imp: Imported, env: Mapping[str, str]) -> None:
    """The environment a script sets for the trainer as ``launch.env`` (lorabuild's own settings left out)."""
    for name, value in env.items():
        if name.startswith("LORABUILD_"):
            continue
        if is_secret(name):
            imp.secret(name)
            continue
        imp.set(f"launch.env.{name}", value)


def accelerate_keys(imp: Imported, accelerate: Mapping[str, str | bool]) -> None:
    """``accelerate launch``'s options as ``[launch]`` keys."""
    for name, value in accelerate.items():
        if name == "num_cpu_threads_per_process" and isinstance(value, str) and value.isdigit():
            if int(value) != 2:
                imp.set("launch.num_cpu_threads_per_process", int(value))
        elif name == "gpu_ids" and isinstance(value, str) and value not in ("all", ""):
            imp.set("launch.gpus", [int(i) for i in value.split(",") if i.strip().isdigit()])
        elif name == "num_processes" and isinstance(value, str) and value.isdigit() and int(value) > 1:
            imp.set("launch.gpus", int(value))
        elif name == "main_process_port" and isinstance(value, str) and value.isdigit():
            imp.set("launch.main_process_port", int(value))
        elif name in _MANAGED_ACCELERATE or name == "config_file":
            if name == "config_file":
                imp.unrepresentable(
                    "accelerate --config_file", f"{value!r}: lorabuild passes accelerate's options itself"
                )
        else:
            imp.set(f"launch.accelerate_args.{name}", value)


# --- bash -----------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?:\[@\]|\[\*\])?(?::?-([^}]*))?\}|\$(\w+)")


def bash_words(text: str, folder: str) -> Iterator[list[str]]:
    """Each simple command of a bash script as words, its variables resolved (in order of the script)."""
    text = text.replace("\\\r\n", " ").replace("\\\n", " ")
    # The script's own folder: the one command substitution launch scripts use (cd "$(dirname "$0")").
    text = re.sub(r'\$\(\s*dirname\s+"?\$\{?0\}?"?\s*\)', lambda _: folder.replace("\\", "/"), text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    scope: dict[str, list[str]] = {"0": [f"{folder}/script"]}
    branches: list[_Branch] = []
    statement: list[str] = []
    array: tuple[str, bool] | None = None
    collected: list[str] = []
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise ImportFailed(folder, f"cannot be read as a shell script: {exc}") from None
    for token in tokens:
        if array is not None:
            if ")" in token and not token.strip(")\n"):
                name, append = array
                scope[name] = [*(scope.get(name, []) if append else []), *collected]
                array, collected = None, []
            elif token.strip("\n"):
                collected.extend(_expand_bash(token, scope, folder))
            continue
        if token and all(c in ";&|()\n" for c in token):
            if "(" in token and statement and statement[-1].endswith("="):
                word = statement.pop()
                array = (word[:-1].rstrip("+"), word.endswith("+="))
                continue
            yield from _bash_statement(statement, scope, folder, branches)
            statement = []
            continue
        statement.append(token)
    yield from _bash_statement(statement, scope, folder, branches)


@dataclass
class _Branch:
    """An ``if`` being read: whether the code around it runs, a branch was taken, the current one runs."""

    outer: bool
    taken: bool = False
    running: bool = False

    def enter(self, truth: bool | None) -> None:
        """Start the branch of an ``if``/``elif`` whose condition is ``truth`` (None: cannot tell)."""
        self.running = self.outer and not self.taken and truth is not False
        self.taken = self.taken or (self.running and truth is True)


def _bash_statement(
    words: list[str], scope: dict[str, list[str]], folder: str, branches: list[_Branch]
) -> Iterator[list[str]]:
    while words and words[0] in (
        "exec",
        "then",
        "do",
        "time",
        "nohup",
        "command",
        "if",
        "elif",
        "else",
        "fi",
    ):
        keyword, words = words[0], words[1:]
        running = not branches or branches[-1].running
        if keyword == "if":
            branches.append(_Branch(outer=running))
            branches[-1].enter(_bash_test(words, scope, folder) if running else False)
            return
        if keyword == "elif" and branches:
            branches[-1].enter(_bash_test(words, scope, folder) if branches[-1].outer else False)
            return
        if keyword == "else" and branches:
            branches[-1].enter(True)
        elif keyword == "fi" and branches:
            branches.pop()
    if not words or (branches and not branches[-1].running):
        return
    exported = words[0] == "export"
    if words[0] in ("export", "local", "declare", "readonly"):
        words = [w for w in words[1:] if not w.startswith("-")]
        if not all("=" in w for w in words):
            return
    if all(re.match(r"^\w+=", w) for w in words):
        for word in words:
            name, _, value = word.partition("=")
            scope[name] = [" ".join(_expand_bash(value, scope, folder))]
            if exported:
                yield [ENV_WORD, name, scope[name][0]]
        return
    expanded: list[str] = []
    for word in words:
        expanded.extend(_expand_bash(word, scope, folder))
    yield expanded


def _bash_test(words: list[str], scope: Mapping[str, list[str]], folder: str) -> bool | None:
    """The truth of an ``if`` condition, or None when it is not a test on strings or numbers the script sets."""
    if words[:1] == ["test"]:
        words = words[1:]
    elif len(words) >= 2 and (words[0], words[-1]) in (("[", "]"), ("[[", "]]")):
        words = words[1:-1]
    else:
        return None
    negate = words[:1] == ["!"]
    args = [" ".join(_expand_bash(w, scope, folder)) for w in words[negate:]]
    truth: bool | None = None
    if len(args) == 2 and args[0] in ("-z", "-n"):
        truth = (args[1] == "") == (args[0] == "-z")
    elif len(args) == 3 and args[1] in ("=", "==", "!="):
        truth = (args[0] == args[2]) == (args[1] != "!=")
    elif len(args) == 3 and args[1] in _NUMERIC_TESTS:
        try:
            truth = _NUMERIC_TESTS[args[1]](int(args[0]), int(args[2]))
        except ValueError:
            return None
    elif len(args) == 1:
        truth = args[0] != ""
    return None if truth is None else truth != negate


_NUMERIC_TESTS: dict[str, Callable[[int, int], bool]] = {
    "-eq": lambda a, b: a == b,
    "-ne": lambda a, b: a != b,
    "-gt": lambda a, b: a > b,
    "-ge": lambda a, b: a >= b,
    "-lt": lambda a, b: a < b,
    "-le": lambda a, b: a <= b,
}


def _expand_bash(word: str, scope: Mapping[str, list[str]], folder: str) -> list[str]:
    """A word with its variables resolved; an array's ``${NAME[@]}`` alone is its items."""
    word = re.sub(r"\$\(\s*dirname\s+\$\{?0\}?\s*\)", folder, word)
    whole = re.fullmatch(r"\$\{(\w+)\[@\]\}|\$(\w+)", word)
    if whole:
        name = whole.group(1) or whole.group(2)
        items = scope.get(name)
        if items is not None and (whole.group(1) or len(items) == 1):
            return list(items)

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        items = scope.get(name)
        if items is None or items == [""]:
            default = match.group(2)
            return default if default is not None else ""
        return " ".join(items)

    return [_VAR.sub(value, word)]


# --- .bat -----------------------------------------------------------------------------------------


def bat_words(text: str, folder: str) -> Iterator[list[str]]:
    """Each command of a ``.bat`` file as words, ``set`` variables and ``%~dp0`` resolved."""
    scope: dict[str, str] = {"~dp0": str(PureWindowsPath(folder)) + "\\"}
    text = re.sub(r"\^\r?\n", " ", text)
    for raw in text.splitlines():
        line = raw.strip().lstrip("@")
        if not line or re.match(r"(?i)^(rem\b|::)", line):
            continue
        line = re.sub(r"%(~dp0|\w+)%", lambda m: scope.get(m.group(1).lower(), m.group(0)), line)
        setting = re.match(r'(?i)^set\s+"?(\w+)=(.*?)"?$', line)
        if setting:
            scope[setting.group(1).lower()] = setting.group(2)
            continue
        lexer = shlex.shlex(line, posix=True)
        lexer.whitespace_split = True
        lexer.escape = ""
        lexer.quotes = '"'
        lexer.commenters = ""
        try:
            words = list(lexer)
        except ValueError:
            continue
        if words and words[0].lower() == "call":
            words = words[1:]
        if words:
            yield words
