"""SCALE-OUT: two web processes, two workers and one beat on one PostgreSQL and one Redis.

Real processes throughout: two gunicorn servers of this project on two loopback ports, two
`celery worker` processes and one `celery beat`, all on this run's database and one Redis, under a
queue prefix of their own (tests/processes.py). The test drives SCIM writes through both web
servers at once from several threads (creates, attribute updates, concurrent membership changes
to the same groups, renames, deactivations, deletes) while the workers push to scim2-server on a
loopback port behind a recorder (tests/provisioning/recording_scim.py). Then:

- the directory holds every write that was acknowledged (no lost update between web processes);
- downstream holds exactly the directory's state (every object once, current attributes, members);
- each object was POSTed once, no object had two writes in flight at once, and no user's title
  ever went back to an older value, although every active delivery's task was sent again every
  0.2 s all along (duplicated messages, as a redelivering broker or a second beat would cause);
- both workers delivered batches, and beat ran in one process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from django.db import connection

from directory.models import Group, Membership, User
from provisioning import queue
from provisioning.models import Delivery, DeliveryAttempt, Target, VendorProfile
from scim_api.services import scim_client_create
from tests.processes import Processes, eventually
from tests.provisioning.recording_scim import RecordingScim, recording_scim

pytestmark = [pytest.mark.celery_worker, pytest.mark.postgres, pytest.mark.redis]

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USERS = 40
GROUPS = 4
TITLES = 4  # v0 at creation, then v1..v3
DEADLINE = 45.0


class Web:
    """One of the web processes, spoken to over HTTP; every answer's status is checked."""

    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=f"{base_url}/scim/v2/",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
            timeout=30,
        )

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        response = self.http.request(method, path, json=body)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def patch(self, path: str, *operations: dict[str, Any]) -> None:
        self.call("PATCH", path, {"schemas": [PATCH], "Operations": list(operations)}, expect=204)


class Echo(threading.Thread):
    """Sends every active delivery's task again every 0.2 s, as a broker redelivering messages or a
    second beat's sweeper would: the leases must turn each extra copy into nothing."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.done = threading.Event()
        self.sent = 0

    def run(self) -> None:
        try:
            while not self.done.wait(0.2):
                ids = list(
                    Delivery.objects.filter(state__in=["queued", "running"]).values_list("pk", flat=True)
                )
                queue.send(ids)
                self.sent += len(ids)
        finally:
            connection.close()


def run_all(tasks: list[Callable[[], Any]]) -> list[Any]:
    """Run the tasks on eight threads; any failure fails the test."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return [future.result() for future in [pool.submit(task) for task in tasks]]


@pytest.fixture
def downstream() -> Iterator[RecordingScim]:
    with recording_scim() as service:
        yield service


@pytest.fixture
def cluster(processes: Processes) -> tuple[Processes, list[str]]:
    """Two workers and one beat (not waited for), then two web servers (each waited for)."""
    for _ in range(2):
        # Leases as long as a slow batch may take on a loaded machine (production: 300 s): no worker
        # dies here, and a lease running out under a live push would be a redelivery by design.
        processes.worker(concurrency=4, loglevel="INFO", PROVISIONING_LEASE_SECONDS="30")
    processes.beat()
    return processes, [processes.web(threads=4) for _ in range(2)]


