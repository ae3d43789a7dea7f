"""sortBy / sortOrder: case rules, missing values last, multi-valued keys, and a stable order for paging."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from directory import services
from directory.models import Group, User
from scim_api.schema import ENTERPRISE_USER, ENTRA_USER, get_registry
from scim_api.sorting import DEFAULT_ORDER, InvalidSort, order_by

pytestmark = pytest.mark.django_db

USER = get_registry().resource_type("User")
GROUP = get_registry().resource_type("Group")
START = datetime(2024, 1, 1, tzinfo=UTC)


def sorted_users(sort_by: str | None, sort_order: str | None = None) -> list[str]:
    ordering = order_by(sort_by, sort_order, USER)
    return list(User.objects.order_by(*ordering).values_list("user_name", flat=True))


def make_users(user_factory: Any, *rows: dict[str, Any]) -> list[User]:
    """Users created one second apart, in the order given, so `created` breaks ties predictably."""
    return [user_factory(created=START + timedelta(seconds=n), **row) for n, row in enumerate(rows)]


def test_without_sort_by_the_order_is_creation_then_id():
    assert order_by(None, None, USER) == list(DEFAULT_ORDER) == ["created", "id"]
    assert order_by("", "descending", GROUP) == ["created", "id"]


def test_user_name_sorts_case_insensitively_both_ways(user_factory):
    make_users(user_factory, {"user_name": "bob"}, {"user_name": "Alice"}, {"user_name": "carol"})

    assert sorted_users("userName") == ["Alice", "bob", "carol"]
    assert sorted_users("USERNAME", "Descending") == ["carol", "bob", "Alice"]


def test_missing_values_sort_last_in_both_directions(user_factory):
    make_users(
        user_factory,
        {"user_name": "none1", "title": ""},
        {"user_name": "zed", "title": "Zoologist"},
        {"user_name": "none2", "title": ""},
        {"user_name": "amy", "title": "analyst"},
    )

    assert sorted_users("title", "ascending") == ["amy", "zed", "none1", "none2"]
    assert sorted_users("title", "descending") == ["zed", "amy", "none1", "none2"]


def test_ties_fall_back_to_creation_order_so_pages_never_overlap(user_factory):
    rows = [{"user_name": f"user{n:02}", "department": "Sales" if n % 2 else "R&D"} for n in range(12)]
    make_users(user_factory, *reversed(rows))
    ordering = order_by(f"{ENTERPRISE_USER}:department", None, USER)

    pages = [
        list(User.objects.order_by(*ordering).values_list("user_name", flat=True)[start : start + 5])
        for start in range(0, 12, 5)
    ]
    seen = [name for page in pages for name in page]

    assert sorted(seen) == sorted(row["user_name"] for row in rows)
    assert len(set(seen)) == 12
    # Within a department, the older user comes first.
    assert seen[:6] == ["user10", "user08", "user06", "user04", "user02", "user00"]


def test_ties_with_the_same_created_time_are_broken_by_id(user_factory):
    made = [user_factory(user_name=f"same{n}", title="Same", created=START) for n in range(4)]

    assert sorted_users("title") == [user.user_name for user in sorted(made, key=lambda user: str(user.pk))]


def test_case_exact_attributes_sort_on_the_raw_value_and_others_on_lower():
    exact = order_by("externalId", None, USER)[0]
    folded = order_by("displayName", None, USER)[0]

    assert "Lower" not in repr(exact)
    assert "Lower" in repr(folded)


@pytest.mark.parametrize("sort_order", ["up", "asc", "DESC"])
def test_unknown_sort_orders_are_rejected(sort_order):
    with pytest.raises(
        InvalidSort, match=f"sortOrder must be 'ascending' or 'descending', not '{sort_order}'"
    ):
        order_by("userName", sort_order, USER)


def test_multi_valued_attribute_sorts_by_primary_then_first_value(actor):
    services.user_create(
        actor=actor,
        user_name="primary-b",
        values={"emails": [{"value": "a@first.org"}, {"value": "B@primary.org", "primary": True}]},
    )
    services.user_create(
        actor=actor,
        user_name="first-c",
        values={"emails": [{"value": "c@first.org"}, {"value": "a@second.org"}]},
    )
    services.user_create(actor=actor, user_name="no-emails")
    services.user_create(
        actor=actor, user_name="first-a", values={"emails": [{"value": "A@only.org", "type": "work"}]}
    )

    assert sorted_users("emails") == ["first-a", "primary-b", "first-c", "no-emails"]
    assert sorted_users("emails.value", "descending") == ["first-c", "primary-b", "first-a", "no-emails"]
    assert sorted_users("emails.type") == ["first-a", "primary-b", "first-c", "no-emails"]


def test_address_parts_sort_by_the_primary_address(actor):
    services.user_create(
        actor=actor,
        user_name="lyon",
        values={
            "addresses": [
                {"address": {"locality": "Paris"}},
                {"address": {"locality": "Lyon"}, "primary": True},
            ]
        },
    )
    services.user_create(
        actor=actor, user_name="berlin", values={"addresses": [{"address": {"locality": "berlin"}}]}
    )
    services.user_create(actor=actor, user_name="nowhere")

    assert sorted_users("addresses.locality") == ["berlin", "lyon", "nowhere"]


def test_dates_sort_chronologically(user_factory):
    make_users(user_factory, {"user_name": "first"}, {"user_name": "second"}, {"user_name": "third"})
    for name, days in (("first", 3), ("second", 1), ("third", 2)):
        User.objects.filter(user_name=name).update(last_modified=START + timedelta(days=days))

    assert sorted_users("meta.lastModified", "descending") == ["first", "third", "second"]
    assert sorted_users("meta.created") == ["first", "second", "third"]


def test_extension_attributes_sort_with_missing_values_last(user_factory):
    hire_date = f"{ENTRA_USER}:employeeHireDate"
    make_users(
        user_factory,
        {"user_name": "later", "extensions": {ENTRA_USER: {"employeeHireDate": "2021-01-01T00:00:00Z"}}},
        {"user_name": "unknown", "extensions": {}},
        # 2020-12-31T23:30Z: earlier than "later" although its text sorts after it.
        {
            "user_name": "earlier",
            "extensions": {ENTRA_USER: {"employeeHireDate": "2021-01-01T00:30:00+01:00"}},
        },
        {"user_name": "nick-b", "extensions": {ENTRA_USER: {"mailNickname": "b"}}},
        {"user_name": "nick-a", "extensions": {ENTRA_USER: {"mailNickname": "A"}}},
    )

    assert sorted_users(hire_date)[:3] == ["earlier", "later", "unknown"]
    assert sorted_users(f"{ENTRA_USER}:mailNickname")[:2] == ["nick-a", "nick-b"]


def test_manager_display_name_sorts_users_without_a_manager_last(user_factory):
    zoe, adam = make_users(user_factory, {"user_name": "zoe", "display_name": "Zoe"}, {"user_name": "adam"})
    adam.display_name = "Adam"
    adam.save(update_fields=["display_name"])
    make_users(user_factory, {"user_name": "reports-to-zoe", "manager": zoe})
    User.objects.filter(user_name="zoe").update(manager=adam)

    assert sorted_users("manager.displayName") == ["zoe", "reports-to-zoe", "adam"]


def test_booleans_sort_false_first(user_factory):
    make_users(user_factory, {"user_name": "on", "active": True}, {"user_name": "off", "active": False})

    assert sorted_users("active") == ["off", "on"]


def test_groups_sort_by_display_name_and_group_types(actor):
    services.group_create(actor=actor, display_name="beta")
    services.group_create(actor=actor, display_name="Alpha", kind="unified")
    services.group_create(actor=actor, display_name="gamma")

    by_name = Group.objects.order_by(*order_by("displayName", None, GROUP))
    by_type = Group.objects.order_by(*order_by("groupTypes", None, GROUP))

    assert [group.display_name for group in by_name] == ["Alpha", "beta", "gamma"]
    assert [group.display_name for group in by_type] == ["Alpha", "beta", "gamma"]


@pytest.mark.parametrize(
    ("sort_by", "message"),
    [
        ("password", "sortBy 'password' is not sortable"),
        ("groups", "sortBy 'groups' is not sortable: memberships have no order"),
        ("groups.display", "sortBy 'groups.display' is not sortable"),
        ("name", "sortBy 'name' is not sortable: it is a complex attribute"),
        ("meta.location", "sortBy 'meta.location' is not sortable"),
        ("addresses", "sortBy 'addresses' is not sortable: name one of its sub-attributes"),
        ("shoeSize", "sortBy 'shoeSize' is not an attribute of User"),
        ("urn:example:unknown:1.0:User:badge", "is not an attribute of User"),
    ],
)
def test_unsortable_attributes_are_rejected(sort_by, message):
    with pytest.raises(InvalidSort, match=message):
        order_by(sort_by, None, USER)


def test_group_members_are_not_sortable():
    with pytest.raises(
        InvalidSort, match="sortBy 'members.value' is not sortable: memberships have no order"
    ):
        order_by("members.value", None, GROUP)
