"""Reads shared by the front doors (SCIM API, admin) and provisioning."""

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.db.models.expressions import RawSQL

from directory import membership_sql
from directory.exceptions import ObjectNotFound
from directory.models import ChangeEvent, Group, Membership, User, UserValue
from directory.precompiled import PrecompiledLookup, PrecompiledWindow


class StoredValue(NamedTuple):
    """One element of a multi-valued attribute as user_list() loads it (the fields of a UserValue)."""

    kind: str
    position: int
    value: str
    display: str
    type: str
    primary: bool
    address: dict[str, Any]


# Each user's values as one JSON array column of the user's own row, and the manager's display
# name as another: one query for a user or a page of users, where a prefetch and a join would cost
# a second round trip and a whole second User per row.
_VALUES_JSON = {
    "postgresql": "(SELECT json_agg(json_build_array(v.kind, v.position, v.value, v.display, v.type, "
    'v."primary", v.address)) FROM {values} v WHERE v.user_id = {users}.id)',
    "sqlite": "(SELECT json_group_array(json_array(v.kind, v.position, v.value, v.display, v.type, "
    'v."primary", json(v.address))) FROM {values} v WHERE v.user_id = {users}.id)',
}
_MANAGER_DISPLAY = (
    "(SELECT COALESCE(NULLIF(m.display_name, ''), m.user_name) FROM {users} m "
    "WHERE m.id = {users}.manager_id)"
)


# The groups a user belongs to, directly or through nested groups, as a third column: the
# recursive walk of membership_sql.user_memberships, for the row's own user.
_GROUPS_JSON = {
    "postgresql": "(WITH RECURSIVE member_of(group_id, direct) AS ("
    "  SELECT group_id, 1 FROM {memberships} WHERE member_user_id = {users}.id"
    "  UNION SELECT m.group_id, 0 FROM {memberships} m JOIN member_of o ON m.member_group_id = o.group_id"
    ") SELECT json_agg(json_build_array(g.id, g.display_name, d.direct) ORDER BY g.display_name)"
    "  FROM (SELECT group_id, MAX(direct) AS direct FROM member_of GROUP BY group_id) d"
    "  JOIN {groups} g ON g.id = d.group_id)",
    "sqlite": "(WITH RECURSIVE member_of(group_id, direct) AS ("
    "  SELECT group_id, 1 FROM {memberships} WHERE member_user_id = {users}.id"
    "  UNION SELECT m.group_id, 0 FROM {memberships} m JOIN member_of o ON m.member_group_id = o.group_id"
    ") SELECT json_group_array(json_array(id, display_name, direct)) FROM ("
    "  SELECT g.id, g.display_name, MAX(d.direct) AS direct FROM member_of d"
    "  JOIN {groups} g ON g.id = d.group_id GROUP BY g.id, g.display_name ORDER BY g.display_name))",
}


def _raw(templates: dict[str, str] | str) -> RawSQL:
    if isinstance(templates, dict):
        templates = templates.get(connection.vendor, templates["postgresql"])
    quote = connection.ops.quote_name
    tables = {
        "users": quote(User._meta.db_table),
        "values": quote(UserValue._meta.db_table),
        "memberships": quote(Membership._meta.db_table),
        "groups": quote(Group._meta.db_table),
    }
    return RawSQL(templates.format(**tables), ())


def user_list(*, with_groups: bool = False) -> QuerySet[User]:
    """All users; each carries its multi-valued attributes (`user_values`) and its manager's display name.

    `with_groups` adds the groups each belongs to (`user_groups_loaded`), in the same query.
    """
    # Built once per database and process: each call clones it (cheap) instead of annotating anew.
    key = (connection.alias, connection.vendor, with_groups)
    base = _USER_LISTS.get(key)
    if base is None:
        base = User.objects.annotate(stored_values=_raw(_VALUES_JSON), manager_display=_raw(_MANAGER_DISPLAY))
        if with_groups:
            base = base.annotate(stored_groups=_raw(_GROUPS_JSON))
        base = _USER_LISTS[key] = base.order_by("created", "id")
    return base.all()


_USER_LISTS: dict[tuple[str, str, bool], QuerySet[User]] = {}


def user_loaded(user: User, *, values: Mapping[str, Sequence[Mapping[str, Any]]]) -> User:
    """A user just created (no groups, no manager), given what user_list() would load with it.

    `values` as services.normalise_values returns them, which is how they were stored.
    """
    if user.manager_id is not None:
        raise ValueError("A user with a manager needs its manager's name: load it with user_get()")
    user.stored_values = [  # type: ignore[attr-defined]
        [kind, position, item["value"], item["display"], item["type"], item["primary"], item["address"]]
        for kind, items in values.items()
        for position, item in enumerate(items)
    ]
    user.manager_display = None  # type: ignore[attr-defined]
    user.stored_groups = []  # type: ignore[attr-defined]
    return user


