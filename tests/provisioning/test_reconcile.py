"""Reconciliation against scim2-server on a loopback port, altered behind the engine's back.

Each test provisions the directory downstream through the ordinary delivery
path, then changes the downstream directly over HTTP (an attribute, a deleted
user, an orphan, a group member removed or added) and asserts each finding,
each correction and what the downstream holds afterwards.
"""

import json
import uuid
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from directory import services as directory
from directory.models import ChangeEvent
from provisioning import queue, relay, tasks
from provisioning.models import (
    Delivery,
    DeliveryAttempt,
    ReconciliationFinding,
    ReconciliationRun,
    SyncRun,
    TargetLink,
    VendorProfile,
)
from provisioning.reconcile import (
    ReconciliationBusy,
    attribute_drift,
    member_drift,
    reconciliation_start,
    reconciliations_due,
    runs_purge,
    same,
    target_reconcile,
)
from provisioning.services import delivery_send
from tests.provisioning.downstream import TOKEN, InProcessScim

pytestmark = pytest.mark.django_db

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
def sent(monkeypatch):
    ids: list[int] = []
    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: ids.extend(delivery_ids))
    return ids


def deliver_all(connection=None) -> list[DeliveryAttempt]:
    log: list[DeliveryAttempt] = []
    for _ in range(10):
        relay.relay_change_events()
        Delivery.objects.filter(state="queued").update(next_attempt_at=None)
        due = list(Delivery.objects.filter(state="queued").order_by("priority", "id"))
        if not due:
            return log
        for delivery in due:
            entry = delivery_send(delivery_id=delivery.pk, connection=connection)
            if entry is not None:
                log.append(entry)
    raise AssertionError("deliveries still queued after all rounds")


