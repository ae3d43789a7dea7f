"""delivery_send against scim2-server (an independent SCIM implementation), in process.

Each test acts through directory services, runs the relay and the deliveries
as workers would, then reads the downstream's state back over SCIM.
"""

from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from directory import services as directory
from provisioning import queue, relay
from provisioning.clients import ScimConnection
from provisioning.models import Delivery, DeliveryAttempt, Target, TargetAssignment, TargetLink, VendorProfile
from provisioning.scope import scope_refresh
from provisioning.services import deliveries_sweep, delivery_send, failure_streak
from tests.provisioning.downstream import InProcessScim

pytestmark = pytest.mark.django_db

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture
def sent(monkeypatch):
    ids: list[int] = []
    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: ids.extend(delivery_ids))
    return ids


@pytest.fixture
def downstream() -> InProcessScim:
    return InProcessScim()


def run_all(connection: ScimConnection, *, rounds: int = 10) -> list[DeliveryAttempt]:
    """Relay, then run every queued delivery (waits cut short) until nothing is left."""
    log: list[DeliveryAttempt] = []
    for _ in range(rounds):
        relay.relay_change_events()
        Delivery.objects.filter(state="queued", waiting_for_members=True).update(next_attempt_at=None)
        due = list(Delivery.objects.filter(state="queued", next_attempt_at__isnull=True).order_by("id"))
        if not due:
            return log
        for delivery in due:
            entry = delivery_send(delivery_id=delivery.pk, connection=connection)
            if entry is not None:
                log.append(entry)
    raise AssertionError("deliveries still queued after all rounds")


def remote_user(downstream: InProcessScim, user) -> dict:
    link = TargetLink.objects.get(object_type="user", object_id=user.pk)
    return downstream.get(f"Users/{link.remote_id}")


def test_user_lifecycle_create_update_rename_deactivate_delete(actor, target_factory, downstream, sent):
    target = target_factory(deletion_policy="delete")
    conn = downstream.connection()
    ada = directory.user_create(
        actor=actor,
        user_name="ada@example.com",
        given_name="Ada",
        family_name="Lovelace",
        department="Engineering",
        values={"emails": [{"value": "ada@example.com", "type": "work", "primary": True}]},
    )
    [created] = run_all(conn)
    assert (created.action, created.outcome, created.match_result) == ("create", "success", "created")
    assert [(m, p) for m, p, _ in downstream.requests] == [
        ("GET", "Users"),
        ("GET", "Users"),
        ("POST", "Users"),
    ]
    remote = remote_user(downstream, ada)
    assert remote["userName"] == "ada@example.com"
    assert remote["externalId"] == str(ada.pk)
    assert remote["name"] == {"givenName": "Ada", "familyName": "Lovelace"}
    assert remote["emails"] == [{"value": "ada@example.com", "type": "work", "primary": True}]
    assert remote["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"] == "Engineering"
    assert created.remote_id == remote["id"]

    downstream.requests.clear()
    directory.user_update(actor=actor, user_id=ada.pk, user_name="ada.l@example.com", title="Countess")
    [updated] = run_all(conn)
    assert updated.action == "update"
    assert updated.modified_properties == {
        "title": [None, "Countess"],
        "userName": ["ada@example.com", "ada.l@example.com"],
    }
    assert downstream.requests == [
        (
            "PATCH",
            f"Users/{remote['id']}",
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "replace", "path": "title", "value": "Countess"},
                    {"op": "replace", "path": "userName", "value": "ada.l@example.com"},
                ],
            },
        )
    ]
    assert remote_user(downstream, ada)["userName"] == "ada.l@example.com"

    directory.user_update(actor=actor, user_id=ada.pk, title="")
    run_all(conn)
    assert "title" not in remote_user(downstream, ada)

    directory.user_deactivate(actor=actor, user_id=ada.pk)
    run_all(conn)
    assert remote_user(downstream, ada)["active"] is False

    directory.user_delete(actor=actor, user_id=ada.pk)
    [deleted] = run_all(conn)
    assert (deleted.action, deleted.method, deleted.status) == ("delete", "DELETE", 204)
    assert downstream.get("Users")["totalResults"] == 0
    assert not TargetLink.objects.filter(target=target).exists()


