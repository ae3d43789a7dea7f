"""Inbound provisioning's gauge, read from the database when /metrics is scraped."""

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from observability.metrics import scrape_time
from scim_api.inbound.selectors import inbound_holds


@scrape_time
def inbound_hold_metrics() -> Iterator[Metric]:
    held = GaugeMetricFamily(
        "directory_inbound_held",
        "Leavers the inbound guard holds for an operator, by source and kind (records of jobs, "
        "scheduled disables held on their date).",
        labels=["source", "kind"],
    )
    for holds in inbound_holds():
        held.add_metric([holds.source, "records"], holds.records)
        held.add_metric([holds.source, "scheduled"], holds.scheduled)
    yield held
