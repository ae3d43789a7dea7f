"""Moving a whole directory between instances: the bulk write path of `import_directory`.

Objects keep the ids, timestamps and versions they had where they were
exported, so references (managers, members, downstream `externalId`s, ETags)
stay valid. New objects are inserted a chunk at a time with set-based
statements, each with the `created` change event and the audit entry that
user_create / group_create would write, and one `member_added` event per
membership as membership_add writes them: downstream targets see an imported
directory as they would see the same objects created one by one.

References may point forward in the file (a manager or a nested group that
comes later): the foreign keys are checked when the transaction commits
(Django declares them DEFERRABLE INITIALLY DEFERRED), and check_references()
names any that are left dangling first, so a whole import either applies or
leaves nothing behind. The caller owns that transaction.

Validation is the services' own (services._prepare_user and friends), so an
imported object is held to exactly what user_create / group_create accept.
"""

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction

from directory import bulk_sql, extensions, services
from directory.actors import Actor
from directory.exceptions import InvalidValue, MembershipCycle, UniquenessConflict
from directory.models import AuditEntry, ChangeEvent, ExtensionSchema, Group, Membership, User, UserValue


@dataclass(frozen=True)
class ImportedUser:
    """One exported user: the arguments of user_create plus what an import keeps as exported."""

    id: uuid.UUID
    user_name: str
    created: datetime
    last_modified: datetime
    version: int
    # A Django password hash, stored as it is (the password itself is never exported).
    password_hash: str = ""
    values: services.MultiValues = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportedGroup:
    """One exported group with its direct members."""

    id: uuid.UUID
    display_name: str
    created: datetime
    last_modified: datetime
    version: int
    attributes: Mapping[str, Any] = field(default_factory=dict)
    member_user_ids: Sequence[uuid.UUID] = ()
    member_group_ids: Sequence[uuid.UUID] = ()


def directory_is_empty() -> bool:
    """No user, group or extension schema: what a plain (not --merge) import requires."""
    return not (User.objects.exists() or Group.objects.exists() or ExtensionSchema.objects.exists())


def _audit_row(actor: Actor, obj: User | Group, action: str, changes: dict[str, Any]) -> dict[str, Any]:
    return {
        "actor_type": actor.type,
        "actor_id": actor.id,
        "actor_name": actor.name,
        "action": action,
        "object_type": ChangeEvent.ObjectType.USER if isinstance(obj, User) else ChangeEvent.ObjectType.GROUP,
        "object_id": obj.pk,
        "object_repr": str(obj)[:255],
        "changes": services._redact_extensions("user" if isinstance(obj, User) else "group", changes),
    }


def _insert(model: type[User] | type[Group], objs: list[Any], label: str) -> None:
    # A taken id, name or unique extension value is the unique indexes' call, as in
    # services._save_unique: no query per object looks first.
    try:
        with transaction.atomic():
            bulk_sql.insert_many(model, objs)
    except IntegrityError as exc:
        conflict = extensions.conflict_from(exc)
        if conflict is not None:
            raise conflict from None
        # The database's own message names the index and, on PostgreSQL, the value.
        unique_field = "user_name" if model is User else "display_name"
        raise UniquenessConflict(f"{label}: {' '.join(str(exc).split())[:300]}", field=unique_field) from None


def users_import_many(*, actor: Actor, users: Sequence[ImportedUser]) -> None:
    """Insert new users as exported (ids, timestamps, versions, password hashes, managers).

    Raises InvalidValue naming the first invalid user, UniquenessConflict when an
    id or userName is taken; managers are checked by check_references().
    """
    accepted = []
    for item in users:
        attributes = dict(item.attributes)
        try:
            user, values, changes = services._prepare_user(item.user_name, None, item.values, attributes)
        except InvalidValue as exc:
            raise InvalidValue(f"User {item.id} ({item.user_name!r}): {exc}", field=exc.field) from None
        user.id = item.id
        user.created, user.last_modified, user.version = item.created, item.last_modified, item.version
        if item.password_hash:
            user.password = item.password_hash
            changes["password"] = [None, services.REDACTED]
        accepted.append((user, values, changes))
    _insert(User, [user for user, _, _ in accepted], "Users")
    services._insert_new_user_rows(actor, accepted, action="import")


def groups_import_many(*, actor: Actor, groups: Sequence[ImportedGroup]) -> None:
    """Insert new groups as exported, with their direct members (users and nested groups)."""
    accepted = []
    blank = Group()
    for item in groups:
        attributes = services._check_types(
            Group, {"display_name": item.display_name, **_checked(item.attributes, item)}
        )
        if not str(attributes["display_name"]).strip():
            raise InvalidValue(f"Group {item.id}: displayName is required", field="display_name")
        if "extensions" in attributes:
            attributes["extensions"] = extensions.clean("group", attributes["extensions"], current={})
        group = Group(
            id=item.id,
            created=item.created,
            last_modified=item.last_modified,
            version=item.version,
            **attributes,
        )
        try:
            services._check_group_kind(group, attributes)
        except InvalidValue as exc:
            raise InvalidValue(f"Group {item.id} ({item.display_name!r}): {exc}", field=exc.field) from None
        changes = {
            name: [None, getattr(group, name)]
            for name in sorted(services.GROUP_FIELDS)
            if getattr(group, name) != getattr(blank, name)
        }
        accepted.append((group, item, changes))
    _insert(Group, [group for group, _, _ in accepted], "Groups")
    bulk_sql.insert_values(
        ChangeEvent, [services._event_fields(group, ChangeEvent.Kind.CREATED) for group, _, _ in accepted]
    )
    bulk_sql.insert_values(
        AuditEntry, [_audit_row(actor, group, "import", changes) for group, _, changes in accepted]
    )
    for group, item, _ in accepted:
        memberships_import(
            actor=actor, group=group, user_ids=item.member_user_ids, group_ids=item.member_group_ids
        )


