"""The operator admin writes through the services: every edit is versioned, in the outbox and audited."""

from http import HTTPStatus
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from directory import services
from directory.actors import Actor
from directory.models import AuditEntry, ChangeEvent, Group, Membership, User

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")


def _user_form(user: User | None = None, **overrides: Any) -> dict[str, Any]:
    """The POST body of the user change form, as a browser would send it."""
    fields = {
        "user_name": "",
        "external_id": "",
        "active": "on",
        "new_password": "",
        "display_name": "",
        "name_formatted": "",
        "honorific_prefix": "",
        "given_name": "",
        "middle_name": "",
        "family_name": "",
        "honorific_suffix": "",
        "nick_name": "",
        "title": "",
        "user_type": "",
        "profile_url": "",
        "preferred_language": "",
        "locale": "",
        "timezone": "",
        "employee_number": "",
        "cost_center": "",
        "organization": "",
        "division": "",
        "department": "",
        "manager": "",
        "extensions": "{}",
    }
    values = list(user.values.all()) if user else []
    memberships = list(user.memberships.all()) if user else []
    if user is not None:
        for name in fields:
            if name in ("new_password", "manager", "extensions", "active"):
                continue
            fields[name] = getattr(user, name)
        if not user.active:
            del fields["active"]
    form: dict[str, Any] = {
        **fields,
        "values-TOTAL_FORMS": str(len(values)),
        "values-INITIAL_FORMS": str(len(values)),
        "values-MIN_NUM_FORMS": "0",
        "values-MAX_NUM_FORMS": "1000",
        "memberships-TOTAL_FORMS": str(len(memberships)),
        "memberships-INITIAL_FORMS": str(len(memberships)),
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    for index, value in enumerate(values):
        form.update(
            {
                f"values-{index}-id": str(value.pk),
                f"values-{index}-user": str(user.pk),  # type: ignore[union-attr]
                f"values-{index}-kind": value.kind,
                f"values-{index}-value": value.value,
                f"values-{index}-type": value.type,
                f"values-{index}-display": value.display,
                f"values-{index}-address": "{}",
            }
        )
        if value.primary:
            form[f"values-{index}-primary"] = "on"
    for index, membership in enumerate(memberships):
        form.update(
            {
                f"memberships-{index}-id": str(membership.pk),
                f"memberships-{index}-member_user": str(user.pk),  # type: ignore[union-attr]
                f"memberships-{index}-group": str(membership.group_id),
            }
        )
    form.update(overrides)
    return form


def _add_value(form: dict[str, Any], **value: str) -> None:
    index = int(form["values-TOTAL_FORMS"])
    form["values-TOTAL_FORMS"] = str(index + 1)
    form.update({f"values-{index}-address": "{}", **{f"values-{index}-{k}": v for k, v in value.items()}})


def _add_membership(form: dict[str, Any], group: Group) -> None:
    index = int(form["memberships-TOTAL_FORMS"])
    form["memberships-TOTAL_FORMS"] = str(index + 1)
    form[f"memberships-{index}-group"] = str(group.pk)


def test_adding_a_user_in_the_admin_writes_through_the_services(admin_client_logged_in):
    group = services.group_create(actor=SYSTEM, display_name="Engineers")
    form = _user_form(
        user_name="grace@example.com", display_name="Grace Hopper", new_password="a-Long-passphrase-1"
    )
    _add_value(form, kind="emails", value="grace@example.com", type="work", primary="on")
    _add_membership(form, group)

    response = admin_client_logged_in.post(reverse("admin:directory_user_add"), form)

    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:3000]
    user = User.objects.get(user_name="grace@example.com")
    assert response["Location"] == reverse("admin:directory_user_changelist")
    assert user.password.startswith("argon2$")
    assert list(user.values.values_list("kind", "value", "primary")) == [
        ("emails", "grace@example.com", True)
    ]
    assert Membership.objects.filter(group=group, member_user=user).exists()
    assert list(ChangeEvent.objects.filter(object_id=user.pk).values_list("kind", flat=True)) == ["created"]
    assert ChangeEvent.objects.filter(object_id=group.pk, kind="member_added", member_id=user.pk).exists()
    entries = AuditEntry.objects.filter(actor_type="operator", actor_name="operator")
    assert sorted(entries.values_list("action", flat=True)) == ["create", "member_add"]


