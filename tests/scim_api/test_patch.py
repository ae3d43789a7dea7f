import copy
from typing import Any

import pytest

from scim_api.patch import MemberRef, MembershipDelta, PatchError, PatchResult, apply_patch
from scim_api.schema import (
    CORE_GROUP,
    CORE_USER,
    ENTERPRISE_USER,
    ENTRA_GROUP,
    PATCH_OP,
    Attribute,
    ResourceType,
    Schema,
    get_registry,
)

USER = get_registry().resource_type("User")
GROUP = get_registry().resource_type("Group")
USER_ID = "2819c223-7f76-453a-919d-413861904646"
GROUP_ID = "e9e30dba-f08f-4109-8486-d5c6a331660a"
MANAGER_ID = "26118915-6090-4610-87e4-49d8ca9f808d"


def make_user() -> dict[str, Any]:
    return {
        "schemas": [CORE_USER, ENTERPRISE_USER],
        "id": USER_ID,
        "externalId": "ext-1",
        "userName": "bjensen@example.com",
        "name": {"formatted": "Ms. Barbara J Jensen", "familyName": "Jensen", "givenName": "Barbara"},
        "displayName": "Babs Jensen",
        "active": True,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": True},
            {"value": "babs@jensen.org", "type": "home"},
        ],
        "roles": [{"value": "admin"}, {"value": "auditor"}],
        "groups": [{"value": GROUP_ID, "display": "Sales"}],
        ENTERPRISE_USER: {
            "employeeNumber": "701984",
            "manager": {"value": MANAGER_ID, "$ref": f"../Users/{MANAGER_ID}", "displayName": "John Smith"},
        },
        "meta": {"resourceType": "User", "version": 'W/"3"'},
    }


def make_group() -> dict[str, Any]:
    return {
        "schemas": [CORE_GROUP, ENTRA_GROUP],
        "id": GROUP_ID,
        "externalId": "ext-g",
        "displayName": "Sales",
        ENTRA_GROUP: {"description": "Sales team", "groupTypes": ["Unified"], "mailEnabled": True},
        "meta": {"resourceType": "Group"},
    }


