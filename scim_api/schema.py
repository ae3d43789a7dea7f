"""The schema registry: one description of every SCIM attribute the server knows.

The discovery documents (/Schemas, /ResourceTypes), input validation, the
`attributes` / `excludedAttributes` rules, and which attributes can be filtered
and sorted on (and on what column) all read from here, so they cannot disagree.

Operator-defined extension schemas (directory.ExtensionSchema) join the
built-in ones at run time: a resource type's `extensions` and the registry's
`schemas` add them from directory.extensions' cached definitions, rebuilt only
when those change, so every consumer sees them without asking.

Each Attribute carries the RFC 7643 §7 characteristics plus a storage hint:
- `column`: the ORM path of a single-valued attribute on the resource's model;
- `storage`: how a multi-valued attribute is stored ("values" = UserValue rows
  of kind `name`, "groups" = the user's memberships, "members" = a group's
  memberships); its sub-attributes' `column` is then relative to that row.
  "json" is a list of simple values kept in a JSON document at `column`
  (operator-defined multi-valued attributes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from directory.extensions import AttributeDefinition, Definitions, SchemaDefinition

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ENTRA_USER = "urn:ietf:params:scim:schemas:extension:Microsoft:Entra:2.0:User"
ENTRA_GROUP = "urn:ietf:params:scim:schemas:extension:Microsoft:Entra:2.0:Group"
# Sent by Entra's provisioning service on group create: not a URN, never declared.
ADSCIM_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"

LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SERVICE_PROVIDER_CONFIG_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"

AttrType = Literal["string", "boolean", "decimal", "integer", "dateTime", "reference", "complex", "binary"]
Mutability = Literal["readOnly", "readWrite", "immutable", "writeOnly"]
Returned = Literal["always", "never", "default", "request"]
Uniqueness = Literal["none", "server", "global"]
Storage = Literal["column", "values", "groups", "members", "json"]


@dataclass(frozen=True)
class Attribute:
    """One attribute (or sub-attribute) and its RFC 7643 §7 characteristics."""

    name: str
    type: AttrType = "string"
    multi_valued: bool = False
    required: bool = False
    mutability: Mutability = "readWrite"
    returned: Returned = "default"
    uniqueness: Uniqueness = "none"
    case_exact: bool = False
    canonical_values: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()
    sub_attributes: tuple[Attribute, ...] = ()
    description: str = ""
    column: str | None = None
    storage: Storage = "column"
    filterable: bool = True

    @cached_property
    def _subs_by_name(self) -> dict[str, Attribute]:
        return {sub.name.lower(): sub for sub in self.sub_attributes}

    def sub(self, name: str) -> Attribute | None:
        return self._subs_by_name.get(name.lower())

    def to_scim(self) -> dict[str, Any]:
        """The attribute as RFC 7643 §7 describes it, with no nulls (Microsoft's validator rejects them)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi_valued,
            "description": self.description or self.name,
            "required": self.required,
            "mutability": self.mutability,
            "returned": self.returned,
        }
        if self.type in ("string", "reference", "binary"):
            doc["caseExact"] = self.case_exact
        if self.type != "complex":
            doc["uniqueness"] = self.uniqueness
        if self.canonical_values:
            doc["canonicalValues"] = list(self.canonical_values)
        if self.reference_types:
            doc["referenceTypes"] = list(self.reference_types)
        if self.sub_attributes:
            doc["subAttributes"] = [sub.to_scim() for sub in self.sub_attributes]
        return doc


