"""Pacing toward targets: GCRA rate limit with bursts, concurrency slots, retry delays."""

import os
import threading
import uuid

import pytest

from provisioning.pacing import LocalPacer, RedisPacer, pacer, retry_delay


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_local_rate_allows_a_burst_then_one_request_per_interval():
    clock = FakeClock()
    local = LocalPacer(clock=clock)
    assert [local.reserve("t", rate=2, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert local.reserve("t", rate=2, burst=3) == pytest.approx(0.5)
    clock.now += 0.5
    assert local.reserve("t", rate=2, burst=3) == 0.0
    assert local.reserve("t", rate=2, burst=3) == pytest.approx(0.5)
    # Another target has its own bucket.
    assert local.reserve("other", rate=2, burst=1) == 0.0


def test_local_rate_refills_up_to_the_burst_only():
    clock = FakeClock()
    local = LocalPacer(clock=clock)
    local.reserve("t", rate=10, burst=2)
    clock.now += 3600  # a long idle time does not bank more than the burst
    assert [local.reserve("t", rate=10, burst=2) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]


def test_local_slots_cap_concurrency_and_free_on_release_or_lease_expiry():
    clock = FakeClock()
    local = LocalPacer(clock=clock)
    first = local.acquire("t", limit=2, lease_seconds=30)
    second = local.acquire("t", limit=2, lease_seconds=60)
    third = local.acquire("t", limit=2, lease_seconds=30)
    assert first.acquired
    assert second.acquired
    assert not third.acquired
    assert third.wait == pytest.approx(30)
    local.release("t", first.token)
    assert local.acquire("t", limit=2, lease_seconds=30).acquired
    clock.now += 61  # a worker killed mid-request never releases: its lease runs out
    assert local.acquire("t", limit=2, lease_seconds=30).acquired


def test_retry_delay_grows_with_jitter_and_honours_retry_after():
    for attempt, bound in [(1, 2.0), (2, 4.0), (5, 32.0)]:
        delays = {retry_delay(attempt) for _ in range(50)}
        assert all(bound / 2 <= delay <= bound for delay in delays)
        assert len(delays) > 1, "jittered"
    assert all(retry_delay(30) <= 900 for _ in range(20))
    assert all(retry_delay(1, retry_after=120) >= 120 for _ in range(20))
    assert retry_delay(1, retry_after=3600) == 3600, "a server's Retry-After beyond the cap is still honoured"


def test_without_redis_the_process_pacer_is_used(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert isinstance(pacer(), LocalPacer)


@pytest.fixture
def redis_pacer(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["TEST_REDIS_URL"],
        }
    }
    shared = pacer()
    assert isinstance(shared, RedisPacer)
    return shared


@pytest.mark.redis
def test_redis_rate_is_shared_by_racing_workers(redis_pacer):
    key = f"test-{uuid.uuid4().hex}"
    granted: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        # Each thread its own connection, as separate worker processes would have.
        own = RedisPacer(redis_pacer.client.__class__(connection_pool=redis_pacer.client.connection_pool))
        for _ in range(10):
            wait = own.reserve(key, rate=1, burst=5)
            if wait == 0:
                with lock:
                    granted.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 5, "exactly the burst passes at once, whoever asks"
    wait = redis_pacer.reserve(key, rate=1, burst=5)
    assert 0.9 < wait <= 1.0
    redis_pacer.client.delete(f"pace:rate:{key}")


@pytest.mark.redis
def test_redis_slots_cap_concurrency_across_processes(redis_pacer):
    key = f"test-{uuid.uuid4().hex}"
    held = [redis_pacer.acquire(key, limit=3, lease_seconds=30) for _ in range(5)]
    assert [slot.acquired for slot in held] == [True, True, True, False, False]
    assert 29 < held[3].wait <= 30
    redis_pacer.release(key, held[0].token)
    assert redis_pacer.acquire(key, limit=3, lease_seconds=30).acquired
    short = f"test-{uuid.uuid4().hex}"
    assert redis_pacer.acquire(short, limit=1, lease_seconds=0.05).acquired
    assert not redis_pacer.acquire(short, limit=1, lease_seconds=0.05).acquired
    threading.Event().wait(0.1)
    assert redis_pacer.acquire(short, limit=1, lease_seconds=0.05).acquired, "an expired lease frees its slot"
    redis_pacer.client.delete(f"pace:slots:{key}", f"pace:slots:{short}")