def body(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def patch_user(*operations: dict[str, Any], user: dict[str, Any] | None = None) -> dict[str, Any]:
    return apply_patch(USER, user if user is not None else make_user(), body(*operations)).resource


def patch_group(*operations: dict[str, Any]) -> PatchResult:
    return apply_patch(GROUP, make_group(), body(*operations))


def patch_error(resource_type: ResourceType, *operations: dict[str, Any]) -> PatchError:
    resource = make_user() if resource_type is USER else make_group()
    with pytest.raises(PatchError) as excinfo:
        apply_patch(resource_type, resource, body(*operations))
    return excinfo.value


def emails_of(user: dict[str, Any]) -> list[dict[str, Any]]:
    return user["emails"]


# --- the request body ----------------------------------------------------------------


def test_body_without_patchop_schema_is_invalid_syntax() -> None:
    with pytest.raises(PatchError, match="schemas") as excinfo:
        apply_patch(USER, make_user(), {"Operations": [{"op": "remove", "path": "title"}]})
    assert excinfo.value.scim_type == "invalidSyntax"


def test_empty_operations_list_is_invalid_syntax() -> None:
    with pytest.raises(PatchError, match="non-empty list") as excinfo:
        apply_patch(USER, make_user(), {"schemas": [PATCH_OP], "Operations": []})
    assert excinfo.value.scim_type == "invalidSyntax"


def test_lowercase_operations_key_is_accepted() -> None:
    result = apply_patch(
        USER,
        make_user(),
        {"schemas": [PATCH_OP], "operations": [{"op": "replace", "path": "title", "value": "CEO"}]},
    )

    assert result.resource["title"] == "CEO"


def test_unknown_op_is_invalid_syntax() -> None:
    error = patch_error(USER, {"op": "move", "path": "title", "value": "x"})

    assert error.scim_type == "invalidSyntax"
    assert "'move'" in error.detail


def test_operation_that_is_not_an_object_is_invalid_syntax() -> None:
    error = patch_error(USER, ["replace", "title", "x"])  # type: ignore[arg-type]

    assert error.scim_type == "invalidSyntax"
    assert "Operation 1 must be a JSON object" in error.detail


@pytest.mark.parametrize("op", ["Replace", "REPLACE", "replace"])
def test_op_is_matched_in_any_case(op: str) -> None:
    assert patch_user({"op": op, "path": "title", "value": "CEO"})["title"] == "CEO"


@pytest.mark.parametrize("op", ["add", "replace"])
def test_add_and_replace_need_a_value(op: str) -> None:
    error = patch_error(USER, {"op": op, "path": "title"})

    assert error.scim_type == "invalidSyntax"
    assert f'"{op}" needs a "value"' in error.detail


def test_extra_operation_keys_are_ignored() -> None:
    user = patch_user({"op": "Add", "name": "addMember", "path": "title", "value": "CEO"})

    assert user["title"] == "CEO"


def test_error_detail_names_the_failing_operation() -> None:
    error = patch_error(
        USER,
        {"op": "replace", "path": "title", "value": "CEO"},
        {"op": "replace", "path": "nope", "value": 1},
    )

    assert error.detail.startswith("Operation 2: ")


def test_input_resource_and_body_are_not_mutated() -> None:
    user, request = (
        make_user(),
        body({"op": "add", "path": "emails", "value": [{"value": "new@example.com"}]}),
    )
    user_before, request_before = copy.deepcopy(user), copy.deepcopy(request)

    result = apply_patch(USER, user, request)

    assert user == user_before
    assert request == request_before
    assert len(result.resource["emails"]) == 3


def test_request_is_atomic_when_a_later_operation_fails() -> None:
    user = make_user()
    before = copy.deepcopy(user)

    with pytest.raises(PatchError, match="required") as excinfo:
        apply_patch(
            USER,
            user,
            body(
                {"op": "replace", "path": "displayName", "value": "Changed"},
                {"op": "remove", "path": "userName"},
            ),
        )

    assert excinfo.value.scim_type == "mutability"
    assert user == before


# --- paths ---------------------------------------------------------------------------


def test_replace_simple_attribute_with_path() -> None:
    assert (
        patch_user({"op": "replace", "path": "displayName", "value": "Barbara"})["displayName"] == "Barbara"
    )


def test_capitalised_path_writes_the_canonical_attribute_name() -> None:
    user = patch_user({"op": "replace", "path": "UserName", "value": "barbara@example.com"})

    assert user["userName"] == "barbara@example.com"
    assert "UserName" not in user


def test_unknown_attribute_is_invalid_path_naming_it() -> None:
    error = patch_error(USER, {"op": "replace", "path": "favouriteColour", "value": "blue"})

    assert error.scim_type == "invalidPath"
    assert "'favouriteColour' is not an attribute of User" in error.detail


def test_unknown_sub_attribute_is_invalid_path() -> None:
    error = patch_error(USER, {"op": "replace", "path": "name.nickname", "value": "Babs"})

    assert error.scim_type == "invalidPath"
    assert "name.nickname" in error.detail


def test_malformed_path_is_invalid_path() -> None:
    error = patch_error(USER, {"op": "replace", "path": 'emails[type eq "work"', "value": "x"})

    assert error.scim_type == "invalidPath"


def test_replace_sub_attribute_leaves_its_siblings() -> None:
    user = patch_user({"op": "replace", "path": "name.familyName", "value": "Doe-Smith"})

    assert user["name"] == {
        "formatted": "Ms. Barbara J Jensen",
        "familyName": "Doe-Smith",
        "givenName": "Barbara",
    }


def test_urn_path_writes_into_the_extension_and_declares_its_schema() -> None:
    user = make_user()
    del user[ENTERPRISE_USER]
    user["schemas"] = [CORE_USER]

    result = patch_user({"op": "add", "path": f"{ENTERPRISE_USER}:department", "value": "Sales"}, user=user)

    assert result[ENTERPRISE_USER] == {"department": "Sales"}
    assert result["schemas"] == [CORE_USER, ENTERPRISE_USER]


def test_urn_path_is_case_insensitive() -> None:
    path = "URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:EmployeeNumber"

    user = patch_user({"op": "replace", "path": path, "value": "42"})

    assert user[ENTERPRISE_USER]["employeeNumber"] == "42"


def test_removing_the_last_extension_attribute_drops_the_extension() -> None:
    user = patch_user(
        {"op": "remove", "path": f"{ENTERPRISE_USER}:employeeNumber"},
        {"op": "remove", "path": f"{ENTERPRISE_USER}:manager"},
    )

    assert ENTERPRISE_USER not in user
    assert user["schemas"] == [CORE_USER]


def test_extension_urn_as_path_merges_its_attributes() -> None:
    user = patch_user({"op": "add", "path": ENTERPRISE_USER, "value": {"Department": "Sales"}})

    assert user[ENTERPRISE_USER]["department"] == "Sales"
    assert user[ENTERPRISE_USER]["employeeNumber"] == "701984"


# --- operations without a path ---------------------------------------------------------


def test_add_without_path_merges_complex_and_appends_multi_valued() -> None:
    user = patch_user(
        {
            "op": "add",
            "value": {
                "name": {"middleName": "Jane"},
                "emails": [{"value": "bj@other.org", "type": "other"}],
                "nickName": "Babs",
            },
        }
    )

    assert user["name"]["middleName"] == "Jane"
    assert user["name"]["givenName"] == "Barbara"
    assert [e["value"] for e in emails_of(user)] == ["bjensen@example.com", "babs@jensen.org", "bj@other.org"]
    assert user["nickName"] == "Babs"


def test_replace_without_path_takes_dotted_and_urn_keys() -> None:
    user = patch_user(
        {
            "op": "replace",
            "value": {
                "displayName": "A",
                "name.givenName": "B",
                "name.familyName": "C",
                f"{ENTERPRISE_USER}:employeeNumber": "D",
            },
        }
    )

    assert user["displayName"] == "A"
    assert user["name"] == {"formatted": "Ms. Barbara J Jensen", "givenName": "B", "familyName": "C"}
    assert user[ENTERPRISE_USER]["employeeNumber"] == "D"
    assert "name.givenName" not in user


def test_replace_without_path_takes_extension_urn_object() -> None:
    user = patch_user(
        {"op": "replace", "value": {ENTERPRISE_USER: {"costCenter": "4130", "division": "Theme"}}}
    )

    assert user[ENTERPRISE_USER]["costCenter"] == "4130"
    assert user[ENTERPRISE_USER]["division"] == "Theme"
    assert user[ENTERPRISE_USER]["employeeNumber"] == "701984"


def test_replace_without_path_replaces_multi_valued_lists() -> None:
    user = patch_user({"op": "replace", "value": {"emails": [{"value": "only@example.com", "type": "work"}]}})

    assert emails_of(user) == [{"value": "only@example.com", "type": "work"}]


def test_capitalised_keys_without_path_write_canonical_names() -> None:
    user = patch_user(
        {
            "op": "replace",
            "value": {"Active": False, "UserName": "b@example.com", "Name": {"GivenName": "Bee"}},
        }
    )

    assert user["active"] is False
    assert user["userName"] == "b@example.com"
    assert user["name"]["givenName"] == "Bee"
    assert not {"Active", "UserName", "Name"} & set(user)


def test_unknown_key_without_path_is_invalid_path() -> None:
    error = patch_error(USER, {"op": "replace", "value": {"displayName": "A", "shoeSize": 42}})

    assert error.scim_type == "invalidPath"
    assert "'shoeSize' is not an attribute of User" in error.detail


def test_unknown_schema_urn_key_without_path_is_invalid_path() -> None:
    error = patch_error(USER, {"op": "add", "value": {"urn:example:params:scim:schemas:Custom": {"a": "b"}}})

    assert error.scim_type == "invalidPath"
    assert "names no schema of User" in error.detail


def test_non_object_value_without_path_is_invalid_value() -> None:
    error = patch_error(USER, {"op": "replace", "value": "Barbara"})

    assert error.scim_type == "invalidValue"
    assert "needs an object of attributes" in error.detail


def test_echoed_schemas_and_meta_without_path_are_ignored() -> None:
    user = patch_user(
        {"op": "replace", "value": {"schemas": ["x"], "meta": {"version": "W/1"}, "title": "CEO"}}
    )

    assert user["schemas"] == [CORE_USER, ENTERPRISE_USER]
    assert user["meta"] == {"resourceType": "User", "version": 'W/"3"'}
    assert user["title"] == "CEO"


def test_okta_pathless_deactivation() -> None:
    assert patch_user({"op": "replace", "value": {"active": False}})["active"] is False


def test_okta_pathless_password_sync() -> None:
    assert patch_user({"op": "replace", "value": {"password": "t1meMa$heen"}})["password"] == "t1meMa$heen"


def test_password_replace_with_path() -> None:
    assert patch_user({"op": "replace", "path": "password", "value": "s3cret!"})["password"] == "s3cret!"


def test_remove_without_path_is_no_target() -> None:
    error = patch_error(USER, {"op": "remove", "value": {"title": "CEO"}})

    assert error.scim_type == "noTarget"


# --- single-valued attributes --------------------------------------------------------


def test_add_to_complex_attribute_merges_sub_attributes() -> None:
    user = patch_user({"op": "add", "path": "name", "value": {"honorificPrefix": "Ms."}})

    assert user["name"] == {
        "formatted": "Ms. Barbara J Jensen",
        "familyName": "Jensen",
        "givenName": "Barbara",
        "honorificPrefix": "Ms.",
    }


def test_replace_complex_attribute_keeps_unspecified_sub_attributes() -> None:
    user = patch_user({"op": "replace", "path": "name", "value": {"familyName": "Doe"}})

    assert user["name"] == {"formatted": "Ms. Barbara J Jensen", "familyName": "Doe", "givenName": "Barbara"}


def test_add_to_absent_simple_attribute_sets_it() -> None:
    assert patch_user({"op": "add", "path": "locale", "value": "en-US"})["locale"] == "en-US"


def test_null_update_clears_with_empty_string_then_null() -> None:
    user = patch_user({"op": "replace", "path": "displayName", "value": ""})
    assert "displayName" not in user

    user = patch_user(
        {"op": "replace", "path": "displayName", "value": "Again"},
        {"op": "replace", "path": "displayName", "value": None},
    )
    assert "displayName" not in user


def test_replace_sub_attribute_with_null_removes_it() -> None:
    user = patch_user({"op": "replace", "path": "name.givenName", "value": None})

    assert user["name"] == {"formatted": "Ms. Barbara J Jensen", "familyName": "Jensen"}


@pytest.mark.parametrize("value", ["", None])
def test_clearing_required_attribute_is_invalid_value(value: str | None) -> None:
    error = patch_error(USER, {"op": "replace", "path": "userName", "value": value})

    assert error.scim_type == "invalidValue"
    assert "userName is required" in error.detail


def test_removing_required_attribute_is_mutability() -> None:
    error = patch_error(USER, {"op": "remove", "path": "userName"})

    assert error.scim_type == "mutability"
    assert "userName is required: it cannot be removed" in error.detail


def test_remove_sub_attribute() -> None:
    user = patch_user({"op": "remove", "path": "name.familyName"})

    assert user["name"] == {"formatted": "Ms. Barbara J Jensen", "givenName": "Barbara"}


def test_remove_complex_attribute() -> None:
    assert "name" not in patch_user({"op": "remove", "path": "name"})


def test_remove_absent_attribute_changes_nothing() -> None:
    assert patch_user({"op": "remove", "path": "nickName"}) == make_user()


def test_string_boolean_is_invalid_value() -> None:
    error = patch_error(USER, {"op": "replace", "path": "active", "value": "False"})

    assert error.scim_type == "invalidValue"
    assert "active must be a JSON boolean (true or false), not string 'False'" in error.detail


def test_number_for_string_attribute_is_invalid_value() -> None:
    error = patch_error(USER, {"op": "replace", "path": "title", "value": 7})

    assert error.scim_type == "invalidValue"
    assert "title must be a string, not number 7" in error.detail


def test_non_object_for_complex_attribute_is_invalid_value() -> None:
    error = patch_error(USER, {"op": "replace", "path": "name", "value": "Barbara Jensen"})

    assert error.scim_type == "invalidValue"
    assert "name must be an object" in error.detail


def test_unknown_key_inside_complex_value_is_invalid_path() -> None:
    error = patch_error(USER, {"op": "add", "path": "name", "value": {"nick": "Babs"}})

    assert error.scim_type == "invalidPath"
    assert "'nick' is not a sub-attribute of name" in error.detail


def test_boolean_sub_attribute_as_string_is_invalid_value() -> None:
    error = patch_error(
        USER, {"op": "add", "path": "emails", "value": [{"value": "x@y.z", "primary": "True"}]}
    )

    assert error.scim_type == "invalidValue"
    assert "emails.primary must be a JSON boolean" in error.detail


# --- readOnly and immutable --------------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "id", "value": "other"},
        {"op": "remove", "path": "meta"},
        {"op": "replace", "path": "meta.version", "value": "W/1"},
        {"op": "add", "path": "groups", "value": [{"value": GROUP_ID}]},
        {"op": "replace", "path": f"{ENTERPRISE_USER}:manager.displayName", "value": "Jane"},
    ],
)
def test_read_only_path_is_mutability(operation: dict[str, Any]) -> None:
    error = patch_error(USER, operation)

    assert error.scim_type == "mutability"
    assert "is readOnly" in error.detail


