"""Noticing that the broker lost the tasks sent to it (a Redis restart without persistence, a flush).

The deliveries' rows are the truth and the broker only carries wake-ups, so a lost task
delays a delivery but never loses it: the sweeper sends again what has waited too long
(REENQUEUE_AFTER_SECONDS). After a broker loss, every queued delivery's task is gone at
once, and waiting that long for each would be a needless pause. So the broker holds a
marker key: it lives and dies with the broker's queues (same server, same database),
and finding it missing means nothing queued there before can be trusted to arrive.
The sweeper then sends every queued delivery again at once.

Only Redis brokers keep a marker; other brokers (kombu's filesystem broker of `make
run`, which keeps its messages on disk) answer "not lost", leaving the usual resends.
"""

from __future__ import annotations

import logging
import threading

import redis
from celery import current_app
from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Seconds to wait for the broker: the sweeper must not hang on a broker that went away.
TIMEOUT = 5.0

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def marker_key() -> str:
    """One marker per deployment sharing the broker (the default queue's name carries the prefix)."""
    return f"provisioning:broker-marker:{settings.CELERY_TASK_DEFAULT_QUEUE}"


def broker_url() -> str:
    url = current_app.conf.broker_url or ""
    # kombu accepts a failover list ("url1;url2"): the first is the one in use while it is up.
    return str(url).split(";")[0].strip()


def _client(url: str) -> redis.Redis:
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
            _clients[url] = client
        return client


def broker_lost_tasks(url: str | None = None) -> bool:
    """True (once) when the broker's marker is gone: it restarted empty or was flushed.

    Sets the marker again in the same command, so the next call answers False until the
    broker loses its data again. The first call against a new broker also answers True:
    a new broker holds no task either. An unreachable broker answers False (nothing can be
    sent to it anyway; the first sweep after it is back notices).
    """
    url = url if url is not None else broker_url()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return False
    try:
        created = _client(url).set(marker_key(), timezone.now().isoformat(), nx=True)
    except RedisError as exc:
        logger.warning("broker marker not readable: %s", exc)
        return False
    return bool(created)
