"""The directory: identities, groups, memberships, and the outbox and audit trail of every change.

Writes go through directory.services, never through these models directly, so
that each change bumps `version`, and records its ChangeEvent and AuditEntry in
the same transaction.
"""

import uuid

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils.timezone import now

from directory.correlation import REQUEST_ID_MAX_LENGTH, current_request_id


class UserQuerySet(models.QuerySet["User"]):
    def with_values(self) -> "UserQuerySet":
        """Prefetch the multi-valued attributes in one extra query for the whole page."""
        return self.prefetch_related("values")


class User(models.Model):
    """A directory identity, with every attribute of the SCIM core and enterprise User schemas.

    Multi-valued attributes (emails, phoneNumbers, ...) live in UserValue rows.
    The `id` is the SCIM id: a random UUID, never a sequence on the wire.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user_name = models.CharField("userName", max_length=255)
    external_id = models.CharField("externalId", max_length=255, blank=True, default="")

    name_formatted = models.CharField("name.formatted", max_length=512, blank=True, default="")
    family_name = models.CharField("name.familyName", max_length=255, blank=True, default="")
    given_name = models.CharField("name.givenName", max_length=255, blank=True, default="")
    middle_name = models.CharField("name.middleName", max_length=255, blank=True, default="")
    honorific_prefix = models.CharField("name.honorificPrefix", max_length=64, blank=True, default="")
    honorific_suffix = models.CharField("name.honorificSuffix", max_length=64, blank=True, default="")

    display_name = models.CharField("displayName", max_length=255, blank=True, default="")
    nick_name = models.CharField("nickName", max_length=255, blank=True, default="")
    profile_url = models.CharField("profileUrl", max_length=1024, blank=True, default="")
    title = models.CharField(max_length=255, blank=True, default="")
    user_type = models.CharField("userType", max_length=64, blank=True, default="")
    preferred_language = models.CharField("preferredLanguage", max_length=64, blank=True, default="")
    locale = models.CharField(max_length=64, blank=True, default="")
    timezone = models.CharField(max_length=64, blank=True, default="")
    active = models.BooleanField(default=True)
    # A Django password hash (Argon2id for new passwords); never returned by any API.
    password = models.CharField(max_length=255, blank=True, default="")

    # urn:ietf:params:scim:schemas:extension:enterprise:2.0:User
    employee_number = models.CharField("employeeNumber", max_length=64, blank=True, default="")
    cost_center = models.CharField("costCenter", max_length=255, blank=True, default="")
    organization = models.CharField(max_length=255, blank=True, default="")
    division = models.CharField(max_length=255, blank=True, default="")
    department = models.CharField(max_length=255, blank=True, default="")
    manager = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reports"
    )

    # Attributes of any other extension schema, keyed by schema URN:
    # {"urn:example:hr:1.0:User": {"badge": "42"}}.
    extensions = models.JSONField(default=dict, blank=True)

    created = models.DateTimeField(default=now, editable=False)
    last_modified = models.DateTimeField("lastModified", default=now, editable=False)
    # Incremented by every write; the SCIM meta.version / ETag.
    version = models.PositiveBigIntegerField(default=1, editable=False)

    objects = UserQuerySet.as_manager()

    class Meta:
        verbose_name = "user"
        constraints = [
            # RFC 7643: userName is unique and caseExact=false.
            models.UniqueConstraint(
                Lower("user_name"),
                name="directory_user_username_ci_unique",
                violation_error_message="A user with this userName already exists (ignoring case).",
            ),
            models.CheckConstraint(condition=~Q(user_name=""), name="directory_user_username_not_empty"),
            models.CheckConstraint(
                condition=~Q(manager=F("id")),
                name="directory_user_not_own_manager",
                violation_error_message="A user cannot be their own manager.",
            ),
        ]
        indexes = [
            models.Index(fields=["external_id"], name="directory_user_external_id"),
            models.Index(fields=["employee_number"], name="directory_user_employee_no"),
            models.Index(fields=["department"], name="directory_user_department"),
            models.Index(fields=["last_modified"], name="directory_user_last_modified"),
            # The default listing order (selectors.user_list): index pages without a sort.
            models.Index(fields=["created", "id"], name="directory_user_created_id"),
        ]

    def __str__(self) -> str:
        return self.user_name


class UserValueKind(models.TextChoices):
    """The multi-valued attributes of the SCIM core User schema."""

    EMAILS = "emails", "email"
    PHONE_NUMBERS = "phoneNumbers", "phone number"
    IMS = "ims", "instant messaging address"
    PHOTOS = "photos", "photo"
    ADDRESSES = "addresses", "address"
    ENTITLEMENTS = "entitlements", "entitlement"
    ROLES = "roles", "role"
    X509_CERTIFICATES = "x509Certificates", "X.509 certificate"


class UserValue(models.Model):
    """One element of a multi-valued User attribute: an email, a phone number, a role...

    Child rows rather than JSONB: most of these attributes compare
    case-insensitively (caseExact=false), which JSONB containment (@>) cannot do,
    while a row per value lets `emails[type eq "work"].value eq "x"` become an
    EXISTS over the (kind, LOWER(value)) index on PostgreSQL and SQLite alike,
    and lets the database itself keep one primary per attribute.
    """

    Kind = UserValueKind

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="values")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    # The client's order, so a value list reads back as it was written.
    position = models.PositiveSmallIntegerField(default=0)
    value = models.TextField(blank=True, default="")
    display = models.CharField(max_length=255, blank=True, default="")
    type = models.CharField(max_length=64, blank=True, default="")
    primary = models.BooleanField(default=False)
    # addresses only: formatted, streetAddress, locality, region, postalCode, country.
    address = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = "multi-valued attribute value"
        ordering = ["kind", "position"]
        constraints = [
            models.UniqueConstraint(fields=["user", "kind", "position"], name="directory_uservalue_position"),
            # RFC 7643 §2.4: primary=true appears at most once per attribute.
            models.UniqueConstraint(
                fields=["user", "kind"], condition=Q(primary=True), name="directory_uservalue_one_primary"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=UserValueKind.values), name="directory_uservalue_kind_valid"
            ),
        ]
        indexes = [
            # Filters such as emails.value eq "x" (caseExact=false). Certificates
            # are left out: their base64 values can exceed a btree entry.
            models.Index(
                F("kind"),
                Lower("value"),
                name="directory_uservalue_value_ci",
                condition=~Q(kind="x509Certificates"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.value or self.address.get('formatted', '')}"


class Group(models.Model):
    """A security group or a Microsoft 365-style group (Entra's groupTypes ["Unified"])."""

    class Kind(models.TextChoices):
        SECURITY = "security", "security group"
        UNIFIED = "unified", "Microsoft 365 group"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    display_name = models.CharField("displayName", max_length=255)
    external_id = models.CharField("externalId", max_length=255, blank=True, default="")
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SECURITY)
    # Nullable: a SCIM client may leave these unassigned (RFC 7644 §3.5.2.2 remove).
    security_enabled = models.BooleanField("securityEnabled", null=True, blank=True, default=True)
    mail_enabled = models.BooleanField("mailEnabled", null=True, blank=True, default=False)
    mail_nickname = models.CharField("mailNickname", max_length=64, blank=True, default="")
    extensions = models.JSONField(default=dict, blank=True)

    created = models.DateTimeField(default=now, editable=False)
    last_modified = models.DateTimeField("lastModified", default=now, editable=False)
    # Incremented by every write, membership changes included.
    version = models.PositiveBigIntegerField(default=1, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                Lower("display_name"),
                name="directory_group_displayname_ci_unique",
                violation_error_message="A group with this displayName already exists (ignoring case).",
            ),
            models.CheckConstraint(
                condition=~Q(display_name=""), name="directory_group_displayname_not_empty"
            ),
            # A Microsoft 365 group is always mail-enabled, as in Entra.
            models.CheckConstraint(
                condition=~Q(kind="unified") | Q(mail_enabled=True),
                name="directory_group_unified_mail_enabled",
            ),
        ]
        indexes = [
            models.Index(fields=["external_id"], name="directory_group_external_id"),
            models.Index(fields=["last_modified"], name="directory_group_last_modified"),
            models.Index(fields=["created", "id"], name="directory_group_created_id"),
        ]

    def __str__(self) -> str:
        return self.display_name


