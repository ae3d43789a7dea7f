"""A target's health for operators, and the operator actions that act on one target.

`target_status` reads what the status page shows in a fixed number of
queries, however many deliveries and log rows the target has: the queue by
state and lane, change → applied lag percentiles and the error rate over the
last hour, the last full sync and how far it got, the deletion guard's use,
and the circuit state. The actions (clear quarantine, retry failed, re-run
full sync, forget links) each do one thing, as separate buttons rather than
one big restart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from directory.models import ChangeEvent
from provisioning import queue
from provisioning.models import (
    ACTIVE_DELIVERY_STATES,
    Delivery,
    DeliveryAttempt,
    GuardGrant,
    Target,
    TargetLink,
)
from provisioning.relay import deliveries_for_objects
from provisioning.services import SyncPlan, target_full_sync

WINDOW = timedelta(hours=1)
ERROR_OUTCOMES = (
    DeliveryAttempt.Outcome.FAILED,
    DeliveryAttempt.Outcome.RETRY,
    DeliveryAttempt.Outcome.DISPUTED,
)


@dataclass
class Lag:
    """Change → applied, in seconds, over the successful attempts of the window."""

    samples: int = 0
    p50: float | None = None
    p95: float | None = None


@dataclass
class TargetStatus:
    target: Target
    # [(state, priority, count)] of active deliveries, most urgent first.
    queue: list[tuple[str, int, int]] = field(default_factory=list)
    lag: Lag = field(default_factory=Lag)
    attempts: int = 0
    errors: int = 0
    last_attempt: DeliveryAttempt | None = None
    # {state: count} of the deliveries the last full sync queued.
    last_run: dict[str, int] = field(default_factory=dict)
    guard_hour: int = 0

    @property
    def queued(self) -> int:
        return sum(count for state, _, count in self.queue if state in ("queued", "running"))

    @property
    def held(self) -> int:
        return sum(count for state, _, count in self.queue if state == "held")

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.attempts if self.attempts else None


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (what PostgreSQL's percentile_cont computes)."""
    position = (len(values) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return values[low] + (values[high] - values[low]) * (position - low)


def _lag(target: Target, since: datetime) -> Lag:
    """One query: the successful attempts of the window joined to the newest change each one carried.

    A delivery's `leased_version` is the id of the newest ChangeEvent folded
    into it when its last attempt started; full syncs and on-demand runs carry
    none and are left out. PostgreSQL computes the percentiles itself.
    """
    attempt, delivery = DeliveryAttempt._meta.db_table, Delivery._meta.db_table
    event = ChangeEvent._meta.db_table
    if connection.vendor == "postgresql":
        seconds = "EXTRACT(EPOCH FROM (a.created - e.created))"
    else:
        seconds = "(julianday(a.created) - julianday(e.created)) * 86400.0"
    rows_sql = (
        f"SELECT {seconds} AS lag FROM {attempt} a"
        f" JOIN {delivery} d ON d.id = a.delivery_id"
        f" JOIN {event} e ON e.id = d.leased_version"
        f" WHERE a.target_id = %s AND a.created >= %s AND a.outcome = 'success' AND d.leased_version > 0"
        f" AND a.created >= e.created"
    )
    params = [target.pk, connection.ops.adapt_datetimefield_value(since)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY lag),"
                f" percentile_cont(0.95) WITHIN GROUP (ORDER BY lag) FROM ({rows_sql}) lags",
                params,
            )
            count, p50, p95 = cursor.fetchone()
            return Lag(
                int(count), float(p50) if p50 is not None else None, float(p95) if p95 is not None else None
            )
        cursor.execute(f"{rows_sql} ORDER BY lag", params)
        values = [float(lag) for (lag,) in cursor.fetchall()]
    if not values:
        return Lag()
    return Lag(len(values), percentile(values, 0.5), percentile(values, 0.95))


