"""The per-target admin pages: mappings with preview, scoping filters with preview, test connection, status
with its actions, and held disables/deletes."""

import html
import uuid
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone

from directory import services as directory
from directory.models import ChangeEvent
from provisioning import queue
from provisioning.configuration import mappings_seed_default
from provisioning.mapping import default_rows
from provisioning.models import (
    AttributeMapping,
    Delivery,
    DeliveryAttempt,
    Target,
    TargetAssignment,
    TargetLink,
)
from provisioning.services import target_scope_update
from tests.provisioning.downstream import TOKEN, InProcessScim
from tests.provisioning.helpers import run_all

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    ids: list[int] = []
    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: ids.extend(delivery_ids))
    return ids


def logged(target) -> list[str]:
    return list(
        LogEntry.objects.filter(object_id=str(target.pk))
        .order_by("id")
        .values_list("change_message", flat=True)
    )


def rows_post(rows, **extra):
    data = {
        "rows-TOTAL_FORMS": len(rows),
        "rows-INITIAL_FORMS": 0,
        "rows-MIN_NUM_FORMS": 0,
        "rows-MAX_NUM_FORMS": 1000,
    }
    for index, row in enumerate(rows):
        attribute, kind, source, *rest = row
        data.update(
            {
                f"rows-{index}-target_attribute": attribute,
                f"rows-{index}-source_kind": kind,
                f"rows-{index}-source": source,
                f"rows-{index}-default_value": rest[0] if rest else "",
                f"rows-{index}-apply": rest[1] if len(rest) > 1 else "always",
            }
        )
    return {**data, **extra}


