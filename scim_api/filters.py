"""SCIM filters (RFC 7644 §3.4.2.2) compiled to one Django `Q`: every comparison runs in SQL.

`compile_filter(text, resource_type)` gives a Q for `User.objects` or
`Group.objects`. The rules it encodes, beyond the RFC grammar:

- Two-valued logic. Every comparison is TRUE or FALSE, never SQL NULL: a
  comparison on a column that can be NULL (a JSON key, the manager, a LEFT
  JOIN) carries an explicit `IS NOT NULL`. So `not (...)` and `ne` match the
  resources that have no value at all, as the RFC's "not equal" reads, instead
  of NULL silently dropping them. `ne` is always `not eq`, also for
  multi-valued attributes (no element equals); inside `[...]` it applies to one
  element. Absent strings are stored as "" and count as missing: they never
  match co/sw/ew/gt/ge/lt/le, and `eq null` / `ne null` mean `not pr` / `pr`.
- caseExact=false compares LOWER(column) with the lower-cased value, the
  expression the LOWER() indexes are built on (userName, group displayName,
  UserValue (kind, LOWER(value))). caseExact=true co/sw/ew use STRPOS/LEFT/RIGHT,
  not LIKE, which SQLite runs case-insensitively. gt/ge/lt/le on strings use
  the database collation. SQLite's LOWER() folds ASCII only.
- Ids (`id`, `manager.value`, `groups.value`, `members.value`) are caseExact: a
  value that is not a UUID in its canonical lower-case text form matches
  nothing (`ne` everything), so clients' random probes get an empty list. Only
  eq, ne and pr apply to them.
- Multi-valued attributes: one EXISTS per comparison or `[...]` filter, with
  every condition inside the brackets on the same element row. A user's
  `groups` include indirect memberships (a recursive CTE, see
  NestedGroupUsers); a group's `members` are its direct members only.
- Extension attributes kept in a JSON document are read as text (JSONText:
  NULL when absent or JSON null on both databases) and compared like columns;
  dateTime ones as timestamps (Instant), a malformed stored value reading as no
  value rather than failing the query; integer/decimal ones as SQL numbers
  (JSONNumber) and boolean ones as SQL booleans (JSONBoolean), NULL when the
  stored JSON value has another type. These are the expressions the indexes of
  operator-defined attributes are built on (directory.extensions).
- Limits, to keep a filter from becoming an expensive query: at most
  MAX_FILTER_LENGTH characters, MAX_NESTING levels of parentheses/brackets and
  MAX_COMPARISONS comparisons.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from django.db import NotSupportedError
from django.db.models import (
    BooleanField,
    CharField,
    DateTimeField,
    Exists,
    F,
    ForeignKey,
    JSONField,
    Model,
    OuterRef,
    Q,
    Subquery,
    TextField,
    UUIDField,
    Value,
)
from django.db.models.expressions import Func
from django.db.models.functions import Left, Lower, Right, StrIndex
from django.db.models.lookups import (
    Contains,
    EndsWith,
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    IsNull,
    LessThan,
    LessThanOrEqual,
    Lookup,
    StartsWith,
)
from django.utils.dateparse import parse_date, parse_datetime

from directory.json_sql import JSONArrayAny, JSONBoolean, JSONElement, JSONNumber, JSONText, NumberValue
from directory.models import Group, Membership, User, UserValue
from scim_api.filter_parser import (
    And,
    Comparison,
    FilterSyntaxError,
    Literal_,
    Node,
    Not,
    Or,
    ValuePath,
    parse_filter,
)
from scim_api.schema import Attribute, AttributePath, ResourceType, UnknownAttribute, get_registry


class InvalidFilter(ValueError):
    """The filter cannot be run: bad syntax, an unknown attribute, or an operator its type does not take."""


# --- where an attribute's value lives -------------------------------------------------------

ValueKind = Literal["string", "boolean", "dateTime", "id", "number"]


@dataclass(frozen=True)
class Column:
    """One attribute's value as a SQL expression on some model, with what comparing it needs to know."""

    expression: Any  # F(path), or JSONText(path) for a key inside a JSON document
    kind: ValueKind
    nullable: bool
    case_exact: bool
    in_json: bool
    label: str
    binary: bool = False


