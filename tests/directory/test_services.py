import json
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from directory import services
from directory.exceptions import (
    InvalidValue,
    MembershipCycle,
    ObjectNotFound,
    UniquenessConflict,
    VersionMismatch,
)
from directory.models import AuditEntry, ChangeEvent, Group, Membership, User, UserValue

pytestmark = pytest.mark.django_db


def _events(obj: User | Group) -> list[tuple[str, int]]:
    return list(ChangeEvent.objects.filter(object_id=obj.pk).order_by("id").values_list("kind", "version"))


def _counts() -> tuple[int, int, int, int, int]:
    return (
        User.objects.count(),
        Group.objects.count(),
        Membership.objects.count(),
        ChangeEvent.objects.count(),
        AuditEntry.objects.count(),
    )


# --- users ---------------------------------------------------------------------------


def test_user_create_writes_values_one_event_and_one_audit_entry(actor):
    user = services.user_create(
        actor=actor,
        user_name="Ada@Example.com",
        given_name="Ada",
        family_name="Lovelace",
        department="Research",
        password="a long secret passphrase",
        values={
            "emails": [
                {"value": "ada@example.com", "type": "work", "primary": True},
                {"value": "ada@home.example", "type": "home"},
            ],
            "addresses": [{"type": "work", "address": {"locality": "London", "country": "GB"}}],
        },
    )

    user.refresh_from_db()
    assert user.version == 1
    assert list(user.values.filter(kind="emails").values_list("value", "type", "primary", "position")) == [
        ("ada@example.com", "work", True, 0),
        ("ada@home.example", "home", False, 1),
    ]
    assert user.values.get(kind="addresses").address == {"locality": "London", "country": "GB"}
    assert _events(user) == [("created", 1)]
    entry = AuditEntry.objects.get(object_id=user.pk)
    assert (entry.actor_type, entry.actor_name, entry.action) == ("operator", "alice-operator", "create")
    assert entry.changes["department"] == [None, "Research"]
    assert entry.changes["password"] == [None, services.REDACTED]


def test_users_create_many_writes_each_user_as_user_create_would(actor):
    services.user_create(actor=actor, user_name="taken@example.com")
    results = services.users_create_many(
        actor=actor,
        users=[
            services.NewUser(
                "ada@example.com",
                "a long secret passphrase",
                {
                    "emails": [
                        {"value": "ada@example.com", "type": "work", "primary": True},
                        {"value": "ada@home.example", "type": "home"},
                    ],
                    "addresses": [{"type": "work", "address": {"locality": "London", "country": "GB"}}],
                },
                {
                    "given_name": "Ada",
                    "department": "Research",
                    "extensions": {"urn:x:hr:1.0:User": {"b": "1"}},
                },
            ),
            services.NewUser("TAKEN@example.com"),
            services.NewUser("grace@example.com", attributes={"active": "yes"}),
            services.NewUser("Grace@Example.com"),
        ],
    )

    ada, taken, bad, grace = results
    assert isinstance(taken, UniquenessConflict)
    assert isinstance(bad, InvalidValue)
    assert isinstance(ada, User)
    assert isinstance(grace, User)
    stored = User.objects.get(pk=ada.pk)
    assert (stored.given_name, stored.department, stored.version) == ("Ada", "Research", 1)
    assert stored.extensions == {"urn:x:hr:1.0:User": {"b": "1"}}
    assert stored.password.startswith("argon2$")
    assert stored.created == ada.created
    assert list(stored.values.filter(kind="emails").values_list("value", "type", "primary", "position")) == [
        ("ada@example.com", "work", True, 0),
        ("ada@home.example", "home", False, 1),
    ]
    assert stored.values.get(kind="addresses").address == {"locality": "London", "country": "GB"}
    assert _events(ada) == [("created", 1)]
    assert _events(grace) == [("created", 1)]
    entry = AuditEntry.objects.get(object_id=ada.pk)
    assert (entry.actor_type, entry.actor_name, entry.action) == ("operator", "alice-operator", "create")
    assert entry.changes["department"] == [None, "Research"]
    assert entry.changes["password"] == [None, services.REDACTED]
    assert User.objects.filter(user_name__iexact="grace@example.com").count() == 1


