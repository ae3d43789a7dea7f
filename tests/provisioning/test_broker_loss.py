"""Recovery after Redis goes away: a real redis-server of the test's own is killed and started again.

- The broker marker says, once, that the broker lost its tasks; the sweeper then sends every due
  queued delivery again at once, not REENQUEUE_AFTER_SECONDS later.
- The pacer answers "wait" while Redis is down (no exception that would strand a leased batch),
  and works again, from empty state, once Redis is back.
- A cache outage does not undo a batch's record: the circuit is left as it is for that batch.
"""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
import redis
from django.utils import timezone

from directory import services as directory
from provisioning import broker, pacing, queue, relay
from provisioning.clients import ScimConnection
from provisioning.models import Delivery, Target
from provisioning.pacing import UNAVAILABLE_WAIT, LocalPacer, RedisPacer
from provisioning.services import deliveries_send, deliveries_sweep
from tests.provisioning.private_redis import PrivateRedis, free_port

pytestmark = pytest.mark.redis


@pytest.fixture
def sent(monkeypatch) -> list[tuple[list[int], float | None]]:  # type: ignore[no-untyped-def]
    calls: list[tuple[list[int], float | None]] = []
    monkeypatch.setattr(queue, "send", lambda ids, countdown=None: calls.append((list(ids), countdown)))
    return calls


def sent_ids(calls: list[tuple[list[int], float | None]]) -> list[int]:
    return sorted(pk for ids, _ in calls for pk in ids)


def closed_port_url() -> str:
    """A loopback port nothing listens on: every connection is refused at once."""
    return f"redis://127.0.0.1:{free_port()}/0"


# --- the broker marker -----------------------------------------------------------------------


def test_the_marker_says_once_that_the_broker_lost_its_tasks(private_redis: PrivateRedis) -> None:
    assert broker.broker_lost_tasks(private_redis.url), "a new broker holds no task either"
    assert not broker.broker_lost_tasks(private_redis.url)
    assert not broker.broker_lost_tasks(private_redis.url)

    private_redis.kill()
    started = time.monotonic()
    assert not broker.broker_lost_tasks(private_redis.url), "unreachable: nothing can be sent to it anyway"
    assert time.monotonic() - started < broker.TIMEOUT + 1
    private_redis.start()

    assert broker.broker_lost_tasks(private_redis.url), "back empty: every task in it went"
    assert not broker.broker_lost_tasks(private_redis.url)
    # A flush (an operator, a failover to an empty replica) is a loss too.
    redis.Redis.from_url(private_redis.url).flushdb()
    assert broker.broker_lost_tasks(private_redis.url)


def test_a_broker_that_is_not_redis_keeps_its_tasks() -> None:
    assert not broker.broker_lost_tasks("filesystem://")


def test_each_deployment_sharing_a_broker_has_its_marker(private_redis: PrivateRedis, settings) -> None:  # type: ignore[no-untyped-def]
    settings.CELERY_TASK_DEFAULT_QUEUE = "one.celery"
    assert broker.broker_lost_tasks(private_redis.url)
    settings.CELERY_TASK_DEFAULT_QUEUE = "two.celery"
    assert broker.broker_lost_tasks(private_redis.url)
    assert not broker.broker_lost_tasks(private_redis.url)


# --- the sweeper after a broker loss -----------------------------------------------------------


