"""The OAuth 2.0 client-credentials flow, end to end over HTTP against the live server."""

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from scim_api.models import AccessToken
from scim_api.services import access_tokens_purge, oauth_credential_issue, scim_client_create

pytestmark = pytest.mark.django_db(transaction=True)


def _call(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read() or b"null"), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null"), error.headers


def _token(base: str, public_id: str, secret: str, **form: str) -> tuple[int, Any, Any]:
    basic = base64.b64encode(f"{public_id}:{secret}".encode()).decode()
    body = urllib.parse.urlencode({"grant_type": "client_credentials", **form}).encode()
    return _call(
        f"{base}/oauth/token",
        data=body,
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )


def _scim(base: str, token: str, method: str = "GET", body: Any = None) -> int:
    request = urllib.request.Request(
        f"{base}/scim/v2/Users",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture
def credentials() -> tuple[str, str]:
    client, _ = scim_client_create(name="Gallery validator")
    credential, secret = oauth_credential_issue(client_id=client.pk, lifetime_minutes=90)
    return credential.public_id, secret


def test_client_credentials_grant_issues_a_working_bearer_token(live_server, credentials):
    status, body, headers = _token(live_server.url, *credentials)

    assert status == HTTPStatus.OK, body
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 90 * 60
    assert body["scope"] == "write"
    assert headers["Cache-Control"] == "no-store"
    assert _scim(live_server.url, body["access_token"]) == HTTPStatus.OK
    user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "oauth@example.com"}
    assert _scim(live_server.url, body["access_token"], "POST", user) == HTTPStatus.CREATED


def test_a_read_scope_token_cannot_write(live_server, credentials):
    status, body, _ = _token(live_server.url, *credentials, scope="read")
    assert status == HTTPStatus.OK
    assert body["scope"] == "read"
    user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "nope@example.com"}
    assert _scim(live_server.url, body["access_token"], "POST", user) == HTTPStatus.FORBIDDEN


def test_form_credentials_are_accepted_too(live_server, credentials):
    public_id, secret = credentials
    body = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": public_id, "client_secret": secret}
    ).encode()
    status, reply, _ = _call(
        f"{live_server.url}/oauth/token",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == HTTPStatus.OK, reply


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"secret": "wrong"}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"scope": "admin"}, 400, "invalid_scope"),
    ],
)
def test_token_errors_follow_rfc_6749(live_server, credentials, change, status, error):
    public_id, secret = credentials
    form = {"grant_type": change.get("grant_type", "client_credentials")}
    if "scope" in change:
        form["scope"] = change["scope"]
    basic = base64.b64encode(f"{public_id}:{change.get('secret', secret)}".encode()).decode()
    got, body, headers = _call(
        f"{live_server.url}/oauth/token",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (got, body["error"]) == (status, error)
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Basic")


def test_an_expired_access_token_is_refused_and_purged(live_server, credentials):
    _, body, _ = _token(live_server.url, *credentials)
    AccessToken.objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert _scim(live_server.url, body["access_token"]) == HTTPStatus.UNAUTHORIZED
    assert access_tokens_purge() == 1


def test_token_lifetime_must_be_between_60_and_360_minutes():
    client, _ = scim_client_create(name="Bad lifetime")
    for minutes in (59, 361):
        with pytest.raises(ValidationError, match="token_lifetime_minutes"):
            oauth_credential_issue(client_id=client.pk, lifetime_minutes=minutes)


def test_revoking_or_rotating_ends_issued_access_tokens(live_server, credentials):
    from scim_api.models import OAuthCredential, ScimClient
    from scim_api.services import scim_client_revoke, scim_client_rotate

    _, body, _ = _token(live_server.url, *credentials)
    client = ScimClient.objects.get(oauth__public_id=credentials[0])

    scim_client_revoke(client_ids=[client.pk])
    assert _scim(live_server.url, body["access_token"]) == HTTPStatus.UNAUTHORIZED
    scim_client_rotate(client_id=client.pk)
    # Rotation un-revokes the client, but nothing issued before comes back.
    assert _scim(live_server.url, body["access_token"]) == HTTPStatus.UNAUTHORIZED
    assert not OAuthCredential.objects.filter(scim_client=client).exists()
    assert _token(live_server.url, *credentials)[0] == HTTPStatus.UNAUTHORIZED


def test_a_new_oauth_secret_ends_tokens_issued_with_the_old_one(live_server, credentials):
    from scim_api.models import ScimClient

    _, body, _ = _token(live_server.url, *credentials)
    client = ScimClient.objects.get(oauth__public_id=credentials[0])
    oauth_credential_issue(client_id=client.pk)
    assert _scim(live_server.url, body["access_token"]) == HTTPStatus.UNAUTHORIZED


@pytest.mark.parametrize("header", ["Basic é", "Basic !!!", "Basic ZGVm"])
def test_malformed_basic_credentials_are_401(live_server, header):
    form = urllib.parse.urlencode({"grant_type": "client_credentials"}).encode()
    status, body, _ = _call(
        f"{live_server.url}/oauth/token",
        data=form,
        headers={
            "Authorization": header.encode("utf-8").decode("latin-1"),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert (status, body["error"]) == (HTTPStatus.UNAUTHORIZED, "invalid_client")
