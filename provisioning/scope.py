"""Which users and groups a target provisions: its scope, stored as rows so every change to it is an event.

A target of scope "all" provisions every user and group; nothing is stored.
A target of scope "assigned" provisions its assigned users, its assigned
groups, every group nested in those at any depth, and every user member of
any of them. That set lives in TargetScope; `scope_refresh` recomputes it with
one recursive query and applies the difference with two set-based
statements, returning what entered and what left, so the relay can queue an
enter or leave delivery for each at once (a user removed from an assigned
group is disabled downstream within seconds, not at the next full sync).

Attribute scoping filters (provisioning.scoping) narrow that: an object is in
scope when it is a candidate (assigned, or any object for scope "all") and it
passes its type's filters. Candidates that fail them are stored too, in
ScopeExclusion with the reason, so a refresh evaluates only objects that newly
became candidates, and `scope_reevaluate` moves an object between the two
tables when one of its attributes changes. A type with filters is stored even
on a target of scope "all"; a type without filters there is not.
"""

import functools
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.db import connection
from django.utils import timezone

from directory.models import Group, Membership, User
from provisioning import sources
from provisioning.models import ObjectType, ScopeExclusion, Target, TargetAssignment, TargetScope
from provisioning.scoping import Decision, Filters, evaluate, parse_filters

ObjectKey = tuple[str, uuid.UUID]

IN_ALL = "target provisions all users and groups"
IN_ASSIGNED = "assigned, or a member of an assigned group"
NOT_ASSIGNED = "not assigned and not a member of an assigned group"
DELETED = "deleted from the directory"
TYPES = (ObjectType.USER.value, ObjectType.GROUP.value)
# Objects loaded per query when filters are evaluated.
EVALUATE_CHUNK = 500


@dataclass
class ScopeChange:
    entered: set[ObjectKey] = field(default_factory=set)
    left: set[ObjectKey] = field(default_factory=set)

    def update(self, other: "ScopeChange") -> None:
        # An object that left and came back (or the reverse) within one change is where it started.
        self.entered = (self.entered - other.left) | (other.entered - self.left)
        self.left = (self.left - other.entered) | (other.left - self.entered)


# --- filters -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> Filters:
    return parse_filters(json.loads(text))


def type_filters(target: Target, object_type: str) -> Filters:
    """The target's scoping filters for one object type (parsed once per distinct value)."""
    data = target.scoping_filters_for(object_type)
    if not data:
        return ()
    return _parsed(json.dumps(data, sort_keys=True))


def filtered_types(target: Target) -> set[str]:
    return {object_type for object_type in TYPES if type_filters(target, object_type)}


def stored_types(target: Target) -> set[str]:
    """Object types whose scope is kept in TargetScope (and ScopeExclusion) for this target."""
    if target.scope == Target.Scope.ASSIGNED:
        return set(TYPES)
    return filtered_types(target)


def object_decision(target: Target, obj: User | Group) -> Decision | None:
    """Whether `obj` passes the target's scoping filters for its type, and why; None without filters."""
    object_type = ObjectType.USER.value if isinstance(obj, User) else ObjectType.GROUP.value
    filters = type_filters(target, object_type)
    if not filters:
        return None
    return evaluate(filters, _resolver(obj))


def _resolver(obj: User | Group) -> sources.Resolver:
    if isinstance(obj, User):
        # A filter on the manager tests whether there is one: the manager's directory id stands for it.
        manager = str(obj.manager_id) if obj.manager_id else None
        return sources.user_resolver(obj, manager=manager)
    return sources.group_resolver(obj)


def _load(object_type: str, ids: list[uuid.UUID]) -> Iterator[User | Group]:
    for start in range(0, len(ids), EVALUATE_CHUNK):
        chunk = ids[start : start + EVALUATE_CHUNK]
        if object_type == ObjectType.USER:
            yield from User.objects.filter(pk__in=chunk).with_values()
        else:
            yield from Group.objects.filter(pk__in=chunk)