def test_changed_id_without_path_is_mutability() -> None:
    error = patch_error(USER, {"op": "replace", "value": {"id": "someone-else", "title": "CEO"}})

    assert error.scim_type == "mutability"
    assert "id is readOnly" in error.detail


def test_groups_without_path_is_mutability() -> None:
    error = patch_error(USER, {"op": "add", "value": {"groups": []}})

    assert error.scim_type == "mutability"


def test_okta_group_rename_with_unchanged_id() -> None:
    result = patch_group({"op": "replace", "value": {"id": GROUP_ID, "displayName": "Field Sales"}})

    assert result.resource["displayName"] == "Field Sales"
    assert result.resource["id"] == GROUP_ID
    assert not result.members.has_changes


SERIAL = Attribute("serial", mutability="immutable")
DEVICE = ResourceType(
    "Device",
    "/Devices",
    "Test resource with an immutable attribute",
    Schema("urn:example:scim:schemas:Device", "Device", "Device", (SERIAL, Attribute("label"))),
)


def test_immutable_attribute_can_be_set_when_absent() -> None:
    result = apply_patch(DEVICE, {"id": "d1"}, body({"op": "add", "path": "serial", "value": "SN-1"}))

    assert result.resource == {"id": "d1", "serial": "SN-1"}


def test_changing_immutable_attribute_is_mutability() -> None:
    with pytest.raises(PatchError, match="serial is immutable") as excinfo:
        apply_patch(
            DEVICE, {"id": "d1", "serial": "SN-1"}, body({"op": "replace", "path": "serial", "value": "X"})
        )

    assert excinfo.value.scim_type == "mutability"


