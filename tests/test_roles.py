"""Operator roles, enforced in the admin: each admin page, for each role, is allowed or 403 as the role says.

The matrix walks every registered ModelAdmin (changelist, add, change, delete, history) and every custom
admin URL, with a real object where one is cheap to make and a missing id otherwise (the admin checks
permissions before it looks the object up). A role that lacks the permission a page needs gets 403;
a role that holds it gets what an administrator gets.
"""

import uuid
from http import HTTPStatus
from io import StringIO
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group as AuthGroup
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import models
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from directory import services
from directory.actors import Actor
from directory.models import AuditEntry, ChangeEvent, ExtensionDataExport, Membership
from directory.roles import ADMINISTRATORS, AUDITORS, HELPDESK, ROLES, roles_sync_installed
from provisioning.models import (
    AttributeMapping,
    Delivery,
    DeliveryAttempt,
    GuardGrant,
    ReconciliationFinding,
    ReconciliationRun,
    ScopeExclusion,
    SyncRun,
    Target,
    TargetLink,
    VendorProfile,
)
from scim_api.inbound.models import InboundJob, InboundRecord, InboundScheduledAction, InboundUpload
from scim_api.inbound.services import source_create
from scim_api.models import DialectRewrite
from scim_api.services import scim_client_create

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("test")
NOBODY = "staff without a role"


def _admin_models() -> list[str]:
    return sorted(f"{model._meta.app_label}.{model._meta.model_name}" for model in admin.site._registry)


# The standard pages of a ModelAdmin and the permission each needs (view pages also open with change).
PAGES = [
    ("changelist", "view"),
    ("add", "add"),
    ("change", "view"),
    ("delete", "delete"),
    ("history", "view"),
]


# Custom admin URLs: (url name, args kind, permission needed on GET and on POST).
CUSTOM_PAGES = [
    ("provisioning_target_provision", "target", "provisioning.change_target", "provisioning.change_target"),
    ("provisioning_target_mappings", "target-user", "provisioning.view_target", "provisioning.change_target"),
    ("provisioning_target_scoping", "target", "provisioning.view_target", "provisioning.change_target"),
    (
        "provisioning_target_test_connection",
        "target",
        "provisioning.view_target",
        "provisioning.change_target",
    ),
    ("provisioning_target_status", "target", "provisioning.view_target", "provisioning.change_target"),
    ("directory_extensionschema_values", "schema", "directory.view_extensionschema", None),
    ("directory_extensiondataexport_download", "export", "directory.view_extensiondataexport", None),
    ("scim_api_inbound_import", "source", "scim_api.change_inboundsource", "scim_api.change_inboundsource"),
    (
        "scim_api_inbound_import_mapping",
        "upload",
        "scim_api.change_inboundsource",
        "scim_api.change_inboundsource",
    ),
]


@pytest.fixture
def operators(db) -> dict[str, Client]:  # type: ignore[no-untyped-def]
    """A logged-in client per role (staff accounts in the role's group, not superusers), and one without."""
    roles_sync_installed()
    clients = {}
    for name in [role.name for role in ROLES] + [NOBODY]:
        # No password (force_login): hashing one with Argon2 per test would cost more than the test.
        account = get_user_model().objects.create_user(f"op-{name.replace(' ', '-')}", is_staff=True)
        if name != NOBODY:
            account.groups.add(AuthGroup.objects.get(name=name))
        client = Client()
        client.force_login(account)
        clients[name] = client
    return clients


