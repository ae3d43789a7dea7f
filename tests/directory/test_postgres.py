"""The directory on real PostgreSQL: constraints enforced by the database, and concurrent writers."""

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef

from directory import services
from directory.actors import Actor
from directory.exceptions import MembershipCycle, UniquenessConflict
from directory.models import ChangeEvent, Group, Membership, User, UserValue

pytestmark = [pytest.mark.postgres]

ACTOR = Actor.system("test")


def _in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `target` on its own thread (and so its own database connection); collect result or error."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except Exception as exc:  # noqa: BLE001 - handed back to the test to assert on
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _wait_until_blocked(timeout: float = 5.0) -> None:
    """Wait until another session is waiting on a lock held by this test's transaction."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if cursor.fetchone()[0] > 0:
                return
        time.sleep(0.02)
    raise AssertionError("the second transaction never blocked")


def _second_waits_for_first(
    first: Callable[[], Any], second: Callable[[], Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `first` in a transaction held open until `second` (on another connection) blocks on it.

    Returns both outcomes ({"result": ...} or {"error": ...}), once both have finished.
    """
    release = threading.Event()

    def held() -> Any:
        with transaction.atomic():
            result = first()
            release.wait(10)
        return result

    thread_one, one = _in_thread(held)
    time.sleep(0.2)
    thread_two, two = _in_thread(second)
    _wait_until_blocked()
    release.set()
    thread_one.join(10)
    thread_two.join(10)
    return one, two


@pytest.mark.django_db
def test_database_enforces_case_insensitive_unique_user_name(user_factory):
    user_factory(user_name="dup@example.com")
    with pytest.raises(IntegrityError, match="directory_user_username_ci_unique"), transaction.atomic():
        User.objects.create(user_name="DUP@example.com")


@pytest.mark.django_db
def test_database_enforces_one_primary_value_per_attribute(user_factory):
    user = user_factory()
    UserValue.objects.create(user=user, kind="emails", value="a@example.com", primary=True, position=0)
    with pytest.raises(IntegrityError, match="directory_uservalue_one_primary"), transaction.atomic():
        UserValue.objects.create(user=user, kind="emails", value="b@example.com", primary=True, position=1)
    # Another attribute may have its own primary.
    UserValue.objects.create(user=user, kind="phoneNumbers", value="+1", primary=True, position=0)


@pytest.mark.django_db
def test_database_enforces_membership_shape(user_factory, group_factory):
    user, group, other = user_factory(), group_factory(), group_factory()
    with pytest.raises(IntegrityError, match="directory_membership_one_member"), transaction.atomic():
        Membership.objects.create(group=group, member_user=user, member_group=other)
    with pytest.raises(IntegrityError, match="directory_membership_not_self"), transaction.atomic():
        Membership.objects.create(group=group, member_group=group)
    Membership.objects.create(group=group, member_user=user)
    with pytest.raises(IntegrityError, match="directory_membership_user_unique"), transaction.atomic():
        Membership.objects.create(group=group, member_user=user)


@pytest.mark.django_db
def test_email_value_filter_is_one_indexed_query(user_factory):
    users = User.objects.bulk_create([User(user_name=f"bulk{n}") for n in range(5000)])
    UserValue.objects.bulk_create(
        [
            UserValue(user=user, kind=kind, value=f"{kind}-{n}@example.com", type="work", position=0)
            for n, user in enumerate(users)
            for kind in ("emails", "ims")
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {UserValue._meta.db_table}")
        cursor.execute(f"ANALYZE {User._meta.db_table}")
    match = UserValue.objects.filter(
        user=OuterRef("pk"), kind="emails", type="work", value__lower="emails-4242@example.com"
    )

    found = User.objects.filter(Exists(match))
    plan = found.explain()

    assert [user.user_name for user in found] == ["bulk4242"]
    assert "directory_uservalue_value_ci" in plan, plan


@pytest.mark.django_db(transaction=True)
def test_two_transactions_adding_the_same_member_end_with_one_membership_and_no_error(
    user_factory, group_factory
):
    user, group = user_factory(), group_factory()
    add = lambda: services.membership_add(actor=ACTOR, group_id=group.pk, user_ids=[user.pk])  # noqa: E731

    one, two = _second_waits_for_first(add, add)

    assert "error" not in one, one
    assert "error" not in two, two
    assert sorted([one["result"].count, two["result"].count]) == [0, 1]
    assert Membership.objects.filter(group=group, member_user=user).count() == 1
    assert ChangeEvent.objects.filter(kind="member_added", member_id=user.pk).count() == 1


@pytest.mark.django_db(transaction=True)
def test_racing_creates_of_the_same_user_name_give_one_user_and_a_uniqueness_conflict():
    one, two = _second_waits_for_first(
        lambda: services.user_create(actor=ACTOR, user_name="Race@example.com"),
        lambda: services.user_create(actor=ACTOR, user_name="race@EXAMPLE.com"),
    )

    assert isinstance(one.get("result"), User), one
    assert isinstance(two.get("error"), UniquenessConflict), two
    assert User.objects.filter(user_name__lower="race@example.com").count() == 1
    assert ChangeEvent.objects.filter(kind="created").count() == 1


@pytest.mark.django_db(transaction=True)
def test_racing_nestings_cannot_form_a_cycle(group_factory):
    a, b = group_factory(), group_factory()

    one, two = _second_waits_for_first(
        lambda: services.membership_add(actor=ACTOR, group_id=a.pk, group_ids=[b.pk]),
        lambda: services.membership_add(actor=ACTOR, group_id=b.pk, group_ids=[a.pk]),
    )

    assert one.get("result") == services.MembershipChange(count=1, version=2), one
    assert isinstance(two.get("error"), MembershipCycle), two
    assert list(Membership.objects.values_list("group_id", "member_group_id")) == [(a.pk, b.pk)]
    assert Group.objects.get(pk=b.pk).version == 1