def test_removing_immutable_attribute_is_mutability() -> None:
    with pytest.raises(PatchError, match="serial is immutable") as excinfo:
        apply_patch(DEVICE, {"id": "d1", "serial": "SN-1"}, body({"op": "remove", "path": "serial"}))

    assert excinfo.value.scim_type == "mutability"


def test_rewriting_immutable_attribute_with_the_same_value_is_allowed() -> None:
    result = apply_patch(
        DEVICE,
        {"id": "d1", "serial": "SN-1"},
        body({"op": "replace", "value": {"serial": "SN-1", "label": "L"}}),
    )

    assert result.resource == {"id": "d1", "serial": "SN-1", "label": "L"}


# --- manager -------------------------------------------------------------------------------


def test_add_manager_when_absent() -> None:
    user = make_user()
    del user[ENTERPRISE_USER]["manager"]

    result = patch_user(
        {"op": "add", "path": f"{ENTERPRISE_USER}:manager", "value": {"value": "m-2"}}, user=user
    )

    assert result[ENTERPRISE_USER]["manager"] == {"value": "m-2"}


def test_replace_manager_drops_the_old_managers_read_only_details() -> None:
    user = patch_user({"op": "replace", "path": f"{ENTERPRISE_USER}:manager", "value": {"value": "m-2"}})

    assert user[ENTERPRISE_USER]["manager"] == {"value": "m-2"}