def test_users_create_many_that_loses_a_race_on_a_user_name_writes_nothing(actor, monkeypatch):
    services.user_create(actor=actor, user_name="raced@example.com")
    before = _counts()
    # The name was free when checked, and taken before the insert: the unique index decides.
    monkeypatch.setattr(services, "_taken_user_names", lambda names: set())

    with pytest.raises(UniquenessConflict):
        services.users_create_many(
            actor=actor,
            users=[
                services.NewUser("new@example.com", values={"emails": [{"value": "n@x.com"}]}),
                services.NewUser("RACED@example.com"),
            ],
        )

    assert _counts() == before
    assert not UserValue.objects.filter(value="n@x.com").exists()


def _twins(actor, prefix: str, count: int) -> list[User]:
    manager = services.user_create(actor=actor, user_name=f"{prefix}-boss@example.com")
    return [
        services.user_create(
            actor=actor,
            user_name=f"{prefix}{n}@example.com",
            department="Engineering",
            title="Engineer",
            manager_id=manager.pk if n % 2 else None,
            values={
                "emails": [{"value": f"{prefix}{n}@example.com", "type": "work", "primary": True}],
                "phoneNumbers": [{"value": f"+1 555 {n}", "type": "work"}],
            },
        )
        for n in range(count)
    ]


def _change_sets(users: list[User], boss: uuid.UUID) -> list[dict]:
    """A mover (columns and values), a leaver, a manager change, a no-op and an extension change."""
    return [
        {
            "changes": {"department": "Sales", "title": "Seller"},
            "values": {"emails": [{"value": "moved@example.com", "type": "work", "primary": True}]},
        },
        {"changes": {"active": False}},
        {"changes": {"manager_id": boss}},
        {
            "changes": {"department": "Engineering"},
            "values": {"phoneNumbers": [{"value": "+1 555 3", "type": "work"}]},
        },
        {"changes": {"extensions": {"urn:x:hr:1.0:User": {"b": "2"}}}},
    ]


def _state(user_id: uuid.UUID, prefix: str = "") -> tuple:
    """What a write leaves of a user (its prefix replaced, so that twins compare equal)."""
    user = User.objects.get(pk=user_id)
    values = list(
        user.values.order_by("kind", "position").values_list("kind", "position", "value", "type", "primary")
    )
    events = list(ChangeEvent.objects.filter(object_id=user_id).order_by("id").values_list("kind", "version"))
    audit = [
        (
            entry.action,
            json.dumps({k: v for k, v in entry.changes.items() if k != "manager_id"}).replace(prefix, "P"),
            entry.actor_name,
        )
        for entry in AuditEntry.objects.filter(object_id=user_id).order_by("id")
    ]
    columns = (
        user.department,
        user.title,
        user.active,
        user.extensions,
        user.version,
        user.manager_id is None,
    )
    return columns, [v[:1] + v[2:] if v[0] != "emails" else v[:1] + v[3:] for v in values], events, audit


def test_users_update_many_writes_what_user_update_writes_for_each_user(actor):
    singles, batched = _twins(actor, "single", 5), _twins(actor, "batched", 5)
    boss = services.user_create(actor=actor, user_name="other-boss@example.com")
    for user, spec in zip(singles, _change_sets(singles, boss.pk), strict=True):
        services.user_update(actor=actor, user_id=user.pk, values=spec.get("values"), **spec["changes"])

    results = services.users_update_many(
        actor=actor,
        updates=[
            services.UserChange(
                user_id=user.pk, expected_version=1, values=spec.get("values"), changes=spec["changes"]
            )
            for user, spec in zip(batched, _change_sets(batched, boss.pk), strict=True)
        ],
    )

    assert [result.version for result in results] == [2, 2, 2, 1, 2]
    for single, batch in zip(singles, batched, strict=True):
        assert _state(single.pk, "single") == _state(batch.pk, "batched")
    assert _events(batched[1])[-1] == ("deactivated", 2)
    assert _events(batched[3]) == [("created", 1)]  # nothing differed: nothing written
    assert User.objects.get(pk=batched[2].pk).manager_id == boss.pk