def differences(service: RecordingScim) -> list[str]:
    """What keeps downstream from holding exactly the directory's users and groups as they are now."""
    state = service.snapshot()
    remote_users = {user.get("externalId"): user for user in state["Users"]}
    remote_groups = {group.get("externalId"): group for group in state["Groups"]}
    problems = []
    for kind, remote in (("users", state["Users"]), ("groups", state["Groups"])):
        ids = [item.get("externalId") for item in remote]
        problems += [f"{kind}: {external_id} twice" for external_id in set(ids) if ids.count(external_id) > 1]
    remote_id = {external_id: item["id"] for external_id, item in {**remote_users, **remote_groups}.items()}
    for user in User.objects.all():
        there = remote_users.pop(str(user.pk), None)
        wanted = {"userName": user.user_name, "title": user.title, "active": user.active}
        got = {key: there.get(key) for key in wanted} if there else None
        if got != wanted:
            problems.append(f"{user.user_name}: {got} instead of {wanted}")
    for group in Group.objects.all():
        there = remote_groups.pop(str(group.pk), None)
        members = Membership.objects.filter(group=group)
        wanted_members = {
            remote_id.get(str(member), f"(not there: {member})")
            for member in [*members.values_list("member_user", flat=True).exclude(member_user=None)]
            + [*members.values_list("member_group", flat=True).exclude(member_group=None)]
        }
        wanted = {"displayName": group.display_name, "members": wanted_members}
        got = (
            {
                "displayName": there.get("displayName"),
                "members": {member["value"] for member in there.get("members") or []},
            }
            if there
            else None
        )
        if got != wanted:
            problems.append(f"group {group.display_name}: {got} instead of {wanted}")
    problems += [f"orphan user {external_id}" for external_id in remote_users]
    problems += [f"orphan group {external_id}" for external_id in remote_groups]
    return problems


