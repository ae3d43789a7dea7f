"""Client dialects: rewrite what real SCIM clients send into strict RFC 7644 requests.

Microsoft Entra ID, its validators and Okta send bodies that a strict reading of RFC 7643/7644 rejects or,
worse, misreads: a `Remove` of `members` carrying a value array means "remove these members" to Entra and
"clear the group" to the RFC. Rather than teach the PATCH engine and the resource parser every quirk, the
views pass each request through this layer first, and the core only ever sees strict RFC form:

    request body ─▶ normalize_patch / normalize_resource ─▶ strict core (PATCH engine, resource parser)
    filter text  ─▶ normalize_filter                       └─▶ fired rewrite names ─▶ per-client counters

Each rewrite has a stable name in REWRITES, lives in one small function, and reports when it fired, so
operators can see which client leans on which tolerance, and a tolerance nobody needs can be retired.
Rewrites are conservative: a strictly valid request passes through unchanged with nothing fired, anything
this layer doesn't recognise (unknown attributes, malformed paths) is left for the core to reject, and a
body that isn't a JSON object is handed back untouched so the core answers 400. Input is never mutated.

Attribute names, types and mutability come from the schema registry (scim_api.schema), so a boolean is
whatever the registry says is boolean, and a new extension attribute needs no change here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from scim_api.filter_parser import FilterSyntaxError, parse_filter, parse_path, scan, split_path
from scim_api.projection import json_copy
from scim_api.schema import (
    COMMON_SCHEMA,
    CORE_GROUP,
    ENTERPRISE_USER,
    ENTRA_USER,
    Attribute,
    AttributePath,
    ResourceType,
    Schema,
    UnknownAttribute,
    get_registry,
)


@dataclass(frozen=True)
class Rewrite:
    """One named tolerance: the non-RFC shape it accepts, who sends it, and what the core gets instead."""

    name: str
    description: str


MESSAGE_KEY_CASE = Rewrite(
    "message-key-case",
    'Message keys in another case ("operations", "Schemas", "Op", "Value") get their RFC spelling '
    '("Operations", "schemas", "op", "value"). Entra, Microsoft examples.',
)
STRAY_KEYS = Rewrite(
    "stray-keys",
    'Keys a PatchOp message doesn\'t define are dropped: a top-level "id", an operation-level '
    '"name": "addMember". Entra, Microsoft validators.',
)
OP_CASE = Rewrite(
    "op-case", '"Add", "Replace", "Remove" in any case become "add", "replace", "remove". Entra default job.'
)
NO_PATH_DOTTED_KEYS = Rewrite(
    "no-path-dotted-keys",
    "A path-less add/replace whose value keys are paths (`name.givenName`, "
    "`urn:…:enterprise:2.0:User:employeeNumber`) becomes one operation per such key, with that path. "
    "Entra with aadOptscim062020, Microsoft validators.",
)
ATTRIBUTE_NAME_CASE = Rewrite(
    "attribute-name-case",
    'Attribute names, sub-attribute names and schema URNs in another case ("UserName", "Emails": '
    '[{"Primary": …}], "Manager": {"Value": …}) get their registry spelling, in bodies, paths and filters. '
    "Microsoft validators and Postman collections.",
)
STRING_BOOLEAN = Rewrite(
    "string-boolean",
    '"True"/"False" strings (any case) for boolean attributes become JSON booleans, in values, bodies, '
    'and filters (`roles[primary eq "True"]`). Entra default job, Microsoft validators.',
)
MANAGER_PLAIN_ID = Rewrite(
    "manager-plain-id",
    'The enterprise manager sent as a plain id becomes {"value": id}; a PATCH add/replace of the manager '
    'with "" or null becomes a remove, and "" in a POST/PUT body is dropped. Entra, gallery validator.',
)
ROLES_JSON_STRING = Rewrite(
    "roles-json-string",
    'A roles element whose "value" is a JSON object in a string (Entra app role: {"id", "value", '
    '"displayName"}) becomes {"value": its value, "display": its displayName}, keeping the element\'s '
    "own primary/type. The app role id has no SCIM home and is dropped. Entra.",
)
NULL_REF = Rewrite(
    "null-ref",
    'Null-valued keys inside elements of multi-valued attributes (a member\'s "$ref": null) are dropped; '
    "RFC 7643 §2.5 makes null and absent the same. Entra group membership.",
)
REMOVE_MEMBERS_VALUE_ARRAY = Rewrite(
    "remove-members-value-array",
    'A remove of group "members" carrying a value array ("remove these members"; under the RFC it would '
    'clear the group) becomes one remove per member, with path `members[value eq "<id>"]`. Entra.',
)
PATCH_VALUE_CARRIES_ID = Rewrite(
    "patch-value-carries-id",
    'A path-less replace whose value carries the resource\'s own "id" has it dropped (an id that differs '
    "is left for the core to refuse). Okta group rename, sent with every membership update.",
)
NON_URN_SCHEMA = Rewrite(
    "non-urn-schema",
    'Entries of a POST/PUT body\'s "schemas" that are not URNs (Entra\'s "http://schemas.microsoft.com/'
    '…/ADSCIM/2.0/Group") are dropped; the core schema stays. Entra group create.',
)
ENTRA_USER_TYPE = Rewrite(
    "entra-user-type",
    "userType sent in Entra's user extension (`urn:…:Microsoft:Entra:2.0:User:userType`) becomes the core "
    "userType, which holds the same value; one attribute, one place. Entra.",
)
READONLY_INPUT = Rewrite(
    "readonly-input",
    'readOnly attributes in a POST/PUT body ("meta", the User\'s "groups", and on PUT an "id" equal to '
    "the resource's own) are dropped; RFC 7644 §3.5.1 has them ignored anyway. Okta PUT and create "
    '("groups": []), Entra create ("meta").',
)

REWRITES: Final[dict[str, Rewrite]] = {
    rewrite.name: rewrite
    for rewrite in (
        MESSAGE_KEY_CASE,
        STRAY_KEYS,
        OP_CASE,
        NO_PATH_DOTTED_KEYS,
        ATTRIBUTE_NAME_CASE,
        STRING_BOOLEAN,
        MANAGER_PLAIN_ID,
        ROLES_JSON_STRING,
        NULL_REF,
        REMOVE_MEMBERS_VALUE_ARRAY,
        PATCH_VALUE_CARRIES_ID,
        NON_URN_SCHEMA,
        ENTRA_USER_TYPE,
        READONLY_INPUT,
    )
}


@dataclass
class Normalized:
    """The rewritten body, and the names of the rewrites that fired, in order, each at most once."""

    body: Any
    fired: list[str] = field(default_factory=list)


def _fire(fired: list[str], rewrite: Rewrite) -> None:
    if rewrite.name not in fired:
        fired.append(rewrite.name)


@dataclass
class _Context:
    resource_type: ResourceType
    method: str
    resource_id: str | None = None
    fired: list[str] = field(default_factory=list)

    def fire(self, rewrite: Rewrite) -> None:
        _fire(self.fired, rewrite)


# Returned by a value rewrite to drop the key that held the value.
_DROP: Final = object()
# The scope inside the brackets of an attribute that didn't resolve: every name in it stays as sent.
_NO_SCOPE: Final = Attribute("", "complex")

_PATCH_KEYS = ("schemas", "Operations")
_OPERATION_KEYS = ("op", "path", "value")
_OPS = ("add", "remove", "replace")


# --- entry points ---------------------------------------------------------------------


def normalize_patch(body: Any, resource_type: ResourceType, *, resource_id: str | None = None) -> Normalized:
    """Rewrite a PATCH body into the strict PatchOp form the PATCH engine expects."""
    if not isinstance(body, dict):
        return Normalized(body)
    ctx = _Context(resource_type, "PATCH", resource_id)
    message = _message_key_case(json_copy(body), _PATCH_KEYS, ctx)
    message = _drop_stray_keys(message, _PATCH_KEYS, ctx)
    operations = message.get("Operations")
    if isinstance(operations, list):
        message["Operations"] = [rewritten for op in operations for rewritten in _rewrite_operation(op, ctx)]
    return Normalized(message, ctx.fired)


def normalize_resource(
    body: Any, resource_type: ResourceType, *, method: str, resource_id: str | None = None
) -> Normalized:
    """Rewrite a POST or PUT body into the strict resource form the resource parser expects."""
    if method not in ("POST", "PUT"):
        raise ValueError(f"normalize_resource handles POST and PUT bodies, not {method}")
    if not isinstance(body, dict):
        return Normalized(body)
    ctx = _Context(resource_type, method, resource_id)
    resource = _message_key_case(json_copy(body), ("schemas",), ctx)
    for step in (
        _drop_non_urn_schemas,
        _drop_readonly_input,
        _schema_uri_case,
        _entra_user_type_in_body,
        _resource_object,
    ):
        resource = step(resource, ctx)
    return Normalized(resource, ctx.fired)


def normalize_filter(text: str, resource_type: ResourceType | None = None) -> tuple[str, list[str]]:
    """Rewrite a `filter` (query parameter or SearchRequest); no resource type means a root-level search."""
    if not isinstance(text, str):
        return text, []
    registry = get_registry()
    types = (resource_type,) if resource_type is not None else tuple(registry.resource_types.values())
    fired: list[str] = []
    return _rewrite_filter(text, types, None, fired), fired


# --- message keys ---------------------------------------------------------------------


def _message_key_case(obj: dict[str, Any], names: tuple[str, ...], ctx: _Context) -> dict[str, Any]:
    by_lower = {name.lower(): name for name in names}
    result: dict[str, Any] = {}
    for key, value in obj.items():
        name = by_lower.get(key.lower(), key)
        # With two spellings of one key there is no telling which is meant: the core refuses the body.
        if name != key and name not in obj and name not in result:
            ctx.fire(MESSAGE_KEY_CASE)
            key = name
        result[key] = value
    return result


def _drop_stray_keys(obj: dict[str, Any], names: tuple[str, ...], ctx: _Context) -> dict[str, Any]:
    kept = {key: value for key, value in obj.items() if key in names}
    if len(kept) != len(obj):
        ctx.fire(STRAY_KEYS)
    return kept


# --- PATCH operations -----------------------------------------------------------------

_OperationStep = Callable[[dict[str, Any], _Context], list[dict[str, Any]]]


def _rewrite_operation(op: Any, ctx: _Context) -> list[Any]:
    """Run one operation through every step; a step may split it into several operations."""
    if not isinstance(op, dict):
        return [op]
    ops: list[dict[str, Any]] = [op]
    for step in _OPERATION_STEPS:
        ops = [out for current in ops for out in step(current, ctx)]
    return ops


def _operation_key_case(op: dict[str, Any], ctx: _Context) -> list[dict[str, Any]]:
    return [_message_key_case(op, _OPERATION_KEYS, ctx)]


def _operation_stray_keys(op: dict[str, Any], ctx: _Context) -> list[dict[str, Any]]:
    return [_drop_stray_keys(op, _OPERATION_KEYS, ctx)]


def _op_case(op: dict[str, Any], ctx: _Context) -> list[dict[str, Any]]:
    name = op.get("op")
    if isinstance(name, str) and name.lower() in _OPS and name != name.lower():
        ctx.fire(OP_CASE)
        return [{**op, "op": name.lower()}]
    return [op]


def _split_dotted_keys(op: dict[str, Any], ctx: _Context) -> list[dict[str, Any]]:
    """aadOptscim062020: `{"op": "replace", "value": {"name.givenName": "B"}}` means path `name.givenName`."""
    value = op.get("value")
    if "path" in op or op.get("op") not in ("add", "replace") or not isinstance(value, dict):
        return [op]
    plain = {key: item for key, item in value.items() if not _is_path_key(key, ctx.resource_type)}
    if len(plain) == len(value):
        return [op]
    ctx.fire(NO_PATH_DOTTED_KEYS)
    # Plain keys first: the op they share keeps its place; the path keys follow in the order sent.
    pathed = [{"op": op["op"], "path": key, "value": item} for key, item in value.items() if key not in plain]
    return ([{**op, "value": plain}] if plain else []) + pathed


def _is_path_key(key: str, resource_type: ResourceType) -> bool:
    registry = get_registry()
    if registry.extension_schema(resource_type, key) is not None:
        return False
    if not key.lower().startswith("urn:") and "." not in key:
        return False
    try:
        registry.resolve(resource_type, key)
    except UnknownAttribute:
        return False
    return True


def _canonical_path(op: dict[str, Any], ctx: _Context) -> list[dict[str, Any]]:
    path = op.get("path")
    if not isinstance(path, str):
        return [op]
    canonical = _rewrite_path(path, ctx)
    return [{**op, "path": canonical} if canonical != path else op]


def _manager_plain_id(op: dict[str, Any], ctx: _Context) -> list[dict[str, Any]]:
    target = _patch_target(op, ctx)
    if (
        target is None
        or not target.is_whole_attribute
        or not _is_manager(target.schema, target.attribute)
        or op.get("op") not in ("add", "replace")
        or "value" not in op
    ):
        return [op]
    value = op["value"]
    # The gallery validator's "remove manager" is a replace with "" (then null): both mean no manager.
    if value in ("", None):
        ctx.fire(MANAGER_PLAIN_ID)
        return [{"op": "remove", "path": op["path"]}]
    if isinstance(value, str):
        ctx.fire(MANAGER_PLAIN_ID)
        return [{**op, "value": {"value": value}}]
    return [op]


def _remove_members_by_value(op: dict[str, Any], ctx: _Context) -> list[dict[str, Any]]:
    """Entra's `Remove members [{"value": a}]` removes a; read strictly it would clear the group."""
    target = _patch_target(op, ctx)
    if (
        op.get("op") != "remove"
        or target is None
        or not target.is_whole_attribute
        or target.schema.id != CORE_GROUP
        or target.attribute.name != "members"
    ):
        return [op]
    member_ids = _member_ids(op.get("value"))
    if not member_ids:
        return [op]
    ctx.fire(REMOVE_MEMBERS_VALUE_ARRAY)
    # One short filter per member rather than one long `or`: the PATCH engine stays O(1) per member.
    return [
        {"op": "remove", "path": f"{op['path']}[value eq {json.dumps(member_id, ensure_ascii=False)}]"}
        for member_id in member_ids
    ]


