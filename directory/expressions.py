"""The mapping expression language: a small, safe function language for attribute mappings.

Outbound provisioning maps directory attributes to what a target receives with
it, and inbound sources map what an HR system sends to directory attributes:
both front doors use this one language, so it lives in the core.

Syntax (the one Microsoft Entra documents for its attribute-mapping expressions,
so mappings written for Entra read the same here):

- `[attribute]`: a source attribute of the directory object, by its SCIM path
  (`[userName]`, `[name.givenName]`,
  `[urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department]`,
  `[emails[type eq "work"].value]`). The caller decides what a path resolves to.
- `"text"`: a string constant; `\\"` and `\\\\` escape a quote and a backslash.
- `42`: an integer constant (for `Left`, `Mid`, `Word`, `Item`).
- `Function(arg, ...)`: a call of one of the functions in `FUNCTIONS`; calls nest.

Nothing else exists: no operators, no variables, no attribute writes, no Python
evaluation, so an operator's expression can only compute a value. Expressions
are parsed and checked (function names, argument counts, attribute names) when
they are saved, so a bad one is refused with its position instead of failing
deliveries later.

Values are `None` (null or absent), strings, integers, booleans and lists (for
multi-valued attributes). Functions that transform one value return `None` for
a `None` source, so a missing attribute yields a missing target attribute
rather than the text "None".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

MAX_EXPRESSION_LENGTH = 4_000
# The parser recurses once per nested call; this stays far below Python's recursion limit.
MAX_DEPTH = 32

Value = Any  # None | str | int | bool | list[Value]; Any keeps the recursive alias simple for mypy.
Resolver = Callable[[str], Value]


class ExpressionError(ValueError):
    """The text is not a valid expression; `position` is the 0-based offset of the problem."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position + 1})")
        self.position = position


class EvaluationError(ValueError):
    """A well-formed expression could not compute a value for this object (e.g. an unparsable date)."""


@dataclass(frozen=True)
class Constant:
    value: str | int


@dataclass(frozen=True)
class Attribute:
    path: str


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]
    position: int


Node = Constant | Attribute | Call


# --- parsing -----------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_INTEGER = re.compile(r"-?[0-9]+")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> Node:
        node = self.term(depth=0)
        self.skip_spaces()
        if self.pos != len(self.text):
            raise ExpressionError("unexpected text after the expression", self.pos)
        return node

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def term(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"functions nest deeper than {MAX_DEPTH} levels", self.pos)
        self.skip_spaces()
        if self.pos >= len(self.text):
            raise ExpressionError("expected an attribute, a constant or a function", self.pos)
        char = self.text[self.pos]
        if char == '"':
            return Constant(self.string())
        if char == "[":
            return Attribute(self.attribute())
        number = _INTEGER.match(self.text, self.pos)
        if number:
            self.pos = number.end()
            return Constant(int(number.group()))
        name = _NAME.match(self.text, self.pos)
        if not name:
            raise ExpressionError(f"unexpected character {char!r}", self.pos)
        return self.call(name, depth)

    def string(self) -> str:
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                if self.pos + 1 >= len(self.text) or self.text[self.pos + 1] not in '"\\':
                    raise ExpressionError('only \\" and \\\\ may be escaped in a string', self.pos)
                chars.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if char == '"':
                self.pos += 1
                return "".join(chars)
            chars.append(char)
            self.pos += 1
        raise ExpressionError("string constant is not closed", start)

    def attribute(self) -> str:
        # Brackets and quoted strings may nest inside (`[emails[type eq "work"].value]`).
        start = self.pos
        depth = 0
        quoted = False
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if quoted:
                if char == "\\":
                    self.pos += 1
                elif char == '"':
                    quoted = False
            elif char == '"':
                quoted = True
            elif char == "[":
                depth += 1
            elif char == "]":
                depth -= 1
                if depth == 0:
                    self.pos += 1
                    path = self.text[start + 1 : self.pos - 1].strip()
                    if not path:
                        raise ExpressionError("empty attribute name", start)
                    return path
            self.pos += 1
        raise ExpressionError("attribute name is not closed with ]", start)

    def call(self, name: re.Match[str], depth: int) -> Call:
        start = self.pos
        self.pos = name.end()
        function = _FUNCTIONS_BY_LOWER_NAME.get(name.group().lower())
        if function is None:
            raise ExpressionError(f"unknown function {name.group()!r}", start)
        self.skip_spaces()
        if self.pos >= len(self.text) or self.text[self.pos] != "(":
            raise ExpressionError(f"expected ( after {function.name}", self.pos)
        self.pos += 1
        args: list[Node] = []
        self.skip_spaces()
        if self.pos < len(self.text) and self.text[self.pos] == ")":
            self.pos += 1
        else:
            while True:
                args.append(self.term(depth + 1))
                self.skip_spaces()
                if self.pos < len(self.text) and self.text[self.pos] == ",":
                    self.pos += 1
                    continue
                if self.pos < len(self.text) and self.text[self.pos] == ")":
                    self.pos += 1
                    break
                raise ExpressionError(f"expected , or ) in the arguments of {function.name}", self.pos)
        function.check_arity(len(args), start)
        return Call(function.name, tuple(args), start)