def test_users_update_many_leaves_out_the_items_that_fail_a_check(actor):
    users = _twins(actor, "check", 3)
    before = [_state(user.pk) for user in users]

    results = services.users_update_many(
        actor=actor,
        updates=[
            services.UserChange(user_id=users[0].pk, expected_version=7, changes={"title": "x"}),
            services.UserChange(user_id=users[1].pk, changes={"manager_id": uuid.uuid4()}),
            services.UserChange(user_id=users[2].pk, changes={"manager_id": users[2].pk}),
            services.UserChange(user_id=users[2].pk, changes={"title": "twice"}),
            services.UserChange(user_id=uuid.uuid4(), changes={"title": "nobody"}),
            services.UserChange(user_id=users[0].pk, changes={"colour": "blue"}),
        ],
    )

    assert [type(result) for result in results] == [
        VersionMismatch,
        InvalidValue,
        InvalidValue,
        InvalidValue,
        ObjectNotFound,
        InvalidValue,
    ]
    assert [_state(user.pk) for user in users] == before


# Set-based on PostgreSQL (one UPDATE from unnest arrays); SQLite has no arrays and saves each user.
@pytest.mark.postgres
def test_users_update_many_costs_the_same_statements_for_3_or_30_users(actor):
    def statements(users: list[User]) -> int:
        with CaptureQueriesContext(connection) as captured:
            services.users_update_many(
                actor=actor,
                updates=[
                    services.UserChange(
                        user_id=user.pk,
                        changes={"department": "Sales"},
                        values={"emails": [{"value": f"new-{user.pk}@example.com", "type": "work"}]},
                    )
                    for user in users
                ],
            )
        return len(captured.captured_queries)

    assert statements(_twins(actor, "few", 3)) == statements(_twins(actor, "many", 30))


def test_users_update_many_that_loses_a_race_on_a_user_name_writes_nothing(actor):
    users = _twins(actor, "race", 2)
    before = (_counts(), [_state(user.pk) for user in users])

    with pytest.raises(UniquenessConflict):
        services.users_update_many(
            actor=actor,
            updates=[
                services.UserChange(user_id=users[0].pk, changes={"title": "kept?"}),
                # The index decides: no query looks for a taken userName first, as in user_update.
                services.UserChange(user_id=users[1].pk, changes={"user_name": "RACE0@example.com"}),
            ],
        )

    assert (_counts(), [_state(user.pk) for user in users]) == before


def test_user_password_is_hashed_with_argon2_and_never_in_the_audit_trail(actor):
    user = services.user_create(actor=actor, user_name="pw", password="s3cret-Passphrase!")
    services.user_update(actor=actor, user_id=user.pk, password="an0ther-Passphrase!")

    user.refresh_from_db()
    assert user.password.startswith("argon2$")
    trail = json.dumps(list(AuditEntry.objects.values_list("changes", flat=True)))
    assert "s3cret" not in trail
    assert "an0ther" not in trail
    assert "argon2" not in trail


def test_user_create_rejects_a_case_variant_of_an_existing_user_name_and_writes_nothing(actor):
    services.user_create(actor=actor, user_name="bjensen@example.com")
    before = _counts()

    with pytest.raises(UniquenessConflict, match="'BJensen@Example.com' is already taken"):
        services.user_create(actor=actor, user_name="BJensen@Example.com")

    assert _counts() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"favourite_colour": "blue"}, "Unknown User attribute"),
        ({"active": "yes"}, "active must be a boolean"),
        ({"title": "x" * 300}, "title is longer than 255"),
        ({"manager_id": uuid.uuid4()}, "does not exist"),
        ({"manager_id": "not-a-uuid"}, "manager must be a user id"),
        (
            {"values": {"emails": [{"value": "a@x", "primary": True}, {"value": "b@x", "primary": True}]}},
            "one of emails",
        ),
        ({"values": {"pets": [{"value": "cat"}]}}, "Unknown multi-valued attribute 'pets'"),
        ({"values": {"emails": [{"value": "a@x", "colour": "red"}]}}, "Unknown emails sub- attribute"),
        ({"values": {"emails": [{"type": "work"}]}}, "needs a value"),
    ],
)
def test_user_create_rejects_bad_input_and_writes_nothing(actor, kwargs, message):
    before = _counts()
    with pytest.raises(InvalidValue, match=message):
        services.user_create(actor=actor, user_name="bad-input", **kwargs)
    assert _counts() == before