def _member_ids(value: Any) -> list[str]:
    """The ids of a `[{"value": id}, …]` value, or [] if any element isn't one (the core then decides)."""
    elements = [value] if isinstance(value, dict) else value
    if not isinstance(elements, list):
        return []
    ids: list[str] = []
    for element in elements:
        member_id = _get_ignoring_case(element, "value") if isinstance(element, dict) else None
        if not isinstance(member_id, str) or not member_id:
            return []
        ids.append(member_id)
    return list(dict.fromkeys(ids))


def _rewrite_value(op: dict[str, Any], ctx: _Context) -> list[dict[str, Any]]:
    # A remove with a value array (Entra unassigning app roles) carries values in the same shapes as an add.
    if op.get("op") not in ("add", "replace", "remove") or "value" not in op:
        return [op]
    if op["op"] == "remove" and "path" not in op:
        return [op]
    value = op["value"]
    if "path" not in op:
        return [{**op, "value": _resource_object(value, ctx)} if isinstance(value, dict) else op]
    target = _patch_target(op, ctx)
    if target is None:
        return [op]
    attribute = target.sub_attribute or target.attribute
    return [{**op, "value": _attribute_value(target.schema, attribute, value, ctx)}]


_ENTRA_USER_TYPE_PATH = f"{ENTRA_USER}:userType".lower()


