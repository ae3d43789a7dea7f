"""Per-client rate limits: 429 with Retry-After and a SCIM error, counted in Redis when configured."""

import os
from http import HTTPStatus

import pytest
from django.core.cache import cache
from django.test import Client

from scim_api.models import ScimClient
from scim_api.services import scim_client_create
from tests.scim_api.conftest import Scim

pytestmark = pytest.mark.django_db


def _burst(client: Client, limit: int, **extra: object) -> list:  # type: ignore[type-arg]
    scim_client, token = scim_client_create(name=f"limited-{limit}", **extra)  # type: ignore[arg-type]
    ScimClient.objects.filter(pk=scim_client.pk).update(requests_per_minute=limit)
    scim = Scim(client, token)
    return [scim.get("Users") for _ in range(limit + 2)]


def test_a_client_over_its_limit_gets_429_with_retry_after(client):
    cache.clear()
    replies = _burst(client, 3)
    assert [reply.status for reply in replies] == [200, 200, 200, 429, 429]
    limited = replies[-1]
    assert limited.body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert limited.body["status"] == "429"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


def test_limits_are_per_client(client):
    cache.clear()
    _burst(client, 2)
    _, token = scim_client_create(name="unlimited")
    assert Scim(client, token).get("Users").status == HTTPStatus.OK


def test_zero_means_no_limit(client, settings):
    cache.clear()
    settings.SCIM_API = {**settings.SCIM_API, "RATE_LIMIT_PER_MINUTE": 0}
    _, token = scim_client_create(name="default-limit")
    scim = Scim(client, token)
    assert {scim.get("Users").status for _ in range(20)} == {HTTPStatus.OK}


@pytest.mark.redis
def test_limits_are_counted_in_redis_when_it_is_configured(client, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["TEST_REDIS_URL"],
            "KEY_PREFIX": f"test-{os.getpid()}",
        }
    }
    from django.core.cache import caches

    redis = caches["default"]._cache.get_client()  # type: ignore[attr-defined]
    pattern = f"test-{os.getpid()}:*scim-rate*"
    try:
        replies = _burst(client, 2)
        assert [reply.status for reply in replies] == [200, 200, 429, 429]
        assert redis.keys(pattern), "the counter lives in Redis"
    finally:
        # Only this test's keys: the Redis database is shared with other runs.
        for key in redis.keys(pattern):
            redis.delete(key)