def test_echoed_read_only_manager_display_name_is_ignored() -> None:
    current = make_user()[ENTERPRISE_USER]["manager"]
    value = {"value": MANAGER_ID, "displayName": "Someone Else", "$ref": current["$ref"]}

    user = patch_user({"op": "replace", "path": f"{ENTERPRISE_USER}:manager", "value": value})

    assert user[ENTERPRISE_USER]["manager"] == current


def test_manager_set_by_ref_alone_drops_the_old_value() -> None:
    """RFC 7643 §4.3: manager.$ref is readWrite; a client may name the manager by URI only."""
    user = patch_user(
        {"op": "replace", "path": f"{ENTERPRISE_USER}:manager", "value": {"$ref": "../Users/m-9"}}
    )

    assert user[ENTERPRISE_USER]["manager"] == {"$ref": "../Users/m-9"}


@pytest.mark.parametrize("value", [{"value": ""}, {"value": None}, "", None])
def test_replace_manager_with_empty_value_clears_it(value: Any) -> None:
    user = patch_user({"op": "replace", "path": f"{ENTERPRISE_USER}:manager", "value": value})

    assert "manager" not in user[ENTERPRISE_USER]
    assert user[ENTERPRISE_USER]["employeeNumber"] == "701984"


def test_manager_as_plain_string_is_invalid_value() -> None:
    error = patch_error(USER, {"op": "add", "path": f"{ENTERPRISE_USER}:manager", "value": "m-2"})

    assert error.scim_type == "invalidValue"
    assert "manager must be an object" in error.detail


def test_capitalised_manager_from_microsoft_validator() -> None:
    user = patch_user(
        {"op": "add", "value": {ENTERPRISE_USER: {"Manager": {"Value": "m-3"}, "Department": "D"}}}
    )

    assert user[ENTERPRISE_USER]["manager"] == {"value": "m-3"}
    assert user[ENTERPRISE_USER]["department"] == "D"


# --- multi-valued attributes -----------------------------------------------------------------


def test_add_appends_to_multi_valued_attribute() -> None:
    user = patch_user({"op": "add", "path": "phoneNumbers", "value": [{"value": "555-1234", "type": "work"}]})

    assert user["phoneNumbers"] == [{"value": "555-1234", "type": "work"}]


def test_add_accepts_a_single_object_as_one_element() -> None:
    user = patch_user({"op": "add", "path": "emails", "value": {"value": "x@example.com", "type": "other"}})

    assert emails_of(user)[-1] == {"value": "x@example.com", "type": "other"}
    assert len(emails_of(user)) == 3


def test_readding_an_existing_element_does_not_duplicate_it() -> None:
    user = patch_user(
        {"op": "add", "path": "emails", "value": [{"value": "BJensen@Example.com", "type": "Work"}]}
    )

    assert len(emails_of(user)) == 2
    assert emails_of(user)[0]["primary"] is True


def test_same_value_with_another_type_is_a_new_element() -> None:
    user = patch_user(
        {"op": "add", "path": "emails", "value": [{"value": "bjensen@example.com", "type": "home"}]}
    )

    assert len(emails_of(user)) == 3


def test_replace_without_filter_replaces_the_whole_list() -> None:
    user = patch_user({"op": "replace", "path": "roles", "value": [{"value": "reader"}]})

    assert user["roles"] == [{"value": "reader"}]


@pytest.mark.parametrize("value", [[], None])
def test_replace_list_with_nothing_clears_it(value: Any) -> None:
    assert "roles" not in patch_user({"op": "replace", "path": "roles", "value": value})


def test_remove_whole_multi_valued_attribute() -> None:
    assert "emails" not in patch_user({"op": "remove", "path": "emails"})


def test_remove_with_value_array_removes_only_those_elements() -> None:
    user = patch_user({"op": "Remove", "path": "roles", "value": [{"value": "admin"}]})

    assert user["roles"] == [{"value": "auditor"}]


def test_remove_matching_elements() -> None:
    user = patch_user({"op": "remove", "path": 'emails[type eq "work"]'})

    assert emails_of(user) == [{"value": "babs@jensen.org", "type": "home"}]