def test_an_unchanged_object_sends_no_write(actor, target_factory, downstream, sent):
    target = target_factory()
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    run_all(downstream.connection())
    downstream.requests.clear()
    relay.deliveries_for_objects(target=target, keys=[("user", ada.pk)], priority=2)
    [entry] = run_all(downstream.connection())
    assert (entry.action, entry.outcome) == ("none", "success")
    assert downstream.requests == []


def test_an_existing_remote_user_is_adopted_by_user_name(actor, target_factory, downstream, sent):
    target_factory()
    existing = downstream.create("Users", {"schemas": [CORE_USER], "userName": "ada@example.com"})
    ada = directory.user_create(actor=actor, user_name="ada@example.com", title="Countess")
    [entry] = run_all(downstream.connection())
    assert (entry.action, entry.match_result, entry.matched_attribute) == ("adopt", "matched", "userName")
    assert TargetLink.objects.get(object_id=ada.pk).remote_id == existing["id"]
    assert downstream.get("Users")["totalResults"] == 1
    assert remote_user(downstream, ada)["title"] == "Countess"


def test_two_remote_candidates_make_a_disputed_match_that_links_nothing(
    actor, target_factory, downstream, sent
):
    target_factory()
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    for name in ("one", "two"):
        downstream.create("Users", {"schemas": [CORE_USER], "userName": name, "externalId": str(ada.pk)})
    [entry] = run_all(downstream.connection())
    assert (entry.outcome, entry.match_result, entry.matched_attribute) == (
        "disputed",
        "disputed",
        "externalId",
    )
    assert "2 resources on the target have externalId" in entry.error
    assert Delivery.objects.get(object_id=ada.pk).state == "failed"
    assert not TargetLink.objects.exists()
    assert downstream.get("Users")["totalResults"] == 2


def test_a_user_deleted_downstream_is_created_again_on_update(actor, target_factory, downstream, sent):
    target_factory()
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    run_all(downstream.connection())
    downstream.delete(f"Users/{TargetLink.objects.get().remote_id}")

    directory.user_update(actor=actor, user_id=ada.pk, title="Countess")
    [entry] = run_all(downstream.connection())

    assert (entry.action, entry.outcome) == ("create", "success")
    [remote] = downstream.get("Users")["Resources"]
    assert remote["title"] == "Countess"
    assert TargetLink.objects.get().remote_id == remote["id"]


def test_group_members_wait_for_remote_ids_then_go_as_add_and_remove_deltas(
    actor, target_factory, downstream, sent
):
    profile = VendorProfile.objects.get(name="RFC 7644 (strict)")
    profile.max_patch_operations = 2
    profile.save()
    target_factory()
    users = [directory.user_create(actor=actor, user_name=f"u{n}@example.com") for n in range(5)]
    group = directory.group_create(actor=actor, display_name="Engineering")
    # The group goes first: its members have no remote id yet.
    relay.relay_change_events()
    group_delivery = Delivery.objects.get(object_type="group", object_id=group.pk)
    directory.membership_add(actor=actor, group_id=group.pk, user_ids=[u.pk for u in users])
    relay.relay_change_events()
    waiting = delivery_send(delivery_id=group_delivery.pk, connection=downstream.connection())
    assert (waiting.action, waiting.outcome) == ("create", "waiting")
    assert Delivery.objects.get(pk=group_delivery.pk).waiting_for_members is True

    downstream.requests.clear()
    run_all(downstream.connection())
    link = TargetLink.objects.get(object_type="group")
    remote_ids = {TargetLink.objects.get(object_id=u.pk).remote_id for u in users}
    assert {m["value"] for m in downstream.get(f"Groups/{link.remote_id}")["members"]} == remote_ids
    patches = [body for method, path, body in downstream.requests if method == "PATCH"]
    # Five members at most two per request: three PATCHes.
    assert [len(body["Operations"][0]["value"]) for body in patches] == [2, 2, 1]

    downstream.requests.clear()
    directory.membership_remove(actor=actor, group_id=group.pk, user_ids=[users[0].pk])
    run_all(downstream.connection())
    gone = TargetLink.objects.get(object_id=users[0].pk).remote_id
    assert [body["Operations"] for method, _, body in downstream.requests if method == "PATCH"] == [
        [{"op": "remove", "path": f'members[value eq "{gone}"]'}]
    ]
    assert {m["value"] for m in downstream.get(f"Groups/{link.remote_id}")["members"]} == remote_ids - {gone}