def post(client: httpx.Client, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(
        endpoint, content=json.dumps(body), headers={"Content-Type": "application/scim+json"}
    )
    assert response.status_code == HTTPStatus.CREATED, response.text
    return response.json()


def patch(client: httpx.Client, path: str, operations: list[dict[str, Any]]) -> None:
    body = {"schemas": [PATCH_OP], "Operations": operations}
    response = client.patch(path, content=json.dumps(body), headers={"Content-Type": "application/scim+json"})
    assert response.status_code in (HTTPStatus.OK, HTTPStatus.NO_CONTENT), response.text


def remote_id(obj) -> str:
    return TargetLink.objects.get(object_id=obj.pk).remote_id


def findings(run: ReconciliationRun) -> dict[str, list[ReconciliationFinding]]:
    grouped: dict[str, list[ReconciliationFinding]] = {}
    for finding in run.findings.order_by("id"):
        grouped.setdefault(finding.kind, []).append(finding)
    return grouped


@pytest.fixture
def provisioned(actor, target_factory, scim2_url, remote, sent):
    """ada, bob, cy and dan provisioned; group Staff = {ada, bob}; all in sync downstream."""
    target = target_factory(
        base_url=scim2_url, token=TOKEN, scope="all", deletion_policy="disable", reconcile_policy="report"
    )
    users = {
        name: directory.user_create(actor=actor, user_name=f"{name}@example.com", display_name=name.title())
        for name in ("ada", "bob", "cy", "dan")
    }
    staff = directory.group_create(actor=actor, display_name="Staff")
    directory.membership_add(actor=actor, group_id=staff.pk, user_ids=[users["ada"].pk, users["bob"].pk])
    deliver_all()
    return target, users, staff


def alter_downstream(remote: httpx.Client, users, staff) -> dict[str, str]:
    """Drift, a deleted user, two orphans, a member removed and one added, all behind the engine's back."""
    patch(
        remote,
        f"Users/{remote_id(users['ada'])}",
        [{"op": "replace", "path": "displayName", "value": "Hacked"}],
    )
    assert remote.delete(f"Users/{remote_id(users['cy'])}").status_code == HTTPStatus.NO_CONTENT
    mallory = post(
        remote, "Users", {"schemas": [CORE_USER], "userName": "mallory@example.com", "active": True}
    )
    rogue = post(remote, "Groups", {"schemas": [CORE_GROUP], "displayName": "Rogue"})
    patch(
        remote,
        f"Groups/{remote_id(staff)}",
        [
            {"op": "remove", "path": f'members[value eq "{remote_id(users["bob"])}"]'},
            {"op": "add", "path": "members", "value": [{"value": remote_id(users["dan"])}]},
        ],
    )
    return {"mallory": mallory["id"], "rogue": rogue["id"], "cy": remote_id(users["cy"])}


def test_a_report_only_run_finds_each_difference_and_changes_nothing(provisioned, remote, sent):
    target, users, staff = provisioned
    ids = alter_downstream(remote, users, staff)
    links_before = list(TargetLink.objects.order_by("pk").values_list("object_id", "remote_id", "state"))

    result = target_reconcile(target=target, trigger="test")

    run = result.run
    assert (run.state, run.policy, run.remote_users, run.remote_groups) == ("done", "report", 4, 2)
    assert (run.drift, run.missing, run.orphans, run.membership_drift, run.corrections) == (1, 1, 2, 1, 0)
    assert (run.unlinked, run.pending, run.unprovisioned, run.membership_unknown) == (0, 0, 0, 0)
    # bob and dan are untouched; the Staff group's attributes are in sync (its members are not).
    assert run.in_sync == 2
    found = findings(run)
    [drift] = found["drift"]
    assert (drift.object_id, drift.remote_id) == (users["ada"].pk, remote_id(users["ada"]))
    assert drift.details == {"displayName": {"desired": "Ada", "written": "Ada", "remote": "Hacked"}}
    [missing] = found["missing"]
    assert (missing.object_id, missing.remote_id, missing.object_repr) == (
        users["cy"].pk,
        ids["cy"],
        "cy@example.com",
    )
    orphans = {(f.object_type, f.remote_id, f.object_repr, f.note) for f in found["orphan"]}
    assert orphans == {
        ("user", ids["mallory"], "mallory@example.com", "matches nothing"),
        ("group", ids["rogue"], "Rogue", "matches nothing"),
    }
    [members] = found["membership_drift"]
    assert members.object_id == staff.pk
    assert members.details == {
        "added_downstream": [remote_id(users["dan"])],
        "removed_downstream": [remote_id(users["bob"])],
        "added_count": 1,
        "removed_count": 1,
    }
    assert {f.correction for f in run.findings.all()} == {"none"}
    # Reported only: no delivery, no link changed, the downstream as altered.
    assert not Delivery.objects.filter(state="queued").exists()
    assert (
        list(TargetLink.objects.order_by("pk").values_list("object_id", "remote_id", "state")) == links_before
    )
    assert remote.get(f"Users/{remote_id(users['ada'])}").json()["displayName"] == "Hacked"


def test_correcting_runs_queue_deliveries_that_restore_the_desired_state(provisioned, remote, sent):
    target, users, staff = provisioned
    ids = alter_downstream(remote, users, staff)
    target.reconcile_policy = "remove_orphans"
    target.save()

    run = target_reconcile(target=target, trigger="test").run
    assert (run.drift, run.missing, run.orphans, run.membership_drift) == (1, 1, 2, 1)
    # ada, cy, Staff, and the two orphans: one delivery each, in the run, leavers first.
    assert run.corrections == 5
    queued = {(d.object_type, d.object_id): d for d in Delivery.objects.filter(state="queued")}
    assert {d.run_id for d in queued.values()} == {run.pk}
    assert ("user", users["ada"].pk) in queued
    assert ("group", staff.pk) in queued
    assert ("user", users["cy"].pk) in queued
    assert {f.correction for f in run.findings.all()} == {"queued"}
    # The orphans are linked (to ids of their own, marked) so their removal is an ordinary delivery.
    mallory_link = TargetLink.objects.get(remote_id=ids["mallory"])
    assert mallory_link.state["orphan"]["repr"] == "mallory@example.com"
    assert queued[("user", mallory_link.object_id)].priority == Delivery.Priority.LEAVER
    # The missing user's link is forgotten, so its delivery creates it again.
    assert not TargetLink.objects.filter(object_id=users["cy"].pk).exists()

    log = {(entry.object_type, entry.object_id): entry for entry in deliver_all()}

    ada = log[("user", users["ada"].pk)]
    assert (ada.action, ada.outcome, ada.run_id) == ("update", "success", run.pk)
    assert ada.modified_properties == {"displayName": ["Hacked", "Ada"]}
    assert ada.requests[-1]["body"]["Operations"] == [
        {"op": "replace", "path": "displayName", "value": "Ada"}
    ]
    assert remote.get(f"Users/{remote_id(users['ada'])}").json()["displayName"] == "Ada"
    cy = log[("user", users["cy"].pk)]
    assert (cy.action, cy.outcome) == ("create", "success")
    assert remote_id(users["cy"]) != ids["cy"]
    assert remote.get(f"Users/{remote_id(users['cy'])}").json()["userName"] == "cy@example.com"
    mallory = log[("user", mallory_link.object_id)]
    assert (mallory.action, mallory.scope_reason, mallory.object_repr) == (
        "disable",
        "orphan found by reconciliation",
        "mallory@example.com",
    )
    assert remote.get(f"Users/{ids['mallory']}").json()["active"] is False
    assert remote.get(f"Groups/{ids['rogue']}").status_code == HTTPStatus.NOT_FOUND
    staff_members = {m["value"] for m in remote.get(f"Groups/{remote_id(staff)}").json()["members"]}
    assert staff_members == {remote_id(users["ada"]), remote_id(users["bob"])}

    # Once corrected, a new reading finds nothing left to do.
    again = target_reconcile(target=target, trigger="test").run
    assert again.findings.count() == 0
    assert (again.in_sync, again.corrections, again.remote_users, again.remote_groups) == (6, 0, 5, 1)


def test_policy_correct_leaves_orphans_in_place(provisioned, remote, sent):
    target, users, staff = provisioned
    ids = alter_downstream(remote, users, staff)
    target.reconcile_policy = "correct"
    target.save()
    run = target_reconcile(target=target).run
    assert (run.orphans, run.corrections) == (2, 3)
    assert {f.correction for f in run.findings.filter(kind="orphan")} == {"none"}
    assert not TargetLink.objects.filter(remote_id__in=[ids["mallory"], ids["rogue"]]).exists()
    deliver_all()
    assert remote.get(f"Users/{ids['mallory']}").json()["active"] is True


def test_a_user_re_enabled_downstream_after_leaving_is_disabled_again(actor, provisioned, remote, sent):
    target, users, staff = provisioned
    target.reconcile_policy = "correct"
    target.save()
    directory.user_deactivate(actor=actor, user_id=users["dan"].pk)
    deliver_all()
    patch(remote, f"Users/{remote_id(users['dan'])}", [{"op": "replace", "path": "active", "value": True}])

    run = target_reconcile(target=target).run
    [drift] = run.findings.all()
    assert (drift.kind, drift.object_id) == ("drift", users["dan"].pk)
    assert drift.details == {"active": {"desired": False, "written": False, "remote": True}}
    [entry] = deliver_all()
    assert (entry.action, entry.modified_properties) == ("disable", {"active": [True, False]})
    assert remote.get(f"Users/{remote_id(users['dan'])}").json()["active"] is False


def test_unlinked_matches_and_unprovisioned_objects_are_queued(actor, provisioned, remote, sent):
    target, users, staff = provisioned
    target.reconcile_policy = "correct"
    target.save()
    eve = directory.user_create(actor=actor, user_name="eve@example.com")
    fay = directory.user_create(actor=actor, user_name="fay@example.com")
    relay.relay_change_events()
    # Their deliveries failed for good before linking them; someone created eve downstream by hand.
    Delivery.objects.filter(object_id__in=[eve.pk, fay.pk]).update(state="failed")
    existing = post(remote, "Users", {"schemas": [CORE_USER], "userName": "eve@example.com"})

    run = target_reconcile(target=target).run
    assert (run.unlinked, run.unprovisioned, run.orphans, run.corrections) == (1, 1, 0, 2)
    [unlinked] = run.findings.filter(kind="unlinked")
    assert (unlinked.object_id, unlinked.remote_id) == (eve.pk, existing["id"])
    assert unlinked.note == "matches by userName; its next delivery adopts it"
    [unprovisioned] = run.findings.filter(kind="unprovisioned")
    assert unprovisioned.object_id == fay.pk
    log = {entry.object_id: entry for entry in deliver_all()}
    assert (log[eve.pk].action, log[eve.pk].matched_attribute, log[eve.pk].run_id) == (
        "adopt",
        "userName",
        run.pk,
    )
    assert (log[fay.pk].action, log[fay.pk].outcome) == ("create", "success")
    assert remote_id(eve) == existing["id"]


def test_a_pending_change_with_no_delivery_is_queued(actor, provisioned, remote, sent):
    target, users, staff = provisioned
    target.reconcile_policy = "correct"
    target.save()
    directory.user_update(actor=actor, user_id=users["bob"].pk, title="Engineer")
    # The change never reached a delivery (as if the outbox row had been lost).
    ChangeEvent.objects.update(processed=timezone.now())

    run = target_reconcile(target=target).run
    [pending] = run.findings.all()
    assert (pending.kind, pending.object_id) == ("pending", users["bob"].pk)
    assert pending.details == {"title": {"desired": "Engineer", "written": None}}
    deliver_all()
    assert remote.get(f"Users/{remote_id(users['bob'])}").json()["title"] == "Engineer"


def test_dry_run_command_prints_findings_and_correction_requests_and_stores_nothing(
    provisioned, remote, sent, capsys
):
    target, users, staff = provisioned
    ids = alter_downstream(remote, users, staff)
    target.reconcile_policy = "remove_orphans"
    target.save()
    links_before = list(TargetLink.objects.order_by("pk").values_list("object_id", "remote_id", "state"))

    call_command("sync_target", target.name, "--reconcile", "--dry-run")
    out = capsys.readouterr().out

    assert "(dry run: nothing stored, nothing queued; policy: also remove orphans" in out
    assert "read 4 users and 2 groups" in out
    assert f"  {'drift':<19} {1:>7}  attributes changed downstream" in out
    assert f"  {'orphan':<19} {2:>7}  orphan (no directory object in scope)" in out
    ada = remote_id(users["ada"])
    assert f"[drift] user ada@example.com (remote {ada})" in out
    assert (
        f'    PATCH Users/{ada} {{"schemas": ["{PATCH_OP}"], '
        '"Operations": [{"op": "replace", "path": "displayName", "value": "Ada"}]}'
    ) in out
    assert f'    PATCH Users/{ids["mallory"]} {{"schemas": ["{PATCH_OP}"], ' in out
    assert f"    DELETE Groups/{ids['rogue']}" in out
    staff_patch = (
        f'    PATCH Groups/{remote_id(staff)} {{"schemas": ["{PATCH_OP}"], "Operations": [{{"op": "remove"'
    )
    assert staff_patch in out
    assert "    POST Users {" in out  # cy, created again
    assert not ReconciliationRun.objects.exists()
    assert not ReconciliationFinding.objects.exists()
    assert not Delivery.objects.filter(state="queued").exists()
    assert (
        list(TargetLink.objects.order_by("pk").values_list("object_id", "remote_id", "state")) == links_before
    )
    assert remote.get(f"Users/{ada}").json()["displayName"] == "Hacked"


def test_command_reconcile_stores_the_run(provisioned, remote, sent, capsys):
    target, users, staff = provisioned
    alter_downstream(remote, users, staff)
    call_command("sync_target", target.name, "--reconcile")
    out = capsys.readouterr().out
    run = ReconciliationRun.objects.get()
    assert f"Reconciliation of {target.name} (run {run.pk}; policy: report only)" in out
    assert "  correction: reported only" in out
    assert run.trigger == "command"


# --- a target whose GET /Groups hides members ------------------------------------------------------


class HidingMembers:
    """scim2-server behaving as AWS IAM Identity Center does: GET /Groups leaves members out, and
    GET /Users answers `groups.value eq "id"` from the group's members (scim2-server itself does not)."""

    def __init__(self, downstream: InProcessScim) -> None:
        self.downstream = downstream
        self.app = downstream.app

    def __call__(self, environ, start_response):  # type: ignore[no-untyped-def]
        from urllib.parse import parse_qs

        path, query = environ.get("PATH_INFO", ""), parse_qs(environ.get("QUERY_STRING", ""))
        if environ["REQUEST_METHOD"] == "GET" and path.endswith("/Users") and "filter" in query:
            expression = query["filter"][0]
            if expression.startswith("groups.value eq "):
                group_id = json.loads(expression.removeprefix("groups.value eq "))
                group = self.downstream.get(f"Groups/{group_id}")
                resources = [{"id": m["value"]} for m in group.get("members", [])]
                return self._json(start_response, {"totalResults": len(resources), "Resources": resources})
        if environ["REQUEST_METHOD"] == "GET" and "/Groups" in path:
            captured: dict[str, Any] = {}

            def keep(status, headers, exc_info=None):  # type: ignore[no-untyped-def]
                captured["status"] = status
                return lambda data: None

            body = json.loads(b"".join(self.app(environ, keep)) or b"null")
            for resource in [body, *(body or {}).get("Resources", [])]:
                if isinstance(resource, dict):
                    resource.pop("members", None)
            return self._json(start_response, body, captured["status"])
        return self.app(environ, start_response)

    @staticmethod
    def _json(start_response, body: Any, status: str = "200 OK"):  # type: ignore[no-untyped-def]
        data = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/scim+json"), ("Content-Length", str(len(data)))]
        )
        return [data]