def parse(text: str) -> Node:
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters", 0)
    if not text.strip():
        raise ExpressionError("empty expression", 0)
    return _Parser(text).parse()


def referenced_attributes(node: Node) -> list[str]:
    """Every attribute path the expression reads, in order of first appearance."""
    found: list[str] = []

    def walk(current: Node) -> None:
        if isinstance(current, Attribute):
            if current.path not in found:
                found.append(current.path)
        elif isinstance(current, Call):
            for arg in current.args:
                walk(arg)

    walk(node)
    return found


# --- evaluation --------------------------------------------------------------------------------


def evaluate(node: Node, resolve: Resolver) -> Value:
    if isinstance(node, Constant):
        return node.value
    if isinstance(node, Attribute):
        return resolve(node.path)
    function = _FUNCTIONS_BY_LOWER_NAME[node.name.lower()]
    return function.implementation(*(evaluate(arg, resolve) for arg in node.args))


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression, ready to evaluate against any number of objects."""

    text: str
    node: Node

    @property
    def attributes(self) -> list[str]:
        return referenced_attributes(self.node)

    def evaluate(self, resolve: Resolver) -> Value:
        return evaluate(self.node, resolve)


def compile_expression(text: str, *, known_attributes: Collection[str] | None = None) -> Expression:
    """Parse and check `text`; with `known_attributes`, every `[attribute]` must be one of them.

    Attribute names compare case-insensitively, as SCIM attribute names do; a
    value path (`emails[type eq "work"].value`) is checked by its attribute
    before the bracket.
    """
    node = parse(text)
    if known_attributes is not None:
        known = {name.lower() for name in known_attributes}
        for path in referenced_attributes(node):
            if _attribute_root(path).lower() not in known and path.lower() not in known:
                position = text.find(f"[{path}")
                raise ExpressionError(f"unknown attribute [{path}]", max(position, 0))
    return Expression(text=text, node=node)


def _attribute_root(path: str) -> str:
    bracket = path.find("[")
    return path if bracket < 0 else path[:bracket]


# --- functions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Function:
    name: str
    min_args: int
    max_args: int | None  # None: any number from min_args on
    implementation: Callable[..., Value]
    summary: str
    # Arguments from this index on come in pairs (Switch's key/value pairs).
    pairs_from: int | None = None

    def check_arity(self, count: int, position: int) -> None:
        if self.pairs_from is not None and count > self.pairs_from and (count - self.pairs_from) % 2:
            raise ExpressionError(f"{self.name} needs a value for each key", position)
        if count < self.min_args or (self.max_args is not None and count > self.max_args):
            if self.max_args is None:
                wanted = f"at least {self.min_args}"
            elif self.min_args == self.max_args:
                wanted = str(self.min_args)
            else:
                wanted = f"{self.min_args} to {self.max_args}"
            raise ExpressionError(f"{self.name} takes {wanted} arguments, not {count}", position)


def _is_empty(value: Value) -> bool:
    return value is None or value == "" or value == []


def _text(value: Value) -> str | None:
    """One value as text: lists give their first element (a single-valued context)."""
    if isinstance(value, list):
        value = next((item for item in value if not _is_empty(item)), None)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _integer(value: Value, what: str) -> int:
    if isinstance(value, bool):
        raise EvaluationError(f"{what} must be an integer, not a boolean")
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise EvaluationError(f"{what} must be an integer, not {value!r}") from None


def _boolean(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    text = _text(value)
    if text is None:
        return False
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise EvaluationError(f"{text!r} is not a boolean")


def _flatten(values: tuple[Value, ...]) -> list[Value]:
    flat: list[Value] = []
    for value in values:
        if isinstance(value, list):
            flat.extend(value)
        else:
            flat.append(value)
    return flat


def _map_text(value: Value, transform: Callable[[str], Value]) -> Value:
    """Apply a string transformation to one value, or to each element of a multi-valued one."""
    if isinstance(value, list):
        return [transform(text) for text in (_text(item) for item in value) if text is not None]
    text = _text(value)
    return None if text is None else transform(text)


def fn_append(source: Value, suffix: Value) -> Value:
    return _map_text(source, lambda text: text + (_text(suffix) or ""))


def fn_coalesce(*values: Value) -> Value:
    return next((value for value in values if not _is_empty(value)), None)


def fn_cbool(value: Value) -> bool:
    return _boolean(value)


def fn_cstr(value: Value) -> Value:
    return _text(value)


def fn_count(value: Value) -> int:
    if isinstance(value, list):
        return len([item for item in value if not _is_empty(item)])
    return 0 if _is_empty(value) else 1


def fn_iif(condition: Value, if_true: Value, if_false: Value) -> Value:
    return if_true if _boolean(condition) else if_false


def fn_is_null(value: Value) -> bool:
    return value is None


def fn_is_null_or_empty(value: Value) -> bool:
    return _is_empty(value)


def fn_is_present(value: Value) -> bool:
    return not _is_empty(value)


def fn_item(value: Value, index: Value) -> Value:
    position = _integer(index, "Item's index")
    items = value if isinstance(value, list) else ([] if value is None else [value])
    return items[position - 1] if 1 <= position <= len(items) else None


def fn_join(separator: Value, *sources: Value) -> Value:
    parts = [_text(item) for item in _flatten(sources) if not _is_empty(item)]
    return (_text(separator) or "").join(part for part in parts if part is not None)


def fn_left(source: Value, count: Value) -> Value:
    length = max(_integer(count, "Left's length"), 0)
    return _map_text(source, lambda text: text[:length])


def fn_mid(source: Value, start: Value, length: Value) -> Value:
    first = max(_integer(start, "Mid's start"), 1) - 1
    size = max(_integer(length, "Mid's length"), 0)
    return _map_text(source, lambda text: text[first : first + size])


# Letters NFKD does not split into a base letter and a combining mark.
_UNSPLITTABLE = str.maketrans(
    {"ß": "ss", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "đ": "d", "Đ": "D"}
    | {"ł": "l", "Ł": "L", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "ı": "i"}
)


def _strip_diacritics(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_UNSPLITTABLE))
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def fn_normalize_diacritics(source: Value) -> Value:
    return _map_text(source, _strip_diacritics)


def fn_not(value: Value) -> bool:
    return not _boolean(value)


def fn_pcase(source: Value, separators: Value = None) -> Value:
    marks = _text(separators)
    splitter = re.compile(f"([{re.escape(marks)}])" if marks else r"(\s)")

    def proper(text: str) -> str:
        return "".join(part[:1].upper() + part[1:].lower() for part in splitter.split(text))

    return _map_text(source, proper)


def fn_remove_duplicates(value: Value) -> Value:
    if not isinstance(value, list):
        return value
    unique: list[Value] = []
    for item in value:
        if item not in unique:
            unique.append(item)
    return unique


def fn_replace(source: Value, old: Value, new: Value) -> Value:
    find = _text(old) or ""
    replacement = _text(new) or ""
    if not find:
        return source
    return _map_text(source, lambda text: text.replace(find, replacement))


def fn_split(source: Value, delimiter: Value) -> Value:
    text = _text(source)
    marker = _text(delimiter) or ","
    if text is None:
        return None
    return [part for part in text.split(marker) if part != ""]


def fn_strip_spaces(source: Value) -> Value:
    return _map_text(source, lambda text: "".join(text.split()))


def fn_switch(source: Value, default: Value, *pairs: Value) -> Value:
    if len(pairs) % 2:
        raise EvaluationError("Switch needs key/value pairs after the default")
    key = _text(source)
    for index in range(0, len(pairs), 2):
        if key is not None and key == _text(pairs[index]):
            return pairs[index + 1]
    return default


# Entra's ToLower/ToUpper take an optional culture name; case mapping here is Unicode's, for every culture.
def fn_to_lower(source: Value, culture: Value = None) -> Value:
    return _map_text(source, str.lower)


def fn_to_upper(source: Value, culture: Value = None) -> Value:
    return _map_text(source, str.upper)


def fn_trim(source: Value) -> Value:
    return _map_text(source, str.strip)


def fn_word(source: Value, number: Value, delimiters: Value = None) -> Value:
    index = _integer(number, "Word's number")
    marks = _text(delimiters) or " "
    text = _text(source)
    if text is None:
        return None
    words = [word for word in re.split(f"[{re.escape(marks)}]", text) if word]
    return words[index - 1] if 1 <= index <= len(words) else None


# --- dates -------------------------------------------------------------------------------------
# FormatDateTime takes .NET custom date and time format strings, as Entra's does
# ("yyyyMMddHHmmss.fZ" for Active Directory's generalized time, "yyyy-MM-dd"...).

_DATE_TOKENS = re.compile(
    r"yyyy|yy|MM|M|dd|d|HH|H|hh|h|mm|m|ss|s|fffffff|ffffff|fffff|ffff|fff|ff|f|tt|zzz|zz|z|K"
)


def _format_tokens(pattern: str) -> list[tuple[bool, str]]:
    """Split a .NET pattern into (is_token, text) parts; quoted text and \\x are literals."""
    parts: list[tuple[bool, str]] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char in "'\"":
            end = pattern.find(char, index + 1)
            end = len(pattern) if end < 0 else end
            parts.append((False, pattern[index + 1 : end]))
            index = end + 1
            continue
        if char == "\\" and index + 1 < len(pattern):
            parts.append((False, pattern[index + 1]))
            index += 2
            continue
        token = _DATE_TOKENS.match(pattern, index)
        if token:
            parts.append((True, token.group()))
            index = token.end()
        else:
            parts.append((False, char))
            index += 1
    return parts


def _offset_text(moment: datetime, with_minutes: bool) -> str:
    offset = moment.utcoffset() or timedelta(0)
    total = int(offset.total_seconds() // 60)
    sign = "-" if total < 0 else "+"
    hours, minutes = divmod(abs(total), 60)
    return f"{sign}{hours:02d}:{minutes:02d}" if with_minutes else f"{sign}{hours:02d}"


def _format_date(moment: datetime, pattern: str) -> str:
    out: list[str] = []
    for is_token, text in _format_tokens(pattern):
        if not is_token:
            out.append(text)
        elif text == "yyyy":
            out.append(f"{moment.year:04d}")
        elif text == "yy":
            out.append(f"{moment.year % 100:02d}")
        elif text in ("MM", "M"):
            out.append(f"{moment.month:0{len(text)}d}")
        elif text in ("dd", "d"):
            out.append(f"{moment.day:0{len(text)}d}")
        elif text in ("HH", "H"):
            out.append(f"{moment.hour:0{len(text)}d}")
        elif text in ("hh", "h"):
            out.append(f"{(moment.hour % 12) or 12:0{len(text)}d}")
        elif text in ("mm", "m"):
            out.append(f"{moment.minute:0{len(text)}d}")
        elif text in ("ss", "s"):
            out.append(f"{moment.second:0{len(text)}d}")
        elif text.startswith("f"):
            out.append(f"{moment.microsecond:06d}0"[: len(text)])
        elif text == "tt":
            out.append("AM" if moment.hour < 12 else "PM")
        elif text in ("zzz", "zz", "z"):
            out.append(_offset_text(moment, with_minutes=text == "zzz"))
        else:  # K
            out.append("Z" if moment.utcoffset() == timedelta(0) else _offset_text(moment, True))
    return "".join(out)


_PARSE_PIECES = {
    "yyyy": r"(?P<year>\d{4})",
    "yy": r"(?P<year2>\d{2})",
    "MM": r"(?P<month>\d{2})",
    "M": r"(?P<month>\d{1,2})",
    "dd": r"(?P<day>\d{2})",
    "d": r"(?P<day>\d{1,2})",
    "HH": r"(?P<hour>\d{2})",
    "H": r"(?P<hour>\d{1,2})",
    "hh": r"(?P<hour12>\d{2})",
    "h": r"(?P<hour12>\d{1,2})",
    "mm": r"(?P<minute>\d{2})",
    "m": r"(?P<minute>\d{1,2})",
    "ss": r"(?P<second>\d{2})",
    "s": r"(?P<second>\d{1,2})",
    "tt": r"(?P<ampm>AM|PM|am|pm)",
    "zzz": r"(?P<offset>[+-]\d{2}:\d{2})",
    "zz": r"(?P<offset>[+-]\d{2})",
    "z": r"(?P<offset>[+-]\d{1,2})",
    "K": r"(?P<offset>Z|[+-]\d{2}:\d{2})?",
}


def _parse_date(text: str, pattern: str) -> datetime:
    if not pattern or pattern in ("o", "O", "s", "u"):
        return _parse_iso(text)
    regex: list[str] = []
    for is_token, piece in _format_tokens(pattern):
        if not is_token:
            regex.append(re.escape(piece))
        elif piece.startswith("f"):
            regex.append(rf"(?P<fraction>\d{{{len(piece)}}})")
        else:
            regex.append(_PARSE_PIECES[piece])
    try:
        match = re.fullmatch("".join(regex), text.strip())
    except re.error:  # the same group twice (e.g. "yyyy...yyyy")
        raise EvaluationError(f"the input format {pattern!r} repeats a field") from None
    if not match:
        raise EvaluationError(f"{text!r} does not match the input format {pattern!r}")
    fields = match.groupdict()
    year = int(fields["year"]) if fields.get("year") else 2000 + int(fields.get("year2") or 0)
    hour = int(fields.get("hour") or 0)
    if fields.get("hour12"):
        hour = int(fields["hour12"]) % 12 + (12 if (fields.get("ampm") or "").upper() == "PM" else 0)
    fraction = fields.get("fraction") or ""
    zone = _zone(fields.get("offset"))
    try:
        return datetime(
            year,
            int(fields.get("month") or 1),
            int(fields.get("day") or 1),
            hour,
            int(fields.get("minute") or 0),
            int(fields.get("second") or 0),
            int((fraction + "000000")[:6]),
            tzinfo=zone,
        )
    except ValueError as error:
        raise EvaluationError(f"{text!r} is not a valid date: {error}") from None


def _zone(offset: str | None) -> timezone:
    if not offset or offset == "Z":
        return UTC
    sign = -1 if offset.startswith("-") else 1
    hours, _, minutes = offset[1:].partition(":")
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))


def _parse_iso(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise EvaluationError(f"{text!r} is not an ISO 8601 date") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def fn_format_date_time(source: Value, *args: Value) -> Value:
    # Entra's form is FormatDateTime(source, [dateTimeStyles], inputFormat, outputFormat); the
    # optional styles argument only tunes .NET's parser and is accepted and ignored here.
    input_format, output_format = (_text(args[-2]) or ""), (_text(args[-1]) or "")

    def convert(text: str) -> str:
        return _format_date(_parse_date(text, input_format), output_format)

    if isinstance(source, datetime):
        return _format_date(source if source.tzinfo else source.replace(tzinfo=UTC), output_format)
    return _map_text(source, convert)


FUNCTIONS: tuple[Function, ...] = (
    Function("Append", 2, 2, fn_append, "Append(source, suffix): source followed by suffix."),
    Function("CBool", 1, 1, fn_cbool, 'CBool(value): true for true/"true"/"1"/nonzero, else false.'),
    Function("Coalesce", 1, None, fn_coalesce, "Coalesce(a, b, ...): the first value that is not empty."),
    Function("Count", 1, 1, fn_count, "Count(attribute): how many non-empty values."),
    Function("CStr", 1, 1, fn_cstr, "CStr(value): the value as text."),
    Function(
        "FormatDateTime",
        3,
        4,
        fn_format_date_time,
        "FormatDateTime(source, [styles], inputFormat, outputFormat): .NET date patterns;"
        " an empty input format reads ISO 8601.",
    ),
    Function("IIF", 3, 3, fn_iif, "IIF(condition, valueIfTrue, valueIfFalse)."),
    Function("IsNull", 1, 1, fn_is_null, "IsNull(value): true when absent."),
    Function("IsNullOrEmpty", 1, 1, fn_is_null_or_empty, "IsNullOrEmpty(value): absent, empty text or list."),
    Function("IsPresent", 1, 1, fn_is_present, "IsPresent(value): not IsNullOrEmpty."),
    Function(
        "Item", 2, 2, fn_item, "Item(attribute, index): the index-th value (1-based) of a multi-valued one."
    ),
    Function("Join", 1, None, fn_join, "Join(separator, source, ...): non-empty values joined by separator."),
    Function("Left", 2, 2, fn_left, "Left(source, n): the first n characters."),
    Function("Mid", 3, 3, fn_mid, "Mid(source, start, length): a substring; start is 1-based."),
    Function(
        "NormalizeDiacritics", 1, 1, fn_normalize_diacritics, "NormalizeDiacritics(source): é→e, ß→ss..."
    ),
    Function("Not", 1, 1, fn_not, "Not(value): the boolean opposite."),
    Function("PCase", 1, 2, fn_pcase, "PCase(source, [separators]): each word capitalised."),
    Function("RemoveDuplicates", 1, 1, fn_remove_duplicates, "RemoveDuplicates(attribute): unique values."),
    Function("Replace", 3, 3, fn_replace, "Replace(source, find, replacement): every occurrence replaced."),
    Function("Split", 2, 2, fn_split, "Split(source, delimiter): a multi-valued result."),
    Function("StripSpaces", 1, 1, fn_strip_spaces, "StripSpaces(source): all whitespace removed."),
    Function(
        "Switch",
        2,
        None,
        fn_switch,
        "Switch(source, default, key1, value1, ...): the value for source's key.",
        pairs_from=2,
    ),
    Function("ToLower", 1, 2, fn_to_lower, "ToLower(source): lower case."),
    Function("ToUpper", 1, 2, fn_to_upper, "ToUpper(source): upper case."),
    Function("Trim", 1, 1, fn_trim, "Trim(source): leading and trailing whitespace removed."),
    Function("Word", 2, 3, fn_word, "Word(source, n, [delimiters]): the n-th word (1-based)."),
)

# Function names are matched case-insensitively and reported in their canonical spelling.
_FUNCTIONS_BY_LOWER_NAME = {function.name.lower(): function for function in FUNCTIONS}