@pytest.fixture
def objects(operators: dict[str, Client]) -> dict[str, Any]:
    """One real object for the models whose pages are worth rendering with data."""
    user = services.user_create(actor=SYSTEM, user_name="ada@example.com", display_name="Ada")
    group = services.group_create(actor=SYSTEM, display_name="Engineering")
    services.membership_add(actor=SYSTEM, group_id=group.pk, user_ids=[user.pk])
    profile = VendorProfile.objects.get_or_create(name="RFC 7644 (strict)")[0]
    target = Target(name="slack", base_url="http://127.0.0.1:9/scim/v2", profile=profile, rate_limit_rps=0)
    target.set_credentials({"token": "downstream-token"})
    target.save()
    client, _ = scim_client_create(name="Entra")
    source, _ = source_create(name="hr")
    schema = services.extension_schema_create(
        actor=SYSTEM,
        urn="urn:example:hr:1.0:User",
        name="HR",
        resource_type="user",
        attributes=[{"name": "level", "type": "integer"}],
    )
    upload = InboundUpload.objects.create(source=source, filename="w.csv", content="externalId\n1\n")
    job = InboundJob.objects.create(source=source)
    on_target = {"target": target, "object_type": "user", "object_id": user.pk}
    run = ReconciliationRun.objects.create(target=target, policy="report")
    return {
        "auth.group": AuthGroup.objects.get(name=HELPDESK),
        "auth.user": get_user_model().objects.get(username=f"op-{HELPDESK}"),
        "directory.user": user,
        "directory.group": group,
        "directory.membership": Membership.objects.first(),
        "directory.changeevent": ChangeEvent.objects.first(),
        "directory.auditentry": AuditEntry.objects.first(),
        "directory.extensionschema": schema,
        "directory.extensiondataexport": ExtensionDataExport.objects.create(urn=schema.urn),
        "scim_api.inboundsource": source,
        "scim_api.inboundjob": job,
        "scim_api.inboundrecord": InboundRecord.objects.create(job=job, index=0),
        "scim_api.heldinboundrecord": InboundRecord.objects.create(job=job, index=1, outcome="held"),
        "scim_api.inboundscheduledaction": InboundScheduledAction.objects.create(
            source=source, user=user, action="enable", due=timezone.now()
        ),
        "scim_api.scimclient": client,
        "scim_api.dialectrewrite": DialectRewrite.objects.create(client=client, name="entra-patch"),
        "provisioning.vendorprofile": profile,
        "provisioning.target": target,
        "provisioning.targetlink": TargetLink.objects.create(**on_target, remote_id="r1"),
        "provisioning.delivery": Delivery.objects.create(**on_target),
        "provisioning.deliveryattempt": DeliveryAttempt.objects.create(**on_target, outcome="success"),
        "provisioning.attributemapping": AttributeMapping.objects.create(
            target=target, object_type="user", target_attribute="userName", source="userName"
        ),
        "provisioning.helddelivery": Delivery.objects.create(
            **{**on_target, "object_id": group.pk, "object_type": "group"}, state="held"
        ),
        "provisioning.scopeexclusion": ScopeExclusion.objects.create(**on_target),
        "provisioning.guardgrant": GuardGrant.objects.create(**on_target, action="disable"),
        "provisioning.syncrun": SyncRun.objects.create(target=target),
        "provisioning.reconciliationrun": run,
        "provisioning.reconciliationfinding": ReconciliationFinding.objects.create(
            run=run, target=target, kind="drift", object_type="user", object_id=user.pk
        ),
        "upload": upload,
    }


def _missing_pk(model: type[models.Model]) -> str:
    return str(uuid.uuid4()) if isinstance(model._meta.pk, models.UUIDField) else "999999"


def _status(client: Client, url: str, method: str = "get") -> int:
    response = client.post(url, {}) if method == "post" else client.get(url)
    return response.status_code


def _model(label: str) -> type[models.Model]:
    return next(m for m in admin.site._registry if f"{m._meta.app_label}.{m._meta.model_name}" == label)


def _account(role: str) -> Any:
    return get_user_model().objects.get(username=f"op-{role.replace(' ', '-')}")


@pytest.mark.parametrize("label", _admin_models())
def test_admin_pages_per_role(operators: dict[str, Client], objects: dict[str, Any], label: str) -> None:
    model = _model(label)
    app_label, model_name = label.split(".")
    found = objects.get(label)
    pk = str(found.pk) if found is not None else _missing_pk(model)
    for page, action in PAGES:
        name = f"admin:{app_label}_{model_name}_{page}"
        url = reverse(name) if page in ("changelist", "add") else reverse(name, args=[pk])
        reference = _status(operators[ADMINISTRATORS], url)
        assert reference in (HTTPStatus.OK, HTTPStatus.FOUND, HTTPStatus.FORBIDDEN), (url, reference)
        needed = [
            f"{app_label}.{a}_{model_name}" for a in ([action, "change"] if action == "view" else [action])
        ]
        for role, client in operators.items():
            status = _status(client, url)
            if any(_account(role).has_perm(permission) for permission in needed):
                assert status == reference, (role, url, status, reference)
            else:
                assert status == HTTPStatus.FORBIDDEN, (role, url, status)


def _custom_url(kind: str, name: str, objects: dict[str, Any]) -> str:
    if kind == "target":
        return reverse(f"admin:{name}", args=[objects["provisioning.target"].pk])
    if kind == "target-user":
        return reverse(f"admin:{name}", args=[objects["provisioning.target"].pk, "user"])
    if kind == "schema":
        return reverse(f"admin:{name}", args=[objects["directory.extensionschema"].pk])
    if kind == "source":
        return reverse(f"admin:{name}", args=[objects["scim_api.inboundsource"].pk])
    if kind == "export":
        return reverse(f"admin:{name}", args=[objects["directory.extensiondataexport"].pk])
    if kind == "upload":
        upload = objects["upload"]
        return reverse(f"admin:{name}", args=[upload.source_id, upload.pk])
    raise AssertionError(kind)


