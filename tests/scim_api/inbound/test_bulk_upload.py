"""POST /scim/v2/bulkUpload and the job resource over HTTP; jobs applied in-process as a worker would."""

import base64
import json
from http import HTTPStatus
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from directory import services as directory_services
from directory.actors import Actor
from directory.models import AuditEntry, ChangeEvent, User
from scim_api.inbound import services
from scim_api.inbound.models import InboundJob, InboundRecord, InboundSource
from scim_api.inbound.transform import SourceConfigError
from scim_api.services import scim_client_create
from tests.scim_api.conftest import Scim
from tests.scim_api.inbound.conftest import (
    BULK,
    CORE,
    ENTERPRISE,
    Uploader,
    bulk,
    job_row,
    outcomes,
    worker_record,
)

pytestmark = pytest.mark.django_db


def _events(user: User) -> list[str]:
    return list(ChangeEvent.objects.filter(object_id=user.pk).order_by("id").values_list("kind", flat=True))


# --- joiners, movers, leavers, rehires ---------------------------------------------------------


def test_joiners_are_created_with_core_enterprise_attributes_and_the_key_as_employee_number(uploader):
    record = worker_record("1001", title="Engineer", emails=[{"value": "w1001@example.com", "type": "work"}])
    record[ENTERPRISE]["costCenter"] = "CC-7"
    reply = uploader.upload(bulk(record))
    job = uploader.job(reply)

    user = User.objects.get(employee_number="1001")
    assert job["status"] == "completed"
    assert job["counts"]["created"] == 1
    assert job["operations"] == [
        {
            "bulkId": "b0",
            "index": 0,
            "outcome": "created",
            "key": "1001",
            "id": str(user.pk),
            "location": f"http://testserver/scim/v2/Users/{user.pk}",
        }
    ]
    assert (user.user_name, user.external_id, user.title, user.cost_center, user.department) == (
        "worker1001@example.com",
        "1001",
        "Engineer",
        "CC-7",
        "Engineering",
    )
    assert [(v.kind, v.value, v.type) for v in user.values.all()] == [("emails", "w1001@example.com", "work")]
    assert _events(user) == ["created"]
    audit = AuditEntry.objects.get(object_id=user.pk)
    assert (audit.actor_type, audit.actor_name) == ("scim_client", "inbound source hr")


def test_the_same_payload_twice_changes_nothing_the_second_time(uploader):
    records = [worker_record("1"), worker_record("2", manager="1", title="Dev")]
    assert outcomes(uploader.run(*records)) == ["created", "created"]
    versions = dict(User.objects.values_list("employee_number", "version"))
    events, audits = ChangeEvent.objects.count(), AuditEntry.objects.count()

    again = uploader.run(*records)

    assert outcomes(again) == ["unchanged", "unchanged"]
    assert dict(User.objects.values_list("employee_number", "version")) == versions
    assert (ChangeEvent.objects.count(), AuditEntry.objects.count()) == (events, audits)


def test_movers_update_department_title_manager_and_each_change_reaches_the_outbox(uploader):
    uploader.run(worker_record("1"), worker_record("2"), worker_record("3", manager="1", title="Dev"))
    moved = worker_record("3", manager="2", title="Lead", department="Sales")

    job = uploader.run(moved)

    user = User.objects.get(employee_number="3")
    assert outcomes(job) == ["updated"]
    assert job["operations"][0]["changed"] == [
        "department",
        "manager",
        "title",
    ]
    assert (user.title, user.department, user.manager.employee_number) == ("Lead", "Sales", "2")
    assert _events(user) == ["created", "updated"]
    changes = AuditEntry.objects.filter(object_id=user.pk, action="update").get().changes
    assert changes["department"] == ["Engineering", "Sales"]


def test_a_leaver_is_disabled_never_deleted(uploader):
    uploader.run(worker_record("7"))

    job = uploader.run(worker_record("7", active=False))

    user = User.objects.get(employee_number="7")
    assert outcomes(job) == ["disabled"]
    assert user.active is False
    assert _events(user) == ["created", "deactivated"]
    assert outcomes(uploader.run(worker_record("7", active=False))) == ["unchanged"]


def test_a_leaver_is_deleted_when_the_source_policy_says_so(uploader, hr_source):
    source = hr_source[0]
    source.leaver_action = InboundSource.LeaverAction.DELETE
    source.save()
    uploader.run(worker_record("7"))
    user_id = User.objects.get(employee_number="7").pk

    job = uploader.run(worker_record("7", active=False))

    assert outcomes(job) == ["deleted"]
    assert job["operations"][0]["id"] == str(user_id)
    assert "location" not in job["operations"][0]
    assert not User.objects.filter(pk=user_id).exists()
    assert list(ChangeEvent.objects.filter(object_id=user_id).values_list("kind", flat=True)) == [
        "created",
        "deleted",
    ]


def test_a_disabled_user_sent_as_active_is_a_rehire_and_is_enabled(uploader):
    uploader.run(worker_record("8"))
    uploader.run(worker_record("8", active=False))

    job = uploader.run(worker_record("8", active=True, department="Support"))

    user = User.objects.get(employee_number="8")
    assert outcomes(job) == ["enabled"]
    assert (user.active, user.department) == (True, "Support")
    assert _events(user) == ["created", "deactivated", "activated"]