def test_user_create_requires_a_user_name(actor):
    with pytest.raises(InvalidValue, match="userName is required"):
        services.user_create(actor=actor, user_name="  ")


def test_user_update_bumps_version_and_records_the_diff(actor, user_factory):
    user = user_factory(title="Engineer", department="R&D")

    updated = services.user_update(actor=actor, user_id=user.pk, title="Staff engineer", department="R&D")

    assert updated.version == 2
    assert User.objects.get(pk=user.pk).title == "Staff engineer"
    assert _events(user) == [("updated", 2)]
    entry = AuditEntry.objects.get(object_id=user.pk)
    assert entry.changes == {"title": ["Engineer", "Staff engineer"]}


def test_user_update_that_changes_nothing_writes_nothing(actor, user_factory):
    user = user_factory(title="Engineer")
    before = _counts()

    same = services.user_update(actor=actor, user_id=user.pk, title="Engineer", values={"emails": []})

    assert same.version == 1
    assert _counts() == before


def test_user_update_replaces_only_the_multi_valued_attributes_given(actor):
    user = services.user_create(
        actor=actor,
        user_name="vals",
        values={"emails": [{"value": "old@example.com"}], "phoneNumbers": [{"value": "+1 555 0100"}]},
    )

    services.user_update(actor=actor, user_id=user.pk, values={"emails": [{"value": "new@example.com"}]})

    assert sorted(UserValue.objects.filter(user=user).values_list("kind", "value")) == [
        ("emails", "new@example.com"),
        ("phoneNumbers", "+1 555 0100"),
    ]
    assert (
        AuditEntry.objects.filter(action="update").get().changes["emails"][1][0]["value"] == "new@example.com"
    )


def test_user_update_with_a_stale_version_raises_and_changes_nothing(actor, user_factory):
    user = user_factory(title="Engineer")
    services.user_update(actor=actor, user_id=user.pk, title="Manager")

    with pytest.raises(VersionMismatch, match="is at version 2, not 1") as caught:
        services.user_update(actor=actor, user_id=user.pk, expected_version=1, title="Director")

    assert caught.value.current_version == 2
    assert User.objects.get(pk=user.pk).title == "Manager"


def test_user_update_of_an_unknown_user_raises_object_not_found(actor):
    with pytest.raises(ObjectNotFound, match="not found"):
        services.user_update(actor=actor, user_id=uuid.uuid4(), title="x")


def test_user_update_to_a_taken_user_name_raises_uniqueness_conflict(actor, user_factory):
    user_factory(user_name="taken@example.com")
    user = user_factory(user_name="free@example.com")

    with pytest.raises(UniquenessConflict, match="already taken"):
        services.user_update(actor=actor, user_id=user.pk, user_name="TAKEN@example.com")


def test_user_can_rename_to_a_case_variant_of_its_own_name(actor, user_factory):
    user = user_factory(user_name="case@example.com")
    services.user_update(actor=actor, user_id=user.pk, user_name="Case@Example.com")
    assert User.objects.get(pk=user.pk).user_name == "Case@Example.com"


def test_deactivate_and_activate_record_their_own_event_kinds(actor, user_factory):
    user = user_factory()

    services.user_deactivate(actor=actor, user_id=user.pk)
    services.user_deactivate(actor=actor, user_id=user.pk)  # already inactive: nothing new
    services.user_activate(actor=actor, user_id=user.pk)

    assert _events(user) == [("deactivated", 2), ("activated", 3)]
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "deactivate",
        "activate",
    ]


def test_user_cannot_manage_themselves(actor, user_factory):
    user = user_factory()
    with pytest.raises(InvalidValue, match="own manager"):
        services.user_update(actor=actor, user_id=user.pk, manager_id=user.pk)


