"""Source attributes: a directory user's or group's values, looked up by SCIM path.

Attribute mappings (`provisioning.mapping`) and scoping filters
(`provisioning.scoping`) both name directory values the way SCIM does
(`userName`, `name.givenName`, `emails[type eq "work"].value`,
`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`), so
one resolver serves both. Pure: the caller loads the object (with its values
prefetched) and says what `manager` stands for.

Two views of a multi-valued attribute exist. A mapping that copies `emails`
to `emails` wants the complex values (value, type, primary...); an expression
or a scoping clause wants plain values. `complex=True` asks for the former.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from directory import selectors
from directory.columns import ENTERPRISE_COLUMNS, ENTERPRISE_USER_URN, NAME_COLUMNS, USER_COLUMNS
from directory.models import Group, User, UserValue
from directory.selectors import StoredValue

ENTERPRISE_USER = ENTERPRISE_USER_URN

USER_STRINGS = USER_COLUMNS
NAME_PARTS = NAME_COLUMNS
ENTERPRISE_STRINGS = ENTERPRISE_COLUMNS
MULTI_VALUED = tuple(UserValue.Kind.values)
GROUP_STRINGS: dict[str, str] = {
    "externalId": "external_id",
    "displayName": "display_name",
    "description": "description",
    "mailNickname": "mail_nickname",
}
GROUP_BOOLEANS: dict[str, str] = {"mailEnabled": "mail_enabled", "securityEnabled": "security_enabled"}

# attr, attr.sub, attr[sub eq "value"], attr[sub eq true].sub: one element of a
# multi-valued attribute is chosen by one equality, as Entra's mappings do.
_NAME = r"[A-Za-z][A-Za-z0-9_$-]*"
VALUE_PATH = re.compile(
    rf"^(?P<attr>{_NAME})"
    rf"(?:\[\s*(?P<fattr>{_NAME})\s+(?i:eq)\s+(?P<fval>\"(?:[^\"\\]|\\.)*\"|(?i:true|false))\s*\])?"
    rf"(?:\.(?P<sub>{_NAME}))?$"
)
# An extension schema URN followed by ':' and a value path.
URN_PATH = re.compile(r"^(?P<urn>urn:[A-Za-z0-9][A-Za-z0-9.:_-]*?):(?P<rest>[A-Za-z][^:]*)$")


@dataclass(frozen=True)
class ValuePath:
    """A parsed SCIM attribute path (the schema URN, if any, separated out)."""

    urn: str
    attribute: str
    filter_attribute: str = ""
    # A string, or a bool for `primary eq true`.
    filter_value: str | bool | None = None
    sub_attribute: str = ""

    def __str__(self) -> str:
        text = f"{self.urn}:" if self.urn else ""
        text += self.attribute
        if self.filter_attribute:
            shown = (
                str(self.filter_value).lower()
                if isinstance(self.filter_value, bool)
                else f'"{self.filter_value}"'
            )
            text += f"[{self.filter_attribute} eq {shown}]"
        if self.sub_attribute:
            text += f".{self.sub_attribute}"
        return text

    def element_matches(self, element: dict[str, Any]) -> bool:
        if not self.filter_attribute:
            return True
        found = _get_ci(element, self.filter_attribute)
        if isinstance(self.filter_value, bool):
            return bool(found) is self.filter_value
        return isinstance(found, str) and found.casefold() == str(self.filter_value).casefold()


class PathError(ValueError):
    """Not an attribute path this project can read or write."""


@functools.lru_cache(maxsize=4096)
def parse_path(path: str) -> ValuePath:
    """Split `path` into schema URN, attribute, element filter and sub-attribute; PathError if malformed."""
    text = path.strip()
    urn = ""
    if text.lower().startswith("urn:"):
        match = URN_PATH.match(text)
        if not match:
            raise PathError(f"{path!r} is not a schema URN followed by ':' and an attribute")
        urn, text = match.group("urn"), match.group("rest")
    match = VALUE_PATH.match(text)
    if not match:
        raise PathError(
            f'{path!r} is not an attribute path (attribute, attribute.sub, attribute[sub eq "value"].sub)'
        )
    raw = match.group("fval")
    value: str | bool | None = None
    if raw is not None:
        value = (
            raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            if raw.startswith('"')
            else (raw.lower() == "true")
        )
    return ValuePath(
        urn=urn,
        attribute=match.group("attr"),
        filter_attribute=match.group("fattr") or "",
        filter_value=value,
        sub_attribute=match.group("sub") or "",
    )


def _get_ci(mapping: dict[str, Any], key: str) -> Any:
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    return next((value for name, value in mapping.items() if name.lower() == lowered), None)


def _empty(value: Any) -> Any:
    """Blank text and empty containers read as absent."""
    return None if value in ("", [], {}) else value


def complex_value(value: UserValue | StoredValue) -> dict[str, Any]:
    """One element of a multi-valued attribute as SCIM writes it (empty sub-attributes left out)."""
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


def user_value_rows(user: User) -> list[UserValue] | list[StoredValue]:
    """The user's multi-valued attributes: carried in its row when selectors.user_list() loaded it
    (no query), else read from the table."""
    if hasattr(user, "stored_values"):
        return selectors.user_values(user)
    return list(user.values.all())


def _plain(element: dict[str, Any]) -> Any:
    # An address has no `value`: its formatted form stands for it.
    return element.get("value", element.get("formatted"))


def _select(elements: list[dict[str, Any]], path: ValuePath, complex_values: bool) -> Any:
    """Apply a value path's filter and sub-attribute to a list of complex values."""
    chosen = [element for element in elements if path.element_matches(element)]
    if path.filter_attribute:
        # A filtered path names one element: the first that matches.
        first = chosen[0] if chosen else None
        if first is None:
            return None
        if path.sub_attribute:
            return _empty(_get_ci(first, path.sub_attribute))
        return first if complex_values else _empty(_plain(first))
    if path.sub_attribute:
        return _empty([v for v in (_get_ci(e, path.sub_attribute) for e in chosen) if v not in (None, "")])
    if complex_values:
        return _empty(chosen)
    return _empty([v for v in (_plain(e) for e in chosen) if v not in (None, "")])


