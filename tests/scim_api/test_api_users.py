"""/Users over HTTP, with the request shapes Microsoft Entra and Okta really send."""

import json
from http import HTTPStatus

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from directory import services
from directory.actors import Actor
from directory.models import AuditEntry, ChangeEvent, User
from scim_api.models import DialectRewrite
from tests.scim_api.conftest import patch_op

pytestmark = pytest.mark.django_db

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SYSTEM = Actor.system("test")

ENTRA_CREATE = {
    "schemas": [CORE, ENTERPRISE],
    "externalId": "8a1c3e1e-0000-4000-8000-000000000001",
    "userName": "alice@contoso.com",
    "active": True,
    "emails": [{"primary": True, "type": "work", "value": "alice@contoso.com"}],
    "meta": {"resourceType": "User"},
    "name": {"formatted": "Alice Doe", "familyName": "Doe", "givenName": "Alice"},
    "roles": [],
}
OKTA_CREATE = {
    "schemas": [CORE],
    "userName": "bob@example.com",
    "name": {"givenName": "Bob", "familyName": "Builder"},
    "emails": [{"primary": True, "value": "bob@example.com", "type": "work"}],
    "displayName": "Bob Builder",
    "locale": "en-US",
    "externalId": "00u1abcd",
    "groups": [],
    "password": "Plaintext-Passw0rd!",
    "active": True,
}


def _create(scim, body=ENTRA_CREATE):  # type: ignore[no-untyped-def]
    reply = scim.post("Users", body)
    assert reply.status == HTTPStatus.CREATED, reply
    return reply.body


# --- create -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        ENTRA_CREATE,
        OKTA_CREATE,
        {
            "schemas": [CORE, ENTERPRISE, "urn:example:hr:1.0:User"],
            "userName": "carol@example.com",
            "addresses": [{"type": "work", "locality": "Leeds", "country": "GB", "primary": True}],
            "phoneNumbers": [{"value": "+44 1", "type": "mobile"}, {"value": "+44 2", "type": "work"}],
            ENTERPRISE: {"employeeNumber": "7", "department": "R&D"},
            "urn:example:hr:1.0:User": {"badge": "B-1"},
        },
    ],
)
def test_a_created_user_is_answered_exactly_as_it_reads_back(scim, body):
    created = scim.post("Users", body)
    assert created.status == HTTPStatus.CREATED, created
    again = scim.get(f"Users/{created.body['id']}")
    assert created.body == again.body
    assert created.headers["ETag"] == again.headers["ETag"]


def test_entra_create_answers_201_with_location_and_the_user(scim):
    reply = scim.post("Users", ENTRA_CREATE)

    assert reply.status == HTTPStatus.CREATED, reply
    assert reply.headers["Content-Type"] == "application/scim+json"
    body = reply.body
    assert reply.headers["Location"] == body["meta"]["location"]
    assert body["meta"]["location"].endswith(f"/scim/v2/Users/{body['id']}")
    assert reply.headers["ETag"] == body["meta"]["version"] == 'W/"1"'
    assert body["userName"] == "alice@contoso.com"
    assert body["name"] == {"formatted": "Alice Doe", "familyName": "Doe", "givenName": "Alice"}
    assert body["emails"] == [{"value": "alice@contoso.com", "type": "work", "primary": True}]
    assert body["active"] is True
    assert "roles" not in body  # the empty array was ignored, not stored
    user = User.objects.get(pk=body["id"])
    assert user.external_id == ENTRA_CREATE["externalId"]


def test_okta_create_hashes_the_plaintext_password_and_never_returns_it(scim):
    body = _create(scim, OKTA_CREATE)

    user = User.objects.get(pk=body["id"])
    assert user.password.startswith("argon2$")
    assert "password" not in body
    assert "Plaintext-Passw0rd!" not in str(scim.get(f"Users/{body['id']}").body)
    assert body["groups"] == []


