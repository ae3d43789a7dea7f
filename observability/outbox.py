"""Outbox gauges, read from the database at each scrape (right however many processes write)."""

from collections.abc import Iterator

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from directory.selectors import change_event_backlog
from observability.metrics import scrape_time


@scrape_time
def outbox_metrics() -> Iterator[Metric]:
    backlog = change_event_backlog()
    yield GaugeMetricFamily(
        "directory_outbox_backlog", "Change events not yet processed by the relay.", value=backlog.count
    )
    age = (timezone.now() - backlog.oldest).total_seconds() if backlog.oldest else 0.0
    yield GaugeMetricFamily(
        "directory_outbox_oldest_age_seconds",
        "Age of the oldest unprocessed change event (0 when there is none).",
        value=max(age, 0.0),
    )