@dataclass(frozen=True)
class Schema:
    id: str
    name: str
    description: str
    attributes: tuple[Attribute, ...]

    @cached_property
    def _attributes_by_name(self) -> dict[str, Attribute]:
        # Looked up for every key of every request body: a dict, not a scan.
        by_name: dict[str, Attribute] = {}
        for attr in self.attributes:
            by_name.setdefault(attr.name.lower(), attr)
        return by_name

    def attribute(self, name: str) -> Attribute | None:
        return self._attributes_by_name.get(name.lower())

    def to_scim(self, base_url: str) -> dict[str, Any]:
        return {
            "schemas": [SCHEMA_SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": [attr.to_scim() for attr in self.attributes],
            "meta": {"resourceType": "Schema", "location": f"{base_url}/Schemas/{self.id}"},
        }


@dataclass(frozen=True)
class ResourceType:
    name: str
    endpoint: str
    description: str
    schema: Schema
    builtin_extensions: tuple[tuple[Schema, bool], ...] = ()
    # ExtensionSchema.resource_type of the operator-defined extensions of this type.
    object_type: str = ""

    @property
    def extensions(self) -> tuple[tuple[Schema, bool], ...]:
        """(schema, required) of every extension: the built-in ones, then those operators defined."""
        return self.builtin_extensions + custom_extensions(self.object_type)

    @property
    def schema_ids(self) -> list[str]:
        return [self.schema.id, *(ext.id for ext, _ in self.extensions)]

    def all_schemas(self) -> Iterator[Schema]:
        yield self.schema
        for ext, _ in self.extensions:
            yield ext

    def to_scim(self, base_url: str) -> dict[str, Any]:
        return {
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.description,
            "schema": self.schema.id,
            "schemaExtensions": [
                {"schema": ext.id, "required": required} for ext, required in self.extensions
            ],
            "meta": {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/{self.name}"},
        }


@dataclass(frozen=True)
class AttributePath:
    """A resolved attribute reference: `name.givenName`, `urn:…:enterprise:2.0:User:manager.value`..."""

    schema: Schema
    attribute: Attribute
    sub_attribute: Attribute | None = None

    @property
    def target(self) -> Attribute:
        return self.sub_attribute or self.attribute

    @property
    def is_extension(self) -> bool:
        return self.schema.id not in (CORE_USER, CORE_GROUP, COMMON_SCHEMA_ID)

    def __str__(self) -> str:
        text = self.attribute.name
        if self.sub_attribute is not None:
            text += f".{self.sub_attribute.name}"
        return f"{self.schema.id}:{text}" if self.is_extension else text


class UnknownAttribute(ValueError):
    """A path that names no attribute of the resource type."""


# --- the attribute definitions --------------------------------------------------------


def _multi(
    name: str, *, description: str, types: tuple[str, ...], extra: tuple[Attribute, ...] = ()
) -> Attribute:
    """A multi-valued complex attribute stored as UserValue rows (emails, phoneNumbers, ...)."""
    return Attribute(
        name,
        "complex",
        multi_valued=True,
        description=description,
        storage="values",
        sub_attributes=(
            Attribute("value", column="value", description=f"The {name} value."),
            Attribute("display", column="display", description="A human-readable name, for display only."),
            Attribute(
                "type", canonical_values=types, column="type", description="A label for the value's function."
            ),
            Attribute(
                "primary", "boolean", column="primary", description="The preferred value of this attribute."
            ),
            *extra,
        ),
    )


_CORE_USER_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "userName",
        required=True,
        uniqueness="server",
        column="user_name",
        description="Unique identifier for the user, typically used to sign in.",
    ),
    Attribute(
        "name",
        "complex",
        description="The components of the user's real name.",
        sub_attributes=(
            Attribute(
                "formatted", column="name_formatted", description="The full name, formatted for display."
            ),
            Attribute("familyName", column="family_name", description="The family name."),
            Attribute("givenName", column="given_name", description="The given name."),
            Attribute("middleName", column="middle_name", description="The middle name(s)."),
            Attribute("honorificPrefix", column="honorific_prefix", description="Title prefix, e.g. 'Ms.'."),
            Attribute("honorificSuffix", column="honorific_suffix", description="Title suffix, e.g. 'III'."),
        ),
    ),
    Attribute("displayName", column="display_name", description="The name shown to end users."),
    Attribute("nickName", column="nick_name", description="The casual name of the user."),
    Attribute(
        "profileUrl",
        "reference",
        reference_types=("external",),
        column="profile_url",
        description="Profile URL.",
    ),
    Attribute("title", column="title", description="The user's title, e.g. 'Vice President'."),
    Attribute(
        "userType", column="user_type", description="The relationship to the organisation, e.g. 'Employee'."
    ),
    Attribute(
        "preferredLanguage", column="preferred_language", description="Preferred language, e.g. 'en-US'."
    ),
    Attribute("locale", column="locale", description="Default location for localisation, e.g. 'en-US'."),
    Attribute("timezone", column="timezone", description="Time zone in IANA format, e.g. 'Europe/Paris'."),
    # Required here although optional in RFC 7643: the directory always knows whether a user may sign
    # in, so `active` cannot be unassigned (a remove is refused); a create that omits it gets true.
    Attribute(
        "active", "boolean", required=True, column="active", description="Whether the user may sign in."
    ),
    Attribute(
        "password",
        mutability="writeOnly",
        returned="never",
        filterable=False,
        description="The user's cleartext password, hashed on arrival and never returned.",
    ),
    _multi("emails", description="Email addresses.", types=("work", "home", "other")),
    _multi(
        "phoneNumbers",
        description="Phone numbers.",
        types=("work", "home", "mobile", "fax", "pager", "other"),
    ),
    _multi(
        "ims",
        description="Instant messaging addresses.",
        types=("aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"),
    ),
    _multi("photos", description="URLs of photos of the user.", types=("photo", "thumbnail")),
    Attribute(
        "addresses",
        "complex",
        multi_valued=True,
        storage="values",
        description="Physical mailing addresses.",
        sub_attributes=(
            Attribute("formatted", column="address__formatted", description="The full address, for display."),
            Attribute("streetAddress", column="address__streetAddress", description="Street address."),
            Attribute("locality", column="address__locality", description="City or locality."),
            Attribute("region", column="address__region", description="State or region."),
            Attribute("postalCode", column="address__postalCode", description="Zip or postal code."),
            Attribute("country", column="address__country", description="Country, ISO 3166-1 alpha-2."),
            Attribute(
                "type", canonical_values=("work", "home", "other"), column="type", description="Label."
            ),
            Attribute("primary", "boolean", column="primary", description="The preferred address."),
        ),
    ),
    Attribute(
        "groups",
        "complex",
        multi_valued=True,
        mutability="readOnly",
        storage="groups",
        description="The groups the user belongs to, directly or through nesting.",
        sub_attributes=(
            Attribute(
                "value", mutability="readOnly", case_exact=True, column="group_id", description="Group id."
            ),
            Attribute(
                "$ref",
                "reference",
                mutability="readOnly",
                reference_types=("Group",),
                filterable=False,
                description="The group's URI.",
            ),
            Attribute(
                "display", mutability="readOnly", column="group__display_name", description="Group name."
            ),
            Attribute(
                "type",
                mutability="readOnly",
                canonical_values=("direct", "indirect"),
                filterable=False,
                description="Direct or indirect (nested) membership.",
            ),
        ),
    ),
    _multi("entitlements", description="Entitlements of the user.", types=()),
    _multi("roles", description="Roles of the user.", types=()),
    _multi("x509Certificates", description="DER-encoded X.509 certificates (base64).", types=()),
)