def test_create_records_the_scim_client_in_the_audit_trail_and_outbox(scim):
    body = _create(scim)
    entry = AuditEntry.objects.get(object_id=body["id"])
    assert (entry.actor_type, entry.actor_name, entry.action) == ("scim_client", "Test IdP", "create")
    assert ChangeEvent.objects.filter(object_id=body["id"], kind="created").count() == 1


def test_duplicate_user_name_in_another_case_is_409_uniqueness(scim):
    _create(scim)
    reply = scim.post("Users", {**ENTRA_CREATE, "userName": "ALICE@contoso.com"})
    assert reply.status == HTTPStatus.CONFLICT
    assert reply.body["scimType"] == "uniqueness"
    assert reply.body["status"] == "409"
    assert User.objects.count() == 1


def test_create_with_enterprise_extension_and_manager(scim):
    manager = _create(scim)
    reply = scim.post(
        "Users",
        {
            "schemas": [CORE, ENTERPRISE],
            "userName": "report@contoso.com",
            ENTERPRISE: {
                "employeeNumber": "701984",
                "department": "Tour Operations",
                "manager": {"value": manager["id"]},
            },
        },
    )
    assert reply.status == HTTPStatus.CREATED, reply
    assert reply.body[ENTERPRISE]["employeeNumber"] == "701984"
    assert reply.body[ENTERPRISE]["manager"]["value"] == manager["id"]
    assert reply.body[ENTERPRISE]["manager"]["displayName"] == "alice@contoso.com"
    assert ENTERPRISE in reply.body["schemas"]


def test_create_without_user_name_is_400_and_writes_nothing(scim):
    reply = scim.post("Users", {"schemas": [CORE], "displayName": "No name"})
    assert reply.status == HTTPStatus.BAD_REQUEST
    assert reply.body["scimType"] == "invalidValue"
    assert not User.objects.exists()


# --- read, filter, list -----------------------------------------------------------------------


def test_get_by_id_and_unknown_ids_are_404(scim):
    body = _create(scim)
    assert scim.get(f"Users/{body['id']}").body["userName"] == "alice@contoso.com"
    for unknown in ("00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        reply = scim.get(f"Users/{unknown}")
        assert reply.status == HTTPStatus.NOT_FOUND
        assert reply.body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


def test_filter_user_name_ignores_case_as_okta_checks(scim):
    _create(scim)
    reply = scim.get("Users", filter='userName eq "ALICE@CONTOSO.COM"', startIndex=1, count=100)
    assert reply.status == HTTPStatus.OK
    assert reply.body["totalResults"] == 1
    assert reply.body["Resources"][0]["userName"] == "alice@contoso.com"


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"attributes": "userName,emails.value"},
        {"excludedAttributes": "groups,emails"},
        {"count": 0},
        {"startIndex": 2},
        {"sortBy": "name.familyName"},
    ],
)
@pytest.mark.parametrize("name", ["ALICE@contoso.COM", "alice@contoso.com", "nobody@contoso.com"])
def test_a_user_name_lookup_answers_what_the_general_filter_path_answers(scim, name, extra):
    alice = _create(scim)
    group = services.group_create(actor=SYSTEM, display_name="Sales")
    services.membership_add(actor=SYSTEM, group_id=group.pk, user_ids=[alice["id"]])
    _create(scim, OKTA_CREATE)

    # A plain `userName eq` may take the compiled lookup; an equivalent filter with a second,
    # always-true comparison always takes the general query path.
    fast = scim.get("Users", filter=f'userName eq "{name}"', **extra)
    general = scim.get("Users", filter=f'userName eq "{name}" and userName pr', **extra)

    assert fast.status == general.status == HTTPStatus.OK
    assert fast.body == general.body
    if name != "nobody@contoso.com" and not extra:
        assert [r["groups"][0]["display"] for r in fast.body["Resources"]] == ["Sales"]


