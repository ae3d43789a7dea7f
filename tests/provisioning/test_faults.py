"""FAULTS: real `celery worker` processes on Redis push to a loopback SCIM service that misbehaves.

Each test changes users through the directory's services, lets the target fail in one way or
another (429 with Retry-After, 503 bursts, timeouts, connection resets, a 404 on update, a 409 on
create, a worker killed with SIGKILL, a Redis server restarted), then waits until the target holds
exactly the desired state: every user once (no duplicate, nothing missing, nothing extra), with its
current attributes, and no user's history going back to an older value (per-object order).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.utils import timezone

from directory import services as directory
from directory.actors import Actor
from directory.models import ChangeEvent, User
from directory.services import NewUser, users_create_many
from provisioning.models import Delivery, Target, VendorProfile
from provisioning.services import target_full_sync
from tests.processes import Processes, eventually
from tests.provisioning.faulty_scim import Fault, FaultyScim, faulty_scim

pytestmark = [pytest.mark.celery_worker, pytest.mark.postgres, pytest.mark.redis]

ACTOR = Actor.system("fault tests")


@pytest.fixture
def workers(processes: Processes) -> Processes:
    return processes


def make_target(service: FaultyScim, name: str = "faulty", **fields: object) -> Target:
    settings: dict[str, object] = {
        "profile": VendorProfile.objects.get(name="RFC 7644 (strict)"),
        "scope": Target.Scope.ALL,
        "deletion_policy": Target.DeletionPolicy.DISABLE,
        "connect_timeout": 1.0,
        "read_timeout": 1.0,
        "rate_limit_rps": 0,
        "max_concurrency": 4,
    }
    target = Target(name=name, base_url=service.url, **{**settings, **fields})
    target.set_credentials({"token": "t"})
    target.save()
    return target


def create_users(count: int, prefix: str = "user") -> list[User]:
    return users_create_many(
        actor=ACTOR,
        users=[
            NewUser(user_name=f"{prefix}-{n:03d}@example.com", attributes={"title": "v0"})
            for n in range(count)
        ],
    )


def differences(service: FaultyScim) -> list[str]:
    """What keeps the target from holding exactly the directory's users as they are now."""
    remote = service.by_external_id()
    problems = []
    for user in User.objects.all():
        found = remote.pop(str(user.pk), [])
        if len(found) != 1:
            problems.append(f"{user.user_name}: {len(found)} on the target")
            continue
        there = found[0]
        wanted = {"userName": user.user_name, "title": user.title, "active": user.active}
        got = {key: there.get(key) for key in wanted}
        if got != wanted:
            problems.append(f"{user.user_name}: {got} instead of {wanted}")
    problems += [f"orphan {external_id}" for external_id in remote]
    return problems


def assert_order_kept(service: FaultyScim) -> None:
    """Titles are v0, v1, v2...: what a user received never goes back to an older one."""
    for remote_id, titles in service.history.items():
        numbers = [int(title[1:]) for title in titles if title and title.startswith("v")]
        assert numbers == sorted(numbers), f"{remote_id} received {titles}"


