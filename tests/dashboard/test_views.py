"""The dashboard page: real data from the services and a week of history, rendered; bounded queries."""

import re
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from directory.models import AuditEntry
from tests.dashboard.seed import ACTIVE_USERS, GROUPS, HELD, USERS, make_target, seed_dashboard, seed_history
from tests.scim_api.inbound.holds import hold_inbound_leavers

pytestmark = pytest.mark.django_db

URL = "/admin/dashboard/"
# Session and operator (2), users and groups (2), SCIM clients (3), targets (5), held (1), inbound holds
# (2, and the sources' names when something is held): none per target.
MAX_QUERIES = 16


def sections(html: str) -> dict[str, str]:
    """Each target's <section>, by target name."""
    found = {}
    for section in re.findall(r'<section class="dash-target".*?</section>', html, re.S):
        name = re.search(r"<h3><a [^>]*>([^<]+)</a></h3>", section)
        assert name is not None
        found[name.group(1)] = section
    return found


def test_dashboard_shows_counts_targets_charts_held_and_clients(admin_client_logged_in) -> None:
    now = timezone.now()
    seeded = seed_dashboard(now=now)

    response = admin_client_logged_in.get(URL)

    assert response.status_code == HTTPStatus.OK
    html = response.content.decode()
    assert f'id="count-users">{USERS}<' in html
    assert f'id="count-active-users">{ACTIVE_USERS}<' in html
    assert f'id="count-groups">{GROUPS}<' in html
    assert 'id="count-clients">3<' in html
    assert 'id="count-targets">4<' in html
    assert f'id="count-held">{HELD}<' in html

    targets = sections(html)
    assert list(targets) == ["Legacy LDAP bridge", "Salesforce", "Slack", "Zendesk"]
    states = {name: re.search(r'data-state="(\w+)"', section).group(1) for name, section in targets.items()}
    assert states == {
        "Legacy LDAP bridge": "quarantined",
        "Salesforce": "degraded",
        "Slack": "healthy",
        "Zendesk": "paused",
    }
    salesforce = targets["Salesforce"]
    assert '<strong class="queue-now">4</strong> queued' in salesforce
    assert "503 Service Unavailable" in salesforce
    assert reverse("admin:provisioning_target_status", args=[seeded.targets["Salesforce"].pk]) in salesforce
    for name, section in targets.items():
        charts = re.findall(r'<svg class="chart"[^>]*data-buckets="(\d+)" data-points="(\d+)"', section)
        # Queue depth, lag, error rate: each over 24 hourly buckets, each with data in every bucket.
        assert [buckets for buckets, _ in charts] == ["24", "24", "24"], name
        assert all(int(points) > 0 for _, points in charts), name
        assert section.count("<polyline") >= 3, name
    # The quarantined target failed every push of the last hours: its error rate chart peaks at 100%.
    assert "Legacy LDAP bridge: Error rate: errors peak 100%" in targets["Legacy LDAP bridge"]
    assert "Slack: Error rate: errors peak 0%" in targets["Slack"]

    held_table = re.search(r'<table id="held-deletions">.*?</table>', html, re.S).group(0)
    assert held_table.count("<tr>") == 1 + HELD
    assert "exceed the limit of 1" in held_table
    assert f"?target__id__exact={seeded.targets['Salesforce'].pk}" in held_table

    activity = re.search(r'<table id="client-activity">.*?</table>', html, re.S).group(0)
    rows = re.findall(r"<tr>(.*?)</tr>", activity, re.S)[1:]
    # Most recent first; the revoked client never called and is not listed. Entra made every write
    # of the seed through the services (users, a deactivation, groups, members); 42 of its requests
    # needed a rewrite.
    writes = AuditEntry.objects.filter(actor_type="scim_client", actor_id=str(seeded.entra.pk)).count()
    assert writes >= USERS + 1 + GROUPS
    assert "Entra ID provisioning" in rows[0]
    assert re.findall(r'<td class="num">(\d+)</td>', rows[0]) == [str(writes), "42"]
    assert "Workday HR" in rows[1]
    assert len(rows) == 2
    rewrites = re.search(r'<table id="dialect-rewrites">.*?</table>', html, re.S).group(0)
    assert rewrites.index("entra_patch_value_string") < rewrites.index("lowercase_patch_op")


