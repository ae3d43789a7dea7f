"""Deliveries in batches: a lookup per matching attribute, fixed queries, pacing, lanes, the circuit.

In process, against scim2-server (an independent SCIM implementation) behind httpx's WSGI
transport, or a MockTransport where a test needs a target that fails in a given way.
"""

from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from directory import services as directory
from provisioning import pacing, queue, relay
from provisioning.clients import ScimConnection
from provisioning.mapping import mapping_set_for
from provisioning.models import Delivery, DeliveryAttempt, Target, TargetLink
from provisioning.services import deliveries_send, failure_streak, pace_key
from tests.provisioning.downstream import InProcessScim

pytestmark = pytest.mark.django_db

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def sent(monkeypatch):
    calls: list[tuple[list[int], float | None]] = []
    monkeypatch.setattr(
        queue, "send", lambda delivery_ids, countdown=None: calls.append((list(delivery_ids), countdown))
    )
    return calls


def queued_ids(target: Target) -> list[int]:
    relay.relay_change_events()
    return list(
        Delivery.objects.filter(target=target, state="queued").order_by("pk").values_list("pk", flat=True)
    )


def users(actor, count: int, prefix: str = "u") -> list:  # type: ignore[no-untyped-def]
    return [directory.user_create(actor=actor, user_name=f"{prefix}{n}@example.com") for n in range(count)]


def test_a_batch_is_matched_with_one_lookup_per_attribute_and_adopts_what_exists(actor, target_factory, sent):
    downstream = InProcessScim()
    target = target_factory()
    people = users(actor, 5)
    existing = downstream.create("Users", {"schemas": [CORE_USER], "userName": "u2@example.com"})

    entries = deliveries_send(delivery_ids=queued_ids(target), connection=downstream.connection())

    methods = [method for method, _, _ in downstream.requests]
    # externalId for all five, then userName for the five not found: two lookups, not ten.
    assert methods.count("GET") == 2
    assert methods.count("POST") == 4
    assert methods.count("PATCH") == 1  # the adopted user gets every attribute written
    adopted = next(entry for entry in entries if entry.object_id == people[2].pk)
    assert (adopted.action, adopted.matched_attribute, adopted.remote_id) == (
        "adopt",
        "userName",
        existing["id"],
    )
    assert downstream.get("Users")["totalResults"] == 5
    assert TargetLink.objects.filter(target=target).count() == 5
    assert set(Delivery.objects.filter(target=target).values_list("state", flat=True)) == {"done"}


def test_a_target_refusing_or_filters_gets_one_lookup_per_object(actor, target_factory, sent):
    downstream = InProcessScim()
    inner = downstream.connection()
    refused: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if " or " in request.url.params.get("filter", ""):
            refused.append(request.url.params["filter"])
            return httpx.Response(400, json={"status": "400", "scimType": "invalidFilter"})
        return inner.transport.handle_request(request)

    target = target_factory()
    users(actor, 3)
    picky = ScimConnection(base_url=inner.base_url, auth=inner.auth, transport=httpx.MockTransport(handler))
    entries = deliveries_send(delivery_ids=queued_ids(target), connection=picky)

    assert len(refused) == 1
    assert [entry.outcome for entry in entries] == ["success"] * 3
    assert downstream.get("Users")["totalResults"] == 3
    # The target is remembered: the next batch asks object by object at once.
    users(actor, 2, prefix="more")
    refused.clear()
    deliveries_send(delivery_ids=queued_ids(target), connection=picky)
    assert refused == []


def test_a_batch_costs_the_same_queries_whatever_its_size(actor, target_factory, sent):
    downstream = InProcessScim()
    target = target_factory()
    mapping_set_for(target, "user")  # compiled once per process and mapping revision, not per batch
    counts = []
    for size in (3, 12):
        users(actor, size, prefix=f"size{size}-")
        ids = queued_ids(target)
        with CaptureQueriesContext(connection) as queries:
            entries = deliveries_send(delivery_ids=ids, connection=downstream.connection())
        assert len(entries) == size
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1], counts
    # Target, lane, lease (4), scope, users, values, links; then links, states (2), log rows (2 with
    # the savepoint), waiting groups: 18 here (a savepoint each for the lease and the record).
    assert counts[0] <= 18, counts


