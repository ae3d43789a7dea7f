"""The deletion guard: disables and deletes beyond a target's thresholds wait for an operator."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from directory import services as directory
from provisioning import queue, relay
from provisioning.guard import DeletionGuard, Held, held_approve, held_reject, usage
from provisioning.models import (
    Delivery,
    DeliveryAttempt,
    GuardGrant,
    TargetAssignment,
    TargetLink,
)
from provisioning.services import target_full_sync, target_scope_update
from tests.provisioning.downstream import InProcessScim
from tests.provisioning.helpers import run_all

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    ids: list[int] = []
    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: ids.extend(delivery_ids))
    return ids


@pytest.fixture
def downstream():
    return InProcessScim()


def provisioned(actor, target_factory, downstream, count, **guard):
    """An assigned target for the group "Staff" with `count` members, all provisioned."""
    target = target_factory(scope="assigned", deletion_policy="disable", **guard)
    staff = directory.group_create(actor=actor, display_name="Staff")
    TargetAssignment.objects.create(target=target, group=staff)
    target_scope_update(target=target)
    users = [directory.user_create(actor=actor, user_name=f"u{n}@example.com") for n in range(count)]
    directory.membership_add(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users])
    run_all(downstream.connection())
    assert TargetLink.objects.filter(target=target, object_type="user").count() == count
    return target, staff, users


def remote_active(downstream, user) -> bool:
    return downstream.get(f"Users/{TargetLink.objects.get(object_id=user.pk).remote_id}")["active"]


def held(target):
    return Delivery.objects.filter(target=target, state="held")


def test_disables_beyond_the_hourly_count_are_held_with_the_reason(actor, target_factory, downstream, sent):
    target, staff, users = provisioned(actor, target_factory, downstream, 5, guard_hour_max_count=3)
    directory.membership_remove(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users])
    log = run_all(downstream.connection())

    leaves = [entry for entry in log if entry.object_type == "user"]
    assert sorted(entry.outcome for entry in leaves) == ["held", "held", "success", "success", "success"]
    assert sum(not remote_active(downstream, u) for u in users) == 3  # the boundary: 3 go, the 4th waits
    [first, second] = held(target).order_by("id")
    assert first.last_error.startswith("held by the deletion guard: disable of u")
    assert "4 disables/deletes in the last hour would exceed the limit of 3" in first.last_error
    entry = DeliveryAttempt.objects.get(delivery=first)
    assert (entry.action, entry.outcome, entry.error) == ("disable", "held", first.last_error)
    assert [r["method"] for r in entry.requests] == []  # nothing was sent for it
    assert GuardGrant.objects.filter(target=target).count() == 3
    assert usage(target).hour == 3


def test_the_hourly_window_rolls_and_held_operations_stay_held(actor, target_factory, downstream, sent):
    target, staff, users = provisioned(actor, target_factory, downstream, 4, guard_hour_max_count=2)
    directory.membership_remove(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users[:3]])
    run_all(downstream.connection())
    assert held(target).count() == 1

    # 59 minutes later both grants still count: the next leaver is held too.
    GuardGrant.objects.update(created=timezone.now() - timedelta(minutes=59))
    directory.membership_remove(actor=actor, group_id=staff.pk, user_ids=[users[3].pk])
    run_all(downstream.connection())
    assert held(target).count() == 2

    # Past the hour they no longer count; what is held still waits for an operator.
    GuardGrant.objects.update(created=timezone.now() - timedelta(minutes=61))
    assert usage(target).hour == 0
    run_all(downstream.connection())
    assert held(target).count() == 2
    approved = held_approve(operator="alice", delivery_ids=[held(target).first().pk])
    assert approved == 1
    run_all(downstream.connection())
    assert held(target).count() == 1


def test_a_percentage_of_the_population_limits_per_hour(actor, target_factory, downstream, sent):
    # 10 users and the group are linked: 11 objects; 20% of 11 is 2.2, so 2 pass and the 3rd is held.
    target, staff, users = provisioned(actor, target_factory, downstream, 10, guard_hour_max_percent=20)
    directory.membership_remove(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users[:4]])
    run_all(downstream.connection())
    assert GuardGrant.objects.filter(target=target).count() == 2
    reasons = list(held(target).values_list("last_error", flat=True))
    assert len(reasons) == 2
    assert (
        "3 disables/deletes in the last hour (27.3% of 11 objects) would exceed the limit of 20%"
        in reasons[0]
    )


def test_each_full_sync_run_has_its_own_count(actor, target_factory, downstream, sent):
    target, _, users = provisioned(actor, target_factory, downstream, 3, guard_run_max_count=1)
    run_a, run_b = uuid.uuid4(), uuid.uuid4()
    deliveries = [
        Delivery.objects.create(target=target, object_type="user", object_id=u.pk, run_id=run)
        for u, run in zip(users, (run_a, run_a, run_b), strict=True)
    ]
    guards = [DeletionGuard(delivery) for delivery in deliveries]
    allow = {"target": target, "object_type": "user", "action": "delete"}

    guards[0].allow(object_id=users[0].pk, label="u0", **allow)
    with pytest.raises(Held, match="2 disables/deletes in this full sync run would exceed the limit of 1"):
        guards[1].allow(object_id=users[1].pk, label="u1", **allow)
    guards[2].allow(object_id=users[2].pk, label="u2", **allow)  # another run
    # A retry of an allowed operation is not counted again.
    guards[0].allow(object_id=users[0].pk, label="u0", **allow)
    assert (usage(target, run_id=run_a).run, usage(target, run_id=run_b).run, usage(target).hour) == (1, 1, 2)


def test_approving_one_releases_that_one_and_approving_all_releases_the_rest(
    actor, target_factory, downstream, sent, django_capture_on_commit_callbacks
):
    target, staff, users = provisioned(actor, target_factory, downstream, 4, guard_hour_max_count=1)
    directory.membership_remove(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users])
    run_all(downstream.connection())
    waiting = list(held(target).order_by("id"))
    assert len(waiting) == 3

    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert held_approve(operator="alice", delivery_ids=[waiting[0].pk]) == 1
    assert sent == [waiting[0].pk]
    released = Delivery.objects.get(pk=waiting[0].pk)
    assert (released.state, released.guard_approved_by) == ("queued", "alice")
    [entry] = run_all(downstream.connection())
    assert (entry.object_id, entry.action, entry.outcome) == (waiting[0].object_id, "disable", "success")
    assert GuardGrant.objects.get(delivery=waiting[0]).approved_by == "alice"
    assert held(target).count() == 2

    with django_capture_on_commit_callbacks(execute=True):
        assert held_approve(operator="bob", target=target) == 2
    log = run_all(downstream.connection())
    assert sorted(e.outcome for e in log) == ["success", "success"]
    assert not held(target).exists()
    assert not any(remote_active(downstream, u) for u in users)


def test_rejecting_keeps_the_object_as_it_is_and_drops_the_delivery(actor, target_factory, downstream, sent):
    target, staff, users = provisioned(actor, target_factory, downstream, 2, guard_hour_max_count=1)
    directory.membership_remove(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users])
    run_all(downstream.connection())
    [waiting] = held(target)
    user = next(u for u in users if u.pk == waiting.object_id)

    assert held_reject(operator="alice", delivery_ids=[waiting.pk]) == 1
    waiting.refresh_from_db()
    assert (waiting.state, waiting.last_error) == (
        "superseded",
        "rejected by alice: left as it is downstream",
    )
    assert remote_active(downstream, user) is True
    assert TargetLink.objects.filter(object_id=user.pk).exists()
    entry = DeliveryAttempt.objects.filter(delivery=waiting).latest("id")
    assert (entry.action, entry.outcome, entry.error) == (
        "skip",
        "skipped",
        "held disable/delete rejected by alice",
    )
    assert run_all(downstream.connection()) == []


def test_a_newer_change_wakes_a_held_delivery(
    actor, target_factory, downstream, sent, django_capture_on_commit_callbacks
):
    target, staff, users = provisioned(actor, target_factory, downstream, 2, guard_hour_max_count=1)
    directory.membership_remove(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users])
    run_all(downstream.connection())
    [waiting] = held(target)

    # Back in the group: the held disable must not swallow this change.
    directory.membership_add(actor=actor, group_id=staff.pk, user_ids=[waiting.object_id])
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        relay.relay_change_events()
    woken = Delivery.objects.get(pk=waiting.pk)
    assert woken.state == "queued"
    assert waiting.pk in sent
    log = run_all(downstream.connection())
    entry = next(e for e in log if e.object_id == waiting.object_id)
    assert (entry.outcome, entry.in_scope) == ("success", True)
    assert not held(target).exists()


def test_without_thresholds_nothing_is_held_but_grants_are_counted(actor, target_factory, downstream, sent):
    target, staff, users = provisioned(actor, target_factory, downstream, 3)
    directory.membership_remove(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users])
    run_all(downstream.connection())
    assert not held(target).exists()
    assert usage(target).hour == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_at_the_threshold_cannot_both_pass(actor, target_factory):
    target = target_factory(guard_hour_max_count=1)
    deliveries = [
        Delivery.objects.create(target=target, object_type="user", object_id=uuid.uuid4()) for _ in range(2)
    ]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def worker(delivery: Delivery) -> None:
        try:
            barrier.wait(10)
            DeletionGuard(delivery).allow(
                target=target, object_type="user", object_id=delivery.object_id, action="delete", label="x"
            )
            outcomes.append("allowed")
        except Held:
            outcomes.append("held")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(d,)) for d in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(outcomes) == ["allowed", "held"]
    assert GuardGrant.objects.filter(target=target).count() == 1


def test_a_full_sync_run_settles_leavers_missed_while_disabled_within_its_run_limit(
    actor, target_factory, downstream, sent
):
    target, staff, users = provisioned(actor, target_factory, downstream, 3, guard_run_max_count=1)
    target.enabled = False
    target.save()
    directory.membership_remove(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users])
    run_all(downstream.connection())  # the relay skips a disabled target: nothing happens downstream
    assert all(remote_active(downstream, u) for u in users)

    target.enabled = True
    target.save()
    plan = target_full_sync(target=target)
    assert (plan.users, plan.groups, plan.leaving) == (0, 1, 3)
    leavers = Delivery.objects.filter(target=target, priority=Delivery.Priority.LEAVER, state="queued")
    assert set(leavers.values_list("run_id", flat=True)) == {plan.run_id}
    run_all(downstream.connection())
    assert sum(not remote_active(downstream, u) for u in users) == 1
    reasons = list(held(target).values_list("last_error", flat=True))
    assert len(reasons) == 2
    assert "2 disables/deletes in this full sync run would exceed the limit of 1" in reasons[0]

    # The next run is counted on its own, but held deliveries wait for an operator, not for a new run.
    target_full_sync(target=target)
    run_all(downstream.connection())
    assert held(target).count() == 2


def test_deactivations_in_the_directory_count_as_disables(actor, target_factory, downstream, sent):
    target, staff, users = provisioned(actor, target_factory, downstream, 4, guard_hour_max_count=2)
    for user in users:
        directory.user_deactivate(actor=actor, user_id=user.pk)
    log = run_all(downstream.connection())

    disables = [entry for entry in log if entry.object_type == "user"]
    assert sorted(entry.outcome for entry in disables) == ["held", "held", "success", "success"]
    assert {entry.action for entry in disables} == {"disable"}
    assert sum(not remote_active(downstream, u) for u in users) == 2
    assert held(target).count() == 2
    held_approve(operator="alice", delivery_ids=list(held(target).values_list("pk", flat=True)))
    run_all(downstream.connection())
    assert not any(remote_active(downstream, u) for u in users)
    # Re-activating is not a disable: never held.
    directory.user_activate(actor=actor, user_id=users[0].pk)
    run_all(downstream.connection())
    assert remote_active(downstream, users[0])
