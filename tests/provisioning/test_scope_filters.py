"""Attribute scoping filters in the stored scope: every change that moves an object in or out is delivered."""

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from directory import services as directory
from provisioning import queue, relay
from provisioning.configuration import scoping_change_preview, target_scoping_update
from provisioning.models import Delivery, ScopeExclusion, TargetAssignment, TargetLink, TargetScope
from provisioning.scope import scope_refresh
from provisioning.services import target_scope_update
from tests.provisioning.downstream import InProcessScim
from tests.provisioning.helpers import run_all

pytestmark = pytest.mark.django_db

SALES_ONLY = [[{"attribute": "department", "operator": "EQUALS", "value": "Sales"}]]


@pytest.fixture
def sent(monkeypatch):
    ids: list[int] = []
    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: ids.extend(delivery_ids))
    return ids


def scope_of(target):
    return set(TargetScope.objects.filter(target=target).values_list("object_type", "object_id"))


def excluded(target):
    return dict(ScopeExclusion.objects.filter(target=target).values_list("object_id", "reason"))


def active_delivery(target, object_id):
    return Delivery.objects.filter(
        target=target, object_id=object_id, state__in=["queued", "running"]
    ).first()


@pytest.fixture
def sales_target(actor, target_factory, sent):
    """An assigned target for the group "Staff" that only takes users of the Sales department."""
    target = target_factory(scope="assigned", deletion_policy="disable", user_scoping_filters=SALES_ONLY)
    staff = directory.group_create(actor=actor, display_name="Staff")
    TargetAssignment.objects.create(target=target, group=staff)
    target_scope_update(target=target)
    return target, staff


def test_assigned_members_that_fail_the_filter_are_stored_as_excluded_with_the_reason(actor, sales_target):
    target, staff = sales_target
    ada = directory.user_create(actor=actor, user_name="ada@example.com", department="Sales")
    bob = directory.user_create(actor=actor, user_name="bob@example.com", department="HR")
    directory.membership_add(actor=actor, group_id=staff.pk, user_ids=[ada.pk, bob.pk])
    relay.relay_change_events()

    assert scope_of(target) == {("group", staff.pk), ("user", ada.pk)}
    assert excluded(target) == {
        bob.pk: "out of scope: filter 1: department EQUALS \"Sales\" is false (value 'HR')"
    }
    assert active_delivery(target, ada.pk) is not None
    assert active_delivery(target, bob.pk) is None


def test_an_attribute_change_moves_a_user_in_and_out_with_deliveries_at_once(actor, sales_target):
    target, staff = sales_target
    ada = directory.user_create(actor=actor, user_name="ada@example.com", department="Sales")
    bob = directory.user_create(actor=actor, user_name="bob@example.com", department="HR")
    directory.membership_add(actor=actor, group_id=staff.pk, user_ids=[ada.pk, bob.pk])
    downstream = InProcessScim()
    run_all(downstream.connection())
    [remote_group] = downstream.get("Groups")["Resources"]
    ada_remote = TargetLink.objects.get(object_id=ada.pk).remote_id
    assert [m["value"] for m in downstream.get(f"Groups/{remote_group['id']}")["members"]] == [ada_remote]

    directory.user_update(actor=actor, user_id=ada.pk, department="HR")
    directory.user_update(actor=actor, user_id=bob.pk, department="sales")  # EQUALS ignores case
    relay.relay_change_events()

    assert scope_of(target) == {("group", staff.pk), ("user", bob.pk)}
    assert set(excluded(target)) == {ada.pk}
    assert active_delivery(target, ada.pk).priority == Delivery.Priority.LEAVER
    assert active_delivery(target, bob.pk).priority == Delivery.Priority.CHANGE
    # The group they are members of is queued too: its member list downstream changes with them.
    assert active_delivery(target, staff.pk) is not None

    log = {entry.object_id: entry for entry in run_all(downstream.connection())}
    assert (log[ada.pk].action, log[ada.pk].in_scope) == ("disable", False)
    assert (
        log[ada.pk].scope_reason
        == "out of scope: filter 1: department EQUALS \"Sales\" is false (value 'HR')"
    )
    assert (log[bob.pk].action, log[bob.pk].in_scope) == ("create", True)
    assert log[bob.pk].scope_reason == "assigned, or a member of an assigned group; scoping filter 1 matched"
    assert downstream.get(f"Users/{ada_remote}")["active"] is False
    bob_remote = TargetLink.objects.get(object_id=bob.pk).remote_id
    members = [m["value"] for m in downstream.get(f"Groups/{remote_group['id']}").get("members", [])]
    assert members == [bob_remote]