def test_a_leaver_unknown_to_the_directory_is_skipped_with_the_reason(uploader):
    job = uploader.run(worker_record("404", active=False))

    assert job["operations"][0]["outcome"] == "skipped"
    assert "leaver" in job["operations"][0]["reason"]
    assert not User.objects.exists()


def test_a_record_with_only_some_attributes_leaves_the_others_alone(uploader):
    uploader.run(worker_record("5", title="Dev", emails=[{"value": "a@example.com", "type": "work"}]))
    partial = {"schemas": [CORE, ENTERPRISE], "externalId": "5", ENTERPRISE: {"department": "Ops"}}

    job = uploader.run(partial)

    user = User.objects.get(employee_number="5")
    assert outcomes(job) == ["updated"]
    assert (user.title, user.department, user.given_name, user.user_name) == (
        "Dev",
        "Ops",
        "Worker",
        "worker5@example.com",
    )
    assert list(user.values.values_list("value", flat=True)) == ["a@example.com"]


def test_a_record_replaces_values_of_the_types_it_sends_and_keeps_the_others(uploader):
    uploader.run(worker_record("5"))
    user = User.objects.get(employee_number="5")
    directory_services.user_update(
        actor=Actor.system(),
        user_id=user.pk,
        values={
            "phoneNumbers": [
                {"value": "+1 555 0100", "type": "home"},
                {"value": "+1 555 0101", "type": "work", "primary": True},
            ]
        },
    )

    uploader.run(worker_record("5", phoneNumbers=[{"value": "+1 555 0199", "type": "work", "primary": True}]))

    phones = list(user.values.order_by("position").values_list("value", "type", "primary"))
    assert phones == [("+1 555 0100", "home", False), ("+1 555 0199", "work", True)]


# --- managers ----------------------------------------------------------------------------------


def test_managers_and_reports_in_any_order_in_one_request(uploader):
    job = uploader.run(
        worker_record("30", manager="20"),
        worker_record("20", manager="10"),
        worker_record("10"),
    )

    assert outcomes(job) == ["created", "created", "created"]
    by_key = {user.employee_number: user for user in User.objects.all()}
    assert by_key["30"].manager_id == by_key["20"].pk
    assert by_key["20"].manager_id == by_key["10"].pk
    assert by_key["10"].manager_id is None
    assert "warnings" not in json.dumps(job)


def test_a_manager_later_in_a_large_job_is_resolved_once_the_whole_job_is_applied(uploader, settings):
    settings.SCIM_API = {**settings.SCIM_API, "INBOUND_CHUNK_SIZE": 2}
    records = [worker_record("r1", manager="boss"), worker_record("r2", manager="boss")]
    records += [worker_record(f"x{n}") for n in range(3)] + [worker_record("boss")]

    job = uploader.run(*records)

    boss = User.objects.get(employee_number="boss")
    assert set(outcomes(job)) == {"created"}
    assert set(
        User.objects.filter(employee_number__in=["r1", "r2"]).values_list("manager_id", flat=True)
    ) == {boss.pk}
    assert job["operations"][0]["changed"] == ["manager"]


def test_an_unresolved_manager_is_reported_on_its_operation_and_the_rest_applies(uploader):
    job = uploader.run(worker_record("1", manager="nobody"), worker_record("2", manager="1"))

    first, second = job["operations"]
    assert first["outcome"] == "created"
    assert first["warnings"] == [
        "Manager 'nobody' not found: no user has employeeNumber 'nobody'; the manager is left as it is."
    ]
    assert second["outcome"] == "created"
    assert "warnings" not in second
    assert User.objects.get(employee_number="1").manager_id is None
    assert job["status"] == "completed"


# --- duplicates and bad records -------------------------------------------------------------------


def test_two_records_for_one_person_in_one_request_apply_in_order(uploader):
    job = uploader.run(worker_record("9", title="Dev"), worker_record("9", title="Lead"))

    assert outcomes(job) == ["created", "updated"]
    assert User.objects.get(employee_number="9").title == "Lead"


def test_a_user_name_taken_by_someone_else_fails_that_record_only(uploader, user_factory):
    user_factory(user_name="taken@example.com")

    job = uploader.run(worker_record("1", user_name="taken@example.com"), worker_record("2"))

    first, second = job["operations"]
    assert first["outcome"] == "failed"
    assert first["error"] == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "409",
        "scimType": "uniqueness",
        "detail": "userName 'taken@example.com' is already taken",
    }
    assert second["outcome"] == "created"
    assert job["status"] == "completedWithErrors"
    assert job["counts"]["failed"] == 1
    assert job["counts"]["created"] == 1


def test_bad_records_fail_with_clear_errors_and_the_rest_of_the_job_applies(uploader):
    no_key = worker_record("x")
    del no_key["externalId"]
    wrong_type = worker_record("2", title=5)
    unknown_attribute = worker_record("3")
    unknown_attribute[ENTERPRISE]["shoeSize"] = "44"
    no_user_name = worker_record("4")
    del no_user_name["userName"]

    job = uploader.run(no_key, wrong_type, unknown_attribute, no_user_name, worker_record("5"))

    details = [(op["outcome"], (op.get("error") or {}).get("detail")) for op in job["operations"]]
    assert details == [
        ("failed", "The record has no key: externalId is empty or missing."),
        ("failed", "title must be a string, got 5"),
        ("failed", f"'shoeSize' is not an attribute of {ENTERPRISE}"),
        ("failed", "userName is required"),
        ("created", None),
    ]
    assert {op["error"]["scimType"] for op in job["operations"][:4]} == {"invalidValue"}
    assert list(User.objects.values_list("employee_number", flat=True)) == ["5"]


