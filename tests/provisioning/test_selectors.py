"""The dashboard's reads of provisioning: windows, per-bucket pushes and queue samples, the overview."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from directory.models import ChangeEvent
from provisioning.models import Delivery, DeliveryAttempt, Target, TargetSample
from provisioning.selectors import (
    RANGES,
    Window,
    attempt_buckets,
    held_oldest,
    queue_buckets,
    targets_overview,
    window_ending,
)
from provisioning.status import target_status

NOW = datetime(2026, 11, 29, 10, 17, 30, tzinfo=UTC)
# SQLite measures lag through julianday(), good to about 0.1 ms.
MS = 1e-3
DAY = window_ending(now=NOW, span=RANGES["24h"][0], bucket=RANGES["24h"][1])


def push(target: Target, at: datetime, outcome: str = "success", lag: float | None = None) -> DeliveryAttempt:
    """One provisioning log row; with `lag`, its delivery carried a change made `lag` seconds earlier."""
    object_id = uuid.uuid4()
    delivery = None
    if lag is not None:
        event = ChangeEvent.objects.create(
            object_type="user",
            object_id=object_id,
            kind="updated",
            version=1,
            created=at - timedelta(seconds=lag),
        )
        delivery = Delivery.objects.create(
            target=target, object_type="user", object_id=object_id, state="done", leased_version=event.pk
        )
    return DeliveryAttempt.objects.create(
        target=target, delivery=delivery, object_type="user", object_id=object_id, created=at, outcome=outcome
    )


def test_windows_are_aligned_on_hours_and_six_hour_blocks() -> None:
    assert DAY == Window(datetime(2026, 11, 28, 11, tzinfo=UTC), timedelta(hours=1), 24)
    assert DAY.end == datetime(2026, 11, 29, 11, tzinfo=UTC)
    assert DAY.bucket_starts()[-1] == datetime(2026, 11, 29, 10, tzinfo=UTC)
    week = window_ending(now=NOW, span=RANGES["7d"][0], bucket=RANGES["7d"][1])
    assert week.buckets == 28
    assert week.bucket_starts()[-1] == datetime(2026, 11, 29, 6, tzinfo=UTC)
    assert week.start == datetime(2026, 11, 22, 12, tzinfo=UTC)


@pytest.mark.django_db
def test_attempt_buckets_count_errors_and_lag_percentiles_per_target_and_hour(target_factory) -> None:
    slack, other = target_factory(name="slack"), target_factory(name="other")
    nine = datetime(2026, 11, 29, 9, tzinfo=UTC)
    push(slack, nine + timedelta(minutes=30), lag=2.0)
    push(slack, nine + timedelta(minutes=40), lag=4.0)
    push(slack, nine + timedelta(minutes=50), outcome="failed")
    push(slack, nine + timedelta(minutes=55), outcome="dry_run")  # previews are not attempts
    push(slack, nine - timedelta(minutes=30), outcome="retry")
    push(slack, DAY.start - timedelta(seconds=1), outcome="failed")  # before the window
    push(other, nine + timedelta(minutes=5), outcome="disputed")
    # A full sync's push carries no change: counted, but no lag.
    push(other, nine + timedelta(minutes=6))

    found = attempt_buckets(window=DAY)

    assert set(found) == {(slack.pk, 22), (slack.pk, 21), (other.pk, 22)}
    nine_slack = found[(slack.pk, 22)]
    assert (nine_slack.attempts, nine_slack.errors) == (3, 1)
    assert nine_slack.lag.samples == 2
    assert nine_slack.lag.p50 == pytest.approx(3.0, abs=MS)
    assert nine_slack.lag.p95 == pytest.approx(3.9, abs=MS)
    assert nine_slack.error_rate == pytest.approx(1 / 3)
    eight = found[(slack.pk, 21)]
    assert (eight.attempts, eight.errors, eight.lag.samples, eight.lag.p50) == (1, 1, 0, None)
    nine_other = found[(other.pk, 22)]
    assert (nine_other.attempts, nine_other.errors, nine_other.lag.samples) == (2, 1, 0)


@pytest.mark.django_db
def test_queue_buckets_take_each_hours_peak(target_factory) -> None:
    target = target_factory()
    for minute, queued, held in ((5, 3, 0), (35, 7, 1), (50, 2, 0)):
        TargetSample.objects.create(
            target=target, taken_at=datetime(2026, 11, 29, 9, minute, tzinfo=UTC), queued=queued, held=held
        )
    TargetSample.objects.create(target=target, taken_at=datetime(2026, 11, 29, 10, 1, tzinfo=UTC), queued=1)

    assert queue_buckets(window=DAY) == {(target.pk, 22): (7, 1), (target.pk, 23): (1, 0)}


@pytest.mark.django_db
def test_targets_overview_reads_every_target_in_five_queries(
    target_factory, django_assert_num_queries
) -> None:
    healthy = target_factory(name="a-healthy")
    degraded = target_factory(name="b-degraded", circuit_state=Target.CircuitState.DEGRADED)
    target_factory(name="c-quarantined", circuit_state=Target.CircuitState.QUARANTINED)
    target_factory(name="d-paused", paused=True, circuit_state=Target.CircuitState.DEGRADED)
    target_factory(name="e-disabled", enabled=False)
    for state in ("queued", "running", "held"):
        Delivery.objects.create(
            target=degraded, object_type="user", object_id=uuid.uuid4(), state=state, lease_until=NOW
        )
    Delivery.objects.create(target=degraded, object_type="user", object_id=uuid.uuid4(), state="failed")
    push(healthy, NOW - timedelta(minutes=10), lag=1.5)
    push(healthy, NOW - timedelta(minutes=70), lag=9.0)  # in the chart, not in the last hour
    TargetSample.objects.create(target=degraded, taken_at=NOW.replace(second=0), queued=2, held=1)

    with django_assert_num_queries(5):
        overviews = targets_overview(window=DAY, now=NOW)

    assert [(o.target.name, o.state) for o in overviews] == [
        ("a-healthy", "healthy"),
        ("b-degraded", "degraded"),
        ("c-quarantined", "quarantined"),
        ("d-paused", "paused"),
        ("e-disabled", "disabled"),
    ]
    first, second = overviews[0], overviews[1]
    assert (second.queued, second.held) == (2, 1)
    assert (first.last_hour.attempts, first.last_hour.lag.samples) == (1, 1)
    assert first.last_hour.lag.p50 == pytest.approx(1.5, abs=MS)
    assert first.history is not None
    assert second.history is not None
    assert len(first.history.lag_p95) == 24
    assert first.history.lag_p95[-1] == pytest.approx(1.5, abs=MS)
    assert first.history.lag_p95[-2] == pytest.approx(9.0, abs=MS)
    assert first.history.error_rate[-1] == 0
    assert first.history.queued == [None] * 24  # never sampled: a gap, not zero
    assert second.history.queued[-1] == 2
    assert second.history.held[-1] == 1
    assert second.history.error_rate == [None] * 24


@pytest.mark.django_db
def test_targets_overview_without_targets_makes_one_query(django_assert_num_queries) -> None:
    with django_assert_num_queries(1):
        assert targets_overview(window=DAY, now=NOW) == []


@pytest.mark.django_db
def test_held_oldest_lists_held_deliveries_oldest_first(target_factory) -> None:
    target = target_factory()
    newer = Delivery.objects.create(
        target=target, object_type="user", object_id=uuid.uuid4(), state="held", created=NOW
    )
    older = Delivery.objects.create(
        target=target,
        object_type="user",
        object_id=uuid.uuid4(),
        state="held",
        created=NOW - timedelta(hours=1),
    )
    Delivery.objects.create(target=target, object_type="user", object_id=uuid.uuid4(), state="queued")

    assert [delivery.pk for delivery in held_oldest()] == [older.pk, newer.pk]
    assert [delivery.pk for delivery in held_oldest(limit=1)] == [older.pk]


@pytest.mark.django_db
def test_last_hour_matches_the_status_page(target_factory) -> None:
    target = target_factory()
    for minutes, outcome, lag in (
        (5, "success", 0.5),
        (15, "success", 2.5),
        (25, "retry", None),
        (90, "failed", None),
    ):
        push(target, NOW - timedelta(minutes=minutes), outcome=outcome, lag=lag)

    (overview,) = targets_overview(window=DAY, now=NOW)
    status = target_status(target=target, now=NOW)

    assert (
        (overview.last_hour.attempts, overview.last_hour.errors) == (status.attempts, status.errors) == (3, 1)
    )
    assert overview.last_hour.lag.samples == status.lag.samples == 2
    assert overview.last_hour.lag.p50 == pytest.approx(status.lag.p50, abs=MS)
    assert overview.last_hour.lag.p95 == pytest.approx(status.lag.p95, abs=MS)