def _place(target: Target, object_type: str, ids: list[uuid.UUID], *, were_in: bool = False) -> ScopeChange:
    """Evaluate objects stored in neither table and store each as in scope or excluded.

    `were_in`: they counted as in scope until now (scope "all" before its
    filters), so failing makes them leave and passing changes nothing.
    """
    change = ScopeChange()
    filters = type_filters(target, object_type)
    now = timezone.now()
    for start in range(0, len(ids), EVALUATE_CHUNK):
        inside: list[TargetScope] = []
        outside: list[ScopeExclusion] = []
        for obj in _load(object_type, ids[start : start + EVALUATE_CHUNK]):
            decision = evaluate(filters, _resolver(obj))
            if decision.in_scope:
                inside.append(
                    TargetScope(target=target, object_type=object_type, object_id=obj.pk, since=now)
                )
                if not were_in:
                    change.entered.add((object_type, obj.pk))
            else:
                if were_in:
                    change.left.add((object_type, obj.pk))
                outside.append(
                    ScopeExclusion(
                        target=target,
                        object_type=object_type,
                        object_id=obj.pk,
                        reason=decision.reason[:255],
                        since=now,
                    )
                )
        TargetScope.objects.bulk_create(inside, ignore_conflicts=True)
        ScopeExclusion.objects.bulk_create(outside, ignore_conflicts=True)
    return change


def _move(target: Target, decisions: dict[ObjectKey, Decision], was_in: set[ObjectKey]) -> ScopeChange:
    """Store fresh decisions for objects already stored (or, for scope "all", new ones)."""
    change = ScopeChange()
    now = timezone.now()
    entering = {key for key, decision in decisions.items() if decision.in_scope and key not in was_in}
    leaving = {key for key, decision in decisions.items() if not decision.in_scope and key in was_in}
    staying_out = {key for key, decision in decisions.items() if not decision.in_scope} - leaving
    if entering:
        _delete_keys(ScopeExclusion, target, entering)
        TargetScope.objects.bulk_create(
            [TargetScope(target=target, object_type=k, object_id=i, since=now) for k, i in entering],
            ignore_conflicts=True,
        )
    if leaving:
        _delete_keys(TargetScope, target, leaving)
    if leaving or staying_out:
        # A new reason replaces the old one: the admin shows why it is out now.
        _delete_keys(ScopeExclusion, target, leaving | staying_out)
        ScopeExclusion.objects.bulk_create(
            [
                ScopeExclusion(
                    target=target,
                    object_type=kind,
                    object_id=object_id,
                    reason=decisions[(kind, object_id)].reason[:255],
                    since=now,
                )
                for kind, object_id in leaving | staying_out
            ],
            ignore_conflicts=True,
        )
    change.entered, change.left = entering, leaving
    return change


def _delete_keys(
    model: type[TargetScope] | type[ScopeExclusion], target: Target, keys: Iterable[ObjectKey]
) -> int:
    deleted = 0
    by_type: dict[str, list[uuid.UUID]] = {}
    for kind, object_id in keys:
        by_type.setdefault(kind, []).append(object_id)
    for kind, ids in by_type.items():
        deleted += model.objects.filter(target=target, object_type=kind, object_id__in=ids).delete()[0]
    return deleted


# --- the stored set ----------------------------------------------------------------------------


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


def _in_list(values: Iterable[str]) -> str:
    # Only ever object type names from TYPES: safe to inline.
    return ", ".join(f"'{value}'" for value in values if value in TYPES)


def scope_refresh(*, target: Target) -> ScopeChange:
    """Bring the stored scope of a target up to date; return what entered and left.

    Run inside the caller's transaction (the relay's), so the scope rows and
    the deliveries they cause commit together. Objects already stored keep
    their decision (scope_reevaluate changes it when their attributes change).
    """
    if target.scope == Target.Scope.ASSIGNED:
        return _refresh_assigned(target)
    return _refresh_all(target)