class Membership(models.Model):
    """A direct member of a group: a user, or another group (nesting).

    Exactly one of member_user and member_group is set. The two unique
    constraints lead with `group` (a group's members); the foreign-key indexes on
    the member columns answer "which groups is this user/group in".
    """

    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="memberships", db_index=False)
    member_user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.CASCADE, related_name="memberships"
    )
    member_group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.CASCADE, related_name="parent_memberships"
    )
    created = models.DateTimeField(default=now, editable=False)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(member_user__isnull=False) & Q(member_group__isnull=True))
                | (Q(member_user__isnull=True) & Q(member_group__isnull=False)),
                name="directory_membership_one_member",
            ),
            models.CheckConstraint(
                condition=~Q(member_group=F("group")), name="directory_membership_not_self"
            ),
            models.UniqueConstraint(fields=["group", "member_user"], name="directory_membership_user_unique"),
            models.UniqueConstraint(
                fields=["group", "member_group"], name="directory_membership_group_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.member_user or self.member_group} in {self.group}"

    @property
    def member(self) -> User | Group | None:
        return self.member_user or self.member_group


class ChangeEvent(models.Model):
    """The outbox: one row per change, written in the same transaction as the change.

    Provisioning reads unprocessed rows, pushes the object's current state
    downstream and sets `processed`; nothing else in the system reacts to writes.
    """

    class ObjectType(models.TextChoices):
        USER = "user"
        GROUP = "group"

    class Kind(models.TextChoices):
        CREATED = "created"
        UPDATED = "updated"
        ACTIVATED = "activated"
        DEACTIVATED = "deactivated"
        DELETED = "deleted"
        MEMBER_ADDED = "member_added"
        MEMBER_REMOVED = "member_removed"

    id = models.BigAutoField(primary_key=True)
    object_type = models.CharField(max_length=16, choices=ObjectType.choices)
    object_id = models.UUIDField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The object's version after the change.
    version = models.PositiveBigIntegerField()
    # For member_added / member_removed: which member.
    member_type = models.CharField(max_length=16, choices=ObjectType.choices, blank=True, default="")
    member_id = models.UUIDField(null=True, blank=True)
    created = models.DateTimeField(default=now)
    processed = models.DateTimeField(null=True, blank=True)
    # The request (X-Request-ID) that made the change, "" for none; provisioning copies it onto the
    # delivery and its log rows. db_default: statements that insert events themselves may leave it out.
    request_id = models.CharField(
        max_length=REQUEST_ID_MAX_LENGTH, blank=True, default=current_request_id, db_default=""
    )

    class Meta:
        ordering = ["id"]
        indexes = [
            # The outbox relay claims `processed IS NULL ORDER BY id`; the partial
            # index stays as small as the backlog, however long the history.
            models.Index(
                fields=["id"], name="directory_event_unprocessed", condition=Q(processed__isnull=True)
            ),
            models.Index(fields=["object_type", "object_id"], name="directory_event_object"),
            # purge_processed_change_events deletes by age.
            models.Index(fields=["processed"], name="directory_event_processed"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.object_type} {self.object_id} {self.kind}"


class AuditEntry(models.Model):
    """Who changed what, when: one row per write, with changed fields old → new (secrets redacted)."""

    class ActorType(models.TextChoices):
        OPERATOR = "operator"
        SCIM_CLIENT = "scim_client", "SCIM client"
        SYSTEM = "system"

    class ObjectType(models.TextChoices):
        USER = "user"
        GROUP = "group"
        SCHEMA = "schema", "extension schema"
        # Operator actions outside the directory's own objects (directory.services.operator_event_record):
        # sign-ins, and admin writes to other apps' models, named by their model name.
        OPERATOR = "operator", "operator sign-in"
        TARGET = "target", "provisioning target"
        SCIM_CLIENT = "scimclient", "SCIM client"
        INBOUND_SOURCE = "inboundsource", "inbound source"

    id = models.BigAutoField(primary_key=True)
    created = models.DateTimeField(default=now)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True, default="")
    actor_name = models.CharField(max_length=255, blank=True, default="")
    action = models.CharField(max_length=32)
    object_type = models.CharField(max_length=32, choices=ObjectType.choices)
    # Users, groups and schemas; objects keyed otherwise (a target's number, a username) use object_key.
    object_id = models.UUIDField(null=True, blank=True)
    # db_default too: directory.extensions inserts audit rows with SQL that names its columns.
    object_key = models.CharField(max_length=64, blank=True, default="", db_default="")
    object_repr = models.CharField(max_length=255, blank=True, default="")
    # {"field": [old, new]} for updates; {"members_added": [...]} for memberships.
    changes = models.JSONField(default=dict, blank=True)
    # The request (X-Request-ID) that made the change, "" for none (see ChangeEvent.request_id).
    request_id = models.CharField(
        max_length=REQUEST_ID_MAX_LENGTH, blank=True, default=current_request_id, db_default=""
    )

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["object_type", "object_id", "-created"], name="directory_audit_object"),
            models.Index(fields=["-created"], name="directory_audit_created"),
            models.Index(fields=["actor_type", "actor_id"], name="directory_audit_actor"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_name or self.actor_type} {self.action} {self.object_type} {self.object_repr}"

    def changed_fields(self) -> list[str]:
        return sorted(self.changes) if isinstance(self.changes, dict) else []