def test_two_web_processes_and_two_workers_lose_and_duplicate_nothing(
    cluster: tuple[Processes, list[str]], downstream: RecordingScim
) -> None:
    started = time.monotonic()
    processes, urls = cluster
    target = Target(
        name="downstream",
        base_url=downstream.url,
        profile=VendorProfile.objects.get(name="RFC 7644 (strict)"),
        scope=Target.Scope.ALL,
        deletion_policy=Target.DeletionPolicy.DELETE,
        rate_limit_rps=0,
    )
    target.set_credentials({"token": "downstream-token"})
    target.save()
    _, token = scim_client_create(name="scale-out test")
    webs = [Web(url, token) for url in urls]
    echo = Echo()
    echo.start()

    def web(n: int) -> Web:
        return webs[n % 2]

    # Creates, split between the two web processes, eight at a time.
    answers = run_all(
        [
            lambda n=n: web(n).call(
                "POST",
                "Users",
                {"schemas": [CORE_USER], "userName": f"user-{n:03d}@example.com", "title": "v0"},
                expect=201,
            )
            for n in range(USERS)
        ]
        + [
            lambda n=n: web(n).call(
                "POST", "Groups", {"schemas": [CORE_GROUP], "displayName": f"team-{n}"}, expect=201
            )
            for n in range(GROUPS)
        ]
    )
    users, groups = [user["id"] for user in answers[:USERS]], [group["id"] for group in answers[USERS:]]

    eventually(lambda: len(downstream.posts) >= USERS + GROUPS, "every object created downstream")

    # Three rounds, each racing the deliveries of the one before it: every user's title changes,
    # through the other web process than the last time, while both web processes add members to
    # the same groups at once (one member per request); the last round nests a group in another.
    def title(n: int, version: int) -> None:
        web(n + version).call(
            "PATCH",
            f"Users/{users[n]}",
            {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": f"v{version}"}]},
        )

    def join(member: str, group: str, through: int) -> None:
        web(through).patch(f"Groups/{group}", {"op": "add", "path": "members", "value": [{"value": member}]})

    for version in range(1, TITLES):
        run_all(
            [lambda n=n, v=version: title(n, v) for n in range(USERS)]
            + [
                lambda n=n, v=version: join(users[n], groups[(n + v - 1) % GROUPS], n)
                for n in range(USERS)
                if version < 3
            ]
            + ([lambda: join(groups[3], groups[0], 1)] if version == 3 else [])
        )
        # The next round starts once a quarter of the users hold this round's title downstream, and
        # races the deliveries of the rest (a wait, not a sleep: a loaded machine only slows it).
        eventually(
            lambda v=version: sum(f"v{v}" in history for history in downstream.titles.values()) >= USERS // 4,
            f"title v{version} downstream for a quarter of the users",
        )

    # Leavers and movers, again through both: every fifth user deactivated, two deleted, every
    # seventh leaves one group, and a group renamed.
    deleted = {users[1], users[2]}
    run_all(
        [
            lambda n=n: web(n).call(
                "PATCH",
                f"Users/{users[n]}",
                {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]},
            )
            for n in range(0, USERS, 5)
        ]
        + [lambda n=n: web(n).call("DELETE", f"Users/{users[n]}", expect=204) for n in (1, 2)]
        + [
            lambda n=n: web(n).patch(
                f"Groups/{groups[n % GROUPS]}",
                {"op": "remove", "path": f'members[value eq "{users[n]}"]'},
            )
            for n in range(3, USERS, 7)
        ]
        + [
            lambda: web(0).patch(
                f"Groups/{groups[2]}", {"op": "replace", "path": "displayName", "value": "renamed"}
            )
        ]
    )
    written = time.monotonic()

    # The directory kept every acknowledged write, whichever process took it.
    alive = User.objects.filter(pk__in=users)
    assert {str(pk) for pk in alive.values_list("pk", flat=True)} == set(users) - deleted
    assert {str(pk) for pk in alive.filter(active=False).values_list("pk", flat=True)} == set(users[::5])
    assert set(alive.values_list("title", flat=True)) == {f"v{TITLES - 1}"}
    for g, group in enumerate(groups):
        joined = {users[n] for n in range(USERS) if g in (n % GROUPS, (n + 1) % GROUPS)}
        left = {users[n] for n in range(3, USERS, 7) if n % GROUPS == g}
        members = Membership.objects.filter(group_id=group, member_user__isnull=False)
        assert {str(pk) for pk in members.values_list("member_user", flat=True)} == joined - left - deleted
    assert Group.objects.get(pk=groups[2]).display_name == "renamed"
    assert Membership.objects.filter(group_id=groups[0], member_group_id=groups[3]).exists()

    # Downstream converges on exactly that state.
    deadline = time.monotonic() + DEADLINE
    problems = differences(downstream)
    while problems and time.monotonic() < deadline:
        time.sleep(0.3)
        problems = differences(downstream)
    assert not problems, f"not within {DEADLINE}s: {problems[:10]} ({len(problems)} in all)"
    converged = time.monotonic()
    echo.done.set()
    echo.join()

    # Each object POSTed once, never two writes to one object at once, titles never went back.
    created = [*users, *groups]
    assert {external_id: downstream.posts[external_id] for external_id in created} == dict.fromkeys(
        created, 1
    )
    assert sum(downstream.posts.values()) == len(created)
    assert downstream.overlaps == []
    for remote_id, history in downstream.titles.items():
        numbers = [int(title[1:]) for title in history if title]
        assert numbers == sorted(numbers), f"{remote_id} received {history}"
    # The order check has teeth: a quarter of the users at least received v1 before v3, besides v0.
    assert sum(len(history) > 2 for history in downstream.titles.values()) >= USERS // 4
    # Downstream can hold a batch's last write a moment before the worker records the batch.
    eventually(
        lambda: not Delivery.objects.filter(state__in=["failed", "held", "running"]).exists(),
        "every delivery recorded, none failed or held",
        timeout=10,
    )
    assert not DeliveryAttempt.objects.filter(outcome__in=["failed", "disputed"]).exists()

    # Both workers delivered; beat ran in its own single process.
    batches = {
        launched.name: sum(
            "deliver_batch[" in line and "succeeded" in line for line in launched.output().splitlines()
        )
        for launched in processes.launched
        if launched.name.startswith("worker-")
    }
    assert len(batches) == 2
    assert all(batches.values()), f"a worker delivered nothing: {batches}"
    assert [launched.name for launched in processes.launched if "beat" in launched.name] == ["beat-0"]
    print(
        f"scale-out: {USERS} users, {GROUPS} groups, {sum(downstream.writes.values())} writes downstream "
        f"({dict(downstream.writes)}), batches per worker {batches}, {echo.sent} deliveries sent again; "
        f"driving took "
        f"{written - started:.1f}s, converged {converged - written:.1f}s after the last write"
    )