@pytest.fixture
def hiding(actor, target_factory, sent):
    downstream = InProcessScim()
    downstream.transport = httpx.WSGITransport(app=HidingMembers(downstream))
    profile = VendorProfile.objects.create(
        name="Hides members, filters on groups.value",
        groups_return_members=False,
        filterable_attributes=["userName", "externalId", "displayName", "groups.value"],
    )
    target = target_factory(scope="all", profile=profile, reconcile_policy="correct")
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    bob = directory.user_create(actor=actor, user_name="bob@example.com")
    staff = directory.group_create(actor=actor, display_name="Staff")
    directory.membership_add(actor=actor, group_id=staff.pk, user_ids=[ada.pk, bob.pk])
    deliver_all(downstream.connection())
    return downstream, target, {"ada": ada, "bob": bob}, staff


def test_hidden_members_are_read_through_the_groups_value_filter(hiding):
    downstream, target, users, staff = hiding
    group_id = remote_id(staff)
    downstream.reader.patch(
        f"Groups/{group_id}",
        content=json.dumps(
            {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "remove", "path": f'members[value eq "{remote_id(users["bob"])}"]'}],
            }
        ),
        headers={"Content-Type": "application/scim+json"},
    )
    downstream.requests.clear()

    run = target_reconcile(target=target, connection=downstream.connection()).run

    assert (run.membership_drift, run.membership_unknown) == (1, 0)
    [finding] = run.findings.all()
    assert finding.details["removed_downstream"] == [remote_id(users["bob"])]
    filters = [r for r in downstream.requests if r[0] == "GET" and r[1] == "Users"]
    assert len(filters) == 2  # the listing, then one groups.value query for the one group
    deliver_all(downstream.connection())
    members = {m["value"] for m in downstream.get(f"Groups/{group_id}").get("members", [])}
    assert members == {remote_id(users["ada"]), remote_id(users["bob"])}