def test_nested_group_is_pushed_as_a_group_member(actor, target_factory, downstream, sent):
    target_factory()
    parent = directory.group_create(actor=actor, display_name="Engineering")
    child = directory.group_create(actor=actor, display_name="Platform")
    directory.membership_add(actor=actor, group_id=parent.pk, group_ids=[child.pk])
    run_all(downstream.connection())
    parent_remote = TargetLink.objects.get(object_id=parent.pk).remote_id
    child_remote = TargetLink.objects.get(object_id=child.pk).remote_id
    assert [m["value"] for m in downstream.get(f"Groups/{parent_remote}")["members"]] == [child_remote]


def test_leaving_an_assigned_group_disables_the_user_downstream(actor, target_factory, downstream, sent):
    target = target_factory(scope="assigned", deletion_policy="disable")
    group = directory.group_create(actor=actor, display_name="App users")
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    directory.membership_add(actor=actor, group_id=group.pk, user_ids=[ada.pk])
    TargetAssignment.objects.create(target=target, group=group)
    relay.deliveries_for_objects(
        target=target, keys=scope_refresh(target=target).entered, priority=Delivery.Priority.BACKFILL
    )
    run_all(downstream.connection())
    assert remote_user(downstream, ada)["active"] is True

    directory.membership_remove(actor=actor, group_id=group.pk, user_ids=[ada.pk])
    log = run_all(downstream.connection())

    left = next(entry for entry in log if entry.object_id == ada.pk)
    assert (left.action, left.in_scope, left.scope_reason) == (
        "disable",
        False,
        "not assigned and not a member of an assigned group",
    )
    assert remote_user(downstream, ada)["active"] is False
    link = TargetLink.objects.get(object_type="group")
    assert downstream.get(f"Groups/{link.remote_id}").get("members", []) == []


def test_put_profile_replaces_users_whole(actor, target_factory, downstream, sent):
    target_factory(profile=VendorProfile.objects.get(name="PUT for users"))
    ada = directory.user_create(actor=actor, user_name="ada@example.com", title="Countess")
    run_all(downstream.connection())
    downstream.requests.clear()
    directory.user_update(actor=actor, user_id=ada.pk, title="")
    run_all(downstream.connection())
    [(method, path, body)] = downstream.requests
    assert method == "PUT"
    assert "title" not in body
    assert body["userName"] == "ada@example.com"
    assert "title" not in remote_user(downstream, ada)


def failing(status: int, headers: dict[str, str] | None = None) -> ScimConnection:
    return ScimConnection(
        base_url="http://down.test/v2",
        transport=httpx.MockTransport(lambda request: httpx.Response(status, headers=headers or {})),
    )


def test_a_429_is_retried_no_sooner_than_retry_after(actor, target_factory, sent):
    target_factory()
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    relay.relay_change_events()
    delivery = Delivery.objects.get(object_id=ada.pk)
    before = timezone.now()

    entry = delivery_send(delivery_id=delivery.pk, connection=failing(429, {"Retry-After": "120"}))

    delivery.refresh_from_db()
    assert (entry.outcome, entry.status) == ("retry", 429)
    assert (delivery.state, delivery.failures) == ("queued", 1)
    assert delivery.next_attempt_at >= before + timedelta(seconds=120)
    # One 429 is no streak: the target stays healthy, but nothing is sent to it before Retry-After.
    target = Target.objects.get()
    assert (target.circuit_state, failure_streak(target)) == ("healthy", 1)
    bob = directory.user_create(actor=actor, user_name="bob@example.com")
    relay.relay_change_events()
    assert (
        delivery_send(delivery_id=Delivery.objects.get(object_id=bob.pk).pk, connection=failing(500)) is None
    )
    assert Delivery.objects.get(object_id=bob.pk).next_attempt_at >= before + timedelta(seconds=119)
    # Not due yet: a duplicate task finds nothing to do.
    assert delivery_send(delivery_id=delivery.pk, connection=failing(500)) is None


def test_transient_failures_back_off_then_fail_for_good(actor, target_factory, sent, settings):
    settings.PROVISIONING = {"MAX_FAILURES": 3, "BACKOFF_BASE": 1.0}
    target_factory()
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    relay.relay_change_events()
    delivery = Delivery.objects.get(object_id=ada.pk)
    waits = []
    for _ in range(3):
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=None)
        started = timezone.now()
        delivery_send(delivery_id=delivery.pk, connection=failing(503))
        delivery.refresh_from_db()
        if delivery.next_attempt_at:
            waits.append((delivery.next_attempt_at - started).total_seconds())
    assert delivery.state == "failed"
    assert 0.5 <= waits[0] <= 1.1
    assert 1.0 <= waits[1] <= 2.1
    assert DeliveryAttempt.objects.filter(object_id=ada.pk).count() == 3


