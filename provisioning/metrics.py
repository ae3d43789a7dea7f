"""Provisioning's gauges, read from the database when /metrics is scraped, and its per-attempt metrics."""

import logging
from collections.abc import Iterator, Sequence

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from observability import metrics
from observability.metrics import scrape_time
from provisioning.models import ACTIVE_DELIVERY_STATES, Delivery, DeliveryAttempt, Target

logger = logging.getLogger("provisioning.delivery")


@scrape_time
def delivery_queue_metrics() -> Iterator[Metric]:
    """Active deliveries per target and state, and each target's circuit state (two queries)."""
    targets = list(Target.objects.only("name", "enabled", "paused", "circuit_state"))
    names = {target.pk: target.name for target in targets}
    queued = GaugeMetricFamily(
        "directory_provisioning_active_deliveries",
        "Deliveries not yet done (queued, running, held), by target and state.",
        labels=["target", "state"],
    )
    rows = (
        Delivery.objects.filter(state__in=ACTIVE_DELIVERY_STATES)
        .values("target_id", "state")
        .annotate(count=Count("id"))
        .order_by()
    )
    for row in rows:
        queued.add_metric([names.get(row["target_id"], str(row["target_id"])), row["state"]], row["count"])
    yield queued
    circuit = GaugeMetricFamily(
        "directory_provisioning_target_state",
        "1 for each target's current circuit state (healthy, degraded, quarantined) or paused/disabled.",
        labels=["target", "state"],
    )
    for target in targets:
        state = "disabled" if not target.enabled else "paused" if target.paused else target.circuit_state
        circuit.add_metric([target.name, state], 1)
    yield circuit


def attempts_observe(target: Target, attempts: Sequence[tuple[Delivery, DeliveryAttempt]]) -> None:
    """After a batch committed: its metrics, and one log line per attempt (no secret: no body, no header)."""
    for delivery, entry in attempts:
        lag = None
        if (
            entry.outcome == DeliveryAttempt.Outcome.SUCCESS
            and delivery.leased_version
            and delivery.changed_at
        ):
            lag = (entry.created - delivery.changed_at).total_seconds()
        metrics.delivery_observe(
            target=target.name, outcome=entry.outcome, seconds=entry.duration_ms / 1000, lag_seconds=lag
        )
        extra = {
            "target": target.name,
            "object_type": entry.object_type,
            "object_id": str(entry.object_id),
            "action": entry.action,
            "outcome": entry.outcome,
            "status": entry.status,
            "duration_ms": entry.duration_ms,
            "attempt": entry.attempt,
            "delivery_id": delivery.pk,
        }
        if entry.request_id:
            extra["request_id"] = entry.request_id
        if lag is not None:
            extra["lag_ms"] = round(lag * 1000)
        logger.info(
            "delivery %s %s %s to %s: %s",
            entry.action,
            entry.object_type,
            entry.object_id,
            target.name,
            entry.outcome,
            extra=extra,
        )
