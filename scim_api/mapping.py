"""SCIM JSON ⇄ directory data, as pure functions (no queries: callers pass what they loaded).

`*_to_scim` render the full representation (absent values omitted, never
null); `*_from_scim` turn a full representation (a POST or PUT body, or the
result of applying a PATCH) into the keyword arguments of directory services.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from directory.columns import ENTERPRISE_COLUMNS, NAME_COLUMNS, USER_COLUMNS
from directory.exceptions import InvalidValue
from directory.models import Group, User, UserValue
from directory.selectors import StoredValue
from scim_api.exceptions import ScimError
from scim_api.schema import (
    COMMON_SCHEMA,
    CORE_GROUP,
    CORE_USER,
    ENTERPRISE_USER,
    ENTRA_GROUP,
    ENTRA_USER,
    GROUP,
    USER,
    Attribute,
    ResourceType,
    Schema,
    custom_extensions,
)

# SCIM name → model field, for the single-valued string attributes stored in columns (directory.columns).
USER_SIMPLE = USER_COLUMNS
NAME_PARTS = NAME_COLUMNS
ENTERPRISE_SIMPLE = ENTERPRISE_COLUMNS
ADDRESS_PARTS = ("formatted", "streetAddress", "locality", "region", "postalCode", "country")
MULTI_VALUED = tuple(UserValue.Kind.values)
# Attributes a client may send but the server owns: ignored on input (RFC 7644 §3.5.1).
READ_ONLY_KEYS = frozenset({"id", "meta", "groups", "schemas"})


@dataclass(frozen=True)
class GroupRef:
    """A group a user belongs to, for the User `groups` attribute."""

    id: uuid.UUID
    display: str
    direct: bool


@dataclass(frozen=True)
class MemberRef:
    """A member of a group, for the Group `members` attribute."""

    id: uuid.UUID
    type: str  # "User" or "Group"
    display: str


@dataclass
class UserInput:
    """Keyword arguments for services.user_create / user_update."""

    fields: dict[str, Any] = field(default_factory=dict)
    values: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    password: str | None = None
    password_given: bool = False


@dataclass
class GroupInput:
    fields: dict[str, Any] = field(default_factory=dict)
    members: list[dict[str, Any]] | None = None


def location(base_url: str, resource_type: ResourceType, resource_id: uuid.UUID | str) -> str:
    return f"{base_url}{resource_type.endpoint}/{resource_id}"


def _meta(
    obj: User | Group, resource_type: ResourceType, base_url: str, resource_id: str | None = None
) -> dict[str, Any]:
    return {
        "resourceType": resource_type.name,
        "created": _timestamp(obj.created),
        "lastModified": _timestamp(obj.last_modified),
        "location": location(base_url, resource_type, resource_id or obj.pk),
        "version": etag(obj.version),
    }


def etag(version: int) -> str:
    return f'W/"{version}"'


def _timestamp(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    # Leaves out "", None, [] and {}, keeps False and 0: the empty kinds are all falsy, so a truthy
    # value (nearly all of them) is one test.
    if value or not (value is None or isinstance(value, str | list | dict)):
        target[key] = value


# --- users --------------------------------------------------------------------------------


def _value_to_scim(value: UserValue | StoredValue) -> dict[str, Any]:
    element: dict[str, Any] = {}
    if value.kind == UserValue.Kind.ADDRESSES:
        for part in ADDRESS_PARTS:
            _put(element, part, value.address.get(part))
    else:
        _put(element, "value", value.value)
    _put(element, "display", value.display)
    _put(element, "type", value.type)
    if value.primary:
        element["primary"] = True
    return element


def user_to_scim(
    user: User,
    *,
    values: Iterable[UserValue | StoredValue],
    base_url: str,
    groups: Iterable[GroupRef] | None = None,
    manager_display: str | None = None,
) -> dict[str, Any]:
    """The full SCIM representation of a user. `groups=None` leaves the attribute out (not loaded)."""
    user_id = str(user.pk)
    resource: dict[str, Any] = {"schemas": [CORE_USER], "id": user_id}
    for scim_name, column in USER_SIMPLE.items():
        _put(resource, scim_name, getattr(user, column))
    name: dict[str, Any] = {}
    for scim_name, column in NAME_PARTS.items():
        _put(name, scim_name, getattr(user, column))
    _put(resource, "name", name)
    resource["active"] = user.active

    by_kind: dict[str, list[dict[str, Any]]] = {}
    for value in sorted(values, key=lambda v: (v.kind, v.position)):
        by_kind.setdefault(value.kind, []).append(_value_to_scim(value))
    for kind in MULTI_VALUED:
        _put(resource, kind, by_kind.get(kind))
    if groups is not None:
        resource["groups"] = [
            {
                "value": str(group.id),
                "$ref": location(base_url, GROUP, group.id),
                "display": group.display,
                "type": "direct" if group.direct else "indirect",
            }
            for group in groups
        ]

    enterprise: dict[str, Any] = {}
    for scim_name, column in ENTERPRISE_SIMPLE.items():
        _put(enterprise, scim_name, getattr(user, column))
    if user.manager_id is not None:
        manager = {"value": str(user.manager_id), "$ref": location(base_url, USER, user.manager_id)}
        _put(manager, "displayName", manager_display)
        enterprise["manager"] = manager
    if enterprise:
        resource["schemas"].append(ENTERPRISE_USER)
        resource[ENTERPRISE_USER] = enterprise
    for urn, data in sorted((user.extensions or {}).items()):
        if data:
            resource["schemas"].append(urn)
            resource[urn] = data
    resource["meta"] = _meta(user, USER, base_url, user_id)
    return resource


def _require(kind: type | tuple[type, ...], value: Any, label: str) -> Any:
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        expected = {"str": "a string", "bool": "a boolean", "dict": "an object", "list": "a list"}.get(
            names, names
        )
        raise InvalidValue(f"{label} must be {expected}, got {value!r}", field=label)
    return value


def _string(value: Any, label: str) -> str:
    if value is None:
        return ""
    return _require(str, value, label)  # type: ignore[no-any-return]


def _keys(data: Mapping[str, Any], attribute: Attribute | None, label: str) -> dict[str, Any]:
    """Match the keys of an object to canonical (sub-)attribute names, ignoring case."""
    canonical: dict[str, Any] = {}
    for key, value in data.items():
        sub = attribute.sub(key) if attribute is not None else None
        if sub is None:
            raise InvalidValue(f"'{key}' is not a sub-attribute of {label}", field=label)
        canonical[sub.name] = value
    return canonical


def _values_from_scim(kind: str, raw: Any) -> list[dict[str, Any]]:
    items = _require(list, raw if raw is not None else [], kind)
    attribute = USER.schema.attribute(kind)
    result = []
    for item in items:
        element = _keys(_require(dict, item, kind), attribute, kind)
        entry: dict[str, Any] = {
            "value": _string(element.get("value"), f"{kind}.value"),
            "display": _string(element.get("display"), f"{kind}.display"),
            "type": _string(element.get("type"), f"{kind}.type"),
            "primary": _require(bool, element.get("primary", False), f"{kind}.primary"),
        }
        if kind == UserValue.Kind.ADDRESSES:
            entry["address"] = {
                part: _string(element[part], f"addresses.{part}")
                for part in ADDRESS_PARTS
                if element.get(part)
            }
            if not entry["address"]:
                continue
        elif not entry["value"]:
            # An element with no value carries nothing to store (clients send {"type": "work"} stubs).
            continue
        result.append(entry)
    return result


def _parse_uuid(value: Any, label: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidValue(f"{label} must be a resource id, got {value!r}", field=label) from None


Mode = Literal["create", "put", "patch"]


def _clears(mode: Mode, data: Mapping[str, Any], urn: str | None = None) -> bool:
    """Whether an attribute missing from the body is cleared.

    POST sets only what it names. PATCH hands over the whole resource after its
    operations, so anything missing was removed. PUT replaces the core schema and
    each extension the body carries; an extension it leaves out is kept, because a
    client that does not know an extension (Okta and Entra's group extension) must
    not wipe it.
    """
    if mode == "create":
        return False
    return mode == "patch" or urn is None or urn in data


def user_from_scim(
    resource: Mapping[str, Any], *, mode: Mode, current_extensions: Mapping[str, Any] | None = None
) -> UserInput:
    """Service arguments from a User representation (a POST or PUT body, or a PATCH result).

    `active` is never cleared (a PUT that omits it must not deactivate anyone) and
    `password` changes only when given.
    """
    _require(dict, resource, "The resource")
    data = _canonical_top_level(resource, USER)
    result = UserInput()
    fields = result.fields
    clear = _clears(mode, data)
    for scim_name, column in USER_SIMPLE.items():
        if scim_name in data or clear:
            fields[column] = _string(data.get(scim_name), scim_name)
    name = _keys(_require(dict, data.get("name") or {}, "name"), USER.schema.attribute("name"), "name")
    for scim_name, column in NAME_PARTS.items():
        if scim_name in name or clear or "name" in data:
            fields[column] = _string(name.get(scim_name), f"name.{scim_name}")
    if "active" in data and data["active"] is not None:
        fields["active"] = _require(bool, data["active"], "active")
    for kind in MULTI_VALUED:
        if kind in data or clear:
            result.values[kind] = _values_from_scim(kind, data.get(kind))
    if "password" in data:
        result.password_given = True
        result.password = _string(data["password"], "password") or None

    enterprise = _extension(data, ENTERPRISE_USER)
    clear_enterprise = _clears(mode, data, ENTERPRISE_USER)
    for scim_name, column in ENTERPRISE_SIMPLE.items():
        if scim_name in enterprise or clear_enterprise:
            fields[column] = _string(enterprise.get(scim_name), scim_name)
    if "manager" in enterprise or clear_enterprise:
        manager = enterprise.get("manager")
        if manager in (None, "", {}):
            fields["manager_id"] = None
        else:
            manager = _keys(_require(dict, manager, "manager"), _enterprise_attribute("manager"), "manager")
            manager_id = manager.get("value") or _id_from_ref(manager.get("$ref"))
            fields["manager_id"] = _parse_uuid(manager_id, "manager.value") if manager_id else None

    present = _other_extensions(data, validated={ENTRA_USER: _entra_user})
    extensions = _merge_extensions(
        mode, _custom_objects(USER, present, mode, current_extensions), current_extensions
    )
    _check_custom_required(USER, mode, extensions, current_extensions)
    if extensions is not None:
        fields["extensions"] = extensions
    return result


def _entra_user(data: Mapping[str, Any]) -> dict[str, Any]:
    entra = _extension(data, ENTRA_USER)
    return {key: _string(value, key) for key, value in entra.items() if value not in (None, "")}


def _merge_extensions(
    mode: Mode, present: dict[str, dict[str, Any]], current: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The `extensions` JSON to store, or None to leave it alone."""
    if mode == "patch":
        return {urn: data for urn, data in present.items() if data}
    if mode == "create":
        return {urn: data for urn, data in present.items() if data} if present else None
    if not present:
        return None
    merged = dict(current or {})
    for urn, data in present.items():
        if data:
            merged[urn] = data
        else:
            merged.pop(urn, None)
    return merged


def _id_from_ref(ref: Any) -> str | None:
    """The id at the end of a resource URI ($ref), for clients that send only the reference."""
    if not isinstance(ref, str) or not ref.strip("/"):
        return None
    return ref.rstrip("/").rsplit("/", 1)[-1]


def _enterprise_attribute(name: str) -> Attribute | None:
    for ext, _ in USER.extensions:
        if ext.id == ENTERPRISE_USER:
            return ext.attribute(name)
    return None


def _canonical_top_level(resource: Mapping[str, Any], resource_type: ResourceType) -> dict[str, Any]:
    """Top-level keys in canonical case, extension URNs canonical, read-only keys dropped."""
    data: dict[str, Any] = {}
    schema_ids = {schema_id.lower(): schema_id for schema_id in resource_type.schema_ids}
    for key, value in resource.items():
        lowered = key.lower()
        if lowered in READ_ONLY_KEYS:
            continue
        if lowered in schema_ids:
            data[schema_ids[lowered]] = value
            continue
        if lowered.startswith("urn:"):
            data[key] = value  # another extension: kept per URN
            continue
        attribute = resource_type.schema.attribute(key) or _common(key)
        if attribute is None:
            raise InvalidValue(f"'{key}' is not an attribute of {resource_type.name}", field=key)
        data[attribute.name] = value
    return data


def _common(key: str) -> Attribute | None:
    attribute = COMMON_SCHEMA.attribute(key)
    return attribute if attribute is not None and attribute.name == "externalId" else None


def _extension(data: Mapping[str, Any], urn: str) -> dict[str, Any]:
    raw = data.get(urn) or {}
    _require(dict, raw, urn)
    schema = next(ext for rt in (USER, GROUP) for ext, _ in rt.extensions if ext.id == urn)
    canonical: dict[str, Any] = {}
    for key, value in raw.items():
        attribute = schema.attribute(key)
        if attribute is None:
            raise InvalidValue(f"'{key}' is not an attribute of {urn}", field=key)
        canonical[attribute.name] = value
    return canonical


def _other_extensions(data: Mapping[str, Any], *, validated: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Extension objects stored in the `extensions` JSON, by URN: declared ones validated, others as sent."""
    present: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in validated:
            present[key] = validated[key](data)
        elif key.lower().startswith("urn:") and key not in (ENTERPRISE_USER, ENTRA_GROUP):
            present[key] = dict(_require(dict, value, key)) if value else {}
    return present


# --- operator-defined extensions ----------------------------------------------------------

# Kept from the stored resource when a POST or PUT leaves them out: the client cannot
# set readOnly values, may set immutable ones only once, and never reads writeOnly ones back.
_KEPT_WHEN_OMITTED = ("readOnly", "immutable", "writeOnly")


def _custom_objects(
    resource_type: ResourceType,
    present: dict[str, dict[str, Any]],
    mode: Mode,
    current: Mapping[str, Any] | None,
) -> dict[str, dict[str, Any]]:
    """`present` with each operator-defined extension's object in canonical attribute names.

    Values are type-checked by the directory services; here are the SCIM rules:
    unknown names are refused, readOnly values in a POST or PUT are ignored
    (RFC 7644 §3.5.1) and the stored ones kept, and an immutable value cannot
    change once set. A PATCH result is taken as it is: the PATCH engine applied
    mutability already.
    """
    result = dict(present)
    for schema, _ in custom_extensions(resource_type.object_type):
        if schema.id not in present:
            continue
        stored = (current or {}).get(schema.id) or {}
        result[schema.id] = _custom_object(schema, present[schema.id], mode, stored)
    return result


def _custom_object(
    schema: Schema, raw: Mapping[str, Any], mode: Mode, stored: Mapping[str, Any]
) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in raw.items():
        if key.lower() == "schemas":
            continue  # clients built on scim2-models repeat the extension's id inside it
        attribute = schema.attribute(key)
        if attribute is None:
            # A value stored before the schema was declared comes back as it is (from GET, or in a
            # PATCH result): only a new one is refused.
            if mode == "patch" or (key in stored and stored[key] == value):
                obj[key] = value
                continue
            raise InvalidValue(f"'{key}' is not an attribute of {schema.id}", field=key)
        if mode != "patch" and attribute.mutability == "readOnly":
            continue
        if value not in (None, "", []):
            obj[attribute.name] = value
    if mode == "patch":
        return obj
    for attribute in schema.attributes:
        old = stored.get(attribute.name)
        if old in (None, "", []) or attribute.mutability not in _KEPT_WHEN_OMITTED:
            continue
        new = obj.get(attribute.name)
        if new is None or attribute.mutability == "readOnly":
            obj[attribute.name] = old
        elif attribute.mutability == "immutable" and new != old:
            raise ScimError(
                f"{schema.id}:{attribute.name} is immutable: it is {old!r} and cannot change",
                scim_type="mutability",
            )
    return obj


def _check_custom_required(
    resource_type: ResourceType,
    mode: Mode,
    extensions: Mapping[str, Any] | None,
    current: Mapping[str, Any] | None,
) -> None:
    """On POST and PUT: required extensions present, and required attributes of present ones set."""
    if mode == "patch":
        return  # the PATCH engine refuses to remove a required attribute
    final = extensions if extensions is not None else (current or {})
    for schema, required in custom_extensions(resource_type.object_type):
        obj = final.get(schema.id)
        if not obj:
            if required:
                raise InvalidValue(f"The extension {schema.id} is required", field=schema.id)
            continue
        for attribute in schema.attributes:
            # A client cannot send a readOnly value, so it cannot be required of one.
            if (
                attribute.required
                and attribute.mutability != "readOnly"
                and obj.get(attribute.name) in (None, "")
            ):
                raise InvalidValue(f"{schema.id}:{attribute.name} is required", field=attribute.name)


# --- groups ---------------------------------------------------------------------------------


def group_to_scim(
    group: Group, *, base_url: str, members: Iterable[MemberRef] | None = None
) -> dict[str, Any]:
    """The full SCIM representation of a group. `members=None` leaves the attribute out (not loaded)."""
    group_id = str(group.pk)
    resource: dict[str, Any] = {"schemas": [CORE_GROUP, ENTRA_GROUP], "id": group_id}
    _put(resource, "externalId", group.external_id)
    resource["displayName"] = group.display_name
    if members is not None:
        users, groups = f"{base_url}{USER.endpoint}/", f"{base_url}{GROUP.endpoint}/"
        rendered = resource["members"] = []
        for member in members:
            member_id = str(member.id)  # once: a UUID's str() is Python code, and a group may have 100k
            rendered.append(
                {
                    "value": member_id,
                    "$ref": (users if member.type == "User" else groups) + member_id,
                    "display": member.display,
                    "type": member.type,
                }
            )
    entra: dict[str, Any] = {}
    if group.kind == Group.Kind.UNIFIED:
        entra["groupTypes"] = ["Unified"]
    for scim_name, flag in (("mailEnabled", group.mail_enabled), ("securityEnabled", group.security_enabled)):
        if flag is not None:
            entra[scim_name] = flag
    _put(entra, "description", group.description)
    _put(entra, "mailNickname", group.mail_nickname)
    if entra:
        resource[ENTRA_GROUP] = entra
    else:
        resource["schemas"].remove(ENTRA_GROUP)
    for urn, data in sorted((group.extensions or {}).items()):
        if data:
            resource["schemas"].append(urn)
            resource[urn] = data
    resource["meta"] = _meta(group, GROUP, base_url, group_id)
    return resource


def group_from_scim(
    resource: Mapping[str, Any], *, mode: Mode, current_extensions: Mapping[str, Any] | None = None
) -> GroupInput:
    """Service arguments from a Group representation; `members` only when the body has them (or a PUT)."""
    _require(dict, resource, "The resource")
    data = _canonical_top_level(resource, GROUP)
    result = GroupInput()
    fields = result.fields
    clear = _clears(mode, data)
    if "displayName" in data or clear:
        fields["display_name"] = _string(data.get("displayName"), "displayName")
    if "externalId" in data or clear:
        fields["external_id"] = _string(data.get("externalId"), "externalId")
    if "members" in data:
        members = _require(list, data["members"] if data["members"] is not None else [], "members")
        result.members = [_require(dict, member, "members") for member in members]
    elif mode == "put":
        result.members = []

    entra = _extension(data, ENTRA_GROUP) if ENTRA_GROUP in data else {}
    clear_entra = _clears(mode, data, ENTRA_GROUP)
    if "groupTypes" in entra or clear_entra:
        types = _require(list, entra.get("groupTypes") or [], "groupTypes")
        unified = any(isinstance(t, str) and t.lower() == "unified" for t in types)
        fields["kind"] = Group.Kind.UNIFIED if unified else Group.Kind.SECURITY
    for scim_name, column in (("description", "description"), ("mailNickname", "mail_nickname")):
        if scim_name in entra or clear_entra:
            fields[column] = _string(entra.get(scim_name), scim_name)
    for scim_name, column in (("mailEnabled", "mail_enabled"), ("securityEnabled", "security_enabled")):
        if entra.get(scim_name) is not None:
            fields[column] = _require(bool, entra[scim_name], scim_name)
        elif clear_entra:
            fields[column] = None  # unassigned
    present = _custom_objects(GROUP, _other_extensions(data, validated={}), mode, current_extensions)
    extensions = _merge_extensions(mode, present, current_extensions)
    _check_custom_required(GROUP, mode, extensions, current_extensions)
    if extensions is not None:
        fields["extensions"] = extensions
    return result


def member_ids(members: Iterable[Mapping[str, Any]]) -> list[tuple[uuid.UUID, str | None]]:
    """(id, declared type) for each member object of a request; the type may be absent (Okta)."""
    result = []
    for member in members:
        canonical = {key.lower(): value for key, value in member.items()}
        if canonical.get("value") in (None, ""):
            raise InvalidValue("Each member needs a 'value' (the member's id)", field="members")
        kind = canonical.get("type")
        result.append(
            (_parse_uuid(canonical["value"], "members.value"), kind if isinstance(kind, str) else None)
        )
    return result