def test_a_user_name_lookup_still_counts_dialect_rewrites_and_rejects_bad_filters(scim, scim_client):
    _create(scim)
    reply = scim.get("Users", filter='USERNAME EQ "alice@contoso.com"')
    assert reply.body["totalResults"] == 1
    assert DialectRewrite.objects.filter(client=scim_client[0]).exists()
    assert scim.get("Users", filter='userName eq "alice@contoso.com" and').status == HTTPStatus.BAD_REQUEST
    assert scim.get("Users", filter='userName eq ""').body["totalResults"] == 0
    assert scim.get("Users", filter='nickName eq "x"').body["totalResults"] == 0


def test_probe_for_a_random_user_is_an_empty_list_not_404(scim):
    reply = scim.get("Users", filter='userName eq "0c9b5a7e-1f24-4c26-9b52-3f0c6ac1d2aa"')
    assert reply.status == HTTPStatus.OK
    assert reply.body == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 0,
        "itemsPerPage": 0,
        "startIndex": 1,
        "Resources": [],
    }


def test_entra_matching_filters(scim):
    body = _create(scim)
    for text in (
        f'externalId eq "{ENTRA_CREATE["externalId"]}"',
        'emails[type eq "work"].value eq "alice@contoso.com"',
        f'id eq "{body["id"]}"',
    ):
        reply = scim.get("Users", filter=text)
        assert [r["id"] for r in reply.body["Resources"]] == [body["id"]], text


def test_index_pagination_is_stable_and_echoes_start_index(scim):
    for n in range(11):
        services.user_create(actor=SYSTEM, user_name=f"page{n:02}@example.com")
    seen = []
    for start in (1, 6, 11):
        reply = scim.get("Users", startIndex=start, count=5)
        assert reply.body["startIndex"] == start
        assert reply.body["totalResults"] == 11
        assert isinstance(reply.body["itemsPerPage"], int)
        seen += [r["userName"] for r in reply.body["Resources"]]
    assert len(seen) == len(set(seen)) == 11


def test_count_zero_returns_only_the_total(scim):
    _create(scim)
    reply = scim.get("Users", count=0)
    assert reply.body["totalResults"] == 1
    assert reply.body["Resources"] == []
    assert reply.body["itemsPerPage"] == 0


def test_attributes_and_excluded_attributes(scim):
    body = _create(scim)
    only = scim.get(f"Users/{body['id']}", attributes="userName,name.givenName").body
    assert set(only) == {"schemas", "id", "userName", "name"}
    assert only["name"] == {"givenName": "Alice"}
    without = scim.get(f"Users/{body['id']}", excludedAttributes="emails,groups").body
    assert "emails" not in without
    assert "groups" not in without
    assert without["userName"] == "alice@contoso.com"


def test_list_query_count_does_not_grow_with_the_page(scim):
    scim.get("Users")  # warm-up: the first request of a client also records its last use

    def queries(n_users: int) -> int:
        User.objects.all().delete()
        group = services.group_create(actor=SYSTEM, display_name=f"G{n_users}")
        for n in range(n_users):
            user = services.user_create(
                actor=SYSTEM, user_name=f"q{n_users}-{n}", values={"emails": [{"value": f"{n}@x.com"}]}
            )
            services.membership_add(actor=SYSTEM, group_id=group.pk, user_ids=[user.pk])
        with CaptureQueriesContext(connection) as captured:
            assert scim.get("Users", count=100).status == HTTPStatus.OK
        return len(captured)

    assert queries(2) == queries(20)


def test_unfiltered_pages_in_the_default_order_match_the_general_path(scim):
    # No filter and no sortBy take the precompiled page (selectors.user_window); sortBy=meta.created
    # orders the same way (created, then id) through the general path.
    group = services.group_create(actor=SYSTEM, display_name="Readers")
    for n in range(7):
        user = services.user_create(
            actor=SYSTEM, user_name=f"p{n}", values={"emails": [{"value": f"{n}@x.com"}]}
        )
        if n % 2:
            services.membership_add(actor=SYSTEM, group_id=group.pk, user_ids=[user.pk])
    for start, count in ((1, 3), (4, 3), (7, 3), (8, 3), (1, 100), (2, 0)):
        default = scim.get("Users", startIndex=start, count=count)
        general = scim.get("Users", startIndex=start, count=count, sortBy="meta.created")
        assert default.status == general.status == HTTPStatus.OK
        assert default.body == general.body, (start, count)
        assert default.body["totalResults"] == 7
    assert [r["userName"] for r in scim.get("Users", startIndex=4, count=3).body["Resources"]] == [
        "p3",
        "p4",
        "p5",
    ]
    assert scim.get("Users", count=3, excludedAttributes="groups").body["Resources"][1].get("groups") is None


