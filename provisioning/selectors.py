"""Reads for the operators' dashboard: every target's state now and over time, in a bounded number of queries.

The status page (provisioning.status) reads one target in six queries. The
dashboard shows all targets, so each figure here is one query grouped by
target, and each chart one query grouped by target and time bucket: five
queries however many targets there are. Lag and error rate come from the
provisioning log joined to the change each push carried, as on the status
page; queue depth from the per-minute samples (provisioning.sampling).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from directory.models import ChangeEvent
from provisioning.models import Delivery, DeliveryAttempt, HeldDelivery, Target, TargetSample
from provisioning.status import ERROR_OUTCOMES, WINDOW, Lag, percentile

# The dashboard's chart ranges: (span, bucket). Buckets are aligned on UTC hours and 6-hour blocks.
RANGES: dict[str, tuple[timedelta, timedelta]] = {
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
}


@dataclass(frozen=True)
class Window:
    """`buckets` consecutive buckets of `bucket`, from `start`; the last one holds the present."""

    start: datetime
    bucket: timedelta
    buckets: int

    @property
    def end(self) -> datetime:
        return self.start + self.bucket * self.buckets

    def bucket_starts(self) -> list[datetime]:
        return [self.start + self.bucket * index for index in range(self.buckets)]


def window_ending(*, now: datetime, span: timedelta, bucket: timedelta) -> Window:
    """The window of `span` whose buckets are multiples of `bucket` since the epoch, the last holding now."""
    seconds = bucket.total_seconds()
    last_start = math.floor(now.timestamp() / seconds) * seconds
    buckets = round(span / bucket)
    return Window(datetime.fromtimestamp(last_start - (buckets - 1) * seconds, tz=UTC), bucket, buckets)


@dataclass
class AttemptBucket:
    """One target's pushes in one bucket: how many, how many went wrong, and the change → applied lag."""

    attempts: int = 0
    errors: int = 0
    lag: Lag = field(default_factory=Lag)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.attempts if self.attempts else None


def _bucket_sql(column: str) -> str:
    """The bucket index of `column`: whole buckets (seconds in the second parameter) since the first."""
    if connection.vendor == "postgresql":
        return f"FLOOR(EXTRACT(EPOCH FROM ({column} - %s::timestamptz)) / %s)::integer"
    return f"CAST((julianday({column}) - julianday(%s)) * 86400.0 / %s AS INTEGER)"


def attempt_buckets(*, window: Window) -> dict[tuple[int, int], AttemptBucket]:
    """{(target id, bucket index): AttemptBucket} for every target, in one query.

    Lag is measured as on the status page: a successful push against the
    creation of the newest change its delivery carried (`leased_version`);
    full syncs carry none and are left out. Dry runs are not attempts.
    """
    attempt, delivery = DeliveryAttempt._meta.db_table, Delivery._meta.db_table
    event = ChangeEvent._meta.db_table
    start = connection.ops.adapt_datetimefield_value(window.start)
    end = connection.ops.adapt_datetimefield_value(window.end)
    joins = (
        f" FROM {attempt} a"
        f" LEFT JOIN {delivery} d ON d.id = a.delivery_id AND a.outcome = 'success' AND d.leased_version > 0"
        f" LEFT JOIN {event} e ON e.id = d.leased_version AND e.created <= a.created"
        " WHERE a.created >= %s AND a.created < %s AND a.outcome <> 'dry_run'"
    )
    errors = ", ".join(f"'{outcome}'" for outcome in ERROR_OUTCOMES)
    params: list[Any] = [start, window.bucket.total_seconds(), start, end]
    found: dict[tuple[int, int], AttemptBucket] = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            lag = "EXTRACT(EPOCH FROM (a.created - e.created))"
            cursor.execute(
                f"SELECT a.target_id, {_bucket_sql('a.created')}, count(*),"
                f" count(*) FILTER (WHERE a.outcome IN ({errors})), count(e.id),"
                f" percentile_cont(0.5) WITHIN GROUP (ORDER BY {lag}) FILTER (WHERE e.id IS NOT NULL),"
                f" percentile_cont(0.95) WITHIN GROUP (ORDER BY {lag}) FILTER (WHERE e.id IS NOT NULL)"
                f"{joins} GROUP BY 1, 2",
                params,
            )
            for target_id, index, attempts, failed, samples, p50, p95 in cursor.fetchall():
                found[(target_id, index)] = AttemptBucket(
                    attempts,
                    failed,
                    Lag(samples, None if p50 is None else float(p50), None if p95 is None else float(p95)),
                )
            return found
        # SQLite (development): the rows come back and Python aggregates them.
        cursor.execute(
            f"SELECT a.target_id, {_bucket_sql('a.created')}, a.outcome,"
            " CASE WHEN e.id IS NULL THEN NULL"
            " ELSE (julianday(a.created) - julianday(e.created)) * 86400.0 END"
            f"{joins}",
            params,
        )
        lags: dict[tuple[int, int], list[float]] = defaultdict(list)
        for target_id, index, outcome, lag_seconds in cursor.fetchall():
            bucket = found.setdefault((target_id, index), AttemptBucket())
            bucket.attempts += 1
            bucket.errors += outcome in ERROR_OUTCOMES
            if lag_seconds is not None:
                lags[(target_id, index)].append(float(lag_seconds))
    for key, values in lags.items():
        values.sort()
        found[key].lag = Lag(len(values), percentile(values, 0.5), percentile(values, 0.95))
    return found


