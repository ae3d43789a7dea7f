"""/Me (RFC 7644 §3.11): the user a SCIM client is bound to, or 501 with a SCIM error."""

from http import HTTPStatus

import pytest
from django.test import Client

from directory import services
from directory.actors import Actor
from directory.models import User
from scim_api.services import scim_client_create
from tests.scim_api.conftest import Scim, patch_op

pytestmark = pytest.mark.django_db


@pytest.fixture
def me(client: Client) -> tuple[Scim, User]:
    user = services.user_create(actor=Actor.system(), user_name="self@example.com", title="Engineer")
    _, token = scim_client_create(name="self-service", user_id=user.pk)
    return Scim(client, token), user


def test_get_me_is_the_bound_user(me):
    scim, user = me
    reply = scim.get("Me")
    assert reply.status == HTTPStatus.OK
    assert reply.body["id"] == str(user.pk)
    assert reply.body["meta"]["location"].endswith(f"/Users/{user.pk}")


def test_patch_and_put_me_change_the_bound_user(me):
    scim, user = me
    patched = scim.patch("me", patch_op({"op": "replace", "path": "title", "value": "Staff engineer"}))
    assert patched.status == HTTPStatus.OK, patched
    assert User.objects.get(pk=user.pk).title == "Staff engineer"
    put = scim.put(
        "Me", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "self@example.com"}
    )
    assert put.status == HTTPStatus.OK, put
    assert User.objects.get(pk=user.pk).title == ""


def test_me_without_a_bound_user_is_501(scim):
    reply = scim.get("Me")
    assert reply.status == HTTPStatus.NOT_IMPLEMENTED
    assert reply.body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert "not bound" in reply.body["detail"]


def test_create_or_delete_through_me_is_501(me):
    scim, user = me
    assert scim.delete("Me").status == HTTPStatus.NOT_IMPLEMENTED
    assert scim.post("Me", {"userName": "x"}).status == HTTPStatus.NOT_IMPLEMENTED
    assert User.objects.filter(pk=user.pk).exists()
