"""Authentication, errors, content types, discovery: the parts of the protocol every endpoint shares."""

from datetime import timedelta
from http import HTTPStatus

import pytest
from django.core.management import call_command
from django.utils import timezone

from scim_api.models import ScimClient
from scim_api.services import scim_client_create
from tests.scim_api.conftest import Scim

pytestmark = pytest.mark.django_db

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x@example.com"}


def _assert_error(reply, status: int, scim_type: str | None = None) -> None:  # type: ignore[no-untyped-def]
    assert reply.status == status, reply
    assert reply.headers["Content-Type"] == "application/scim+json"
    assert reply.body["schemas"] == [ERROR]
    assert reply.body["status"] == str(status)
    assert reply.body["detail"]
    if scim_type:
        assert reply.body["scimType"] == scim_type
    else:
        assert "scimType" not in reply.body


def test_no_token_is_401_with_www_authenticate(anonymous):
    reply = anonymous.get("Users")
    _assert_error(reply, 401)
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="scim"'


@pytest.mark.parametrize("token", ["scim_notarealtoken000000000000", "garbage", ""])
def test_bad_token_is_401(client, token):
    reply = Scim(client, token or "x").get("Users")
    _assert_error(reply, 401)


def test_revoked_and_expired_tokens_are_401(client):
    revoked, token_a = scim_client_create(name="revoked")
    ScimClient.objects.filter(pk=revoked.pk).update(revoked=True)
    expired, token_b = scim_client_create(name="expired")
    ScimClient.objects.filter(pk=expired.pk).update(expires=timezone.now() - timedelta(minutes=1))
    _assert_error(Scim(client, token_a).get("Users"), 401)
    _assert_error(Scim(client, token_b).get("Users"), 401)


def test_read_scope_cannot_write(client):
    _, token = scim_client_create(name="reader", scope="read")
    reader = Scim(client, token)
    assert reader.get("Users").status == HTTPStatus.OK
    _assert_error(reader.post("Users", USER), 403)


def test_token_use_is_recorded(scim, scim_client):
    scim.get("Users")
    assert ScimClient.objects.get(pk=scim_client[0].pk).last_used is not None


def test_unknown_url_under_scim_is_a_scim_404(scim):
    _assert_error(scim.get("Widgets"), 404)
    _assert_error(scim.get("/scim/v2/Users/x/y"), 404)


def test_unsupported_method_is_405(scim):
    _assert_error(scim.delete("Users"), 405)


def test_wrong_content_type_is_415(scim):
    reply = scim.post("Users", "userName=x", headers={"Content-Type": "text/plain"})
    _assert_error(reply, 415)


def test_plain_json_and_a_missing_content_type_are_accepted(scim):
    assert scim.post("Users", USER, headers={"Content-Type": "application/json"}).status == HTTPStatus.CREATED


def test_malformed_json_is_invalid_syntax(scim):
    _assert_error(scim.post("Users", '{"userName": '), 400, "invalidSyntax")


def test_body_that_is_not_an_object_is_invalid_syntax(scim):
    _assert_error(scim.post("Users", "[1, 2]"), 400, "invalidSyntax")


@pytest.mark.parametrize("text", ["userName eq", 'noSuchThing eq "x"', 'password eq "x"', "active gt true"])
def test_bad_filters_are_invalid_filter(scim, text):
    _assert_error(scim.get("Users", filter=text), 400, "invalidFilter")


def test_bad_pagination_is_invalid_value(scim):
    _assert_error(scim.get("Users", startIndex="abc"), 400, "invalidValue")


def test_lower_case_paths_and_trailing_slashes(scim):
    assert scim.get("users").status == HTTPStatus.OK
    assert scim.get("groups/").status == HTTPStatus.OK
    assert scim.get("serviceproviderconfig").status == HTTPStatus.OK


def test_wrong_type_values_are_invalid_value_not_500(scim):
    _assert_error(scim.post("Users", {**USER, "active": "maybe"}), 400, "invalidValue")
    _assert_error(scim.post("Users", {**USER, "emails": "x@example.com"}), 400, "invalidValue")
    _assert_error(scim.post("Users", {**USER, "name": {"givenName": 5}}), 400, "invalidValue")


def test_if_match_and_if_none_match(scim):
    created = scim.post("Users", USER).body
    url = f"Users/{created['id']}"
    assert scim.get(url, headers={"If-None-Match": 'W/"1"'}).status == HTTPStatus.NOT_MODIFIED
    stale = scim.put(url, {**USER, "displayName": "B"}, headers={"If-Match": 'W/"7"'})
    _assert_error(stale, 412)
    fresh = scim.put(url, {**USER, "displayName": "B"}, headers={"If-Match": 'W/"1"'})
    assert fresh.status == HTTPStatus.OK
    assert fresh.headers["ETag"] == 'W/"2"'


# --- discovery ------------------------------------------------------------------------------


def _no_nulls(value) -> bool:  # type: ignore[no-untyped-def]
    if value is None:
        return False
    if isinstance(value, dict):
        return all(_no_nulls(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_nulls(v) for v in value)
    return True


def test_service_provider_config_tells_the_truth(anonymous):
    body = anonymous.get("ServiceProviderConfig").body
    assert body["patch"]["supported"] is True
    assert body["filter"]["supported"] is True
    assert body["sort"]["supported"] is True
    assert body["etag"]["supported"] is True
    assert body["changePassword"]["supported"] is True
    assert body["bulk"]["supported"] is True
    assert body["authenticationSchemes"][0]["type"] == "oauthbearertoken"


def test_resource_types_and_schemas(anonymous):
    types = anonymous.get("ResourceTypes").body
    assert {r["name"] for r in types["Resources"]} == {"User", "Group"}
    user_type = anonymous.get("ResourceTypes/User").body
    assert user_type["schema"] == "urn:ietf:params:scim:schemas:core:2.0:User"
    assert "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User" in [
        ext["schema"] for ext in user_type["schemaExtensions"]
    ]
    schemas = anonymous.get("Schemas").body
    assert schemas["totalResults"] == len(schemas["Resources"]) >= 5
    assert _no_nulls(schemas)
    core = anonymous.get("Schemas/urn:ietf:params:scim:schemas:core:2.0:User").body
    user_name = next(a for a in core["attributes"] if a["name"] == "userName")
    assert (user_name["uniqueness"], user_name["caseExact"], user_name["required"]) == ("server", False, True)
    password = next(a for a in core["attributes"] if a["name"] == "password")
    assert (password["mutability"], password["returned"]) == ("writeOnly", "never")
    assert anonymous.get("Schemas/urn:nope").status == HTTPStatus.NOT_FOUND


def test_create_scim_token_prints_the_token_last(capsys):
    call_command("create_scim_token", "Okta", "--scope", "read", "--expires", "30")
    token = capsys.readouterr().out.strip().splitlines()[-1]
    client = ScimClient.objects.get(name="Okta")
    assert token.startswith("scim_")
    assert client.scope == "read"
    assert client.expires is not None
    assert token not in client.token_hash
