"""SCIM clients in the admin: the token is shown once, stored hashed, and works at once."""

from http import HTTPStatus

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from scim_api.models import DialectRewrite, ScimClient
from scim_api.services import dialect_rewrites_record, scim_client_create
from tests.scim_api.conftest import Scim

pytestmark = pytest.mark.django_db


def _token_from_messages(response) -> str:  # type: ignore[no-untyped-def]
    text = " ".join(str(message) for message in get_messages(response.wsgi_request))
    return next(word for word in text.split() if word.startswith("scim_"))


def test_adding_a_client_shows_its_token_once_and_the_token_works(admin_client_logged_in, client):
    response = admin_client_logged_in.post(
        reverse("admin:scim_api_scimclient_add"),
        {"name": "Okta", "description": "", "scope": "read", "expires_in_days": "30"},
    )
    assert response.status_code == HTTPStatus.FOUND
    token = _token_from_messages(response)
    okta = ScimClient.objects.get(name="Okta")
    assert okta.scope == "read"
    assert okta.expires is not None
    assert token not in okta.token_hash
    assert Scim(client, token).get("Users").status == HTTPStatus.OK


def test_rotate_action_replaces_the_token(admin_client_logged_in, client):
    okta, old = scim_client_create(name="Okta")
    response = admin_client_logged_in.post(
        reverse("admin:scim_api_scimclient_changelist"),
        {"action": "rotate_token", "_selected_action": [okta.pk]},
    )
    new = _token_from_messages(response)
    assert new != old
    assert Scim(client, old).get("Users").status == HTTPStatus.UNAUTHORIZED
    assert Scim(client, new).get("Users").status == HTTPStatus.OK


def test_revoke_action(admin_client_logged_in, client):
    okta, token = scim_client_create(name="Okta")
    admin_client_logged_in.post(
        reverse("admin:scim_api_scimclient_changelist"), {"action": "revoke", "_selected_action": [okta.pk]}
    )
    assert Scim(client, token).get("Users").status == HTTPStatus.UNAUTHORIZED


def test_dialect_rewrite_counts_show_on_the_client_page(admin_client_logged_in):
    entra, _ = scim_client_create(name="Entra")
    dialect_rewrites_record(client=entra, names=["op-case", "string-boolean"])
    dialect_rewrites_record(client=entra, names=["op-case"])

    assert dict(DialectRewrite.objects.values_list("name", "count")) == {"op-case": 2, "string-boolean": 1}
    page = admin_client_logged_in.get(
        reverse("admin:scim_api_scimclient_change", args=[entra.pk])
    ).content.decode()
    assert "op-case" in page
    assert "string-boolean" in page


def test_ticking_revoked_in_the_admin_ends_oauth_access_tokens(admin_client_logged_in):
    from scim_api.models import AccessToken
    from scim_api.services import access_token_issue, oauth_credential_issue

    okta, _ = scim_client_create(name="Okta")
    credential, secret = oauth_credential_issue(client_id=okta.pk)
    access_token_issue(public_id=credential.public_id, secret=secret, scope=None)
    form = {
        "name": "Okta",
        "description": "",
        "scope": "write",
        "user": "",
        "requests_per_minute": "",
        "revoked": "on",
        "expires_in_days": "",
        "oauth-TOTAL_FORMS": "1",
        "oauth-INITIAL_FORMS": "1",
        "oauth-MIN_NUM_FORMS": "0",
        "oauth-MAX_NUM_FORMS": "1",
        "oauth-0-id": str(credential.pk),
        "oauth-0-scim_client": str(okta.pk),
        "oauth-0-token_lifetime_minutes": "60",
        "dialect_rewrites-TOTAL_FORMS": "0",
        "dialect_rewrites-INITIAL_FORMS": "0",
        "dialect_rewrites-MIN_NUM_FORMS": "0",
        "dialect_rewrites-MAX_NUM_FORMS": "1000",
    }

    response = admin_client_logged_in.post(reverse("admin:scim_api_scimclient_change", args=[okta.pk]), form)

    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:2000]
    assert ScimClient.objects.get(pk=okta.pk).revoked
    assert not AccessToken.objects.exists()