@pytest.mark.parametrize(("name", "kind", "get_needs", "post_needs"), CUSTOM_PAGES, ids=lambda v: str(v))
def test_custom_admin_page_per_role(
    operators: dict[str, Client],
    objects: dict[str, Any],
    name: str,
    kind: str,
    get_needs: str,
    post_needs: str | None,
) -> None:
    url = _custom_url(kind, name, objects)
    reference = _status(operators[ADMINISTRATORS], url)
    assert reference in (HTTPStatus.OK, HTTPStatus.NOT_FOUND), (url, reference)
    for role, client in operators.items():
        user = _account(role)
        status = _status(client, url)
        expected = reference if user.has_perm(get_needs) else HTTPStatus.FORBIDDEN
        assert status == expected, (role, url, status)
        if post_needs and not user.has_perm(post_needs):
            # An empty POST is refused before anything runs (no action, no save, no checks sent).
            assert _status(client, url, "post") == HTTPStatus.FORBIDDEN, (role, url)


def test_roles_hold_what_they_are_documented_to_hold(db) -> None:  # type: ignore[no-untyped-def]
    roles_sync_installed()

    def perms(name: str) -> set[str]:
        group = AuthGroup.objects.get(name=name)
        return {
            f"{p.content_type.app_label}.{p.codename}"
            for p in group.permissions.select_related("content_type")
        }

    helpdesk, auditors, administrators = perms(HELPDESK), perms(AUDITORS), perms(ADMINISTRATORS)
    assert administrators == {
        f"{app}.{codename}"
        for app, codename in Permission.objects.values_list("content_type__app_label", "codename")
    }
    assert {"directory.change_user", "directory.delete_group", "directory.add_membership"} <= helpdesk
    assert "directory.view_auditentry" in helpdesk
    assert not {p for p in helpdesk if not p.startswith("directory.")}
    for forbidden in (
        "directory.change_extensionschema",
        "directory.view_extensionschema",
        "auth.change_user",
    ):
        assert forbidden not in helpdesk
    assert all(p.split(".")[1].startswith("view_") for p in auditors)
    assert {
        "directory.view_auditentry",
        "provisioning.view_deliveryattempt",
        "scim_api.view_scimclient",
    } <= auditors


def test_sync_roles_restores_drifted_permissions(db) -> None:  # type: ignore[no-untyped-def]
    roles_sync_installed()
    helpdesk = AuthGroup.objects.get(name=HELPDESK)
    helpdesk.permissions.add(Permission.objects.get(codename="change_target"))
    AuthGroup.objects.filter(name=AUDITORS).delete()
    out = StringIO()
    call_command("sync_roles", stdout=out)
    assert not helpdesk.permissions.filter(codename="change_target").exists()
    assert AuthGroup.objects.get(name=AUDITORS).permissions.filter(codename="view_target").exists()
    assert "helpdesk: " in out.getvalue()


def _action_names(client: Client, url: str) -> set[str]:
    response = client.get(url)
    if response.status_code != HTTPStatus.OK:
        return set()
    form = response.context.get("action_form")
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


@pytest.mark.parametrize("label", _admin_models())
def test_admin_actions_offered_only_to_roles_that_may_change(
    operators: dict[str, Client], objects: dict[str, Any], label: str
) -> None:
    app_label, model_name = label.split(".")
    url = reverse(f"admin:{app_label}_{model_name}_changelist")
    assert _action_names(operators[AUDITORS], url) == set(), "auditors are read-only"
    assert _action_names(operators[NOBODY], url) == set()
    if app_label != "directory" or model_name not in ("user", "group", "membership"):
        assert _action_names(operators[HELPDESK], url) == set()


def test_auditor_posting_a_target_action_changes_nothing(
    operators: dict[str, Client], objects: dict[str, Any]
) -> None:
    target = objects["provisioning.target"]
    url = reverse("admin:provisioning_target_changelist")
    operators[AUDITORS].post(url, {"action": "pause", "_selected_action": [target.pk]})
    target.refresh_from_db()
    assert target.paused is False
    operators[ADMINISTRATORS].post(url, {"action": "pause", "_selected_action": [target.pk]})
    target.refresh_from_db()
    assert target.paused is True


def test_helpdesk_edits_a_user_through_the_services(
    operators: dict[str, Client], objects: dict[str, Any]
) -> None:
    user = objects["directory.user"]
    operators[HELPDESK].post(
        reverse("admin:directory_user_changelist"), {"action": "deactivate", "_selected_action": [user.pk]}
    )
    user.refresh_from_db()
    assert user.active is False
    entry = AuditEntry.objects.filter(object_id=user.pk).latest("id")
    assert (entry.actor_type, entry.actor_name, entry.action) == ("operator", f"op-{HELPDESK}", "deactivate")


def test_read_only_roles_never_see_target_credentials(
    operators: dict[str, Client], objects: dict[str, Any]
) -> None:
    target = objects["provisioning.target"]
    for role in (AUDITORS, ADMINISTRATORS):
        page = operators[role].get(reverse("admin:provisioning_target_change", args=[target.pk]))
        assert page.status_code == HTTPStatus.OK
        assert "downstream-token" not in page.content.decode()
    # An auditor's page is read-only: no form to post credentials with.
    assert (
        'name="token"'
        not in operators[AUDITORS]
        .get(reverse("admin:provisioning_target_change", args=[target.pk]))
        .content.decode()
    )
