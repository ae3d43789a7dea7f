"""Test connection against scim2-server on a loopback port, and against a stub that fails each check."""

import httpx
import pytest

from provisioning.connection_test import target_test_connection
from tests.provisioning.downstream import TOKEN, free_port
from tests.provisioning.stub_scim import stub_scim

pytestmark = pytest.mark.django_db

NAMES = [
    "Authentication",
    "/ServiceProviderConfig",
    "/Schemas",
    "Filter on Users.externalId",
    "Filter on Groups.externalId",
    "Paging",
]


def results(checks):
    return {check.name: (check.status, check.explanation) for check in checks}


def test_scim2_server_passes_every_check(target_factory, scim2_url):
    target = target_factory(base_url=scim2_url, token=TOKEN)
    checks = target_test_connection(target=target)
    assert [c.name for c in checks] == NAMES
    assert [c.status for c in checks] == ["pass"] * 6
    found = results(checks)
    assert found["/ServiceProviderConfig"][1] == "readable (patch: yes, filter: yes, bulk: yes, etag: yes)"
    assert found["/Schemas"][1] == "3 schemas, the core User schema among them"
    assert found["Filter on Users.externalId"][1] == "a random externalId matched nothing, as it should"
    assert "startIndex could not be checked" in found["Paging"][1]
    assert checks[3].request.startswith('GET Users?filter=externalId eq "test-connection-')

    # With users on it, paging is checked across two pages.
    for name in ("one", "two"):
        response = httpx.post(
            f"{scim2_url}/Users",
            json={
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": f"{name}@example.com",
            },
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 201
    paging = target_test_connection(target=target)[-1]
    assert (paging.status, paging.explanation) == (
        "pass",
        "count and startIndex are honoured (2 users on the target)",
    )


def test_a_wrong_token_fails_authentication_and_skips_the_rest(target_factory, scim2_url):
    target = target_factory(base_url=scim2_url, token="not-the-token")
    checks = target_test_connection(target=target)
    assert checks[0].status == "fail"
    assert checks[0].explanation.startswith("the target refused the credentials (401): check the token")
    assert {c.status for c in checks[1:]} == {"skipped"}
    assert len(checks) == 6


def test_the_stub_passes_when_it_has_no_fault(target_factory):
    with stub_scim() as (url, _):
        checks = target_test_connection(target=target_factory(base_url=url, token="stub-token"))
    assert [c.status for c in checks] == ["pass"] * 6
    assert results(checks)["Paging"] == ("pass", "count and startIndex are honoured (3 users on the target)")


@pytest.mark.parametrize(
    ("fault", "check", "explanation"),
    [
        ("bad_token", "Authentication", "the target refused the credentials (401)"),
        ("not_scim", "Authentication", "not with a SCIM ListResponse: is the base URL the SCIM root"),
        ("no_spc", "/ServiceProviderConfig", "not readable: GET ServiceProviderConfig answered 404"),
        ("schemas_broken", "/Schemas", "not readable: GET Schemas answered 500"),
        ("no_user_schema", "/Schemas", "no core User schema among 1 schemas"),
        (
            "filter_ignored",
            "Filter on Users.externalId",
            "matched 3 resource(s): the target ignores this filter",
        ),
        ("filter_unsupported", "Filter on Users.externalId", "the target cannot filter on externalId"),
        ("paging_ignores_count", "Paging", "count=1 returned 3 users: the target ignores count"),
        ("paging_ignores_start", "Paging", "startIndex=2 returned the same user as startIndex=1"),
    ],
)
def test_each_fault_fails_its_own_check_with_an_explanation(target_factory, fault, check, explanation):
    with stub_scim(fault) as (url, state):
        checks = target_test_connection(target=target_factory(base_url=url, token="stub-token"))
    found = results(checks)
    assert found[check][0] == "fail"
    assert explanation in found[check][1]
    others = {name: status for name, (status, _) in found.items() if name != check}
    if check == "Authentication":
        assert set(others.values()) == {"skipped"}
    else:
        # Only its own check fails (a filter fault fails both object types' filter checks).
        failing = {name for name, status in others.items() if status == "fail"}
        assert failing <= {"Filter on Groups.externalId"}
        assert failing == ({"Filter on Groups.externalId"} if fault == "filter_unsupported" else set())
    assert state.requests  # it was really asked


def test_no_server_listening_is_explained(target_factory):
    target = target_factory(base_url=f"http://127.0.0.1:{free_port()}/v2", connect_timeout=1)
    [auth, *rest] = target_test_connection(target=target)
    assert auth.status == "fail"
    assert auth.explanation.startswith("no answer: GET Users?startIndex=1&count=1 failed: ConnectError")
    assert {c.status for c in rest} == {"skipped"}
