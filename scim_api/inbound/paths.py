"""Attribute paths over a raw inbound record (a SCIM User as an HR system sent it), as pure functions.

An inbound record is plain JSON that nothing has validated yet: reading it
(`resolve`, for mapping expressions and the matching key), testing it against a
SCIM filter (`matches`, for scoping) and building one (`set_path`, for mapping
targets and CSV columns) all work on the dict itself. Keys compare ignoring
case, as SCIM attribute names do; an extension's attributes are addressed with
its URN in front (`urn:contoso:hr:1.0:User:dept`), whether or not this
directory defines that schema.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from directory import extensions
from directory.columns import ENTERPRISE_COLUMNS, ENTERPRISE_USER_URN, NAME_COLUMNS, USER_COLUMNS
from directory.expressions import Expression, ExpressionError, compile_expression
from directory.models import UserValue
from scim_api.filter_parser import And, Comparison, FilterSyntaxError, Node, Not, Or, ValuePath, split_path
from scim_api.filter_parser import parse_filter as _parse_filter

ADDRESS_PARTS = ("formatted", "streetAddress", "locality", "region", "postalCode", "country")
# Enterprise attributes may be named without their URN in targets and CSV headers: the core
# User schema has no attribute of these names, so `department` can only mean one thing.
ENTERPRISE_NAMES = {name.lower(): name for name in [*ENTERPRISE_COLUMNS, "manager"]}


class PathError(ValueError):
    """A target path names no attribute the directory stores."""


def _get(container: Any, name: str) -> Any:
    if not isinstance(container, Mapping):
        return None
    if name in container:
        return container[name]
    lowered = name.lower()
    for key, value in container.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def _split_urn(record: Mapping[str, Any], path: str) -> tuple[Any, str]:
    """(the object the path reads from, the rest of the path): an extension's object for a URN path."""
    if not path.lower().startswith("urn:"):
        return record, path
    lowered = path.lower()
    candidates = [
        key
        for key in record
        if isinstance(key, str) and key.lower().startswith("urn:") and lowered.startswith(key.lower() + ":")
    ]
    if not candidates:
        return None, ""
    key = max(candidates, key=len)
    return record[key], path[len(key) + 1 :]


def lookup(record: Mapping[str, Any], path: str) -> list[Any]:
    """Every raw value `path` reaches in `record` (elements of lists flattened), in order."""
    container, rest = _split_urn(record, path.strip())
    if container is None or not rest:
        return []
    try:
        attribute, filter_text, sub = split_path(rest)
    except FilterSyntaxError:
        return []
    if filter_text is None and "." in attribute:
        attribute, _, sub = attribute.partition(".")
    value = _get(container, attribute)
    items = value if isinstance(value, list) else ([] if value is None else [value])
    if filter_text is not None:
        try:
            node = _parse_filter(filter_text)
        except FilterSyntaxError:
            return []
        items = [item for item in items if isinstance(item, Mapping) and matches(node, item)]
    if sub is None:
        return items
    found: list[Any] = []
    for item in items:
        part = _get(item, sub)
        found.extend(part if isinstance(part, list) else ([] if part is None else [part]))
    return found


def _scalar(value: Any) -> Any:
    """A value as the expression language knows them: text, integer, boolean; an object by its `value`."""
    if isinstance(value, Mapping):
        return _scalar(_get(value, "value"))
    if isinstance(value, float):
        return int(value) if value.is_integer() else repr(value)
    if isinstance(value, str | int | bool) or value is None:
        return value
    return None


def resolve(record: Mapping[str, Any], path: str) -> Any:
    """The value of `path` for a mapping expression: one value, a list when several, None when none."""
    values = [value for value in (_scalar(item) for item in lookup(record, path)) if value is not None]
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def resolver(record: Mapping[str, Any]) -> Callable[[str], Any]:
    return lambda path: resolve(record, path)


# --- filters over a record ------------------------------------------------------------------


def parse_filter(text: str) -> Node:
    return _parse_filter(text)


def matches(node: Node, record: Mapping[str, Any]) -> bool:
    """Whether `record` satisfies a SCIM filter; strings compare ignoring case (caseExact=false)."""
    if isinstance(node, And):
        return matches(node.left, record) and matches(node.right, record)
    if isinstance(node, Or):
        return matches(node.left, record) or matches(node.right, record)
    if isinstance(node, Not):
        return not matches(node.operand, record)
    if isinstance(node, ValuePath):
        elements = [item for item in lookup(record, node.attribute) if isinstance(item, Mapping)]
        return any(matches(node.filter, element) for element in elements)
    values = [_scalar(item) for item in lookup(record, node.path)]
    values = [value for value in values if value not in (None, "")]
    if node.op == "pr":
        return bool(values)
    if not values:
        # An absent attribute equals nothing, so it is "not equal" to any value but null.
        return (node.op == "ne") == (node.value is not None)
    return any(_compare(value, node) for value in values)


def _compare(value: Any, node: Comparison) -> bool:
    wanted = node.value
    op = node.op
    if wanted is None:
        return op == "ne"
    if isinstance(wanted, bool) or isinstance(value, bool):
        if isinstance(value, str):
            value = {"true": True, "false": False}.get(value.lower(), value)
        return (value == wanted) == (op == "eq") if op in ("eq", "ne") else False
    if isinstance(wanted, int | float) and not isinstance(value, int | float):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return op == "ne"
    if isinstance(wanted, str):
        value, wanted = str(value).lower(), wanted.lower()
    match op:
        case "eq":
            return bool(value == wanted)
        case "ne":
            return bool(value != wanted)
        case "co":
            return isinstance(value, str) and wanted in value
        case "sw":
            return isinstance(value, str) and value.startswith(wanted)
        case "ew":
            return isinstance(value, str) and value.endswith(wanted)
        case "gt":
            return bool(value > wanted)
        case "ge":
            return bool(value >= wanted)
        case "lt":
            return bool(value < wanted)
        case "le":
            return bool(value <= wanted)
    return False


