import importlib
import os
from collections.abc import Iterator

import httpx
import pytest

from provisioning.models import Target, VendorProfile
from tests.provisioning.downstream import TOKEN, scim2_server_process
from tests.provisioning.private_redis import PrivateRedis

SHIPPED = importlib.import_module("provisioning.migrations.0002_shipped_vendor_profiles").PROFILES


@pytest.fixture(autouse=True)
def shipped_profiles(request):  # type: ignore[no-untyped-def]
    """The data migration's profiles, back after a transactional test elsewhere flushed the tables."""
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or bool(
        marker and marker.kwargs.get("transaction")
    )
    if not transactional and marker is None and "db" not in request.fixturenames:
        return
    request.getfixturevalue("transactional_db" if transactional else "db")
    for profile in SHIPPED:
        VendorProfile.objects.get_or_create(name=profile["name"], defaults=profile)


@pytest.fixture
def rfc_profile(db) -> VendorProfile:  # type: ignore[no-untyped-def]
    return VendorProfile.objects.get(name="RFC 7644 (strict)")


@pytest.fixture
def target_factory(rfc_profile):  # type: ignore[no-untyped-def]
    def make(**fields) -> Target:  # type: ignore[no-untyped-def]
        token = fields.pop("token", "downstream-token")
        fields.setdefault("name", f"target-{Target.objects.count() + 1}")
        fields.setdefault("base_url", "http://127.0.0.1:9/scim/v2")
        fields.setdefault("profile", rfc_profile)
        fields.setdefault("scope", Target.Scope.ALL)
        # No rate limit unless a test is about pacing: a loop of deliveries must not be paced.
        fields.setdefault("rate_limit_rps", 0)
        target = Target(**fields)
        target.set_credentials({"token": token})
        target.save()
        return target

    return make


@pytest.fixture(scope="module")
def scim2_url() -> Iterator[str]:
    """scim2-server (PyPI) on a free loopback port, one per test module."""
    with scim2_server_process() as url:
        yield url


@pytest.fixture
def remote(scim2_url) -> Iterator[httpx.Client]:
    """An HTTP client on the downstream, emptied before each test."""
    with httpx.Client(base_url=scim2_url + "/", headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        for endpoint in ("Groups", "Users"):
            for item in client.get(endpoint, params={"count": 1000}).json().get("Resources", []):
                client.delete(f"{endpoint}/{item['id']}")
        yield client


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:  # type: ignore[no-untyped-def]
    if not any(os.access(os.path.join(p, "redis-server"), os.X_OK) for p in os.environ["PATH"].split(":")):
        pytest.skip("redis-server is not installed")
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    if redis.process is not None and redis.process.poll() is None:
        redis.kill()