def _from_mapping(data: Any, path: ValuePath, complex_values: bool) -> Any:
    """A value inside a JSON document (an extension's attributes) by attribute path."""
    if not isinstance(data, dict):
        return None
    value = _get_ci(data, path.attribute)
    if isinstance(value, list):
        elements = [item if isinstance(item, dict) else {"value": item} for item in value]
        if path.filter_attribute or path.sub_attribute or complex_values:
            return _select(elements, path, complex_values)
        return _empty([_plain(e) for e in elements if _plain(e) not in (None, "")])
    if path.sub_attribute:
        return _empty(_get_ci(value, path.sub_attribute)) if isinstance(value, dict) else None
    return _empty(value)


Resolver = Callable[[str], Any]


def user_resolver(user: User, *, manager: str | None = None, complex_values: bool = False) -> Resolver:
    """A function from SCIM path to `user`'s value (None when absent).

    `manager` is what `manager` (and `manager.value`) read as: the manager's
    remote id on a target for a mapping, the manager's directory id for a
    scoping filter.
    """
    values: dict[str, list[dict[str, Any]]] | None = None

    def multi(kind: str) -> list[dict[str, Any]]:
        nonlocal values
        if values is None:
            values = {}
            for row in user_value_rows(user):
                values.setdefault(row.kind, []).append(complex_value(row))
        return values.get(kind, [])

    def resolve(text: str) -> Any:
        path = parse_path(text)
        name = path.attribute.lower()
        if path.urn:
            if path.urn.lower() == ENTERPRISE_USER.lower():
                return enterprise(path)
            extension = _get_ci(user.extensions or {}, path.urn)
            return _from_mapping(extension, path, complex_values)
        if name == "id" and not path.sub_attribute:
            return str(user.pk)
        if name == "active" and not path.sub_attribute:
            return bool(user.active)
        field = _lookup(USER_STRINGS, name)
        if field and not path.sub_attribute and not path.filter_attribute:
            return _empty(getattr(user, field))
        if name == "name":
            if path.sub_attribute:
                part = _lookup(NAME_PARTS, path.sub_attribute.lower())
                return _empty(getattr(user, part)) if part else None
            parts = {scim: getattr(user, f) for scim, f in NAME_PARTS.items() if getattr(user, f)}
            return _empty(parts) if complex_values else _empty(user.name_formatted)
        if name == "meta":
            return _meta(user, path)
        kind = _lookup({kind: kind for kind in MULTI_VALUED}, name)
        if kind:
            return _select(multi(kind), path, complex_values)
        return enterprise(path)

    def enterprise(path: ValuePath) -> Any:
        name = path.attribute.lower()
        if name == "manager":
            if path.sub_attribute and path.sub_attribute.lower() != "value":
                return None
            if manager is None:
                return None
            return {"value": manager} if complex_values and not path.sub_attribute else manager
        field = _lookup(ENTERPRISE_STRINGS, name)
        if field and not path.sub_attribute and not path.filter_attribute:
            return _empty(getattr(user, field))
        return None

    return resolve


