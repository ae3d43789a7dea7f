import uuid

import pytest
from django.db.models import F, Value
from django.db.models.functions import Concat

from directory.models import Group, User
from directory.precompiled import PrecompiledLookup, PrecompiledWindow

pytestmark = pytest.mark.django_db


def _fields(obj: User | Group) -> dict[str, object]:
    return {field.attname: getattr(obj, field.attname) for field in obj._meta.concrete_fields}


def test_a_precompiled_lookup_returns_what_the_orm_returns(user_factory):
    manager = user_factory(user_name="boss")
    user = user_factory(
        user_name="ada", manager=manager, active=False, extensions={"urn:x:1.0:User": {"badge": "7"}}
    )
    build = lambda pk: User.objects.annotate(tag=Concat(F("user_name"), Value("!"))).filter(pk=pk)  # noqa: E731
    lookup = PrecompiledLookup(User, build)

    for _ in range(2):  # compiled by the first run, reused by the second
        (found,) = lookup.run(user.pk)
        expected = build(user.pk).get()
        assert _fields(found) == _fields(expected)
        assert found.tag == "ada!"
        assert isinstance(found.pk, uuid.UUID)
        assert found.extensions == {"urn:x:1.0:User": {"badge": "7"}}
        assert found._state.adding is False


def test_a_precompiled_lookup_finds_nothing_for_an_unknown_key_and_rejects_a_malformed_one():
    lookup = PrecompiledLookup(Group, lambda pk: Group.objects.filter(pk=pk))
    assert lookup.run(uuid.uuid4()) == []
    with pytest.raises(ValueError, match="Not a primary key"):
        lookup.run("not-a-uuid")


def test_a_queryset_with_select_related_is_refused():
    lookup = PrecompiledLookup(User, lambda pk: User.objects.select_related("manager").filter(pk=pk))
    with pytest.raises(ValueError, match="select_related"):
        lookup.run(uuid.uuid4())


def test_a_precompiled_window_returns_the_slices_the_orm_returns(user_factory, group_factory):
    from directory import selectors

    group = group_factory(display_name="staff")
    users = [user_factory(user_name=f"w{n}") for n in range(7)]
    users[2].manager = users[0]
    users[2].save()
    group.memberships.create(member_user=users[3])
    for with_groups in (False, True):
        window = PrecompiledWindow(
            User, lambda with_groups=with_groups: selectors.user_list(with_groups=with_groups)
        )
        for offset, limit in ((0, 3), (3, 3), (6, 3), (0, 100), (9, 2)):
            expected = list(selectors.user_list(with_groups=with_groups)[offset : offset + limit])
            found = window.run(offset=offset, limit=limit)
            assert [_fields(row) for row in found] == [_fields(row) for row in expected]
            assert [row.manager_display for row in found] == [row.manager_display for row in expected]
            assert [selectors.user_values(row) for row in found] == [
                selectors.user_values(row) for row in expected
            ]
            if with_groups:
                assert [selectors.user_groups_loaded(row) for row in found] == [
                    selectors.user_groups_loaded(row) for row in expected
                ]
    assert selectors.user_total() == User.objects.count() == 7


def test_a_window_needs_an_ordered_queryset_without_parameters():
    with pytest.raises(ValueError, match="ordered"):
        PrecompiledWindow(User, lambda: User.objects.order_by()).run(offset=0, limit=1)
    with pytest.raises(ValueError, match="parameters"):
        PrecompiledWindow(User, lambda: User.objects.filter(user_name="x").order_by("id")).run(
            offset=0, limit=1
        )