def resource_model(resource_type: ResourceType) -> type[User] | type[Group]:
    return {"User": User, "Group": Group}[resource_type.name]


def attribute_column(model: type[Model], path: str, attribute: Attribute, label: str) -> Column:
    """Describe the ORM `path` (as the schema registry names it) on `model` for `attribute`."""
    nullable = False
    current: type[Model] = model
    parts = path.split("__")
    for index, part in enumerate(parts):
        field = current._meta.get_field(part)
        if isinstance(field, JSONField):
            # The rest of the path is keys inside the document; an absent key reads as NULL.
            kind = _json_kind(attribute)
            document, keys = "__".join(parts[: index + 1]), parts[index + 1 :]
            expression: Any
            if kind == "number":
                expression = JSONNumber(document, *keys)
            elif kind == "boolean":
                expression = JSONBoolean(document, *keys)
            else:
                expression = JSONText.from_lookup(path)
            return Column(
                expression, kind, True, attribute.case_exact, True, label, attribute.type == "binary"
            )
        nullable = nullable or bool(field.null)
        if field.is_relation and index < len(parts) - 1:
            current = field.related_model  # type: ignore[assignment]
            continue
        return Column(
            F(path), _kind(field), nullable, attribute.case_exact, False, label, attribute.type == "binary"
        )
    raise AssertionError(f"empty column path for {label}")


def _json_kind(attribute: Attribute) -> ValueKind:
    if attribute.type == "dateTime":
        return "dateTime"
    if attribute.type in ("string", "reference", "binary"):
        return "string"
    if attribute.type in ("integer", "decimal"):
        return "number"
    if attribute.type == "boolean":
        return "boolean"
    raise TypeError(f"No filter support for {attribute.type} attribute {attribute.name} stored in JSON")


def _kind(field: Any) -> ValueKind:
    if isinstance(field, ForeignKey):
        field = field.target_field
    if isinstance(field, UUIDField):
        return "id"
    if isinstance(field, BooleanField):
        return "boolean"
    if isinstance(field, DateTimeField):
        return "dateTime"
    if isinstance(field, (CharField, TextField)):
        return "string"
    raise TypeError(f"No filter support for {field!r}")


# A shape check run in SQL before a stored JSON text is read as a timestamp:
# PostgreSQL's cast raises on bad input, and a single malformed value must not
# make every filter on the attribute fail. It admits only real calendar dates
# (leap years included) with an optional time and Z/±hh:mm offset, which both
# PostgreSQL's timestamptz and SQLite's julianday() read alike. Anything else
# reads as NULL, that is as no value.
_ISO_8601 = (
    r"^(?!0000)(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)"
    r"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]+)?)?"
    r"(?:Z|[+-](?:0[0-9]|1[0-4]):[0-5][0-9])?)?$"
)


class Instant(Func):
    """An ISO 8601 text as a comparable point in time (timestamptz / julianday), NULL if it is not one."""

    output_field = DateTimeField()

    def _source_sql(self, compiler: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.get_source_expressions()[0])
        return sql, list(params)

    def as_postgresql(self, compiler: Any, connection: Any, **extra_context: Any) -> tuple[str, list[Any]]:
        sql, params = self._source_sql(compiler)
        return f"(CASE WHEN {sql} ~ %s THEN ({sql})::timestamptz END)", [*params, _ISO_8601, *params]

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> tuple[str, list[Any]]:
        sql, params = self._source_sql(compiler)
        return f"julianday(CASE WHEN {sql} REGEXP %s THEN {sql} END)", [*params, _ISO_8601, *params]

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> tuple[str, list[Any]]:
        raise NotSupportedError(
            f"Reading ISO 8601 text as a timestamp is not implemented on {connection.vendor}"
        )


class NestedGroupUsers(Subquery):
    """The ids of users who are members of the seed groups directly, or of a group nested in one at any depth.

    A recursive CTE collects the seed groups and every group below them, then
    their user members. It is not correlated with the outer query, so the
    database runs it once (a hashed semi-join on PostgreSQL). UNION rather than
    UNION ALL makes it terminate even on a membership cycle.
    """

    def as_sql(self, compiler: Any, connection: Any, template: Any = None, **extra: Any) -> tuple[str, Any]:
        seed_sql, params = self.query.as_sql(compiler, connection)
        table = connection.ops.quote_name(Membership._meta.db_table)
        sql = (
            f"(WITH RECURSIVE scim_reach(id) AS ({seed_sql[1:-1]}"
            f" UNION SELECT scim_m.member_group_id FROM {table} scim_m"
            f" JOIN scim_reach ON scim_m.group_id = scim_reach.id WHERE scim_m.member_group_id IS NOT NULL)"
            f" SELECT scim_m.member_user_id FROM {table} scim_m"
            f" JOIN scim_reach ON scim_m.group_id = scim_reach.id WHERE scim_m.member_user_id IS NOT NULL)"
        )
        return sql, params