# --- operator-defined extension schemas -------------------------------------------------

# RFC 8141's shape (urn:<NID>:<NSS>), without characters that would need quoting in a
# JSON path or a SQL identifier; `__` is Django's lookup separator and a trailing ':'
# would make `<urn>:<attribute>` paths ambiguous, so both are refused separately.
EXTENSION_URN_PATTERN = r"^urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:[A-Za-z0-9()+,.:=@;$!*'%/?#_-]+$"
# The schemas this server defines itself, and the SCIM protocol's own namespaces.
RESERVED_URN_PATTERN = (
    r"^urn:ietf:params:scim:(api:|schemas:core:|schemas:extension:enterprise:2\.0:user(:|$)"
    r"|schemas:extension:microsoft:entra:2\.0:(user|group)(:|$))"
)
# RFC 7643 §2.1 ATTRNAME; `__` is refused as in URNs.
ATTRIBUTE_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"


class ExtensionResourceType(models.TextChoices):
    USER = "user", "User"
    GROUP = "group", "Group"


class ExtensionSchema(models.Model):
    """An extension schema an operator defined, for users or for groups.

    Its attributes' values live in the resource's `extensions` JSON under the
    schema's URN. The SCIM API serves it in /Schemas and /ResourceTypes and
    validates, filters and sorts on it; directory.extensions caches the
    definitions. `urn` and `resource_type` never change after creation (stored
    values are keyed by them).
    """

    ResourceType = ExtensionResourceType

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    urn = models.CharField("URN", max_length=255)
    name = models.CharField(max_length=64)
    description = models.TextField(blank=True, default="")
    resource_type = models.CharField(max_length=8, choices=ExtensionResourceType.choices)
    # RFC 7643 §6 schemaExtensions.required: every resource of the type must carry it.
    required = models.BooleanField(
        default=False,
        help_text="Every user or group created or replaced over SCIM must carry this extension.",
    )
    created = models.DateTimeField(default=now, editable=False)
    last_modified = models.DateTimeField(default=now, editable=False)

    class Meta:
        verbose_name = "extension schema"
        ordering = ["resource_type", "urn"]
        constraints = [
            # Schema URIs compare case-insensitively (RFC 7643 §2.1 attribute names, URN NIDs).
            models.UniqueConstraint(
                Lower("urn"),
                name="directory_extschema_urn_ci_unique",
                violation_error_message="An extension schema with this URN already exists (ignoring case).",
            ),
            models.CheckConstraint(
                condition=Q(urn__regex=EXTENSION_URN_PATTERN)
                & ~Q(urn__contains="__")
                & ~Q(urn__endswith=":"),
                name="directory_extschema_urn_format",
                violation_error_message="The URN must look like urn:<namespace>:<name>, e.g. "
                "urn:example:hr:1.0:User (no spaces, no '__', no trailing ':').",
            ),
            models.CheckConstraint(
                condition=~Q(urn__iregex=RESERVED_URN_PATTERN),
                name="directory_extschema_urn_not_reserved",
                violation_error_message="This URN belongs to a schema the server defines itself.",
            ),
            models.CheckConstraint(
                condition=Q(resource_type__in=ExtensionResourceType.values),
                name="directory_extschema_resource_type_valid",
            ),
            models.CheckConstraint(condition=~Q(name=""), name="directory_extschema_name_not_empty"),
        ]

    def __str__(self) -> str:
        return self.urn