def converged(service: FaultyScim, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    problems = differences(service)
    while problems and time.monotonic() < deadline:
        time.sleep(0.3)
        problems = differences(service)
    assert not problems, f"not within {timeout}s: {problems[:10]} ({len(problems)} in all)"


def test_http_faults_end_in_exactly_the_desired_state(workers: Processes) -> None:
    with faulty_scim() as service:
        target = make_target(service)
        # Creates meet: 429 with Retry-After, a 503 burst, timeouts (the server creates anyway,
        # late), resets after the create was applied, a 409 (someone created the user first),
        # and failing lookups.
        # The race comes first: user-007's first POST meets it whatever the other faults did before.
        service.add(Fault("POST", "race_create", match="user-007@", times=1))
        service.add(Fault("POST", "status", 429, {"Retry-After": "1"}, times=2))
        service.add(Fault("POST", "status", 503, times=5))
        service.add(Fault("POST", "sleep", seconds=1.5, times=2))
        service.add(Fault("POST", "reset", times=2))
        service.add(Fault("GET", "status", 503, times=2))
        workers.worker(beat=True)
        users = create_users(20)
        converged(service, 40)
        assert service.count("POST", 409) >= 1
        assert service.count("POST", 429) == 2
        assert service.count("POST", 503) == 5

        # Updates meet: users deleted downstream behind our back (404, created again), a 503 burst,
        # a 429, a reset after the change was applied; several changes per user in a row.
        gone = [users[3], users[4], users[5]]
        for remote_id in [
            found[0]["id"] for found in (service.by_external_id()[str(user.pk)] for user in gone)
        ]:
            with service.lock:
                service.users.pop(remote_id)
        service.add(Fault("PATCH", "status", 503, times=4))
        service.add(Fault("PATCH", "status", 429, {"Retry-After": "1"}, times=1))
        service.add(Fault("PATCH", "reset", times=2))
        for version in (1, 2, 3):
            for user in users[: 10 if version > 1 else 20]:
                directory.user_update(actor=ACTOR, user_id=user.pk, title=f"v{version}")
        directory.user_deactivate(actor=ACTOR, user_id=users[0].pk)
        directory.user_deactivate(actor=ACTOR, user_id=users[19].pk)
        converged(service, 40)
        assert service.count("PATCH", 404) >= len(gone)
        assert service.count("PATCH", 503) == 4
        assert_order_kept(service)
        # The circuit went back to healthy once requests succeeded again.
        target.refresh_from_db()
        assert target.circuit_state == Target.CircuitState.HEALTHY
        # Downstream can hold a batch's last write a moment before the worker records the batch.
        eventually(
            lambda: not Delivery.objects.filter(state__in=["failed", "running"]).exists(),
            "every delivery recorded, none failed",
            timeout=10,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own, without persistence: a restart loses every queued message."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.tmp_path = tmp_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        eventually(self._up, "redis-server listening", timeout=10, every=0.05)

    def _up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:  # type: ignore[no-untyped-def]
    if not any(os.access(os.path.join(p, "redis-server"), os.X_OK) for p in os.environ["PATH"].split(":")):
        pytest.skip("redis-server is not installed")
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    if redis.process is not None and redis.process.poll() is None:
        redis.kill()


@pytest.mark.xfail(
    strict=False,
    reason="known gap (issue 5 note): on a loaded machine, changes made right after the Redis restart "
    "were sometimes still not applied 60 s later; under investigation, not claimed as working",
)
def test_a_killed_worker_and_a_restarted_redis_lose_nothing(
    transactional_db, tmp_path, monkeypatch, private_redis: PrivateRedis
) -> None:
    workers = Processes(tmp_path, private_redis.url)
    workers.route_here(monkeypatch)
    try:
        with faulty_scim(delay=0.003) as service:
            make_target(service)
            first = workers.worker(beat=True)
            users = create_users(300)
            for user in users[:150]:
                directory.user_update(actor=ACTOR, user_id=user.pk, title="v1")
            eventually(
                lambda: len(service.users) >= 60, "the first worker is part-way", timeout=30, every=0.05
            )
            workers.kill(first)  # kill -9 mid-run: its batches stay leased until their leases expire
            done_before = len(service.users)
            assert done_before < 300, "the kill came too late to matter"
            for user in users[100:200]:
                directory.user_update(actor=ACTOR, user_id=user.pk, title="v2")
            workers.worker(beat=True)
            eventually(lambda: len(service.users) > done_before + 20, "the second worker goes on", timeout=30)
            # Redis dies with every queued task in it, and comes back empty on the same port.
            private_redis.kill()
            for user in users[150:250]:
                directory.user_update(actor=ACTOR, user_id=user.pk, title="v3")
            time.sleep(1)
            private_redis.start()
            for user in users[::7]:
                directory.user_update(actor=ACTOR, user_id=user.pk, title="v4")
            directory.user_deactivate(actor=ACTOR, user_id=users[1].pk)
            converged(service, 60)
            assert_order_kept(service)
    finally:
        workers.stop_all()


def test_a_slow_target_does_not_delay_another(workers: Processes) -> None:
    with faulty_scim() as slow_service, faulty_scim() as fast_service:
        # Every request to the slow target takes 3 s, three times its read timeout.
        slow_service.add(Fault("*", "sleep", seconds=3, times=10_000))
        slow = make_target(slow_service, name="slow", read_timeout=1.0)
        make_target(fast_service, name="fast")
        workers.worker(beat=True, concurrency=4)
        time.sleep(3)  # the worker is up: what follows measures delivery, not start-up
        started = time.monotonic()
        create_users(40)
        eventually(lambda: len(fast_service.users) == 40, "the fast target has everyone", timeout=15)
        fast_took = time.monotonic() - started
        assert fast_took < 8, f"the fast target took {fast_took:.1f} s"
        assert not slow_service.by_external_id() or len(slow_service.users) < 40
        slow.refresh_from_db()
        eventually(
            lambda: Target.objects.get(pk=slow.pk).circuit_state != Target.CircuitState.HEALTHY,
            "the slow target is degraded",
            timeout=15,
        )
        assert Target.objects.get(name="fast").circuit_state == Target.CircuitState.HEALTHY


def test_a_backfill_of_ten_thousand_does_not_delay_a_leaver(workers: Processes) -> None:
    with faulty_scim(delay=0.002) as service:
        target = make_target(service)
        users = create_users(10_000, prefix="backfill")
        # A directory that was there before the target: its changes were relayed long ago.
        ChangeEvent.objects.filter(processed__isnull=True).update(processed=timezone.now())
        leaver = users[-1]
        workers.worker(beat=True, concurrency=4)
        time.sleep(3)
        target_full_sync(target=target)
        eventually(lambda: len(service.users) >= 200, "the backfill is under way", timeout=30)
        started = time.monotonic()
        directory.user_deactivate(actor=ACTOR, user_id=leaver.pk)

        def leaver_arrived() -> bool:
            found = service.by_external_id().get(str(leaver.pk))
            return bool(found) and found[0].get("active") is False

        eventually(leaver_arrived, "the leaver is disabled downstream", timeout=20, every=0.05)
        took = time.monotonic() - started
        remaining = Delivery.objects.filter(
            target=target, state__in=["queued", "running"], priority=2
        ).count()
        assert took < 3, f"the leaver took {took:.1f} s behind the backfill"
        assert remaining > 5000, f"the backfill was nearly done ({remaining} left): the test proves nothing"
        # It was created (it was not there yet) and disabled, before most of the backfill.
        assert uuid.UUID(service.by_external_id()[str(leaver.pk)][0]["externalId"]) == leaver.pk
