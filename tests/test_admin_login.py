"""Admin sign-in: failures throttled per username and per client address, every attempt audited."""

import os
import uuid
from collections.abc import Iterator
from http import HTTPStatus

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from directory.models import AuditEntry

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery"
LOGIN = "/admin/login/"
THROTTLED = "Too many failed sign-in attempts for this username or from your address."

CACHE_BACKENDS = {
    "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "login-tests"},
    "redis": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    },
}


@pytest.fixture(params=["locmem", pytest.param("redis", marks=pytest.mark.redis)])
def counters(request: pytest.FixtureRequest) -> Iterator[str]:
    # A key prefix of its own per test: the Redis database is shared with other tests' workers, so
    # nothing is flushed; the counters expire with their window.
    backend = {**CACHE_BACKENDS[request.param], "KEY_PREFIX": f"login-tests-{uuid.uuid4().hex}"}
    with override_settings(
        CACHES={"default": backend},
        ADMIN_LOGIN_MAX_FAILURES_PER_USER=3,
        ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS=5,
        ADMIN_LOGIN_WINDOW=600,
    ):
        yield request.param


@pytest.fixture
def operator(db):  # type: ignore[no-untyped-def]
    return get_user_model().objects.create_user("alice", password=PASSWORD, is_staff=True)


def _login(username: str, password: str, address: str = "192.0.2.1", **extra: str) -> tuple[int, str]:
    response = Client().post(
        LOGIN, {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=address, **extra
    )
    return response.status_code, response.content.decode()


def test_username_locked_after_failures_even_with_the_right_password(counters: str, operator) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        status, body = _login("alice", "wrong-password", address="192.0.2.1")
        assert status == HTTPStatus.OK
        assert "Please enter the correct username and password" in body
    # From another address too: the limit is the username's.
    status, body = _login("alice", PASSWORD, address="198.51.100.7")
    assert status == HTTPStatus.OK
    assert THROTTLED in body
    assert "Try again in 10 minute(s)." in body
    # Another operator on the first address is not locked out by alice's counter.
    get_user_model().objects.create_user("bob", password=PASSWORD, is_staff=True)
    assert _login("bob", PASSWORD, address="192.0.2.1")[0] == HTTPStatus.FOUND
    actions = list(
        AuditEntry.objects.filter(object_type="operator").order_by("id").values_list("action", "object_key")
    )
    assert actions == [("login_failed", "alice")] * 3 + [("login_throttled", "alice"), ("login", "bob")]


def test_address_locked_after_failures_across_usernames(counters: str, operator) -> None:  # type: ignore[no-untyped-def]
    for name in ("a", "b", "c", "d", "e"):
        _login(name, "wrong-password", address="203.0.113.9")
    status, body = _login("alice", PASSWORD, address="203.0.113.9")
    assert THROTTLED in body
    assert _login("alice", PASSWORD, address="192.0.2.1")[0] == HTTPStatus.FOUND


def test_success_clears_the_username_counter(counters: str, operator) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2):
        _login("alice", "wrong-password")
    assert _login("alice", PASSWORD)[0] == HTTPStatus.FOUND
    for _ in range(2):
        _login("alice", "wrong-password")
    # Two failures since the success: under the limit of three.
    assert _login("alice", PASSWORD)[0] == HTTPStatus.FOUND


@override_settings(ADMIN_LOGIN_TRUSTED_PROXIES=1)
def test_behind_a_proxy_the_forwarded_address_is_counted(counters: str, operator) -> None:  # type: ignore[no-untyped-def]
    # Every request reaches the app from the proxy (10.0.0.1); the client is the last forwarded hop.
    for name in ("a", "b", "c", "d", "e"):
        _login(name, "x", address="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    assert THROTTLED in _login("alice", PASSWORD, address="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")[1]
    # Another client behind the same proxy, faking a first hop, is not the locked address.
    assert (
        _login("alice", PASSWORD, address="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9, 192.0.2.50")[0]
        == HTTPStatus.FOUND
    )