def test_seven_day_range_draws_six_hour_buckets(admin_client_logged_in) -> None:
    seed_dashboard(now=timezone.now())

    html = admin_client_logged_in.get(URL, {"range": "7d"}).content.decode()

    assert re.findall(r'data-buckets="(\d+)"', html) == ["28"] * 12
    assert 'class="selected" aria-current="true">Last 7 days' in html
    # An unknown range falls back to the last 24 hours rather than failing.
    fallback = admin_client_logged_in.get(URL, {"range": "1y"}).content.decode()
    assert re.findall(r'data-buckets="(\d+)"', fallback) == ["24"] * 12


def test_queries_do_not_grow_with_targets(admin_client_logged_in, django_assert_max_num_queries) -> None:
    now = timezone.now()
    seed_dashboard(now=now)
    with CaptureQueriesContext(connection) as four:
        admin_client_logged_in.get(URL)

    for index in range(8):
        seed_history(make_target(f"extra-{index}"), now=now, shape=0.2, failing=lambda hour: hour % 2)
    with django_assert_max_num_queries(MAX_QUERIES), CaptureQueriesContext(connection) as twelve:
        response = admin_client_logged_in.get(URL)

    assert len(sections(response.content.decode())) == 12
    assert len(twelve.captured_queries) == len(four.captured_queries)
    print(f"dashboard page: {len(twelve.captured_queries)} queries for 4 or 12 targets")


def test_empty_directory_renders_with_empty_charts_and_notes(admin_client_logged_in) -> None:
    make_target("Fresh")

    html = admin_client_logged_in.get(URL).content.decode()

    assert 'id="count-users">0<' in html
    assert html.count("No data in this period") == 3
    assert "Nothing held" in html
    assert "No SCIM client has called yet." in html


def test_staff_without_permissions_sees_no_section(client) -> None:
    seed_dashboard(now=timezone.now() - timedelta(minutes=1))
    staff = get_user_model().objects.create_user("helpdesk", password="correct-horse-battery", is_staff=True)
    client.force_login(staff)

    html = client.get(URL).content.decode()

    assert 'class="dash-target"' not in html
    assert "count-users" not in html
    assert 'id="client-activity"' not in html

    staff.user_permissions.add(
        Permission.objects.get(codename="view_user", content_type__app_label="directory")
    )
    html = client.get(URL).content.decode()
    assert f'id="count-users">{USERS}<' in html
    assert 'class="dash-target"' not in html


def test_login_is_required(client) -> None:
    response = client.get(URL)

    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"].startswith("/admin/login/")


def test_admin_index_links_to_the_dashboard(admin_client_logged_in) -> None:
    html = admin_client_logged_in.get("/admin/").content.decode()

    assert f'href="{URL}"' in html
    assert "Operations dashboard" in html


def test_inbound_holds_show_with_links_to_approve_them(admin_client_logged_in, actor) -> None:
    html = admin_client_logged_in.get(URL).content.decode()
    assert 'id="count-inbound-held">0<' in html

    hold_inbound_leavers(actor)
    html = admin_client_logged_in.get(URL).content.decode()

    card = re.search(r'<div class="dash-card alert" id="inbound-holds">.*?</div></div>', html, re.S)
    assert card is not None
    assert 'id="count-inbound-held">3<' in card.group(0)
    assert (
        f'<a href="{reverse("admin:scim_api_heldinboundrecord_changelist")}">2 from jobs</a>' in card.group(0)
    )
    scheduled = reverse("admin:scim_api_inboundscheduledaction_changelist") + "?state__exact=held"
    assert f'<a href="{scheduled}">1 on their date</a>' in card.group(0)