def test_fail_on_errors_stops_applying_after_that_many_failures(uploader):
    job = uploader.run(
        worker_record("1", title=5),
        worker_record("2"),
        worker_record("3", title=6),
        worker_record("4"),
        fail_on_errors=2,
    )

    assert outcomes(job) == ["failed", "created", "failed", "skipped"]
    assert job["operations"][3]["reason"] == "Not applied: failOnErrors (2) was reached."


# --- the request ----------------------------------------------------------------------------------


def test_the_upload_answers_202_with_the_job_location_and_the_job_starts_queued(hr):
    reply = hr.post("bulkUpload", bulk(worker_record("1")))

    job = InboundJob.objects.get()
    assert reply.status == HTTPStatus.ACCEPTED
    assert reply.headers["Location"] == f"http://testserver/scim/v2/inbound/hr/jobs/{job.pk}"
    assert reply.body["status"] == "queued"
    assert reply.body["counts"]["pending"] == 1
    assert hr.get(f"inbound/hr/jobs/{job.pk}").body["status"] == "queued"


def test_records_are_staged_in_order_and_a_worker_is_told_only_after_commit(
    hr, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[str] = []
    monkeypatch.setattr("scim_api.inbound.queue.send", lambda job_id: sent.append(str(job_id)))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        hr.post("bulkUpload", bulk(worker_record("1"), worker_record("2")))
        assert sent == []
    for callback in callbacks:
        callback()

    job = InboundJob.objects.get()
    assert sent == [str(job.pk)]
    assert list(job.records.values_list("index", "bulk_id", "key", "outcome")) == [
        (0, "b0", "1", "pending"),
        (1, "b1", "2", "pending"),
    ]


def test_the_per_source_url_takes_only_that_sources_token(client, hr_source, hr):
    other, other_token = services.source_create(name="badges")

    assert hr.post("inbound/hr/bulkUpload", bulk(worker_record("1"))).status == HTTPStatus.ACCEPTED
    refused = Scim(client, other_token).post("inbound/hr/bulkUpload", bulk(worker_record("1")))
    assert refused.status == HTTPStatus.FORBIDDEN
    assert refused.body["detail"] == "This token may not use the inbound source 'hr'."
    job = InboundJob.objects.get()
    assert Scim(client, other_token).get(f"inbound/badges/jobs/{job.pk}").status == HTTPStatus.NOT_FOUND
    assert Scim(client, other_token).get(f"inbound/hr/jobs/{job.pk}").status == HTTPStatus.FORBIDDEN


@pytest.mark.parametrize(
    ("body", "status", "scim_type", "detail"),
    [
        ([], 400, "invalidSyntax", "The request body must be a JSON object."),
        (
            {"Operations": []},
            400,
            "invalidSyntax",
            "A bulk upload's schemas must list urn:ietf:params:scim:api:messages:2.0:BulkRequest.",
        ),
        (
            {"schemas": [BULK], "Operations": []},
            400,
            "invalidSyntax",
            '"Operations" must be a non-empty list.',
        ),
        (
            {
                "schemas": [BULK],
                "Operations": [{"method": "PATCH", "bulkId": "1", "path": "/Users", "data": {}}],
            },
            400,
            "invalidSyntax",
            "Operation 1: a bulk upload takes POST operations only (the service decides whether to create, "
            "update, enable or disable), not 'PATCH'.",
        ),
        (
            {
                "schemas": [BULK],
                "Operations": [{"method": "POST", "bulkId": "1", "path": "/Groups", "data": {}}],
            },
            400,
            "invalidPath",
            "Operation 1: path must be /Users, not '/Groups'.",
        ),
        (
            {"schemas": [BULK], "Operations": [{"method": "POST", "path": "/Users", "data": {}}]},
            400,
            "invalidValue",
            "Operation 1: bulkId must be a non-empty string (at most 255 characters).",
        ),
        (
            {
                "schemas": [BULK],
                "Operations": [
                    {"method": "POST", "bulkId": "1", "path": "/Users", "data": {}},
                    {"method": "POST", "bulkId": "1", "path": "/Users", "data": {}},
                ],
            },
            400,
            "invalidValue",
            "bulkId '1' is used twice.",
        ),
        (
            {
                "schemas": [BULK],
                "Operations": [{"method": "POST", "bulkId": "1", "path": "/Users", "data": "x"}],
            },
            400,
            "invalidSyntax",
            "Operation 1: data must be a User object.",
        ),
        (
            {"schemas": [BULK], "failOnErrors": 0, "Operations": [{}]},
            400,
            "invalidValue",
            "failOnErrors must be a positive integer (or null).",
        ),
    ],
)
def test_malformed_uploads_get_scim_errors_and_stage_nothing(hr, body, status, scim_type, detail):
    reply = hr.post("bulkUpload", body)

    assert reply.status == status
    assert reply.body == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": str(status),
        "scimType": scim_type,
        "detail": detail,
    }
    assert not InboundJob.objects.exists()