def queue_buckets(*, window: Window) -> dict[tuple[int, int], tuple[int, int]]:
    """{(target id, bucket index): (most queued, most held)} from the samples, in one query."""
    start = connection.ops.adapt_datetimefield_value(window.start)
    end = connection.ops.adapt_datetimefield_value(window.end)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT target_id, {_bucket_sql('taken_at')}, max(queued), max(held)"
            f" FROM {TargetSample._meta.db_table} WHERE taken_at >= %s AND taken_at < %s GROUP BY 1, 2",
            [start, window.bucket.total_seconds(), start, end],
        )
        return {(target_id, index): (queued, held) for target_id, index, queued, held in cursor.fetchall()}


Values = list[float | None]


@dataclass
class TargetHistory:
    """One target's chart series, one value per bucket of the window (None: nothing to measure)."""

    queued: Values
    held: Values
    lag_p50: Values
    lag_p95: Values
    error_rate: Values


@dataclass
class TargetOverview:
    """A target on the dashboard: its state, its queue now, its last hour and its history."""

    target: Target
    queued: int = 0
    held: int = 0
    last_hour: AttemptBucket = field(default_factory=AttemptBucket)
    history: TargetHistory | None = None

    @property
    def state(self) -> str:
        """healthy, degraded, quarantined, paused or disabled: what an operator acts on first."""
        if not self.target.enabled:
            return "disabled"
        if self.target.paused:
            return "paused"
        return str(self.target.circuit_state)


def targets_overview(*, window: Window, now: datetime | None = None) -> list[TargetOverview]:
    """Every target with its state, queue, last hour and history over `window`: five queries."""
    now = now or timezone.now()
    overviews = {target.pk: TargetOverview(target=target) for target in Target.objects.order_by("name")}
    if not overviews:
        return []
    for row in (
        Delivery.objects.filter(state__in=("queued", "running", "held"))
        .values("target_id")
        .annotate(
            queued=Count("id", filter=Q(state__in=("queued", "running"))),
            held=Count("id", filter=Q(state="held")),
        )
        .order_by()
    ):
        overview = overviews[row["target_id"]]
        overview.queued, overview.held = row["queued"], row["held"]
    # The last hour as the status page counts it: a single bucket ending now.
    last_hour = Window(now - WINDOW, WINDOW, 1)
    for (target_id, _), bucket in attempt_buckets(window=last_hour).items():
        overviews[target_id].last_hour = bucket
    attempts = attempt_buckets(window=window)
    queues = queue_buckets(window=window)
    indexes = range(window.buckets)
    for target_id, overview in overviews.items():
        pushes = [attempts.get((target_id, index)) for index in indexes]
        samples = [queues.get((target_id, index)) for index in indexes]
        overview.history = TargetHistory(
            queued=[None if sample is None else sample[0] for sample in samples],
            held=[None if sample is None else sample[1] for sample in samples],
            lag_p50=[None if push is None else push.lag.p50 for push in pushes],
            lag_p95=[None if push is None else push.lag.p95 for push in pushes],
            error_rate=[None if push is None else push.error_rate for push in pushes],
        )
    return list(overviews.values())


def held_oldest(*, limit: int = 10) -> list[HeldDelivery]:
    """The disables and deletes the deletion guard holds longest, with their target (one query)."""
    return list(
        HeldDelivery.objects.filter(state=Delivery.State.HELD)
        .select_related("target")
        .order_by("created", "id")[:limit]
    )