def test_user_delete_cascades_and_stales_the_groups_and_reports(actor, user_factory, group_factory):
    manager = user_factory()
    report = user_factory(manager=manager)
    group = group_factory()
    services.membership_add(actor=actor, group_id=group.pk, user_ids=[manager.pk])
    group_version = Group.objects.get(pk=group.pk).version

    services.user_delete(actor=actor, user_id=manager.pk)

    assert not User.objects.filter(pk=manager.pk).exists()
    assert not Membership.objects.filter(group=group).exists()
    assert Group.objects.get(pk=group.pk).version == group_version + 1
    report.refresh_from_db()
    assert report.manager is None
    assert report.version == 2
    assert _events(report) == [("updated", 2)]
    assert _events(manager)[-1] == ("deleted", 2)
    with pytest.raises(ObjectNotFound):
        services.user_delete(actor=actor, user_id=manager.pk)


# --- groups ---------------------------------------------------------------------------


def test_group_create_with_members_records_created_and_member_added(actor, user_factory):
    alice, bob = user_factory(), user_factory()

    group = services.group_create(actor=actor, display_name="Engineers", member_user_ids=[alice.pk, bob.pk])

    assert set(Membership.objects.filter(group=group).values_list("member_user_id", flat=True)) == {
        alice.pk,
        bob.pk,
    }
    kinds = list(ChangeEvent.objects.filter(object_id=group.pk).values_list("kind", "member_id"))
    assert kinds[0] == ("created", None)
    assert sorted(kinds[1:], key=str) == sorted(
        [("member_added", alice.pk), ("member_added", bob.pk)], key=str
    )


def test_group_display_name_is_unique_case_insensitively(actor):
    services.group_create(actor=actor, display_name="Sales")
    with pytest.raises(UniquenessConflict, match="'SALES' is already taken"):
        services.group_create(actor=actor, display_name="SALES")


def test_microsoft_365_group_is_mail_enabled(actor):
    group = services.group_create(
        actor=actor, display_name="Project X", kind="unified", mail_nickname="projectx"
    )
    assert group.mail_enabled is True
    with pytest.raises(InvalidValue, match="always mail-enabled"):
        services.group_update(actor=actor, group_id=group.pk, mail_enabled=False)


def test_group_update_and_delete(actor, group_factory):
    parent, child = group_factory(), group_factory()
    services.membership_add(actor=actor, group_id=parent.pk, group_ids=[child.pk])

    services.group_update(actor=actor, group_id=child.pk, description="The child")
    services.group_delete(actor=actor, group_id=child.pk)

    assert not Group.objects.filter(pk=child.pk).exists()
    assert not Membership.objects.filter(group=parent).exists()
    assert Group.objects.get(pk=parent.pk).version == 3  # nested, then lost its member
    assert [kind for kind, _ in _events(child)] == ["updated", "deleted"]


# --- memberships ---------------------------------------------------------------------


def test_membership_add_is_idempotent(actor, user_factory, group_factory):
    user, group = user_factory(), group_factory()

    assert services.membership_add(actor=actor, group_id=group.pk, user_ids=[user.pk, user.pk]).count == 1
    before = _counts()
    assert services.membership_add(actor=actor, group_id=group.pk, user_ids=[user.pk]) == (
        services.MembershipChange(count=0, version=2)
    )

    assert _counts() == before
    assert Group.objects.get(pk=group.pk).version == 2


def test_membership_add_many_records_one_event_per_member_and_one_version_bump(
    actor, user_factory, group_factory
):
    users, group = user_factory.create_batch(5), group_factory()

    added = services.membership_add(actor=actor, group_id=group.pk, user_ids=[u.pk for u in users])

    assert added == services.MembershipChange(count=5, version=2)
    assert Group.objects.get(pk=group.pk).version == 2
    events = ChangeEvent.objects.filter(object_id=group.pk, kind="member_added")
    assert {event.member_id for event in events} == {u.pk for u in users}
    assert {event.version for event in events} == {2}
    entry = AuditEntry.objects.get(object_id=group.pk)
    assert entry.action == "member_add"
    assert sorted(entry.changes["users_added"]) == sorted(str(u.pk) for u in users)