def _checked(attributes: Mapping[str, Any], item: ImportedGroup) -> Mapping[str, Any]:
    unknown = sorted(set(attributes) - (services.GROUP_FIELDS - {"display_name"}))
    if unknown:
        raise InvalidValue(f"Group {item.id}: unknown attribute(s) {', '.join(unknown)}", field=unknown[0])
    return attributes


def memberships_import(
    *, actor: Actor, group: Group, user_ids: Sequence[uuid.UUID], group_ids: Sequence[uuid.UUID]
) -> None:
    """Insert a new group's direct members, with the member_added events and audit entry of membership_add.

    The members need not exist yet (the foreign keys are checked at commit, and
    check_references() first); cycles are checked by check_references() too.
    """
    users, groups = services._unique(user_ids), services._unique(group_ids)
    if not users and not groups:
        return
    bulk_sql.insert_values(
        Membership,
        [{"group_id": group.pk, "member_user_id": member, "member_group_id": None} for member in users]
        + [{"group_id": group.pk, "member_user_id": None, "member_group_id": member} for member in groups],
    )
    common = {
        "object_type": ChangeEvent.ObjectType.GROUP,
        "object_id": group.pk,
        "kind": ChangeEvent.Kind.MEMBER_ADDED,
        "version": group.version,
    }
    bulk_sql.insert_values(
        ChangeEvent,
        [{**common, "member_type": ChangeEvent.ObjectType.USER, "member_id": m} for m in users]
        + [{**common, "member_type": ChangeEvent.ObjectType.GROUP, "member_id": m} for m in groups],
    )
    changes: dict[str, Any] = {}
    if users:
        changes["users_added"] = [str(member) for member in users]
    if groups:
        changes["groups_added"] = [str(member) for member in groups]
    bulk_sql.insert_values(AuditEntry, [_audit_row(actor, group, "member_add", changes)])


def check_references() -> None:
    """Raise InvalidValue if a manager or member names no object, MembershipCycle if groups nest in a loop.

    Run before the import's transaction commits: a dangling reference would
    otherwise surface as a foreign-key violation at COMMIT, without the ids.
    """
    missing_managers = list(
        User.objects.filter(manager_id__isnull=False)
        .exclude(manager_id__in=User.objects.values("id"))
        .values_list("id", "manager_id")[:5]
    )
    if missing_managers:
        listed = ", ".join(f"{user} → {manager}" for user, manager in missing_managers)
        raise InvalidValue(f"Managers that are no user (user → manager): {listed}", field="manager_id")
    missing_users = list(
        Membership.objects.filter(member_user_id__isnull=False)
        .exclude(member_user_id__in=User.objects.values("id"))
        .values_list("group_id", "member_user_id")[:5]
    )
    missing_groups = list(
        Membership.objects.filter(member_group_id__isnull=False)
        .exclude(member_group_id__in=Group.objects.values("id"))
        .values_list("group_id", "member_group_id")[:5]
    )
    if missing_users or missing_groups:
        listed = ", ".join(f"{group} → {member}" for group, member in missing_users + missing_groups)
        raise InvalidValue(f"Members that exist nowhere (group → member): {listed}", field="members")
    _check_no_cycle()


def _check_no_cycle() -> None:
    # Nested groups are few next to users: their edges fit in memory whatever the directory's size.
    edges: dict[uuid.UUID, list[uuid.UUID]] = {}
    for parent, child in Membership.objects.filter(member_group_id__isnull=False).values_list(
        "group_id", "member_group_id"
    ):
        edges.setdefault(parent, []).append(child)
    done: set[uuid.UUID] = set()
    for root in edges:
        if root in done:
            continue
        # Iterative depth-first walk; `path` holds the groups on the current branch.
        path: set[uuid.UUID] = {root}
        stack: list[tuple[uuid.UUID, int]] = [(root, 0)]
        while stack:
            node, index = stack[-1]
            children = edges.get(node, [])
            if index < len(children):
                stack[-1] = (node, index + 1)
                child = children[index]
                if child in path:
                    raise MembershipCycle(
                        f"Group {child} would end up inside itself (nested groups form a loop)"
                    )
                if child not in done:
                    path.add(child)
                    stack.append((child, 0))
            else:
                stack.pop()
                path.discard(node)
                done.add(node)


def tables_analyze() -> None:
    """Refresh PostgreSQL's statistics of the directory's tables after a bulk insert.

    Autovacuum gets there eventually; until it does, the planner takes a freshly
    filled table for an empty one: a page of 1,000 users read a whole index per
    row (2.2 s instead of milliseconds), and the foreign-key checks deferred to
    an import's COMMIT ran for many minutes. Run inside the importing
    transaction, ANALYZE counts the rows it inserted.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for model in (User, UserValue, Group, Membership):
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