# --- constant conditions --------------------------------------------------------------------


def _nothing() -> Q:
    # Django knows `IN ()` matches nothing: when that is the whole filter, it skips the query.
    return Q(pk__in=[])


def _everything() -> Q:
    return ~_nothing()


# --- comparing one column ----------------------------------------------------------------------

_ORDERING: dict[str, type[Lookup]] = {
    "gt": GreaterThan,
    "ge": GreaterThanOrEqual,
    "lt": LessThan,
    "le": LessThanOrEqual,
}

Compare = Callable[[str, Literal_], Q]


def _normalised(compare: Compare, op: str, value: Literal_) -> Q:
    """Rewrite ne and null comparisons in terms of eq and pr, so each kind of value implements only those."""
    if value is None and op in ("eq", "ne"):
        present = compare("pr", None)
        return ~present if op == "eq" else present
    if op == "ne":
        return ~compare("eq", value)
    if value is None and op != "pr":
        raise InvalidFilter(f"'{op} null' is not a valid comparison: null works only with eq and ne")
    return compare(op, value)


def _not_null(expression: Any, nullable: bool, condition: Q) -> Q:
    return condition & Q(IsNull(expression, False)) if nullable else condition


def _operator_error(column_label: str, op: str, what: str) -> InvalidFilter:
    return InvalidFilter(f"The '{op}' operator cannot be used on '{column_label}' ({what})")


def _compare_column(column: Column, op: str, value: Literal_) -> Q:
    return _normalised(lambda op_, value_: _compare(column, op_, value_), op, value)


def _compare(column: Column, op: str, value: Literal_) -> Q:
    if column.kind == "string":
        return _compare_string(column, op, value)
    if column.kind == "boolean":
        return _compare_boolean(column, op, value)
    if column.kind == "dateTime":
        return _compare_datetime(column, op, value)
    if column.kind == "number":
        return _compare_number(column, op, value)
    return _compare_id(column, op, value)


def _present_string(column: Column) -> Q:
    return _not_null(column.expression, column.nullable, ~Q(Exact(column.expression, "")))


def _compare_string(column: Column, op: str, value: Literal_) -> Q:
    if op == "pr":
        return _present_string(column)
    text = _string(column.label, value)
    if op == "eq" and text == "":
        return ~_present_string(column)
    if op in ("co", "sw", "ew") and text == "":
        return _present_string(column)
    if op in _ORDERING and column.binary:
        raise _operator_error(column.label, op, "binary values have no order")
    lhs = column.expression
    if not column.case_exact:
        lhs, text = Lower(lhs), text.lower()
    if op == "eq":
        return _not_null(column.expression, column.nullable, Q(Exact(lhs, text)))
    lookup = _ORDERING[op](lhs, text) if op in _ORDERING else _substring(lhs, op, text, column.case_exact)
    return Q(lookup) & _present_string(column)


def _substring(lhs: Any, op: str, text: str, case_exact: bool) -> Lookup:
    if not case_exact:
        # Both sides are already lower-cased.
        return {"co": Contains, "sw": StartsWith, "ew": EndsWith}[op](lhs, text)
    # LIKE ignores case on SQLite; position and prefix/suffix equality are exact on both databases.
    if op == "co":
        return GreaterThan(StrIndex(lhs, Value(text)), 0)
    if op == "sw":
        return Exact(Left(lhs, len(text)), text)
    return Exact(Right(lhs, len(text)), text)


def _string(label: str, value: Literal_) -> str:
    if isinstance(value, bool):
        raise InvalidFilter(f"'{label}' is a string attribute: expected a string, got {str(value).lower()}")
    return str(value)


