"""Pacing toward one target: a request-rate limit with bursts, a concurrency cap, and retry delays.

Every worker process that talks to a target shares its limits through Redis when
REDIS_URL is set (the default cache is then Redis); without Redis (`make run`)
each worker process keeps its own, which is exact for the development stack's
single worker process.

A worker never sleeps waiting for a target: `reserve()` answers how long to
wait, and the delivery is re-enqueued with that countdown, so a slow or
rate-limited target holds no worker slot that another target's work could use.

The rate limit is GCRA (the "generic cell rate algorithm", a token bucket kept
as one timestamp): `rate` requests per second on average, up to `burst` at once.

Redis going away (a restart, a failover) must not strand work: while it cannot be
reached the pacer answers "wait UNAVAILABLE_WAIT seconds" (it cannot tell whether a
limit or a Retry-After holds, so it lets nothing through), and the batch is put back
untouched instead of failing with its deliveries leased. A restarted Redis comes back
with no pacing state at all: no rate used, no slot held, no block; that errs toward
sending, within one burst and the concurrency cap, which the next requests re-establish.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.core.cache import cache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Seconds a batch waits when the pacer's Redis cannot be reached (see the module's docstring).
UNAVAILABLE_WAIT = 1.0

# Redis evaluates each script atomically, so racing workers cannot both take the last token or slot.
# The clock is Redis's own (TIME), so workers on machines with skewed clocks still agree.
_RESERVE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local blocked = tonumber(redis.call('GET', KEYS[2]) or 0)
if blocked > now then return tostring(blocked - now) end
local interval = tonumber(ARGV[1])
if interval <= 0 then return '0' end
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - now - tolerance
if wait > 0.000001 then return tostring(wait) end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil((tat + interval - now) * 1000) + 1000)
return '0'
"""

_BLOCK_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[1])
local blocked = tonumber(redis.call('GET', KEYS[1]) or 0)
if until_ > blocked then
  redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return '0'
"""

_ACQUIRE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
  return '0'
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(tonumber(first[2]) - now)
"""


@dataclass(frozen=True)
class Slot:
    """A held place under a target's concurrency cap, or the wait before one frees up."""

    token: str | None
    wait: float

    @property
    def acquired(self) -> bool:
        return self.token is not None


class Pacer(Protocol):
    def reserve(self, key: str, *, rate: float, burst: int) -> float: ...

    def block(self, key: str, seconds: float) -> None: ...

    def acquire(self, key: str, *, limit: int, lease_seconds: float) -> Slot: ...

    def release(self, key: str, token: str) -> None: ...


class RedisPacer:
    """Limits shared by every process that reaches the same Redis."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._reserve = client.register_script(_RESERVE_SCRIPT)
        self._block = client.register_script(_BLOCK_SCRIPT)
        self._acquire = client.register_script(_ACQUIRE_SCRIPT)

    def reserve(self, key: str, *, rate: float, burst: int) -> float:
        """0 when a request may go now (and it is counted), else the seconds to wait (nothing counted).

        A rate of 0 means no limit; a block (a server's Retry-After) holds either way.
        """
        interval = 1.0 / rate if rate > 0 else 0.0
        try:
            return float(
                self._reserve(
                    keys=[f"pace:rate:{key}", f"pace:block:{key}"],
                    args=[interval, interval * (max(burst, 1) - 1)],
                )
            )
        except RedisError as exc:
            return _unavailable("reserve", exc)

    def block(self, key: str, seconds: float) -> None:
        """No request to this target for `seconds` (a Retry-After), whoever asks; a longer block stays.

        Without Redis the block is not shared: the batch that got the Retry-After waits anyway, and
        another batch that meets the same 429 waits in turn.
        """
        try:
            self._block(keys=[f"pace:block:{key}"], args=[seconds])
        except RedisError as exc:
            _unavailable("block", exc)

    def acquire(self, key: str, *, limit: int, lease_seconds: float) -> Slot:
        token = uuid.uuid4().hex
        try:
            wait = float(self._acquire(keys=[f"pace:slots:{key}"], args=[limit, lease_seconds, token]))
        except RedisError as exc:
            return Slot(token=None, wait=_unavailable("acquire", exc))
        return Slot(token=token, wait=0.0) if wait == 0 else Slot(token=None, wait=max(wait, 0.01))

    def release(self, key: str, token: str) -> None:
        try:
            self.client.zrem(f"pace:slots:{key}", token)
        except RedisError as exc:
            # The slot frees itself when its lease runs out (or went with a restarted Redis).
            _unavailable("release", exc)


def _unavailable(operation: str, exc: Exception) -> float:
    logger.warning("pacer unavailable (%s), waiting %.1f s: %s", operation, UNAVAILABLE_WAIT, exc)
    return UNAVAILABLE_WAIT


@dataclass
class LocalPacer:
    """The same limits within one process (no Redis configured)."""

    clock: Any = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _tat: dict[str, float] = field(default_factory=dict)
    _blocked: dict[str, float] = field(default_factory=dict)
    _slots: dict[str, dict[str, float]] = field(default_factory=dict)

    def reserve(self, key: str, *, rate: float, burst: int) -> float:
        with self._lock:
            now = self.clock()
            blocked = self._blocked.get(key, 0.0)
            if blocked > now:
                return blocked - now
            if rate <= 0:
                return 0.0
            interval = 1.0 / rate
            tat = max(self._tat.get(key, now), now)
            wait = tat - now - interval * (max(burst, 1) - 1)
            if wait > 1e-6:  # float rounding of tat must not refuse a request that is due
                return wait
            self._tat[key] = tat + interval
            return 0.0

    def block(self, key: str, seconds: float) -> None:
        with self._lock:
            self._blocked[key] = max(self._blocked.get(key, 0.0), self.clock() + seconds)

    def acquire(self, key: str, *, limit: int, lease_seconds: float) -> Slot:
        with self._lock:
            now = self.clock()
            held = {token: until for token, until in self._slots.get(key, {}).items() if until > now}
            self._slots[key] = held
            if len(held) < limit:
                token = uuid.uuid4().hex
                held[token] = now + lease_seconds
                return Slot(token=token, wait=0.0)
            return Slot(token=None, wait=max(min(held.values()) - now, 0.01))

    def release(self, key: str, token: str) -> None:
        with self._lock:
            self._slots.get(key, {}).pop(token, None)


_local = LocalPacer()


def pacer() -> Pacer:
    """The Redis pacer when the cache is Redis, else this process's own."""
    backend = getattr(cache, "_cache", None)
    get_client = getattr(backend, "get_client", None)
    if get_client is None:
        return _local
    return RedisPacer(get_client(write=True))


def retry_delay(
    attempt: int, *, retry_after: float | None = None, base: float = 2.0, cap: float = 900.0
) -> float:
    """Seconds before retry number `attempt` (1 for the first retry).

    Exponential backoff with jitter (a random delay between half the exponential
    bound and the bound), so deliveries that failed together do not all come back
    together; a server's Retry-After is a floor that the jitter never shortens.
    """
    bound = min(cap, base * (2 ** max(attempt - 1, 0)))
    delay = random.uniform(bound / 2, bound)  # noqa: S311 - jitter, not security
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, max(cap, retry_after or 0.0))
