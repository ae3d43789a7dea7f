"""Cursor pagination (RFC 9865): opaque signed keyset cursors that survive concurrent writes."""

from http import HTTPStatus

import pytest

from directory import services
from directory.actors import Actor
from directory.models import User

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def _users(n: int, prefix: str = "c") -> list[User]:
    return [services.user_create(actor=SYSTEM, user_name=f"{prefix}{i:03}@example.com") for i in range(n)]


def _walk(scim, **params) -> list[str]:  # type: ignore[no-untyped-def]
    names: list[str] = []
    reply = scim.get("Users", cursor="", **params)
    while True:
        assert reply.status == HTTPStatus.OK, reply
        assert "startIndex" not in reply.body
        names += [r["userName"] for r in reply.body["Resources"]]
        if "nextCursor" not in reply.body:
            return names
        reply = scim.get("Users", cursor=reply.body["nextCursor"], **params)


def test_walking_by_cursor_returns_every_user_once_in_order(scim):
    created = [u.user_name for u in _users(12)]
    first = scim.get("Users", cursor="", count=5).body
    assert first["totalResults"] == 12
    assert first["itemsPerPage"] == 5
    assert "previousCursor" not in first
    assert _walk(scim, count=5) == created


def test_pages_stay_correct_while_rows_are_inserted_and_deleted(scim):
    users = _users(10)
    page = scim.get("Users", cursor="", count=4).body
    seen = [r["userName"] for r in page["Resources"]]
    services.user_delete(actor=SYSTEM, user_id=users[1].pk)  # already seen
    services.user_delete(actor=SYSTEM, user_id=users[6].pk)  # not seen yet
    late = services.user_create(actor=SYSTEM, user_name="late@example.com")
    reply = scim.get("Users", cursor=page["nextCursor"], count=4).body
    while True:
        seen += [r["userName"] for r in reply["Resources"]]
        if "nextCursor" not in reply:
            break
        reply = scim.get("Users", cursor=reply["nextCursor"], count=4).body
    survivors = [u.user_name for i, u in enumerate(users) if i != 6]
    assert seen == survivors + [late.user_name]
    assert len(seen) == len(set(seen))


def test_previous_cursor_goes_back_one_page(scim):
    created = [u.user_name for u in _users(9)]
    first = scim.get("Users", cursor="", count=3).body
    second = scim.get("Users", cursor=first["nextCursor"], count=3).body
    back = scim.get("Users", cursor=second["previousCursor"], count=3).body
    assert [r["userName"] for r in second["Resources"]] == created[3:6]
    assert [r["userName"] for r in back["Resources"]] == created[:3]
    assert "previousCursor" not in back
    assert "nextCursor" in back


def test_cursor_with_a_filter_and_post_search(scim):
    _users(6, prefix="a")
    _users(6, prefix="b")
    assert _walk(scim, count=4, filter='userName sw "b"') == [f"b{i:03}@example.com" for i in range(6)]
    reply = scim.post(
        "Users/.search", {"schemas": [SEARCH], "filter": 'userName sw "a"', "cursor": "", "count": 4}
    )
    assert reply.body["totalResults"] == 6
    assert len(reply.body["Resources"]) == 4
    assert "nextCursor" in reply.body


@pytest.mark.parametrize(
    ("params", "scim_type"),
    [
        ({"cursor": "not-a-cursor"}, "invalidCursor"),
        ({"cursor": "", "startIndex": 2}, "invalidValue"),
        ({"cursor": "", "sortBy": "userName"}, "invalidValue"),
    ],
)
def test_bad_cursor_requests(scim, params, scim_type):
    reply = scim.get("Users", **params)
    assert reply.status == HTTPStatus.BAD_REQUEST
    assert reply.body["scimType"] == scim_type


def test_a_cursor_is_bound_to_its_query_and_signed(scim):
    _users(4)
    token = scim.get("Users", cursor="", count=2).body["nextCursor"]
    other_filter = scim.get("Users", cursor=token, filter="userName pr")
    assert other_filter.body["scimType"] == "invalidCursor"
    groups = scim.get("Groups", cursor=token)
    assert groups.body["scimType"] == "invalidCursor"
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert scim.get("Users", cursor=tampered).body["scimType"] == "invalidCursor"


def test_an_old_cursor_expires(scim, settings):
    _users(3)
    token = scim.get("Users", cursor="", count=1).body["nextCursor"]
    settings.SCIM_API = {**settings.SCIM_API, "CURSOR_TIMEOUT": -1}
    reply = scim.get("Users", cursor=token)
    assert reply.status == HTTPStatus.BAD_REQUEST
    assert reply.body["scimType"] == "expiredCursor"


def test_service_provider_config_advertises_both_pagination_methods(anonymous):
    pagination = anonymous.get("ServiceProviderConfig").body["pagination"]
    assert pagination["cursor"] is True
    assert pagination["index"] is True
    assert pagination["defaultPaginationMethod"] == "index"
    assert pagination["maxPageSize"] >= pagination["defaultPageSize"]
    assert pagination["cursorTimeout"] > 0
