"""Lazy access to the PROVISIONING settings block, with defaults (read per call, never at import)."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Keys for the Fernet encryption of target credentials; empty means SECRET_KEY. Several keys
    # (comma-separated in PROVISIONING_SECRET_KEY) rotate: the first encrypts, all decrypt.
    "SECRET_KEYS": [],
    # Change events the relay claims per transaction.
    "RELAY_BATCH_SIZE": 500,
    # Seconds a worker owns a delivery; the sweeper hands an expired lease to another worker.
    "LEASE_SECONDS": 300,
    # A queued delivery whose task was sent this many seconds ago without running is sent again.
    "REENQUEUE_AFTER_SECONDS": 60,
    # Transient failures in a row before a delivery fails for good.
    "MAX_FAILURES": 10,
    # Exponential backoff: BACKOFF_BASE * 2**(failures-1) seconds, at most BACKOFF_MAX, with jitter.
    "BACKOFF_BASE": 2.0,
    "BACKOFF_MAX": 3600.0,
    # How long a group delivery waits for its members' remote ids before pushing without them.
    "MEMBER_WAIT_ATTEMPTS": 30,
    # Days of provisioning log kept.
    "LOG_RETENTION_DAYS": 30,
    # Objects per page of a full sync.
    "FULL_SYNC_PAGE_SIZE": 1000,
    # A full sync task queues pages for this many seconds, then hands the rest to a new task.
    "FULL_SYNC_TASK_SECONDS": 20.0,
    # A run still queuing whose last page is this old lost its process: the tick resumes it.
    "SYNC_RUN_STALE_SECONDS": 120,
    # Resources per GET page when a reconciliation reads a target.
    "RECONCILE_PAGE_SIZE": 100,
    # Finding rows stored per kind and run (the counts stay exact beyond it).
    "RECONCILE_MAX_FINDINGS": 10000,
    # A running reconciliation silent for this long died with its worker: marked failed.
    "RECONCILE_STALE_SECONDS": 900,
    # Days of full sync and reconciliation runs (and their findings) kept.
    "RUN_RETENTION_DAYS": 90,
    # Deliveries per task (one target, one lane): leased, matched and recorded together.
    "BATCH_SIZE": 50,
    # A batch stops taking new deliveries after this long and sends the rest again, so a slow
    # target holds a worker thread (and a concurrency slot) for a bounded time.
    "BATCH_SECONDS": 5.0,
    # Circuit breaker: transient failures in a row on one target before it is degraded (one request
    # at a time) and before it is quarantined (nothing sent until its next attempt).
    "DEGRADE_AFTER_FAILURES": 3,
    "QUARANTINE_AFTER_FAILURES": 30,
    # Days of per-minute queue samples kept (the dashboard charts the last 7).
    "SAMPLE_RETENTION_DAYS": 8,
}


def provisioning_setting(name: str) -> Any:
    if name not in DEFAULTS:
        raise KeyError(f"Unknown PROVISIONING setting {name!r}")
    return getattr(settings, "PROVISIONING", {}).get(name, DEFAULTS[name])
