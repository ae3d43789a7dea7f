"""END TO END: every change made through the directory's SCIM API arrives at two real downstream servers.

Real processes throughout: the directory is pytest-django's live server; a
`celery worker` with embedded beat (relay every half second, sweeper) runs on
Redis and on this run's database; the downstream targets listen on loopback
ports: `scim2-server` from PyPI (a SCIM server nobody here wrote) and a second
instance of this project (gunicorn on a database of its own,
holding a token made by `create_scim_token`). The test reads each downstream's
state back over SCIM, polling with a deadline; no sleep is an assertion.
"""

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from django.db import connection
from pytest_django.live_server_helper import LiveServer

from directory.models import Group
from provisioning.models import Delivery, DeliveryAttempt, Target, TargetAssignment, VendorProfile
from provisioning.services import target_scope_update
from scim_api.services import scim_client_create
from tests import processes
from tests.processes import Processes, database_url
from tests.provisioning.downstream import TOKEN, scim2_server_process

pytestmark = [pytest.mark.celery_worker, pytest.mark.postgres, pytest.mark.redis]

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
# Generous: CI shares two cores between this test, its server, a worker and two downstreams.
DEADLINE = 60.0


@pytest.fixture
def worker(processes: Processes) -> None:
    """`celery worker --beat` on Redis and this run's database; what this process queues goes to it."""
    processes.worker(beat=True, loglevel="INFO", PROVISIONING_RELAY_INTERVAL="0.5")


@pytest.fixture
def scim2_server() -> Iterator[str]:
    with scim2_server_process() as url:
        yield url