def _entra_user_type_path(op: dict[str, Any], ctx: _Context) -> list[dict[str, Any]]:
    """A path naming Entra's extension userType, or a path-less value carrying it, addresses core userType."""
    path = op.get("path")
    if isinstance(path, str):
        if path.strip().lower() != _ENTRA_USER_TYPE_PATH:
            return [op]
        ctx.fire(ENTRA_USER_TYPE)
        return [{**op, "path": "userType"}]
    value = op.get("value")
    if isinstance(value, dict):
        moved = _entra_user_type_in_body(value, ctx)
        if moved is not value:
            return [{**op, "value": moved}]
    return [op]


def _entra_user_type_in_body(resource: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    if ctx.resource_type.name != "User":
        return resource
    for key, extension in resource.items():
        if key.lower() != ENTRA_USER.lower() or not isinstance(extension, dict):
            continue
        name = next((k for k in extension if k.lower() == "usertype"), None)
        if name is None:
            continue
        ctx.fire(ENTRA_USER_TYPE)
        moved = {k: v for k, v in resource.items() if k != key}
        rest = {k: v for k, v in extension.items() if k != name}
        if rest:
            moved[key] = rest
        moved.setdefault("userType", extension[name])
        return moved
    return resource


def _drop_own_id(op: dict[str, Any], ctx: _Context) -> list[dict[str, Any]]:
    """Okta renames a group with `{"op": "replace", "value": {"id": <its id>, "displayName": …}}`."""
    value = op.get("value")
    if (
        ctx.resource_id is None
        or "path" in op
        or op.get("op") != "replace"
        or not isinstance(value, dict)
        or value.get("id") != ctx.resource_id
    ):
        return [op]
    ctx.fire(PATCH_VALUE_CARRIES_ID)
    return [{**op, "value": {key: item for key, item in value.items() if key != "id"}}]


# Order matters: keys and op names are fixed before anything reads them, dotted keys are split before
# paths are canonicalised (so the new paths are too), and members are split before values are rewritten
# (so a "$ref": null in a value about to be discarded doesn't count as null-ref).
_OPERATION_STEPS: tuple[_OperationStep, ...] = (
    _operation_key_case,
    _operation_stray_keys,
    _op_case,
    _entra_user_type_path,
    _split_dotted_keys,
    _canonical_path,
    _manager_plain_id,
    _remove_members_by_value,
    _rewrite_value,
    _drop_own_id,
)


# --- PATCH paths ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """What a PATCH path points at: `attr`, `attr.sub`, `attr[filter]` or `attr[filter].sub`."""

    schema: Schema
    attribute: Attribute
    sub_attribute: Attribute | None
    filtered: bool

    @property
    def is_whole_attribute(self) -> bool:
        return self.sub_attribute is None and not self.filtered


def _split_path(text: str) -> tuple[str, str | None, str | None] | None:
    try:
        parse_path(text)
    except FilterSyntaxError:
        return None
    return split_path(text)


def _patch_target(op: dict[str, Any], ctx: _Context) -> _Target | None:
    path = op.get("path")
    parts = _split_path(path) if isinstance(path, str) else None
    if parts is None:
        return None
    attribute_text, filter_text, sub_text = parts
    try:
        resolved = get_registry().resolve(ctx.resource_type, attribute_text)
    except UnknownAttribute:
        return None
    if filter_text is None:
        return _Target(resolved.schema, resolved.attribute, resolved.sub_attribute, filtered=False)
    sub = resolved.attribute.sub(sub_text) if sub_text is not None else None
    if resolved.sub_attribute is not None or (sub_text is not None and sub is None):
        return None
    return _Target(resolved.schema, resolved.attribute, sub, filtered=True)


def _rewrite_path(text: str, ctx: _Context) -> str:
    parts = _split_path(text)
    if parts is None:
        return text
    attribute_text, filter_text, sub_text = parts
    canonical = _canonical_attribute((ctx.resource_type,), attribute_text)
    if canonical is None:
        return text
    name, resolved = canonical
    if filter_text is not None and resolved.sub_attribute is not None:
        return text
    sub = resolved.attribute.sub(sub_text) if sub_text is not None else None
    if sub_text is not None and sub is None:
        return text
    if name != attribute_text or (sub is not None and sub.name != sub_text):
        ctx.fire(ATTRIBUTE_NAME_CASE)
    if filter_text is None:
        return name
    rewritten = f"{name}[{_rewrite_filter(filter_text, (ctx.resource_type,), resolved.attribute, ctx.fired)}]"
    return f"{rewritten}.{sub.name}" if sub is not None else rewritten


def _canonical_attribute(
    resource_types: tuple[ResourceType, ...], text: str
) -> tuple[str, AttributePath] | None:
    """`Name.GivenName` → `name.givenName`; a URN prefix stays (with its registry spelling) if sent."""
    registry = get_registry()
    for resource_type in resource_types:
        try:
            resolved = registry.resolve(resource_type, text)
        except UnknownAttribute:
            continue
        name = resolved.attribute.name
        if resolved.sub_attribute is not None:
            name += f".{resolved.sub_attribute.name}"
        return _urn_prefix(resource_type, text) + name, resolved
    return None


def _urn_prefix(resource_type: ResourceType, text: str) -> str:
    lowered = text.lower()
    # The longest schema id wins, as in Registry.resolve: ids contain ':' themselves.
    for schema in sorted(resource_type.all_schemas(), key=lambda s: len(s.id), reverse=True):
        if lowered.startswith(schema.id.lower() + ":"):
            return schema.id + ":"
    return ""


# --- filters --------------------------------------------------------------------------


def _rewrite_filter(
    text: str, resource_types: tuple[ResourceType, ...], scope: Attribute | None, fired: list[str]
) -> str:
    """Canonicalise attribute names and quoted booleans token by token, keeping everything else as sent.

    `scope` is the multi-valued attribute whose brackets hold the filter (None at the top level).
    """
    try:
        parse_filter(text)
    except FilterSyntaxError:
        return text
    scopes: list[Attribute | None] = [scope]
    closed: Attribute | None = None
    tested: Attribute | None = None
    operator = ""
    expecting = "attribute"
    out: list[str] = []
    for kind, token in scan(text):
        if kind == "space":
            pass
        elif expecting == "attribute":
            # Anything else here is "(" or the "not" before one.
            if kind == "word" and token.lower() != "not":
                token, tested = _filter_attribute(token, scopes[-1], resource_types, fired)
                expecting = "operator"
        elif expecting == "operator":
            if token == "[":
                scopes.append(tested or _NO_SCOPE)
                expecting = "attribute"
            else:
                operator = token.lower()
                expecting = "logic" if operator == "pr" else "value"
        elif expecting == "value":
            if kind == "string" and operator in ("eq", "ne") and tested and tested.type == "boolean":
                token = _boolean_literal(token, fired)
            expecting = "logic"
        elif token == "]":
            closed = scopes.pop()
        elif kind == "sub":
            name, tested = _filter_attribute(token[1:], closed or _NO_SCOPE, resource_types, fired)
            token = f".{name}"
            expecting = "operator"
        elif kind == "word":
            expecting = "attribute"
        out.append(token)
    return "".join(out)


def _filter_attribute(
    token: str, scope: Attribute | None, resource_types: tuple[ResourceType, ...], fired: list[str]
) -> tuple[str, Attribute | None]:
    if scope is None:
        canonical = _canonical_attribute(resource_types, token)
        if canonical is None:
            return token, None
        name, attribute = canonical[0], canonical[1].target
    else:
        sub = scope.sub(token)
        if sub is None:
            return token, None
        name, attribute = sub.name, sub
    if name != token:
        _fire(fired, ATTRIBUTE_NAME_CASE)
    return name, attribute


def _boolean_literal(token: str, fired: list[str]) -> str:
    value = json.loads(token)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        _fire(fired, STRING_BOOLEAN)
        return value.lower()
    return token


# --- resource bodies ------------------------------------------------------------------


def _drop_non_urn_schemas(resource: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    """Entra lists "http://schemas.microsoft.com/…/ADSCIM/2.0/Group" on group create; it means nothing."""
    schemas = resource.get("schemas")
    if not isinstance(schemas, list):
        return resource
    kept = [uri for uri in schemas if not isinstance(uri, str) or uri.lower().startswith("urn:")]
    if len(kept) == len(schemas):
        return resource
    ctx.fire(NON_URN_SCHEMA)
    core = ctx.resource_type.schema.id
    if not any(isinstance(uri, str) and uri.lower() == core.lower() for uri in kept):
        kept.insert(0, core)
    return {**resource, "schemas": kept}


def _drop_readonly_input(resource: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    kept = {key: value for key, value in resource.items() if not _is_readonly_input(key, value, ctx)}
    if len(kept) != len(resource):
        ctx.fire(READONLY_INPUT)
    return kept


def _is_readonly_input(key: str, value: Any, ctx: _Context) -> bool:
    attribute = _core_attribute(ctx.resource_type, key)
    if attribute is None or attribute.mutability != "readOnly":
        return False
    if attribute.name == "id":
        # Okta echoes the resource's own id; counted here. Any other id is ignored by the core
        # as well, as RFC 7644 §3.5.1 says of readOnly input.
        return ctx.method == "PUT" and ctx.resource_id is not None and value == ctx.resource_id
    return True


def _schema_uri_case(resource: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    """Keeps "schemas" spelled like the extension keys that _resource_object canonicalises."""
    schemas = resource.get("schemas")
    if not isinstance(schemas, list):
        return resource
    known = {schema_id.lower(): schema_id for schema_id in ctx.resource_type.schema_ids}
    canonical = [known.get(uri.lower(), uri) if isinstance(uri, str) else uri for uri in schemas]
    if canonical == schemas:
        return resource
    ctx.fire(ATTRIBUTE_NAME_CASE)
    return {**resource, "schemas": canonical}


def _core_attribute(resource_type: ResourceType, key: str) -> Attribute | None:
    """A top-level attribute of a body: common (id, externalId, meta) or of the core schema."""
    return COMMON_SCHEMA.attribute(key) or resource_type.schema.attribute(key)


def _resource_object(resource: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    """A whole or partial resource: core attributes at the top level, extensions under their URN."""
    registry = get_registry()

    def member(key: str, value: Any) -> tuple[str, Any]:
        extension = registry.extension_schema(ctx.resource_type, key)
        if extension is not None:
            return extension.id, _schema_object(extension, value, ctx) if isinstance(value, dict) else value
        for schema in (COMMON_SCHEMA, ctx.resource_type.schema):
            attribute = schema.attribute(key)
            if attribute is not None:
                return attribute.name, _attribute_value(schema, attribute, value, ctx)
        return key, value

    return _rebuild(resource, member, ctx)


def _schema_object(schema: Schema, obj: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    def member(key: str, value: Any) -> tuple[str, Any]:
        attribute = schema.attribute(key)
        if attribute is None:
            return key, value
        return attribute.name, _attribute_value(schema, attribute, value, ctx)

    return _rebuild(obj, member, ctx)


def _complex_object(attribute: Attribute, obj: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    def member(key: str, value: Any) -> tuple[str, Any]:
        sub = attribute.sub(key)
        if sub is None:
            return key, value
        return sub.name, _scalar_value(sub, value, ctx)

    return _rebuild(obj, member, ctx)


def _rebuild(
    obj: dict[str, Any], member: Callable[[str, Any], tuple[str, Any]], ctx: _Context
) -> dict[str, Any]:
    """Rewrite each key and value of obj, keeping key order; a respelt key fires attribute-name-case."""
    result: dict[str, Any] = {}
    for key, value in obj.items():
        name, rewritten = member(key, value)
        if rewritten is _DROP:
            continue
        if name != key:
            # Two spellings of one attribute: which one wins is the core's call (it refuses the body).
            if name in obj or name in result:
                name = key
            else:
                ctx.fire(ATTRIBUTE_NAME_CASE)
        result[name] = rewritten
    return result


# --- attribute values -----------------------------------------------------------------


def _attribute_value(schema: Schema, attribute: Attribute, value: Any, ctx: _Context) -> Any:
    """The value of one attribute; a dict for a multi-valued attribute is one element (a filtered path)."""
    if _is_manager(schema, attribute):
        value = _manager_value(value, ctx)
    if attribute.type != "complex":
        if attribute.multi_valued and isinstance(value, list):
            return [_scalar_value(attribute, item, ctx) for item in value]
        return _scalar_value(attribute, value, ctx)
    if attribute.multi_valued and isinstance(value, list):
        return [_element(attribute, item, ctx) for item in value]
    if attribute.multi_valued and isinstance(value, dict):
        return _element(attribute, value, ctx)
    if isinstance(value, dict):
        return _complex_object(attribute, value, ctx)
    return value


def _element(attribute: Attribute, element: Any, ctx: _Context) -> Any:
    if not isinstance(element, dict):
        return element
    element = _complex_object(attribute, _drop_null_keys(element, ctx), ctx)
    return _role_from_json(element, ctx) if attribute.name == "roles" else element


def _scalar_value(attribute: Attribute, value: Any, ctx: _Context) -> Any:
    if attribute.type == "boolean" and isinstance(value, str) and value.lower() in ("true", "false"):
        ctx.fire(STRING_BOOLEAN)
        return value.lower() == "true"
    return value


def _is_manager(schema: Schema, attribute: Attribute) -> bool:
    return schema.id == ENTERPRISE_USER and attribute.name == "manager"


def _manager_value(value: Any, ctx: _Context) -> Any:
    if not isinstance(value, str):
        return value
    if value:
        ctx.fire(MANAGER_PLAIN_ID)
        return {"value": value}
    # In a POST/PUT body "no manager" is simply absence. In a path-less PATCH value, dropping the key would
    # turn "clear the manager" into "leave it alone", so "" stays there for the core to refuse.
    if ctx.method == "PATCH":
        return value
    ctx.fire(MANAGER_PLAIN_ID)
    return _DROP


def _drop_null_keys(element: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    """Only inside multi-valued elements: in a single complex value a null sub-attribute means clear it."""
    kept = {key: value for key, value in element.items() if value is not None}
    if len(kept) != len(element):
        ctx.fire(NULL_REF)
    return kept


def _role_from_json(element: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    """Entra app roles: `{"value": "{\\"id\\": …, \\"value\\": \\"Admin\\", \\"displayName\\": …}"}`."""
    raw = element.get("value")
    if not isinstance(raw, str) or not raw.lstrip().startswith("{"):
        return element
    try:
        role = json.loads(raw)
    except ValueError:
        return element
    if not isinstance(role, dict) or not isinstance(role.get("value"), str):
        return element
    ctx.fire(ROLES_JSON_STRING)
    rewritten: dict[str, Any] = {"value": role["value"]}
    if isinstance(role.get("displayName"), str) and "display" not in element:
        rewritten["display"] = role["displayName"]
    # No type is invented: roles have no canonical types, and Entra's complex form names its own.
    rewritten.update((key, item) for key, item in element.items() if key != "value")
    return rewritten


def _get_ignoring_case(obj: dict[str, Any], name: str) -> Any:
    lowered = name.lower()
    return next((value for key, value in obj.items() if key.lower() == lowered), None)


__all__ = [
    "REWRITES",
    "Normalized",
    "Rewrite",
    "normalize_filter",
    "normalize_patch",
    "normalize_resource",
]