def test_a_membership_change_evaluates_only_the_new_candidates(
    actor, sales_target, django_assert_num_queries
):
    target, staff = sales_target
    users = [
        directory.user_create(
            actor=actor, user_name=f"u{n}@example.com", department="Sales" if n % 2 else "HR"
        )
        for n in range(6)
    ]
    directory.membership_add(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users[:4]])
    relay.relay_change_events()
    assert len(scope_of(target)) == 1 + 2
    assert len(excluded(target)) == 2

    directory.membership_add(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users[4:]])
    # Insert (unfiltered groups), delete leavers, drop stale exclusions, find new candidates, load the
    # 2 new users and their values, store one in scope and one excluded.
    with django_assert_num_queries(8):
        change = scope_refresh(target=target)
    assert change.entered == {("user", users[5].pk)}
    assert set(excluded(target)) == {users[0].pk, users[2].pk, users[4].pk}

    directory.membership_remove(actor=actor, group_id=staff.pk, user_ids=[users[4].pk, users[5].pk])
    change = scope_refresh(target=target)
    assert change.left == {("user", users[5].pk)}
    assert set(excluded(target)) == {users[0].pk, users[2].pk}


def test_scope_all_with_a_filter_stores_its_scope_and_follows_creates_updates_and_deletes(
    actor, target_factory, sent
):
    employees = [[{"attribute": "userType", "operator": "EQUALS", "value": "Employee"}]]
    target = target_factory(scope="all", deletion_policy="delete", user_scoping_filters=employees)
    downstream = InProcessScim()
    ada = directory.user_create(actor=actor, user_name="ada@example.com", user_type="Employee")
    cid = directory.user_create(actor=actor, user_name="cid@example.com", user_type="Contractor")
    group = directory.group_create(actor=actor, display_name="Everyone")
    log = {entry.object_id: entry for entry in run_all(downstream.connection())}

    assert set(log) == {ada.pk, group.pk}  # the contractor is never sent
    assert scope_of(target) == {("user", ada.pk)}  # groups have no filter: not stored
    assert set(excluded(target)) == {cid.pk}

    directory.user_update(actor=actor, user_id=cid.pk, user_type="employee")
    [entry] = run_all(downstream.connection())
    assert (entry.object_id, entry.action) == (cid.pk, "create")

    directory.user_update(actor=actor, user_id=ada.pk, user_type="Intern")
    [entry] = run_all(downstream.connection())
    assert (entry.object_id, entry.action, entry.in_scope) == (ada.pk, "delete", False)
    assert "userType EQUALS \"Employee\" is false (value 'Intern')" in entry.scope_reason

    directory.user_delete(actor=actor, user_id=cid.pk)
    [entry] = run_all(downstream.connection())
    assert (entry.object_id, entry.action) == (cid.pk, "delete")
    assert scope_of(target) == set()
    assert downstream.get("Users")["totalResults"] == 0


def test_new_filters_are_previewed_then_saved_with_enter_and_leave_deliveries(actor, target_factory, sent):
    target = target_factory(scope="all")
    sales = [
        directory.user_create(actor=actor, user_name=f"s{n}@example.com", department="Sales")
        for n in range(3)
    ]
    others = [
        directory.user_create(actor=actor, user_name=f"o{n}@example.com", department="HR") for n in range(4)
    ]
    run_all(InProcessScim().connection())

    preview = scoping_change_preview(
        target=target, object_type="user", filters_data=SALES_ONLY, samples=2, page_size=3
    )
    assert (preview.evaluated, preview.entering, preview.leaving) == (7, 0, 4)
    assert len(preview.leaving_samples) == 2
    assert {s.object_id for s in preview.leaving_samples} <= {u.pk for u in others}
    assert preview.leaving_samples[0].reason.startswith("out of scope: filter 1: department EQUALS")
    assert not Delivery.objects.filter(state="queued").exists()  # a preview writes nothing

    change = target_scoping_update(target=target, user_filters=SALES_ONLY, group_filters=[])
    assert change.left == {("user", u.pk) for u in others}
    assert scope_of(target) == {("user", u.pk) for u in sales}
    leavers = Delivery.objects.filter(target=target, state="queued", priority=Delivery.Priority.LEAVER)
    assert set(leavers.values_list("object_id", flat=True)) == {u.pk for u in others}

    # Widening the filters again: the preview says who comes back, and saving brings them in.
    wider = [*SALES_ONLY, [{"attribute": "department", "operator": "EQUALS", "value": "HR"}]]
    preview = scoping_change_preview(target=target, object_type="user", filters_data=wider)
    assert (preview.entering, preview.leaving) == (4, 0)
    assert target_scoping_update(target=target, user_filters=[], group_filters=[]).entered == {
        ("user", u.pk) for u in others
    }
    assert scope_of(target) == set()
    assert excluded(target) == {}