def test_editing_a_user_in_the_admin_records_one_event_with_the_diff(admin_client_logged_in, user_factory):
    user = user_factory(title="Engineer")
    url = reverse("admin:directory_user_change", args=[user.pk])

    response = admin_client_logged_in.post(url, _user_form(user, title="Principal engineer"))

    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:3000]
    user.refresh_from_db()
    assert (user.title, user.version) == ("Principal engineer", 2)
    assert list(ChangeEvent.objects.filter(object_id=user.pk).values_list("kind", flat=True)) == ["updated"]
    assert AuditEntry.objects.get(object_id=user.pk).changes == {"title": ["Engineer", "Principal engineer"]}


def test_saving_an_unchanged_user_in_the_admin_writes_nothing(admin_client_logged_in, user_factory):
    user = user_factory()
    services.user_update(actor=SYSTEM, user_id=user.pk, values={"emails": [{"value": "x@example.com"}]})
    user.refresh_from_db()
    events = ChangeEvent.objects.count()

    response = admin_client_logged_in.post(
        reverse("admin:directory_user_change", args=[user.pk]), _user_form(user)
    )

    assert response.status_code == HTTPStatus.FOUND
    assert ChangeEvent.objects.count() == events
    assert User.objects.get(pk=user.pk).version == user.version


def test_removing_a_membership_in_the_user_inline_goes_through_the_service(
    admin_client_logged_in, user_factory
):
    user = user_factory()
    group = services.group_create(actor=SYSTEM, display_name="Leavers", member_user_ids=[user.pk])
    form = _user_form(user, **{"memberships-0-DELETE": "on"})

    response = admin_client_logged_in.post(reverse("admin:directory_user_change", args=[user.pk]), form)

    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:3000]
    assert not Membership.objects.filter(group=group).exists()
    assert ChangeEvent.objects.filter(object_id=group.pk, kind="member_removed", member_id=user.pk).exists()


def test_admin_shows_a_duplicate_user_name_as_a_form_error(admin_client_logged_in, user_factory):
    user_factory(user_name="taken@example.com")

    response = admin_client_logged_in.post(
        reverse("admin:directory_user_add"), _user_form(user_name="TAKEN@example.com")
    )

    assert response.status_code == HTTPStatus.OK
    assert "A user with this userName already exists" in response.content.decode()
    assert User.objects.count() == 1


def test_admin_shows_two_primary_emails_as_a_form_error(admin_client_logged_in):
    form = _user_form(user_name="two@example.com")
    _add_value(form, kind="emails", value="a@example.com", primary="on")
    _add_value(form, kind="emails", value="b@example.com", primary="on")

    response = admin_client_logged_in.post(reverse("admin:directory_user_add"), form)

    assert response.status_code == HTTPStatus.OK
    assert "At most one of emails may be primary" in response.content.decode()
    assert not User.objects.exists()
    assert not ChangeEvent.objects.exists()


def test_deactivate_action_deactivates_through_the_service(admin_client_logged_in, user_factory):
    active, inactive = user_factory(), user_factory(active=False)

    response = admin_client_logged_in.post(
        reverse("admin:directory_user_changelist"),
        {"action": "deactivate", "_selected_action": [str(active.pk), str(inactive.pk)]},
    )

    assert response.status_code == HTTPStatus.FOUND
    assert not User.objects.get(pk=active.pk).active
    assert list(ChangeEvent.objects.values_list("object_id", "kind")) == [(active.pk, "deactivated")]


def test_activate_action_reactivates(admin_client_logged_in, user_factory):
    user = user_factory(active=False)
    admin_client_logged_in.post(
        reverse("admin:directory_user_changelist"), {"action": "activate", "_selected_action": [str(user.pk)]}
    )
    assert User.objects.get(pk=user.pk).active
    assert list(ChangeEvent.objects.values_list("kind", flat=True)) == ["activated"]


def test_deleting_a_user_in_the_admin_goes_through_the_service(admin_client_logged_in, user_factory):
    user = user_factory()
    response = admin_client_logged_in.post(
        reverse("admin:directory_user_delete", args=[user.pk]), {"post": "yes"}
    )
    assert response.status_code == HTTPStatus.FOUND
    assert not User.objects.filter(pk=user.pk).exists()
    assert list(ChangeEvent.objects.values_list("kind", flat=True)) == ["deleted"]


