"""The queue-depth history: one sample per target a minute, kept for the dashboard's charts.

Deliveries and the provisioning log record events; how long the queue was at
a given moment is a level that nothing else keeps, so it is sampled. A sample
is keyed by its minute, so two beat schedulers (or a retried task) add nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.utils import timezone

from provisioning.conf import provisioning_setting
from provisioning.models import Delivery, Target, TargetSample


def target_samples_record(*, now: datetime | None = None) -> int:
    """Write this minute's sample of every target in three queries; returns how many targets.

    A repeat within the same minute leaves the first sample as it is.
    """
    taken_at = (now or timezone.now()).replace(second=0, microsecond=0)
    counts = {
        row["target_id"]: row
        for row in Delivery.objects.filter(state__in=("queued", "running", "held"))
        .values("target_id")
        .annotate(
            queued=Count("id", filter=Q(state__in=("queued", "running"))),
            held=Count("id", filter=Q(state="held")),
        )
        .order_by()
    }
    samples = [
        TargetSample(
            target_id=target_id,
            taken_at=taken_at,
            queued=counts.get(target_id, {}).get("queued", 0),
            held=counts.get(target_id, {}).get("held", 0),
        )
        for target_id in Target.objects.values_list("pk", flat=True)
    ]
    TargetSample.objects.bulk_create(samples, ignore_conflicts=True)
    return len(samples)


def target_samples_purge(*, now: datetime | None = None) -> int:
    """Delete samples older than SAMPLE_RETENTION_DAYS; returns how many."""
    cutoff = (now or timezone.now()) - timedelta(days=provisioning_setting("SAMPLE_RETENTION_DAYS"))
    deleted, _ = TargetSample.objects.filter(taken_at__lt=cutoff).delete()
    return deleted