def test_a_bad_sort_order_without_sort_by_is_still_refused(scim):
    reply = scim.get("Users", sortOrder="sideways")
    assert reply.status == HTTPStatus.BAD_REQUEST
    assert reply.body["scimType"] == "invalidValue"


# --- replace (PUT) ----------------------------------------------------------------------------


def test_okta_full_put_with_id_groups_meta_and_no_active_keeps_the_user_active(scim):
    body = _create(scim, OKTA_CREATE)
    put = {**body, "name": {"givenName": "Robert", "familyName": "Builder"}}
    put.pop("active")
    reply = scim.put(f"Users/{body['id']}", put)

    assert reply.status == HTTPStatus.OK, reply
    assert reply.body["name"]["givenName"] == "Robert"
    assert reply.body["active"] is True
    assert reply.body["meta"]["version"] == 'W/"2"'


def test_put_clears_omitted_attributes_and_never_creates(scim):
    body = _create(scim)
    reply = scim.put(f"Users/{body['id']}", {"schemas": [CORE], "userName": "alice@contoso.com"})
    assert reply.status == HTTPStatus.OK, reply
    assert "emails" not in reply.body
    assert "name" not in reply.body
    missing = scim.put("Users/00000000-0000-4000-8000-000000000000", {"schemas": [CORE], "userName": "x"})
    assert missing.status == HTTPStatus.NOT_FOUND
    assert User.objects.count() == 1


# --- PATCH ---------------------------------------------------------------------------------------


def test_entra_default_patch_dialect(scim, scim_client):
    body = _create(scim)
    reply = scim.patch(
        f"Users/{body['id']}",
        patch_op(
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "new@contoso.com"},
            {"op": "Replace", "path": "name.familyName", "value": "Doe-Smith"},
            {"op": "Replace", "path": f"{ENTERPRISE}:employeeNumber", "value": "42"},
            {"op": "Replace", "path": "active", "value": "False"},
        ),
    )

    assert reply.status == HTTPStatus.OK, reply
    assert reply.body["emails"] == [{"value": "new@contoso.com", "type": "work", "primary": True}]
    assert reply.body["name"]["familyName"] == "Doe-Smith"
    assert reply.body[ENTERPRISE]["employeeNumber"] == "42"
    assert reply.body["active"] is False
    user = User.objects.get(pk=body["id"])
    assert user.active is False
    assert ChangeEvent.objects.filter(object_id=user.pk, kind="deactivated").count() == 1
    fired = set(DialectRewrite.objects.filter(client=scim_client[0]).values_list("name", flat=True))
    assert {"op-case", "string-boolean"} <= fired


def test_aad_opt_scim_062020_no_path_dotted_keys(scim):
    body = _create(scim)
    reply = scim.patch(
        f"Users/{body['id']}",
        patch_op(
            {
                "op": "replace",
                "value": {
                    "displayName": "A",
                    "name.givenName": "B",
                    "name.familyName": "C",
                    f"{ENTERPRISE}:employeeNumber": "D",
                },
            }
        ),
    )
    assert reply.status == HTTPStatus.OK, reply
    assert reply.body["displayName"] == "A"
    assert reply.body["name"]["givenName"] == "B"
    assert reply.body["name"]["familyName"] == "C"
    assert reply.body[ENTERPRISE]["employeeNumber"] == "D"