def counting(
    statuses: list[int] | None = None, headers: dict[str, str] | None = None
) -> tuple[ScimConnection, list]:
    """A target that answers lookups with nothing and creates with an id (or the given statuses, in turn)."""
    seen: list[httpx.Request] = []
    answers = list(statuses or [])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if answers:
            return httpx.Response(answers.pop(0), headers=headers or {})
        if request.method == "GET":
            return httpx.Response(200, json={"Resources": [], "totalResults": 0})
        return httpx.Response(201, json={"id": f"r{len(seen)}"})

    return ScimConnection(base_url="http://down.test/v2", transport=httpx.MockTransport(handler)), seen


def test_the_rate_limit_sends_the_burst_then_puts_the_rest_back_with_the_wait(actor, target_factory, sent):
    target = target_factory(rate_limit_rps=2, rate_limit_burst=4)
    users(actor, 6)
    ids = queued_ids(target)
    conn, seen = counting()
    before = timezone.now()

    entries = deliveries_send(delivery_ids=ids, connection=conn)

    # Two batch lookups and two creates fill the burst of 4; nobody sleeps for the fifth.
    assert [request.method for request in seen] == ["GET", "GET", "POST", "POST"]
    assert len(entries) == 2
    rest = Delivery.objects.filter(pk__in=ids, state="queued")
    assert rest.count() == 4
    assert {delivery.attempts for delivery in rest} == {0}, "a paced delivery is not an attempt"
    assert DeliveryAttempt.objects.filter(delivery__in=rest).count() == 0
    [(again, countdown)] = sent
    assert sorted(again) == sorted(rest.values_list("pk", flat=True))
    assert 0.4 <= countdown <= 0.5  # one request every half second
    assert all(before + timedelta(seconds=0.4) <= d.next_attempt_at for d in rest)