def test_invalid_json_is_a_400(hr):
    reply = hr.post("bulkUpload", "{not json")

    assert reply.status == HTTPStatus.BAD_REQUEST
    assert reply.body["scimType"] == "invalidSyntax"


def test_more_operations_than_the_source_allows_is_a_413(hr, hr_source):
    source = hr_source[0]
    source.max_operations = 2
    source.save()

    reply = hr.post("bulkUpload", bulk(worker_record("1"), worker_record("2"), worker_record("3")))

    assert reply.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert (
        reply.body["detail"] == "A bulk upload to this source may carry at most 2 operations; this one has 3."
    )
    assert hr.get("bulkUpload").body["maxOperations"] == 2


def test_a_payload_over_the_size_limit_is_a_413(hr, settings):
    settings.SCIM_API = {**settings.SCIM_API, "INBOUND_MAX_PAYLOAD_SIZE": 1000}

    reply = hr.post("bulkUpload", bulk(*[worker_record(str(n)) for n in range(10)]))

    assert reply.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert reply.body["detail"].startswith("A bulk upload may be at most 1000 bytes")


def test_the_default_limit_is_at_least_entras_fifty_and_larger_batches_are_accepted(hr):
    described = hr.get("bulkUpload").body

    assert described["maxOperations"] >= 50
    reply = hr.post("bulkUpload", bulk(*[worker_record(str(n)) for n in range(200)]))
    assert reply.status == HTTPStatus.ACCEPTED
    assert described["maxPayloadSize"] == 5 * 1_048_576
    assert described["bulkUpload"] == "http://testserver/scim/v2/inbound/hr/bulkUpload"


def test_service_provider_config_advertises_a_sources_bulk_upload_limits_to_its_token(
    hr, hr_source, anonymous, settings
):
    settings.SCIM_API = {
        **settings.SCIM_API,
        "INBOUND_MAX_OPERATIONS": 60,
        "INBOUND_MAX_PAYLOAD_SIZE": 400_000,
    }
    extension = "urn:directory:params:scim:schemas:extension:inbound:1.0:ServiceProviderConfig"

    # Without an inbound source's token: the RFC's document only (strict clients refuse more).
    plain = anonymous.get("ServiceProviderConfig").body
    assert extension not in plain["schemas"]
    assert extension not in plain
    config = hr.get("ServiceProviderConfig").body
    assert extension in config["schemas"]
    assert config[extension]["bulkUpload"] == {
        "supported": True,
        "endpoint": "http://testserver/scim/v2/bulkUpload",
        "sourceEndpoint": "http://testserver/scim/v2/inbound/hr/bulkUpload",
        "maxOperations": 60,
        "maxPayloadSize": 400_000,
    }
    assert {key: value for key, value in config.items() if key not in ("schemas", extension)} == {
        key: value for key, value in plain.items() if key != "schemas"
    }
    too_many = hr.post("bulkUpload", bulk(*[worker_record(str(n)) for n in range(61)]))
    assert too_many.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert (
        hr.post("bulkUpload", bulk(*[worker_record(str(n)) for n in range(60)])).status == HTTPStatus.ACCEPTED
    )
    # A source's own limit is the one its token is told.
    source = hr_source[0]
    source.max_operations = 75
    source.save()
    assert hr.get("ServiceProviderConfig").body[extension]["bulkUpload"]["maxOperations"] == 75


def test_the_inbound_configuration_extension_is_described_in_schemas_for_a_sources_token(hr, anonymous):
    extension = "urn:directory:params:scim:schemas:extension:inbound:1.0:ServiceProviderConfig"

    listed = {schema["id"]: schema for schema in hr.get("Schemas").body["Resources"]}
    described = hr.get(f"Schemas/{extension}").body

    assert described == listed[extension]
    assert described["meta"]["location"] == f"http://testserver/scim/v2/Schemas/{extension}"
    (bulk_upload,) = described["attributes"]
    assert bulk_upload["name"] == "bulkUpload"
    config = hr.get("ServiceProviderConfig").body[extension]["bulkUpload"]
    subs = {sub["name"]: sub["type"] for sub in bulk_upload["subAttributes"]}
    assert set(subs) == set(config)  # every advertised key is described, and nothing else
    assert subs["maxOperations"] == "integer"
    # Not to anyone else: strict clients check the list against what they know.
    assert extension not in {schema["id"] for schema in anonymous.get("Schemas").body["Resources"]}
    assert anonymous.get(f"Schemas/{extension}").status == HTTPStatus.NOT_FOUND


def test_credentials(client, anonymous, hr_source):
    plain_client, plain_token = scim_client_create(name="Just a SCIM client")

    assert anonymous.post("bulkUpload", bulk(worker_record("1"))).status == HTTPStatus.UNAUTHORIZED
    assert Scim(client, "scim_wrong").post("bulkUpload", bulk()).status == HTTPStatus.UNAUTHORIZED
    refused = Scim(client, plain_token).post("bulkUpload", bulk(worker_record("1")))
    assert refused.status == HTTPStatus.FORBIDDEN
    assert refused.body["detail"].startswith("This token belongs to no inbound source")
    source = hr_source[0]
    source.enabled = False
    source.save()
    disabled = Scim(client, hr_source[1]).post("bulkUpload", bulk(worker_record("1")))
    assert (disabled.status, disabled.body["detail"]) == (403, "The inbound source 'hr' is disabled.")
    source.enabled = True
    source.save()
    source.client.scope = "read"
    source.client.save()
    from scim_api.token_cache import recent_clients

    recent_clients.clear()
    read_only = Scim(client, hr_source[1]).post("bulkUpload", bulk(worker_record("1")))
    assert (read_only.status, read_only.body["detail"]) == (403, "This token has the read scope only.")
    assert not InboundJob.objects.exists()