def _compare_boolean(column: Column, op: str, value: Literal_) -> Q:
    if op == "pr":
        return _not_null(column.expression, column.nullable, _everything())
    if op != "eq":
        raise _operator_error(column.label, op, "a boolean attribute takes eq, ne and pr")
    flag = _boolean(column.label, value)
    return _not_null(column.expression, column.nullable, Q(Exact(column.expression, flag)))


def _boolean(label: str, value: Literal_) -> bool:
    if isinstance(value, bool):
        return value
    # Entra sends booleans as the strings "True" / "False".
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidFilter(f"'{label}' is a boolean attribute: expected true or false, got {value!r}")


def _compare_datetime(column: Column, op: str, value: Literal_) -> Q:
    lhs = Instant(column.expression) if column.in_json else column.expression
    if op == "pr":
        if column.in_json:
            return _present_string(column)
        return _not_null(lhs, column.nullable, _everything())
    if op in ("co", "sw", "ew"):
        raise _operator_error(column.label, op, "a dateTime attribute takes eq, ne, gt, ge, lt, le and pr")
    moment = _parse_instant(column.label, value)
    rhs: Any = moment
    if column.in_json:
        rhs = Instant(Value(moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), output_field=TextField()))
    lookup = Exact(lhs, rhs) if op == "eq" else _ORDERING[op](lhs, rhs)
    return _not_null(lhs, column.nullable, Q(lookup))


def _parse_instant(label: str, value: Literal_) -> datetime:
    """An ISO 8601 date-time (or date: midnight) from a filter; without an offset it is UTC."""
    moment: datetime | None = None
    if isinstance(value, str):
        try:
            moment = parse_datetime(value.strip())
            if moment is None:
                day = parse_date(value.strip())
                moment = datetime(day.year, day.month, day.day) if day is not None else None
        except ValueError:
            moment = None
    if moment is None:
        raise InvalidFilter(f"'{label}' is a dateTime attribute: {value!r} is not an ISO 8601 date and time")
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        # 0001-01-01 at +05:00, say: before the first representable instant in UTC.
        raise InvalidFilter(f"'{label}': {value!r} is outside the range of dates stored here") from None


def _compare_number(column: Column, op: str, value: Literal_) -> Q:
    if op == "pr":
        return _not_null(column.expression, column.nullable, _everything())
    if op in ("co", "sw", "ew"):
        raise _operator_error(column.label, op, "a number takes eq, ne, gt, ge, lt, le and pr")
    rhs = NumberValue(_number(column.label, value))
    lookup = Exact(column.expression, rhs) if op == "eq" else _ORDERING[op](column.expression, rhs)
    return _not_null(column.expression, column.nullable, Q(lookup))


def _number(label: str, value: Literal_) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    raise InvalidFilter(f"'{label}' is a number attribute: expected a number, got {value!r}")


def _canonical_uuid(value: Literal_) -> uuid.UUID | None:
    """The UUID `value` spells in its canonical lower-case form; ids are caseExact, so no other spelling."""
    if not isinstance(value, str):
        return None
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    return parsed if str(parsed) == value else None


def _compare_id(column: Column, op: str, value: Literal_) -> Q:
    if op == "pr":
        return _not_null(column.expression, column.nullable, _everything())
    if op != "eq":
        raise _operator_error(column.label, op, "an identifier takes eq, ne and pr")
    parsed = _canonical_uuid(value)
    if parsed is None:
        return _nothing()
    return _not_null(column.expression, column.nullable, Q(Exact(column.expression, parsed)))


# --- the compiler ---------------------------------------------------------------------------

# `groups` filters look at the groups themselves (the seed of the nesting
# walk), not at membership rows as the registry's columns do: a seed of
# membership rows would read every member of a large group.
_GROUP_COLUMNS = {"value": "id", "display": "display_name"}


