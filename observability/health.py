"""Readiness checks: can this process serve? Each returns a small JSON-able verdict, never raises."""

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection

from directory.selectors import change_event_backlog
from observability.logs import redact

# A probe that hangs is worse than one that fails: the orchestrator's own timeout is usually 1 to 5 s.
BROKER_TIMEOUT_SECONDS = 2.0


@dataclass
class Check:
    ok: bool
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.details}


def _failure(exc: Exception) -> Check:
    # The class and message only: a driver's message names the host, never the password in the URL.
    return Check(False, {"error": redact(f"{type(exc).__name__}: {exc}")[:300]})


def database_check() -> Check:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return _failure(exc)
    return Check(True, {"ms": round((time.perf_counter() - started) * 1000, 1)})


def broker_check() -> Check:
    """A PING to a Redis broker; the folders of the filesystem broker `make run` uses."""
    url = settings.CELERY_BROKER_URL
    started = time.perf_counter()
    if url.startswith(("redis://", "rediss://", "unix://")):
        client = redis.Redis.from_url(
            url, socket_connect_timeout=BROKER_TIMEOUT_SECONDS, socket_timeout=BROKER_TIMEOUT_SECONDS
        )
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            return _failure(exc)
        finally:
            client.close()
    elif url == "filesystem://":
        folder = Path(settings.CELERY_FILESYSTEM_BROKER_DIR)
        if not (folder.is_dir() and os.access(folder, os.W_OK)):
            return Check(False, {"error": f"the broker folder {folder} is missing or not writable"})
    else:
        return Check(False, {"error": "only Redis and filesystem brokers can be checked"})
    return Check(True, {"ms": round((time.perf_counter() - started) * 1000, 1)})


def outbox_check() -> Check:
    threshold = settings.READYZ_MAX_OUTBOX_BACKLOG
    try:
        backlog = change_event_backlog(limit=threshold + 1)
    except DatabaseError as exc:
        return _failure(exc)
    # Counted up to threshold + 1: "more than the threshold" is all a probe needs.
    return Check(backlog.count <= threshold, {"backlog": backlog.count, "threshold": threshold})


def readiness() -> dict[str, Check]:
    checks = {"database": database_check(), "broker": broker_check()}
    if checks["database"].ok:
        checks["outbox"] = outbox_check()
    else:
        checks["outbox"] = Check(False, {"error": "database unreachable"})
    return checks