def test_a_sources_token_may_use_only_its_inbound_urls_unless_granted_the_scim_api(client, hr, hr_source):
    from scim_api.authentication import INBOUND_ONLY
    from scim_api.services import oauth_credential_issue
    from scim_api.token_cache import recent_clients

    source = hr_source[0]
    credential, secret = oauth_credential_issue(client_id=source.client_id)
    basic = base64.b64encode(f"{credential.public_id}:{secret}".encode()).decode()
    issued = client.post(
        "/oauth/token",
        "grant_type=client_credentials",
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=f"Basic {basic}",
    ).json()["access_token"]
    upload = hr.post("bulkUpload", bulk(worker_record("1")))
    assert upload.status == HTTPStatus.ACCEPTED
    job_path = upload.headers["Location"].split("/scim/v2/", 1)[1]

    for scim in (hr, Scim(client, issued)):
        assert scim.get(job_path).status == HTTPStatus.OK
        assert scim.get("bulkUpload").status == HTTPStatus.OK
        for reply in (
            scim.get("Users"),
            scim.get("Groups"),
            scim.get("Me"),
            scim.post("Users", {"schemas": [CORE], "userName": "sneaky@example.com"}),
            scim.post(
                "Bulk", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": []}
            ),
        ):
            assert reply.status == HTTPStatus.FORBIDDEN, reply
            assert reply.body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
            assert reply.body["detail"] == INBOUND_ONLY
    assert not User.objects.filter(user_name="sneaky@example.com").exists()

    source.scim_access = True
    source.save()
    recent_clients.clear()

    assert hr.get("Users").status == HTTPStatus.OK
    assert Scim(client, issued).get("Users").status == HTTPStatus.OK
    # Any other SCIM client keeps the whole API.
    _, plain_token = scim_client_create(name="Just a SCIM client")
    assert Scim(client, plain_token).get("Users").status == HTTPStatus.OK


def test_an_unknown_job_is_a_scim_404(hr):
    assert hr.get("inbound/hr/jobs/not-a-uuid").status == HTTPStatus.NOT_FOUND
    missing = hr.get("inbound/hr/jobs/00000000-0000-0000-0000-000000000000")
    assert missing.status == HTTPStatus.NOT_FOUND
    assert missing.body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


def test_the_job_resource_pages_and_filters_operations_in_constant_queries(uploader, hr):
    reply = uploader.upload(
        bulk(*[worker_record(str(n), title=5 if n % 3 == 0 else "Dev") for n in range(30)])
    )
    path = reply.headers["Location"].split("/scim/v2/", 1)[1]

    failed = hr.get(path, outcome="failed").body
    page = hr.get(path, startIndex=11, count=5).body
    with CaptureQueriesContext(connection) as small:
        hr.get(path, count=1)
    with CaptureQueriesContext(connection) as large:
        hr.get(path, count=30)

    assert [op["index"] for op in failed["operations"]] == list(range(0, 30, 3))
    assert failed["totalResults"] == 10
    assert [op["index"] for op in page["operations"]] == [10, 11, 12, 13, 14]
    assert (page["startIndex"], page["itemsPerPage"], page["totalResults"]) == (11, 5, 30)
    assert len(small.captured_queries) == len(large.captured_queries)


def test_applying_a_job_costs_a_bounded_number_of_queries_whatever_its_size(hr):
    def queries_for(count: int, offset: int) -> int:
        reply = hr.post(
            "bulkUpload", bulk(*[worker_record(str(offset + n), manager=str(offset)) for n in range(count)])
        )
        with CaptureQueriesContext(connection) as captured:
            services.jobs_drain(job_id=reply.body["id"])
        return len(captured.captured_queries)

    small, large = queries_for(5, 0), queries_for(100, 1000)

    assert User.objects.count() == 105
    # 20 times the records, no more statements (SQLite splits a few bulk inserts in batches).
    assert large <= small + 5


# Set-based on PostgreSQL only (SQLite, make run's database, updates each user with its own statement).
@pytest.mark.postgres
def test_movers_and_leavers_cost_a_bounded_number_of_queries_whatever_their_number(hr):
    def queries_for(records: list[dict]) -> int:
        reply = hr.post("bulkUpload", bulk(*records))
        with CaptureQueriesContext(connection) as captured:
            services.jobs_drain(job_id=reply.body["id"])
        assert InboundJob.objects.get(pk=reply.body["id"]).counts["failed"] == 0
        return len(captured.captured_queries)

    hr.post("bulkUpload", bulk(*[worker_record(str(n)) for n in range(105)]))
    services.jobs_drain(job_id=InboundJob.objects.get().pk)
    moved_few = queries_for([worker_record(str(n), department="Sales", title="Seller") for n in range(5)])
    moved_many = queries_for(
        [worker_record(str(n), department="Sales", title="Seller") for n in range(5, 105)]
    )
    left_few = queries_for([worker_record(str(n), active=False, department=None) for n in range(5)])
    left_many = queries_for([worker_record(str(n), active=False, department=None) for n in range(5, 105)])

    assert User.objects.filter(department="Sales").count() == 105
    assert not User.objects.filter(active=True).exists()
    assert ChangeEvent.objects.filter(kind="deactivated").count() == 105
    assert ChangeEvent.objects.filter(kind="updated").count() == 105
    # 20 times the records, no more statements: the users are changed with set-based statements.
    assert moved_many <= moved_few + 5
    assert left_many <= left_few + 5