def target_status(*, target: Target, now: datetime | None = None) -> TargetStatus:
    """Everything the status page shows, in six queries (five without a full sync yet)."""
    now = now or timezone.now()
    since = now - WINDOW
    status = TargetStatus(target=target)
    status.queue = sorted(
        (row["state"], row["priority"], row["count"])
        for row in Delivery.objects.filter(target=target, state__in=ACTIVE_DELIVERY_STATES)
        .values("state", "priority")
        .annotate(count=Count("id"))
        .order_by()
    )
    status.lag = _lag(target, since)
    totals = (
        DeliveryAttempt.objects.filter(target=target, created__gte=since)
        .exclude(outcome=DeliveryAttempt.Outcome.DRY_RUN)
        .aggregate(attempts=Count("id"), errors=Count("id", filter=Q(outcome__in=ERROR_OUTCOMES)))
    )
    status.attempts, status.errors = totals["attempts"], totals["errors"]
    status.last_attempt = DeliveryAttempt.objects.filter(target=target).order_by("-created", "-id").first()
    if target.last_full_sync_run_id is not None:
        status.last_run = {
            row["state"]: row["count"]
            for row in Delivery.objects.filter(target=target, run_id=target.last_full_sync_run_id)
            .values("state")
            .annotate(count=Count("id"))
            .order_by()
        }
    status.guard_hour = GuardGrant.objects.filter(target=target, created__gte=since).count()
    return status


# --- operator actions -----------------------------------------------------------------------------


def _resend(deliveries: list[int]) -> int:
    Delivery.objects.filter(pk__in=deliveries).update(next_attempt_at=None, enqueued_at=timezone.now())
    queue.send_on_commit(deliveries)
    return len(deliveries)


@transaction.atomic
def target_clear_quarantine(*, target: Target) -> int:
    """Mark the target healthy and send what waited for it now; returns how many deliveries were sent."""
    Target.objects.filter(pk=target.pk).update(
        circuit_state=Target.CircuitState.HEALTHY, circuit_reason="", circuit_next_attempt_at=None
    )
    target.refresh_from_db(fields=["circuit_state", "circuit_reason", "circuit_next_attempt_at"])
    return _resend(
        list(Delivery.objects.filter(target=target, state=Delivery.State.QUEUED).values_list("pk", flat=True))
    )


@dataclass
class RetryResult:
    failed: int = 0
    backing_off: int = 0


@transaction.atomic
def target_retry_failed(*, target: Target) -> RetryResult:
    """Queue anew every object whose latest delivery failed, and retry now what waits on a backoff."""
    newer = Delivery.objects.filter(
        target=target,
        object_type=OuterRef("object_type"),
        object_id=OuterRef("object_id"),
        pk__gt=OuterRef("pk"),
    )
    failed = list(
        Delivery.objects.filter(target=target, state=Delivery.State.FAILED)
        .exclude(Exists(newer))
        .values_list("object_type", "object_id")
    )
    ids = deliveries_for_objects(target=target, keys=failed, priority=Delivery.Priority.CHANGE)
    queue.send_on_commit(ids)
    waiting = list(
        Delivery.objects.filter(
            target=target,
            state=Delivery.State.QUEUED,
            next_attempt_at__gt=timezone.now(),
            failures__gt=0,
        ).values_list("pk", flat=True)
    )
    return RetryResult(failed=len(failed), backing_off=_resend(waiting))


def target_rerun_full_sync(*, target: Target) -> SyncPlan:
    """Queue every object in scope again (the backfill lane); unchanged ones cost no request."""
    return target_full_sync(target=target)


@transaction.atomic
def target_forget_links(*, target: Target) -> int:
    """Forget every remote id on the target: the next delivery of each object matches it again.

    Nothing is deleted downstream; matching (externalId, then the other
    matching attributes) adopts the accounts that are there.
    """
    deleted, _ = TargetLink.objects.filter(target=target).delete()
    return deleted