class _Compiler:
    def __init__(self, resource_type: ResourceType) -> None:
        self.resource_type = resource_type
        self.model = resource_model(resource_type)
        self.registry = get_registry()

    def node(self, node: Node) -> Q:
        if isinstance(node, And):
            return self.node(node.left) & self.node(node.right)
        if isinstance(node, Or):
            return self.node(node.left) | self.node(node.right)
        if isinstance(node, Not):
            return ~self.node(node.operand)
        if isinstance(node, ValuePath):
            return self.value_path(node)
        return self.comparison(node)

    def resolve(self, text: str) -> AttributePath:
        try:
            path = self.registry.resolve(self.resource_type, text)
        except UnknownAttribute as exc:
            raise InvalidFilter(str(exc)) from None
        if not path.attribute.filterable or (path.sub_attribute and not path.sub_attribute.filterable):
            raise InvalidFilter(f"'{path}' cannot be used in a filter")
        return path

    def comparison(self, node: Comparison) -> Q:
        path = self.resolve(node.path)
        attribute, sub, label = path.attribute, path.sub_attribute, str(path)
        if attribute.storage == "json":
            return self.json_list(attribute, label, node.op, node.value)
        if attribute.storage != "column":
            return self.multi_valued(path, node.op, node.value)
        if attribute.multi_valued:
            if attribute.column != "kind":
                raise InvalidFilter(f"'{label}' cannot be used in a filter")
            return _normalised(lambda op, value: _group_types(label, op, value), node.op, node.value)
        if attribute.type == "complex" and sub is None:
            if node.op == "pr":
                return self.complex_present(path)
            raise InvalidFilter(
                f"'{label}' is a complex attribute: compare one of its sub-attributes,"
                f" e.g. '{_example(path)}'"
            )
        target = sub or attribute
        if target.column is None:
            raise InvalidFilter(f"'{label}' cannot be used in a filter")
        return _compare_column(
            attribute_column(self.model, target.column, target, label), node.op, node.value
        )

    def complex_present(self, path: AttributePath) -> Q:
        """`name pr`: some sub-attribute has a value."""
        present = _nothing()
        for sub in path.attribute.sub_attributes:
            if sub.filterable and sub.column is not None:
                label = f"{path}.{sub.name}"
                present |= _compare_column(attribute_column(self.model, sub.column, sub, label), "pr", None)
        return present

    def multi_valued(self, path: AttributePath, op: str, value: Literal_) -> Q:
        attribute, sub = path.attribute, path.sub_attribute
        label = str(AttributePath(path.schema, attribute))
        if sub is None and op == "pr":
            return self.any_element(attribute)
        if sub is None:
            # The RFC's own examples (`emails co "x"`) read a bare multi-valued attribute as its value.
            sub = attribute.sub("value")
            if sub is None:
                raise InvalidFilter(
                    f"'{label}' has no value sub-attribute: compare one of its sub-attributes,"
                    f" e.g. '{_example(path)}'"
                )
        element_label = f"{label}.{sub.name}"
        return _normalised(
            lambda op_, value_: self.elements(
                attribute, self.element_comparison(attribute, sub, element_label, op_, value_)
            ),
            op,
            value,
        )

    def json_list(self, attribute: Attribute, label: str, op: str, value: Literal_) -> Q:
        """A list of simple values in a JSON document: some element matches (`ne`: none equals)."""
        document, *keys = (attribute.column or "").split("__")
        kind = _json_kind(attribute)
        element = Column(JSONElement(kind), kind, True, attribute.case_exact, True, label)
        return _normalised(
            lambda op_, value_: Q(JSONArrayAny(document, keys, _compare(element, op_, value_))), op, value
        )

    def value_path(self, node: ValuePath) -> Q:
        path = self.resolve(node.attribute)
        label = str(path)
        if path.sub_attribute is not None:
            raise InvalidFilter(
                f"'{label}[...]': a [...] filter follows a complex attribute, not a sub-attribute"
            )
        if path.attribute.type != "complex":
            raise InvalidFilter(
                f"'{label}' is not a complex attribute: it has no sub-attributes to filter on with [...]"
            )
        row = self.element(node.filter, path.attribute, label)
        return self.elements(path.attribute, row)

    def element(self, node: Node, attribute: Attribute, label: str) -> Q:
        """A filter inside `attr[...]`: its paths name sub-attributes of `attribute`, all on one element."""
        if isinstance(node, And):
            return self.element(node.left, attribute, label) & self.element(node.right, attribute, label)
        if isinstance(node, Or):
            return self.element(node.left, attribute, label) | self.element(node.right, attribute, label)
        if isinstance(node, Not):
            return ~self.element(node.operand, attribute, label)
        if isinstance(node, ValuePath):
            raise InvalidFilter(f"A [...] filter inside '{label}[...]' is not allowed")
        sub = attribute.sub(node.path)
        if sub is None:
            raise InvalidFilter(f"'{node.path}' is not a sub-attribute of '{label}'")
        element_label = f"{label}.{sub.name}"
        if not sub.filterable:
            raise InvalidFilter(f"'{element_label}' cannot be used in a filter")
        return _normalised(
            lambda op, value: self.element_comparison(attribute, sub, element_label, op, value),
            node.op,
            node.value,
        )

    def element_comparison(
        self, attribute: Attribute, sub: Attribute, label: str, op: str, value: Literal_
    ) -> Q:
        """One comparison on one element row (a UserValue, a Group, a Membership, or the resource itself)."""
        if attribute.storage == "members":
            if sub.name == "value":
                return _member_id(label, sub, op, value)
            return _member_type(label, op, value)
        model: type[Model] = {"groups": Group, "values": UserValue}.get(attribute.storage, self.model)
        path = _GROUP_COLUMNS.get(sub.name) if attribute.storage == "groups" else sub.column
        if path is None:
            raise InvalidFilter(f"'{label}' cannot be used in a filter")
        return _compare(attribute_column(model, path, sub, label), op, value)

    def elements(self, attribute: Attribute, row: Q) -> Q:
        """Resources with at least one element of `attribute` matching `row`."""
        if attribute.storage == "values":
            rows = UserValue.objects.filter(user=OuterRef("pk"), kind=attribute.name).filter(row)
            return Q(Exists(rows))
        if attribute.storage == "groups":
            # Direct and indirect: a member of a group nested (at any depth) in
            # a matching group is in that group too, as `groups` renders it.
            return Q(pk__in=NestedGroupUsers(Group.objects.filter(row).values("pk")))
        if attribute.storage == "members":
            # Direct members only, as Entra's `members.value eq` expects.
            return Q(Exists(Membership.objects.filter(group=OuterRef("pk")).filter(row)))
        return row

    def any_element(self, attribute: Attribute) -> Q:
        if attribute.storage == "groups":
            # Any indirect membership starts with a direct one.
            return Q(Exists(Membership.objects.filter(member_user=OuterRef("pk"))))
        return self.elements(attribute, _everything())