# --- sources: allowed actions, scoping, mappings ------------------------------------------------


def test_a_source_that_may_only_update_skips_joiners_and_leavers_with_the_reason(client, uploader):
    uploader.run(worker_record("1"), worker_record("2"))
    badges, token = services.source_create(
        name="badges", allow_create=False, allow_enable=False, allow_disable=False
    )
    badge_uploader = Uploader(Scim(client, token), "inbound/badges/bulkUpload")

    job = badge_uploader.run(
        worker_record("1", title="Badge holder"), worker_record("2", active=False), worker_record("3")
    )

    assert [(op["outcome"], op.get("reason")) for op in job["operations"]] == [
        ("updated", None),
        ("skipped", "This source may not disable users."),
        ("skipped", "This source may not create users."),
    ]
    assert User.objects.get(employee_number="1").title == "Badge holder"
    assert User.objects.get(employee_number="2").active is True
    assert not User.objects.filter(employee_number="3").exists()


def test_scoping_skips_contractors(uploader, hr_source):
    source = hr_source[0]
    source.scoping_filter = 'not (userType eq "Contractor")'
    source.save()

    job = uploader.run(worker_record("1", userType="Employee"), worker_record("2", userType="contractor"))

    assert outcomes(job) == ["created", "skipped"]
    assert job["operations"][1]["reason"] == 'out of scope (scoping filter: not (userType eq "Contractor"))'
    assert list(User.objects.values_list("employee_number", flat=True)) == ["1"]


def test_custom_hr_namespaces_map_into_directory_attributes_and_extension_schemas(uploader, hr_source):
    directory_services.extension_schema_create(
        actor=Actor.system(),
        urn="urn:contoso:hr:1.0:User",
        name="Contoso HR",
        resource_type="user",
        attributes=[{"name": "jobCode", "type": "string"}, {"name": "grade", "type": "integer"}],
    )
    source = hr_source[0]
    source.mappings = [
        {"target": "department", "source": "[urn:contoso:employee:dept]"},
        {"target": "displayName", "source": 'Join(" ", [name.givenName], [name.familyName])'},
        {"target": "urn:contoso:hr:1.0:User:grade", "source": "urn:contoso:employee:grade"},
        {"target": 'emails[type eq "work"].value', "source": 'Append([externalId], "@corp.example")'},
    ]
    source.save()
    record = worker_record("42", department=None)
    record["urn:contoso:employee"] = {"dept": "Research", "grade": "7", "unmapped": "x"}
    record["urn:contoso:hr:1.0:User"] = {"jobCode": "AB-1"}

    job = uploader.run(record)

    user = User.objects.get(employee_number="42")
    assert outcomes(job) == ["created"]
    assert (user.department, user.display_name) == ("Research", "Worker 42")
    assert user.extensions == {"urn:contoso:hr:1.0:User": {"jobCode": "AB-1", "grade": 7}}
    assert list(user.values.values_list("value", "type")) == [("42@corp.example", "work")]

    record["urn:contoso:employee"]["grade"] = "8"
    del record["urn:contoso:hr:1.0:User"]
    assert outcomes(uploader.run(record)) == ["updated"]
    user.refresh_from_db()
    assert user.extensions == {"urn:contoso:hr:1.0:User": {"jobCode": "AB-1", "grade": 8}}


def test_records_can_match_on_an_extension_attribute(uploader, hr_source):
    directory_services.extension_schema_create(
        actor=Actor.system(),
        urn="urn:contoso:hr:1.0:User",
        name="Contoso HR",
        resource_type="user",
        attributes=[
            {"name": "employeeId", "type": "string", "uniqueness": "server"},
            {"name": "grade", "type": "integer"},
        ],
    )
    source = hr_source[0]
    source.match_source = "urn:contoso:hr:1.0:User:employeeId"
    source.match_target = InboundSource.MatchTarget.EXTENSION
    source.match_extension = "urn:contoso:hr:1.0:User:employeeId"
    source.save()
    record = worker_record("n-1", department="Research")
    record["urn:contoso:hr:1.0:User"] = {"employeeId": "W-77", "grade": 3}

    created = uploader.run(record)
    record["urn:contoso:hr:1.0:User"] = {"employeeId": "w-77", "grade": 4}  # not caseExact: the same person
    record["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"] = "Sales"
    moved = uploader.run(record)
    again = uploader.run(record)

    user = User.objects.get()
    assert (outcomes(created), outcomes(moved), outcomes(again)) == (["created"], ["updated"], ["unchanged"])
    assert created["operations"][0]["id"] == moved["operations"][0]["id"] == str(user.pk)
    assert user.extensions == {"urn:contoso:hr:1.0:User": {"employeeId": "w-77", "grade": 4}}
    assert user.department == "Sales"
    assert hr_source[0].match_label == "urn:contoso:hr:1.0:User:employeeId"
    for bad in ("urn:contoso:hr:1.0:User:nope", "urn:contoso:hr:1.0:User:grade", ""):
        with pytest.raises(SourceConfigError, match="match extension attribute"):
            services.source_create(
                name="badges", match_target=InboundSource.MatchTarget.EXTENSION, match_extension=bad
            )