def test_value_path_adds_create_and_merge_one_work_address(scim):
    body = _create(scim)
    reply = scim.patch(
        f"Users/{body['id']}",
        patch_op(
            {"op": "Add", "path": 'addresses[type eq "work"].formatted', "value": "1 Main St, Springfield"},
            {"op": "Add", "path": 'addresses[type eq "work"].locality', "value": "Springfield"},
            {"op": "Add", "path": 'addresses[type eq "work"].region', "value": "IL"},
        ),
    )
    assert reply.status == HTTPStatus.OK, reply
    assert reply.body["addresses"] == [
        {"formatted": "1 Main St, Springfield", "locality": "Springfield", "region": "IL", "type": "work"}
    ]


def test_manager_as_plain_id_then_replace_then_clear(scim):
    alice = _create(scim)
    boss = _create(scim, {**OKTA_CREATE, "userName": "boss@example.com"})
    other = _create(scim, {**OKTA_CREATE, "userName": "other@example.com"})
    path = f"{ENTERPRISE}:manager"

    added = scim.patch(f"Users/{alice['id']}", patch_op({"op": "Add", "path": path, "value": boss["id"]}))
    assert added.body[ENTERPRISE]["manager"]["value"] == boss["id"], added
    replaced = scim.patch(
        f"Users/{alice['id']}", patch_op({"op": "Replace", "path": path, "value": other["id"]})
    )
    assert replaced.body[ENTERPRISE]["manager"]["value"] == other["id"], replaced
    cleared = scim.patch(f"Users/{alice['id']}", patch_op({"op": "Replace", "path": path, "value": ""}))
    assert cleared.status == HTTPStatus.OK, cleared
    assert "manager" not in cleared.body.get(ENTERPRISE, {})
    assert User.objects.get(pk=alice["id"]).manager_id is None


def test_okta_pathless_active_replace_and_password_sync(scim):
    body = _create(scim, OKTA_CREATE)
    reply = scim.patch(f"Users/{body['id']}", patch_op({"op": "replace", "value": {"active": False}}))
    assert reply.body["active"] is False
    reply = scim.patch(
        f"Users/{body['id']}", patch_op({"op": "replace", "value": {"password": "N3w-Passphrase!"}})
    )
    assert reply.status == HTTPStatus.OK
    from django.contrib.auth.hashers import check_password

    assert check_password("N3w-Passphrase!", User.objects.get(pk=body["id"]).password)


def test_failed_patch_changes_nothing(scim):
    body = _create(scim)
    reply = scim.patch(
        f"Users/{body['id']}",
        patch_op(
            {"op": "replace", "path": "displayName", "value": "Changed"},
            {"op": "replace", "path": "noSuchAttribute", "value": "x"},
        ),
    )
    assert reply.status == HTTPStatus.BAD_REQUEST
    assert reply.body["scimType"] == "invalidPath"
    user = User.objects.get(pk=body["id"])
    assert user.display_name == ""
    assert user.version == 1


