"""Per-client rate limits: a request count per minute, kept in the shared cache.

With REDIS_URL set the cache is Redis, so every web process counts against one
limit; without it each process counts on its own (documented in the README).
Fixed one-minute windows: one Redis round trip per request, and a client that
exceeds its limit is told exactly when the window ends (Retry-After).
"""

import time
from typing import Any

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from scim_api.conf import scim_setting
from scim_api.models import ScimClient

WINDOW_SECONDS = 60


def _count(key: str) -> int:
    """Add one to the counter `key` (created for two windows if absent) and return it."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        # Create-if-absent and increment sent together: one round trip to Redis per request.
        full_key = backend.make_and_validate_key(key)
        pipeline = backend._cache.get_client(full_key, write=True).pipeline(transaction=False)
        pipeline.set(full_key, 0, ex=WINDOW_SECONDS * 2, nx=True)
        pipeline.incr(full_key)
        _, count = pipeline.execute()
        return int(count)
    # add() starts the window's counter only if absent; incr() then counts.
    cache.add(key, 0, timeout=WINDOW_SECONDS * 2)
    try:
        return cache.incr(key)
    except ValueError:  # the key expired between add() and incr()
        cache.add(key, 1, timeout=WINDOW_SECONDS * 2)
        return 1


class ScimClientRateThrottle(BaseThrottle):
    def __init__(self) -> None:
        self.retry_after = 0.0

    def allow_request(self, request: Request, view: Any) -> bool:
        client = request.user
        if not isinstance(client, ScimClient):
            return True
        limit = client.requests_per_minute
        if limit is None:
            limit = scim_setting("RATE_LIMIT_PER_MINUTE")
        if not limit:
            return True
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        count = _count(f"scim-rate:{client.pk}:{window}")
        if count <= limit:
            return True
        self.retry_after = (window + 1) * WINDOW_SECONDS - now
        return False

    def wait(self) -> float:
        return max(1.0, self.retry_after)