def test_hidden_members_without_the_filter_are_reported_as_not_verifiable(hiding):
    downstream, target, users, staff = hiding
    target.profile.filterable_attributes = ["userName", "externalId", "displayName"]
    target.profile.save()
    run = target_reconcile(target=target, connection=downstream.connection()).run
    assert (run.membership_drift, run.membership_unknown, run.in_sync) == (0, 1, 3)
    [finding] = run.findings.all()
    assert finding.kind == "membership_unknown"
    assert "cannot filter users on groups.value" in finding.note


# --- scheduling, retention, admin ------------------------------------------------------------------


def test_reconciliations_are_due_per_target_interval(target_factory, monkeypatch):
    long_ago = timezone.now() - timedelta(hours=7)
    six_hourly = target_factory(created=long_ago)
    hourly_recent = target_factory(created=long_ago, reconcile_interval_minutes=60)
    off = target_factory(created=long_ago, reconcile_interval_minutes=0)
    new = target_factory()
    ReconciliationRun.objects.create(target=hourly_recent, policy="report", state="done")
    assert {t.pk for t in reconciliations_due()} == {six_hourly.pk}
    assert off.pk not in {t.pk for t in reconciliations_due(now=timezone.now() + timedelta(days=1))}
    assert new.pk in {t.pk for t in reconciliations_due(now=timezone.now() + timedelta(hours=6, minutes=1))}

    started: list[str] = []
    monkeypatch.setattr(tasks.reconcile_target, "delay", lambda run_id: started.append(run_id))
    tasks.provisioning_runs_tick()
    run = ReconciliationRun.objects.get(target=six_hourly)
    assert (started, run.trigger, run.state) == ([str(run.pk)], "schedule", "running")
    # Running already: the next tick starts no second one.
    with pytest.raises(ReconciliationBusy):
        reconciliation_start(target=six_hourly)


