"""SQL statements per SCIM write as a web request runs it: outside any test transaction.

Inside a test transaction the services take their locked path (see
tests/directory/test_one_statement.py); a real request takes the one-statement
path, and these counts are what it costs, whatever the size of the data.
"""

import uuid
from http import HTTPStatus

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from directory import services
from directory.actors import Actor
from directory.models import ChangeEvent, Group, Membership
from tests.scim_api.conftest import Scim, patch_op

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SYSTEM = Actor.system("write-statements")
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def _statements(call) -> tuple[list[str], object]:  # type: ignore[no-untyped-def]
    with CaptureQueriesContext(connection) as captured:
        reply = call()
    return [query["sql"] for query in captured], reply


def test_post_user_is_one_statement(scim: Scim) -> None:
    scim.get("Users")  # warm-up: a client's first request records its last use
    sql, reply = _statements(
        lambda: scim.post(
            "Users",
            {
                "schemas": [CORE_USER],
                "userName": "one@example.com",
                "name": {"givenName": "One", "familyName": "Statement"},
                "emails": [{"value": "one@example.com", "type": "work", "primary": True}],
            },
        )
    )
    assert reply.status == HTTPStatus.CREATED, reply
    assert len(sql) == 1, sql
    assert ChangeEvent.objects.filter(object_id=reply.body["id"], kind="created").count() == 1


def test_patch_user_is_a_read_and_one_statement(scim: Scim) -> None:
    scim.get("Users")
    user = services.user_create(
        actor=SYSTEM,
        user_name="patched@example.com",
        values={"emails": [{"value": f"{n}@x.com"} for n in range(20)]},
    )
    sql, reply = _statements(
        lambda: scim.patch(f"Users/{user.pk}", patch_op({"op": "replace", "path": "title", "value": "CTO"}))
    )
    assert reply.status == HTTPStatus.OK, reply
    assert reply.body["title"] == "CTO"
    assert len(reply.body["emails"]) == 20
    assert len(sql) == 2, sql
    assert sql[0].startswith("SELECT")
    assert sql[1].startswith("WITH")


def test_a_concurrent_write_between_read_and_write_is_retried_not_lost(scim: Scim, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    scim.get("Users")
    user = services.user_create(actor=SYSTEM, user_name="raced@example.com")
    real_update = services.user_update
    raced = []

    def racing_update(**kwargs):  # type: ignore[no-untyped-def]
        if not raced:  # another writer lands between this request's read and its write
            raced.append(real_update(actor=SYSTEM, user_id=user.pk, department="Theirs"))
        return real_update(**kwargs)

    monkeypatch.setattr(services, "user_update", racing_update)
    reply = scim.patch(f"Users/{user.pk}", patch_op({"op": "replace", "path": "title", "value": "Mine"}))
    assert reply.status == HTTPStatus.OK, reply
    assert (
        reply.body["title"],
        reply.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
    ) == (
        "Mine",
        "Theirs",
    )
    assert reply.body["meta"]["version"] == 'W/"3"'


@pytest.mark.parametrize("size", [3, 300])
def test_patch_add_member_is_two_statements_whatever_the_group_size(scim: Scim, size: int) -> None:
    scim.get("Users")
    group = services.group_create(actor=SYSTEM, display_name=f"Big {size}")
    people = [
        services.user_create(actor=SYSTEM, user_name=f"m{size}-{n}@example.com").pk for n in range(size)
    ]
    services.membership_add(actor=SYSTEM, group_id=group.pk, user_ids=people)
    newcomer = services.user_create(actor=SYSTEM, user_name=f"new{size}@example.com")
    # No member type, as Entra sends it (its capitalised "Add" also counts a dialect rewrite).
    sql, reply = _statements(
        lambda: scim.patch(
            f"Groups/{group.pk}",
            patch_op({"op": "add", "path": "members", "value": [{"value": str(newcomer.pk)}]}),
        )
    )
    assert reply.status == HTTPStatus.NO_CONTENT, reply
    # The group, then the write with its records, which also tells the member's kind (a user)
    # and the new version for the ETag.
    assert len(sql) == 2, "\n".join(s[:150] for s in sql)
    assert reply.headers["ETag"] == 'W/"3"'
    assert Membership.objects.filter(group=group).count() == size + 1


def test_patch_remove_member_by_value_filter_is_one_write(scim: Scim) -> None:
    scim.get("Users")
    group = services.group_create(actor=SYSTEM, display_name="Shrinking")
    people = [services.user_create(actor=SYSTEM, user_name=f"s{n}@example.com").pk for n in range(3)]
    services.membership_add(actor=SYSTEM, group_id=group.pk, user_ids=people)
    sql, reply = _statements(
        lambda: scim.patch(
            f"Groups/{group.pk}", patch_op({"op": "remove", "path": f'members[value eq "{people[1]}"]'})
        )
    )
    assert reply.status == HTTPStatus.NO_CONTENT, reply
    assert sum(statement.startswith("WITH") for statement in sql) == 1
    assert set(Membership.objects.filter(group=group).values_list("member_user_id", flat=True)) == {
        people[0],
        people[2],
    }
    assert Group.objects.get(pk=group.pk).version == 3


def test_adding_an_unknown_member_over_http_is_400_and_adds_nobody(scim: Scim) -> None:
    group = services.group_create(actor=SYSTEM, display_name="Careful")
    alice = services.user_create(actor=SYSTEM, user_name="alice@example.com")
    reply = scim.patch(
        f"Groups/{group.pk}",
        patch_op(
            {
                "op": "add",
                "path": "members",
                "value": [
                    {"value": str(alice.pk), "type": "User"},
                    {"value": str(uuid.uuid4()), "type": "User"},
                ],
            }
        ),
    )
    assert reply.status == HTTPStatus.BAD_REQUEST, reply
    assert not Membership.objects.filter(group=group).exists()
    assert Group.objects.get(pk=group.pk).version == 1
