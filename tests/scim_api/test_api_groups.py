"""/Groups over HTTP: security and Microsoft 365 groups, and membership at any size."""

from http import HTTPStatus

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from directory import services
from directory.actors import Actor
from directory.models import Group, Membership
from tests.scim_api.conftest import patch_op

pytestmark = pytest.mark.django_db

CORE = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTRA = "urn:ietf:params:scim:schemas:extension:Microsoft:Entra:2.0:Group"
ADSCIM = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
SYSTEM = Actor.system("test")


def _user(name: str):  # type: ignore[no-untyped-def]
    return services.user_create(actor=SYSTEM, user_name=name, display_name=name.title())


def _group(scim, name: str = "Sales", **extra):  # type: ignore[no-untyped-def]
    reply = scim.post("Groups", {"schemas": [CORE], "displayName": name, **extra})
    assert reply.status == HTTPStatus.CREATED, reply
    return reply.body


def test_entra_group_create_with_the_adscim_schema(scim):
    reply = scim.post(
        "Groups",
        {
            "schemas": [CORE, ADSCIM],
            "externalId": "e5f1c1d2-0000-4000-8000-00000000000a",
            "displayName": "Sales",
            "meta": {"resourceType": "Group"},
        },
    )
    assert reply.status == HTTPStatus.CREATED, reply
    assert reply.body["displayName"] == "Sales"
    assert reply.body["members"] == []
    assert "groupTypes" not in reply.body[ENTRA]  # a security group: no "Unified"
    assert reply.body[ENTRA]["securityEnabled"] is True
    assert reply.headers["Location"].endswith(f"/Groups/{reply.body['id']}")


def test_microsoft_365_group_create(scim):
    body = _group(
        scim,
        "Project X",
        **{"schemas": [CORE, ENTRA], ENTRA: {"groupTypes": ["Unified"], "mailNickname": "projx"}},
    )
    group = Group.objects.get(pk=body["id"])
    assert group.kind == Group.Kind.UNIFIED
    assert group.mail_enabled
    assert body[ENTRA] == {
        "groupTypes": ["Unified"],
        "mailEnabled": True,
        "securityEnabled": True,
        "mailNickname": "projx",
    }


def test_okta_group_create_with_members(scim):
    alice, bob = _user("alice"), _user("bob")
    body = _group(
        scim, "Engineering", members=[{"value": str(alice.pk), "display": "Alice"}, {"value": str(bob.pk)}]
    )
    assert sorted(m["value"] for m in body["members"]) == sorted([str(alice.pk), str(bob.pk)])
    assert {m["type"] for m in body["members"]} == {"User"}


def test_duplicate_display_name_is_409(scim):
    _group(scim, "Sales")
    reply = scim.post("Groups", {"schemas": [CORE], "displayName": "SALES"})
    assert reply.status == HTTPStatus.CONFLICT
    assert reply.body["scimType"] == "uniqueness"


def test_entra_group_match_filter_with_excluded_members(scim):
    body = _group(scim, "Sales")
    reply = scim.get("Groups", filter='displayName eq "sales"', excludedAttributes="members")
    assert [r["id"] for r in reply.body["Resources"]] == [body["id"]]
    assert "members" not in reply.body["Resources"][0]


def test_excluded_members_never_loads_members(scim):
    group = services.group_create(actor=SYSTEM, display_name="Big")
    users = [_user(f"member{n}") for n in range(5)]
    services.membership_add(actor=SYSTEM, group_id=group.pk, user_ids=[u.pk for u in users])

    with CaptureQueriesContext(connection) as captured:
        reply = scim.get(f"Groups/{group.pk}", excludedAttributes="members")

    assert reply.status == HTTPStatus.OK
    assert "members" not in reply.body
    assert not any("directory_membership" in q["sql"] for q in captured.captured_queries)


def test_entra_add_members_with_null_ref_is_204(scim):
    body = _group(scim)
    alice = _user("alice")
    reply = scim.patch(
        f"Groups/{body['id']}",
        patch_op({"op": "Add", "path": "members", "value": [{"$ref": None, "value": str(alice.pk)}]}),
    )
    assert reply.status == HTTPStatus.NO_CONTENT, reply
    assert reply.body is None
    assert reply.headers["ETag"] == 'W/"2"'
    assert Membership.objects.filter(group_id=body["id"], member_user=alice).exists()


def test_entra_remove_with_value_array_removes_only_those_members(scim):
    alice, bob, carol = _user("alice"), _user("bob"), _user("carol")
    group = services.group_create(
        actor=SYSTEM, display_name="Sales", member_user_ids=[alice.pk, bob.pk, carol.pk]
    )
    reply = scim.patch(
        f"Groups/{group.pk}",
        patch_op({"op": "Remove", "path": "members", "value": [{"$ref": None, "value": str(bob.pk)}]}),
    )
    assert reply.status == HTTPStatus.NO_CONTENT, reply
    assert set(Membership.objects.filter(group=group).values_list("member_user_id", flat=True)) == {
        alice.pk,
        carol.pk,
    }


def test_remove_by_value_filter_path(scim):
    alice, bob = _user("alice"), _user("bob")
    group = services.group_create(actor=SYSTEM, display_name="Sales", member_user_ids=[alice.pk, bob.pk])
    reply = scim.patch(
        f"Groups/{group.pk}", patch_op({"op": "remove", "path": f'members[value eq "{alice.pk}"]'})
    )
    assert reply.status == HTTPStatus.NO_CONTENT, reply
    assert list(Membership.objects.filter(group=group).values_list("member_user_id", flat=True)) == [bob.pk]