class ExtensionAttribute(models.Model):
    """One attribute of an ExtensionSchema, with its RFC 7643 §7 characteristics.

    `name`, `type` and `multi_valued` never change after creation: they decide
    how stored values read. Single-valued attributes get an expression index on
    their value (unique when uniqueness is server or global), named after the
    row's id; directory.extensions creates and drops it.
    """

    class Type(models.TextChoices):
        STRING = "string"
        BOOLEAN = "boolean"
        INTEGER = "integer"
        DECIMAL = "decimal"
        DATE_TIME = "dateTime", "dateTime"
        REFERENCE = "reference"

    class Mutability(models.TextChoices):
        READ_WRITE = "readWrite", "readWrite"
        READ_ONLY = "readOnly", "readOnly (set by operators only)"
        IMMUTABLE = "immutable", "immutable"
        WRITE_ONLY = "writeOnly", "writeOnly"

    class Returned(models.TextChoices):
        DEFAULT = "default"
        ALWAYS = "always"
        REQUEST = "request"
        NEVER = "never"

    class Uniqueness(models.TextChoices):
        NONE = "none"
        SERVER = "server"
        GLOBAL = "global"

    id = models.BigAutoField(primary_key=True)
    schema = models.ForeignKey(ExtensionSchema, on_delete=models.CASCADE, related_name="attributes")
    name = models.CharField(max_length=64)
    description = models.TextField(blank=True, default="")
    type = models.CharField(max_length=16, choices=Type.choices, default=Type.STRING)
    multi_valued = models.BooleanField("multiValued", default=False)
    required = models.BooleanField(default=False)
    mutability = models.CharField(max_length=16, choices=Mutability.choices, default=Mutability.READ_WRITE)
    returned = models.CharField(max_length=16, choices=Returned.choices, default=Returned.DEFAULT)
    uniqueness = models.CharField(max_length=16, choices=Uniqueness.choices, default=Uniqueness.NONE)
    case_exact = models.BooleanField("caseExact", default=False)
    canonical_values = models.JSONField("canonicalValues", default=list, blank=True)
    # The order attributes are listed in /Schemas.
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        verbose_name = "extension attribute"
        ordering = ["schema", "position", "id"]
        constraints = [
            # RFC 7643 §2.1: attribute names are case-insensitive.
            models.UniqueConstraint(
                F("schema"),
                Lower("name"),
                name="directory_extattr_name_ci_unique",
                violation_error_message="This schema already has an attribute of this name (ignoring case).",
            ),
            models.CheckConstraint(
                condition=Q(name__regex=ATTRIBUTE_NAME_PATTERN) & ~Q(name__contains="__"),
                name="directory_extattr_name_format",
                violation_error_message="An attribute name starts with a letter and has only letters, "
                "digits, '-' and '_' (no '__'), at most 64 characters.",
            ),
            models.CheckConstraint(
                condition=Q(type__in=["string", "boolean", "integer", "decimal", "dateTime", "reference"]),
                name="directory_extattr_type_valid",
            ),
            models.CheckConstraint(
                condition=Q(mutability__in=["readWrite", "readOnly", "immutable", "writeOnly"]),
                name="directory_extattr_mutability_valid",
            ),
            models.CheckConstraint(
                condition=Q(returned__in=["default", "always", "request", "never"]),
                name="directory_extattr_returned_valid",
            ),
            models.CheckConstraint(
                condition=Q(uniqueness__in=["none", "server", "global"]),
                name="directory_extattr_uniqueness_valid",
            ),
            # RFC 7643 §7: a writeOnly value is never returned.
            models.CheckConstraint(
                condition=~Q(mutability="writeOnly") | Q(returned="never"),
                name="directory_extattr_writeonly_never_returned",
                violation_error_message="A writeOnly attribute must have returned = never.",
            ),
            # A unique index holds one value per row; a list has several.
            models.CheckConstraint(
                condition=Q(multi_valued=False) | Q(uniqueness="none"),
                name="directory_extattr_unique_single_valued",
                violation_error_message="Only single-valued attributes can be unique.",
            ),
            models.CheckConstraint(
                condition=Q(canonical_values=[]) | Q(type__in=["string", "reference"]),
                name="directory_extattr_canonical_strings",
                violation_error_message="Only string and reference attributes take canonical values.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.schema.urn}:{self.name}" if self.schema_id else self.name


class ExtensionDataExport(models.Model):
    """The values an extension schema (or some of its attributes) held when an operator removed it.

    Written in the same transaction that strips the values from users and
    groups, so nothing is lost without a copy; downloadable from the admin as
    JSON. `data` is {"schema": <definition>, "users": {id: values},
    "groups": {id: values}}.
    """

    id = models.BigAutoField(primary_key=True)
    created = models.DateTimeField(default=now, editable=False)
    actor_name = models.CharField(max_length=255, blank=True, default="")
    urn = models.CharField("URN", max_length=255)
    # Empty when the whole schema was removed; else the attributes removed.
    attributes = models.JSONField(default=list, blank=True)
    user_count = models.PositiveIntegerField(default=0)
    group_count = models.PositiveIntegerField(default=0)
    data = models.JSONField(default=dict)

    class Meta:
        verbose_name = "extension data export"
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        what = f"{self.urn} ({', '.join(self.attributes)})" if self.attributes else self.urn
        return f"{what} removed {self.created:%Y-%m-%d %H:%M}"