def test_a_backfill_leaves_half_the_burst_to_leavers_and_changes(target_factory):
    target = target_factory(rate_limit_rps=1, rate_limit_burst=4)
    shared = pacing.pacer()
    key = pace_key(target)
    backfill = [shared.reserve(key, rate=1, burst=4 // 2) for _ in range(3)]
    assert backfill[:2] == [0.0, 0.0]
    assert backfill[2] > 0, "the backfill stops at half the burst"
    assert shared.reserve(key, rate=1, burst=4) == 0.0, "a leaver still goes at once"


def test_a_full_concurrency_cap_puts_the_batch_back_untouched(actor, target_factory, sent):
    target = target_factory(max_concurrency=2)
    users(actor, 2)
    ids = queued_ids(target)
    shared = pacing.pacer()
    # Two batches of other workers hold the target's places.
    held = [shared.acquire(pace_key(target), limit=2, lease_seconds=30) for _ in range(2)]
    conn, seen = counting()

    assert deliveries_send(delivery_ids=ids, connection=conn) == []

    assert seen == []
    assert set(Delivery.objects.filter(pk__in=ids).values_list("state", "attempts")) == {("queued", 0)}
    [(again, countdown)] = sent
    assert again == ids
    assert 0 < countdown <= 1.0
    for slot in held:
        shared.release(pace_key(target), slot.token)
    assert len(deliveries_send(delivery_ids=ids, connection=conn)) == 2


def test_a_backfill_never_takes_the_last_place(target_factory):
    from provisioning.services import _concurrency

    target = target_factory(max_concurrency=3)
    assert _concurrency(target, Delivery.Priority.BACKFILL) == 2
    assert _concurrency(target, Delivery.Priority.LEAVER) == 3
    target.circuit_state = Target.CircuitState.DEGRADED
    assert _concurrency(target, Delivery.Priority.LEAVER) == 1


def test_the_circuit_degrades_then_quarantines_on_failures_in_a_row_and_heals_on_success(
    actor, target_factory, sent, settings
):
    settings.PROVISIONING = {
        "DEGRADE_AFTER_FAILURES": 2,
        "QUARANTINE_AFTER_FAILURES": 4,
        "BACKOFF_BASE": 0.01,
    }
    target = target_factory()
    people = users(actor, 1)
    [delivery_id] = queued_ids(target)

    def attempt(conn: ScimConnection) -> None:
        Delivery.objects.filter(pk=delivery_id).update(next_attempt_at=None)
        deliveries_send(delivery_ids=[delivery_id], connection=conn)

    states = []
    for _ in range(4):
        attempt(counting([503])[0])
        target.refresh_from_db()
        states.append((target.circuit_state, failure_streak(target)))
    assert states == [("healthy", 1), ("degraded", 2), ("degraded", 3), ("quarantined", 4)]
    assert target.circuit_reason.startswith("4 transient failures in a row; the last: GET Users")
    assert target.circuit_next_attempt_at > timezone.now()

    # Quarantined: nothing is sent until the next attempt, and the delivery counts no failure for it.
    # (With this test's tiny backoff the quarantine would end within milliseconds: a busy machine
    # could reach the next step after it, so the next attempt is moved an hour on.)
    Target.objects.filter(pk=target.pk).update(circuit_next_attempt_at=timezone.now() + timedelta(hours=1))
    target.refresh_from_db()
    conn, seen = counting()
    attempt(conn)
    assert seen == []
    delivery = Delivery.objects.get(pk=delivery_id)
    assert (delivery.failures, delivery.next_attempt_at) == (4, target.circuit_next_attempt_at)

    # The next attempt is due: it probes the target, succeeds, and the target is healthy again.
    Target.objects.filter(pk=target.pk).update(circuit_next_attempt_at=timezone.now() - timedelta(seconds=1))
    attempt(conn)
    target.refresh_from_db()
    assert (target.circuit_state, target.circuit_reason, target.circuit_next_attempt_at) == (
        "healthy",
        "",
        None,
    )
    assert failure_streak(target) == 0
    assert TargetLink.objects.filter(object_id=people[0].pk).exists()


def test_batches_are_one_target_and_one_lane_each_leavers_first():
    rows = [(n, 1 if n < 6 else 2, 0 if n == 3 else 2) for n in range(1, 9)]
    batches = queue.batches(rows, size=50)
    assert batches[0] == (1, 0, [3])
    assert sorted(ids for _, _, group in batches for ids in group) == list(range(1, 9))
    where = {n: (target, lane) for n, target, lane in rows}
    assert all({where[n] for n in ids} == {(target, lane)} for target, lane, ids in batches)
    # A handful is spread over several tasks, so several threads share it; a page is cut at the size.
    assert len(queue.batches([(n, 1, 1) for n in range(8)], size=50)) == 4
    assert {len(ids) for _, _, ids in queue.batches([(n, 1, 1) for n in range(1000)], size=50)} == {50}


def test_send_puts_each_lane_on_its_own_queue(
    actor, target_factory, monkeypatch, settings, django_capture_on_commit_callbacks
):
    published: list[tuple[str, tuple, str]] = []
    monkeypatch.setattr(
        queue, "publish", lambda task, args, *, queue, countdown: published.append((task, args, queue))
    )
    target = target_factory()
    people = users(actor, 2)
    relay.relay_change_events()
    published.clear()
    directory.user_deactivate(actor=actor, user_id=people[0].pk)
    directory.user_update(actor=actor, user_id=people[1].pk, title="Engineer")
    Delivery.objects.all().update(state="done")
    with django_capture_on_commit_callbacks(execute=True):
        relay.relay_change_events()
    lanes = settings.PROVISIONING_LANE_QUEUES
    by_queue = {queue_name: args for _, args, queue_name in published}
    leaver = Delivery.objects.get(object_id=people[0].pk, state="queued")
    change = Delivery.objects.get(object_id=people[1].pk, state="queued")
    assert by_queue[lanes["leaver"]] == (target.pk, [leaver.pk])
    assert by_queue[lanes["change"]] == (target.pk, [change.pk])
    assert [name for _, _, name in published] == [lanes["leaver"], lanes["change"]]


def test_reports_pushed_before_their_manager_get_the_manager_once_it_is_linked(actor, target_factory, sent):
    downstream = InProcessScim()
    target = target_factory()
    boss = directory.user_create(actor=actor, user_name="boss@example.com")
    reports = [
        directory.user_create(actor=actor, user_name=f"r{n}@example.com", manager_id=boss.pk)
        for n in range(3)
    ]
    # One batch: the reports' payloads are built before the boss's new link is recorded.
    deliveries_send(delivery_ids=queued_ids(target), connection=downstream.connection())
    report_ids = {report.pk for report in reports}
    again = queued_ids(target)
    assert set(Delivery.objects.filter(pk__in=again).values_list("object_id", flat=True)) == report_ids

    deliveries_send(delivery_ids=again, connection=downstream.connection())

    assert queued_ids(target) == []
    boss_remote = TargetLink.objects.get(target=target, object_id=boss.pk).remote_id
    for report in reports:
        remote = downstream.get(
            f"Users/{TargetLink.objects.get(target=target, object_id=report.pk).remote_id}"
        )
        assert remote[ENTERPRISE_USER]["manager"]["value"] == boss_remote
