"""Attribute scoping filters: which objects a target receives, beyond its assignments.

A target's scoping filters are a list of filters; an object is in scope when it
satisfies at least one filter, and it satisfies a filter when every clause of
that filter holds (clauses AND, filters OR, the arrangement Microsoft Entra
uses, so its operators and their names carry over). With no filters, every
assigned object is in scope.

Clauses are data (JSON on the target: `[[{"attribute": ..., "operator": ...,
"value": ...}, ...], ...]`), checked when saved. Evaluation explains itself:
the reason names the clause that kept an object out, and it goes into the
provisioning log.

Regular expressions come from operators, so they run with the `regex` library's
timeout: a pathological pattern fails the clause instead of stalling a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import regex

REGEX_TIMEOUT_SECONDS = 0.05
MAX_FILTERS = 50
MAX_CLAUSES = 50
MAX_VALUE_LENGTH = 1_000

# Operators that compare against `value`, and those that take none.
VALUE_OPERATORS = (
    "EQUALS",
    "NOT EQUALS",
    "REGEX MATCH",
    "NOT REGEX MATCH",
    "GREATER_THAN",
    "GREATER_THAN_OR_EQUALS",
    "LESS_THAN",
    "LESS_THAN_OR_EQUALS",
    "INCLUDES",
    "NOT INCLUDES",
)
UNARY_OPERATORS = ("IS TRUE", "IS FALSE", "IS NULL", "IS NOT NULL")
OPERATORS = VALUE_OPERATORS + UNARY_OPERATORS

Resolver = Callable[[str], Any]


class ScopingError(ValueError):
    """Scoping filters that cannot be saved: the message says which filter and clause."""


@dataclass(frozen=True)
class Clause:
    attribute: str
    operator: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.attribute} {self.operator}" + (f' "{self.value}"' if self.value else "")


@dataclass(frozen=True)
class Decision:
    in_scope: bool
    reason: str


Filters = tuple[tuple[Clause, ...], ...]


def parse_filters(data: Any, *, known_attributes: Sequence[str] | None = None) -> Filters:
    """Check scoping filters given as JSON data and return them typed."""
    if data in (None, ""):
        return ()
    if not isinstance(data, list):
        raise ScopingError("scoping filters must be a list of filters, each a list of clauses")
    if len(data) > MAX_FILTERS:
        raise ScopingError(f"at most {MAX_FILTERS} scoping filters")
    known = {name.lower() for name in known_attributes} if known_attributes is not None else None
    filters: list[tuple[Clause, ...]] = []
    for filter_number, raw_filter in enumerate(data, start=1):
        if not isinstance(raw_filter, list) or not raw_filter:
            raise ScopingError(f"filter {filter_number} must be a non-empty list of clauses")
        if len(raw_filter) > MAX_CLAUSES:
            raise ScopingError(f"filter {filter_number} has more than {MAX_CLAUSES} clauses")
        clauses = [
            _parse_clause(raw, f"filter {filter_number}, clause {number}", known)
            for number, raw in enumerate(raw_filter, start=1)
        ]
        filters.append(tuple(clauses))
    return tuple(filters)


def _parse_clause(raw: Any, where: str, known: set[str] | None) -> Clause:
    if not isinstance(raw, dict):
        raise ScopingError(f"{where}: a clause is an object with attribute, operator and value")
    attribute = str(raw.get("attribute") or "").strip()
    operator = " ".join(str(raw.get("operator") or "").upper().split())
    value = raw.get("value")
    value = "" if value is None else str(value)
    if not attribute:
        raise ScopingError(f"{where}: attribute is required")
    if known is not None and attribute.lower() not in known:
        raise ScopingError(f"{where}: unknown attribute {attribute!r}")
    if operator not in OPERATORS:
        raise ScopingError(
            f"{where}: unknown operator {raw.get('operator')!r}; one of {', '.join(OPERATORS)}"
        )
    if operator in VALUE_OPERATORS and value == "" and operator not in ("EQUALS", "NOT EQUALS"):
        raise ScopingError(f"{where}: {operator} needs a value")
    if operator in UNARY_OPERATORS and value:
        raise ScopingError(f"{where}: {operator} takes no value")
    if len(value) > MAX_VALUE_LENGTH:
        raise ScopingError(f"{where}: value longer than {MAX_VALUE_LENGTH} characters")
    if operator in ("REGEX MATCH", "NOT REGEX MATCH"):
        try:
            regex.compile(value)
        except regex.error as error:
            raise ScopingError(f"{where}: invalid regular expression: {error}") from None
    return Clause(attribute=attribute, operator=operator, value=value)


def to_data(filters: Filters) -> list[list[dict[str, str]]]:
    return [
        [{"attribute": c.attribute, "operator": c.operator, "value": c.value} for c in clauses]
        for clauses in filters
    ]


def referenced_attributes(filters: Filters) -> set[str]:
    """Attributes whose change can move an object into or out of scope."""
    return {clause.attribute.lower() for clauses in filters for clause in clauses}


def evaluate(filters: Filters, resolve: Resolver) -> Decision:
    if not filters:
        return Decision(True, "no scoping filter")
    failures: list[str] = []
    for number, clauses in enumerate(filters, start=1):
        failed = next((clause for clause in clauses if not _holds(clause, resolve(clause.attribute))), None)
        if failed is None:
            return Decision(True, f"scoping filter {number} matched")
        failures.append(f"filter {number}: {failed} is false (value {_shown(resolve(failed.attribute))})")
    return Decision(False, "out of scope: " + "; ".join(failures))


def _shown(value: Any) -> str:
    return "null" if value is None else repr(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    return [item for item in value if item is not None] if isinstance(value, list) else [value]


def _holds(clause: Clause, value: Any) -> bool:
    operator = clause.operator
    values = _values(value)
    if operator == "IS NULL":
        return not values or all(item == "" for item in values)
    if operator == "IS NOT NULL":
        return any(item != "" for item in values)
    if operator in ("IS TRUE", "IS FALSE"):
        wanted = operator == "IS TRUE"
        return any(_truth(item) is wanted for item in values)
    if operator.startswith("NOT "):
        return not _holds(Clause(clause.attribute, operator[4:], clause.value), value)
    if operator == "EQUALS":
        # Case-insensitive, as directory attributes compare; an absent value equals "".
        if not values:
            return clause.value == ""
        return any((_text(item) or "").casefold() == clause.value.casefold() for item in values)
    if operator == "INCLUDES":
        options = {option.strip().casefold() for option in clause.value.split(",")}
        return any((_text(item) or "").casefold() in options for item in values)
    if operator == "REGEX MATCH":
        return any(_regex_matches(clause.value, _text(item) or "") for item in values)
    return any(_compare(operator, item, clause.value) for item in values)


def _truth(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = (_text(value) or "").strip().lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(text)


def _regex_matches(pattern: str, text: str) -> bool:
    try:
        return regex.search(pattern, text, timeout=REGEX_TIMEOUT_SECONDS) is not None
    except TimeoutError:
        return False


def _compare(operator: str, value: Any, bound: str) -> bool:
    """Numbers compare as numbers, dates and everything else as text (ISO dates sort as text)."""
    left: Any
    right: Any
    try:
        left, right = Decimal(str(value)), Decimal(bound)
        if not (left.is_finite() and right.is_finite()):
            raise InvalidOperation
    except InvalidOperation:
        left, right = (_text(value) or "").casefold(), bound.casefold()
    if operator == "GREATER_THAN":
        return bool(left > right)
    if operator == "GREATER_THAN_OR_EQUALS":
        return bool(left >= right)
    if operator == "LESS_THAN":
        return bool(left < right)
    return bool(left <= right)
