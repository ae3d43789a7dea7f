"""Concurrent SCIM writes on real PostgreSQL: no update is lost."""

import threading
from collections.abc import Callable
from http import HTTPStatus

import pytest
from django.db import connection
from django.test import Client

from directory import services
from directory.actors import Actor
from directory.models import Membership, UserValue
from scim_api.services import scim_client_create
from tests.scim_api.conftest import Reply, Scim, patch_op

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _race(token: str, calls: list[Callable[[Scim], Reply]]) -> list[Reply]:
    """Make the calls at the same moment, each from its own thread and database connection."""
    barrier = threading.Barrier(len(calls))
    replies: list[Reply | None] = [None] * len(calls)

    def send(index: int, call: Callable[[Scim], Reply]) -> None:
        try:
            barrier.wait(5)
            replies[index] = call(Scim(Client(), token))
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return [reply for reply in replies if reply is not None]


def _patches(requests: list[tuple[str, dict]], **headers: str) -> list[Callable[[Scim], Reply]]:  # type: ignore[type-arg]
    extra = {name.replace("_", "-"): value for name, value in headers.items()}
    return [
        lambda scim, path=path, body=body: scim.patch(path, body, headers=extra) for path, body in requests
    ]


def test_concurrent_patches_of_one_user_both_land():
    _, token = scim_client_create(name="racer")
    user = services.user_create(actor=Actor.system(), user_name="race@example.com")
    requests = [
        (
            f"Users/{user.pk}",
            patch_op({"op": "add", "path": "emails", "value": [{"value": f"{n}@example.com"}]}),
        )
        for n in range(4)
    ]

    replies = _race(token, _patches(requests))

    assert [reply.status for reply in replies] == [HTTPStatus.OK] * 4
    stored = set(UserValue.objects.filter(user=user, kind="emails").values_list("value", flat=True))
    assert stored == {f"{n}@example.com" for n in range(4)}


def test_concurrent_member_adds_to_one_group_all_land():
    _, token = scim_client_create(name="racer")
    group = services.group_create(actor=Actor.system(), display_name="Racing")
    users = [services.user_create(actor=Actor.system(), user_name=f"r{n}@example.com") for n in range(4)]
    requests = [
        (f"Groups/{group.pk}", patch_op({"op": "Add", "path": "members", "value": [{"value": str(user.pk)}]}))
        for user in users
    ]

    replies = _race(token, _patches(requests))

    assert [reply.status for reply in replies] == [HTTPStatus.NO_CONTENT] * 4
    assert set(Membership.objects.filter(group=group).values_list("member_user_id", flat=True)) == {
        user.pk for user in users
    }


def test_racing_put_and_patch_that_both_nest_groups_neither_deadlock_nor_fail():
    _, token = scim_client_create(name="racer")
    system = Actor.system()
    g1, g2, g3 = (services.group_create(actor=system, display_name=f"G{n}") for n in (1, 2, 3))
    put, patch = _race(
        token,
        [
            lambda scim: scim.put(
                f"Groups/{g1.pk}",
                {
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": "G1-renamed",
                    "members": [{"value": str(g2.pk), "type": "Group"}],
                },
            ),
            lambda scim: scim.patch(
                f"Groups/{g1.pk}",
                patch_op({"op": "add", "path": "members", "value": [{"value": str(g3.pk), "type": "Group"}]}),
            ),
        ],
    )
    replies = {"put": put, "patch": patch}

    assert replies["put"].status == HTTPStatus.OK, replies
    assert replies["patch"].status == HTTPStatus.NO_CONTENT, replies
    members = set(Membership.objects.filter(group=g1).values_list("member_group_id", flat=True))
    assert g2.pk in members


def test_if_match_on_a_member_only_patch_is_checked_under_the_lock():
    _, token = scim_client_create(name="racer")
    group = services.group_create(actor=Actor.system(), display_name="Guarded")
    users = [services.user_create(actor=Actor.system(), user_name=f"m{n}@example.com") for n in range(2)]
    requests = [
        (f"Groups/{group.pk}", patch_op({"op": "add", "path": "members", "value": [{"value": str(user.pk)}]}))
        for user in users
    ]

    replies = _race(token, _patches(requests, If_Match='W/"1"'))

    # Both named version 1: exactly one lands, the other is told the group moved on.
    assert sorted(reply.status for reply in replies) == [
        HTTPStatus.NO_CONTENT,
        HTTPStatus.PRECONDITION_FAILED,
    ]
    assert Membership.objects.filter(group=group).count() == 1
