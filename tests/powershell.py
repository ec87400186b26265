"""PowerShell without PowerShell: a real grammar, PowerShell's line-comment rule and a Join-Path model.

There is no ``pwsh`` on the machines that run these tests, so generated ``.ps1`` files are checked
three ways:

* parsed with the tree-sitter PowerShell grammar (PyPI ``tree-sitter-powershell``): no ERROR or
  MISSING node, and the comments and statements it finds are the ones the template wrote;
* against a model of where PowerShell ends a line comment: at ``\\r`` or ``\\n``, nothing else
  (``ScanToEndOfCommentLine`` in ``src/System.Management.Automation/engine/parser/tokenizer.cs``
  switches on ``'\\r'`` and ``'\\n'`` and reads every other character, U+0085, U+2028 and U+2029
  included, into the comment). ``test_grammar_ends_a_line_comment_where_powershell_does``
  checks the grammar against that rule (in ``tests/test_script_injection.py``), so the two agree
  on the files the tests parse;
* by evaluating the few expressions that compute a path (string literals, ``$PSScriptRoot``,
  ``$Build.Folder``, ``Join-Path``) with :func:`join_path`, a model of ``Join-Path`` on Windows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

# The characters PowerShell's tokenizer accepts as single quotes (CharTraits.IsSingleQuote):
# ' and the typographic U+2018 left, U+2019 right, U+201A low-9, U+201B high-reversed-9.
PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def read_ps_single_quoted(text: str) -> tuple[str, str]:
    """Read the single-quoted literal at the start of ``text``; return (value, what follows).

    Follows the tokenizer's ScanStringLiteral: any quote character followed by another quote
    character stands for the second one; a lone quote character ends the string.
    """
    assert text and text[0] in PS_SINGLE_QUOTES, f"not a single-quoted literal: {text!r}"
    value: list[str] = []
    index = 1
    while index < len(text):
        ch = text[index]
        if ch in PS_SINGLE_QUOTES:
            if index + 1 < len(text) and text[index + 1] in PS_SINGLE_QUOTES:
                value.append(text[index + 1])
                index += 2
                continue
            return "".join(value), text[index + 1 :]
        value.append(ch)
        index += 1
    raise AssertionError(f"unterminated literal: {text!r}")


@functools.cache
def _parser() -> Any:
    """The tree-sitter parser for PowerShell; skips the calling test when the packages are missing."""
    why = "is not installed (it is in the test extra: pip install -e '.[test]')"
    tree_sitter = pytest.importorskip("tree_sitter", reason=f"tree-sitter {why}")
    grammar = pytest.importorskip("tree_sitter_powershell", reason=f"tree-sitter-powershell {why}")
    return tree_sitter.Parser(tree_sitter.Language(grammar.language()))


# What ends a line comment in PowerShell's tokenizer (ScanToEndOfCommentLine), and nothing else.
LINE_COMMENT_ENDS = "\r\n"

Node = Any  # tree_sitter.Node (the package has no stubs for mypy's strict mode)


class Script:
    """A parsed ``.ps1`` (the text as PowerShell reads it: without the UTF-8 byte-order mark)."""

    def __init__(self, data: bytes):
        self.source = data.removeprefix(b"\xef\xbb\xbf")
        self.tree = _parser().parse(self.source)
        self.root: Node = self.tree.root_node

    def text(self, node: Node) -> str:
        return self.source[node.start_byte : node.end_byte].decode("utf-8")

    def nodes(self, node: Node | None = None) -> Iterator[Node]:
        node = self.root if node is None else node
        yield node
        for child in node.children:
            yield from self.nodes(child)

    def errors(self) -> list[str]:
        """The text at every ERROR or MISSING node: empty when the grammar parses the whole file."""
        return [self.text(n) or n.type for n in self.nodes() if n.type == "ERROR" or n.is_missing]

    def comments(self) -> list[str]:
        return [self.text(n) for n in self.nodes() if n.type == "comment"]

    def code(self) -> str:
        """The file without its comments: what PowerShell runs."""
        kept, at = [], 0
        for node in self.nodes():
            if node.type == "comment":
                kept.append(self.source[at : node.start_byte])
                at = node.end_byte
        kept.append(self.source[at:])
        return b"".join(kept).decode("utf-8")

    def comments_follow_the_line_comment_rule(self) -> None:
        """Each comment node is a line comment that ends where PowerShell's tokenizer ends it."""
        source = self.source.decode("utf-8")
        for node in self.nodes():
            if node.type != "comment":
                continue
            text = self.text(node)
            assert text.startswith("#") and not text.startswith("<#"), text
            start = len(self.source[: node.start_byte].decode("utf-8"))
            assert text == line_comment_at(source, start), (text, line_comment_at(source, start))

    def assignments(self, variable: str, within: Node | None = None) -> list[Node]:
        """The right-hand sides of ``$variable = ...`` under ``within`` (the whole file by default)."""
        found = []
        for node in self.nodes(within):
            if node.type == "assignment_expression":
                left, *_, right = node.named_children
                if self.text(left) == variable:
                    found.append(right)
        return found

    def evaluate(self, node: Node, scope: Mapping[str, Any]) -> Any:
        """The value of the small expressions the templates compute paths with.

        String literals (single-quoted, read by PowerShell's rules), variables in ``scope``, member
        access (``$Build.Folder``), hashtable and array literals, parentheses and ``Join-Path A B``
        (:func:`join_path`); anything else fails the test.
        """
        named = node.named_children
        kind = node.type
        if kind == "string_literal":
            value, rest = read_ps_single_quoted(self.text(node))
            assert rest == "", self.text(node)
            return value
        if kind == "variable":
            return scope[self.text(node)]
        if kind == "member_access":
            return self.evaluate(named[0], scope)[self.text(named[-1])]
        if kind == "command":
            name, elements = named
            args = [
                self.evaluate(e, scope) for e in elements.named_children if e.type != "command_argument_sep"
            ]
            assert self.text(name) == "Join-Path" and len(args) == 2, self.text(node)
            return join_path(*args)
        if kind == "hash_literal_expression":
            entries = named[0].named_children if named else []
            return {
                self.text(e.named_children[0]): self.evaluate(e.named_children[-1], scope) for e in entries
            }
        if kind == "array_literal_expression" and len(named) > 1:
            return [self.evaluate(n, scope) for n in named]
        if kind == "array_expression":
            value = self.evaluate(named[0], scope) if named else []
            return value if isinstance(value, list) else [value]
        if len(named) == 1:
            return self.evaluate(named[0], scope)
        raise AssertionError(f"cannot evaluate {kind}: {self.text(node)!r}")


def line_comment_at(source: str, start: int) -> str:
    """The line comment that starts at ``source[start]`` (a ``#``), as PowerShell's tokenizer reads it."""
    ends = [i for i in (source.find(ch, start) for ch in LINE_COMMENT_ENDS) if i >= 0]
    return source[start : min(ends, default=len(source))]


def join_path(parent: str, child: str) -> str:
    """``Join-Path parent child`` on Windows (the FileSystem provider).

    It puts one separator between the two (the Join-Path reference: "Existing directory separators
    ``\\`` are handled so there is only one separator between Path and ChildPath"), whatever the
    child is: a child that is absolute is not taken as it is. ``Join-Path C:\\a D:\\b`` is
    ``C:\\a\\D:\\b``, and ``Join-Path C:\\a \\\\srv\\share`` is ``C:\\a\\srv\\share``.
    """
    if not child:
        return parent
    return parent.rstrip("\\/") + "\\" + child.lstrip("\\/")
