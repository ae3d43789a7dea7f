"""RFC 7644 §3.5.2 PATCH, applied to the SCIM representation of one resource.

`apply_patch` takes what GET returns and gives back what GET should return afterwards;
the API layer diffs the two and calls the directory services. Nothing here touches the
database and the input is never mutated, so a request either applies completely or raises
`PatchError` before anything is written (the RFC's atomicity, by construction).

Group members are the exception: a group can have 100k of them, so they are never in the
dict. Operations on `members` produce a `MembershipDelta` instead.

Client shapes accepted as they are (the SCIM clients reference, scim-clients.md §2.1 and §2.4):
- `op` in any case, `Operations` or `operations`, attribute names in any case;
- path-less values whose keys are dotted or URN-qualified paths (Entra's aadOptscim062020);
- a filtered add/replace that matches nothing creates the element, and later operations on
  the same filter land in that element (Entra's `addresses[type eq "work"].locality`);
- remove on `members` with a value array removes those members (Entra's default dialect),
  as does `members[value eq "…"]` (Okta, Entra with the flag);
- an unchanged `id`, `meta` and `schemas` inside a path-less value (Okta's group rename).
Entra's string booleans and plain-string manager are converted by the dialect layer before
this runs; here they are type errors.

Decisions the RFC leaves open:
- null or "" as the value of an add or replace clears a single-valued target (Microsoft's
  "null update" test); on a whole multi-valued attribute, replace clears and add adds nothing;
- clearing the `value` of a complex value (manager, an email) removes the whole value, since
  its other sub-attributes describe that value;
- readOnly sub-attributes inside a value object ($ref, manager.displayName) are ignored, as
  PUT ignores them: clients echo what GET returned. Addressing one by path is a mutability error;
- adding a multi-valued element equal to an existing one (same value per caseExact, same type)
  merges into it instead of appending a duplicate: Entra re-sends adds;
- remove with a filter that matches nothing changes nothing;
- remove on a multi-valued attribute with a value array removes those elements (Entra's
  members form, which it also uses for roles) instead of clearing the attribute.
"""

from __future__ import annotations

import copy
import operator
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from scim_api.filter_parser import And, Comparison, FilterSyntaxError, Node, Not, Or, ValuePath, parse_path
from scim_api.schema import (
    COMMON_SCHEMA_ID,
    PATCH_OP,
    Attribute,
    AttributePath,
    ResourceType,
    Schema,
    UnknownAttribute,
    get_registry,
    iter_attributes,
)

OpName = Literal["add", "remove", "replace"]
Element = Any  # a dict for complex multi-valued attributes, a scalar for simple ones (groupTypes)
# Bounds on the work one request can ask for: a PATCH is applied in memory, operation by operation.
MAX_OPERATIONS = 1000
MAX_ELEMENTS = 1000
Matcher = Callable[[Element], bool]

_OPS: tuple[OpName, ...] = ("add", "remove", "replace")
_MISSING: Any = object()
_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_EXPECTED = {
    "boolean": "a JSON boolean (true or false)",
    "integer": "a JSON integer",
    "decimal": "a JSON number",
}


