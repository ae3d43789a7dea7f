"""POST /.search (RFC 7644 §3.4.3): the same query semantics as GET, with the query in the body."""

from http import HTTPStatus

import pytest
from django.test import Client

from directory import services
from directory.actors import Actor
from scim_api.services import scim_client_create
from tests.scim_api.conftest import Scim

pytestmark = pytest.mark.django_db

SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
SYSTEM = Actor.system("test")
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def directory_data() -> None:
    for n in range(5):
        services.user_create(actor=SYSTEM, user_name=f"ada{n}@example.com", department="Research")
    services.user_create(actor=SYSTEM, user_name="bob@example.com", department="Sales")
    services.group_create(actor=SYSTEM, display_name="Researchers")


def test_users_search_filters_sorts_pages_and_projects(scim, directory_data):
    reply = scim.post(
        "Users/.search",
        {
            "schemas": [SEARCH],
            "filter": f'{ENTERPRISE}:department eq "research"',
            "attributes": ["userName"],
            "sortBy": "userName",
            "sortOrder": "descending",
            "startIndex": 2,
            "count": 2,
        },
    )

    assert reply.status == HTTPStatus.OK, reply
    assert reply.body["totalResults"] == 5
    assert reply.body["startIndex"] == 2
    assert [r["userName"] for r in reply.body["Resources"]] == ["ada3@example.com", "ada2@example.com"]
    assert set(reply.body["Resources"][0]) == {"schemas", "id", "userName"}


def test_groups_search(scim, directory_data):
    reply = scim.post("groups/.search", {"schemas": [SEARCH], "filter": 'displayName sw "Res"'})
    assert [r["displayName"] for r in reply.body["Resources"]] == ["Researchers"]


def test_root_search_spans_users_and_groups(scim, directory_data):
    everything = scim.post(".search", {"schemas": [SEARCH], "count": 100}).body
    assert everything["totalResults"] == 7
    assert [r["meta"]["resourceType"] for r in everything["Resources"]] == ["User"] * 6 + ["Group"]

    second_page = scim.post(".search", {"schemas": [SEARCH], "startIndex": 6, "count": 2}).body
    assert [r["meta"]["resourceType"] for r in second_page["Resources"]] == ["User", "Group"]

    # displayName exists on both types; userName only on users, so groups simply do not match.
    named = scim.post(".search", {"schemas": [SEARCH], "filter": 'userName eq "bob@example.com"'}).body
    assert [r["userName"] for r in named["Resources"]] == ["bob@example.com"]


def test_a_read_only_client_may_search(client: Client, directory_data):
    _, token = scim_client_create(name="reader", scope="read")
    reply = Scim(client, token).post("Users/.search", {"schemas": [SEARCH], "count": 1})
    assert reply.status == HTTPStatus.OK
    assert reply.body["itemsPerPage"] == 1


@pytest.mark.parametrize(
    ("body", "scim_type"),
    [
        ({"schemas": ["urn:wrong"]}, "invalidSyntax"),
        ({"schemas": [SEARCH], "filtre": 'userName eq "x"'}, "invalidSyntax"),
        ({"schemas": [SEARCH], "filter": 42}, "invalidValue"),
        ({"schemas": [SEARCH], "filter": "userName eq"}, "invalidFilter"),
        ({"schemas": [SEARCH], "count": "many"}, "invalidValue"),
        ({"schemas": [SEARCH], "attributes": [1, 2]}, "invalidValue"),
    ],
)
def test_bad_search_requests_are_400(scim, body, scim_type):
    for path in ("Users/.search", ".search"):
        reply = scim.post(path, body)
        assert reply.status == HTTPStatus.BAD_REQUEST, (path, reply)
        assert reply.body["scimType"] == scim_type


def test_root_search_attributes_may_name_attributes_of_one_type(scim, directory_data):
    reply = scim.post(".search", {"schemas": [SEARCH], "attributes": ["userName", "members"], "count": 100})
    assert reply.status == HTTPStatus.OK, reply
    shapes = [set(resource) for resource in reply.body["Resources"]]
    assert shapes == [{"schemas", "id", "userName"}] * 6 + [{"schemas", "id", "members"}]
    unknown = scim.post(".search", {"schemas": [SEARCH], "attributes": ["shoeSize"]})
    assert unknown.status == HTTPStatus.BAD_REQUEST


def test_root_search_selection_that_names_no_group_attribute_returns_groups_bare(scim, directory_data):
    reply = scim.post(".search", {"schemas": [SEARCH], "attributes": ["userName"], "count": 100})
    groups = [r for r in reply.body["Resources"] if "userName" not in r]
    assert [set(group) for group in groups] == [{"schemas", "id"}]


@pytest.mark.parametrize("value", ["1e400", "2.5", "-1e400"])
def test_non_integer_numbers_in_a_search_body_are_400(scim, value):
    for path in ("Users/.search", ".search"):
        for key in ("count", "startIndex"):
            raw = f'{{"schemas": ["{SEARCH}"], "{key}": {value}}}'
            reply = scim.post(path, raw)
            assert reply.status == HTTPStatus.BAD_REQUEST, (path, key, reply)
            assert reply.body["scimType"] == "invalidValue"


def test_root_search_sorts_each_type_by_what_it_has(scim, directory_data):
    reply = scim.post(
        ".search", {"schemas": [SEARCH], "sortBy": "userName", "sortOrder": "descending", "count": 100}
    )
    assert reply.status == HTTPStatus.OK, reply
    users = [r["userName"] for r in reply.body["Resources"] if "userName" in r]
    assert users == sorted(users, reverse=True)
    assert reply.body["totalResults"] == 7
    assert scim.post(".search", {"schemas": [SEARCH], "sortBy": "shoeSize"}).status == HTTPStatus.BAD_REQUEST
