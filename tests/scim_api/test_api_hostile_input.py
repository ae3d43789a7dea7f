"""Hostile or broken input gets a SCIM 4xx, never a 500 (found in review; each was a 500 before)."""

import json
from http import HTTPStatus

import pytest

from tests.scim_api.conftest import patch_op

pytestmark = pytest.mark.django_db

USER = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "h@example.com"}


def _user(scim) -> str:  # type: ignore[no-untyped-def]
    return scim.post("Users", USER).body["id"]


@pytest.mark.parametrize(
    "text",
    [
        "(" * 300 + 'userName eq "a"' + ")" * 300,
        "not (" * 300 + 'userName eq "a"' + ")" * 300,
        " or ".join(f'title eq "{n}"' for n in range(1500)),
        'userName eq "a\\u0000b"',
        'userName eq "\\ud800"',
        'meta.created gt "0001-01-01T00:00:00+05:00"',
        'meta.created lt "9999-12-31T23:59:59-05:00"',
    ],
)
def test_hostile_filters_are_400(scim, text):
    reply = scim.get("Users", filter=text)
    assert reply.status == HTTPStatus.BAD_REQUEST, reply
    assert reply.body["scimType"] == "invalidFilter"


@pytest.mark.parametrize(
    "path",
    [
        "emails[" + "(" * 300 + 'type eq "work"' + ")" * 300 + "].value",
        "emails[" + " or ".join(f'type eq "t{n}"' for n in range(1500)) + "].value",
    ],
)
def test_hostile_patch_paths_are_400(scim, path):
    reply = scim.patch(f"Users/{_user(scim)}", patch_op({"op": "replace", "path": path, "value": "x"}))
    assert reply.status == HTTPStatus.BAD_REQUEST, reply


@pytest.mark.parametrize(
    "body",
    [
        {**USER, "userName": "bob\u0000x"},
        {**USER, "displayName": "\ud800x"},
        {**USER, "emails": [{"value": "a@x.com", "type": "x" * 1000}]},
        {**USER, "emails": [{"value": "a@x.com", "display": "x" * 1000}]},
        {**USER, "emails": [{"value": f"{n}@x.com"} for n in range(1001)]},
    ],
)
def test_unstorable_values_are_400_invalid_value(scim, body):
    raw = json.dumps(body)  # escapes NUL and lone surrogates as \\u sequences, as a client would
    reply = scim.post("Users", raw)
    assert reply.status == HTTPStatus.BAD_REQUEST, reply
    assert reply.body["scimType"] == "invalidValue"


def test_deeply_nested_json_is_400(scim):
    assert scim.post("Users", "[" * 100_000).status == HTTPStatus.BAD_REQUEST


def test_huge_start_index_is_an_empty_page(scim):
    reply = scim.get("Users", startIndex="99999999999999999999999")
    assert reply.status == HTTPStatus.OK
    assert reply.body["Resources"] == []


@pytest.mark.parametrize("tag", ['"²"', 'W/"²"', '"' + "9" * 5000 + '"'])
def test_odd_etags_never_fail(scim, tag):
    user_id = _user(scim)
    assert scim.get(f"Users/{user_id}", headers={"If-None-Match": tag}).status == HTTPStatus.OK
    reply = scim.patch(
        f"Users/{user_id}",
        patch_op({"op": "replace", "path": "title", "value": "x"}),
        headers={"If-Match": tag},
    )
    assert reply.status == HTTPStatus.PRECONDITION_FAILED


def test_too_many_query_parameters_is_400(scim):
    params = {f"p{n}": "x" for n in range(1100)}
    assert scim.get("Users", **params).status == HTTPStatus.BAD_REQUEST


def test_too_large_a_body_is_413(scim, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    reply = scim.post("Users", {**USER, "displayName": "x" * 5000})
    assert reply.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
