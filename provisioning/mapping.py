"""Mappings: a directory object's current state → the SCIM resource a target should hold.

The default mapping (user_payload, group_payload) applies to a target with no
mapping rows; a target's own rows (AttributeMapping, compiled into a
MappingSet) replace it per object type. Pure functions apart from
`mapping_set_for`: the delivery engine loads the user or group and the remote
ids it refers to, and passes them in. `externalId` downstream is
the directory's own immutable id, so matching on it never confuses two people
who once shared a userName or an email address.
"""

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from directory.columns import (
    CORE_GROUP_URN,
    CORE_USER_URN,
    ENTERPRISE_COLUMNS,
    ENTERPRISE_USER_URN,
    NAME_COLUMNS,
    USER_COLUMNS,
)
from directory.expressions import EvaluationError, Expression, ExpressionError, compile_expression
from directory.models import Group, User, UserValue
from provisioning import sources
from provisioning.clients import PermanentError
from provisioning.models import AttributeMapping, ObjectType, Target
from provisioning.sources import Resolver

CORE_USER = CORE_USER_URN
CORE_GROUP = CORE_GROUP_URN
ENTERPRISE_USER = ENTERPRISE_USER_URN

# externalId is not among them: downstream it carries the directory's immutable id.
USER_STRINGS = {name: column for name, column in USER_COLUMNS.items() if name != "externalId"}
NAME_PARTS = NAME_COLUMNS
ENTERPRISE_STRINGS = ENTERPRISE_COLUMNS
# Multi-valued attributes pushed by default. Roles, entitlements and
# certificates are left to per-target mappings: what they mean is the target's.
PUSHED_VALUES = (UserValue.Kind.EMAILS, UserValue.Kind.PHONE_NUMBERS, UserValue.Kind.ADDRESSES)


def user_payload(target: Target, user: User, *, manager_remote_id: str | None = None) -> dict[str, Any]:
    """The User resource `target` should hold for `user` (no id, no password, no read-only attributes)."""
    payload: dict[str, Any] = {"schemas": [CORE_USER], "externalId": str(user.pk)}
    for scim_name, field in USER_STRINGS.items():
        if value := getattr(user, field):
            payload[scim_name] = value
    name = {
        scim_name: getattr(user, field) for scim_name, field in NAME_PARTS.items() if getattr(user, field)
    }
    if name:
        payload["name"] = name
    payload["active"] = bool(user.active)
    values: dict[str, list[dict[str, Any]]] = {}
    for value in sources.user_value_rows(user):
        if value.kind in PUSHED_VALUES:
            values.setdefault(value.kind, []).append(sources.complex_value(value))
    for kind in PUSHED_VALUES:
        if values.get(kind):
            payload[kind] = values[kind]
    enterprise = {
        scim_name: getattr(user, f) for scim_name, f in ENTERPRISE_STRINGS.items() if getattr(user, f)
    }
    if manager_remote_id:
        enterprise["manager"] = {"value": manager_remote_id}
    if enterprise:
        payload["schemas"] = [CORE_USER, ENTERPRISE_USER]
        payload[ENTERPRISE_USER] = enterprise
    return payload


def group_payload(target: Target, group: Group) -> dict[str, Any]:
    """The Group resource `target` should hold for `group`, members left out (they are pushed as deltas)."""
    payload: dict[str, Any] = {"schemas": [CORE_GROUP], "externalId": str(group.pk)}
    payload["displayName"] = group.display_name
    return payload


def payload_hash(payload: Mapping[str, Any]) -> str:
    """A stable digest of a payload: equal digests mean nothing to send."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def matching_value(payload: Mapping[str, Any], attribute: str) -> str | None:
    """The payload's value for a matching attribute (`userName`, `externalId`, `emails.value`...)."""
    head, _, rest = attribute.partition(".")
    value = payload.get(head)
    if rest and isinstance(value, list):
        primary = [item for item in value if isinstance(item, dict) and item.get("primary")]
        value = (primary or value or [{}])[0]
    if rest and isinstance(value, dict):
        value = value.get(rest)
    return value if isinstance(value, str) and value else None