class PatchError(Exception):
    """A PATCH that cannot be applied; `scim_type` is the RFC 7644 §3.12 scimType of the 400."""

    def __init__(self, detail: str, *, scim_type: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.scim_type = scim_type


@dataclass
class MemberRef:
    value: str
    type: str | None = None  # "User" / "Group", or None when the client did not say (Okta never does)


@dataclass
class MembershipDelta:
    """What a PATCH does to a group's members, without loading them.

    The members afterwards are `replace` when it is not None, else the current members minus
    `remove` plus `add`. `add` and `remove` never share an id, so they can be applied in either
    order. Operations are folded in request order:
    - add X takes X out of `remove`, remove X takes X out of `add`: "remove X, add X" keeps X
      a member and "add X, remove X" leaves it out;
    - a replace, or a remove of all members, sets `replace` and empties `add` and `remove`;
      since the full list is then known, later adds and removes edit `replace` itself.
    """

    replace: list[MemberRef] | None = None
    add: list[MemberRef] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return self.replace is not None or bool(self.add) or bool(self.remove)

    def record_add(self, refs: list[MemberRef]) -> None:
        added = {ref.value for ref in refs}
        self.remove = [member_id for member_id in self.remove if member_id not in added]
        target = self.replace if self.replace is not None else self.add
        for ref in refs:
            _merge_ref(target, ref)

    def record_remove(self, ids: list[str]) -> None:
        if self.replace is not None:
            self.replace = [ref for ref in self.replace if ref.value not in ids]
            return
        self.add = [ref for ref in self.add if ref.value not in ids]
        self.remove.extend(member_id for member_id in dict.fromkeys(ids) if member_id not in self.remove)

    def record_replace(self, refs: list[MemberRef]) -> None:
        self.replace, self.add, self.remove = [], [], []
        for ref in refs:
            _merge_ref(self.replace, ref)


def _merge_ref(refs: list[MemberRef], ref: MemberRef) -> None:
    existing = next((r for r in refs if r.value == ref.value), None)
    if existing is None:
        refs.append(MemberRef(ref.value, ref.type))
    elif existing.type is None:
        existing.type = ref.type


@dataclass
class PatchResult:
    resource: dict[str, Any]
    members: MembershipDelta


def apply_patch(resource_type: ResourceType, resource: dict[str, Any], body: dict[str, Any]) -> PatchResult:
    """Apply a PATCH request body to `resource` (not modified) and return the new representation."""
    operations = _parse_body(body)
    patcher = _Patcher(resource_type, resource)
    for operation in operations:
        try:
            patcher.apply(operation)
        except PatchError as exc:
            raise PatchError(f"Operation {operation.index}: {exc.detail}", scim_type=exc.scim_type) from exc
    _check_immutable(resource_type, resource, patcher.resource)
    return PatchResult(patcher.resource, patcher.members)


# --- the request body ---------------------------------------------------------------


@dataclass(frozen=True)
class _Operation:
    index: int
    op: OpName
    path: str | None
    value: Any


def _get(mapping: dict[str, Any], key: str, default: Any = None) -> Any:
    """A message key in any case: Entra's examples write `operations` (scim-clients.md §2.3)."""
    lowered = key.lower()
    names = [name for name in mapping if name.lower() == lowered]
    if len(names) > 1:
        # No telling which spelling is meant; the dialect layer leaves this for the engine to refuse.
        raise PatchError(f"{key!r} is given more than once: {', '.join(names)}", scim_type="invalidSyntax")
    return mapping[names[0]] if names else default


def _check_unique_keys(value: dict[str, Any], label: str) -> None:
    seen: dict[str, str] = {}
    for key in value:
        other = seen.setdefault(key.lower(), key)
        if other != key:
            raise PatchError(f"{label} names {other!r} twice, also as {key!r}", scim_type="invalidValue")


def _parse_body(body: Any) -> list[_Operation]:
    if not isinstance(body, dict):
        raise PatchError("The PATCH body must be a JSON object", scim_type="invalidSyntax")
    schemas = _get(body, "schemas")
    if not isinstance(schemas, list) or not any(
        isinstance(uri, str) and uri.lower() == PATCH_OP.lower() for uri in schemas
    ):
        raise PatchError(f'"schemas" must contain "{PATCH_OP}"', scim_type="invalidSyntax")
    operations = _get(body, "Operations")
    if isinstance(operations, list) and len(operations) > MAX_OPERATIONS:
        raise PatchError(
            f"A PATCH may carry at most {MAX_OPERATIONS} operations, not {len(operations)}",
            scim_type="invalidValue",
        )
    if not isinstance(operations, list) or not operations:
        raise PatchError('"Operations" must be a non-empty list', scim_type="invalidSyntax")
    return [_parse_operation(index, item) for index, item in enumerate(operations, 1)]


def _parse_operation(index: int, item: Any) -> _Operation:
    if not isinstance(item, dict):
        raise PatchError(f"Operation {index} must be a JSON object", scim_type="invalidSyntax")
    op = _get(item, "op")
    if not isinstance(op, str) or op.lower() not in _OPS:
        raise PatchError(
            f'Operation {index}: "op" must be add, remove or replace, not {op!r}', scim_type="invalidSyntax"
        )
    name: OpName = _OPS[_OPS.index(op.lower())]
    path = _get(item, "path")
    if path is not None and not isinstance(path, str):
        raise PatchError(f'Operation {index}: "path" must be a string', scim_type="invalidSyntax")
    value = _get(item, "value", _MISSING)
    if value is _MISSING and name != "remove":
        raise PatchError(f'Operation {index}: "{name}" needs a "value"', scim_type="invalidSyntax")
    return _Operation(
        index, name, path if path and path.strip() else None, None if value is _MISSING else value
    )


# --- the engine ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """A resolved PATCH path: the attribute, the sub-attribute if any, and the value filter if any."""

    text: str
    where: AttributePath
    filter: Node | None = None

    @property
    def attribute(self) -> Attribute:
        return self.where.attribute

    @property
    def sub(self) -> Attribute | None:
        return self.where.sub_attribute

    def __str__(self) -> str:
        return str(self.where)


class _Patcher:
    """Applies operations one by one to a private copy of the resource."""

    def __init__(self, resource_type: ResourceType, resource: dict[str, Any]) -> None:
        self.resource_type = resource_type
        self.registry = get_registry()
        self.resource: dict[str, Any] = copy.deepcopy(resource)
        self.members = MembershipDelta()

    def apply(self, operation: _Operation) -> None:
        if operation.path is None:
            self._apply_pathless(operation.op, operation.value)
        else:
            self._apply_path(operation.op, operation.path, operation.value)

    # dispatch

    def _apply_pathless(self, op: OpName, value: Any) -> None:
        if op == "remove":
            raise PatchError("remove needs a path (RFC 7644 §3.5.2.2)", scim_type="noTarget")
        if not isinstance(value, dict):
            raise PatchError(
                f"{op} without a path needs an object of attributes, not {_json_type(value)}",
                scim_type="invalidValue",
            )
        _check_unique_keys(value, f"The {op} value")
        # Each key behaves as its own operation, so merges and appends match the path forms.
        for key, item in value.items():
            if not self._is_echo(key, item):
                self._apply_path(op, key, item)

    def _is_echo(self, key: str, value: Any) -> bool:
        """Keys clients copy from GET into a path-less value, which change nothing."""
        lowered = key.lower()
        if lowered in ("schemas", "meta"):
            return True
        if lowered == "id":
            # Okta sends the group's id along with every rename.
            if value == self.resource.get("id"):
                return True
            raise PatchError("id is readOnly: it cannot be changed", scim_type="mutability")
        return False

    def _apply_path(self, op: OpName, path: str, value: Any) -> None:
        schema = self.registry.extension_schema(self.resource_type, path.strip())
        if schema is not None:
            self._apply_extension(op, schema, value)
            return
        target = self._resolve(path)
        if target.attribute.storage == "members":
            self._apply_members(op, target, value)
            return
        self._check_mutability(op, target)
        if op == "add":
            self._add(target, value)
        elif op == "replace":
            self._replace(target, value)
        else:
            self._remove(target, value)

    def _apply_extension(self, op: OpName, schema: Schema, value: Any) -> None:
        """A path that is an extension's URN addresses all of that extension's attributes."""
        if op == "remove":
            for name in list(self.resource.get(schema.id) or {}):
                self._apply_path("remove", f"{schema.id}:{name}", None)
            return
        if not isinstance(value, dict):
            raise PatchError(
                f"{schema.id} must be an object of its attributes, not {_json_type(value)}",
                scim_type="invalidValue",
            )
        _check_unique_keys(value, schema.id)
        for key, item in value.items():
            # Clients built on scim2-models put the extension's own "schemas" inside it.
            if key.lower() == "schemas":
                continue
            self._apply_path(op, f"{schema.id}:{key}", item)

    def _resolve(self, path: str) -> _Target:
        try:
            parsed = parse_path(path)
            where = self.registry.resolve(self.resource_type, parsed.attribute)
        except (FilterSyntaxError, UnknownAttribute) as exc:
            raise PatchError(f"Invalid path {path!r}: {exc}", scim_type="invalidPath") from exc
        if parsed.filter is None:
            return _Target(path, where)
        if where.sub_attribute is not None or not where.attribute.multi_valued:
            raise PatchError(
                f"Invalid path {path!r}: a [filter] can only follow a multi-valued attribute",
                scim_type="invalidPath",
            )
        sub = None
        if parsed.sub_attribute is not None:
            sub = where.attribute.sub(parsed.sub_attribute)
            if sub is None:
                raise PatchError(
                    f"Invalid path {path!r}: '{parsed.sub_attribute}' is not a sub-attribute of "
                    f"{where.attribute.name}",
                    scim_type="invalidPath",
                )
        return _Target(path, AttributePath(where.schema, where.attribute, sub), parsed.filter)

    def _check_mutability(self, op: OpName, target: _Target) -> None:
        for attribute in (target.attribute, target.sub):
            if attribute is not None and attribute.mutability == "readOnly":
                raise PatchError(f"{target} is readOnly: it cannot be changed", scim_type="mutability")
        if op != "remove":
            return
        required = (
            target.sub.required if target.sub else (target.attribute.required and target.filter is None)
        )
        if required:
            raise PatchError(f"{target} is required: it cannot be removed", scim_type="mutability")

    # add, replace, remove

    def _add(self, target: _Target, value: Any) -> None:
        if not target.attribute.multi_valued:
            self._write_single(target, value)
        elif target.filter is None and target.sub is None:
            self._append(target, value)
        else:
            self._write_elements(target, value, merge=True)

    def _replace(self, target: _Target, value: Any) -> None:
        if not target.attribute.multi_valued:
            self._write_single(target, value)
        elif target.filter is None and target.sub is None:
            elements: list[Element] = []
            touched = (
                [] if _is_empty(value) else _add_elements(target.attribute, elements, value, str(target))
            )
            self._store_elements(target, elements, touched, deduplicated=True)
        else:
            self._write_elements(target, value, merge=False)

    def _remove(self, target: _Target, value: Any) -> None:
        if not target.attribute.multi_valued:
            if target.sub is None:
                self._store(target, None)
            else:
                self._write_single(target, None)
        elif target.filter is not None or target.sub is not None:
            self._remove_from_elements(target)
        elif value is None:
            self._store(target, None)
        else:
            self._remove_values(target, value)

    # single-valued attributes

    def _write_single(self, target: _Target, value: Any) -> None:
        attribute, sub = target.attribute, target.sub
        if _is_empty(value) and (sub or attribute).required:
            raise PatchError(f"{target} is required: it cannot be null or empty", scim_type="invalidValue")
        if attribute.type != "complex":
            self._store(target, None if _is_empty(value) else _check_type(attribute, value, str(target)))
            return
        if sub is None and _is_empty(value):
            self._store(target, None)
            return
        label = str(AttributePath(target.where.schema, attribute))
        changes = _object(attribute, {sub.name: value} if sub else value, label)
        self._store(target, _merge(attribute, self._current(target) or {}, changes))

    # multi-valued attributes

    def _append(self, target: _Target, value: Any) -> None:
        if _is_empty(value):
            return
        elements = list(self._current(target) or [])
        touched = _add_elements(target.attribute, elements, value, str(target))
        self._store_elements(target, elements, touched, deduplicated=True)

    def _write_elements(self, target: _Target, value: Any, *, merge: bool) -> None:
        """add/replace on `attr[filter]`, `attr[filter].sub` or `attr.sub`: the matching elements."""
        attribute = target.attribute
        if not attribute.sub_attributes:
            raise PatchError(
                f"{target}: a filter on a list of simple values is only supported by remove",
                scim_type="invalidPath",
            )
        elements = list(self._current(target) or [])
        matches = _matcher(attribute, target.filter)
        matched = [element for element in elements if matches(element)]
        seed = _equalities(attribute, target.filter) if target.filter is not None else None
        if not matched:
            if _is_empty(value):
                return
            if seed is None:
                raise PatchError(f"{target.text!r} matches no value", scim_type="noTarget")
            # Entra sends `addresses[type eq "work"].locality` for an address that does not exist yet.
            created = dict(seed)
            elements.append(created)
            matched = [created]
        label = attribute.name
        if target.sub is not None:
            changes = _object(attribute, {target.sub.name: value}, label)
            updates = [_merge(attribute, element, changes) for element in matched]
        elif _is_empty(value):
            updates = [{} for _ in matched]
        elif merge:
            changes = _object(attribute, value, label)
            updates = [_merge(attribute, element, changes) for element in matched]
        else:
            changes = _object(attribute, value, label)
            updates = [_merge(attribute, dict(seed or {}), changes) for _ in matched]
        for element, update in zip(matched, updates, strict=True):
            element.clear()
            element.update(update)
        self._store_elements(target, [element for element in elements if element], matched)

    def _remove_from_elements(self, target: _Target) -> None:
        attribute = target.attribute
        matches = _matcher(attribute, target.filter)
        remaining: list[Element] = []
        for element in self._current(target) or []:
            if not matches(element):
                remaining.append(element)
            elif target.sub is not None:
                remaining.append(_merge(attribute, element, {target.sub.name: None}))
        self._store(target, [element for element in remaining if element not in ({}, None)])

    def _remove_values(self, target: _Target, value: Any) -> None:
        attribute = target.attribute
        doomed = _elements(attribute, value, str(target))
        self._store(
            target,
            [
                element
                for element in self._current(target) or []
                if not any(_same_element(attribute, element, item, loose_type=True) for item in doomed)
            ],
        )

    def _store_elements(
        self, target: _Target, elements: list[Element], touched: list[Element], *, deduplicated: bool = False
    ) -> None:
        # _add_elements already merged equal elements; a filtered write may have made two equal.
        if not deduplicated:
            elements = _merge_equal(target.attribute, elements)
        _single_primary(elements, touched)
        self._store(target, elements)

    # members

    def _apply_members(self, op: OpName, target: _Target, value: Any) -> None:
        if target.sub is not None:
            raise PatchError(
                f"{target}: address whole members with 'members' or 'members[value eq \"<id>\"]'",
                scim_type="invalidPath",
            )
        if target.filter is not None:
            if op != "remove":
                raise PatchError(
                    f"{op} does not take a filter on members; use the path 'members' with a value array",
                    scim_type="invalidFilter",
                )
            self.members.record_remove(_member_ids(target.filter))
        elif op == "add":
            self.members.record_add(_member_refs(value))
        elif op == "replace":
            self.members.record_replace(_member_refs(value))
        elif value is None:
            self.members.record_replace([])
        else:
            # Entra's default dialect: remove these members, not the whole attribute.
            self.members.record_remove([ref.value for ref in _member_refs(value)])

    # storage

    def _container(self, schema: Schema) -> dict[str, Any] | None:
        """Where a schema's attributes live: the resource itself, or an extension's object (its URN key)."""
        if schema is self.resource_type.schema or schema.id == COMMON_SCHEMA_ID:
            return self.resource
        container = self.resource.get(schema.id)
        return container if isinstance(container, dict) else None

    def _ensure_container(self, schema: Schema) -> dict[str, Any]:
        existing = self._container(schema)
        if existing is not None:
            return existing
        container: dict[str, Any] = {}
        self.resource[schema.id] = container
        schemas = self.resource.get("schemas")
        if isinstance(schemas, list) and schema.id not in schemas:
            schemas.append(schema.id)
        return container

    def _current(self, target: _Target) -> Any:
        container = self._container(target.where.schema)
        return None if container is None else container.get(target.attribute.name)

    def _store(self, target: _Target, value: Any) -> None:
        """Set the attribute, or delete it when the value is empty: absent values are omitted, never null."""
        schema, name = target.where.schema, target.attribute.name
        if value not in (None, [], {}):
            self._ensure_container(schema)[name] = value
            return
        container = self._container(schema)
        if container is None:
            return
        container.pop(name, None)
        if container is not self.resource and not container:
            del self.resource[schema.id]
            schemas = self.resource.get("schemas")
            if isinstance(schemas, list) and schema.id in schemas:
                schemas.remove(schema.id)


# --- values -------------------------------------------------------------------------


def _is_empty(value: Any) -> bool:
    return value is None or value == ""


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _type_ok(attribute: Attribute, value: Any) -> bool:
    if attribute.type == "boolean":
        return isinstance(value, bool)
    if attribute.type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if attribute.type == "decimal":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if attribute.type == "complex":
        return isinstance(value, dict)
    return isinstance(value, str)


def _check_type(attribute: Attribute, value: Any, label: str) -> Any:
    if not _type_ok(attribute, value):
        expected = _EXPECTED.get(attribute.type, "a string")
        raise PatchError(
            f"{label} must be {expected}, not {_json_type(value)} {value!r}", scim_type="invalidValue"
        )
    return value


def _object(attribute: Attribute, value: Any, label: str) -> dict[str, Any]:
    """A value for a complex attribute, keyed by canonical sub-attribute names; None marks a clear."""
    if not isinstance(value, dict):
        raise PatchError(
            f"{label} must be an object, not {_json_type(value)} {value!r}", scim_type="invalidValue"
        )
    _check_unique_keys(value, label)
    result: dict[str, Any] = {}
    for key, item in value.items():
        sub = attribute.sub(key)
        if sub is None:
            raise PatchError(f"'{key}' is not a sub-attribute of {label}", scim_type="invalidPath")
        if sub.mutability == "readOnly":
            continue  # clients echo what GET returned ($ref, manager.displayName)
        result[sub.name] = None if _is_empty(item) else _check_type(sub, item, f"{label}.{sub.name}")
    return result


_REFERENCE = ("value", "$ref")


def _merge(attribute: Attribute, current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`current` with `changes` applied (None deletes); {} when the value itself was cleared."""
    if attribute.sub("value") is not None:
        if "value" in changes and changes["value"] is None and not changes.get("$ref"):
            return {}
        if any(key in changes and changes[key] != current.get(key) for key in _REFERENCE):
            # value and $ref name the same resource, and display names describe it: whichever the
            # client did not send now describes the old one. The server fills them in again.
            current = {
                k: v
                for k, v in current.items()
                if not _is_read_only(attribute, k) and (k not in _REFERENCE or k in changes)
            }
    merged = dict(current)
    for key, item in changes.items():
        if item is None:
            merged.pop(key, None)
        else:
            merged[key] = item
    return merged


def _is_read_only(attribute: Attribute, name: str) -> bool:
    sub = attribute.sub(name)
    return sub is not None and sub.mutability == "readOnly"


def _elements(attribute: Attribute, value: Any, label: str) -> list[Element]:
    """The elements of a multi-valued value; a single object or scalar counts as a one-element list."""
    items = value if isinstance(value, list) else [value]
    if not attribute.sub_attributes:
        return [_check_type(attribute, item, label) for item in items if not _is_empty(item)]
    elements = []
    for item in items:
        element = {k: v for k, v in _object(attribute, item, label).items() if v is not None}
        if element:
            elements.append(element)
    return elements


def _add_elements(attribute: Attribute, elements: list[Element], value: Any, label: str) -> list[Element]:
    """Append the elements of `value` to `elements`, merging into equal ones; returns those written."""
    touched: list[Element] = []
    index = {_identity(attribute, element): element for element in reversed(elements)}
    for item in _elements(attribute, value, label):
        existing = index.get(_identity(attribute, item))
        if existing is None:
            elements.append(item)
            index[_identity(attribute, item)] = item
            touched.append(item)
        elif isinstance(existing, dict):
            existing.update(item)
            touched.append(existing)
    if len(elements) > MAX_ELEMENTS:
        raise PatchError(f"{label} would hold more than {MAX_ELEMENTS} values", scim_type="invalidValue")
    return touched


def _identity(attribute: Attribute, element: Element) -> Any:
    """A hashable key equal for two elements exactly when _same_element(..., loose_type=False) holds.

    Lets adds and merges look elements up in a dict instead of comparing every pair.
    """
    if not attribute.sub_attributes:
        return ("simple", _freeze(_fold(attribute, element)))
    if not isinstance(element, dict):
        return ("opaque", id(element))
    if attribute.sub("value") is None:
        return (
            "parts",
            frozenset((k, _freeze(_fold(attribute.sub(k), v))) for k, v in element.items() if k != "primary"),
        )
    return (
        "value",
        _freeze(_fold(attribute.sub("value"), element.get("value"))),
        _freeze(_fold(attribute.sub("type"), element.get("type"))),
    )


def _freeze(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _fold(attribute: Attribute | None, value: Any) -> Any:
    if isinstance(value, str) and (attribute is None or not attribute.case_exact):
        return value.casefold()
    return value


def _same_element(attribute: Attribute, existing: Element, item: Element, *, loose_type: bool) -> bool:
    """Whether `item` denotes `existing`: same value (per caseExact) and type, or equal throughout.

    With `loose_type`, an item that names no type matches any type (a remove by value).
    """
    if not attribute.sub_attributes:
        return bool(_fold(attribute, existing) == _fold(attribute, item))
    if not isinstance(existing, dict):
        return False
    value_sub = attribute.sub("value")
    if value_sub is None:
        keys = (set(existing) | set(item)) - {"primary"}
        return all(
            _fold(attribute.sub(k), existing.get(k)) == _fold(attribute.sub(k), item.get(k)) for k in keys
        )
    if _fold(value_sub, existing.get("value")) != _fold(value_sub, item.get("value")):
        return False
    if loose_type and "type" not in item:
        return True
    type_sub = attribute.sub("type")
    return bool(_fold(type_sub, existing.get("type")) == _fold(type_sub, item.get("type")))


def _merge_equal(attribute: Attribute, elements: list[Element]) -> list[Element]:
    """Fold elements that an operation made equal (two work emails both set to one value) into the first.

    RFC 7643 §2.4: a multi-valued attribute should not hold duplicates; the merged
    element stays primary if either was.
    """
    merged: list[Element] = []
    seen: dict[Any, Element] = {}
    for element in elements:
        key = _identity(attribute, element)
        twin = seen.get(key)
        if twin is None:
            seen[key] = element
            merged.append(element)
        elif isinstance(twin, dict) and isinstance(element, dict) and element.get("primary") is True:
            twin["primary"] = True
    return merged


def _single_primary(elements: list[Element], touched: list[Element]) -> None:
    """RFC 7643 §2.4: at most one primary; the one this operation set wins."""
    primaries = [e for e in elements if isinstance(e, dict) and e.get("primary") is True]
    if len(primaries) < 2:
        return
    winner = next((e for e in reversed(touched) if any(e is p for p in primaries)), primaries[0])
    for element in primaries:
        if element is not winner:
            element["primary"] = False


# --- value filters --------------------------------------------------------------------


def _matcher(attribute: Attribute, node: Node | None) -> Matcher:
    """A predicate over the elements of `attribute`; no filter (`emails.value`) matches them all."""
    if node is None:
        return lambda element: True
    match node:
        case And(left, right):
            first, second = _matcher(attribute, left), _matcher(attribute, right)
            return lambda element: first(element) and second(element)
        case Or(left, right):
            first, second = _matcher(attribute, left), _matcher(attribute, right)
            return lambda element: first(element) or second(element)
        case Not(operand):
            inner = _matcher(attribute, operand)
            return lambda element: not inner(element)
        case ValuePath():
            raise PatchError(
                f"Nested filters are not supported inside {attribute.name}[…]", scim_type="invalidFilter"
            )
        case Comparison():
            return _comparison_matcher(attribute, node)
    raise AssertionError(node)


def _operand(attribute: Attribute, path: str) -> Attribute:
    """The sub-attribute a filter inside `attribute[…]` names; for simple values, `value` is the element."""
    name = path
    prefix = attribute.name.lower() + "."
    if name.lower().startswith(prefix):
        name = name[len(prefix) :]
    if not attribute.sub_attributes and name.lower() == "value":
        return attribute
    sub = attribute.sub(name)
    if sub is None:
        raise PatchError(f"'{path}' is not a sub-attribute of {attribute.name}", scim_type="invalidFilter")
    return sub


def _literal(operand: Attribute, literal: Any) -> Any:
    # Entra writes `roles[primary eq "True"]` (pingidentity/scim2 #239).
    if operand.type == "boolean" and isinstance(literal, str) and literal.lower() in ("true", "false"):
        return literal.lower() == "true"
    return literal


def _comparison_matcher(attribute: Attribute, node: Comparison) -> Matcher:
    operand = _operand(attribute, node.path)
    if node.op in _ORDERING and operand.type == "boolean":
        raise PatchError(f"'{node.op}' cannot compare the boolean {node.path}", scim_type="invalidFilter")
    expected = _literal(operand, node.value)
    simple = not attribute.sub_attributes

    def matches(element: Element) -> bool:
        if simple:
            actual = element
        else:
            actual = element.get(operand.name) if isinstance(element, dict) else None
        return _compare(node.op, actual, expected, case_exact=operand.case_exact)

    return matches


def _compare(op: str, actual: Any, expected: Any, *, case_exact: bool) -> bool:
    if op == "pr":
        return actual not in (None, "", [], {})
    if isinstance(actual, str) and isinstance(expected, str) and not case_exact:
        actual, expected = actual.casefold(), expected.casefold()
    if op in ("eq", "ne"):
        equal = actual == expected and isinstance(actual, bool) == isinstance(expected, bool)
        return equal if op == "eq" else not equal
    both_strings = isinstance(actual, str) and isinstance(expected, str)
    if op == "co":
        return both_strings and expected in actual
    if op == "sw":
        return both_strings and actual.startswith(expected)
    if op == "ew":
        return both_strings and actual.endswith(expected)
    both_numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (actual, expected))
    return (both_strings or both_numbers) and _ORDERING[op](actual, expected)


def _equalities(attribute: Attribute, node: Node | None) -> dict[str, Any] | None:
    """The element a filter of `eq` comparisons joined by `and` describes, or None for any other filter."""
    match node:
        case Comparison(path, "eq", value) if value is not None:
            operand = _operand(attribute, path)
            literal = _literal(operand, value)
            return {operand.name: literal} if _type_ok(operand, literal) else None
        case And(left, right):
            first, second = _equalities(attribute, left), _equalities(attribute, right)
            if first is None or second is None:
                return None
            if any(key in first and first[key] != value for key, value in second.items()):
                return None
            return {**first, **second}
    return None


# --- members --------------------------------------------------------------------------


def _member_refs(value: Any) -> list[MemberRef]:
    if value is None:
        return []
    refs = []
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, dict):
            raise PatchError(
                f'A member must be an object like {{"value": "<id>"}}, not {_json_type(item)} {item!r}',
                scim_type="invalidValue",
            )
        member_id = _get(item, "value")
        if not isinstance(member_id, str) or not member_id:
            raise PatchError(
                f"A member needs its id as a string in 'value': {item!r}", scim_type="invalidValue"
            )
        refs.append(MemberRef(_canonical_id(member_id), _member_type(_get(item, "type"))))
    return refs


def _canonical_id(member_id: str) -> str:
    """One spelling per id, so an add and a remove of the same member in one request meet."""
    try:
        return str(uuid.UUID(member_id))
    except ValueError:
        return member_id  # not an id at all: the membership service refuses it


def _member_type(value: Any) -> str | None:
    if value is None:
        return None
    canonical = {"user": "User", "group": "Group"}.get(value.lower()) if isinstance(value, str) else None
    if canonical is None:
        raise PatchError(
            f"A member's type must be 'User' or 'Group', not {value!r}", scim_type="invalidValue"
        )
    return canonical


def _member_ids(node: Node) -> list[str]:
    """The ids in `members[value eq "a" or value eq "b"]`, the only member filter that names members."""
    match node:
        case Or(left, right):
            return _member_ids(left) + _member_ids(right)
        case Comparison(path, "eq", str(member_id)) if (
            path.lower() in ("value", "members.value") and member_id
        ):
            return [_canonical_id(member_id)]
    raise PatchError(
        'Members can only be selected by id: members[value eq "<id>"], optionally joined with "or"',
        scim_type="invalidFilter",
    )


# --- whole-resource checks --------------------------------------------------------------


def _check_immutable(resource_type: ResourceType, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Immutable attributes may be set once (when absent), never changed or removed afterwards."""
    for schema, attribute in iter_attributes(resource_type):
        old, new = (
            _read(resource_type, schema, attribute, before),
            _read(resource_type, schema, attribute, after),
        )
        if attribute.mutability == "immutable" and old is not None and new != old:
            raise PatchError(f"{attribute.name} is immutable: it cannot be changed", scim_type="mutability")
        if attribute.type != "complex" or attribute.multi_valued or not isinstance(old, dict):
            continue
        for sub in attribute.sub_attributes:
            if (
                sub.mutability == "immutable"
                and sub.name in old
                and (new or {}).get(sub.name) != old[sub.name]
            ):
                raise PatchError(
                    f"{attribute.name}.{sub.name} is immutable: it cannot be changed", scim_type="mutability"
                )


def _read(resource_type: ResourceType, schema: Schema, attribute: Attribute, resource: dict[str, Any]) -> Any:
    if schema is resource_type.schema or schema.id == COMMON_SCHEMA_ID:
        return resource.get(attribute.name)
    container = resource.get(schema.id)
    return container.get(attribute.name) if isinstance(container, dict) else None


__all__ = ["MemberRef", "MembershipDelta", "PatchError", "PatchResult", "apply_patch"]