def test_removing_the_filters_of_an_assigned_target_lets_the_excluded_members_in(actor, sales_target):
    target, staff = sales_target
    bob = directory.user_create(actor=actor, user_name="bob@example.com", department="HR")
    directory.membership_add(actor=actor, group_id=staff.pk, user_ids=[bob.pk])
    relay.relay_change_events()
    assert set(excluded(target)) == {bob.pk}

    change = target_scoping_update(target=target, user_filters=[], group_filters=[])
    assert change.entered == {("user", bob.pk)}
    assert ("user", bob.pk) in scope_of(target)
    assert excluded(target) == {}


def test_group_filters_apply_to_groups_and_not_to_their_members(actor, target_factory, sent):
    only_apps = [[{"attribute": "displayName", "operator": "REGEX MATCH", "value": "^App "}]]
    target = target_factory(scope="assigned", group_scoping_filters=only_apps)
    parent = directory.group_create(actor=actor, display_name="Everyone")
    app = directory.group_create(actor=actor, display_name="App users")
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    directory.membership_add(actor=actor, group_id=parent.pk, group_ids=[app.pk], user_ids=[ada.pk])
    TargetAssignment.objects.create(target=target, group=parent)
    scope_refresh(target=target)
    assert scope_of(target) == {("group", app.pk), ("user", ada.pk)}
    assert set(excluded(target)) == {parent.pk}


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"attribute": "department"}, "must be a list of filters"),
        ([[{"attribute": "department", "operator": "LIKE", "value": "x"}]], "unknown operator 'LIKE'"),
        (
            [[{"attribute": "shoeSize", "operator": "EQUALS", "value": "9"}]],
            "a user has no attribute 'shoeSize'",
        ),
        (
            [[{"attribute": "department", "operator": "REGEX MATCH", "value": "("}]],
            "invalid regular expression",
        ),
    ],
)
def test_bad_filters_are_refused_when_saved(target_factory, filters, message):
    target = target_factory()
    target.user_scoping_filters = filters
    with pytest.raises(ValidationError, match=message) as raised:
        target.full_clean()
    assert "user_scoping_filters" in raised.value.message_dict
    with pytest.raises(ValidationError, match=message):
        target_scoping_update(target=target, user_filters=filters, group_filters=[])


@pytest.mark.postgres  # on SQLite the relay's upsert itself is a statement per delivery
def test_the_relay_re_decides_a_batch_of_changed_objects_in_a_fixed_number_of_queries(
    actor, target_factory, sent
):
    target = target_factory(scope="all", user_scoping_filters=SALES_ONLY)
    counts = []
    for size in (4, 40):
        users = [
            directory.user_create(actor=actor, user_name=f"b{size}-{n}@example.com", department="Sales")
            for n in range(size)
        ]
        relay.relay_change_events()
        # Every other one leaves, the others stay (their department changes case, EQUALS ignores it).
        leavers = {u.pk for u in users[1::2]}
        for user in users:
            directory.user_update(
                actor=actor, user_id=user.pk, department="HR" if user.pk in leavers else "SALES"
            )
        with CaptureQueriesContext(connection) as queries:
            result = relay.relay_change_events()
        assert result.events == size
        counts.append(len(queries))
        assert {pk for kind, pk in scope_of(target)} & {u.pk for u in users} == {
            u.pk for u in users
        } - leavers
        assert leavers <= set(excluded(target))
        assert (
            set(
                Delivery.objects.filter(priority=Delivery.Priority.LEAVER).values_list("object_id", flat=True)
            )
            >= leavers
        )
    assert counts[0] == counts[1]