def test_mappings_page_seeds_previews_unsaved_edits_and_saves(
    admin_client_logged_in, actor, target_factory, sent, django_capture_on_commit_callbacks
):
    target = target_factory()
    ada = directory.user_create(actor=actor, user_name="ada@example.com", display_name="Ada Lovelace")
    directory.user_create(actor=actor, user_name="bob@example.com")
    url = f"/admin/provisioning/target/{target.pk}/mappings/user/"

    page = admin_client_logged_in.get(url).content.decode()
    assert "No saved rows: the target gets the default mapping." in page
    admin_client_logged_in.post(url, {"_seed": "1"})
    assert AttributeMapping.objects.filter(target=target, object_type="user").count() == len(
        default_rows("user")
    )
    assert "Seeded" in logged(target)[-1]

    edits = [
        ("userName", "attribute", "userName"),
        ("displayName", "expression", "ToUpper([displayName])"),
        ("title", "constant", "Staff", "", "on_create"),
    ]
    response = admin_client_logged_in.post(
        url, rows_post(edits, _preview="1", preview_object="ada@example.com")
    )
    page = html.unescape(response.content.decode())
    assert response.status_code == HTTPStatus.OK
    assert '"displayName": "Ada Lovelace"' in page  # saved
    assert '"displayName": "ADA LOVELACE"' in page  # edited, not saved
    assert '"title": "Staff"' in page  # ada has no link yet: the create payload
    # Both users' payloads change (ada's displayName, and the title constant for both); nothing is saved.
    assert "2 of 2 users would receive a different payload" in page
    assert AttributeMapping.objects.filter(target=target, object_type="user").count() == len(
        default_rows("user")
    )

    bad = [("userName", "attribute", "userName"), ("title", "expression", "Left([title])")]
    response = admin_client_logged_in.post(url, rows_post(bad, _save="1"))
    assert response.status_code == HTTPStatus.OK
    assert "Left takes 2 arguments, not 1" in response.content.decode()
    assert AttributeMapping.objects.filter(target=target, object_type="user").count() == len(
        default_rows("user")
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_logged_in.post(url, rows_post(edits, _save="1"))
    assert response.status_code == HTTPStatus.FOUND
    saved = AttributeMapping.objects.filter(target=target, object_type="user").order_by("position")
    assert [(m.target_attribute, m.source_kind, m.apply) for m in saved] == [
        ("userName", "attribute", "always"),
        ("displayName", "expression", "always"),
        ("title", "constant", "on_create"),
    ]
    assert "Saved 3 user mapping rows; a full sync is queued" in logged(target)[-1]
    assert Delivery.objects.filter(
        target=target, object_id=ada.pk, priority=Delivery.Priority.BACKFILL
    ).exists()


def test_mapping_admin_checks_single_rows_through_the_service(admin_client_logged_in, target_factory):
    target = target_factory()
    mappings_seed_default(target=target)
    revision = Target.objects.get(pk=target.pk).mapping_revision
    form = {
        "target": target.pk,
        "object_type": "user",
        "position": 99,
        "target_attribute": "userName",
        "source_kind": "attribute",
        "source": "externalId",
        "default_value": "",
        "apply": "always",
    }
    response = admin_client_logged_in.post("/admin/provisioning/attributemapping/add/", form)
    assert "userName is mapped twice" in response.content.decode()
    form["target_attribute"] = "urn:example:app:1.0:User:legacyId"
    response = admin_client_logged_in.post("/admin/provisioning/attributemapping/add/", form)
    assert response.status_code == HTTPStatus.FOUND
    assert AttributeMapping.objects.filter(target_attribute="urn:example:app:1.0:User:legacyId").exists()
    assert Target.objects.get(pk=target.pk).mapping_revision == revision + 1


def test_scoping_page_previews_then_saves(admin_client_logged_in, actor, target_factory, sent):
    target = target_factory(scope="all")
    for n in range(3):
        directory.user_create(actor=actor, user_name=f"s{n}@example.com", department="Sales")
    directory.user_create(actor=actor, user_name="h@example.com", department="HR")
    url = f"/admin/provisioning/target/{target.pk}/scoping/"
    sales = '[[{"attribute": "department", "operator": "EQUALS", "value": "Sales"}]]'

    page = admin_client_logged_in.post(
        url, {"user_scoping_filters": sales, "group_scoping_filters": "[]", "_preview": "1"}
    ).content.decode()
    assert "0 would enter scope, 1 would leave it (4 candidates evaluated)" in page
    assert "h@example.com: out of scope: filter 1: department EQUALS" in page
    target.refresh_from_db()
    assert target.user_scoping_filters == []

    page = admin_client_logged_in.post(
        url, {"user_scoping_filters": '[[{"attribute": "shoe", "operator": "EQUALS"}]]', "_preview": "1"}
    ).content.decode()
    assert "a user has no attribute &#x27;shoe&#x27;" in page

    response = admin_client_logged_in.post(
        url, {"user_scoping_filters": sales, "group_scoping_filters": "[]", "_save": "1"}
    )
    assert response.status_code == HTTPStatus.FOUND
    target.refresh_from_db()
    assert target.user_scoping_filters[0][0]["value"] == "Sales"
    assert "0 object(s) entered scope, 1 left" in logged(target)[-1]


def test_target_form_checks_filters_and_saves_guard_thresholds(
    admin_client_logged_in, target_factory, rfc_profile
):
    target = target_factory()
    form = {
        "name": target.name,
        "base_url": target.base_url,
        "profile": rfc_profile.pk,
        "enabled": "on",
        "auth_type": "bearer",
        "connect_timeout": 5,
        "read_timeout": 30,
        "rate_limit_rps": 25,
        "rate_limit_burst": 50,
        "max_concurrency": 4,
        "user_matching": '["externalId", "userName"]',
        "group_matching": '["externalId", "displayName"]',
        "scope": "all",
        "deletion_policy": "disable",
        "user_scoping_filters": '[[{"attribute": "department", "operator": "SOUNDS LIKE", "value": "x"}]]',
        "group_scoping_filters": "[]",
        "guard_hour_max_count": 10,
        "guard_run_max_percent": 5,
        "reconcile_interval_minutes": 360,
        "reconcile_policy": "report",
        "assignments-TOTAL_FORMS": 0,
        "assignments-INITIAL_FORMS": 0,
    }
    url = f"/admin/provisioning/target/{target.pk}/change/"
    response = admin_client_logged_in.post(url, form)
    assert response.status_code == HTTPStatus.OK
    assert "unknown operator &#x27;SOUNDS LIKE&#x27;" in response.content.decode()
    form["user_scoping_filters"] = '[[{"attribute": "active", "operator": "IS TRUE"}]]'
    assert admin_client_logged_in.post(url, form).status_code == HTTPStatus.FOUND
    target.refresh_from_db()
    assert (target.guard_hour_max_count, target.guard_run_max_percent) == (10, 5.0)
    assert target.user_scoping_filters == [[{"attribute": "active", "operator": "IS TRUE"}]]
    page = admin_client_logged_in.get(url).content.decode()
    for link in ("status", "mappings/user", "mappings/group", "scoping", "test-connection"):
        assert f"/admin/provisioning/target/{target.pk}/{link}/" in page


def test_test_connection_page_and_action_explain_each_check(
    admin_client_logged_in, target_factory, scim2_url
):
    target = target_factory(base_url=scim2_url, token=TOKEN)
    url = f"/admin/provisioning/target/{target.pk}/test-connection/"
    assert "Run the checks" in admin_client_logged_in.get(url).content.decode()
    page = admin_client_logged_in.post(url).content.decode()
    assert "Every check passed" in page
    assert page.count('class="check-pass"') == 6
    assert "a random externalId matched nothing, as it should" in page

    broken = target_factory(base_url=scim2_url, token="wrong")
    response = admin_client_logged_in.post(
        "/admin/provisioning/target/",
        {"action": "test_connection", "_selected_action": [target.pk, broken.pk]},
        follow=True,
    )
    page = response.content.decode().lower()  # the admin capitalises messages
    assert f"{target.name}: every check passed" in page
    assert f"{broken.name}: authentication: the target refused the credentials (401)" in page


def busy(target, actor, users: int):
    """A target with deliveries in every state and an hour of log rows behind it."""
    now = timezone.now()
    for n in range(users):
        user = directory.user_create(actor=actor, user_name=f"busy{target.pk}-{n}@example.com")
        event = ChangeEvent.objects.filter(object_id=user.pk).latest("id")
        ChangeEvent.objects.filter(pk=event.pk).update(created=now - timedelta(seconds=n + 1))
        state = ["queued", "done", "failed", "held"][n % 4]
        delivery = Delivery.objects.create(
            target=target,
            object_type="user",
            object_id=user.pk,
            state=state,
            priority=n % 3,
            version=event.pk,
            leased_version=event.pk,
        )
        DeliveryAttempt.objects.create(
            target=target,
            delivery=delivery,
            object_type="user",
            object_id=user.pk,
            outcome="success" if n % 2 else "failed",
            created=now,
        )


def test_status_page_shows_queue_lag_errors_and_last_run_in_constant_queries(
    admin_client_logged_in, actor, target_factory, sent, django_assert_num_queries
):
    quiet, loud = target_factory(), target_factory()
    Target.objects.filter(pk__in=[quiet.pk, loud.pk]).update(
        last_full_sync_at=timezone.now(), last_full_sync_run_id=uuid.uuid4()
    )
    busy(quiet, actor, 1)
    busy(loud, actor, 40)
    Target.objects.filter(pk=loud.pk).update(
        circuit_state="quarantined",
        circuit_reason="GET Users answered 401",
        circuit_next_attempt_at=timezone.now(),
    )

    # The same queries for 1 delivery as for 40: session, operator, target, the six of target_status.
    for target in (quiet, loud):
        with django_assert_num_queries(9):
            response = admin_client_logged_in.get(f"/admin/provisioning/target/{target.pk}/status/")
        assert response.status_code == HTTPStatus.OK

    page = response.content.decode()
    # 40 users: 10 each of queued, done, failed, held; 20 successes with lags of 2, 4, ... 40 seconds.
    assert "10 queued or running, 10 held by the deletion guard." in page
    assert "50% (20 of 40 attempts failed or will retry)" in page
    assert "p50 21.00 s, p95 38.10 s over 20 pushes" in page
    assert "Quarantined" in page
    assert "GET Users answered 401" in page


def test_status_queries_are_a_fixed_number(actor, target_factory, django_assert_num_queries):
    from provisioning.status import target_status

    target = target_factory()
    Target.objects.filter(pk=target.pk).update(last_full_sync_run_id=uuid.uuid4())
    target.refresh_from_db()
    busy(target, actor, 12)
    # queue, lag, error totals, last attempt, last run, guard grants.
    with django_assert_num_queries(6):
        status = target_status(target=target)
    assert (status.queued, status.held, status.attempts, status.errors) == (3, 3, 12, 6)
    assert status.lag.samples == 6
    # 6 successes at n = 1, 3, 5, 7, 9, 11: lags of 2, 4, ..., 12 seconds.
    assert status.lag.p50 == pytest.approx(7.0, abs=0.01)
    assert status.lag.p95 == pytest.approx(11.5, abs=0.01)


def test_status_actions_go_through_services_and_are_logged(
    admin_client_logged_in, actor, target_factory, sent, django_capture_on_commit_callbacks
):
    target = target_factory(scope="assigned")
    staff = directory.group_create(actor=actor, display_name="Staff")
    TargetAssignment.objects.create(target=target, group=staff)
    target_scope_update(target=target)
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    directory.membership_add(actor=actor, group_id=staff.pk, user_ids=[ada.pk])
    run_all(InProcessScim().connection())
    url = f"/admin/provisioning/target/{target.pk}/status/"

    Target.objects.filter(pk=target.pk).update(circuit_state="quarantined", circuit_reason="401")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client_logged_in.post(url, {"action": "clear_quarantine"})
    assert Target.objects.get(pk=target.pk).circuit_state == "healthy"

    Delivery.objects.filter(target=target).update(state="failed")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client_logged_in.post(url, {"action": "retry_failed"})
    queued = Delivery.objects.filter(target=target, state="queued")
    assert set(queued.values_list("object_id", flat=True)) == {ada.pk, staff.pk}

    Delivery.objects.filter(target=target).update(state="done")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client_logged_in.post(url, {"action": "full_sync"})
    target.refresh_from_db()
    assert target.last_full_sync_run_id is not None
    assert Delivery.objects.filter(target=target, run_id=target.last_full_sync_run_id).count() == 2

    admin_client_logged_in.post(url, {"action": "forget_links", "confirm": "not the name"})
    assert TargetLink.objects.filter(target=target).count() == 2
    admin_client_logged_in.post(url, {"action": "forget_links", "confirm": target.name})
    assert not TargetLink.objects.filter(target=target).exists()

    assert [message.split(";")[0].split(":")[0] for message in logged(target)] == [
        "Quarantine cleared",
        "Retry failed",
        f"Full sync {target.last_full_sync_run_id} queued",
        "Forgot 2 links",
    ]
    assert admin_client_logged_in.post(url, {"action": "explode"}).status_code == HTTPStatus.BAD_REQUEST


def test_held_operations_are_listed_and_approved_or_rejected_in_the_admin(
    admin_client_logged_in, actor, target_factory, sent, django_capture_on_commit_callbacks
):
    target = target_factory(scope="assigned", guard_hour_max_count=1)
    staff = directory.group_create(actor=actor, display_name="Staff")
    TargetAssignment.objects.create(target=target, group=staff)
    target_scope_update(target=target)
    users = [directory.user_create(actor=actor, user_name=f"u{n}@example.com") for n in range(4)]
    directory.membership_add(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users])
    downstream = InProcessScim()
    run_all(downstream.connection())
    directory.membership_remove(actor=actor, group_id=staff.pk, user_ids=[u.pk for u in users])
    run_all(downstream.connection())
    held = list(Delivery.objects.filter(target=target, state="held").order_by("id"))
    assert len(held) == 3

    page = admin_client_logged_in.get("/admin/provisioning/helddelivery/").content.decode()
    assert "3 held disables and deletes" in page
    assert "held by the deletion guard: disable of u" in page

    with django_capture_on_commit_callbacks(execute=True):
        admin_client_logged_in.post(
            "/admin/provisioning/helddelivery/", {"action": "approve", "_selected_action": [held[0].pk]}
        )
    assert Delivery.objects.get(pk=held[0].pk).guard_approved_by == "operator"
    admin_client_logged_in.post(
        "/admin/provisioning/helddelivery/", {"action": "reject", "_selected_action": [held[1].pk]}
    )
    assert Delivery.objects.get(pk=held[1].pk).state == "superseded"
    with django_capture_on_commit_callbacks(execute=True):
        admin_client_logged_in.post(
            f"/admin/provisioning/target/{target.pk}/status/", {"action": "approve_held"}
        )
    assert not Delivery.objects.filter(target=target, state="held").exists()
    assert [m for m in logged(target) if "held" in m] == [
        f"Approved held deliveries {held[0].pk}",
        f"Rejected held deliveries {held[1].pk}",
        "Approved 1 held disable(s)/delete(s); they go through on their next attempt.",
    ]
    for changelist in ("attributemapping", "scopeexclusion", "guardgrant", "helddelivery"):
        assert admin_client_logged_in.get(f"/admin/provisioning/{changelist}/").status_code == HTTPStatus.OK


def test_target_changelist_counts_each_queue_in_the_same_query(
    admin_client_logged_in, target_factory, django_assert_num_queries
):
    def queue(target, states):
        for state in states:
            lease = timezone.now() + timedelta(minutes=5) if state == "running" else None
            Delivery.objects.create(
                target=target, object_type="user", object_id=uuid.uuid4(), state=state, lease_until=lease
            )

    first = target_factory()
    queue(first, ["queued", "queued", "done", "held"])
    with django_assert_num_queries(5) as one:
        page = admin_client_logged_in.get("/admin/provisioning/target/").content.decode()
    assert '<td class="field-queue_depth">2</td>' in page
    for n in range(3):
        queue(target_factory(), ["running"] * (n + 3) + ["failed"])
    with django_assert_num_queries(len(one.captured_queries)):
        page = admin_client_logged_in.get("/admin/provisioning/target/").content.decode()
    for count in (2, 3, 4, 5):
        assert f'<td class="field-queue_depth">{count}</td>' in page