def test_the_scheduled_task_runs_a_reconciliation(provisioned, remote, sent):
    target, users, staff = provisioned
    run = reconciliation_start(target=target, trigger="schedule")
    tasks.reconcile_target(str(run.pk))
    run.refresh_from_db()
    assert (run.state, run.remote_users, run.in_sync) == ("done", 4, 5)
    assert run.finished is not None


def test_a_target_that_cannot_be_read_fails_the_run_without_judging_links(target_factory, sent, actor):
    target = target_factory(base_url="http://127.0.0.1:9/scim/v2", scope="all", reconcile_policy="correct")
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    TargetLink.objects.create(target=target, object_type="user", object_id=ada.pk, remote_id="r-ada")
    run = target_reconcile(target=target).run
    assert run.state == "failed"
    assert "ConnectError" in run.error
    assert TargetLink.objects.filter(object_id=ada.pk).exists()
    assert run.findings.count() == 0


def test_old_runs_and_their_findings_are_purged(target_factory):
    target = target_factory()
    old = timezone.now() - timedelta(days=100)
    old_run = ReconciliationRun.objects.create(target=target, policy="report", state="done", started=old)
    ReconciliationFinding.objects.create(run=old_run, target=target, kind="drift", object_type="user")
    running = ReconciliationRun.objects.create(target=target, policy="report", started=old)
    recent = ReconciliationRun.objects.create(target=target, policy="report", state="done")
    SyncRun.objects.create(target=target, state="done", started=old)
    SyncRun.objects.create(target=target, state="queuing", started=old)
    assert runs_purge(older_than_days=90) == 3
    assert set(ReconciliationRun.objects.values_list("pk", flat=True)) == {running.pk, recent.pk}
    assert not ReconciliationFinding.objects.exists()
    assert list(SyncRun.objects.values_list("state", flat=True)) == ["queuing"]
    assert tasks.purge_provisioning_runs() == 0


