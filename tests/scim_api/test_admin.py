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