def _example(path: AttributePath) -> str:
    sub = next(sub for sub in path.attribute.sub_attributes if sub.filterable)
    return f"{AttributePath(path.schema, path.attribute)}.{sub.name}"


def _member_id(label: str, sub: Attribute, op: str, value: Literal_) -> Q:
    user = attribute_column(Membership, "member_user_id", sub, label)
    group = attribute_column(Membership, "member_group_id", sub, label)
    if op == "pr":
        return _everything()
    return _compare_id(user, op, value) | _compare_id(group, op, value)


def _member_type(label: str, op: str, value: Literal_) -> Q:
    if op == "pr":
        return _everything()
    if op != "eq":
        raise _operator_error(label, op, "it takes eq, ne and pr")
    kind = _string(label, value).lower()
    if kind == "user":
        return Q(member_user__isnull=False)
    if kind == "group":
        return Q(member_group__isnull=False)
    return _nothing()


def _group_types(label: str, op: str, value: Literal_) -> Q:
    """groupTypes is ["Unified"] for a Microsoft 365 group and empty for a security group."""
    unified = Q(kind=Group.Kind.UNIFIED)
    if op == "pr":
        return unified
    if op != "eq":
        raise _operator_error(label, op, "it takes eq, ne and pr")
    return unified if _string(label, value).lower() == "unified" else _nothing()


# --- entry points ----------------------------------------------------------------------------


def compile_filter(text: str, resource_type: ResourceType) -> Q:
    """Parse and compile a SCIM filter; raise InvalidFilter with a client-facing detail."""
    try:
        node = parse_filter(text)
    except FilterSyntaxError as exc:
        raise InvalidFilter(str(exc)) from None
    return compile_node(node, resource_type)


def compile_node(node: Node, resource_type: ResourceType) -> Q:
    """Compile a parsed filter to a Q on the resource type's model."""
    return _Compiler(resource_type).node(node)


__all__ = [
    "Column",
    "Instant",
    "InvalidFilter",
    "JSONText",
    "attribute_column",
    "compile_filter",
    "compile_node",
    "resource_model",
]