def user_as_written(
    *, read: User, written: User, replaced: Mapping[str, Sequence[Mapping[str, Any]]]
) -> User | None:
    """`written` (as services.user_update returned it) carrying what user_list() loaded with `read`.

    For a write that nobody overtook since `read` (user_update checked the version):
    the values are read's, but for the attributes in `replaced` (as
    services.normalise_values returns them); groups (a user's write changes none)
    and the manager's name are read's. None when the manager changed: its name needs a read.
    """
    if written.manager_id != read.manager_id:
        return None
    kept = [list(value) for value in user_values(read) if value.kind not in replaced]
    written.stored_values = kept + [  # type: ignore[attr-defined]
        [kind, position, item["value"], item["display"], item["type"], item["primary"], item["address"]]
        for kind, items in replaced.items()
        for position, item in enumerate(items)
    ]
    written.manager_display = getattr(read, "manager_display", None)  # type: ignore[attr-defined]
    if hasattr(read, "stored_groups"):
        written.stored_groups = read.stored_groups  # type: ignore[attr-defined]
    return written


def user_groups_loaded(user: User) -> list[tuple[uuid.UUID, str, bool]]:
    """(group id, display name, direct?) of every group of a user loaded with user_list(with_groups=True)."""
    raw = getattr(user, "stored_groups", None)
    if raw is None:
        return []
    rows = json.loads(raw) if isinstance(raw, str) else raw
    return [(uuid.UUID(str(group_id)), name, bool(direct)) for group_id, name, direct in rows]


def user_values(user: User) -> list[StoredValue]:
    """The multi-valued attributes of a user loaded through user_list() or user_get(), in stored order."""
    raw = getattr(user, "stored_values", None)
    if raw is None:
        return []
    rows = json.loads(raw) if isinstance(raw, str) else raw
    values = [
        StoredValue(kind, position, value, display, kind_type, bool(primary), address or {})
        for kind, position, value, display, kind_type, primary, address in rows
    ]
    values.sort(key=lambda item: (item.kind, item.position))
    return values


_user_by_pk = {
    with_groups: PrecompiledLookup(
        User, lambda pk, with_groups=with_groups: user_list(with_groups=with_groups).order_by().filter(pk=pk)
    )
    for with_groups in (False, True)
}
_user_lock = PrecompiledLookup(
    User, lambda pk: User.objects.select_for_update(no_key=True).filter(pk=pk).only("pk")
)


# Stands in for a user name while the lookup compiles: never lower-case, so never a real parameter.
_NAME_SENTINEL = "\x1fPrecompiled\x1f"
_users_by_name = {
    with_groups: PrecompiledLookup(
        User,
        lambda name, with_groups=with_groups: (
            user_list(with_groups=with_groups).order_by().filter(user_name__lower=name)
        ),
        sentinel=_NAME_SENTINEL,
        prepare=str,
    )
    for with_groups in (False, True)
}


_user_windows = {
    with_groups: PrecompiledWindow(User, lambda with_groups=with_groups: user_list(with_groups=with_groups))
    for with_groups in (False, True)
}


def user_window(*, offset: int, limit: int, with_groups: bool = False) -> list[User]:
    """`user_list()[offset : offset + limit]` (every user, in its order), without building the query."""
    return _user_windows[with_groups].run(offset=offset, limit=limit)


def user_total() -> int:
    """How many users there are: `user_list().count()`, whose query is always the same."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(User._meta.db_table)}")
        return int(cursor.fetchone()[0])


def users_by_user_name(*, user_name: str, with_groups: bool = False) -> list[User]:
    """The user (or none) whose userName is `user_name` ignoring case, loaded as user_list() loads them."""
    return _users_by_name[with_groups].run(user_name.lower())


def user_get(*, user_id: uuid.UUID | str, for_update: bool = False, with_groups: bool = False) -> User:
    """One user, loaded as user_list() loads them; `for_update` locks the row (inside a transaction)."""
    try:
        user_id = uuid.UUID(str(user_id))
    except ValueError:
        raise ObjectNotFound(f"User {user_id} not found") from None
    # Locked on its own first: a SELECT that waits for the lock re-reads the locked row once it
    # is free, but not what its subqueries read, so the values would be as they were before.
    if for_update and not _user_lock.run(user_id):
        raise ObjectNotFound(f"User {user_id} not found")
    found = _user_by_pk[with_groups].run(user_id)
    if not found:
        raise ObjectNotFound(f"User {user_id} not found")
    return found[0]


def user_counts() -> dict[str, int]:
    """{"total", "active"}: every user, and those active (one query)."""
    return User.objects.aggregate(total=Count("id"), active=Count("id", filter=Q(active=True)))


def user_groups(*, user_id: uuid.UUID) -> QuerySet[Group]:
    """The groups a user is a direct member of."""
    return Group.objects.filter(memberships__member_user_id=user_id).order_by("display_name")


def group_list(*, with_member_count: bool = False) -> QuerySet[Group]:
    groups = Group.objects.order_by("created", "id")
    if with_member_count:
        groups = groups.annotate(member_count=Count("memberships"))
    return groups


_group_by_pk = PrecompiledLookup(Group, lambda pk: Group.objects.filter(pk=pk))
_group_locked_by_pk = PrecompiledLookup(
    Group, lambda pk: Group.objects.select_for_update(no_key=True).filter(pk=pk)
)


def group_get(*, group_id: uuid.UUID | str, for_update: bool = False) -> Group:
    try:
        found = (_group_locked_by_pk if for_update else _group_by_pk).run(uuid.UUID(str(group_id)))
    except ValueError:
        found = []
    if not found:
        raise ObjectNotFound(f"Group {group_id} not found")
    return found[0]


_group_version = PrecompiledLookup(Group, lambda pk: Group.objects.filter(pk=pk).only("version"))


def group_version(*, group_id: uuid.UUID) -> int | None:
    found = _group_version.run(group_id)
    return found[0].version if found else None


def group_members(*, group_id: uuid.UUID) -> QuerySet[Membership]:
    """A group's direct members, users and groups, with the member rows joined in."""
    return (
        Membership.objects.filter(group_id=group_id)
        .select_related("member_user", "member_group")
        .order_by("id")
    )


