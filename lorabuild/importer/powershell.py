"""A PowerShell script's commands as words, read with the tree-sitter PowerShell grammar.

The grammar (PyPI ``tree-sitter-powershell``) parses the script; :func:`commands` walks its
statements in order with a scope of the variables set so far, and evaluates what launch scripts
compute their arguments with: string literals (single-quoted by PowerShell's rules, double-quoted
with ``$var``, ``${var}``, ``$env:NAME`` and backtick escapes), numbers, ``$true``/``$false``/``$null``,
``$PSScriptRoot``, arrays (``@(...)``, ``a, b``), hashtables, ``+`` and ``+=``, ``Join-Path``,
``[System.Collections.ArrayList]::new()`` with ``.Add(...)``, and ``if``/``elseif``/``else`` on
those values. A command's arguments are its words: an array variable gives each item, and
``@name`` splats an array (a hashtable splats ``-key value`` pairs, as PowerShell passes them).

The grammar does not know native arguments of the form ``--name=value`` (PowerShell passes such
a word as it is; the grammar reports an ERROR there): the statement under an ERROR node is read
with PowerShell's argument-mode rules instead (:func:`_argument_words`): words split at
whitespace outside quotes, backtick escapes, quotes removed, variables expanded.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import tree_sitter
import tree_sitter_powershell

from lorabuild.importer.model import ENV_WORD

Node = Any  # tree_sitter.Node: the package's types are not checked by mypy here

_SEPARATORS = "/\\"
_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


class _Unknown(Exception):
    """An expression this reader cannot evaluate."""


@functools.cache
def _parser() -> Any:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def commands(text: str, folder: str) -> Iterator[list[str]]:
    """Each command the script runs, as words, in order, with the variables set before it."""
    source = text.encode("utf-8")
    tree = _parser().parse(source)
    walker = _Walker(source, {"psscriptroot": folder, "true": True, "false": False, "null": None})
    yield from walker.statements(tree.root_node)


class _Walker:
    def __init__(self, source: bytes, scope: dict[str, Any]):
        self.source = source
        self.scope = scope

    def text(self, node: Node) -> str:
        return self.source[node.start_byte : node.end_byte].decode("utf-8")

    # --- statements -------------------------------------------------------------------------

    def statements(self, node: Node) -> Iterator[list[str]]:
        skip_to = -1
        for child in node.named_children:
            if child.start_byte < skip_to:
                continue  # read with the ERROR's logical line
            if child.type in ("statement_list", "program"):
                yield from self.statements(child)
                continue
            if child.type == "ERROR" or _has_error(child):
                # The grammar gave up inside this statement: read its whole logical line (to a line
                # end without a backtick before it) by PowerShell's argument-mode rules.
                skip_to = _logical_line_end(self.source, child.start_byte)
                words = _argument_words(self.source[child.start_byte : skip_to].decode("utf-8"), self.scope)
                if words:
                    yield words
                continue
            yield from self.statement(child)

    def statement(self, node: Node) -> Iterator[list[str]]:
        kind = node.type
        if kind in ("statement_list", "program", "statement_block", "pipeline", "pipeline_chain"):
            if kind in ("pipeline", "pipeline_chain") and len(node.named_children) == 1:
                yield from self.statement(node.named_children[0])
            elif kind in ("pipeline", "pipeline_chain"):
                yield from self.expression_statement(node)
            else:
                yield from self.statements(node)
        elif kind == "if_statement":
            yield from self.if_statement(node)
        elif kind == "assignment_expression":
            yield from self.assign(node)
        elif kind == "command":
            command = self.command(node)
            if command is not None:
                yield command
        else:
            yield from self.expression_statement(node)

    def expression_statement(self, node: Node) -> Iterator[list[str]]:
        for sub in self._walk(node):
            if sub.type == "assignment_expression":
                yield from self.assign(sub)
                return
            if sub.type == "command":
                words = self.command(sub)
                if words is not None:
                    yield words
                return
            if sub.type == "invokation_expression":
                self.invoke(sub)
                return

    def _walk(self, node: Node) -> Iterator[Node]:
        yield node
        for child in node.named_children:
            yield from self._walk(child)

    def if_statement(self, node: Node) -> Iterator[list[str]]:
        clauses: list[tuple[Node | None, Node]] = []
        condition = block = None
        for child in node.children:
            if child.type == "statement_block":
                block = child
                clauses.append((condition, block))
            elif child.type in ("elseif_clauses", "elseif_clause"):  # the grammar groups them
                for clause in [child] if child.type == "elseif_clause" else child.named_children:
                    inner = clause.named_children
                    clauses.append((inner[0], inner[-1]))
            elif child.type == "else_clause":
                clauses.append((None, child.named_children[-1]))
            elif child.is_named and block is None:
                condition = child
        for index, (cond, body) in enumerate(clauses):
            if cond is None and index > 0:
                yield from self.statements(body)
                return
            try:
                truth = bool(self.value(cond)) if cond is not None else False
            except _Unknown:
                return  # a condition on what the script cannot tell: neither branch is read
            if truth:
                yield from self.statements(body)
                return

    def assign(self, node: Node) -> Iterator[list[str]]:
        # A comment after the value ($a = 1 # note) is the statement's last named child.
        named = [c for c in node.named_children if c.type != "comment"]
        left, op, right = named[0], named[1], named[-1]
        name = self.text(left).lstrip("$").lower()
        if name.startswith("env:"):
            with contextlib.suppress(_Unknown):
                yield [ENV_WORD, self.text(left)[5:], _word(self.value(right))]
            return
        try:
            value = self.value(right)
        except _Unknown:
            self.scope.pop(name, None)
            return
        if self.text(op).strip() == "+=":
            value = _plus(self.scope.get(name), value)
        self.scope[name] = value

    def invoke(self, node: Node) -> None:
        """``$list.Add(value)`` on an array list (the one method launch scripts build arguments with)."""
        named = node.named_children
        if len(named) >= 3 and named[0].type == "variable" and self.text(named[1]).lower() == "add":
            target = self.scope.get(self.text(named[0]).lstrip("$").lower())
            if isinstance(target, list):
                args = named[2].named_children
                with contextlib.suppress(_Unknown):
                    target.extend(self.value(a) for a in (args[0].named_children if args else []))

    def command(self, node: Node) -> list[str] | None:
        words: list[str] = []
        for child in node.named_children:
            if child.type == "command_invokation_operator":
                continue
            if child.type in ("command_name", "command_name_expr"):
                try:
                    words.append(
                        _word(self.value(child) if child.type == "command_name_expr" else self.text(child))
                    )
                except _Unknown:
                    return None
                if _word(words[-1]).lower() == "join-path":
                    return None
            elif child.type == "command_elements":
                for element in child.named_children:
                    if element.type == "command_argument_sep":
                        continue
                    words.extend(self.argument(element))
        return words

    def argument(self, node: Node) -> list[str]:
        text = self.text(node)
        if node.type in ("command_parameter", "generic_token"):
            return [text]
        if node.type == "variable" and text.startswith("@"):
            value = self.scope.get(text[1:].lower())
            if isinstance(value, Mapping):
                return [w for k, v in value.items() for w in (f"-{k}", _word(v))]
            return (
                [_word(v) for v in value]
                if isinstance(value, list)
                else []
                if value is None
                else [_word(value)]
            )
        try:
            value = self.value(node)
        except _Unknown:
            return [text]
        if isinstance(value, list):
            return [_word(v) for v in value]
        return [] if value is None else [_word(value)]

    # --- expressions -------------------------------------------------------------------------

    def value(self, node: Node) -> Any:
        kind = node.type
        named = node.named_children
        if kind == "string_literal":
            return (
                self.value(named[0])
                if named and named[0].type != "variable"
                else self.string(self.text(node))
            )
        if kind in ("verbatim_string_characters", "expandable_string_literal"):
            return self.string(self.text(node))
        if kind == "variable":
            return self.variable(self.text(node))
        if kind == "decimal_integer_literal":
            return int(self.text(node).rstrip("lL"))
        if kind == "real_literal":
            return float(self.text(node))
        if kind in ("generic_token", "command_name", "simple_name"):
            return self.text(node)
        if kind == "array_expression":
            items: list[Any] = []
            for statement in named:
                for sub in statement.named_children if statement.type == "statement_list" else [statement]:
                    value = self.value(sub)
                    items.extend(value if isinstance(value, list) else [value])
            return items
        if kind == "array_literal_expression" and len(named) > 1:
            return [self.value(n) for n in named]
        if kind == "hash_literal_expression":
            body = named[0].named_children if named else []
            return {self.text(e.named_children[0]): self.value(e.named_children[-1]) for e in body}
        if kind == "additive_expression" and len(named) == 2:
            op = self.text(node)[
                named[0].end_byte - node.start_byte : named[1].start_byte - node.start_byte
            ].strip()
            if op == "+":
                return _plus(self.value(named[0]), self.value(named[1]))
        if kind == "comparison_expression" and len(named) == 3:
            return _compare(self.text(named[1]).lower(), self.value(named[0]), self.value(named[2]))
        if kind == "expression_with_unary_operator" and named:
            op = self.text(node).split()[0].lower() if self.text(node) else ""
            if op in ("-not", "!") or self.text(node).startswith("!"):
                return not self.value(named[-1])
            if self.text(node).startswith("[void]") or named[0].type == "cast_expression":
                return self.value(named[-1])
        if kind == "invokation_expression" and self.text(node).replace(" ", "").lower().endswith(
            "arraylist]::new()"
        ):
            return []
        if kind == "command" and named and self.text(named[0]).lower() == "join-path":
            parts = [self.value(e) for e in named[1].named_children if e.type != "command_argument_sep"]
            if len(parts) == 2:
                return f"{str(parts[0]).rstrip(_SEPARATORS)}/{str(parts[1]).lstrip(_SEPARATORS)}"
        if len(named) == 1:
            return self.value(named[0])
        raise _Unknown(self.text(node))

    def variable(self, text: str) -> Any:
        # As PowerShell does (outside strict mode), a variable never set is $null; so is an
        # environment variable: the script's own fallbacks then apply, as on a machine without it.
        return self.scope.get(text.lstrip("$@").strip("{}").lower())

    def string(self, literal: str) -> str:
        if literal and literal[0] in _SINGLE_QUOTES:
            body = literal[1:-1]
            return re.sub(f"([{_SINGLE_QUOTES}])[{_SINGLE_QUOTES}]", r"\1", body)
        if literal.startswith('"') and literal.endswith('"'):
            return _expand(literal[1:-1], self.scope)
        return literal


def _expand(body: str, scope: Mapping[str, Any]) -> str:
    """A double-quoted string's text: backtick escapes, ``""``, and variables expanded."""
    out: list[str] = []
    index = 0
    while index < len(body):
        ch = body[index]
        if ch == "`" and index + 1 < len(body):
            nxt = body[index + 1]
            out.append(_ESCAPES.get(nxt, nxt))
            index += 2
            continue
        if ch == '"' and body[index + 1 : index + 2] == '"':
            out.append('"')
            index += 2
            continue
        if ch == "$":
            match = re.match(r"\$\{([^}]+)\}|\$((?:env:)?\w+)", body[index:])
            if match:
                value = scope.get((match.group(1) or match.group(2)).lower())
                out.append("" if value is None else _word(value))
                index += match.end()
                continue
        out.append(ch)
        index += 1
    return "".join(out)


