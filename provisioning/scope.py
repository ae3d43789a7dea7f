"""Which users and groups a target provisions: its scope, stored as rows so every change to it is an event.

A target of scope "all" provisions every user and group; nothing is stored.
A target of scope "assigned" provisions its assigned users, its assigned
groups, every group nested in those at any depth, and every user member of
any of them. That set lives in TargetScope; `scope_refresh` recomputes it with
one recursive query and applies the difference with two set-based
statements, returning what entered and what left, so the relay can queue an
enter or leave delivery for each at once (a user removed from an assigned
group is disabled downstream within seconds, not at the next full sync).
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connection
from django.utils import timezone

from directory.models import Group, Membership, User
from provisioning.models import ObjectType, Target, TargetAssignment, TargetScope

ObjectKey = tuple[str, uuid.UUID]


@dataclass
class ScopeChange:
    entered: set[ObjectKey] = field(default_factory=set)
    left: set[ObjectKey] = field(default_factory=set)


def _desired_cte() -> str:
    membership = Membership._meta.db_table
    assignment = TargetAssignment._meta.db_table
    # UNION (not UNION ALL) stops the recursion even if a cycle ever slipped into the data.
    return (
        f"WITH RECURSIVE reach(id) AS ("
        f"  SELECT group_id FROM {assignment} WHERE target_id = %s AND group_id IS NOT NULL"
        f"  UNION"
        f"  SELECT m.member_group_id FROM {membership} m JOIN reach r ON m.group_id = r.id"
        f"   WHERE m.member_group_id IS NOT NULL"
        f"), desired(object_type, object_id) AS ("
        f"  SELECT 'group', id FROM reach"
        f"  UNION"
        f"  SELECT 'user', m.member_user_id FROM {membership} m JOIN reach r ON m.group_id = r.id"
        f"   WHERE m.member_user_id IS NOT NULL"
        f"  UNION"
        f"  SELECT 'user', user_id FROM {assignment} WHERE target_id = %s AND user_id IS NOT NULL"
        f") "
    )


def _key(object_type: str, object_id: object) -> ObjectKey:
    return (object_type, object_id if isinstance(object_id, uuid.UUID) else uuid.UUID(str(object_id)))


def scope_refresh(*, target: Target) -> ScopeChange:
    """Bring the stored scope of an "assigned" target up to date; return what entered and left.

    Run inside the caller's transaction (the relay's), so the scope rows and
    the deliveries they cause commit together.
    """
    change = ScopeChange()
    if target.scope != Target.Scope.ASSIGNED:
        return change
    table = TargetScope._meta.db_table
    since = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            _desired_cte() + f"INSERT INTO {table} (target_id, object_type, object_id, since)"
            f" SELECT %s, d.object_type, d.object_id, %s FROM desired d"
            f" WHERE NOT EXISTS (SELECT 1 FROM {table} s WHERE s.target_id = %s"
            f"  AND s.object_type = d.object_type AND s.object_id = d.object_id)"
            f" RETURNING object_type, object_id",
            [target.pk, target.pk, target.pk, since, target.pk],
        )
        change.entered = {_key(kind, object_id) for kind, object_id in cursor.fetchall()}
        cursor.execute(
            _desired_cte() + f"DELETE FROM {table} WHERE target_id = %s AND NOT EXISTS ("
            f" SELECT 1 FROM desired d WHERE d.object_type = {table}.object_type"
            f"  AND d.object_id = {table}.object_id)"
            f" RETURNING object_type, object_id",
            [target.pk, target.pk, target.pk],
        )
        change.left = {_key(kind, object_id) for kind, object_id in cursor.fetchall()}
    return change


def scope_touched(*, target: Target, object_ids: Iterable[uuid.UUID]) -> bool:
    """Whether any of these objects is in the target's stored scope (so a change to it may move the scope)."""
    ids = list(set(object_ids))
    if not ids or target.scope != Target.Scope.ASSIGNED:
        return False
    return TargetScope.objects.filter(target=target, object_id__in=ids).exists()


def scope_filter(*, target: Target, keys: Iterable[ObjectKey]) -> set[ObjectKey]:
    """The keys that are in the target's scope now."""
    keys = set(keys)
    if not keys:
        return set()
    if target.scope == Target.Scope.ALL:
        users = [object_id for kind, object_id in keys if kind == ObjectType.USER]
        groups = [object_id for kind, object_id in keys if kind == ObjectType.GROUP]
        found = {
            (ObjectType.USER.value, pk)
            for pk in User.objects.filter(pk__in=users).values_list("pk", flat=True)
        }
        found |= {
            (ObjectType.GROUP.value, pk)
            for pk in Group.objects.filter(pk__in=groups).values_list("pk", flat=True)
        }
        return found
    rows = TargetScope.objects.filter(target=target, object_id__in=[object_id for _, object_id in keys])
    return {(kind, object_id) for kind, object_id in rows.values_list("object_type", "object_id")} & keys


def scope_contains(*, target: Target, object_type: str, object_id: uuid.UUID) -> tuple[bool, str]:
    """(in scope?, why), for the provisioning log."""
    if target.scope == Target.Scope.ALL:
        model = User if object_type == ObjectType.USER else Group
        if model.objects.filter(pk=object_id).exists():
            return True, "target provisions all users and groups"
        return False, "deleted from the directory"
    if TargetScope.objects.filter(target=target, object_type=object_type, object_id=object_id).exists():
        return True, "assigned, or a member of an assigned group"
    model = User if object_type == ObjectType.USER else Group
    if not model.objects.filter(pk=object_id).exists():
        return False, "deleted from the directory"
    return False, "not assigned and not a member of an assigned group"