def test_a_401_quarantines_the_target_without_failing_the_delivery(actor, target_factory, sent):
    target = target_factory()
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    relay.relay_change_events()
    delivery = Delivery.objects.get(object_id=ada.pk)

    delivery_send(delivery_id=delivery.pk, connection=failing(401))

    target.refresh_from_db()
    delivery.refresh_from_db()
    assert target.circuit_state == "quarantined"
    assert "answered 401" in target.circuit_reason
    assert target.circuit_next_attempt_at > timezone.now()
    assert (delivery.state, delivery.failures) == ("queued", 0)


def test_only_one_worker_holds_a_delivery_and_a_newer_change_runs_it_again(
    actor, target_factory, downstream, sent, django_capture_on_commit_callbacks
):
    target_factory()
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    relay.relay_change_events()
    delivery = Delivery.objects.get(object_id=ada.pk)
    conn = downstream.connection()

    def change_while_running(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            # Another worker's task for the same delivery finds it leased...
            assert delivery_send(delivery_id=delivery.pk, connection=conn) is None
            # ...and a change committed meanwhile folds into it.
            directory.user_update(actor=actor, user_id=ada.pk, title="Countess")
            relay.relay_change_events()
        return conn.transport.handle_request(request)

    racing = ScimConnection(
        base_url="http://downstream.test/v2",
        auth=conn.auth,
        transport=httpx.MockTransport(change_while_running),
    )
    with django_capture_on_commit_callbacks(execute=True):
        entry = delivery_send(delivery_id=delivery.pk, connection=racing)

    delivery.refresh_from_db()
    assert entry.outcome == "success", entry.error
    assert delivery.state == "queued"
    assert sent[-1] == delivery.pk
    run_all(conn)
    assert remote_user(downstream, ada)["title"] == "Countess"


def test_sweeper_resends_expired_leases_and_lost_tasks(actor, target_factory, sent):
    target = target_factory()
    now = timezone.now()
    users = [directory.user_create(actor=actor, user_name=f"u{n}@example.com") for n in range(4)]
    relay.relay_change_events()
    expired, lost, fresh, paused_one = (Delivery.objects.get(object_id=u.pk) for u in users)
    Delivery.objects.filter(pk=expired.pk).update(state="running", lease_until=now - timedelta(seconds=1))
    Delivery.objects.filter(pk=lost.pk).update(enqueued_at=now - timedelta(minutes=5))
    Delivery.objects.filter(pk=fresh.pk).update(enqueued_at=now)
    other = target_factory(paused=True)
    Delivery.objects.filter(pk=paused_one.pk).update(target=other, enqueued_at=now - timedelta(minutes=5))
    sent.clear()

    assert deliveries_sweep() == 2
    assert sorted(sent) == sorted([expired.pk, lost.pk])
    assert target.pk != other.pk


def test_a_409_on_create_is_resolved_by_looking_the_object_up_and_linking_it(
    actor, target_factory, downstream, sent
):
    target_factory()
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    conn = downstream.connection()
    raced: dict[str, str] = {}

    def created_meanwhile(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and not raced:
            # Another system creates the same user between our lookup and our POST.
            raced["id"] = downstream.create("Users", {"schemas": [CORE_USER], "userName": "ada@example.com"})[
                "id"
            ]
        return conn.transport.handle_request(request)

    racing = ScimConnection(
        base_url="http://downstream.test/v2", auth=conn.auth, transport=httpx.MockTransport(created_meanwhile)
    )
    relay.relay_change_events()
    entry = delivery_send(delivery_id=Delivery.objects.get(object_id=ada.pk).pk, connection=racing)

    assert [(r["method"], r["status"]) for r in entry.requests] == [
        ("GET", 200),
        ("GET", 200),
        ("POST", 409),
        ("GET", 200),
        ("GET", 200),
        ("PATCH", 204),
    ]
    assert (entry.action, entry.outcome, entry.matched_attribute) == ("adopt", "success", "userName")
    assert TargetLink.objects.get(object_id=ada.pk).remote_id == raced["id"]
    assert downstream.get("Users")["totalResults"] == 1
    assert remote_user(downstream, ada)["externalId"] == str(ada.pk)