def modified_properties(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{attribute: [old, new]} for every top-level (and extension sub-) attribute that differs."""
    changes: dict[str, list[Any]] = {}
    for key in sorted(set(old) | set(new)):
        if key == "schemas":
            continue
        before, after = old.get(key), new.get(key)
        if key.startswith("urn:") and isinstance(before or after, dict):
            for sub in sorted(set(before or {}) | set(after or {})):
                sub_before, sub_after = (before or {}).get(sub), (after or {}).get(sub)
                if sub_before != sub_after:
                    changes[f"{key}:{sub}"] = [sub_before, sub_after]
        elif before != after:
            changes[key] = [before, after]
    return changes


def patch_operations(changes: Mapping[str, list[Any]], *, style: str) -> list[dict[str, Any]]:
    """PATCH operations that turn the old values of `changes` into the new ones.

    One operation per attribute with a path: `replace` for a new value (a whole
    complex or multi-valued attribute at once), `remove` for one that went away.
    The Entra style capitalises the op names, as Entra's own requests do.
    """
    operations: list[dict[str, Any]] = []
    for path, (_, after) in changes.items():
        if after is None:
            operations.append({"op": _op("remove", style), "path": path})
        else:
            operations.append({"op": _op("replace", style), "path": path, "value": after})
    return operations


def _op(name: str, style: str) -> str:
    return name.capitalize() if style == "entra" else name


# --- per-target attribute mappings --------------------------------------------------------------
#
# A target with AttributeMapping rows for an object type gets the payload those
# rows describe instead of the default one above. Each row is compiled once
# (path parsed, expression checked) and evaluated per object.

# Attributes a target never receives from a mapping: the target owns `id` and
# `meta`, `schemas` follows from the mapped attributes, group members travel as
# PATCH deltas, and the directory's password hash must never leave it.
RESERVED_TARGET_ATTRIBUTES = frozenset({"id", "meta", "schemas", "password", "members"})
MULTI_VALUED_TARGETS = frozenset(kind.lower() for kind in sources.MULTI_VALUED) | {"groups"}
REQUIRED_TARGET_ATTRIBUTE = {ObjectType.USER.value: "userName", ObjectType.GROUP.value: "displayName"}
CORE_SCHEMA = {ObjectType.USER.value: CORE_USER, ObjectType.GROUP.value: CORE_GROUP}


class MappingError(ValueError):
    """A mapping row that cannot be saved; `field` names the form field at fault."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class MappingFailed(PermanentError):
    """A mapping could not compute a value for this object (e.g. an expression met a bad date)."""


@dataclass(frozen=True)
class MappingRule:
    """One compiled mapping row."""

    target_path: sources.ValuePath
    target_attribute: str
    source_kind: str
    source: str
    default_value: str = ""
    on_create_only: bool = False
    expression: Expression | None = None

    def value(self, resolve_complex: Resolver, resolve_plain: Resolver) -> Any:
        if self.source_kind == AttributeMapping.SourceKind.CONSTANT:
            result: Any = self.source
        elif self.source_kind == AttributeMapping.SourceKind.EXPRESSION:
            assert self.expression is not None
            try:
                result = self.expression.evaluate(resolve_plain)
            except EvaluationError as exc:
                raise MappingFailed(f"mapping of {self.target_attribute}: {exc}") from None
        else:
            result = resolve_complex(self.source)
        if _is_empty(result) and self.default_value != "":
            return self.default_value
        return result


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def check_target_path(text: str, object_type: str) -> sources.ValuePath:
    """Parse a target attribute path and check its shape; MappingError if it cannot be written."""
    try:
        path = sources.parse_path(text)
    except sources.PathError as exc:
        raise MappingError(str(exc), field="target_attribute") from None
    name = path.attribute.lower()
    if not path.urn and name in RESERVED_TARGET_ATTRIBUTES:
        raise MappingError(f"{path.attribute!r} cannot be mapped", field="target_attribute")
    if not path.urn and name in MULTI_VALUED_TARGETS and path.sub_attribute and not path.filter_attribute:
        raise MappingError(
            f"{path.attribute} is multi-valued: choose an element, e.g. "
            f'{path.attribute}[type eq "work"].{path.sub_attribute}',
            field="target_attribute",
        )
    if path.filter_attribute and not path.urn and name not in MULTI_VALUED_TARGETS:
        # Custom multi-valued attributes of the target are allowed under their schema URN only.
        raise MappingError(
            f"{path.attribute} is not multi-valued: it takes no [filter]", field="target_attribute"
        )
    if object_type == ObjectType.GROUP and path.urn.lower() == ENTERPRISE_USER.lower():
        raise MappingError("a group has no enterprise User extension", field="target_attribute")
    return path


def compile_rule(
    *,
    object_type: str,
    target_attribute: str,
    source_kind: str,
    source: str,
    default_value: str = "",
    apply: str = AttributeMapping.Apply.ALWAYS,
) -> MappingRule:
    """Check one mapping row and compile it; MappingError names the field at fault."""
    target_path = check_target_path(target_attribute, object_type)
    if source_kind not in AttributeMapping.SourceKind.values:
        raise MappingError(f"unknown source kind {source_kind!r}", field="source_kind")
    if apply not in AttributeMapping.Apply.values:
        raise MappingError(f"unknown apply mode {apply!r}", field="apply")
    expression: Expression | None = None
    if source_kind == AttributeMapping.SourceKind.ATTRIBUTE:
        try:
            sources.check_source_path(source, object_type)
        except sources.PathError as exc:
            raise MappingError(str(exc), field="source") from None
    elif source_kind == AttributeMapping.SourceKind.EXPRESSION:
        try:
            expression = compile_expression(source)
            for path in expression.attributes:
                sources.check_source_path(path, object_type)
        except ExpressionError as exc:
            raise MappingError(str(exc), field="source") from None
        except sources.PathError as exc:
            raise MappingError(f"unknown attribute in the expression: {exc}", field="source") from None
    elif source == "" and default_value == "":
        raise MappingError("a constant needs a value", field="source")
    return MappingRule(
        target_path=target_path,
        target_attribute=target_attribute.strip(),
        source_kind=source_kind,
        source=source.strip() if source_kind == AttributeMapping.SourceKind.ATTRIBUTE else source,
        default_value=default_value,
        on_create_only=apply == AttributeMapping.Apply.ON_CREATE,
        expression=expression,
    )


@dataclass(frozen=True)
class Payloads:
    """What a target receives: `create` for a POST, `update` (no on-create-only attributes) afterwards."""

    create: dict[str, Any]
    update: dict[str, Any]


@dataclass(frozen=True)
class MappingSet:
    """A target's compiled mappings for one object type."""

    object_type: str
    rules: tuple[MappingRule, ...]

    def build(self, resolve_complex: Resolver, resolve_plain: Resolver) -> Payloads:
        core = CORE_SCHEMA[self.object_type]
        create: dict[str, Any] = {"schemas": [core]}
        update: dict[str, Any] = {"schemas": [core]}
        for rule in self.rules:
            value = rule.value(resolve_complex, resolve_plain)
            if _is_empty(value):
                continue
            set_path(create, rule.target_path, value)
            if not rule.on_create_only:
                set_path(update, rule.target_path, value)
        return Payloads(create=create, update=update)


def check_mapping_set(object_type: str, rules: Sequence[MappingRule]) -> None:
    """A whole set: no attribute mapped twice, and the attribute a target needs to create is there."""
    seen: set[str] = set()
    for rule in rules:
        key = rule.target_attribute.lower()
        if key in seen:
            raise MappingError(f"{rule.target_attribute} is mapped twice", field="target_attribute")
        seen.add(key)
    required = REQUIRED_TARGET_ATTRIBUTE[object_type]
    if rules and required.lower() not in seen:
        raise MappingError(f"a {object_type} mapping must fill {required}")


def _coerce(path: sources.ValuePath, value: Any) -> Any:
    name = path.attribute.lower()
    if not path.urn and name == "active" and not path.sub_attribute:
        if isinstance(value, str):
            return value.strip().lower() not in ("false", "0", "no", "")
        return bool(value)
    if not path.urn and name in MULTI_VALUED_TARGETS and not path.filter_attribute:
        items = value if isinstance(value, list) else [value]
        return [item if isinstance(item, dict) else {"value": item} for item in items]
    if path.urn.lower() == ENTERPRISE_USER.lower() and name == "manager" and not path.sub_attribute:
        return value if isinstance(value, dict) else {"value": value}
    return value


def set_path(payload: dict[str, Any], path: sources.ValuePath, value: Any) -> None:
    """Write `value` at `path` in a SCIM resource, creating the containers the path goes through."""
    container = payload
    if path.urn:
        urn = next((key for key in payload if key.lower() == path.urn.lower()), path.urn)
        container = payload.setdefault(urn, {})
        if urn not in payload["schemas"]:
            payload["schemas"].append(urn)
    value = _coerce(path, value)
    if path.filter_attribute:
        elements = container.setdefault(path.attribute, [])
        if not isinstance(elements, list):
            elements = container[path.attribute] = [elements]
        element = next((e for e in elements if isinstance(e, dict) and path.element_matches(e)), None)
        if element is None:
            element = {path.filter_attribute: path.filter_value}
            elements.append(element)
        if path.sub_attribute:
            element[path.sub_attribute] = value
        elif isinstance(value, dict):
            element.update(value)
        else:
            element["value"] = value
        return
    if path.sub_attribute:
        parent = container.setdefault(path.attribute, {})
        if not isinstance(parent, dict):
            parent = container[path.attribute] = {}
        parent[path.sub_attribute] = value
        return
    container[path.attribute] = value


# Seeds: the default mapping as rows, so an operator edits from what the target receives today.
DEFAULT_USER_ROWS: tuple[tuple[str, str], ...] = (
    ("externalId", "id"),
    *((name, name) for name in USER_STRINGS),
    *((f"name.{part}", f"name.{part}") for part in NAME_PARTS),
    ("active", "active"),
    *((kind, kind) for kind in PUSHED_VALUES),
    *((f"{ENTERPRISE_USER}:{name}", name) for name in ENTERPRISE_STRINGS),
    (f"{ENTERPRISE_USER}:manager", "manager"),
)
DEFAULT_GROUP_ROWS: tuple[tuple[str, str], ...] = (("externalId", "id"), ("displayName", "displayName"))


def default_rows(object_type: str) -> tuple[tuple[str, str], ...]:
    """(target attribute, source attribute) pairs equivalent to the default mapping."""
    return DEFAULT_USER_ROWS if object_type == ObjectType.USER else DEFAULT_GROUP_ROWS


_compiled: dict[tuple[int, str, str], tuple[int, MappingSet | None]] = {}
_compiled_lock = threading.Lock()


def mapping_set_for(target: Target, object_type: str) -> MappingSet | None:
    """The target's compiled mappings for `object_type`, or None for the default mapping.

    The one function here that reads the database: once per process and
    mapping revision (the target row carries the revision, so a change made
    anywhere is picked up by the next delivery).
    """
    # `created` too: a rolled-back target's id can be handed out again (SQLite), its revision restarts.
    key = (target.pk, target.created.isoformat(), object_type)
    with _compiled_lock:
        cached = _compiled.get(key)
    if cached is not None and cached[0] == target.mapping_revision:
        return cached[1]
    rows = AttributeMapping.objects.filter(target_id=target.pk, object_type=object_type).order_by(
        "position", "id"
    )
    try:
        rules = tuple(
            compile_rule(
                object_type=object_type,
                target_attribute=row.target_attribute,
                source_kind=row.source_kind,
                source=row.source,
                default_value=row.default_value,
                apply=row.apply,
            )
            for row in rows
        )
    except MappingError as exc:
        # Rows are checked when saved; one written some other way fails its deliveries, loudly.
        raise MappingFailed(f"the target's {object_type} mappings cannot be used: {exc}") from None
    compiled = MappingSet(object_type, rules) if rules else None
    with _compiled_lock:
        _compiled[key] = (target.mapping_revision, compiled)
    return compiled


def user_payloads(
    target: Target, user: User, *, manager_remote_id: str | None = None, mappings: MappingSet | None = None
) -> Payloads:
    """The create and update payloads for `user`: from `mappings` when given, else the default mapping."""
    if mappings is None:
        payload = user_payload(target, user, manager_remote_id=manager_remote_id)
        return Payloads(create=payload, update=payload)
    return mappings.build(
        sources.user_resolver(user, manager=manager_remote_id, complex_values=True),
        sources.user_resolver(user, manager=manager_remote_id),
    )


def group_payloads(target: Target, group: Group, *, mappings: MappingSet | None = None) -> Payloads:
    if mappings is None:
        payload = group_payload(target, group)
        return Payloads(create=payload, update=payload)
    return mappings.build(sources.group_resolver(group, complex_values=True), sources.group_resolver(group))


def create_only_part(create: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """What a create payload has beyond the update payload (top-level and extension sub-attributes)."""
    extra: dict[str, Any] = {}
    for key, value in create.items():
        if key == "schemas":
            continue
        if key not in update:
            extra[key] = value
        elif key.startswith("urn:") and isinstance(value, dict) and isinstance(update[key], dict):
            inner = {sub: item for sub, item in value.items() if sub not in update[key]}
            if inner:
                extra[key] = inner
    return extra


def with_create_only(payload: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`payload` plus the on-create-only values first sent (a PUT replaces the whole resource)."""
    merged = dict(payload)
    for key, value in extra.items():
        if key.startswith("urn:") and isinstance(value, dict):
            merged[key] = {**value, **(merged.get(key) or {})}
            if key not in merged.get("schemas", []):
                merged["schemas"] = [*merged.get("schemas", []), key]
        elif key not in merged:
            merged[key] = value
    return merged
