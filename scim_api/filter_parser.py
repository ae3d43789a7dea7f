"""SCIM filter and PATCH path parsing (RFC 7644 §3.4.2.2 and §3.5.2), into a small AST.

Parsing knows nothing of attributes: `scim_api.filters` resolves names against
the schema registry and compiles the tree to SQL; `scim_api.patch` evaluates a
value-path filter against the elements of one resource.

`attr[filter].sub op value` is read as `attr[filter and sub op value]`: both
mean one element that satisfies everything, which is what clients intend by
`emails[type eq "work"].value eq "x"`.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

OPERATORS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})

# Limits that keep a hostile filter from costing the database (or the recursive parser) much.
MAX_FILTER_LENGTH = 2_000
MAX_COMPARISONS = 100
# The parser recurses once per level; this stays far below Python's recursion limit.
MAX_NESTING = 20

Literal_ = str | bool | int | float | None


class FilterSyntaxError(ValueError):
    """The text is not a well-formed filter or path (400 invalidFilter / invalidPath)."""


@dataclass(frozen=True)
class Comparison:
    """`path op value`, or `path pr` (op "pr", value None); `path` as written (`name.givenName`, a URN...)."""

    path: str
    op: str
    value: Literal_ = None


@dataclass(frozen=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class ValuePath:
    """`attr[filter]`: some element of the multi-valued `attr` satisfies `filter` (paths relative to it)."""

    attribute: str
    filter: Node


Node = Comparison | And | Or | Not | ValuePath


@dataclass(frozen=True)
class PatchPath:
    """A PATCH `path`: `attr`, `attr.sub`, `attr[filter]` or `attr[filter].sub` (URN prefix kept in attr)."""

    attribute: str
    filter: Node | None = None
    sub_attribute: str | None = None


# --- tokens -------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<lbracket>\[)
  | (?P<rbracket>\])
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w:.$-]))
  | (?P<word>[A-Za-z$_][\w:.$\-]*)
  | (?P<sub>\.[A-Za-z$_][\w$\-]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    position: int


def scan(text: str) -> list[tuple[str, str]]:
    """Every token of a filter as (kind, text), whitespace included, so a caller can rewrite it in place.

    Kinds: space, string, lparen, rparen, lbracket, rbracket, number, word, sub (".name").
    """
    return [(token.kind, token.text) for token in _tokenize(text, keep_spaces=True)]


def _tokenize(text: str, *, keep_spaces: bool = False) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise FilterSyntaxError(f"Unexpected character {text[position]!r} at position {position + 1}")
        kind = match.lastgroup or ""
        if kind != "space" or keep_spaces:
            tokens.append(_Token(kind, match.group(), position))
        position = match.end()
    return tokens


def _string_value(token: _Token) -> str:
    try:
        value = str(json.loads(token.text))
    except ValueError:
        raise FilterSyntaxError(f"Malformed string {token.text} at position {token.position + 1}") from None
    if not is_storable_text(value):
        raise FilterSyntaxError(
            f"The string at position {token.position + 1} holds a NUL or an unpaired surrogate"
        )
    return value


# One regex search runs in C; every string of every request body goes through it.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def is_storable_text(value: str) -> bool:
    """No NUL (PostgreSQL text cannot hold one) and no lone UTF-16 surrogate (not encodable as UTF-8)."""
    return _UNSTORABLE.search(value) is None


class _Parser:
    """Recursive descent: or-expr := and-expr ('or' and-expr)*; and-expr := unary ('and' unary)*."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    # helpers
    def _peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _next(self, expected: str) -> _Token:
        token = self._peek()
        if token is None:
            raise FilterSyntaxError(f"Expected {expected} but the filter ended")
        self.index += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "word" and token.text.lower() == word:
            self.index += 1
            return True
        return False

    def _expect(self, kind: str, label: str) -> _Token:
        token = self._next(label)
        if token.kind != kind:
            raise FilterSyntaxError(
                f"Expected {label} at position {token.position + 1}, found {token.text!r}"
            )
        return token

    # grammar
    def parse(self) -> Node:
        if not self.tokens:
            raise FilterSyntaxError("The filter is empty")
        node = self._or()
        token = self._peek()
        if token is not None:
            raise FilterSyntaxError(f"Unexpected {token.text!r} at position {token.position + 1}")
        return node

    def _or(self) -> Node:
        node = self._and()
        while self._keyword("or"):
            node = Or(node, self._and())
        return node

    def _and(self) -> Node:
        node = self._unary()
        while self._keyword("and"):
            node = And(node, self._unary())
        return node

    def _unary(self) -> Node:
        token = self._peek()
        if token is None:
            raise FilterSyntaxError("Expected an expression but the filter ended")
        if token.kind == "word" and token.text.lower() == "not":
            following = self.tokens[self.index + 1] if self.index + 1 < len(self.tokens) else None
            if following is not None and following.kind == "lparen":
                self.index += 1
                return Not(self._group())
        if token.kind == "lparen":
            return self._group()
        return self._attribute_expression()

    def _group(self) -> Node:
        self._expect("lparen", "'('")
        node = self._or()
        self._expect("rparen", "')'")
        return node

    def _attribute_expression(self) -> Node:
        path = self._expect("word", "an attribute name")
        token = self._peek()
        if token is not None and token.kind == "lbracket":
            self.index += 1
            inner = self._or()
            self._expect("rbracket", "']'")
            after = self._peek()
            if after is not None and after.kind == "sub":
                self.index += 1
                return ValuePath(path.text, And(inner, self._comparison(after.text[1:])))
            return ValuePath(path.text, inner)
        return self._comparison(path.text)

    def _comparison(self, path: str) -> Comparison:
        operator = self._expect("word", "an operator")
        op = operator.text.lower()
        if op == "pr":
            return Comparison(path, "pr")
        if op not in OPERATORS:
            raise FilterSyntaxError(f"Unknown operator {operator.text!r} at position {operator.position + 1}")
        return Comparison(path, op, self._literal())

    def _literal(self) -> Literal_:
        token = self._next("a value")
        if token.kind == "string":
            return _string_value(token)
        if token.kind == "number":
            number = float(token.text)
            return int(number) if number.is_integer() and re.fullmatch(r"-?\d+", token.text) else number
        if token.kind == "word":
            word = token.text.lower()
            if word == "true":
                return True
            if word == "false":
                return False
            if word == "null":
                return None
        raise FilterSyntaxError(f"Expected a value at position {token.position + 1}, found {token.text!r}")


