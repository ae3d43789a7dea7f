"""A whole directory as SCIM JSON, one resource per line: `export_directory` and `import_directory`.

The file (JSON Lines, UTF-8) starts with a header line, then the extension
schema definitions, the users and the groups, each line one SCIM resource
exactly as GET /Schemas, /Users and /Groups would serve it (relative `$ref`s),
with what a GET never shows in an extension of this format's own:

- users: `urn:identity-directory:export:1.0:User` `{"passwordHash": ...}`, and
  every extension value, writeOnly and `returned: never` ones included;
- groups: `members` lists the direct members only (users and nested groups);
- schemas: `urn:identity-directory:export:1.0:Schema` `{"resourceType", "required"}`.

Both directions hold one page (or one group's member list) in memory at a
time; the import also keeps the set of ids it has seen, to report references
that point nowhere. An import runs in one transaction: all or nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from directory import selectors, services, transfer
from directory.actors import Actor
from directory.exceptions import DirectoryError, InvalidValue
from directory.models import ExtensionSchema, Group, Membership, User
from scim_api import mapping
from scim_api.exceptions import ScimError

FORMAT_VERSION = 1
HEADER_SCHEMA = "urn:identity-directory:export:1.0:Header"
USER_EXPORT = "urn:identity-directory:export:1.0:User"
SCHEMA_EXPORT = "urn:identity-directory:export:1.0:Schema"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"

# SCIM attribute characteristic ⇄ ExtensionAttribute field.
_ATTRIBUTE_KEYS = {
    "name": "name",
    "type": "type",
    "multiValued": "multi_valued",
    "description": "description",
    "required": "required",
    "mutability": "mutability",
    "returned": "returned",
    "uniqueness": "uniqueness",
    "caseExact": "case_exact",
    "canonicalValues": "canonical_values",
}


class ImportRefused(Exception):
    """The file cannot be imported as it is (or not into this directory); nothing was written."""


# --- export -------------------------------------------------------------------------------------


def _pages(queryset: Any, page_size: int) -> Iterator[list[Any]]:
    """Keyset pages on (created, id), the order an index on both columns serves."""
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        page = queryset.order_by("created", "id")
        if after is not None:
            # (created, id) > after, spelled so that PostgreSQL starts the index scan at `after`
            # (the bare OR made every page scan from the first row: 10 minutes for 100k users).
            page = page.filter(Q(created__gte=after[0]) & (Q(created__gt=after[0]) | Q(id__gt=after[1])))
        rows = list(page[:page_size])
        if not rows:
            return
        yield rows
        after = (rows[-1].created, rows[-1].pk)


def _schema_record(schema: ExtensionSchema) -> dict[str, Any]:
    return {
        "schemas": [SCHEMA_SCHEMA, SCHEMA_EXPORT],
        "id": schema.urn,
        "name": schema.name,
        "description": schema.description,
        "attributes": [
            {key: getattr(attribute, column) for key, column in _ATTRIBUTE_KEYS.items()}
            for attribute in schema.attributes.all()
        ],
        SCHEMA_EXPORT: {
            "resourceType": ExtensionSchema.ResourceType(schema.resource_type).label,
            "required": schema.required,
        },
        "meta": {"resourceType": "Schema"},
    }


def _user_record(user: User) -> dict[str, Any]:
    record = mapping.user_to_scim(
        user,
        values=selectors.user_values(user),
        base_url="",
        manager_display=getattr(user, "manager_display", None),
    )
    if user.password:
        meta = record.pop("meta")
        record["schemas"].append(USER_EXPORT)
        record[USER_EXPORT] = {"passwordHash": user.password}
        record["meta"] = meta
    return record


def _group_records(groups: list[Group]) -> Iterator[dict[str, Any]]:
    members: dict[uuid.UUID, list[tuple[str, str]]] = {group.pk: [] for group in groups}
    rows = Membership.objects.filter(group_id__in=list(members)).values_list(
        "group_id", "member_user_id", "member_group_id"
    )
    for group_id, user_id, group_member_id in rows.iterator(chunk_size=5000):
        if user_id is not None:
            members[group_id].append(("User", str(user_id)))
        else:
            members[group_id].append(("Group", str(group_member_id)))
    for group in groups:
        record = mapping.group_to_scim(group, base_url="")
        meta = record.pop("meta")
        # Sorted, so that two exports of the same directory are the same file.
        record["members"] = [{"value": value, "type": kind} for kind, value in sorted(members[group.pk])]
        record["meta"] = meta
        yield record


def export_records(*, page_size: int = 1000) -> Iterator[dict[str, Any]]:
    """The header, then every schema, user and group, as the lines of an export file."""
    yield {
        "schemas": [HEADER_SCHEMA],
        "format": FORMAT_VERSION,
        "exported": timezone.now().isoformat().replace("+00:00", "Z"),
        "counts": {
            "schemas": ExtensionSchema.objects.count(),
            "users": User.objects.count(),
            "groups": Group.objects.count(),
        },
    }
    for schema in ExtensionSchema.objects.order_by("resource_type", "urn").prefetch_related("attributes"):
        yield _schema_record(schema)
    for users in _pages(selectors.user_list(), page_size):
        for user in users:
            yield _user_record(user)
    for groups in _pages(Group.objects.all(), page_size):
        yield from _group_records(groups)


def export_directory(out: TextIO | Any, *, page_size: int = 1000) -> dict[str, int]:
    """Write the export to `out`; return how many resources of each type were written."""
    written = {"Schema": 0, "User": 0, "Group": 0}
    # One snapshot for the whole export, so that a member or manager written meanwhile cannot
    # name an object the file lacks: REPEATABLE READ on PostgreSQL (readers block nobody); on
    # SQLite the transaction holds the write lock (transaction_mode IMMEDIATE) until the end.
    outermost = not connection.in_atomic_block  # inside a caller's transaction, its snapshot rules
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for record in export_records(page_size=page_size):
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            kind = record.get("meta", {}).get("resourceType")
            if kind in written:
                written[kind] += 1
    return written


# --- import -------------------------------------------------------------------------------------


def _timestamp(value: Any, label: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidValue(f"{label} is not a timestamp: {value!r}", field=label) from None
    return parsed if parsed.tzinfo else timezone.make_aware(parsed, timezone.utc)


def _meta(record: dict[str, Any], what: str) -> tuple[uuid.UUID, datetime, datetime, int]:
    meta = record.get("meta") or {}
    try:
        resource_id = uuid.UUID(str(record.get("id")))
    except ValueError:
        raise InvalidValue(f"{what} has no valid id: {record.get('id')!r}", field="id") from None
    version = str(meta.get("version") or 'W/"1"').removeprefix("W/").strip('"')
    if not version.isdigit() or int(version) < 1:
        raise InvalidValue(f"{what} {resource_id}: meta.version {meta.get('version')!r}", field="meta")
    return (
        resource_id,
        _timestamp(meta.get("created"), f"{what} {resource_id} meta.created"),
        _timestamp(meta.get("lastModified"), f"{what} {resource_id} meta.lastModified"),
        int(version),
    )


def _parse_user(record: dict[str, Any]) -> transfer.ImportedUser:
    resource_id, created, last_modified, version = _meta(record, "User")
    exported = record.pop(USER_EXPORT, None) or {}
    # PATCH mode takes the representation whole and as it is: extension values the
    # SCIM API would refuse from a client (readOnly ones) are the directory's own here.
    data = mapping.user_from_scim(record, mode="patch")
    fields = dict(data.fields)
    return transfer.ImportedUser(
        id=resource_id,
        user_name=fields.pop("user_name", ""),
        created=created,
        last_modified=last_modified,
        version=version,
        password_hash=str(exported.get("passwordHash") or ""),
        values=data.values,
        attributes=fields,
    )


def _parse_group(record: dict[str, Any]) -> transfer.ImportedGroup:
    resource_id, created, last_modified, version = _meta(record, "Group")
    data = mapping.group_from_scim(record, mode="patch")
    fields = dict(data.fields)
    user_ids, group_ids = [], []
    for member_id, kind in mapping.member_ids(data.members or []):
        if (kind or "").lower() == "group":
            group_ids.append(member_id)
        elif (kind or "").lower() == "user":
            user_ids.append(member_id)
        else:
            raise InvalidValue(f"Group {resource_id}: member {member_id} needs a type (User or Group)")
    return transfer.ImportedGroup(
        id=resource_id,
        display_name=fields.pop("display_name", ""),
        created=created,
        last_modified=last_modified,
        version=version,
        attributes=fields,
        member_user_ids=user_ids,
        member_group_ids=group_ids,
    )


def _schema_spec(record: dict[str, Any]) -> dict[str, Any]:
    extra = record.get(SCHEMA_EXPORT) or {}
    resource_type = str(extra.get("resourceType", "")).lower()
    if resource_type not in ExtensionSchema.ResourceType.values:
        raise InvalidValue(f"Schema {record.get('id')}: {SCHEMA_EXPORT}.resourceType must be User or Group")
    attributes = []
    for attribute in record.get("attributes") or []:
        unknown = sorted(set(attribute) - set(_ATTRIBUTE_KEYS))
        if unknown:
            raise InvalidValue(f"Schema {record.get('id')}: unknown attribute key(s) {', '.join(unknown)}")
        attributes.append({_ATTRIBUTE_KEYS[key]: value for key, value in attribute.items()})
    return {
        "urn": record.get("id", ""),
        "name": record.get("name", ""),
        "description": record.get("description", ""),
        "resource_type": resource_type,
        "required": bool(extra.get("required", False)),
        "attributes": attributes,
    }


@dataclass
class ImportReport:
    """What an import did (or, in a dry run, would have done)."""

    created: dict[str, int] = field(default_factory=lambda: {"Schema": 0, "User": 0, "Group": 0})
    updated: dict[str, int] = field(default_factory=lambda: {"Schema": 0, "User": 0, "Group": 0})
    unchanged: dict[str, int] = field(default_factory=lambda: {"Schema": 0, "User": 0, "Group": 0})
    warnings: list[str] = field(default_factory=list)


class _DryRun(Exception):
    """Raised at the end of a dry run to roll its transaction back."""


class _Importer:
    """Reads records in file order, buffering new users and groups into chunks for the bulk path."""

    def __init__(self, *, actor: Actor, merge: bool, chunk_size: int) -> None:
        self.actor = actor
        self.merge = merge
        self.chunk_size = chunk_size
        self.report = ImportReport()
        self.new_users: list[transfer.ImportedUser] = []
        self.new_groups: list[transfer.ImportedGroup] = []
        # --merge: managers and members of objects that existed already are set once every
        # object of the file is in, since they may name objects further down the file.
        self.later_managers: dict[uuid.UUID, uuid.UUID | None] = {}
        self.later_members: dict[uuid.UUID, tuple[list[uuid.UUID], list[uuid.UUID]]] = {}
        # --merge: the version of each object the file names that existed, to tell updated from unchanged.
        self.existing: dict[tuple[str, uuid.UUID], int] = {}

    def run(self, lines: Iterable[str], progress: Callable[[ImportReport], None] | None) -> ImportReport:
        header_seen = False
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ImportRefused(f"line {number}: not JSON ({exc})") from None
            if not isinstance(record, dict):
                raise ImportRefused(f"line {number}: not a JSON object")
            if not header_seen:
                self._header(record)
                header_seen = True
                continue
            kind = (record.get("meta") or {}).get("resourceType")
            self._record(kind, record, number)
            if progress is not None and number % 10000 == 0:
                progress(self.report)
        if not header_seen:
            raise ImportRefused("the file is empty")
        try:
            self._flush_users()
            self._flush_groups()
            self._apply_later()
            # Inside the transaction, which ANALYZE counts rows of: the reference check below and
            # the foreign-key checks at COMMIT are planned with the real sizes, not an empty table.
            transfer.tables_analyze()
            transfer.check_references()
        except DirectoryError as exc:
            raise ImportRefused(str(exc)) from None
        return self.report

    def _header(self, record: dict[str, Any]) -> None:
        if HEADER_SCHEMA not in (record.get("schemas") or []):
            raise ImportRefused("line 1 is not an export header: is this a file from export_directory?")
        if record.get("format") != FORMAT_VERSION:
            raise ImportRefused(
                f"export format {record.get('format')!r}; this version reads {FORMAT_VERSION}"
            )

    def _record(self, kind: Any, record: dict[str, Any], number: int) -> None:
        try:
            if kind == "Schema":
                parsed: Any = _schema_spec(record)
            elif kind == "User":
                parsed = _parse_user(record)
            elif kind == "Group":
                parsed = _parse_group(record)
            else:
                raise InvalidValue(f"meta.resourceType {kind!r}: expected Schema, User or Group")
        except (DirectoryError, ScimError) as exc:
            raise ImportRefused(f"line {number}: {exc}") from None
        # Writes report the object they are about (a chunk's error is not about this line).
        try:
            if kind == "Schema":
                self._flush_users()
                self._flush_groups()
                self._schema(parsed)
            elif kind == "User":
                self._flush_groups()
                self._user(parsed)
            else:
                self._flush_users()
                self._group(parsed)
        except DirectoryError as exc:
            raise ImportRefused(str(exc)) from None

    def _schema(self, spec: dict[str, Any]) -> None:
        existing = ExtensionSchema.objects.filter(urn__iexact=spec["urn"]).first()
        if existing is None:
            services.extension_schema_create(actor=self.actor, **spec)
            self.report.created["Schema"] += 1
            return
        # A schema of the same URN is left as it is: changing a definition can strip values
        # from every holder, which is the admin's decision, not an import's.
        self.report.unchanged["Schema"] += 1
        if _schema_spec(_schema_record(existing)) != spec:
            self.report.warnings.append(f"schema {spec['urn']} differs from the file's; kept as it is here")

    def _user(self, user: transfer.ImportedUser) -> None:
        before = (
            User.objects.filter(pk=user.id).values_list("version", flat=True).first() if self.merge else None
        )
        if before is None:
            self.new_users.append(user)
            if len(self.new_users) >= self.chunk_size:
                self._flush_users()
            return
        self.existing[("User", user.id)] = before
        attributes = dict(user.attributes)
        self.later_managers[user.id] = attributes.pop("manager_id", None)
        services.user_update(
            actor=self.actor, user_id=user.id, user_name=user.user_name, values=user.values, **attributes
        )

    def _group(self, group: transfer.ImportedGroup) -> None:
        before = (
            Group.objects.filter(pk=group.id).values_list("version", flat=True).first()
            if self.merge
            else None
        )
        if before is None:
            self.new_groups.append(group)
            # Groups carry their member lists: smaller chunks keep memory bounded.
            if len(self.new_groups) >= max(1, self.chunk_size // 10):
                self._flush_groups()
            return
        self.existing[("Group", group.id)] = before
        services.group_update(
            actor=self.actor, group_id=group.id, display_name=group.display_name, **group.attributes
        )
        self.later_members[group.id] = (list(group.member_user_ids), list(group.member_group_ids))

    def _flush_users(self) -> None:
        if self.new_users:
            transfer.users_import_many(actor=self.actor, users=self.new_users)
            self.report.created["User"] += len(self.new_users)
            self.new_users = []

    def _flush_groups(self) -> None:
        if self.new_groups:
            transfer.groups_import_many(actor=self.actor, groups=self.new_groups)
            self.report.created["Group"] += len(self.new_groups)
            self.new_groups = []

    def _apply_later(self) -> None:
        for user_id, manager_id in self.later_managers.items():
            services.user_update(actor=self.actor, user_id=user_id, manager_id=manager_id)
        for group_id, (user_ids, group_ids) in self.later_members.items():
            # Members already there are skipped by membership_add itself; none are removed.
            services.membership_add(
                actor=self.actor, group_id=group_id, user_ids=user_ids, group_ids=group_ids
            )
        for (kind, resource_id), before in self.existing.items():
            model = User if kind == "User" else Group
            after = _version(model, resource_id)
            bucket = self.report.updated if after != before else self.report.unchanged
            bucket[kind] += 1


def _version(model: type[User] | type[Group], resource_id: uuid.UUID) -> int | None:
    return model.objects.filter(pk=resource_id).values_list("version", flat=True).first()


def import_directory(
    lines: Iterable[str],
    *,
    actor: Actor,
    merge: bool = False,
    dry_run: bool = False,
    chunk_size: int = 1000,
    progress: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Import an export file's lines in one transaction; ImportRefused (nothing written) if it cannot.

    Without `merge` the directory must be empty. A dry run does everything, then rolls back.
    """
    importer = _Importer(actor=actor, merge=merge, chunk_size=chunk_size)
    try:
        with transaction.atomic():
            if not merge and not transfer.directory_is_empty():
                raise ImportRefused(
                    "this directory already holds users, groups or extension schemas: import into an "
                    "empty directory, or pass --merge to add and update objects by id"
                )
            report = importer.run(lines, progress)
            if dry_run:
                raise _DryRun
    except _DryRun:
        return importer.report
    return report
