"""Set-based membership statements: many members in one statement, and only the rows that changed back.

Django's bulk_create(ignore_conflicts=True) cannot say which rows it inserted,
and a plain delete() cannot say which it removed; the outbox needs exactly
those. PostgreSQL gets one statement whatever the number of members (arrays
through unnest/ANY); SQLite, which has no arrays, gets chunks that stay under
its bound-parameter limit.
"""

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from django.db import connection
from django.utils import timezone

from directory import bulk_sql
from directory.models import AuditEntry, ChangeEvent, Group, Membership, User

MemberColumn = Literal["member_user_id", "member_group_id"]

_SQLITE_CHUNK = 500


def _chunks(ids: Sequence[uuid.UUID]) -> Iterator[Sequence[uuid.UUID]]:
    for start in range(0, len(ids), _SQLITE_CHUNK):
        yield ids[start : start + _SQLITE_CHUNK]


def _prep(value: uuid.UUID) -> object:
    # SQLite keeps UUIDs as 32 hex characters; PostgreSQL as its uuid type.
    return Group._meta.pk.get_db_prep_value(value, connection)  # type: ignore[union-attr]


def _to_uuid(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def insert_members(*, group_id: uuid.UUID, column: MemberColumn, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Insert (group, member) rows for the ids that exist, skipping members already there.

    Returns the members actually added: an id that is no user (or group, for
    member_group_id) is left out, as is one already a member.
    """
    if not ids:
        return []
    table = Membership._meta.db_table
    members = (User if column == "member_user_id" else Group)._meta.db_table
    now = timezone.now()
    added: list[uuid.UUID] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} (group_id, {column}, created) "
                f"SELECT %s, member.id, %s FROM {members} member WHERE member.id = ANY(%s::uuid[]) "
                f"ON CONFLICT DO NOTHING RETURNING {column}",
                [group_id, now, list(ids)],
            )
            added.extend(_to_uuid(row[0]) for row in cursor.fetchall())
        else:
            created = connection.ops.adapt_datetimefield_value(now)
            group = _prep(group_id)
            for chunk in _chunks(ids):
                marks = ", ".join(["%s"] * len(chunk))
                cursor.execute(
                    f"INSERT INTO {table} (group_id, {column}, created) "
                    f"SELECT %s, member.id, %s FROM {members} member WHERE member.id IN ({marks}) "
                    f"ON CONFLICT DO NOTHING RETURNING {column}",
                    [group, created, *(_prep(member) for member in chunk)],
                )
                added.extend(_to_uuid(row[0]) for row in cursor.fetchall())
    return added


def delete_members(*, group_id: uuid.UUID, column: MemberColumn, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Delete (group, member) rows; return the members actually removed."""
    if not ids:
        return []
    table = Membership._meta.db_table
    removed: list[uuid.UUID] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"DELETE FROM {table} WHERE group_id = %s AND {column} = ANY(%s::uuid[]) RETURNING {column}",
                [group_id, list(ids)],
            )
            removed.extend(_to_uuid(row[0]) for row in cursor.fetchall())
        else:
            group = _prep(group_id)
            for chunk in _chunks(ids):
                marks = ", ".join(["%s"] * len(chunk))
                cursor.execute(
                    f"DELETE FROM {table} WHERE group_id = %s AND {column} IN ({marks}) RETURNING {column}",
                    [group, *(_prep(member) for member in chunk)],
                )
                removed.extend(_to_uuid(row[0]) for row in cursor.fetchall())
    return removed


def nested_group_reaches(*, start_ids: Sequence[uuid.UUID], target_id: uuid.UUID) -> bool:
    """Whether `target_id` is among the groups nested (at any depth) inside any of `start_ids`.

    One recursive query; UNION (not UNION ALL) makes it terminate even on a
    cycle that predates the check.
    """
    if not start_ids:
        return False
    table = Membership._meta.db_table
    marks = ", ".join(["%s"] * len(start_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE nested(id) AS ("
            f"  SELECT member_group_id FROM {table}"
            f"   WHERE group_id IN ({marks}) AND member_group_id IS NOT NULL"
            f"  UNION"
            f"  SELECT m.member_group_id FROM {table} m JOIN nested n ON m.group_id = n.id"
            f"   WHERE m.member_group_id IS NOT NULL"
            f") SELECT 1 FROM nested WHERE id = %s LIMIT 1",
            [*(_prep(group) for group in start_ids), _prep(target_id)],
        )
        return cursor.fetchone() is not None


def user_memberships(*, user_ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, uuid.UUID, str, bool]]:
    """(user id, group id, group display name, direct?) for every group the users belong to, at any depth.

    One recursive query for a whole page of users: direct memberships, then
    the groups that contain those groups, and so on.
    """
    if not user_ids:
        return []
    table, groups = Membership._meta.db_table, Group._meta.db_table
    marks = ", ".join(["%s"] * len(user_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE member_of(user_id, group_id, direct) AS ("
            f"  SELECT member_user_id, group_id, 1 FROM {table} WHERE member_user_id IN ({marks})"
            f"  UNION"
            f"  SELECT o.user_id, m.group_id, 0 FROM {table} m"
            f"   JOIN member_of o ON m.member_group_id = o.group_id"
            f") SELECT o.user_id, o.group_id, g.display_name, MAX(o.direct) FROM member_of o"
            f"  JOIN {groups} g ON g.id = o.group_id"
            f"  GROUP BY o.user_id, o.group_id, g.display_name ORDER BY g.display_name",
            [_prep(user) for user in user_ids],
        )
        return [(_to_uuid(u), _to_uuid(g), name, bool(direct)) for u, g, name, direct in cursor.fetchall()]


def _uuid_array(ids: Sequence[uuid.UUID]) -> tuple[str, object]:
    """SQL for an array of `ids` and its parameter, in the form PostgreSQL plans best once prepared.

    A prepared statement's generic plan takes an array parameter to hold about ten
    elements, so PostgreSQL would plan the usual single member anew on every call;
    an array of one parameter it knows holds one, and keeps the generic plan.
    """
    if len(ids) == 1:
        return "ARRAY[%s::uuid]", ids[0]
    return "%s::uuid[]", list(ids)


@dataclass(frozen=True)
class MembersRecorded:
    """What change_members_recorded did."""

    changed: list[uuid.UUID]  # the members added or removed
    version: int | None  # the group's version after the statement; None when the group is gone
    exists: bool  # whether the group still exists
    # Adding: whether every id was a user (when not, nothing was written).
    all_users: bool


def change_members_recorded(
    *,
    group: Group,
    user_ids: Sequence[uuid.UUID],
    group_ids: Sequence[uuid.UUID] = (),
    add: bool,
    event: ChangeEvent,
    audit: AuditEntry,
) -> MembersRecorded:
    """Add users to `group` or remove members from it, bump its version and record it: one statement.

    PostgreSQL only (see bulk_sql's "one statement"); ids without repeats. Adding
    takes users only (nesting a group needs its cycle check) and writes nothing
    unless every id is a user. Only the members actually added (or removed) get a
    change event (`event`, one per member, with the new version and the member's
    type) and are listed in the audit entry (`audit`, whose `changes` this fills
    in); when nothing changed, nothing is written.
    """
    if add and group_ids:
        raise ValueError("Nesting groups is not done in one statement")
    table, users, groups = Membership._meta.db_table, User._meta.db_table, Group._meta.db_table
    now = timezone.now()
    user_array, user_param = _uuid_array(user_ids)
    if add:
        # All or nothing: when an id is no user the statement writes nothing, and the
        # caller reports the error (one statement has no transaction to roll back).
        found: list[bulk_sql.Part] = [
            ("found", f"SELECT count(*) AS users FROM {users} WHERE id = ANY({user_array})", [user_param])
        ]
        change = (
            f"INSERT INTO {table} (group_id, member_user_id, created) "
            f"SELECT %s, member.id, %s FROM {users} member WHERE member.id = ANY({user_array}) "
            f"AND (SELECT users FROM found) = %s "
            f"ON CONFLICT DO NOTHING RETURNING member_user_id, member_group_id"
        )
        change_params: list[object] = [group.pk, now, user_param, len(user_ids)]
    else:
        found = []
        group_array, group_param = _uuid_array(group_ids)
        change = (
            f"DELETE FROM {table} WHERE group_id = %s "
            f"AND (member_user_id = ANY({user_array}) OR member_group_id = ANY({group_array})) "
            f"RETURNING member_user_id, member_group_id"
        )
        change_params = [group.pk, user_param, group_param]
    bump = (
        f"UPDATE {groups} SET version = version + 1, last_modified = %s "
        f"WHERE id = %s AND EXISTS (SELECT 1 FROM changed) RETURNING version"
    )
    verb = "added" if add else "removed"
    user_type, group_type = ChangeEvent.ObjectType.USER.value, ChangeEvent.ObjectType.GROUP.value
    parts: list[bulk_sql.Part] = [
        *found,
        ("changed", change, change_params),
        ("bumped", bump, [now, group.pk]),
        (
            "events",
            *bulk_sql.insert_per_row(
                event,
                source="bumped, changed",
                computed={
                    "version": "bumped.version",
                    "member_type": f"CASE WHEN changed.member_user_id IS NULL "
                    f"THEN '{group_type}' ELSE '{user_type}' END",
                    "member_id": "coalesce(changed.member_user_id, changed.member_group_id)",
                },
            ),
        ),
        (
            "audit",
            *bulk_sql.insert_per_row(
                audit,
                source="bumped",
                # As _record_membership lists them: a key only for a kind of member that changed.
                computed={
                    "changes": f"jsonb_strip_nulls(jsonb_build_object("
                    f"'users_{verb}', (SELECT jsonb_agg(member_user_id::text) FROM changed "
                    f"WHERE member_user_id IS NOT NULL), "
                    f"'groups_{verb}', (SELECT jsonb_agg(member_group_id::text) FROM changed "
                    f"WHERE member_group_id IS NOT NULL)))"
                },
            ),
        ),
    ]
    # The group's own row as this statement's snapshot sees it: before the bump, or
    # nothing when the group is gone.
    ((changed, bumped, current, users_found),) = bulk_sql.run_together(
        parts,
        f"SELECT ARRAY(SELECT coalesce(member_user_id, member_group_id) FROM changed), "
        f"(SELECT version FROM bumped), (SELECT version FROM {groups} WHERE id = %s), "
        f"{'(SELECT users FROM found)' if add else 'NULL'}",
        [group.pk],
    )
    return MembersRecorded(
        changed=[_to_uuid(member) for member in changed],
        version=bumped if bumped is not None else current,
        exists=current is not None,
        all_users=not add or users_found == len(user_ids),
    )