def test_admin_lists_runs_and_findings_and_reconciles_on_demand(
    admin_client_logged_in, provisioned, remote, sent, monkeypatch, django_capture_on_commit_callbacks
):
    target, users, staff = provisioned
    alter_downstream(remote, users, staff)
    run = target_reconcile(target=target).run
    page = admin_client_logged_in.get(f"/admin/provisioning/reconciliationfinding/?run__id__exact={run.pk}")
    assert page.status_code == HTTPStatus.OK
    text = page.content.decode()
    assert "mallory@example.com" in text
    assert "ada@example.com" in text
    detail = admin_client_logged_in.get(f"/admin/provisioning/reconciliationrun/{run.pk}/change/")
    assert detail.status_code == HTTPStatus.OK
    assert f"run__id__exact={run.pk}" in detail.content.decode()
    assert admin_client_logged_in.get("/admin/provisioning/syncrun/").status_code == HTTPStatus.OK

    started: list[str] = []
    monkeypatch.setattr(tasks.reconcile_target, "delay", lambda run_id: started.append(run_id))
    monkeypatch.setattr(tasks.full_sync_continue, "delay", lambda run_id: started.append(run_id))
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_logged_in.post(
            "/admin/provisioning/target/",
            {"action": "reconcile_now", "_selected_action": [target.pk]},
        )
    assert response.status_code == HTTPStatus.FOUND
    newest = ReconciliationRun.objects.filter(trigger__startswith="admin").get()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client_logged_in.post(
            "/admin/provisioning/target/", {"action": "full_sync", "_selected_action": [target.pk]}
        )
    sync = SyncRun.objects.get(trigger__startswith="admin")
    assert started == [str(newest.pk), str(sync.pk)]
    tasks.full_sync_continue(str(sync.pk))
    sync.refresh_from_db()
    assert (sync.state, sync.users, sync.groups) == ("delivering", 4, 1)
    deliver_all()
    # The run's page links to its own log rows.
    page = admin_client_logged_in.get(f"/admin/provisioning/syncrun/{sync.pk}/change/").content.decode()
    assert f"/admin/provisioning/deliveryattempt/?run_id={sync.pk}" in page
    log = admin_client_logged_in.get("/admin/provisioning/deliveryattempt/", {"run_id": str(sync.pk)})
    assert log.status_code == HTTPStatus.OK
    # The run's five log rows (the others are the initial provisioning), and only those, are listed.
    assert DeliveryAttempt.objects.filter(run_id=sync.pk).count() == 5
    assert "\n5 provisioning log\n" in log.content.decode()