_ENTERPRISE_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("employeeNumber", column="employee_number", description="Numeric or alphanumeric employee id."),
    Attribute("costCenter", column="cost_center", description="Name of a cost center."),
    Attribute("organization", column="organization", description="Name of an organisation."),
    Attribute("division", column="division", description="Name of a division."),
    Attribute("department", column="department", description="Name of a department."),
    Attribute(
        "manager",
        "complex",
        description="The user's manager.",
        sub_attributes=(
            Attribute("value", case_exact=True, column="manager_id", description="The manager's id."),
            Attribute(
                "$ref",
                "reference",
                reference_types=("User",),
                filterable=False,
                description="The manager's URI (RFC 7643 §4.3: readWrite, like value).",
            ),
            Attribute(
                "displayName",
                mutability="readOnly",
                column="manager__display_name",
                description="The manager's display name.",
            ),
        ),
    ),
)


def _entra_user_column(name: str) -> str:
    return f"extensions__{ENTRA_USER}__{name}"


_ENTRA_USER_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("mailNickname", column=_entra_user_column("mailNickname"), description="The mail alias."),
    Attribute(
        "employeeHireDate",
        "dateTime",
        column=_entra_user_column("employeeHireDate"),
        description="The date the user was hired or will start work.",
    ),
    Attribute(
        "employeeLeaveDateTime",
        "dateTime",
        column=_entra_user_column("employeeLeaveDateTime"),
        description="The date the user left or will leave the organisation.",
    ),
)

_CORE_GROUP_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "displayName",
        required=True,
        uniqueness="server",
        column="display_name",
        description="A human-readable name for the group; unique, as Microsoft Entra requires.",
    ),
    Attribute(
        "members",
        "complex",
        multi_valued=True,
        storage="members",
        description="The direct members of the group: users and groups.",
        sub_attributes=(
            Attribute(
                "value", mutability="immutable", case_exact=True, column="member_id", description="Member id."
            ),
            Attribute(
                "$ref",
                "reference",
                mutability="immutable",
                reference_types=("User", "Group"),
                filterable=False,
                description="The member's URI.",
            ),
            Attribute(
                "display", mutability="readOnly", filterable=False, description="The member's display name."
            ),
            Attribute(
                "type",
                mutability="immutable",
                canonical_values=("User", "Group"),
                column="member_type",
                description="User or Group.",
            ),
        ),
    ),
)

