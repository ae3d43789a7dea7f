"""add_target / sync_target and the admin, against scim2-server running on a loopback port."""

import json
from http import HTTPStatus

import httpx
import pytest
from django.core.management import CommandError, call_command

from directory import services as directory
from provisioning import queue
from provisioning.models import Delivery, DeliveryAttempt, Target, TargetAssignment, TargetLink
from tests.provisioning.downstream import TOKEN

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    ids: list[int] = []
    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: ids.extend(delivery_ids))
    return ids


def remote_users(url: str, user_name: str) -> list[dict]:
    response = httpx.get(
        f"{url}/Users",
        params={"filter": f'userName eq "{user_name}"'},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    return response.json().get("Resources", [])


def test_add_target_with_a_group_then_sync_one_object_prints_its_log_entry(
    actor, scim2_url, capsys, sent, django_capture_on_commit_callbacks
):
    group = directory.group_create(actor=actor, display_name="App users")
    ada = directory.user_create(actor=actor, user_name="ada-cmd@example.com")
    directory.membership_add(actor=actor, group_id=group.pk, user_ids=[ada.pk])

    with django_capture_on_commit_callbacks(execute=True):
        call_command("add_target", "app", "--url", scim2_url, "--bearer-token", TOKEN, "--group", "app users")
    target = Target.objects.get(name="app")
    assert target.scope == "assigned"
    assert TargetAssignment.objects.get(target=target).group_id == group.pk
    assert target.get_credentials() == {"token": TOKEN}
    # The initial sync queued the group and its member in the backfill lane.
    assert set(Delivery.objects.filter(target=target).values_list("object_id", "priority")) == {
        (group.pk, Delivery.Priority.BACKFILL),
        (ada.pk, Delivery.Priority.BACKFILL),
    }
    capsys.readouterr()

    call_command("sync_target", "app", "--object", "ada-cmd@example.com", "--dry-run")
    dry = json.loads(capsys.readouterr().out)
    assert dry["action"] == "create"
    assert dry["outcome"] == "dry_run"
    assert [(r["method"], r["status"]) for r in dry["requests"]][-1] == ("POST", None)
    assert remote_users(scim2_url, "ada-cmd@example.com") == []
    assert not DeliveryAttempt.objects.exists()

    call_command("sync_target", "app", "--object", str(ada.pk))
    entry = json.loads(capsys.readouterr().out)
    [remote] = remote_users(scim2_url, "ada-cmd@example.com")
    assert (entry["action"], entry["outcome"], entry["remote_id"]) == ("create", "success", remote["id"])
    assert entry["scope"] == "in scope: assigned, or a member of an assigned group"
    assert TargetLink.objects.get(target=target, object_id=ada.pk).remote_id == remote["id"]
    assert Delivery.objects.get(target=target, object_id=ada.pk).state == "done"


def test_full_sync_queues_every_object_in_pages(
    actor, target_factory, capsys, sent, settings, django_capture_on_commit_callbacks
):
    settings.PROVISIONING = {"FULL_SYNC_PAGE_SIZE": 2}
    target = target_factory(scope="all")
    users = [directory.user_create(actor=actor, user_name=f"u{n}@example.com") for n in range(5)]
    directory.group_create(actor=actor, display_name="G")

    with django_capture_on_commit_callbacks(execute=True):
        call_command("sync_target", target.name, "--full")
    assert "queued 6 deliveries for 5 users, 1 groups" in capsys.readouterr().out
    assert Delivery.objects.filter(target=target, priority=Delivery.Priority.BACKFILL).count() == 6
    assert len(sent) == 6
    assert {u.pk for u in users} <= set(Delivery.objects.values_list("object_id", flat=True))


def test_commands_refuse_unknown_names(target_factory):
    with pytest.raises(CommandError, match="No target named 'nope'"):
        call_command("sync_target", "nope", "--full")
    with pytest.raises(CommandError, match="No group named 'Ghosts'"):
        call_command(
            "add_target", "x", "--url", "http://127.0.0.1:9/v2", "--bearer-token", "t", "--group", "Ghosts"
        )


def test_admin_keeps_credentials_write_only(admin_client_logged_in, rfc_profile):
    form = {
        "name": "hr-app",
        "base_url": "https://hr.example/scim/v2",
        "profile": rfc_profile.pk,
        "enabled": "on",
        "auth_type": "bearer",
        "token": "super-secret-token-1",
        "connect_timeout": 5,
        "read_timeout": 30,
        "rate_limit_rps": 25,
        "rate_limit_burst": 50,
        "max_concurrency": 4,
        "user_matching": '["externalId", "userName"]',
        "group_matching": '["externalId", "displayName"]',
        "scope": "all",
        "deletion_policy": "disable",
        "reconcile_interval_minutes": 360,
        "reconcile_policy": "correct",
        "assignments-TOTAL_FORMS": 0,
        "assignments-INITIAL_FORMS": 0,
    }
    response = admin_client_logged_in.post("/admin/provisioning/target/add/", form)
    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:3000]
    target = Target.objects.get(name="hr-app")
    assert target.get_credentials() == {"token": "super-secret-token-1"}

    page = admin_client_logged_in.get(f"/admin/provisioning/target/{target.pk}/change/").content.decode()
    assert "super-secret-token-1" not in page
    assert target.encrypted_credentials not in page

    # A blank token keeps the stored one.
    response = admin_client_logged_in.post(
        f"/admin/provisioning/target/{target.pk}/change/", {**form, "token": "", "read_timeout": 10}
    )
    assert response.status_code == HTTPStatus.FOUND
    target.refresh_from_db()
    assert (target.read_timeout, target.get_credentials()) == (10, {"token": "super-secret-token-1"})
    assert target.revision == 2


def test_admin_provision_on_demand_shows_the_log_entry(
    admin_client_logged_in, actor, target_factory, scim2_url
):
    target = target_factory(base_url=scim2_url, token=TOKEN)
    directory.user_create(actor=actor, user_name="grace-admin@example.com")
    url = f"/admin/provisioning/target/{target.pk}/provision/"

    response = admin_client_logged_in.post(url, {"object": "grace-admin@example.com"})

    page = response.content.decode()
    [remote] = remote_users(scim2_url, "grace-admin@example.com")
    assert response.status_code == HTTPStatus.OK
    assert "Result: Create — Success" in page
    assert remote["id"] in page

    log = admin_client_logged_in.get("/admin/provisioning/deliveryattempt/", {"q": str(remote["id"])})
    assert log.status_code == HTTPStatus.OK
    assert "grace-admin@example.com" in log.content.decode()
    for changelist in ("delivery", "targetlink", "vendorprofile", "target"):
        assert admin_client_logged_in.get(f"/admin/provisioning/{changelist}/").status_code == HTTPStatus.OK