def test_remove_with_filter_matching_nothing_changes_nothing() -> None:
    assert patch_user({"op": "remove", "path": 'emails[type eq "other"]'}) == make_user()


def test_remove_sub_attribute_of_matching_elements() -> None:
    user = patch_user({"op": "remove", "path": 'emails[type eq "work"].primary'})

    assert emails_of(user)[0] == {"value": "bjensen@example.com", "type": "work"}


def test_removing_the_value_of_an_element_removes_the_element() -> None:
    user = patch_user({"op": "remove", "path": 'emails[type eq "home"].value'})

    assert emails_of(user) == [{"value": "bjensen@example.com", "type": "work", "primary": True}]


def test_replace_sub_attribute_of_matching_element() -> None:
    user = patch_user({"op": "Replace", "path": 'emails[type eq "work"].value', "value": "new@contoso.com"})

    assert emails_of(user)[0] == {"value": "new@contoso.com", "type": "work", "primary": True}
    assert emails_of(user)[1] == {"value": "babs@jensen.org", "type": "home"}


def test_replace_with_filter_creates_the_missing_element() -> None:
    user = patch_user({"op": "replace", "path": 'phoneNumbers[type eq "mobile"].value', "value": "555-0100"})

    assert user["phoneNumbers"] == [{"type": "mobile", "value": "555-0100"}]


def test_three_adds_to_a_new_work_address_merge_into_one() -> None:
    user = patch_user(
        {"op": "Add", "path": 'addresses[type eq "work"].formatted', "value": "1 Main St, Springfield"},
        {"op": "Add", "path": 'addresses[type eq "work"].locality', "value": "Springfield"},
        {"op": "Add", "path": 'addresses[type eq "work"].region', "value": "IL"},
    )

    assert user["addresses"] == [
        {"type": "work", "formatted": "1 Main St, Springfield", "locality": "Springfield", "region": "IL"}
    ]


def test_conjunction_filter_creates_element_with_every_equality() -> None:
    user = make_user()
    del user["emails"]

    result = patch_user(
        {
            "op": "replace",
            "path": 'emails[type eq "work" and primary eq true].value',
            "value": "w@example.com",
        },
        user=user,
    )

    assert result["emails"] == [{"type": "work", "primary": True, "value": "w@example.com"}]


@pytest.mark.parametrize("op", ["add", "replace"])
def test_filter_that_is_not_an_equality_and_matches_nothing_is_no_target(op: str) -> None:
    error = patch_error(USER, {"op": op, "path": 'emails[value co "nowhere"].display', "value": "x"})

    assert error.scim_type == "noTarget"
    assert "matches no value" in error.detail


def test_replace_matching_element_keeps_the_filter_equalities() -> None:
    user = patch_user({"op": "replace", "path": 'emails[type eq "home"]', "value": {"value": "b@home.org"}})

    assert emails_of(user)[1] == {"type": "home", "value": "b@home.org"}


def test_add_to_matching_element_merges_into_it() -> None:
    user = patch_user({"op": "add", "path": 'emails[type eq "home"]', "value": {"display": "Home mail"}})

    assert emails_of(user)[1] == {"value": "babs@jensen.org", "type": "home", "display": "Home mail"}


def test_filter_values_follow_case_exact() -> None:
    user = patch_user({"op": "replace", "path": 'emails[TYPE eq "WORK"].display', "value": "Work"})

    assert emails_of(user)[0]["display"] == "Work"


def test_filter_string_boolean_matches_boolean_sub_attribute() -> None:
    user = patch_user({"op": "replace", "path": 'emails[primary eq "True"].display', "value": "Main"})

    assert emails_of(user)[0]["display"] == "Main"
    assert "display" not in emails_of(user)[1]


@pytest.mark.parametrize(
    ("filter_", "remaining"),
    [
        ('value co "jensen"', []),
        ('value sw "BJ"', ["babs@jensen.org"]),
        ('value ew ".org"', ["bjensen@example.com"]),
        ('type ne "work"', ["bjensen@example.com"]),
        ("primary pr", ["babs@jensen.org"]),
        ('not (type eq "work")', ["bjensen@example.com"]),
        ('type eq "work" or type eq "home"', []),
        ('type eq "work" and value ew ".org"', ["bjensen@example.com", "babs@jensen.org"]),
        ('value gt "bb"', ["babs@jensen.org"]),
        ('emails.type eq "home"', ["bjensen@example.com"]),
    ],
)
def test_filter_operators_select_elements(filter_: str, remaining: list[str]) -> None:
    user = patch_user({"op": "remove", "path": f"emails[{filter_}]"})

    assert [e["value"] for e in user.get("emails", [])] == remaining


def test_filter_on_unknown_sub_attribute_is_invalid_filter() -> None:
    error = patch_error(USER, {"op": "remove", "path": 'emails[kind eq "work"]'})

    assert error.scim_type == "invalidFilter"
    assert "'kind' is not a sub-attribute of emails" in error.detail


def test_ordering_filter_on_boolean_is_invalid_filter() -> None:
    error = patch_error(USER, {"op": "remove", "path": "emails[primary gt true]"})

    assert error.scim_type == "invalidFilter"


