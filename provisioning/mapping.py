"""The default mapping: a directory object's current state → the SCIM resource a target should hold.

Pure functions (no queries): the delivery engine loads the user or group and
the remote ids it refers to, and passes them in. `externalId` downstream is
the directory's own immutable id, so matching on it never confuses two people
who once shared a userName or an email address.
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from directory.models import Group, User, UserValue
from provisioning.models import Target

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

USER_STRINGS: dict[str, str] = {
    "userName": "user_name",
    "displayName": "display_name",
    "nickName": "nick_name",
    "profileUrl": "profile_url",
    "title": "title",
    "userType": "user_type",
    "preferredLanguage": "preferred_language",
    "locale": "locale",
    "timezone": "timezone",
}
NAME_PARTS: dict[str, str] = {
    "formatted": "name_formatted",
    "familyName": "family_name",
    "givenName": "given_name",
    "middleName": "middle_name",
    "honorificPrefix": "honorific_prefix",
    "honorificSuffix": "honorific_suffix",
}
ENTERPRISE_STRINGS: dict[str, str] = {
    "employeeNumber": "employee_number",
    "costCenter": "cost_center",
    "organization": "organization",
    "division": "division",
    "department": "department",
}
# Multi-valued attributes pushed by default. Roles, entitlements and
# certificates are left to per-target mappings: what they mean is the target's.
PUSHED_VALUES = (UserValue.Kind.EMAILS, UserValue.Kind.PHONE_NUMBERS, UserValue.Kind.ADDRESSES)


def _value(value: UserValue) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if value.kind == UserValue.Kind.ADDRESSES:
        item.update({key: part for key, part in value.address.items() if part})
    elif value.value:
        item["value"] = value.value
    if value.type:
        item["type"] = value.type
    if value.display:
        item["display"] = value.display
    if value.primary:
        item["primary"] = True
    return item


def user_payload(target: Target, user: User, *, manager_remote_id: str | None = None) -> dict[str, Any]:
    """The User resource `target` should hold for `user` (no id, no password, no read-only attributes).

    `user.values` should be prefetched (selectors.user_get does it).
    """
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
    for value in user.values.all():
        if value.kind in PUSHED_VALUES:
            values.setdefault(value.kind, []).append(_value(value))
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
