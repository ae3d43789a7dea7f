"""/metrics: who may read it, and that each metric moves when what it counts happens."""

from http import HTTPStatus

import pytest
from django.contrib.auth import get_user_model

from directory import services
from provisioning.models import DeliveryAttempt
from scim_api.inbound import services as inbound
from scim_api.inbound.models import InboundJob
from tests.observability.conftest import sample
from tests.provisioning.downstream import InProcessScim
from tests.provisioning.helpers import run_all
from tests.scim_api.conftest import Scim
from tests.scim_api.inbound.holds import hold_inbound_leavers

pytestmark = pytest.mark.django_db

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def scrape(client, token: str) -> str:  # type: ignore[no-untyped-def]
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == HTTPStatus.OK
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.content.decode()


def test_metrics_need_the_token_or_a_staff_session(client, metrics_token):
    assert client.get("/metrics").status_code == HTTPStatus.UNAUTHORIZED
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert wrong.status_code == HTTPStatus.UNAUTHORIZED
    assert wrong["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert "directory_http_requests_total" in scrape(client, metrics_token)

    clerk = get_user_model().objects.create_user("clerk", password="not-staff-password")
    client.force_login(clerk)
    assert client.get("/metrics").status_code == HTTPStatus.UNAUTHORIZED
    operator = get_user_model().objects.create_user("ops", password="staff-password-1", is_staff=True)
    client.force_login(operator)
    assert client.get("/metrics").status_code == HTTPStatus.OK


def test_an_empty_token_setting_never_matches(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == HTTPStatus.UNAUTHORIZED


def test_requests_are_counted_by_route_name_not_path(client, actor, metrics_token):
    scim = Scim(client, services_token(client))
    ada = services.user_create(actor=actor, user_name="ada@example.com")
    labels = {"route": "scim:user", "method": "GET"}
    before = sample("directory_http_requests_total", **labels, status="200")
    observed = sample("directory_http_request_duration_seconds_count", **labels)
    assert scim.get(f"Users/{ada.pk}").status == HTTPStatus.OK
    assert scim.get(f"users/{ada.pk}").status == HTTPStatus.OK
    assert sample("directory_http_requests_total", **labels, status="200") == before + 2
    assert sample("directory_http_request_duration_seconds_count", **labels) == observed + 2
    text = scrape(client, metrics_token)
    assert str(ada.pk) not in text  # the id is in the path, never in a label
    assert 'route="scim:user"' in text


def services_token(client) -> str:  # type: ignore[no-untyped-def]
    from scim_api.services import scim_client_create

    return scim_client_create(name="Metrics IdP")[1]


def test_scim_errors_are_counted_by_scim_type(client, actor):
    scim = Scim(client, services_token(client))
    services.user_create(actor=actor, user_name="taken@example.com")
    uniqueness = sample("directory_scim_errors_total", status="409", scim_type="uniqueness")
    invalid_filter = sample("directory_scim_errors_total", status="400", scim_type="invalidFilter")
    not_found = sample("directory_scim_errors_total", status="404", scim_type="none")

    assert scim.post("Users", {"schemas": [CORE_USER], "userName": "taken@example.com"}).status == 409
    assert scim.get("Users", filter="userName eq").status == 400
    assert scim.get("Users/00000000-0000-0000-0000-000000000000").status == 404
    assert scim.get("NoSuchEndpoint").status == 404

    assert sample("directory_scim_errors_total", status="409", scim_type="uniqueness") == uniqueness + 1
    assert (
        sample("directory_scim_errors_total", status="400", scim_type="invalidFilter") == invalid_filter + 1
    )
    assert sample("directory_scim_errors_total", status="404", scim_type="none") == not_found + 2


def test_dialect_rewrites_are_counted_by_name(client):
    scim = Scim(client, services_token(client))
    before = sample("directory_scim_dialect_rewrites_total", rewrite="string-boolean")
    assert scim.get("Users", filter='active eq "True"').status == HTTPStatus.OK
    assert sample("directory_scim_dialect_rewrites_total", rewrite="string-boolean") == before + 1


def test_outbox_backlog_is_read_from_the_database_at_scrape_time(client, actor, metrics_token):
    for n in range(3):
        services.user_create(actor=actor, user_name=f"queued{n}@example.com")
    text = scrape(client, metrics_token)
    assert "directory_outbox_backlog 3.0" in text
    assert "directory_outbox_oldest_age_seconds" in text


def test_deliveries_are_counted_by_target_and_outcome_with_the_change_lag(
    client, actor, target_factory, metrics_token, monkeypatch
):
    from provisioning import queue

    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: None)
    target = target_factory(name="metrics-target")
    success = sample("directory_provisioning_deliveries_total", target="metrics-target", outcome="success")
    lags = sample("directory_provisioning_change_applied_lag_seconds_count", target="metrics-target")
    services.user_create(actor=actor, user_name="grace@example.com")
    [entry] = run_all(InProcessScim().connection())
    assert entry.outcome == DeliveryAttempt.Outcome.SUCCESS

    assert (
        sample("directory_provisioning_deliveries_total", target="metrics-target", outcome="success")
        == success + 1
    )
    assert (
        sample("directory_provisioning_change_applied_lag_seconds_count", target="metrics-target") == lags + 1
    )
    lag = sample("directory_provisioning_change_applied_lag_seconds_sum", target="metrics-target")
    assert 0 < lag < 60
    text = scrape(client, metrics_token)
    assert f'directory_provisioning_target_state{{state="healthy",target="{target.name}"}} 1.0' in text


def test_active_deliveries_are_gauged_per_target_and_state(client, actor, target_factory, metrics_token):
    from provisioning import relay

    target_factory(name="gauged-target")
    services.user_create(actor=actor, user_name="queued@example.com")
    relay.relay_change_events()
    text = scrape(client, metrics_token)
    assert 'directory_provisioning_active_deliveries{state="queued",target="gauged-target"} 1.0' in text


def test_inbound_job_outcomes_are_counted(actor):
    source, _token = inbound.source_create(name="hr-metrics")
    jobs = sample("directory_inbound_jobs_total", source="hr-metrics", status="completed")
    created = sample("directory_inbound_records_total", source="hr-metrics", outcome="created")
    operations = [
        (f"w{n}", {"schemas": [CORE_USER], "externalId": f"E{n}", "userName": f"w{n}@example.com"})
        for n in range(2)
    ]
    job = inbound.job_stage(source=source, operations=operations, notify=False)
    finished = inbound.job_run_inline(job)
    assert finished.status == InboundJob.Status.COMPLETED
    assert sample("directory_inbound_jobs_total", source="hr-metrics", status="completed") == jobs + 1
    assert sample("directory_inbound_records_total", source="hr-metrics", outcome="created") == created + 2


def test_inbound_guard_holds_are_gauged_per_source(client, actor, metrics_token):
    hold_inbound_leavers(actor)

    text = scrape(client, metrics_token)

    assert 'directory_inbound_held{kind="records",source="hr"} 2.0' in text
    assert 'directory_inbound_held{kind="scheduled",source="hr"} 1.0' in text
    assert 'directory_inbound_held{kind="records",source="badges"}' not in text  # nothing held there
    assert 'directory_inbound_held{kind="scheduled",source="badges"}' not in text