def test_an_attribute_a_mapping_cannot_convert_fails_its_record(uploader, hr_source):
    directory_services.extension_schema_create(
        actor=Actor.system(),
        urn="urn:contoso:hr:1.0:User",
        name="Contoso HR",
        resource_type="user",
        attributes=[{"name": "grade", "type": "integer"}],
    )
    source = hr_source[0]
    source.mappings = [{"target": "urn:contoso:hr:1.0:User:grade", "source": "urn:contoso:employee:grade"}]
    source.save()
    record = worker_record("1")
    record["urn:contoso:employee"] = {"grade": "senior"}

    job = uploader.run(record)

    assert job["operations"][0]["outcome"] == "failed"
    assert "grade" in job["operations"][0]["error"]["detail"]


# --- dry runs ---------------------------------------------------------------------------------------


def test_a_dry_run_shows_each_outcome_and_writes_nothing(hr, uploader):
    uploader.run(worker_record("1"), worker_record("2"), worker_record("3"))
    uploader.run(worker_record("3", active=False))
    state = list(User.objects.order_by("employee_number").values_list("employee_number", "version", "active"))
    counts = (ChangeEvent.objects.count(), AuditEntry.objects.count(), InboundJob.objects.count())

    reply = hr.post(
        "bulkUpload?dryRun=true",
        bulk(
            worker_record("1"),
            worker_record("2", title="Lead"),
            worker_record("3", active=True),
            worker_record("1", active=False),
            worker_record("4", manager="1"),
            worker_record("5", user_name="worker1@example.com"),
            worker_record("6", active=False),
        ),
    )

    assert reply.status == HTTPStatus.OK
    assert reply.body["dryRun"] is True
    assert outcomes(reply.body) == [
        "unchanged",
        "updated",
        "enabled",
        "disabled",
        "created",
        "failed",
        "skipped",
    ]
    assert reply.body["operations"][1]["changed"] == ["title"]
    assert reply.body["operations"][5]["error"]["scimType"] == "uniqueness"
    assert reply.body["counts"]["created"] == 1
    assert (
        list(User.objects.order_by("employee_number").values_list("employee_number", "version", "active"))
        == state
    )
    assert (ChangeEvent.objects.count(), AuditEntry.objects.count(), InboundJob.objects.count()) == counts


def test_a_dry_run_of_a_new_person_twice_shows_the_second_as_an_update(hr):
    reply = hr.post("bulkUpload?dryRun=1", bulk(worker_record("1", title="A"), worker_record("1", title="B")))

    assert outcomes(reply.body) == ["created", "updated"]
    assert not User.objects.exists()


# --- Microsoft's documented example shape --------------------------------------------------------

ENTRA_EXAMPLE: dict[str, Any] = {
    # The shape of Example 1 and 2 of Graph's "Perform bulkUpload" page: core + enterprise + a custom
    # namespace, manager.value = the manager's externalId, failOnErrors null.
    "schemas": [BULK],
    "Operations": [
        {
            "method": "POST",
            "bulkId": "701984",
            "path": "/Users",
            "data": {
                "schemas": [CORE, ENTERPRISE, "urn:contoso:employee"],
                "externalId": "701984",
                "userName": "bjensen@example.com",
                "name": {
                    "formatted": "Ms. Barbara J Jensen, III",
                    "familyName": "Jensen",
                    "givenName": "Barbara",
                    "middleName": "Jane",
                    "honorificPrefix": "Ms.",
                    "honorificSuffix": "III",
                },
                "displayName": "Babs Jensen",
                "nickName": "Babs",
                "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True}],
                "addresses": [
                    {
                        "type": "work",
                        "streetAddress": "100 Universal City Plaza",
                        "locality": "Hollywood",
                        "region": "CA",
                        "postalCode": "91608",
                        "country": "USA",
                        "formatted": "100 Universal City Plaza\nHollywood, CA 91608 USA",
                        "primary": True,
                    }
                ],
                "phoneNumbers": [{"value": "555-555-5555", "type": "work"}],
                "userType": "Employee",
                "title": "Tour Guide",
                "preferredLanguage": "en-US",
                "locale": "en-US",
                "timezone": "America/Los_Angeles",
                "active": True,
                ENTERPRISE: {
                    "employeeNumber": "701984",
                    "costCenter": "4130",
                    "organization": "Universal Studios",
                    "division": "Theme Park",
                    "department": "Tour Operations",
                    "manager": {"value": "89607", "displayName": "John Smith"},
                },
                "urn:contoso:employee": {"HireDate": "2021-05-01T00:00:00-05:00", "JobCode": "AB-1002"},
            },
        },
        {
            "method": "POST",
            "bulkId": "701985",
            "path": "/Users",
            "data": {
                "schemas": [CORE, ENTERPRISE, "urn:contoso:employee"],
                "externalId": "701985",
                "userName": "Kjensen@example.com",
                "name": {
                    "formatted": "Ms. Kathy J Jensen, III",
                    "familyName": "Jensen",
                    "givenName": "Kathy",
                },
                "displayName": "Kathy Jensen",
                "emails": [{"value": "kjensen@example.com", "type": "work", "primary": True}],
                "userType": "Employee",
                "title": "Tour Lead",
                "active": True,
                ENTERPRISE: {
                    # As in Microsoft's example, the report repeats the manager's employeeNumber here.
                    "employeeNumber": "701984",
                    "costCenter": "4130",
                    "organization": "Universal Studios",
                    "division": "Theme Park",
                    "department": "Tour Operations",
                    "manager": {"value": "701984", "displayName": "Barbara Jensen"},
                },
                "urn:contoso:employee": {"HireDate": "2022-07-15T00:00:00-05:00", "JobCode": "AB-1003"},
            },
        },
    ],
    "failOnErrors": None,
}