@pytest.mark.django_db
def test_after_a_broker_loss_the_sweeper_resends_every_due_delivery_at_once(
    actor, target_factory, private_redis: PrivateRedis, monkeypatch, sent
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(broker, "broker_url", lambda: private_redis.url)
    target = target_factory()
    users = [directory.user_create(actor=actor, user_name=f"u{n}@example.com") for n in range(7)]
    relay.relay_change_events()
    paused = target_factory(paused=True)
    now = timezone.now()
    rows = [Delivery.objects.get(object_id=user.pk) for user in users]
    just_sent, also_just_sent, many, more, retry_due, retry_later, paused_one = rows
    Delivery.objects.filter(pk__in=[r.pk for r in rows]).update(enqueued_at=now)
    Delivery.objects.filter(pk=retry_due.pk).update(next_attempt_at=now - timedelta(seconds=1))
    Delivery.objects.filter(pk=retry_later.pk).update(next_attempt_at=now + timedelta(minutes=5))
    Delivery.objects.filter(pk=paused_one.pk).update(target=paused)
    Delivery.objects.filter(pk=more.pk).update(priority=Delivery.Priority.LEAVER)
    broker.broker_lost_tasks(private_redis.url)  # the broker as it was while these were sent

    # Nothing lost: every task was sent a moment ago, so the sweeper leaves them alone.
    assert deliveries_sweep(limit=2) == 0

    private_redis.kill()
    private_redis.start()
    assert deliveries_sweep(limit=2) == 5, "all of them, a page at a time, not `limit` per sweep"
    assert sent_ids(sent) == sorted([just_sent.pk, also_just_sent.pk, many.pk, more.pk, retry_due.pk])
    assert sent[0][0] == [more.pk], "the leavers' lane first"
    assert Delivery.objects.get(pk=retry_later.pk).next_attempt_at > now, "its turn comes; the sweep sends it"
    assert target.pk != paused.pk

    sent.clear()
    assert deliveries_sweep(limit=2) == 0, "once: they were just sent again"
    assert sent == []


# --- the pacer across a Redis restart ------------------------------------------------------------


def test_the_pacer_waits_while_redis_is_down_and_starts_afresh_when_it_is_back(
    private_redis: PrivateRedis,
) -> None:
    shared = RedisPacer(redis.Redis.from_url(private_redis.url, socket_connect_timeout=1))
    held = shared.acquire("t", limit=1, lease_seconds=60)
    assert held.acquired
    assert not shared.acquire("t", limit=1, lease_seconds=60).acquired
    assert shared.reserve("t", rate=1, burst=1) == 0.0
    shared.block("t", 30)

    private_redis.kill()
    # No exception (a batch that raised here would stay leased): "wait a moment" instead.
    assert shared.reserve("t", rate=1, burst=1) == UNAVAILABLE_WAIT
    assert shared.reserve("t", rate=0, burst=1) == UNAVAILABLE_WAIT
    refused = shared.acquire("t", limit=1, lease_seconds=60)
    assert (refused.acquired, refused.wait) == (False, UNAVAILABLE_WAIT)
    assert held.token is not None
    shared.release("t", held.token)
    shared.block("t", 30)

    private_redis.start()
    # Scripts load again by themselves; the slot, the rate used and the block went with the restart.
    assert shared.acquire("t", limit=1, lease_seconds=60).acquired
    assert shared.reserve("t", rate=1, burst=1) == 0.0
    assert 0.9 < shared.reserve("t", rate=1, burst=1) <= 1.0


@pytest.mark.django_db
def test_a_batch_meeting_a_dead_pacer_is_put_back_untouched(actor, target_factory, monkeypatch, sent) -> None:  # type: ignore[no-untyped-def]
    dead = RedisPacer(redis.Redis.from_url(closed_port_url(), socket_connect_timeout=1))
    monkeypatch.setattr(pacing, "pacer", lambda: dead)
    target = target_factory()
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    relay.relay_change_events()
    delivery = Delivery.objects.get(object_id=ada.pk)

    assert deliveries_send(delivery_ids=[delivery.pk], target_id=target.pk) == []

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.lease_until) == ("queued", 0, None)
    [(ids, countdown)] = sent
    assert ids == [delivery.pk]
    assert countdown is not None
    assert 0 < countdown <= UNAVAILABLE_WAIT


@pytest.mark.django_db
def test_a_cache_outage_leaves_the_circuit_alone_and_records_the_batch(
    actor, target_factory, monkeypatch, settings, sent
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(pacing, "pacer", LocalPacer)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": closed_port_url(),
            "OPTIONS": {"socket_connect_timeout": 1},
        }
    }
    target = target_factory()
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    relay.relay_change_events()
    delivery = Delivery.objects.get(object_id=ada.pk)
    unavailable = ScimConnection(
        base_url="http://down.test/v2", transport=httpx.MockTransport(lambda request: httpx.Response(503))
    )

    [entry] = deliveries_send(delivery_ids=[delivery.pk], target_id=target.pk, connection=unavailable)

    delivery.refresh_from_db()
    assert (entry.outcome, entry.status) == ("retry", 503)
    assert (delivery.state, delivery.failures, delivery.lease_until) == ("queued", 1, None)
    assert Target.objects.get(pk=target.pk).circuit_state == Target.CircuitState.HEALTHY