def test_okta_rename_with_id_and_mixed_remove_add(scim):
    alice, bob = _user("alice"), _user("bob")
    group = services.group_create(actor=SYSTEM, display_name="Old name", member_user_ids=[alice.pk])
    reply = scim.patch(
        f"Groups/{group.pk}",
        patch_op(
            {"op": "replace", "value": {"id": str(group.pk), "displayName": "New name"}},
            {"op": "remove", "path": f'members[value eq "{alice.pk}"]'},
            {"op": "add", "path": "members", "value": [{"value": str(bob.pk), "display": "Bob"}]},
        ),
    )
    assert reply.status == HTTPStatus.NO_CONTENT, reply
    group.refresh_from_db()
    assert group.display_name == "New name"
    assert list(Membership.objects.filter(group=group).values_list("member_user_id", flat=True)) == [bob.pk]


def test_replace_members_resyncs_the_whole_list(scim):
    alice, bob, carol = _user("alice"), _user("bob"), _user("carol")
    group = services.group_create(actor=SYSTEM, display_name="Sync", member_user_ids=[alice.pk, bob.pk])
    reply = scim.patch(
        f"Groups/{group.pk}",
        patch_op(
            {"op": "replace", "path": "members", "value": [{"value": str(bob.pk)}, {"value": str(carol.pk)}]}
        ),
    )
    assert reply.status == HTTPStatus.NO_CONTENT, reply
    assert set(Membership.objects.filter(group=group).values_list("member_user_id", flat=True)) == {
        bob.pk,
        carol.pk,
    }


def test_patch_with_attributes_answers_200_with_the_group(scim):
    body = _group(scim)
    reply = scim.patch(
        f"Groups/{body['id']}?attributes=displayName",
        patch_op({"op": "Replace", "path": "displayName", "value": "Renamed"}),
    )
    assert reply.status == HTTPStatus.OK, reply
    assert reply.body["displayName"] == "Renamed"
    assert "members" not in reply.body


def test_one_unknown_member_fails_the_whole_patch(scim):
    body = _group(scim)
    alice = _user("alice")
    reply = scim.patch(
        f"Groups/{body['id']}",
        patch_op(
            {
                "op": "add",
                "path": "members",
                "value": [{"value": str(alice.pk)}, {"value": "00000000-0000-4000-8000-000000000000"}],
            }
        ),
    )
    assert reply.status == HTTPStatus.BAD_REQUEST
    assert reply.body["scimType"] == "invalidValue"
    assert not Membership.objects.exists()


def test_nested_groups_and_membership_filters(scim):
    parent, child = _group(scim, "Parent"), _group(scim, "Child")
    alice = _user("alice")
    scim.patch(
        f"Groups/{parent['id']}",
        patch_op({"op": "add", "path": "members", "value": [{"value": child["id"], "type": "Group"}]}),
    )
    scim.patch(
        f"Groups/{child['id']}",
        patch_op({"op": "add", "path": "members", "value": [{"value": str(alice.pk)}]}),
    )

    found = scim.get("Groups", filter=f'members.value eq "{alice.pk}"', excludedAttributes="members").body
    assert [r["displayName"] for r in found["Resources"]] == ["Child"]
    user = scim.get(f"Users/{alice.pk}").body
    assert sorted((g["display"], g["type"]) for g in user["groups"]) == [
        ("Child", "direct"),
        ("Parent", "indirect"),
    ]
    members = scim.get(f"Groups/{parent['id']}").body["members"]
    assert members == [
        {"value": child["id"], "$ref": members[0]["$ref"], "display": "Child", "type": "Group"}
    ]
    assert members[0]["$ref"].endswith(f"/Groups/{child['id']}")


def test_cycle_is_400(scim):
    parent, child = _group(scim, "Parent"), _group(scim, "Child")
    scim.patch(
        f"Groups/{parent['id']}",
        patch_op({"op": "add", "path": "members", "value": [{"value": child["id"]}]}),
    )
    reply = scim.patch(
        f"Groups/{child['id']}",
        patch_op({"op": "add", "path": "members", "value": [{"value": parent["id"]}]}),
    )
    assert reply.status == HTTPStatus.BAD_REQUEST
    assert reply.body["scimType"] == "invalidValue"


def _add_member_queries(scim, size: int) -> int:  # type: ignore[no-untyped-def]
    group = services.group_create(actor=SYSTEM, display_name=f"Size {size}")
    users = [_user(f"s{size}-{n}") for n in range(size)]
    Membership.objects.bulk_create([Membership(group=group, member_user=user) for user in users])
    newcomer = _user(f"new-{size}")
    with CaptureQueriesContext(connection) as captured:
        reply = scim.patch(
            f"Groups/{group.pk}",
            patch_op({"op": "Add", "path": "members", "value": [{"value": str(newcomer.pk)}]}),
        )
        assert reply.status == HTTPStatus.NO_CONTENT
    return len(captured)


def test_patch_add_member_costs_the_same_queries_whatever_the_group_size(scim):
    # Warm-up: a client's first request records its last use and first dialect rewrite (Entra's "Add").
    _add_member_queries(scim, 1)
    assert _add_member_queries(scim, 3) == _add_member_queries(scim, 150)


def test_put_replaces_members(scim):
    alice, bob = _user("alice"), _user("bob")
    body = _group(scim, "Put", members=[{"value": str(alice.pk)}])
    reply = scim.put(
        f"Groups/{body['id']}", {"schemas": [CORE], "displayName": "Put", "members": [{"value": str(bob.pk)}]}
    )
    assert reply.status == HTTPStatus.OK, reply
    assert [m["value"] for m in reply.body["members"]] == [str(bob.pk)]


def test_delete_group(scim):
    body = _group(scim)
    assert scim.delete(f"Groups/{body['id']}").status == HTTPStatus.NO_CONTENT
    assert scim.get(f"Groups/{body['id']}").status == HTTPStatus.NOT_FOUND