_ENTRA_GROUP_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("description", column="description", description="A description of the group."),
    Attribute(
        "groupTypes",
        multi_valued=True,
        canonical_values=("Unified",),
        column="kind",
        description='["Unified"] for a Microsoft 365 group; empty for a security group.',
    ),
    Attribute(
        "mailEnabled", "boolean", column="mail_enabled", description="Whether the group has a mailbox."
    ),
    Attribute("mailNickname", column="mail_nickname", description="The mail alias of the group."),
    Attribute(
        "securityEnabled", "boolean", column="security_enabled", description="Whether it is a security group."
    ),
)

COMMON_SCHEMA_ID = "urn:ietf:params:scim:schemas:common"
# RFC 7643 §3.1: common to every resource, but part of no schema document.
_COMMON_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "id",
        mutability="readOnly",
        returned="always",
        uniqueness="server",
        case_exact=True,
        column="id",
        description="The server's unique identifier for the resource.",
    ),
    Attribute("externalId", case_exact=True, column="external_id", description="The client's identifier."),
    Attribute(
        "meta",
        "complex",
        mutability="readOnly",
        description="Resource metadata.",
        sub_attributes=(
            Attribute("resourceType", mutability="readOnly", case_exact=True, filterable=False),
            Attribute("created", "dateTime", mutability="readOnly", column="created"),
            Attribute("lastModified", "dateTime", mutability="readOnly", column="last_modified"),
            Attribute("location", "reference", mutability="readOnly", case_exact=True, filterable=False),
            Attribute("version", mutability="readOnly", case_exact=True, filterable=False),
        ),
    ),
)

USER_SCHEMA = Schema(CORE_USER, "User", "User Account", _CORE_USER_ATTRIBUTES)
ENTERPRISE_USER_SCHEMA = Schema(ENTERPRISE_USER, "EnterpriseUser", "Enterprise User", _ENTERPRISE_ATTRIBUTES)
ENTRA_USER_SCHEMA = Schema(ENTRA_USER, "EntraUser", "Microsoft Entra user extension", _ENTRA_USER_ATTRIBUTES)
GROUP_SCHEMA = Schema(CORE_GROUP, "Group", "Group", _CORE_GROUP_ATTRIBUTES)
ENTRA_GROUP_SCHEMA = Schema(
    ENTRA_GROUP,
    "EntraGroup",
    "Microsoft Entra group extension (Microsoft 365 groups)",
    _ENTRA_GROUP_ATTRIBUTES,
)
COMMON_SCHEMA = Schema(COMMON_SCHEMA_ID, "Common", "Attributes of every resource", _COMMON_ATTRIBUTES)


class Registry:
    """Every schema and resource type, with case-insensitive path resolution."""

    def __init__(self, resource_types: tuple[ResourceType, ...]) -> None:
        self.resource_types = {rt.name: rt for rt in resource_types}
        self.builtin_schemas: dict[str, Schema] = {}
        for rt in resource_types:
            self.builtin_schemas[rt.schema.id.lower()] = rt.schema
            for ext, _ in rt.builtin_extensions:
                self.builtin_schemas[ext.id.lower()] = ext

    @property
    def schemas(self) -> dict[str, Schema]:
        """Every schema by lower-cased id: the built-in ones first, then those operators defined."""
        schemas = dict(self.builtin_schemas)
        for rt in self.resource_types.values():
            for ext, _ in custom_extensions(rt.object_type):
                schemas.setdefault(ext.id.lower(), ext)
        return schemas

    def resource_type(self, name: str) -> ResourceType:
        return self.resource_types[name]

    def schema(self, schema_id: str) -> Schema | None:
        return self.schemas.get(schema_id.lower())

    def resolve(self, resource_type: ResourceType, path: str) -> AttributePath:
        """Resolve `attr`, `attr.sub`, or a URN-qualified `urn:...:attr[.sub]`, ignoring case."""
        schema, rest = self._split_urn(resource_type, path)
        name, _, sub_name = rest.partition(".")
        if schema is None:
            candidates: tuple[Schema, ...] = (COMMON_SCHEMA, *resource_type.all_schemas())
        elif schema.id in _CORE_IDS:
            candidates = (schema, COMMON_SCHEMA)
        else:
            candidates = (schema,)
        for candidate in candidates:
            attribute = candidate.attribute(name)
            if attribute is not None:
                break
        else:
            raise UnknownAttribute(f"'{path}' is not an attribute of {resource_type.name}")
        if not sub_name:
            return AttributePath(candidate, attribute)
        sub = attribute.sub(sub_name)
        if sub is None:
            raise UnknownAttribute(f"'{path}' is not an attribute of {resource_type.name}")
        return AttributePath(candidate, attribute, sub)

    def _split_urn(self, resource_type: ResourceType, path: str) -> tuple[Schema | None, str]:
        lowered = path.lower()
        if not lowered.startswith("urn:"):
            return None, path
        # The longest schema id that prefixes the path wins (ids contain ':' themselves).
        for schema in sorted(resource_type.all_schemas(), key=lambda s: len(s.id), reverse=True):
            prefix = schema.id.lower() + ":"
            if lowered.startswith(prefix):
                return schema, path[len(prefix) :]
        raise UnknownAttribute(f"'{path}' names no schema of {resource_type.name}")

    def extension_schema(self, resource_type: ResourceType, urn: str) -> Schema | None:
        lowered = urn.lower()
        return next((ext for ext, _ in resource_type.extensions if ext.id.lower() == lowered), None)


