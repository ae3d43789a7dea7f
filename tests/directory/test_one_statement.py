"""Writes sent as one statement (PostgreSQL, outside a caller's transaction; see bulk_sql).

These tests run outside a test transaction (transactional_db), as a web request
does: inside one the services keep their savepointed, locked path. Each write is
checked twice: it is one statement, and it leaves exactly the rows (object, values,
change events, audit entry) that the locked path leaves for the same change.
"""

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from directory import services
from directory.actors import Actor
from directory.exceptions import InvalidValue, ObjectNotFound, UniquenessConflict, VersionMismatch
from directory.models import AuditEntry, ChangeEvent, Group, Membership, User, UserValue

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.operator(id=7, name="one-statement")


def _records(object_id: uuid.UUID) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The change events and audit entries of an object, without ids and timestamps."""
    events = ChangeEvent.objects.filter(object_id=object_id).order_by("id")
    audit = AuditEntry.objects.filter(object_id=object_id).order_by("id")
    return (
        sorted(events.values_list("object_type", "kind", "version", "member_type", "member_id", "processed")),
        [
            (
                a.actor_type,
                a.actor_id,
                a.actor_name,
                a.action,
                a.object_type,
                a.object_repr,
                _sorted(a.changes),
            )
            for a in audit
        ],
    )


def _sorted(changes: dict[str, Any]) -> dict[str, Any]:
    # Member lists come back in no particular order from the set-based statement.
    return {
        key: sorted(value) if key.endswith(("_added", "_removed")) else value
        for key, value in changes.items()
    }


def _both_ways(write: Callable[[str], uuid.UUID]) -> tuple[Any, Any]:
    """Run `write` once as one statement and once through the locked path; their records."""
    with CaptureQueriesContext(connection) as captured:
        fast = write("fast")
    with transaction.atomic():  # inside a transaction the services take the locked path
        locked = write("locked")
    return (captured, _records(fast)), _records(locked)


def _renamed(records: Any, name: str) -> Any:
    return repr(records).replace(name, "NAME")


def test_user_create_is_one_statement_with_the_same_records() -> None:
    def create(tag: str) -> uuid.UUID:
        return services.user_create(
            actor=ACTOR,
            user_name=f"{tag}@example.com",
            display_name=tag,
            title="Engineer",
            values={
                "emails": [
                    {"value": f"{tag}@example.com", "type": "work", "primary": True},
                    {"value": f"{tag}.home@example.com", "display": 'Zoë "Home" \\ ✓', "type": "home"},
                ],
                "addresses": [{"type": "work", "address": {"locality": "Zürich", "postalCode": "8001"}}],
            },
        ).pk

    (captured, fast), locked = _both_ways(create)
    assert len(captured) == 1, [q["sql"] for q in captured]
    assert _renamed(fast, "fast") == _renamed(locked, "locked")
    assert fast[0] == [("user", "created", 1, "", None, None)]
    user = User.objects.get(user_name="fast@example.com")
    assert (user.title, user.version) == ("Engineer", 1)
    columns = ("kind", "position", "value", "display", "type", "primary", "address")
    values = list(UserValue.objects.filter(user=user).order_by("kind", "position").values_list(*columns))
    assert values[1] == ("emails", 0, "fast@example.com", "", "work", True, {})
    assert values[2][3] == 'Zoë "Home" \\ ✓'
    assert _renamed(values, "fast") == _renamed(
        list(
            UserValue.objects.filter(user__user_name="locked@example.com")
            .order_by("kind", "position")
            .values_list(*columns)
        ),
        "locked",
    )


def test_user_create_without_values_is_one_statement() -> None:
    with CaptureQueriesContext(connection) as captured:
        user = services.user_create(actor=ACTOR, user_name="bare@example.com")
    assert len(captured) == 1, [q["sql"] for q in captured]
    assert not UserValue.objects.filter(user=user).exists()
    assert ChangeEvent.objects.filter(object_id=user.pk, kind="created").count() == 1


def test_a_taken_user_name_is_a_conflict_and_writes_nothing() -> None:
    services.user_create(actor=ACTOR, user_name="taken@example.com")
    before = (
        User.objects.count(),
        UserValue.objects.count(),
        ChangeEvent.objects.count(),
        AuditEntry.objects.count(),
    )
    with pytest.raises(UniquenessConflict):
        services.user_create(
            actor=ACTOR, user_name="TAKEN@example.com", values={"emails": [{"value": "x@example.com"}]}
        )
    after = (
        User.objects.count(),
        UserValue.objects.count(),
        ChangeEvent.objects.count(),
        AuditEntry.objects.count(),
    )
    assert after == before


def test_user_update_with_the_read_user_is_one_statement_with_the_same_records() -> None:
    def update(tag: str) -> uuid.UUID:
        user = services.user_create(actor=ACTOR, user_name=f"u-{tag}@example.com", title="Before")
        read = User.objects.get(pk=user.pk)
        with CaptureQueriesContext(connection) as captured:
            written = services.user_update(
                actor=ACTOR,
                user_id=user.pk,
                expected_version=read.version,
                read=read,
                title="After",
                active=False,
            )
        if tag == "fast":
            assert len(captured) == 1, [q["sql"] for q in captured]
        assert written.version == 2
        assert read.version == 1, "the caller's instance is left as it was read"
        return user.pk

    (_, fast), locked = _both_ways(update)
    assert _renamed(fast, "fast") == _renamed(locked, "locked")
    assert ("user", "deactivated", 2, "", None, None) in fast[0]
    assert fast[1][-1][3] == "deactivate"
    assert User.objects.get(user_name="u-fast@example.com").title == "After"


def test_a_user_changed_since_it_was_read_is_a_version_mismatch_and_writes_nothing() -> None:
    user = services.user_create(actor=ACTOR, user_name="raced@example.com")
    read = User.objects.get(pk=user.pk)
    services.user_update(actor=ACTOR, user_id=user.pk, title="Someone else's")
    records = _records(user.pk)
    with pytest.raises(VersionMismatch):
        services.user_update(
            actor=ACTOR, user_id=user.pk, expected_version=read.version, read=read, title="Mine"
        )
    assert User.objects.get(pk=user.pk).title == "Someone else's"
    assert _records(user.pk) == records


def test_a_user_deleted_since_it_was_read_is_a_version_mismatch() -> None:
    user = services.user_create(actor=ACTOR, user_name="gone@example.com")
    read = User.objects.get(pk=user.pk)
    services.user_delete(actor=ACTOR, user_id=user.pk)
    with pytest.raises(VersionMismatch):
        services.user_update(
            actor=ACTOR, user_id=user.pk, expected_version=read.version, read=read, title="x"
        )
    assert not ChangeEvent.objects.filter(object_id=user.pk, kind="updated").exists()


def test_renaming_to_a_taken_user_name_writes_nothing() -> None:
    services.user_create(actor=ACTOR, user_name="first@example.com")
    second = services.user_create(actor=ACTOR, user_name="second@example.com")
    read = User.objects.get(pk=second.pk)
    records = _records(second.pk)
    with pytest.raises(UniquenessConflict):
        services.user_update(
            actor=ACTOR, user_id=second.pk, expected_version=1, read=read, user_name="First@example.com"
        )
    assert User.objects.get(pk=second.pk).user_name == "second@example.com"
    assert _records(second.pk) == records


def test_a_read_that_is_not_at_the_expected_version_is_refused() -> None:
    user = services.user_create(actor=ACTOR, user_name="wrong@example.com")
    read = User.objects.get(pk=user.pk)
    with pytest.raises(ValueError, match="expected_version"):
        services.user_update(actor=ACTOR, user_id=user.pk, expected_version=5, read=read, title="x")


def test_replacing_values_takes_the_locked_path_and_still_lands() -> None:
    user = services.user_create(actor=ACTOR, user_name="values@example.com")
    read = User.objects.get(pk=user.pk)
    with CaptureQueriesContext(connection) as captured:
        services.user_update(
            actor=ACTOR,
            user_id=user.pk,
            expected_version=1,
            read=read,
            values={"emails": [{"value": "new@example.com"}]},
        )
    assert len(captured) > 1  # BEGIN, the lock, the values, COMMIT...
    assert list(UserValue.objects.filter(user=user).values_list("value", flat=True)) == ["new@example.com"]


# --- memberships -----------------------------------------------------------------------


def _people(tag: str, count: int) -> list[uuid.UUID]:
    return [services.user_create(actor=ACTOR, user_name=f"{tag}-{n}@example.com").pk for n in range(count)]


def test_adding_users_is_one_statement_with_the_same_records() -> None:
    def add(tag: str) -> uuid.UUID:
        group = services.group_create(actor=ACTOR, display_name=f"Team {tag}")
        people = _people(tag, 3)
        read = Group.objects.get(pk=group.pk)
        with CaptureQueriesContext(connection) as captured:
            added = services.membership_add(actor=ACTOR, group_id=group.pk, user_ids=people, read=read)
        if tag == "fast":
            assert len(captured) == 1, [q["sql"] for q in captured]
        assert added == services.MembershipChange(count=3, version=2)
        # Adding them again changes nothing: no version bump, no record.
        assert services.membership_add(actor=ACTOR, group_id=group.pk, user_ids=people[:2], read=read) == (
            services.MembershipChange(count=0, version=2)
        )
        return group.pk

    (_, fast), locked = _both_ways(add)
    fast_events, locked_events = fast[0], locked[0]
    assert [event[:4] for event in fast_events] == [event[:4] for event in locked_events]
    assert [event[:4] for event in fast_events if event[1] == "member_added"] == [
        ("group", "member_added", 2, "user")
    ] * 3
    assert [entry[:6] for entry in fast[1]] == [
        (*entry[:5], entry[5].replace("locked", "fast")) for entry in [e[:6] for e in locked[1]]
    ]
    assert len(fast[1][-1][6]["users_added"]) == 3
    assert Group.objects.get(display_name="Team fast").version == 2


def test_adding_an_id_that_is_no_user_adds_nobody() -> None:
    group = services.group_create(actor=ACTOR, display_name="Strict")
    people = _people("strict", 2)
    read = Group.objects.get(pk=group.pk)
    with pytest.raises(InvalidValue):
        services.membership_add(actor=ACTOR, group_id=group.pk, user_ids=[*people, uuid.uuid4()], read=read)
    assert not Membership.objects.filter(group=group).exists()
    assert Group.objects.get(pk=group.pk).version == 1
    assert not ChangeEvent.objects.filter(object_id=group.pk, kind="member_added").exists()


def test_members_without_a_type_that_are_users_are_added_in_one_statement() -> None:
    group = services.group_create(actor=ACTOR, display_name="Untyped")
    people = _people("untyped", 2)
    read = Group.objects.get(pk=group.pk)
    with CaptureQueriesContext(connection) as captured:
        added = services.membership_add(
            actor=ACTOR, group_id=group.pk, user_ids=people[:1], member_ids=people[1:], read=read
        )
    assert len(captured) == 1, [q["sql"] for q in captured]
    assert added == services.MembershipChange(count=2, version=2)
    assert set(Membership.objects.filter(group=group).values_list("member_user_id", flat=True)) == set(people)
    assert set(
        ChangeEvent.objects.filter(object_id=group.pk, kind="member_added").values_list(
            "member_type", "version"
        )
    ) == {("user", 2)}


def test_a_member_without_a_type_that_is_a_group_is_nested() -> None:
    group = services.group_create(actor=ACTOR, display_name="Outer")
    child = services.group_create(actor=ACTOR, display_name="Inner")
    people = _people("nested", 1)
    read = Group.objects.get(pk=group.pk)
    added = services.membership_add(
        actor=ACTOR, group_id=group.pk, member_ids=[people[0], child.pk], read=read
    )
    assert added == services.MembershipChange(count=2, version=2)
    assert set(Membership.objects.filter(group=group).values_list("member_user_id", "member_group_id")) == {
        (people[0], None),
        (None, child.pk),
    }
    assert set(
        ChangeEvent.objects.filter(object_id=group.pk, kind="member_added").values_list(
            "member_type", "member_id"
        )
    ) == {("user", people[0]), ("group", child.pk)}


def test_a_member_without_a_type_that_is_nothing_adds_nobody() -> None:
    group = services.group_create(actor=ACTOR, display_name="Nobody")
    people = _people("nobody", 1)
    ghost = uuid.uuid4()
    read = Group.objects.get(pk=group.pk)
    with pytest.raises(InvalidValue, match=f"No such member\\(s\\): {ghost}"):
        services.membership_add(actor=ACTOR, group_id=group.pk, member_ids=[people[0], ghost], read=read)
    assert not Membership.objects.filter(group=group).exists()
    assert Group.objects.get(pk=group.pk).version == 1
    assert not ChangeEvent.objects.filter(object_id=group.pk, kind="member_added").exists()


def test_removing_users_and_groups_is_one_statement_with_typed_events() -> None:
    group = services.group_create(actor=ACTOR, display_name="Parent")
    child = services.group_create(actor=ACTOR, display_name="Child")
    people = _people("removed", 2)
    services.membership_add(actor=ACTOR, group_id=group.pk, user_ids=people, group_ids=[child.pk])
    read = Group.objects.get(pk=group.pk)
    with CaptureQueriesContext(connection) as captured:
        # As a SCIM PATCH remove sends them: untyped ids, tried as both kinds.
        ids = [people[0], child.pk, uuid.uuid4()]
        removed = services.membership_remove(
            actor=ACTOR, group_id=group.pk, user_ids=ids, group_ids=ids, read=read
        )
    assert len(captured) == 1
    assert removed.count == 2
    assert set(Membership.objects.filter(group=group).values_list("member_user_id", flat=True)) == {people[1]}
    version = Group.objects.get(pk=group.pk).version
    assert removed.version == version
    events = set(
        ChangeEvent.objects.filter(object_id=group.pk, kind="member_removed").values_list(
            "version", "member_type", "member_id"
        )
    )
    assert events == {(version, "user", people[0]), (version, "group", child.pk)}
    entry = AuditEntry.objects.filter(object_id=group.pk).latest("id")
    assert (entry.action, entry.changes) == (
        "member_remove",
        {"users_removed": [str(people[0])], "groups_removed": [str(child.pk)]},
    )


def test_members_of_a_group_deleted_since_it_was_read_are_not_found() -> None:
    group = services.group_create(actor=ACTOR, display_name="Doomed")
    people = _people("doomed", 1)
    read = Group.objects.get(pk=group.pk)
    services.group_delete(actor=ACTOR, group_id=group.pk)
    with pytest.raises(ObjectNotFound):
        services.membership_add(actor=ACTOR, group_id=group.pk, user_ids=people, read=read)
    with pytest.raises(ObjectNotFound):
        services.membership_remove(actor=ACTOR, group_id=group.pk, user_ids=people, read=read)
    assert not Membership.objects.exists()