@pytest.mark.parametrize(
    "operations",
    [
        [{"op": "replace", "path": "title", "value": "CTO"}],
        [{"op": "add", "path": "emails", "value": [{"value": "second@contoso.com", "type": "home"}]}],
        [{"op": "replace", "path": 'emails[type eq "work"].value', "value": "new@contoso.com"}],
        [{"op": "remove", "path": "emails"}, {"op": "replace", "path": "name.givenName", "value": "Al"}],
        [{"op": "replace", "value": {"active": False, "phoneNumbers": [{"value": "+1 5", "type": "work"}]}}],
        [{"op": "replace", "path": f"{ENTERPRISE}:department", "value": "Sales"}],
        [{"op": "replace", "path": "title", "value": ""}],  # no change at all
        [{"op": "replace", "path": f"{ENTERPRISE}:manager", "value": "MANAGER"}],
    ],
)
def test_a_patched_user_is_answered_exactly_as_it_reads_back(scim, operations):
    boss = _create(scim, {**OKTA_CREATE, "displayName": "The Boss"})
    other_boss = _create(scim, {**OKTA_CREATE, "userName": "carol@example.com", "externalId": "00u2"})
    alice = _create(scim)
    to_boss = {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": boss["id"]}
    assert scim.patch(f"Users/{alice['id']}", patch_op(to_boss)).status == HTTPStatus.OK
    group = services.group_create(actor=SYSTEM, display_name="Sales")
    services.membership_add(actor=SYSTEM, group_id=group.pk, user_ids=[alice["id"]])
    operations = json.loads(json.dumps(operations).replace("MANAGER", other_boss["id"]))

    patched = scim.patch(f"Users/{alice['id']}", patch_op(*operations))
    again = scim.get(f"Users/{alice['id']}")

    assert patched.status == HTTPStatus.OK, patched
    assert patched.body == again.body
    assert patched.headers["ETag"] == again.headers["ETag"]
    assert [g["display"] for g in patched.body["groups"]] == ["Sales"]


def test_patch_user_query_count_is_constant(scim):
    scim.get("Users")  # warm-up: the first request of a client also records its last use

    def queries(n_values: int) -> int:
        user = services.user_create(
            actor=SYSTEM,
            user_name=f"many{n_values}",
            values={"emails": [{"value": f"{n}@x.com"} for n in range(n_values)]},
        )
        with CaptureQueriesContext(connection) as captured:
            reply = scim.patch(
                f"Users/{user.pk}", patch_op({"op": "replace", "path": "title", "value": "CTO"})
            )
            assert reply.status == HTTPStatus.OK
        return len(captured)

    assert queries(1) == queries(30)


# --- delete ---------------------------------------------------------------------------------------


def test_delete_is_204_then_404(scim):
    body = _create(scim)
    assert scim.delete(f"Users/{body['id']}").status == HTTPStatus.NO_CONTENT
    assert scim.get(f"Users/{body['id']}").status == HTTPStatus.NOT_FOUND
    assert scim.delete(f"Users/{body['id']}").status == HTTPStatus.NOT_FOUND


def test_inactive_user_stays_visible_to_filters(scim):
    body = _create(scim)
    scim.patch(f"Users/{body['id']}", patch_op({"op": "replace", "path": "active", "value": False}))
    reply = scim.get("Users", filter='userName eq "alice@contoso.com" and active eq false')
    assert [r["id"] for r in reply.body["Resources"]] == [body["id"]]


def test_get_and_filter_query_counts_do_not_grow_with_values_or_groups(scim):
    scim.get("Users")  # warm-up: the first request of a client also records its last use

    def queries(size: int) -> tuple[int, int]:
        user = services.user_create(
            actor=SYSTEM,
            user_name=f"size{size}@example.com",
            values={"emails": [{"value": f"{n}-{size}@x.com"} for n in range(size)]},
        )
        for n in range(size):
            group = services.group_create(actor=SYSTEM, display_name=f"g{size}-{n}")
            services.membership_add(actor=SYSTEM, group_id=group.pk, user_ids=[user.pk])
        with CaptureQueriesContext(connection) as by_id:
            assert scim.get(f"Users/{user.pk}").status == HTTPStatus.OK
        with CaptureQueriesContext(connection) as by_filter:
            reply = scim.get("Users", filter=f'userName eq "size{size}@example.com"')
            assert reply.body["totalResults"] == 1
            assert len(reply.body["Resources"][0]["groups"]) == size
        return len(by_id), len(by_filter)

    assert queries(1) == queries(25)


def test_several_sub_attributes_of_one_multi_valued_attribute_are_all_kept(scim):
    body = _create(
        scim, {**ENTRA_CREATE, "emails": [{"value": "a@x.com", "type": "work"}, {"value": "b@x.com"}]}
    )
    for attributes in ("emails.value,emails.type", "emails.type,emails.value"):
        reply = scim.get(f"Users/{body['id']}", attributes=attributes)
        assert reply.body["emails"] == [{"value": "a@x.com", "type": "work"}, {"value": "b@x.com"}], (
            attributes
        )


def test_excluding_or_selecting_schemas_is_harmless(scim):
    body = _create(scim)
    assert scim.get(f"Users/{body['id']}", excludedAttributes="schemas").body["schemas"][0] == CORE
    assert set(scim.get(f"Users/{body['id']}", attributes="schemas").body) == {"schemas", "id"}