_CORE_IDS = (CORE_USER, CORE_GROUP)

USER = ResourceType(
    "User",
    "/Users",
    "User Account",
    USER_SCHEMA,
    ((ENTERPRISE_USER_SCHEMA, False), (ENTRA_USER_SCHEMA, False)),
    object_type="user",
)
GROUP = ResourceType(
    "Group", "/Groups", "Group", GROUP_SCHEMA, ((ENTRA_GROUP_SCHEMA, False),), object_type="group"
)


# --- operator-defined extension schemas ----------------------------------------------------


class _CustomSchemas:
    """The registry's view of directory.extensions' definitions, rebuilt when they change."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # One tuple, replaced whole, so a reader never sees schemas of one version with another's key.
        self.built: tuple[Definitions | None, dict[str, tuple[tuple[Schema, bool], ...]]] = (None, {})


_custom = _CustomSchemas()


def custom_extensions(object_type: str) -> tuple[tuple[Schema, bool], ...]:
    """(schema, required) of the extensions operators defined for users ("user") or groups ("group")."""
    if not object_type:
        return ()
    # Imported here: this module is imported while Django sets up, before models can load.
    from directory.extensions import definitions

    current = definitions()
    built_for, by_type = _custom.built
    if built_for is not current:
        with _custom.lock:
            by_type = {
                kind: tuple((_custom_schema(schema), schema.required) for schema in current.for_type(kind))
                for kind in ("user", "group")
            }
            _custom.built = (current, by_type)
    return by_type.get(object_type, ())


def _custom_schema(schema: SchemaDefinition) -> Schema:
    return Schema(
        schema.urn,
        schema.name,
        schema.description or schema.name,
        tuple(_custom_attribute(schema.urn, attribute) for attribute in schema.attributes),
    )


def _custom_attribute(urn: str, attribute: AttributeDefinition) -> Attribute:
    # Values are read from the `extensions` JSON by key, as filters, sorting and the
    # expression indexes expect (directory.json_sql). A value never returned is not
    # filterable either: filters would let a client probe it.
    return Attribute(
        attribute.name,
        attribute.type,  # type: ignore[arg-type]
        multi_valued=attribute.multi_valued,
        required=attribute.required,
        mutability=attribute.mutability,  # type: ignore[arg-type]
        returned=attribute.returned,  # type: ignore[arg-type]
        uniqueness=attribute.uniqueness,  # type: ignore[arg-type]
        case_exact=attribute.case_exact,
        canonical_values=attribute.canonical_values,
        reference_types=("external",) if attribute.type == "reference" else (),
        description=attribute.description or attribute.name,
        column=f"extensions__{urn}__{attribute.name}",
        storage="json" if attribute.multi_valued else "column",
        filterable=attribute.returned != "never",
    )


@cache
def get_registry() -> Registry:
    return Registry((USER, GROUP))


def iter_attributes(resource_type: ResourceType) -> Iterator[tuple[Schema, Attribute]]:
    """Every top-level attribute of a resource type, common ones included."""
    for attribute in COMMON_SCHEMA.attributes:
        yield COMMON_SCHEMA, attribute
    for schema in resource_type.all_schemas():
        for attribute in schema.attributes:
            yield schema, attribute


__all__ = [
    "Attribute",
    "AttributePath",
    "Registry",
    "ResourceType",
    "Schema",
    "UnknownAttribute",
    "custom_extensions",
    "get_registry",
    "iter_attributes",
]