def test_group_admin_create_edit_and_membership_admin(admin_client_logged_in, user_factory):
    user = user_factory()
    response = admin_client_logged_in.post(
        reverse("admin:directory_group_add"),
        {
            "display_name": "M365 Project",
            "kind": "unified",
            "security_enabled": "on",
            "mail_nickname": "project",
            "mail_enabled": "on",
            "description": "",
            "external_id": "",
            "extensions": "{}",
        },
    )
    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:3000]
    group = Group.objects.get(display_name="M365 Project")
    assert group.mail_enabled

    response = admin_client_logged_in.post(
        reverse("admin:directory_membership_add"), {"group": str(group.pk), "member_user": str(user.pk)}
    )
    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:3000]
    membership = Membership.objects.get(group=group, member_user=user)

    response = admin_client_logged_in.post(
        reverse("admin:directory_membership_delete", args=[membership.pk]), {"post": "yes"}
    )
    assert response.status_code == HTTPStatus.FOUND
    assert not Membership.objects.exists()
    assert list(ChangeEvent.objects.filter(object_id=group.pk).values_list("kind", flat=True)) == [
        "created",
        "member_added",
        "member_removed",
    ]
    assert set(AuditEntry.objects.values_list("actor_type", flat=True)) == {"operator"}


def test_membership_admin_refuses_a_nesting_cycle(admin_client_logged_in, group_factory):
    parent, child = group_factory(), group_factory()
    services.membership_add(actor=SYSTEM, group_id=parent.pk, group_ids=[child.pk])

    response = admin_client_logged_in.post(
        reverse("admin:directory_membership_add"), {"group": str(child.pk), "member_group": str(parent.pk)}
    )

    assert response.status_code == HTTPStatus.OK
    assert "would form a cycle" in response.content.decode()
    assert Membership.objects.count() == 1


def _page_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == HTTPStatus.OK
    return len(queries)


def test_user_changelist_query_count_does_not_grow_with_rows(admin_client_logged_in, user_factory):
    url = reverse("admin:directory_user_changelist")
    manager = user_factory()
    user_factory.create_batch(3, manager=manager)
    few = _page_queries(admin_client_logged_in, url)
    user_factory.create_batch(40, manager=manager)
    assert _page_queries(admin_client_logged_in, url) == few


def test_group_pages_never_load_the_members(admin_client_logged_in, group_factory, user_factory):
    group = group_factory()
    users = user_factory.create_batch(60)
    Membership.objects.bulk_create([Membership(group=group, member_user=user) for user in users])

    with CaptureQueriesContext(connection) as queries:
        response = admin_client_logged_in.get(reverse("admin:directory_group_change", args=[group.pk]))

    assert response.status_code == HTTPStatus.OK
    assert "View the 60 direct member(s)" in response.content.decode()
    assert not any(users[0].user_name in query["sql"] for query in queries.captured_queries)
    assert not any("directory_user" in query["sql"] for query in queries.captured_queries)
    changelist = reverse("admin:directory_group_changelist")
    assert _page_queries(admin_client_logged_in, changelist) <= 8


def test_outbox_and_audit_trail_are_read_only(admin_client_logged_in, user_factory):
    user = user_factory()
    services.user_update(actor=SYSTEM, user_id=user.pk, title="x")
    event, entry = ChangeEvent.objects.get(), AuditEntry.objects.get()

    for name in ("changeevent", "auditentry"):
        assert (
            admin_client_logged_in.get(reverse(f"admin:directory_{name}_changelist")).status_code
            == HTTPStatus.OK
        )
        assert (
            admin_client_logged_in.get(reverse(f"admin:directory_{name}_add")).status_code
            == HTTPStatus.FORBIDDEN
        )
    response = admin_client_logged_in.post(
        reverse("admin:directory_changeevent_delete", args=[event.pk]), {"post": "yes"}
    )
    assert response.status_code == HTTPStatus.FORBIDDEN
    response = admin_client_logged_in.get(
        reverse("admin:directory_auditentry_changelist") + f"?object_id={user.pk}"
    )
    assert "test" in response.content.decode()
    assert ChangeEvent.objects.filter(pk=event.pk).exists()
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