def test_an_entra_shaped_payload_from_microsofts_documented_example(uploader, hr_source):
    source = hr_source[0]
    source.mappings = [
        {"target": "urn:contoso:hr:1.0:User:jobCode", "source": "urn:contoso:employee:JobCode"}
    ]
    directory_services.extension_schema_create(
        actor=Actor.system(),
        urn="urn:contoso:hr:1.0:User",
        name="Contoso HR",
        resource_type="user",
        attributes=[{"name": "jobCode", "type": "string"}],
    )
    source.save()

    reply = uploader.upload(ENTRA_EXAMPLE)
    job = uploader.job(reply)

    barbara = User.objects.get(external_id="701984")
    kathy = User.objects.get(external_id="701985")
    assert outcomes(job) == ["created", "created"]
    assert job["operations"][0]["warnings"] == [
        "Manager '89607' not found: no user has employeeNumber '89607'; the manager is left as it is."
    ]
    assert job["operations"][1]["warnings"] == [
        "The record's employeeNumber ('701984') differs from its key ('701985'); the key is kept."
    ]
    assert (barbara.employee_number, kathy.employee_number) == ("701984", "701985")
    assert kathy.manager_id == barbara.pk
    assert barbara.manager_id is None
    assert (barbara.honorific_suffix, barbara.division, barbara.timezone) == (
        "III",
        "Theme Park",
        "America/Los_Angeles",
    )
    assert barbara.extensions == {"urn:contoso:hr:1.0:User": {"jobCode": "AB-1002"}}
    assert {v.kind for v in barbara.values.all()} == {"emails", "addresses", "phoneNumbers"}

    # Example 3 of the same page: an update that carries only the key, active and the department.
    update = {
        "schemas": [BULK],
        "Operations": [
            {
                "method": "POST",
                "bulkId": "7172023",
                "path": "/Users",
                "data": {
                    "schemas": [CORE, ENTERPRISE],
                    "externalId": "701985",
                    "active": False,
                    ENTERPRISE: {"department": "Tour Ops"},
                },
            }
        ],
        "failOnErrors": None,
    }
    job = uploader.job(uploader.upload(update))

    kathy.refresh_from_db()
    assert outcomes(job) == ["disabled"]
    assert job["operations"][0]["changed"] == ["active", "department"]
    assert (kathy.active, kathy.department, kathy.title) == (False, "Tour Ops", "Tour Lead")


def test_job_rows_keep_each_record_as_sent(uploader):
    job = uploader.run(worker_record("1"))

    record = InboundRecord.objects.get(job=job_row(job))
    assert record.data == worker_record("1")
    assert record.applied is not None


def test_a_dry_run_finds_unique_extension_values_taken_as_the_real_run_would(hr, uploader, hr_source):
    directory_services.extension_schema_create(
        actor=Actor.system(),
        urn="urn:contoso:hr:1.0:User",
        name="Contoso HR",
        resource_type="user",
        attributes=[{"name": "badge", "type": "string", "uniqueness": "server"}],
    )
    source = hr_source[0]
    source.mappings = [{"target": "urn:contoso:hr:1.0:User:badge", "source": "urn:contoso:employee:badge"}]
    source.save()

    def badged(key: str, badge: str) -> dict:  # type: ignore[type-arg]
        record = worker_record(key)
        record["urn:contoso:employee"] = {"badge": badge}
        return record

    uploader.run(badged("1", "B-1"), badged("2", "B-2"))
    records = [
        badged("2", "B-2"),  # its own value: unchanged
        badged("3", "b-1"),  # a new person taking someone's value (not caseExact: the same)
        badged("2", "B-9"),  # the same person again: applied after the others, B-9 is taken by then
        badged("4", "B-9"),  # a joiner taking a free value
        badged("1", "B-5"),  # a mover to a free value
    ]

    dry = hr.post("bulkUpload?dryRun=true", bulk(*records)).body
    real = uploader.run(*records)

    expected = ["unchanged", "failed", "failed", "created", "updated"]
    assert (outcomes(dry), outcomes(real)) == (expected, expected)
    for reply in (dry, real):
        assert [reply["operations"][i]["error"]["scimType"] for i in (1, 2)] == ["uniqueness", "uniqueness"]
    assert "'B-9' is already taken" in dry["operations"][2]["error"]["detail"]
    assert "'b-1' is already taken" in dry["operations"][1]["error"]["detail"]