# --- sources and targets --------------------------------------------------------------------


def compile_source(text: str) -> Expression:
    """A mapping source: a bare attribute path (`externalId`) or an expression (`Trim([title])`)."""
    stripped = text.strip()
    if not stripped:
        raise ExpressionError("empty attribute path", 0)
    if any(char in stripped for char in '[("') or stripped[0].isdigit():
        return compile_expression(stripped)
    return compile_expression(f"[{stripped}]")


def canonical_target(path: str) -> str:
    """The directory attribute a target path names, spelled canonically; PathError when none.

    Targets are what the directory stores: core User attributes (`userName`,
    `name.givenName`, `active`), typed elements of multi-valued ones
    (`emails[type eq "work"].value`, `addresses[type eq "work"].locality`), the
    enterprise extension's (`department` or its full URN path, `manager` for the
    manager's key) and the attributes of extension schemas defined in the directory.
    """
    text = path.strip()
    lowered = text.lower()
    core = {name.lower(): name for name in [*USER_COLUMNS, "active"]}
    if lowered in core:
        return core[lowered]
    if lowered.startswith("name."):
        parts = {name.lower(): name for name in NAME_COLUMNS}
        part = parts.get(lowered[len("name.") :])
        if part:
            return f"name.{part}"
        raise PathError(f"{text!r}: name has no such part")
    if lowered in ENTERPRISE_NAMES:
        return f"{ENTERPRISE_USER_URN}:{ENTERPRISE_NAMES[lowered]}"
    if lowered.startswith(ENTERPRISE_USER_URN.lower() + ":"):
        name = lowered[len(ENTERPRISE_USER_URN) + 1 :]
        if name in ("manager.value",):
            name = "manager"
        if name in ENTERPRISE_NAMES:
            return f"{ENTERPRISE_USER_URN}:{ENTERPRISE_NAMES[name]}"
        raise PathError(f"{text!r}: the enterprise extension has no such attribute")
    if lowered.startswith("urn:"):
        urn, _, name = text.rpartition(":")
        schema = extensions.definitions().schema(urn, "user")
        if schema is None:
            raise PathError(f"{text!r}: no user extension schema {urn!r} is defined in this directory")
        attribute = schema.attribute(name)
        if attribute is None:
            raise PathError(f"{text!r}: {schema.urn} has no attribute {name!r}")
        return f"{schema.urn}:{attribute.name}"
    try:
        attribute, filter_text, sub = split_path(text)
    except FilterSyntaxError as exc:
        raise PathError(f"{text!r}: {exc}") from None
    if filter_text is None and "." in attribute:
        attribute, _, sub = attribute.partition(".")
    kinds = {kind.lower(): kind for kind in UserValue.Kind.values}
    kind = kinds.get(attribute.lower())
    if kind is None:
        raise PathError(f"{text!r} is not a directory attribute")
    element_type = _element_type(filter_text, text)
    allowed = ADDRESS_PARTS if kind == UserValue.Kind.ADDRESSES else ("value",)
    sub_name = {name.lower(): name for name in allowed}.get((sub or "").lower())
    if sub_name is None:
        raise PathError(f"{text!r}: name the sub-attribute, one of {', '.join(allowed)}")
    return f'{kind}[type eq "{element_type}"].{sub_name}'


def _element_type(filter_text: str | None, text: str) -> str:
    node = None
    if filter_text is not None:
        try:
            node = _parse_filter(filter_text)
        except FilterSyntaxError:
            node = None
    if (
        not isinstance(node, Comparison)
        or node.path.lower() != "type"
        or node.op != "eq"
        or not isinstance(node.value, str)
    ):
        raise PathError(f'{text!r}: a multi-valued target names its type, as in emails[type eq "work"].value')
    return node.value


def set_path(record: dict[str, Any], target: str, value: Any) -> None:
    """Write `value` at a canonical target path (see canonical_target) into a SCIM User dict."""
    if target.lower().startswith("urn:"):
        urn, _, name = target.rpartition(":")
        container = record.setdefault(urn, {})
        if name == "manager":
            container["manager"] = {"value": "" if value is None else str(value)}
        else:
            container[name] = _typed(urn, name, value)
        return
    if target == "active":
        record["active"] = _boolean(value)
        return
    if target.startswith("name."):
        record.setdefault("name", {})[target[len("name.") :]] = value
        return
    if "[" in target:
        attribute, filter_text, sub = split_path(target)
        element_type = _element_type(filter_text, target)
        elements = record.setdefault(attribute, [])
        element = next(
            (item for item in elements if str(item.get("type", "")).lower() == element_type.lower()), None
        )
        if element is None:
            element = {"type": element_type}
            elements.append(element)
        element[sub or "value"] = value
        return
    record[target] = value


def _boolean(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "y", "active", "enabled"):
            return True
        if lowered in ("false", "0", "no", "n", "inactive", "disabled", "terminated"):
            return False
    if isinstance(value, int) and not isinstance(value, bool):
        return value != 0
    return value


def _typed(urn: str, name: str, value: Any) -> Any:
    """Text from a CSV cell or an expression, as the declared extension attribute's type wants it."""
    schema = extensions.definitions().schema(urn, "user")
    attribute = schema.attribute(name) if schema is not None else None
    if attribute is None or not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if attribute.type == "integer":
            return int(text)
        if attribute.type == "decimal":
            return float(text)
    except ValueError:
        return value  # the directory's validation names the attribute and the bad value
    if attribute.type == "boolean":
        return _boolean(text)
    return value


def deep_copy(record: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(dict(record))
