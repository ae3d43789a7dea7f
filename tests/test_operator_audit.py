"""Operator actions the directory services do not record land in the audit trail too."""

from http import HTTPStatus

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from directory.models import AuditEntry
from directory.roles import ADMINISTRATORS, roles_sync_installed
from provisioning.models import Target, VendorProfile
from scim_api.models import ScimClient
from scim_api.services import scim_client_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def administrator(db) -> Client:  # type: ignore[no-untyped-def]
    roles_sync_installed()
    account = get_user_model().objects.create_user("carol", is_staff=True)
    account.groups.add(account.groups.model.objects.get(name=ADMINISTRATORS))
    client = Client()
    client.force_login(account)
    return client


@pytest.fixture
def target(db) -> Target:  # type: ignore[no-untyped-def]
    profile = VendorProfile.objects.get_or_create(name="RFC 7644 (strict)")[0]
    target = Target(name="slack", base_url="http://127.0.0.1:9/scim/v2", profile=profile, rate_limit_rps=0)
    target.set_credentials({"token": "downstream-token"})
    target.save()
    return target


def _entries(object_type: str) -> list[tuple[str, str, str, str]]:
    return list(
        AuditEntry.objects.filter(object_type=object_type)
        .order_by("id")
        .values_list("actor_type", "actor_name", "action", "object_key")
    )


def test_target_actions_and_status_page_buttons_are_audited(administrator: Client, target: Target) -> None:
    changelist = reverse("admin:provisioning_target_changelist")
    administrator.post(changelist, {"action": "pause", "_selected_action": [target.pk]})
    administrator.post(changelist, {"action": "resume", "_selected_action": [target.pk]})
    status = reverse("admin:provisioning_target_status", args=[target.pk])
    assert administrator.post(status, {"action": "retry_failed"}).status_code == HTTPStatus.FOUND
    key = str(target.pk)
    assert _entries("target") == [("operator", "carol", "admin_change", key)] * 3
    messages = [
        entry.changes["message"] for entry in AuditEntry.objects.filter(object_type="target").order_by("id")
    ]
    assert messages[:2] == ["Paused.", "Resumed."]
    assert messages[2].startswith("Retry failed:")


def test_target_edit_is_audited_without_its_credentials(administrator: Client, target: Target) -> None:
    url = reverse("admin:provisioning_target_change", args=[target.pk])
    form = administrator.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(
        {
            "name": "slack",
            "base_url": "https://slack.example/scim/v2",
            "profile": target.profile_id,
            "auth_type": "bearer",
            "token": "new-secret-token",
            "user_matching": '["externalId", "userName"]',
            "group_matching": '["externalId", "displayName"]',
            "user_scoping_filters": "[]",
            "group_scoping_filters": "[]",
            "assignments-TOTAL_FORMS": "0",
            "assignments-INITIAL_FORMS": "0",
        }
    )
    data = {key: (str(value).lower() if isinstance(value, bool) else value) for key, value in data.items()}
    for name in ("enabled", "paused"):
        if data.get(name) != "true":
            data.pop(name, None)
    response = administrator.post(url, data)
    assert response.status_code == HTTPStatus.FOUND, response.context["adminform"].form.errors
    entry = AuditEntry.objects.get(object_type="target")
    assert entry.action == "admin_change"
    assert "new-secret-token" not in str(entry.changes)
    assert "base_url" in str(entry.changes["message"]).lower().replace(" ", "_")


def test_scim_client_token_rotation_is_audited(administrator: Client) -> None:
    client, _ = scim_client_create(name="Entra")
    administrator.post(
        reverse("admin:scim_api_scimclient_changelist"),
        {"action": "rotate_token", "_selected_action": [client.pk]},
    )
    assert _entries("scimclient") == [("operator", "carol", "admin_change", str(client.pk))]
    assert ScimClient.objects.get(pk=client.pk).token_lookup != client.token_lookup


def test_operator_role_change_is_audited(administrator: Client) -> None:
    account = get_user_model().objects.create_user("dave", is_staff=True)
    url = reverse("admin:auth_user_change", args=[account.pk])
    form = administrator.get(url).context["adminform"].form
    helpdesk = account.groups.model.objects.get(name="helpdesk")
    data = {
        "username": "dave",
        "is_active": "on",
        "is_staff": "on",
        "groups": [helpdesk.pk],
        "date_joined_0": form.initial["date_joined"].strftime("%Y-%m-%d"),
        "date_joined_1": form.initial["date_joined"].strftime("%H:%M:%S"),
    }
    assert administrator.post(url, data).status_code == HTTPStatus.FOUND
    assert _entries("user") == [("operator", "carol", "admin_change", str(account.pk))]
    assert account.groups.filter(name="helpdesk").exists()