def test_filter_on_single_valued_attribute_is_invalid_path() -> None:
    error = patch_error(USER, {"op": "replace", "path": 'name[givenName eq "B"].familyName', "value": "x"})

    assert error.scim_type == "invalidPath"
    assert "multi-valued" in error.detail


def test_remove_simple_value_from_simple_multi_valued_attribute() -> None:
    result = patch_group({"op": "remove", "path": f'{ENTRA_GROUP}:groupTypes[value eq "unified"]'})

    assert "groupTypes" not in result.resource[ENTRA_GROUP]


def test_replace_simple_multi_valued_attribute() -> None:
    result = patch_group({"op": "replace", "path": f"{ENTRA_GROUP}:groupTypes", "value": []})

    assert result.resource[ENTRA_GROUP] == {"description": "Sales team", "mailEnabled": True}


# --- primary ---------------------------------------------------------------------------------


def test_adding_a_primary_element_clears_the_previous_primary() -> None:
    user = patch_user(
        {
            "op": "add",
            "path": "emails",
            "value": [{"value": "new@example.com", "type": "other", "primary": True}],
        }
    )

    assert [e.get("primary") for e in emails_of(user)] == [False, None, True]


def test_setting_primary_through_a_filter_clears_the_others() -> None:
    user = patch_user({"op": "replace", "path": 'emails[type eq "home"].primary', "value": True})

    assert emails_of(user)[0]["primary"] is False
    assert emails_of(user)[1]["primary"] is True


# --- group members -----------------------------------------------------------------------------


def test_add_members_produces_a_delta_and_leaves_the_resource() -> None:
    result = patch_group(
        {
            "op": "Add",
            "path": "members",
            "value": [{"$ref": None, "value": "u-1"}, {"value": "g-2", "type": "group", "display": "Ops"}],
        }
    )

    assert result.members == MembershipDelta(add=[MemberRef("u-1"), MemberRef("g-2", "Group")])
    assert result.resource == make_group()


def test_member_without_value_is_invalid_value() -> None:
    error = patch_error(GROUP, {"op": "add", "path": "members", "value": [{"display": "Alice"}]})

    assert error.scim_type == "invalidValue"
    assert "'value'" in error.detail


def test_member_with_unknown_type_is_invalid_value() -> None:
    error = patch_error(
        GROUP, {"op": "add", "path": "members", "value": [{"value": "u-1", "type": "direct"}]}
    )

    assert error.scim_type == "invalidValue"
    assert "'User' or 'Group'" in error.detail


def test_replace_members_sets_the_full_list() -> None:
    result = patch_group({"op": "replace", "path": "members", "value": [{"value": "u-1"}, {"value": "u-2"}]})

    assert result.members == MembershipDelta(replace=[MemberRef("u-1"), MemberRef("u-2")])


def test_replace_members_with_empty_list_removes_everyone() -> None:
    assert patch_group({"op": "replace", "path": "members", "value": []}).members.replace == []


def test_remove_members_without_value_removes_everyone() -> None:
    assert patch_group({"op": "remove", "path": "members"}).members == MembershipDelta(replace=[])


def test_entra_remove_members_with_value_array_removes_only_those() -> None:
    result = patch_group({"op": "Remove", "path": "members", "value": [{"$ref": None, "value": "u-1"}]})

    assert result.members == MembershipDelta(remove=["u-1"])


def test_remove_member_by_filter() -> None:
    result = patch_group({"op": "remove", "path": 'members[value eq "u-1"]'})

    assert result.members == MembershipDelta(remove=["u-1"])


def test_remove_members_by_or_filter() -> None:
    result = patch_group({"op": "remove", "path": 'members[value eq "u-1" or value eq "u-2"]'})

    assert result.members.remove == ["u-1", "u-2"]


@pytest.mark.parametrize(
    "path",
    ['members[display eq "Alice"]', 'members[value eq "u-1" and type eq "User"]', 'members[value co "u"]'],
)
def test_other_member_filters_are_invalid_filter(path: str) -> None:
    error = patch_error(GROUP, {"op": "remove", "path": path})

    assert error.scim_type == "invalidFilter"
    assert 'members[value eq "<id>"]' in error.detail


def test_add_with_member_filter_is_invalid_filter() -> None:
    error = patch_error(GROUP, {"op": "add", "path": 'members[value eq "u-1"]', "value": [{"value": "u-1"}]})

    assert error.scim_type == "invalidFilter"


def test_pathless_add_with_members_key() -> None:
    result = patch_group({"op": "add", "value": {"Members": [{"value": "u-1"}]}})

    assert result.members == MembershipDelta(add=[MemberRef("u-1")])


def test_pathless_replace_with_members_and_display_name() -> None:
    result = patch_group({"op": "replace", "value": {"displayName": "Ops", "members": [{"value": "u-9"}]}})

    assert result.resource["displayName"] == "Ops"
    assert result.members == MembershipDelta(replace=[MemberRef("u-9")])


