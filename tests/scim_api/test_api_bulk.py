"""POST /Bulk (RFC 7644 §3.7): references between operations, failures, limits."""

from http import HTTPStatus

import pytest

from directory.models import Group, Membership, User

pytestmark = pytest.mark.django_db

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


def _bulk(*operations, **extra):  # type: ignore[no-untyped-def]
    return {"schemas": [BULK], "Operations": list(operations), **extra}


def _post_user(bulk_id: str, name: str) -> dict:  # type: ignore[type-arg]
    return {
        "method": "POST",
        "path": "/Users",
        "bulkId": bulk_id,
        "data": {"schemas": [USER], "userName": name},
    }


def test_a_group_and_its_members_created_in_one_request_in_any_order(scim):
    reply = scim.post(
        "Bulk",
        _bulk(
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": "team",
                "data": {
                    "schemas": [GROUP],
                    "displayName": "Team",
                    "members": [{"value": "bulkId:ada"}, {"value": "bulkId:bob"}],
                },
            },
            _post_user("ada", "ada@example.com"),
            _post_user("bob", "bob@example.com"),
        ),
    )

    assert reply.status == HTTPStatus.OK, reply
    results = reply.body["Operations"]
    assert [(r["bulkId"], r["status"]) for r in results] == [("team", "201"), ("ada", "201"), ("bob", "201")]
    assert all(r["location"].startswith("http") and r["version"] == 'W/"1"' for r in results[1:])
    team = Group.objects.get(display_name="Team")
    assert results[0]["location"].endswith(f"/Groups/{team.pk}")
    members = set(Membership.objects.filter(group=team).values_list("member_user__user_name", flat=True))
    assert members == {"ada@example.com", "bob@example.com"}


def test_put_patch_delete_by_bulk_id_path_and_failures_reported_per_operation(scim):
    reply = scim.post(
        "Bulk",
        _bulk(
            _post_user("u1", "one@example.com"),
            {
                "method": "PATCH",
                "path": "/Users/bulkId:u1",
                "data": {
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "title", "value": "CTO"}],
                },
            },
            _post_user("dup", "ONE@example.com"),
            {"method": "DELETE", "path": "/Users/00000000-0000-4000-8000-000000000000"},
        ),
    )

    statuses = [r["status"] for r in reply.body["Operations"]]
    assert statuses == ["201", "200", "409", "404"]
    assert reply.body["Operations"][2]["response"]["scimType"] == "uniqueness"
    assert User.objects.get(user_name="one@example.com").title == "CTO"


def test_fail_on_errors_stops_processing(scim):
    reply = scim.post(
        "Bulk",
        _bulk(
            _post_user("a", "a@example.com"),
            _post_user("b", "a@example.com"),
            _post_user("c", "c@example.com"),
            failOnErrors=1,
        ),
    )
    assert [r["status"] for r in reply.body["Operations"]] == ["201", "409"]
    assert not User.objects.filter(user_name="c@example.com").exists()


def test_unknown_failed_and_circular_references_fail_with_a_clear_error(scim):
    group = lambda bulk_id, name, ref: {  # noqa: E731
        "method": "POST",
        "path": "/Groups",
        "bulkId": bulk_id,
        "data": {"schemas": [GROUP], "displayName": name, "members": [{"value": f"bulkId:{ref}"}]},
    }
    reply = scim.post(
        "Bulk",
        _bulk(group("x", "X", "y"), group("y", "Y", "x"), group("z", "Z", "nowhere")),
    )
    details = {r["bulkId"]: (r["status"], r["response"]["detail"]) for r in reply.body["Operations"]}
    assert details["x"][0] == details["y"][0] == details["z"][0] == "409"
    assert "circular" in details["x"][1]
    assert "failed" in details["y"][1]
    assert "not defined" in details["z"][1]
    assert not Group.objects.exists()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"schemas": ["urn:wrong"], "Operations": [_post_user("a", "a@x.com")]}, 400),
        (_bulk(), 400),
        (_bulk({"method": "GET", "path": "/Users"}), 400),
        (_bulk({"method": "POST", "path": "/Users", "data": {"userName": "x"}}), 400),
        (_bulk(_post_user("a", "a@x.com"), _post_user("a", "b@x.com")), 400),
        (_bulk(*[_post_user(f"u{n}", f"u{n}@x.com") for n in range(1001)]), 413),
    ],
)
def test_malformed_or_oversized_bulk_requests(scim, body, status):
    reply = scim.post("Bulk", body)
    assert reply.status == status, reply
    assert reply.body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert not User.objects.exists()


def test_payload_over_the_advertised_size_is_413(scim, settings):
    settings.SCIM_API = {**settings.SCIM_API, "BULK_MAX_PAYLOAD_SIZE": 200}
    reply = scim.post("Bulk", _bulk(_post_user("a", "a" * 300 + "@example.com")))
    assert reply.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def test_service_provider_config_advertises_bulk(anonymous):
    bulk = anonymous.get("ServiceProviderConfig").body["bulk"]
    assert bulk == {"supported": True, "maxOperations": 1000, "maxPayloadSize": 1048576}


def test_bulk_inside_bulk_is_refused(scim):
    reply = scim.post("Bulk", _bulk({"method": "POST", "path": "/Bulk", "bulkId": "b", "data": _bulk()}))
    assert reply.body["Operations"][0]["status"] == "400"


def test_a_run_of_user_creates_is_batched_with_per_operation_outcomes(scim, django_assert_max_num_queries):
    from directory.models import AuditEntry, ChangeEvent

    scim.post("Users", {"schemas": [USER], "userName": "taken@example.com"})
    operations = [_post_user(f"n{n}", f"new{n}@example.com") for n in range(50)]
    operations[10] = _post_user("dup", "TAKEN@example.com")
    operations[20] = {
        "method": "POST",
        "path": "/Users",
        "bulkId": "bad",
        "data": {"schemas": [USER], "active": "maybe"},
    }
    operations[30] = _post_user("twin", "new31@example.com")
    operations[30]["data"]["emails"] = [{"value": "twin@example.com", "primary": True}]

    with django_assert_max_num_queries(20):
        reply = scim.post("Bulk", _bulk(*operations))

    statuses = {r["bulkId"]: r["status"] for r in reply.body["Operations"]}
    assert statuses["dup"] == "409"
    assert statuses["bad"] == "400"
    # new31 appears twice in the batch: the first to claim it wins, the second gets 409.
    assert (statuses["twin"], statuses["n31"]) == ("201", "409")
    created = [r for r in reply.body["Operations"] if r["status"] == "201"]
    assert len(created) == 47  # 50 operations, 3 refused
    assert User.objects.filter(user_name__startswith="new").count() == 47
    assert ChangeEvent.objects.filter(kind="created").count() == 48  # and taken@
    assert AuditEntry.objects.filter(action="create", actor_type="scim_client").count() == 48
    twin = User.objects.get(user_name="new31@example.com")
    assert list(twin.values.values_list("value", flat=True)) == ["twin@example.com"]
    assert created[0]["location"].endswith(f"/Users/{User.objects.get(user_name='new0@example.com').pk}")