def group_nesting_would_cycle(*, group_id: uuid.UUID, member_group_id: uuid.UUID) -> bool:
    """Whether nesting `member_group_id` inside `group_id` would make a group contain itself."""
    return group_id == member_group_id or membership_sql.nested_group_reaches(
        start_ids=[member_group_id], target_id=group_id
    )


def user_group_refs(*, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[tuple[uuid.UUID, str, bool]]]:
    """For each user, (group id, display name, direct?) of every group it belongs to, nesting included."""
    refs: dict[uuid.UUID, list[tuple[uuid.UUID, str, bool]]] = {user_id: [] for user_id in user_ids}
    for user_id, group_id, display_name, direct in membership_sql.user_memberships(user_ids=user_ids):
        refs[user_id].append((group_id, display_name, direct))
    return refs


def group_member_refs(*, group_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[tuple[uuid.UUID, str, str]]]:
    """For each group, (member id, "User" or "Group", display) of its direct members, in one query."""
    refs: dict[uuid.UUID, list[tuple[uuid.UUID, str, str]]] = {group_id: [] for group_id in group_ids}
    rows = (
        Membership.objects.filter(group_id__in=group_ids)
        .order_by("id")
        .values_list(
            "group_id",
            "member_user_id",
            "member_user__display_name",
            "member_user__user_name",
            "member_group_id",
            "member_group__display_name",
        )
    )
    for group_id, user_id, user_display, user_name, member_group_id, group_display in rows:
        if user_id is not None:
            refs[group_id].append((user_id, "User", user_display or user_name))
        else:
            refs[group_id].append((member_group_id, "Group", group_display))
    return refs


_user_exists = PrecompiledLookup(User, lambda pk: User.objects.filter(pk=pk).only("pk"))


def member_kinds(*, ids: Sequence[uuid.UUID]) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Split ids into (user ids, other ids): for member lists whose elements carry no type (Okta)."""
    if len(ids) == 1:
        # The usual PATCH (Entra adds one member per operation): a lookup compiled once.
        return ([ids[0]], []) if _user_exists.run(ids[0]) else ([], [ids[0]])
    users = set(User.objects.filter(pk__in=ids).values_list("pk", flat=True))
    return [i for i in ids if i in users], [i for i in ids if i not in users]


def group_member_ids(*, group_id: uuid.UUID) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """(user ids, group ids) of a group's direct members: only for a full replace of the member list."""
    users: set[uuid.UUID] = set()
    groups: set[uuid.UUID] = set()
    for user_id, member_group_id in Membership.objects.filter(group_id=group_id).values_list(
        "member_user_id", "member_group_id"
    ):
        if user_id is not None:
            users.add(user_id)
        else:
            groups.add(member_group_id)
    return users, groups


@dataclass(frozen=True)
class OutboxBacklog:
    """Unprocessed change events: how many (counted up to a limit) and how old the oldest is."""

    count: int
    oldest: datetime | None


def change_event_backlog(*, limit: int | None = None) -> OutboxBacklog:
    """Two reads on the partial index of unprocessed events; `limit` caps the count (a readiness probe
    needs to know "more than the threshold", not how many more)."""
    pending = ChangeEvent.objects.filter(processed__isnull=True)
    # A sliced queryset counts as SELECT COUNT(*) FROM (... LIMIT n).
    count = (pending.order_by("id")[:limit] if limit is not None else pending).count()
    oldest = pending.order_by("id").values_list("created", flat=True).first()
    return OutboxBacklog(count=count, oldest=oldest)