# --- the comparison rules -----------------------------------------------------------------------


def test_same_ignores_what_the_target_adds_but_not_what_it_changes():
    sent_emails = [{"value": "a@x", "type": "work", "primary": True}]
    assert same([{"value": "a@x", "type": "work", "primary": True, "display": "A"}], sent_emails)
    assert not same([{"value": "b@x", "type": "work", "primary": True}], sent_emails)
    assert not same([*sent_emails, {"value": "c@x"}], sent_emails)
    assert same({"value": "m-1", "$ref": "../Users/m-1"}, {"value": "m-1"})
    assert same(None, "")
    assert same([], None)
    assert not same(None, False)


def test_drift_is_a_remote_value_neither_written_nor_desired():
    written = {"schemas": ["x"], "userName": "ada", "title": "Countess"}
    desired = {"schemas": ["x"], "userName": "ada", "title": "Analyst"}
    # The delivery of "Analyst" landed but is not recorded yet: not drift.
    assert attribute_drift(desired, written, {"userName": "ada", "title": "Analyst"}) == {}
    # Not yet delivered: pending, not drift.
    assert attribute_drift(desired, written, {"userName": "ada", "title": "Countess"}) == {}
    assert attribute_drift(desired, written, {"userName": "ADA", "title": "Countess"}) == {
        "userName": {"desired": "ada", "written": "ada", "remote": "ADA"}
    }
    assert member_drift({"a", "x"}, {"a", "b"}, {"a", "b", "c"}) == ({"x"}, {"b"})
    assert member_drift({"a", "b"}, {"a", "b"}, {"a"}) == (set(), set())  # b's removal is pending