@pytest.fixture
def second_instance(processes: Processes) -> Iterator[tuple[str, str]]:
    """This project again, on its own database, broker-less; yields (SCIM base URL, bearer token)."""
    name = f"{connection.settings_dict['NAME']}_downstream"
    admin_url = database_url("postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    own = {
        "DATABASE_URL": database_url(name),
        "REDIS_URL": "",
        "CELERY_RESULT_BACKEND": "",
        "SCIM_TOKEN_CACHE_SECONDS": "0",
    }
    processes.manage("migrate", "--noinput", "-v", "0", **own)
    token = processes.manage("create_scim_token", "upstream directory", **own).strip().splitlines()[-1]
    try:
        yield f"{processes.web(**own)}/scim/v2", token
    finally:
        # FORCE: the server (stopped later, with the other processes) still holds connections.
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Scim:
    """A small SCIM client over HTTP for the test's own reads and writes."""

    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
            timeout=10,
        )

    def call(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        response = self.http.request(method, path, json=body)
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def one(self, endpoint: str, attribute: str, value: str) -> dict[str, Any] | None:
        body = self.http.get(endpoint, params={"filter": f'{attribute} eq "{value}"'}).json()
        resources = body.get("Resources") or []
        assert len(resources) <= 1, f"duplicates downstream for {attribute} {value}: {resources}"
        return resources[0] if resources else None

    def members(self, group: dict[str, Any] | None) -> set[str]:
        if group is None:
            return set()
        full = self.call("GET", f"Groups/{group['id']}")
        return {member["value"] for member in full.get("members") or []}

    def id_of(self, endpoint: str, attribute: str, value: str) -> str | None:
        found = self.one(endpoint, attribute, value)
        return found["id"] if found else None


def eventually(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """processes.eventually, with the provisioning state dumped when the deadline passes."""
    try:
        return processes.eventually(check, what, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_provisioning_state()}") from None


def _provisioning_state() -> str:
    """What the engine did and holds, for a failure message: a timeout alone says nothing about why."""
    lines = ["deliveries:"]
    for row in Delivery.objects.order_by("id").values_list(
        "target__name",
        "object_type",
        "object_id",
        "state",
        "priority",
        "attempts",
        "next_attempt_at",
        "last_error",
    ):
        lines.append(f"  {row}")
    lines.append("provisioning log (last 40):")
    for row in DeliveryAttempt.objects.order_by("-id").values_list(
        "target__name", "object_repr", "action", "outcome", "status", "error"
    )[:40]:
        lines.append(f"  {row}")
    lines.append("targets:")
    for row in Target.objects.values_list(
        "name", "circuit_state", "circuit_reason", "circuit_next_attempt_at"
    ):
        lines.append(f"  {row}")
    return "\n".join(lines)


def user_body(user_name: str, **extra: Any) -> dict[str, Any]:
    return {
        "schemas": [CORE_USER],
        "userName": user_name,
        "name": {"givenName": user_name.split("@")[0]},
        **extra,
    }


def test_changes_in_the_directory_arrive_at_scim2_server_and_a_second_instance(
    live_server: LiveServer, worker: None, scim2_server: str, second_instance: tuple[str, str]
) -> None:
    _, upstream_token = scim_client_create(name="test operator")
    directory = Scim(f"{live_server.url}/scim/v2", upstream_token)
    other_url, other_token = second_instance
    rfc = Scim(scim2_server, TOKEN)
    ours = Scim(other_url, other_token)

    # Target 1: scim2-server, strict RFC, everyone, deletes what is deleted.
    one = Target(
        name="scim2-server",
        base_url=scim2_server,
        profile=VendorProfile.objects.get(name="RFC 7644 (strict)"),
        scope=Target.Scope.ALL,
        deletion_policy=Target.DeletionPolicy.DELETE,
    )
    one.set_credentials({"token": TOKEN})
    one.save()
    # Target 2: the second instance, spoken to in Entra's dialect, members of one assigned group only.
    provisioned = directory.call(
        "POST", "Groups", {"schemas": [CORE_GROUP], "displayName": "Provisioned"}, 201
    )
    two = Target(
        name="second instance",
        base_url=other_url,
        profile=VendorProfile.objects.get(name="Entra-like"),
        scope=Target.Scope.ASSIGNED,
        deletion_policy=Target.DeletionPolicy.DISABLE,
    )
    two.set_credentials({"token": other_token})
    two.save()
    TargetAssignment.objects.create(target=two, group=Group.objects.get(pk=provisioned["id"]))
    target_scope_update(target=two)

    # Users, a nested group, an unassigned group.
    alice = directory.call("POST", "Users", user_body("alice@example.com", title="Engineer"), 201)
    bob = directory.call("POST", "Users", user_body("bob@example.com"), 201)
    carol = directory.call("POST", "Users", user_body("carol@example.com"), 201)
    dave = directory.call("POST", "Users", user_body("dave@example.com"), 201)
    platform = directory.call(
        "POST",
        "Groups",
        {"schemas": [CORE_GROUP], "displayName": "Platform", "members": [{"value": carol["id"]}]},
        201,
    )
    sales = directory.call(
        "POST",
        "Groups",
        {"schemas": [CORE_GROUP], "displayName": "Sales", "members": [{"value": dave["id"]}]},
        201,
    )
    directory.call(
        "PATCH",
        f"Groups/{provisioned['id']}",
        {
            "schemas": [PATCH],
            "Operations": [
                {
                    "op": "add",
                    "path": "members",
                    "value": [{"value": alice["id"]}, {"value": bob["id"]}, {"value": platform["id"]}],
                }
            ],
        },
    )

    def has_everyone(server: Scim, users: list[str], groups: list[str]) -> bool:
        return all(server.one("Users", "userName", name) for name in users) and all(
            server.one("Groups", "displayName", name) for name in groups
        )

    everyone = ["alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]
    eventually(
        lambda: has_everyone(rfc, everyone, ["Provisioned", "Platform", "Sales"]), "scim2-server has everyone"
    )
    in_scope = ["alice@example.com", "bob@example.com", "carol@example.com"]
    eventually(
        lambda: has_everyone(ours, in_scope, ["Provisioned", "Platform"]), "second instance has the scope"
    )
    assert ours.one("Users", "userName", "dave@example.com") is None
    assert ours.one("Groups", "displayName", "Sales") is None

    for server in (rfc, ours):
        ids = {name: server.id_of("Users", "userName", name) for name in in_scope}
        platform_id = server.id_of("Groups", "displayName", "Platform")
        eventually(
            lambda server=server, ids=ids, platform_id=platform_id: (
                server.members(server.one("Groups", "displayName", "Provisioned"))
                == {ids["alice@example.com"], ids["bob@example.com"], platform_id}
            ),
            "Provisioned holds alice, bob and the nested Platform",
        )
        eventually(
            lambda server=server, ids=ids: (
                server.members(server.one("Groups", "displayName", "Platform")) == {ids["carol@example.com"]}
            ),
            "Platform holds carol",
        )
        assert server.one("Users", "userName", "alice@example.com")["externalId"] == alice["id"]

    # Update and rename.
    directory.call(
        "PATCH",
        f"Users/{alice['id']}",
        {
            "schemas": [PATCH],
            "Operations": [
                {"op": "replace", "path": "userName", "value": "alice.smith@example.com"},
                {"op": "replace", "path": "title", "value": "Principal Engineer"},
            ],
        },
        200,
    )
    for server in (rfc, ours):
        renamed = eventually(
            lambda server=server: server.one("Users", "userName", "alice.smith@example.com"), "alice renamed"
        )
        assert renamed["externalId"] == alice["id"]
        assert server.call("GET", f"Users/{renamed['id']}")["title"] == "Principal Engineer"
        assert server.one("Users", "userName", "alice@example.com") is None

    # Deactivate.
    directory.call(
        "PATCH",
        f"Users/{bob['id']}",
        {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]},
    )
    for server in (rfc, ours):
        eventually(
            lambda server=server: (
                server.call("GET", f"Users/{server.id_of('Users', 'userName', 'bob@example.com')}")["active"]
                is False
            ),
            "bob deactivated",
        )

    # Carol leaves the nested group: out of the second instance's scope (disabled there), and out of
    # Platform on both.
    directory.call(
        "PATCH",
        f"Groups/{platform['id']}",
        {"schemas": [PATCH], "Operations": [{"op": "remove", "path": f'members[value eq "{carol["id"]}"]'}]},
    )
    for server in (rfc, ours):
        eventually(
            lambda server=server: server.members(server.one("Groups", "displayName", "Platform")) == set(),
            "Platform is empty",
        )
    carol_there = eventually(
        lambda: (
            (found := ours.one("Users", "userName", "carol@example.com"))
            and found["active"] is False
            and found
        ),
        "carol disabled on the second instance",
    )
    assert carol_there["externalId"] == carol["id"]
    assert rfc.call("GET", f"Users/{rfc.id_of('Users', 'userName', 'carol@example.com')}")["active"] is True

    # Move a member out of one group and into another, then delete a user and a group.
    directory.call(
        "PATCH",
        f"Groups/{sales['id']}",
        {
            "schemas": [PATCH],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": carol["id"]}]}],
        },
    )
    carol_rfc = rfc.id_of("Users", "userName", "carol@example.com")
    eventually(lambda: carol_rfc in rfc.members(rfc.one("Groups", "displayName", "Sales")), "carol in Sales")

    directory.call("DELETE", f"Users/{dave['id']}", expect=204)
    directory.call("DELETE", f"Groups/{sales['id']}", expect=204)
    eventually(lambda: rfc.one("Users", "userName", "dave@example.com") is None, "dave deleted downstream")
    eventually(lambda: rfc.one("Groups", "displayName", "Sales") is None, "Sales deleted downstream")
    # Deleted in the directory: the Entra-like profile removes users softly (active=false).
    directory.call("DELETE", f"Users/{alice['id']}", expect=204)
    eventually(lambda: rfc.one("Users", "userName", "alice.smith@example.com") is None, "alice deleted")
    eventually(
        lambda: (ours.one("Users", "userName", "alice.smith@example.com") or {}).get("active") is False,
        "alice disabled on the second instance",
    )

    # Nothing was duplicated anywhere along the way, and the worker logged every push.
    assert rfc.call("GET", "Users")["totalResults"] == 2
    assert ours.call("GET", "Users")["totalResults"] == 3
    log = DeliveryAttempt.objects.all()
    # A group created before its members had remote ids logs "create" with outcome "waiting" first.
    assert log.filter(target=one, action="create").values("object_id").distinct().count() == 7
    assert log.filter(target=two, action="create").values("object_id").distinct().count() == 5
    assert not log.filter(outcome__in=["failed", "disputed"]).exists()