def _refresh_assigned(target: Target) -> ScopeChange:
    change = ScopeChange()
    table = TargetScope._meta.db_table
    excluded = ScopeExclusion._meta.db_table
    filtered = filtered_types(target)
    plain = [kind for kind in TYPES if kind not in filtered]
    since = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        if plain:
            cursor.execute(
                _desired_cte() + f"INSERT INTO {table} (target_id, object_type, object_id, since)"
                f" SELECT %s, d.object_type, d.object_id, %s FROM desired d"
                f" WHERE d.object_type IN ({_in_list(plain)}) AND NOT EXISTS (SELECT 1 FROM {table} s"
                f"  WHERE s.target_id = %s AND s.object_type = d.object_type AND s.object_id = d.object_id)"
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
        if not filtered:
            return change
        cursor.execute(
            _desired_cte() + f"DELETE FROM {excluded} WHERE target_id = %s AND NOT EXISTS ("
            f" SELECT 1 FROM desired d WHERE d.object_type = {excluded}.object_type"
            f"  AND d.object_id = {excluded}.object_id)",
            [target.pk, target.pk, target.pk],
        )
        cursor.execute(
            _desired_cte() + f"SELECT d.object_type, d.object_id FROM desired d"
            f" WHERE d.object_type IN ({_in_list(filtered)})"
            f" AND NOT EXISTS (SELECT 1 FROM {table} s WHERE s.target_id = %s"
            f"  AND s.object_type = d.object_type AND s.object_id = d.object_id)"
            f" AND NOT EXISTS (SELECT 1 FROM {excluded} x WHERE x.target_id = %s"
            f"  AND x.object_type = d.object_type AND x.object_id = d.object_id)",
            [target.pk, target.pk, target.pk, target.pk],
        )
        candidates = [_key(kind, object_id) for kind, object_id in cursor.fetchall()]
    for kind in filtered:
        change.update(_place(target, kind, [object_id for k, object_id in candidates if k == kind]))
    return change


def _refresh_all(target: Target) -> ScopeChange:
    change = ScopeChange()
    filtered = filtered_types(target)
    for kind in TYPES:
        model = User if kind == ObjectType.USER else Group
        stored = TargetScope.objects.filter(target=target, object_type=kind)
        exclusions = ScopeExclusion.objects.filter(target=target, object_type=kind)
        if kind not in filtered:
            # No filter: every object is in scope and nothing is stored; the excluded ones come in.
            change.entered |= {
                (kind, object_id) for object_id in exclusions.values_list("object_id", flat=True)
            }
            exclusions.delete()
            stored.delete()
            continue
        gone = stored.exclude(object_id__in=model.objects.values("pk"))
        change.left |= {(kind, object_id) for object_id in gone.values_list("object_id", flat=True)}
        gone.delete()
        exclusions.exclude(object_id__in=model.objects.values("pk")).delete()
        last: uuid.UUID | None = None
        while True:
            # Objects in neither table, a page at a time: memory stays bounded on the first evaluation.
            page = model.objects.exclude(pk__in=stored.values("object_id")).exclude(
                pk__in=exclusions.values("object_id")
            )
            if last is not None:
                page = page.filter(pk__gt=last)
            ids = list(page.order_by("pk").values_list("pk", flat=True)[:EVALUATE_CHUNK])
            if not ids:
                break
            # Unstored objects of a scope "all" target were in scope: under no filter, or created since
            # the last relay run (their own event queues them; a leave without a link costs nothing).
            change.update(_place(target, kind, ids, were_in=True))
            last = ids[-1]
    return change


def scope_reevaluate(
    *, target: Target, keys: Iterable[ObjectKey], deleted: Iterable[ObjectKey] = ()
) -> ScopeChange:
    """Re-decide objects whose attributes changed (and drop deleted ones) under the target's filters.

    Only types with filters are looked at; for scope "assigned" only objects
    that are candidates (stored in either table) can move, for scope "all"
    every existing object is a candidate.
    """
    filtered = filtered_types(target)
    change = ScopeChange()
    if not filtered:
        return change
    wanted = {key for key in keys if key[0] in filtered}
    gone = {key for key in deleted if key[0] in filtered}
    if gone and target.scope == Target.Scope.ALL:
        # Under "assigned" a deleted object's memberships went with it and scope_refresh saw that.
        was_in = scope_filter(target=target, keys=gone)
        _delete_keys(TargetScope, target, gone)
        _delete_keys(ScopeExclusion, target, gone)
        change.left |= was_in
    wanted -= gone
    if not wanted:
        return change
    ids = [object_id for _, object_id in wanted]
    was_in = {
        (kind, object_id)
        for kind, object_id in TargetScope.objects.filter(target=target, object_id__in=ids).values_list(
            "object_type", "object_id"
        )
    } & wanted
    if target.scope == Target.Scope.ASSIGNED:
        was_out = {
            (kind, object_id)
            for kind, object_id in ScopeExclusion.objects.filter(
                target=target, object_id__in=ids
            ).values_list("object_type", "object_id")
        } & wanted
        wanted &= was_in | was_out
    decisions: dict[ObjectKey, Decision] = {}
    for kind in filtered:
        filters = type_filters(target, kind)
        for obj in _load(kind, [object_id for k, object_id in wanted if k == kind]):
            decisions[(kind, obj.pk)] = evaluate(filters, _resolver(obj))
    change.update(_move(target, decisions, was_in))
    return change


def scope_reevaluate_all(*, target: Target) -> ScopeChange:
    """After the filters changed: re-decide every stored object, then add the new candidates.

    Pages through both tables by primary key, so memory stays bounded by the
    page (and by the set of objects that move, which the caller queues).
    """
    change = ScopeChange()
    filtered = filtered_types(target)
    if target.scope == Target.Scope.ASSIGNED:
        # Exclusions of a type whose filters were dropped: scope_refresh below lets those objects in.
        ScopeExclusion.objects.filter(target=target).exclude(object_type__in=filtered).delete()
    for kind in filtered:
        for model in (TargetScope, ScopeExclusion):
            last_pk = 0
            while True:
                rows = list(
                    model.objects.filter(target=target, object_type=kind, pk__gt=last_pk)
                    .order_by("pk")
                    .values_list("pk", "object_id")[:EVALUATE_CHUNK]
                )
                if not rows:
                    break
                last_pk = rows[-1][0]
                keys = {(kind, object_id) for _, object_id in rows}
                was_in = keys if model is TargetScope else set()
                filters = type_filters(target, kind)
                decisions = {
                    (kind, obj.pk): evaluate(filters, _resolver(obj))
                    for obj in _load(kind, [object_id for _, object_id in rows])
                }
                change.update(_move(target, decisions, was_in))
    change.update(scope_refresh(target=target))
    return change


def scope_touched(*, target: Target, object_ids: Iterable[uuid.UUID]) -> bool:
    """Whether any of these objects is a stored candidate of the target (a change to it may move scope)."""
    ids = list(set(object_ids))
    if not ids or target.scope != Target.Scope.ASSIGNED:
        return False
    if TargetScope.objects.filter(target=target, object_id__in=ids).exists():
        return True
    return (
        bool(filtered_types(target))
        and ScopeExclusion.objects.filter(target=target, object_id__in=ids).exists()
    )


def scope_filter(*, target: Target, keys: Iterable[ObjectKey]) -> set[ObjectKey]:
    """The keys that are in the target's scope now."""
    keys = set(keys)
    if not keys:
        return set()
    stored = stored_types(target)
    found: set[ObjectKey] = set()
    live = [key for key in keys if key[0] not in stored]
    if live:
        users = [object_id for kind, object_id in live if kind == ObjectType.USER]
        groups = [object_id for kind, object_id in live if kind == ObjectType.GROUP]
        if users:
            found |= {
                (ObjectType.USER.value, pk)
                for pk in User.objects.filter(pk__in=users).values_list("pk", flat=True)
            }
        if groups:
            found |= {
                (ObjectType.GROUP.value, pk)
                for pk in Group.objects.filter(pk__in=groups).values_list("pk", flat=True)
            }
    kept = [object_id for kind, object_id in keys if kind in stored]
    if kept:
        rows = TargetScope.objects.filter(target=target, object_id__in=kept)
        found |= {
            (kind, object_id) for kind, object_id in rows.values_list("object_type", "object_id")
        } & keys
    return found


def scope_contains(*, target: Target, object_type: str, object_id: uuid.UUID) -> tuple[bool, str]:
    """(in scope?, why), for the provisioning log."""
    model = User if object_type == ObjectType.USER else Group
    if object_type not in stored_types(target):
        if model.objects.filter(pk=object_id).exists():
            return True, IN_ALL
        return False, DELETED
    if TargetScope.objects.filter(target=target, object_type=object_type, object_id=object_id).exists():
        return True, IN_ASSIGNED if target.scope == Target.Scope.ASSIGNED else IN_ALL
    if not model.objects.filter(pk=object_id).exists():
        return False, DELETED
    reason = (
        ScopeExclusion.objects.filter(target=target, object_type=object_type, object_id=object_id)
        .values_list("reason", flat=True)
        .first()
    )
    if reason is not None:
        return False, reason or "kept out by the scoping filters"
    return False, NOT_ASSIGNED


def scope_parent_groups(*, target: Target, keys: Iterable[ObjectKey]) -> set[ObjectKey]:
    """In-scope groups that directly contain one of these objects: their member lists change with them."""
    user_ids = [object_id for kind, object_id in keys if kind == ObjectType.USER]
    group_ids = [object_id for kind, object_id in keys if kind == ObjectType.GROUP]
    if not user_ids and not group_ids:
        return set()
    parents = Membership.objects.none()
    if user_ids:
        parents = parents | Membership.objects.filter(member_user_id__in=user_ids)
    if group_ids:
        parents = parents | Membership.objects.filter(member_group_id__in=group_ids)
    groups = {(ObjectType.GROUP.value, group_id) for group_id in parents.values_list("group_id", flat=True)}
    return scope_filter(target=target, keys=groups)
