"""The Prometheus metrics every process records, and the ones computed when /metrics is scraped.

Counters and histograms live in the process that observes them. Under gunicorn
and Celery, set PROMETHEUS_MULTIPROC_DIR to a folder shared by the processes of a
machine: prometheus_client then keeps each process's values in a memory-mapped
file there, and /metrics adds them up (README: Operations). Gauges that describe
the whole deployment (the outbox backlog, queued deliveries) are not kept by any
process: the functions registered with `scrape_time` read them from the database
when /metrics is asked for, so they are right whatever the number of processes
and machines.

Labels take bounded values only: route names (never raw paths), scimType,
rewrite names, target and source names, outcomes.
"""

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import Metric

# Request latency: the SCIM API answers most reads in a few milliseconds.
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Change → applied downstream: about a second when all is well, hours when a target is down.
_LAG_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)

HTTP_REQUESTS = Counter(
    "directory_http_requests",
    "HTTP requests answered, by route name, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "directory_http_request_duration_seconds",
    "Time to answer an HTTP request, by route name and method.",
    ["route", "method"],
    buckets=_HTTP_BUCKETS,
)
SCIM_ERRORS = Counter(
    "directory_scim_errors",
    "SCIM error responses (and failed Bulk operations), by status and scimType ('none' without one).",
    ["status", "scim_type"],
)
DIALECT_REWRITES = Counter(
    "directory_scim_dialect_rewrites",
    "Client dialect rewrites applied to incoming SCIM requests, by rewrite name.",
    ["rewrite"],
)
DELIVERIES = Counter(
    "directory_provisioning_deliveries",
    "Delivery attempts to downstream targets, by target and outcome.",
    ["target", "outcome"],
)
DELIVERY_DURATION = Histogram(
    "directory_provisioning_delivery_duration_seconds",
    "Time a delivery attempt spent talking to its target, by target.",
    ["target"],
    buckets=_HTTP_BUCKETS,
)
CHANGE_LAG = Histogram(
    "directory_provisioning_change_applied_lag_seconds",
    "From a directory change's commit to its successful delivery downstream, by target.",
    ["target"],
    buckets=_LAG_BUCKETS,
)
INBOUND_JOBS = Counter(
    "directory_inbound_jobs",
    "Inbound provisioning jobs finished, by source and final status.",
    ["source", "status"],
)
INBOUND_RECORDS = Counter(
    "directory_inbound_records",
    "Inbound records applied by finished jobs, by source and outcome.",
    ["source", "outcome"],
)


# (route, method, status) → the two labelled series: labels() validates and locks on every call, and
# this runs on every request. Bounded like the labels themselves.
_http_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def http_request_observe(*, route: str, method: str, status: int, seconds: float) -> None:
    key = (route, method, status)
    series = _http_series.get(key)
    if series is None:
        series = _http_series[key] = (
            HTTP_REQUESTS.labels(route, method, str(status)),
            HTTP_LATENCY.labels(route, method),
        )
    series[0].inc()
    series[1].observe(seconds)


def scim_error_count(*, status: int, scim_type: str | None) -> None:
    SCIM_ERRORS.labels(str(status), scim_type or "none").inc()


def dialect_rewrites_count(names: Iterable[str]) -> None:
    for name in names:
        DIALECT_REWRITES.labels(name).inc()


def delivery_observe(*, target: str, outcome: str, seconds: float, lag_seconds: float | None) -> None:
    DELIVERIES.labels(target, outcome).inc()
    DELIVERY_DURATION.labels(target).observe(seconds)
    if lag_seconds is not None:
        CHANGE_LAG.labels(target).observe(max(lag_seconds, 0.0))


def inbound_job_count(*, source: str, status: str, outcomes: dict[str, int]) -> None:
    INBOUND_JOBS.labels(source, status).inc()
    for outcome, count in outcomes.items():
        if count:
            INBOUND_RECORDS.labels(source, outcome).inc(count)


# --- computed at scrape time ------------------------------------------------------------------

ScrapeFunction = Callable[[], Iterable[Metric]]
_scrape_functions: list[ScrapeFunction] = []


def scrape_time(function: ScrapeFunction) -> ScrapeFunction:
    """Register a function /metrics calls on each scrape for metrics read from the database."""
    if function not in _scrape_functions:
        _scrape_functions.append(function)
    return function


class ScrapeTimeCollector:
    """A prometheus_client collector over the registered functions (used by /metrics only)."""

    def collect(self) -> Iterator[Metric]:
        for function in _scrape_functions:
            yield from function()
