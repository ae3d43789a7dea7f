"""The outbox relay: events in, one coalesced delivery per (target, object) out, sent only after commit."""

import threading
import uuid

import pytest
from django.db import connection, transaction

from directory import services as directory
from directory.models import ChangeEvent
from provisioning import queue, relay
from provisioning.models import Delivery, TargetAssignment, TargetScope
from provisioning.scope import scope_refresh


@pytest.fixture
def sent(monkeypatch):
    ids: list[int] = []
    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: ids.extend(delivery_ids))
    return ids


def active(target, object_type, object_id):
    return Delivery.objects.get(
        target=target, object_type=object_type, object_id=object_id, state__in=["queued", "running"]
    )


@pytest.mark.django_db
def test_a_burst_of_changes_to_one_user_becomes_one_delivery_sent_after_commit(
    actor, target_factory, sent, django_capture_on_commit_callbacks
):
    target = target_factory()
    user = directory.user_create(actor=actor, user_name="ada@example.com")
    directory.user_update(actor=actor, user_id=user.pk, title="Engineer")
    directory.user_update(actor=actor, user_id=user.pk, title="Lead")

    with django_capture_on_commit_callbacks() as callbacks:
        result = relay.relay_change_events()
        assert sent == []  # nothing leaves before the commit

    delivery = active(target, "user", user.pk)
    assert (result.events, result.deliveries, result.enqueued) == (3, 1, 1)
    assert len(callbacks) == 1
    callbacks[0]()
    assert sent == [delivery.pk]
    assert delivery.version == ChangeEvent.objects.latest("id").pk
    assert not ChangeEvent.objects.filter(processed__isnull=True).exists()


@pytest.mark.django_db
def test_a_later_event_folds_into_the_queued_delivery_and_is_sent_again_only_if_more_urgent(
    actor, target_factory, sent, django_capture_on_commit_callbacks
):
    target = target_factory()
    user = directory.user_create(actor=actor, user_name="ada@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        relay.relay_change_events()
    first = active(target, "user", user.pk)

    directory.user_deactivate(actor=actor, user_id=user.pk)
    with django_capture_on_commit_callbacks(execute=True):
        result = relay.relay_change_events()

    again = active(target, "user", user.pk)
    assert again.pk == first.pk
    assert again.version > first.version
    assert again.priority == Delivery.Priority.LEAVER
    # More urgent now: sent again, to the leaver lane (its first task waits in the change lane).
    assert result.enqueued == 1
    assert sent == [first.pk, first.pk]

    directory.user_update(actor=actor, user_id=user.pk, title="Countess")
    with django_capture_on_commit_callbacks(execute=True):
        result = relay.relay_change_events()
    assert active(target, "user", user.pk).pk == first.pk
    assert result.enqueued == 0, "no more urgent than before: its task is on its way"
    assert sent == [first.pk, first.pk]


@pytest.mark.django_db
def test_each_enabled_target_gets_its_own_delivery(
    actor, target_factory, sent, django_capture_on_commit_callbacks
):
    one, two = target_factory(), target_factory()
    target_factory(enabled=False)
    user = directory.user_create(actor=actor, user_name="ada@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        relay.relay_change_events()
    assert sorted(Delivery.objects.filter(object_id=user.pk).values_list("target_id", flat=True)) == [
        one.pk,
        two.pk,
    ]


@pytest.mark.django_db
def test_assigned_target_ignores_users_outside_its_scope(actor, target_factory, sent):
    target = target_factory(scope="assigned")
    directory.user_create(actor=actor, user_name="outsider@example.com")
    relay.relay_change_events()
    assert not Delivery.objects.filter(target=target).exists()


@pytest.mark.django_db
def test_membership_in_an_assigned_nested_group_moves_users_in_and_out_of_scope(actor, target_factory, sent):
    target = target_factory(scope="assigned")
    parent = directory.group_create(actor=actor, display_name="Engineering")
    child = directory.group_create(actor=actor, display_name="Platform")
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    TargetAssignment.objects.create(target=target, group=parent)
    scope_refresh(target=target)
    relay.relay_change_events()
    assert set(TargetScope.objects.filter(target=target).values_list("object_id", flat=True)) == {parent.pk}

    # Ada joins a group nested in the assigned one: she and that group enter scope.
    directory.membership_add(actor=actor, group_id=child.pk, user_ids=[ada.pk])
    directory.membership_add(actor=actor, group_id=parent.pk, group_ids=[child.pk])
    relay.relay_change_events()
    assert set(TargetScope.objects.filter(target=target).values_list("object_id", flat=True)) == {
        parent.pk,
        child.pk,
        ada.pk,
    }
    assert active(target, "user", ada.pk).priority == Delivery.Priority.CHANGE
    Delivery.objects.update(state="done")

    # The nested group is taken out: Ada leaves scope at once, in the leavers' lane.
    directory.membership_remove(actor=actor, group_id=parent.pk, group_ids=[child.pk])
    relay.relay_change_events()
    assert set(TargetScope.objects.filter(target=target).values_list("object_id", flat=True)) == {parent.pk}
    assert active(target, "user", ada.pk).priority == Delivery.Priority.LEAVER
    assert active(target, "group", child.pk).priority == Delivery.Priority.LEAVER
    assert active(target, "group", parent.pk)


@pytest.mark.django_db
def test_deleting_a_user_in_scope_queues_its_removal(actor, target_factory, sent):
    target = target_factory(scope="assigned")
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    TargetAssignment.objects.create(target=target, user=ada)
    scope_refresh(target=target)
    relay.relay_change_events()
    Delivery.objects.update(state="done")

    directory.user_delete(actor=actor, user_id=ada.pk)
    relay.relay_change_events()

    assert active(target, "user", ada.pk).priority == Delivery.Priority.LEAVER
    assert not TargetScope.objects.filter(target=target).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_relays_at_once_never_claim_the_same_event(actor, target_factory, sent):
    target = target_factory()
    users = [directory.user_create(actor=actor, user_name=f"u{n}@example.com") for n in range(3)]
    claimed, release = threading.Event(), threading.Event()
    first: dict[str, object] = {}

    def first_relay() -> None:
        try:
            with transaction.atomic():
                events = list(
                    ChangeEvent.objects.select_for_update(skip_locked=True).filter(processed__isnull=True)
                )
                first["claimed"] = len(events)
                claimed.set()
                release.wait(10)
                ChangeEvent.objects.filter(pk__in=[e.pk for e in events]).update(
                    processed="2024-01-01T00:00Z"
                )
        finally:
            connection.close()

    thread = threading.Thread(target=first_relay)
    thread.start()
    assert claimed.wait(10)
    try:
        second = relay.relay_change_events()
    finally:
        release.set()
        thread.join(10)

    assert first["claimed"] == 3
    assert second.events == 0
    assert not Delivery.objects.filter(target=target, object_id__in=[u.pk for u in users]).exists()
    assert relay.relay_change_events().events == 0


@pytest.mark.django_db
def test_deliveries_upsert_keeps_one_active_row_per_object(target_factory):
    target = target_factory()
    object_id = uuid.uuid4()
    key = (target.pk, "user", object_id)
    created = relay.deliveries_upsert({key: relay.Wanted(5, 2)})
    again = relay.deliveries_upsert({key: relay.Wanted(3, 0)})
    delivery = Delivery.objects.get(object_id=object_id)
    assert (len(created), again) == (1, [delivery.pk]), "more urgent: sent again in its lane"
    assert relay.deliveries_upsert({key: relay.Wanted(6, 0)}) == []
    delivery.refresh_from_db()
    assert (delivery.version, delivery.priority) == (6, 0)