def test_okta_mixed_remove_and_add_in_one_request() -> None:
    result = patch_group(
        {"op": "replace", "value": {"id": GROUP_ID, "displayName": "Sales"}},
        {"op": "remove", "path": 'members[value eq "u-old"]'},
        {"op": "add", "path": "members", "value": [{"value": "u-new", "display": "New Person"}]},
    )

    assert result.members == MembershipDelta(add=[MemberRef("u-new")], remove=["u-old"])
    assert result.resource == make_group()


def test_remove_then_add_same_member_keeps_it() -> None:
    result = patch_group(
        {"op": "remove", "path": 'members[value eq "u-1"]'},
        {"op": "add", "path": "members", "value": [{"value": "u-1"}]},
    )

    assert result.members == MembershipDelta(add=[MemberRef("u-1")])


def test_add_then_remove_same_member_leaves_it_out() -> None:
    result = patch_group(
        {"op": "add", "path": "members", "value": [{"value": "u-1"}]},
        {"op": "remove", "path": 'members[value eq "u-1"]'},
    )

    assert result.members == MembershipDelta(remove=["u-1"])


def test_adds_and_removes_after_a_replace_edit_the_replacement() -> None:
    result = patch_group(
        {"op": "replace", "path": "members", "value": [{"value": "u-1"}, {"value": "u-2"}]},
        {"op": "add", "path": "members", "value": [{"value": "u-3", "type": "User"}]},
        {"op": "remove", "path": 'members[value eq "u-1"]'},
    )

    assert result.members == MembershipDelta(replace=[MemberRef("u-2"), MemberRef("u-3", "User")])


def test_replace_discards_adds_and_removes_before_it() -> None:
    result = patch_group(
        {"op": "add", "path": "members", "value": [{"value": "u-1"}]},
        {"op": "remove", "path": 'members[value eq "u-2"]'},
        {"op": "remove", "path": "members"},
    )

    assert result.members == MembershipDelta(replace=[])


def test_adding_a_member_twice_records_it_once() -> None:
    result = patch_group(
        {"op": "add", "path": "members", "value": [{"value": "u-1"}, {"value": "u-1", "type": "User"}]}
    )

    assert result.members.add == [MemberRef("u-1", "User")]


def test_members_is_not_an_attribute_of_users() -> None:
    error = patch_error(USER, {"op": "add", "path": "members", "value": [{"value": "u-1"}]})

    assert error.scim_type == "invalidPath"


# --- groups ------------------------------------------------------------------------------------


def test_clearing_group_display_name_is_invalid_value() -> None:
    error = patch_error(GROUP, {"op": "replace", "path": "displayName", "value": ""})

    assert error.scim_type == "invalidValue"


def test_removing_group_display_name_is_mutability() -> None:
    error = patch_error(GROUP, {"op": "remove", "path": "displayName"})

    assert error.scim_type == "mutability"


def test_replace_entra_group_extension_attributes() -> None:
    result = patch_group(
        {
            "op": "replace",
            "value": {f"{ENTRA_GROUP}:securityEnabled": True, f"{ENTRA_GROUP}:mailEnabled": False},
        }
    )

    assert result.resource[ENTRA_GROUP]["securityEnabled"] is True
    assert result.resource[ENTRA_GROUP]["mailEnabled"] is False


# --- ambiguous spellings -----------------------------------------------------------------------


def test_message_key_in_two_spellings_is_invalid_syntax() -> None:
    request = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "title", "value": "A"}],
        "operations": [{"op": "replace", "path": "title", "value": "B"}],
    }

    with pytest.raises(PatchError, match="'Operations' is given more than once") as excinfo:
        apply_patch(USER, make_user(), request)

    assert excinfo.value.scim_type == "invalidSyntax"


def test_attribute_in_two_spellings_is_invalid_value() -> None:
    error = patch_error(USER, {"op": "replace", "value": {"displayName": "A", "DisplayName": "B"}})

    assert error.scim_type == "invalidValue"
    assert "'displayName' twice, also as 'DisplayName'" in error.detail


def test_sub_attribute_in_two_spellings_is_invalid_value() -> None:
    error = patch_error(USER, {"op": "add", "path": "name", "value": {"givenName": "A", "GivenName": "B"}})

    assert error.scim_type == "invalidValue"


def test_a_patch_with_too_many_operations_is_refused() -> None:
    operations = [{"op": "add", "path": "emails", "value": [{"value": f"{n}@x.com"}]} for n in range(1001)]
    with pytest.raises(PatchError, match="at most 1000 operations") as caught:
        patch_user(*operations)
    assert caught.value.scim_type == "invalidValue"


def test_member_ids_in_any_case_are_one_member() -> None:
    member = "2819C223-7F76-453A-919D-413861904646"
    result = patch_group(
        {"op": "add", "path": "members", "value": [{"value": member}]},
        {"op": "remove", "path": f'members[value eq "{member.lower()}"]'},
    )
    assert result.members.add == []
    assert result.members.remove == [member.lower()]