def test_membership_add_of_an_unknown_member_changes_nothing(actor, user_factory, group_factory):
    user, group = user_factory(), group_factory()
    ghost = uuid.uuid4()
    before = _counts()

    with pytest.raises(InvalidValue, match=f"No such member\\(s\\): {ghost}"):
        services.membership_add(actor=actor, group_id=group.pk, user_ids=[user.pk, ghost])

    assert _counts() == before


def test_membership_remove_removes_only_the_listed_members(actor, user_factory, group_factory):
    keep, drop, stranger = user_factory(), user_factory(), user_factory()
    group = group_factory()
    services.membership_add(actor=actor, group_id=group.pk, user_ids=[keep.pk, drop.pk])

    assert (
        services.membership_remove(actor=actor, group_id=group.pk, user_ids=[drop.pk, stranger.pk]).count == 1
    )
    assert services.membership_remove(actor=actor, group_id=group.pk, user_ids=[drop.pk]).count == 0

    assert list(Membership.objects.filter(group=group).values_list("member_user_id", flat=True)) == [keep.pk]
    assert list(ChangeEvent.objects.filter(kind="member_removed").values_list("member_id", flat=True)) == [
        drop.pk
    ]


def test_nested_groups_cannot_form_a_cycle(actor, group_factory):
    a, b, c = group_factory(), group_factory(), group_factory()
    services.membership_add(actor=actor, group_id=a.pk, group_ids=[b.pk])
    services.membership_add(actor=actor, group_id=b.pk, group_ids=[c.pk])

    with pytest.raises(MembershipCycle, match="would make it contain itself"):
        services.membership_add(actor=actor, group_id=c.pk, group_ids=[a.pk])
    with pytest.raises(MembershipCycle, match="would make it contain itself"):
        services.membership_add(actor=actor, group_id=a.pk, group_ids=[a.pk])

    assert Membership.objects.count() == 2


def _membership_add_queries(actor, group_factory, user_factory, group_size: int) -> int:
    group = group_factory()
    Membership.objects.bulk_create(
        [Membership(group=group, member_user=user) for user in user_factory.create_batch(group_size)]
    )
    newcomer = user_factory()
    with CaptureQueriesContext(connection) as queries:
        assert services.membership_add(actor=actor, group_id=group.pk, user_ids=[newcomer.pk]).count == 1
    return len(queries)


def test_membership_add_costs_the_same_queries_whatever_the_group_size(actor, group_factory, user_factory):
    small = _membership_add_queries(actor, group_factory, user_factory, 3)
    large = _membership_add_queries(actor, group_factory, user_factory, 300)
    assert small == large
    assert large <= 8


def test_membership_remove_costs_the_same_queries_whatever_the_group_size(actor, group_factory, user_factory):
    counts = []
    for size in (3, 300):
        group = group_factory()
        users = user_factory.create_batch(size)
        Membership.objects.bulk_create([Membership(group=group, member_user=user) for user in users])
        with CaptureQueriesContext(connection) as queries:
            services.membership_remove(actor=actor, group_id=group.pk, user_ids=[users[0].pk])
        counts.append(len(queries))
    assert counts[0] == counts[1] <= 8


def test_change_events_purge_deletes_only_old_processed_events(actor, user_factory):
    from datetime import timedelta

    from django.utils import timezone

    user = user_factory()
    old = ChangeEvent.objects.create(
        object_type="user",
        object_id=user.pk,
        kind="updated",
        version=1,
        processed=timezone.now() - timedelta(days=40),
    )
    recent = ChangeEvent.objects.create(
        object_type="user",
        object_id=user.pk,
        kind="updated",
        version=2,
        processed=timezone.now() - timedelta(days=1),
    )
    pending = ChangeEvent.objects.create(object_type="user", object_id=user.pk, kind="updated", version=3)

    assert services.change_events_purge(older_than_days=30) == 1
    assert set(ChangeEvent.objects.values_list("pk", flat=True)) == {recent.pk, pending.pk}
    assert not ChangeEvent.objects.filter(pk=old.pk).exists()