def _has_error(node: Node) -> bool:
    """Whether a statement holds an ERROR node outside its nested blocks (those are walked on their own)."""
    if node.type == "ERROR":
        return True
    return any(_has_error(c) for c in node.children if c.type not in ("statement_block", "script_block"))


def _logical_line_end(source: bytes, start: int) -> int:
    """Where the logical line from ``start`` ends: the first line end not escaped by a backtick."""
    index = start
    quote: int | None = None
    while index < len(source):
        ch = source[index]
        if quote is not None:
            if ch == quote:
                quote = None
            elif ch == ord("`") and quote == ord('"'):
                index += 1
        elif ch in (ord("'"), ord('"')):
            quote = ch
        elif ch == ord("`"):
            index += 1
        elif ch == ord("\n"):
            return index
        index += 1
    return len(source)


def _argument_words(text: str, scope: Mapping[str, Any]) -> list[str]:
    """A command's words by PowerShell's argument-mode rules (for what the grammar does not parse)."""
    words: list[str] = []
    text = re.sub(r"`\r?\n", " ", text)
    pattern = re.compile(r"""(?:'(?:[^']|'')*'|"(?:[^"`]|`.|"")*"|`.|[^\s'"`])+""")
    for match in pattern.finditer(text):
        token = match.group(0)
        if token.startswith("#"):
            break
        if token.startswith("@") and token[1:].lower() in scope:
            value = scope[token[1:].lower()]
            words.extend(_word(v) for v in (value if isinstance(value, list) else [value]))
            continue
        if re.fullmatch(r"\$\w+", token) and isinstance(scope.get(token[1:].lower()), list):
            words.extend(_word(v) for v in scope[token[1:].lower()])
            continue
        parts = re.findall(r"""'((?:[^']|'')*)'|"((?:[^"`]|`.|"")*)"|(`.|[^'"`]+)""", token)
        word: list[str] = []
        for single, double, bare in parts:
            try:
                if single or (not double and not bare):
                    word.append(single.replace("''", "'"))
                elif double:
                    word.append(_expand(double, scope))
                else:
                    word.append(_expand(bare, scope))
            except _Unknown:
                word.append(single or double or bare)
        words.append("".join(word))
    return words


def _word(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _plus(left: Any, right: Any) -> Any:
    if isinstance(left, list):
        return [*left, *(right if isinstance(right, list) else [right])]
    if left is None:
        return right
    if isinstance(left, str):
        return left + _word(right)
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left + right
    raise _Unknown(f"{left!r} + {right!r}")


def _compare(op: str, left: Any, right: Any) -> bool:
    if op in ("-eq", "-ieq", "-ceq"):
        return bool(left == right or _word(left).lower() == _word(right).lower())
    if op in ("-ne", "-ine", "-cne"):
        return not (left == right or _word(left).lower() == _word(right).lower())
    try:
        a, b = float(left), float(right)
    except (TypeError, ValueError):
        raise _Unknown(op) from None
    return {"-gt": a > b, "-ge": a >= b, "-lt": a < b, "-le": a <= b}.get(op, False)