# One request's filter is looked at by the dialect rewriter, the unique-attribute lookup and the
# compiler; the tree is immutable, so it is parsed once and shared.
@functools.lru_cache(maxsize=1024)
def parse_filter(text: str) -> Node:
    """Parse a `filter` query parameter (or a SearchRequest's filter) into an AST, within the limits above."""
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterSyntaxError(f"The filter is longer than {MAX_FILTER_LENGTH} characters")
    if _nesting(text) > MAX_NESTING:
        raise FilterSyntaxError(
            f"The filter nests parentheses or brackets more than {MAX_NESTING} levels deep"
        )
    node = _Parser(text).parse()
    if _count_comparisons(node) > MAX_COMPARISONS:
        raise FilterSyntaxError(f"The filter has more than {MAX_COMPARISONS} comparisons")
    return node


def _nesting(text: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]":
            depth -= 1
    return deepest


def _count_comparisons(node: Node) -> int:
    count, pending = 0, [node]
    while pending:
        current = pending.pop()
        if isinstance(current, (And, Or)):
            pending.extend((current.left, current.right))
        elif isinstance(current, Not):
            pending.append(current.operand)
        elif isinstance(current, ValuePath):
            pending.append(current.filter)
        else:
            count += 1
    return count


_PATH = re.compile(
    r"^(?P<attr>[A-Za-z$_][\w:.$\-]*?)(?:\[(?P<filter>.*)\](?:\.(?P<sub>[A-Za-z$_][\w$\-]*))?)?$", re.S
)


def split_path(text: str) -> tuple[str, str | None, str | None]:
    """A PATCH path's pieces as written: (attribute, filter text or None, sub-attribute or None)."""
    text = text.strip()
    match = _PATH.match(text)
    if match is None or not text:
        raise FilterSyntaxError(f"Malformed path {text!r}")
    return match.group("attr"), match.group("filter"), match.group("sub")


def parse_path(text: str) -> PatchPath:
    """Parse a PATCH operation's `path`."""
    attribute, inner, sub = split_path(text)
    if inner is None:
        return PatchPath(attribute)
    return PatchPath(attribute, parse_filter(inner), sub)