def group_resolver(group: Group, *, complex_values: bool = False) -> Resolver:
    """A function from SCIM path to `group`'s value (None when absent); members are not an attribute here."""

    def resolve(text: str) -> Any:
        path = parse_path(text)
        name = path.attribute.lower()
        if path.urn:
            return _from_mapping(_get_ci(group.extensions or {}, path.urn), path, complex_values)
        if path.filter_attribute or (path.sub_attribute and name != "meta"):
            return None
        if name == "id":
            return str(group.pk)
        field = _lookup(GROUP_STRINGS, name)
        if field:
            return _empty(getattr(group, field))
        boolean = _lookup(GROUP_BOOLEANS, name)
        if boolean:
            return getattr(group, boolean)
        if name == "grouptypes":
            return ["Unified"] if group.kind == Group.Kind.UNIFIED else None
        if name == "meta":
            return _meta(group, path)
        return None

    return resolve


def _lookup(table: dict[str, str], lowered: str) -> str | None:
    return next((field for name, field in table.items() if name.lower() == lowered), None)


def _meta(obj: User | Group, path: ValuePath) -> Any:
    sub = path.sub_attribute.lower()
    if sub == "created":
        return obj.created.isoformat()
    if sub == "lastmodified":
        return obj.last_modified.isoformat()
    return None


# --- what can be read: checked when a mapping or a scoping filter is saved ----------------------

USER_ATTRIBUTES: tuple[str, ...] = (
    "id",
    "active",
    "name",
    *USER_STRINGS,
    *(f"name.{part}" for part in NAME_PARTS),
    *MULTI_VALUED,
    *ENTERPRISE_STRINGS,
    "manager",
    "meta.created",
    "meta.lastModified",
)
GROUP_ATTRIBUTES: tuple[str, ...] = (
    "id",
    *GROUP_STRINGS,
    *GROUP_BOOLEANS,
    "groupTypes",
    "meta.created",
    "meta.lastModified",
)


def check_source_path(text: str, object_type: str) -> ValuePath:
    """Parse a source path and check that a user (or group) has such an attribute; PathError if not.

    Any other extension schema's attributes are accepted: operators may keep
    attributes of their own schemas on users and groups.
    """
    path = parse_path(text)
    if path.urn and path.urn.lower() != ENTERPRISE_USER.lower():
        return path
    known = USER_ATTRIBUTES if object_type == "user" else GROUP_ATTRIBUTES
    lowered = {name.lower() for name in known}
    name = path.attribute.lower()
    if path.urn:  # the enterprise extension
        if name not in {n.lower() for n in (*ENTERPRISE_STRINGS, "manager")}:
            raise PathError(f"the enterprise User extension has no attribute {path.attribute!r}")
        return path
    whole = f"{name}.{path.sub_attribute.lower()}" if path.sub_attribute else name
    if name in {kind.lower() for kind in MULTI_VALUED}:
        return path
    if path.filter_attribute:
        raise PathError(f"{path.attribute!r} is not multi-valued: it takes no [filter]")
    if name == "manager" and object_type == "user" and path.sub_attribute.lower() in ("", "value"):
        return path
    if whole in lowered or (not path.sub_attribute and name in lowered):
        return path
    what = "user" if object_type == "user" else "group"
    raise PathError(f"a {what} has no attribute {text.strip()!r}")


def known_source_paths(object_type: str) -> tuple[str, ...]:
    return USER_ATTRIBUTES if object_type == "user" else GROUP_ATTRIBUTES