def test_orphan_ids_are_stable_per_target_and_remote_object(target_factory):
    from provisioning.reconcile import orphan_object_id

    one, two = target_factory(), target_factory()
    assert orphan_object_id(one, "user", "r1") == orphan_object_id(one, "user", "r1")
    assert (
        len(
            {
                orphan_object_id(one, "user", "r1"),
                orphan_object_id(two, "user", "r1"),
                orphan_object_id(one, "group", "r1"),
            }
        )
        == 3
    )
    assert isinstance(orphan_object_id(one, "user", "r1"), uuid.UUID)


def test_queries_per_page_do_not_grow_with_the_objects_on_it(actor, target_factory, sent, settings):
    """A page of 5 linked users and a page of 25 cost the same queries: nothing is loaded per object."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.PROVISIONING = {"RECONCILE_PAGE_SIZE": 100}
    downstream = InProcessScim()
    target = target_factory(scope="all", reconcile_policy="correct")
    counts = []
    for batch in (5, 20):
        for n in range(batch):
            manager = directory.user_create(actor=actor, user_name=f"m{batch}-{n}@example.com")
            directory.user_create(
                actor=actor,
                user_name=f"u{batch}-{n}@example.com",
                manager_id=manager.pk,
                values={"emails": [{"value": f"u{batch}-{n}@example.com", "type": "work", "primary": True}]},
            )
        deliver_all(downstream.connection())
        with CaptureQueriesContext(connection) as queries:
            run = target_reconcile(target=target, connection=downstream.connection()).run
        assert (run.state, run.findings.count()) == ("done", 0)
        counts.append(len(queries))
    assert run.in_sync == 50
    assert counts[0] == counts[1]


def test_a_target_with_mappings_is_compared_with_what_its_mappings_produce(
    actor, target_factory, scim2_url, remote, sent
):
    from provisioning.configuration import mapping_save, mappings_seed_default
    from provisioning.models import AttributeMapping

    target = target_factory(
        base_url=scim2_url, token=TOKEN, scope="all", deletion_policy="disable", reconcile_policy="report"
    )
    mappings_seed_default(target=target)
    row = AttributeMapping.objects.get(target=target, object_type="user", target_attribute="displayName")
    row.source_kind, row.source = "expression", 'Append(ToUpper([userName]), " (staff)")'
    mapping_save(mapping=row, resync=False)
    ada = directory.user_create(actor=actor, user_name="ada@example.com", display_name="Ada")
    deliver_all()
    assert remote.get(f"Users/{remote_id(ada)}").json()["displayName"] == "ADA@EXAMPLE.COM (staff)"

    run = target_reconcile(target=target, trigger="test").run

    assert (run.drift, run.pending, run.in_sync) == (0, 0, 1)
    patch(remote, f"Users/{remote_id(ada)}", [{"op": "replace", "path": "displayName", "value": "Ada"}])
    [drift] = findings(target_reconcile(target=target, trigger="test").run)["drift"]
    assert drift.details == {
        "displayName": {
            "desired": "ADA@EXAMPLE.COM (staff)",
            "written": "ADA@EXAMPLE.COM (staff)",
            "remote": "Ada",
        }
    }
