"""The client-dialect layer: each rewrite on the shapes Entra, the Microsoft validators and Okta send."""

import copy
from typing import Any

import pytest

from scim_api.dialects import REWRITES, Normalized, normalize_filter, normalize_patch, normalize_resource
from scim_api.schema import (
    ADSCIM_GROUP,
    CORE_GROUP,
    CORE_USER,
    ENTERPRISE_USER,
    ENTRA_GROUP,
    PATCH_OP,
    ResourceType,
    get_registry,
)

USER: ResourceType = get_registry().resource_type("User")
GROUP: ResourceType = get_registry().resource_type("Group")

USER_ID = "2819c223-7f76-453a-919d-413861904646"
GROUP_ID = "e9e30dba-f08f-4109-8486-d5c6a331660a"
MANAGER_ID = "26118915-6090-4610-87e4-49d8ca9f808d"
MEMBER_A = "0fd1b8a4-3c11-4ae1-9f4f-6e2b0c7b1a01"
MEMBER_B = "5a7c4c2e-8f6d-4d3a-a1a0-2a8f7c3e9b02"
MANAGER_PATH = f"{ENTERPRISE_USER}:manager"


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def assert_normalized(result: Normalized, body: Any, fired: list[str]) -> None:
    assert result.body == body
    assert result.fired == fired


# --- Entra default job ----------------------------------------------------------------


def test_entra_default_user_patch_is_rewritten_in_one_go() -> None:
    body = patch(
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "new@contoso.com"},
        {"op": "Replace", "path": "name.familyName", "value": "Doe-Smith"},
        {"op": "Replace", "path": f"{ENTERPRISE_USER}:employeeNumber", "value": "42"},
        {"op": "Replace", "path": "active", "value": "False"},
    )

    result = normalize_patch(body, USER, resource_id=USER_ID)

    assert_normalized(
        result,
        patch(
            {"op": "replace", "path": 'emails[type eq "work"].value', "value": "new@contoso.com"},
            {"op": "replace", "path": "name.familyName", "value": "Doe-Smith"},
            {"op": "replace", "path": f"{ENTERPRISE_USER}:employeeNumber", "value": "42"},
            {"op": "replace", "path": "active", "value": False},
        ),
        ["op-case", "string-boolean"],
    )


@pytest.mark.parametrize("op", ["Replace", "REPLACE", "rEpLaCe"])
def test_op_case_lowercases_the_op(op: str) -> None:
    result = normalize_patch(patch({"op": op, "path": "displayName", "value": "Sales EMEA"}), GROUP)

    assert_normalized(
        result, patch({"op": "replace", "path": "displayName", "value": "Sales EMEA"}), ["op-case"]
    )


def test_op_case_leaves_an_unknown_op_for_the_core() -> None:
    body = patch({"op": "Merge", "path": "displayName", "value": "Sales EMEA"})

    assert_normalized(normalize_patch(body, GROUP), body, [])


def test_message_key_case_fixes_message_and_operation_keys() -> None:
    body = {
        "Schemas": [PATCH_OP],
        "operations": [{"Op": "replace", "Path": "displayName", "Value": "Sales EMEA"}],
    }

    result = normalize_patch(body, GROUP)

    assert_normalized(
        result, patch({"op": "replace", "path": "displayName", "value": "Sales EMEA"}), ["message-key-case"]
    )


def test_message_key_case_fixes_schemas_in_a_resource_body() -> None:
    result = normalize_resource({"Schemas": [CORE_GROUP], "displayName": "Sales"}, GROUP, method="POST")

    assert_normalized(result, {"schemas": [CORE_GROUP], "displayName": "Sales"}, ["message-key-case"])


def test_message_key_case_leaves_two_spellings_of_one_key_alone() -> None:
    body = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "add", "path": "displayName", "value": "A"}],
        "operations": [{"op": "add", "path": "displayName", "value": "B"}],
    }

    result = normalize_patch(body, GROUP)

    assert result.body["Operations"] == [{"op": "add", "path": "displayName", "value": "A"}]
    assert result.fired == ["stray-keys"]


def test_string_boolean_in_a_filtered_path() -> None:
    body = patch({"op": "Add", "path": 'emails[type eq "work"].primary', "value": "True"})

    result = normalize_patch(body, USER)

    assert_normalized(
        result,
        patch({"op": "add", "path": 'emails[type eq "work"].primary', "value": True}),
        ["op-case", "string-boolean"],
    )


def test_string_boolean_inside_path_less_values_and_elements() -> None:
    body = patch(
        {
            "op": "replace",
            "value": {
                "active": "TRUE",
                "emails": [{"value": "alice@contoso.com", "type": "work", "primary": "true"}],
            },
        },
        {
            "op": "add",
            "path": "phoneNumbers",
            "value": [{"value": "+1 555 0100", "type": "work", "primary": "False"}],
        },
        {
            "op": "add",
            "path": 'addresses[type eq "work"]',
            "value": {"locality": "Redmond", "primary": "True"},
        },
    )

    result = normalize_patch(body, USER)

    assert_normalized(
        result,
        patch(
            {
                "op": "replace",
                "value": {
                    "active": True,
                    "emails": [{"value": "alice@contoso.com", "type": "work", "primary": True}],
                },
            },
            {
                "op": "add",
                "path": "phoneNumbers",
                "value": [{"value": "+1 555 0100", "type": "work", "primary": False}],
            },
            {
                "op": "add",
                "path": 'addresses[type eq "work"]',
                "value": {"locality": "Redmond", "primary": True},
            },
        ),
        ["string-boolean"],
    )


def test_string_boolean_in_a_path_filter() -> None:
    body = patch({"op": "Replace", "path": 'roles[primary eq "True"].display', "value": "Administrator"})

    result = normalize_patch(body, USER)

    assert_normalized(
        result,
        patch({"op": "replace", "path": "roles[primary eq true].display", "value": "Administrator"}),
        ["op-case", "string-boolean"],
    )


def test_string_boolean_only_touches_boolean_attributes() -> None:
    body = patch(
        {"op": "replace", "path": "title", "value": "True"},
        {"op": "replace", "path": 'emails[value eq "True"].type', "value": "work"},
    )

    assert_normalized(normalize_patch(body, USER), body, [])


def test_string_boolean_in_user_and_entra_group_bodies() -> None:
    user = {
        "schemas": [CORE_USER],
        "userName": "alice@contoso.com",
        "active": "True",
        "emails": [{"primary": "True", "type": "work", "value": "alice@contoso.com"}],
    }
    group = {
        "schemas": [CORE_GROUP, ENTRA_GROUP],
        "displayName": "Sales",
        ENTRA_GROUP: {"mailEnabled": "False", "securityEnabled": "True", "groupTypes": []},
    }

    user_result = normalize_resource(user, USER, method="POST")
    group_result = normalize_resource(group, GROUP, method="PUT", resource_id=GROUP_ID)

    assert_normalized(
        user_result,
        {
            "schemas": [CORE_USER],
            "userName": "alice@contoso.com",
            "active": True,
            "emails": [{"primary": True, "type": "work", "value": "alice@contoso.com"}],
        },
        ["string-boolean"],
    )
    assert_normalized(
        group_result,
        {
            "schemas": [CORE_GROUP, ENTRA_GROUP],
            "displayName": "Sales",
            ENTRA_GROUP: {"mailEnabled": False, "securityEnabled": True, "groupTypes": []},
        },
        ["string-boolean"],
    )


def test_manager_plain_id_becomes_an_object() -> None:
    body = patch({"op": "Add", "path": MANAGER_PATH, "value": MANAGER_ID})

    result = normalize_patch(body, USER)

    assert_normalized(
        result,
        patch({"op": "add", "path": MANAGER_PATH, "value": {"value": MANAGER_ID}}),
        ["op-case", "manager-plain-id"],
    )


@pytest.mark.parametrize("empty", ["", None])
def test_manager_replace_with_empty_value_becomes_a_remove(empty: str | None) -> None:
    body = patch({"op": "Replace", "path": MANAGER_PATH.lower(), "value": empty})

    result = normalize_patch(body, USER)

    assert_normalized(
        result,
        patch({"op": "remove", "path": MANAGER_PATH}),
        ["op-case", "attribute-name-case", "manager-plain-id"],
    )


def test_manager_plain_id_in_post_and_empty_manager_in_put() -> None:
    created = normalize_resource(
        {
            "schemas": [CORE_USER, ENTERPRISE_USER],
            "userName": "bob",
            ENTERPRISE_USER: {"manager": MANAGER_ID},
        },
        USER,
        method="POST",
    )
    replaced = normalize_resource(
        {"schemas": [CORE_USER, ENTERPRISE_USER], "userName": "bob", ENTERPRISE_USER: {"manager": ""}},
        USER,
        method="PUT",
        resource_id=USER_ID,
    )

    assert_normalized(
        created,
        {
            "schemas": [CORE_USER, ENTERPRISE_USER],
            "userName": "bob",
            ENTERPRISE_USER: {"manager": {"value": MANAGER_ID}},
        },
        ["manager-plain-id"],
    )
    assert_normalized(
        replaced,
        {"schemas": [CORE_USER, ENTERPRISE_USER], "userName": "bob", ENTERPRISE_USER: {}},
        ["manager-plain-id"],
    )


ENTRA_APP_ROLE = '{"id":"06b07648-ecfe-589f-9d2f-6325724a46ee","value":"Admin","displayName":"Administrator"}'


def test_roles_json_string_in_a_patch_value() -> None:
    body = patch({"op": "Add", "path": "roles", "value": [{"value": ENTRA_APP_ROLE, "primary": "True"}]})

    result = normalize_patch(body, USER)

    assert_normalized(
        result,
        patch(
            {
                "op": "add",
                "path": "roles",
                "value": [{"value": "Admin", "display": "Administrator", "primary": True}],
            }
        ),
        ["op-case", "string-boolean", "roles-json-string"],
    )


def test_roles_json_string_in_a_post_body() -> None:
    body = {"schemas": [CORE_USER], "userName": "carol", "roles": [{"value": ENTRA_APP_ROLE}]}

    result = normalize_resource(body, USER, method="POST")

    assert_normalized(
        result,
        {
            "schemas": [CORE_USER],
            "userName": "carol",
            "roles": [{"value": "Admin", "display": "Administrator"}],
        },
        ["roles-json-string"],
    )


def test_roles_json_string_leaves_a_role_value_that_is_not_json() -> None:
    body = patch({"op": "add", "path": "roles", "value": [{"value": "{Admin}"}, {"value": "Reader"}]})

    assert_normalized(normalize_patch(body, USER), body, [])


def test_stray_keys_are_dropped() -> None:
    body = {
        "schemas": [PATCH_OP],
        "id": GROUP_ID,
        "Operations": [{"name": "addMember", "op": "add", "path": "members", "value": [{"value": MEMBER_A}]}],
    }

    result = normalize_patch(body, GROUP, resource_id=GROUP_ID)

    assert_normalized(
        result, patch({"op": "add", "path": "members", "value": [{"value": MEMBER_A}]}), ["stray-keys"]
    )


def test_attribute_name_case_in_a_validator_post_body() -> None:
    body = {
        "schemas": [CORE_USER, ENTERPRISE_USER],
        "UserName": "Test_User_00aa00aa@contoso.com",
        "Active": True,
        "DisplayName": "BobIsAmazing",
        "Emails": [{"Primary": True, "Type": "work", "Value": "Test_User_11bb11bb@contoso.com"}],
        "Name": {"GivenName": "Bob", "FamilyName": "Smith"},
        ENTERPRISE_USER: {"Department": "Sales", "Manager": {"Value": MANAGER_ID}},
    }

    result = normalize_resource(body, USER, method="POST")

    assert_normalized(
        result,
        {
            "schemas": [CORE_USER, ENTERPRISE_USER],
            "userName": "Test_User_00aa00aa@contoso.com",
            "active": True,
            "displayName": "BobIsAmazing",
            "emails": [{"primary": True, "type": "work", "value": "Test_User_11bb11bb@contoso.com"}],
            "name": {"givenName": "Bob", "familyName": "Smith"},
            ENTERPRISE_USER: {"department": "Sales", "manager": {"value": MANAGER_ID}},
        },
        ["attribute-name-case"],
    )


def test_attribute_name_case_in_urns_paths_and_path_less_values() -> None:
    body = patch(
        {"op": "replace", "path": "Name.GivenName", "value": "Bob"},
        {"op": "replace", "path": 'Emails[Type eq "work"].Value', "value": "bob@contoso.com"},
        {"op": "replace", "path": f"{ENTERPRISE_USER.upper()}:DEPARTMENT", "value": "Sales"},
        {"op": "replace", "value": {"Active": False, ENTERPRISE_USER.lower(): {"CostCenter": "4130"}}},
    )

    result = normalize_patch(body, USER)

    assert_normalized(
        result,
        patch(
            {"op": "replace", "path": "name.givenName", "value": "Bob"},
            {"op": "replace", "path": 'emails[type eq "work"].value', "value": "bob@contoso.com"},
            {"op": "replace", "path": f"{ENTERPRISE_USER}:department", "value": "Sales"},
            {"op": "replace", "value": {"active": False, ENTERPRISE_USER: {"costCenter": "4130"}}},
        ),
        ["attribute-name-case"],
    )


def test_attribute_name_case_leaves_unknown_attributes_and_clashing_spellings() -> None:
    body = patch(
        {"op": "replace", "path": "Nickname.First", "value": "x"},
        {"op": "replace", "path": "favouriteColour", "value": "blue"},
        {"op": "replace", "value": {"active": False, "Active": True}},
    )

    assert_normalized(normalize_patch(body, USER), body, [])


def test_non_urn_schema_in_entra_group_create() -> None:
    body = {
        "schemas": [CORE_GROUP, ADSCIM_GROUP],
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "displayName": "Sales",
        "meta": {"resourceType": "Group"},
    }

    result = normalize_resource(body, GROUP, method="POST")

    assert_normalized(
        result,
        {
            "schemas": [CORE_GROUP],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "Sales",
        },
        ["non-urn-schema", "readonly-input"],
    )


def test_non_urn_schema_keeps_the_core_schema_when_only_the_non_urn_one_was_listed() -> None:
    result = normalize_resource({"schemas": [ADSCIM_GROUP], "displayName": "Sales"}, GROUP, method="POST")

    assert_normalized(result, {"schemas": [CORE_GROUP], "displayName": "Sales"}, ["non-urn-schema"])


def test_unknown_urn_schema_is_left_for_the_core() -> None:
    body = {
        "schemas": [CORE_GROUP, "urn:example:params:scim:schemas:extension:acme:2.0:Group"],
        "displayName": "x",
    }

    assert_normalized(normalize_resource(body, GROUP, method="POST"), body, [])


def test_remove_members_value_array_becomes_one_filtered_remove_per_member() -> None:
    body = patch(
        {
            "op": "Remove",
            "path": "members",
            "value": [{"$ref": None, "value": MEMBER_A}, {"$ref": None, "value": MEMBER_B}],
        }
    )

    result = normalize_patch(body, GROUP, resource_id=GROUP_ID)

    assert_normalized(
        result,
        patch(
            {"op": "remove", "path": f'members[value eq "{MEMBER_A}"]'},
            {"op": "remove", "path": f'members[value eq "{MEMBER_B}"]'},
        ),
        ["op-case", "remove-members-value-array"],
    )


def test_remove_members_without_a_value_still_clears_the_group() -> None:
    body = patch({"op": "remove", "path": "members"})

    assert_normalized(normalize_patch(body, GROUP), body, [])


def test_null_ref_is_dropped_from_added_members() -> None:
    body = patch({"op": "Add", "path": "members", "value": [{"$ref": None, "value": MEMBER_A}]})

    result = normalize_patch(body, GROUP, resource_id=GROUP_ID)

    assert_normalized(
        result,
        patch({"op": "add", "path": "members", "value": [{"value": MEMBER_A}]}),
        ["op-case", "null-ref"],
    )


def test_null_ref_is_dropped_from_post_body_members_but_not_from_single_complex_values() -> None:
    body = {
        "schemas": [CORE_GROUP],
        "displayName": "Sales",
        "members": [{"value": MEMBER_A, "$ref": None, "display": None}],
    }

    result = normalize_resource(body, GROUP, method="POST")

    assert_normalized(
        result,
        {"schemas": [CORE_GROUP], "displayName": "Sales", "members": [{"value": MEMBER_A}]},
        ["null-ref"],
    )
    # In a single complex value a null sub-attribute means "clear it" (RFC 7644 §3.5.2.3): it must stay.
    clear_middle_name = patch(
        {"op": "replace", "path": "name", "value": {"givenName": "Bob", "middleName": None}}
    )
    assert_normalized(normalize_patch(clear_middle_name, USER), clear_middle_name, [])


def test_entra_default_group_membership_and_rename() -> None:
    body = patch(
        {"op": "Add", "path": "members", "value": [{"$ref": None, "value": MEMBER_A}]},
        {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": MEMBER_B}]},
        {"op": "Replace", "path": "displayName", "value": "New name"},
    )

    result = normalize_patch(body, GROUP, resource_id=GROUP_ID)

    assert_normalized(
        result,
        patch(
            {"op": "add", "path": "members", "value": [{"value": MEMBER_A}]},
            {"op": "remove", "path": f'members[value eq "{MEMBER_B}"]'},
            {"op": "replace", "path": "displayName", "value": "New name"},
        ),
        ["op-case", "null-ref", "remove-members-value-array"],
    )


# --- Entra aadOptscim062020 job -------------------------------------------------------


def test_no_path_dotted_keys_become_one_op_per_path() -> None:
    body = patch(
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

    result = normalize_patch(body, USER)

    assert_normalized(
        result,
        patch(
            {"op": "replace", "value": {"displayName": "A"}},
            {"op": "replace", "path": "name.givenName", "value": "B"},
            {"op": "replace", "path": "name.familyName", "value": "C"},
            {"op": "replace", "path": f"{ENTERPRISE_USER}:employeeNumber", "value": "D"},
        ),
        ["no-path-dotted-keys"],
    )


def test_no_path_dotted_keys_feed_the_other_rewrites() -> None:
    body = patch(
        {
            "op": "replace",
            "value": {
                f"{ENTERPRISE_USER}:manager": MANAGER_ID,
                ENTERPRISE_USER: {"department": "Sales"},
                "active": "True",
            },
        }
    )

    result = normalize_patch(body, USER)

    assert_normalized(
        result,
        patch(
            {"op": "replace", "value": {ENTERPRISE_USER: {"department": "Sales"}, "active": True}},
            {"op": "replace", "path": f"{ENTERPRISE_USER}:manager", "value": {"value": MANAGER_ID}},
        ),
        ["no-path-dotted-keys", "manager-plain-id", "string-boolean"],
    )


def test_aadoptscim062020_member_removal_passes_through() -> None:
    body = patch({"op": "remove", "path": f'members[value eq "{MEMBER_A}"]'})

    assert_normalized(normalize_patch(body, GROUP, resource_id=GROUP_ID), body, [])


# --- Okta -----------------------------------------------------------------------------


def test_readonly_input_in_an_okta_put() -> None:
    body = {
        "schemas": [CORE_USER],
        "id": USER_ID,
        "userName": "a@example.com",
        "name": {"givenName": "A", "familyName": "B"},
        "emails": [{"primary": True, "value": "a@example.com", "type": "work"}],
        "displayName": "A B",
        "active": True,
        "groups": [{"value": GROUP_ID, "display": "Sales"}],
        "meta": {"resourceType": "User", "created": "2026-01-05T10:00:00Z", "version": 'W/"3"'},
    }

    result = normalize_resource(body, USER, method="PUT", resource_id=USER_ID)

    assert_normalized(
        result,
        {
            "schemas": [CORE_USER],
            "userName": "a@example.com",
            "name": {"givenName": "A", "familyName": "B"},
            "emails": [{"primary": True, "value": "a@example.com", "type": "work"}],
            "displayName": "A B",
            "active": True,
        },
        ["readonly-input"],
    )


def test_readonly_input_keeps_an_id_that_is_not_the_resources() -> None:
    other_id = "c3f4a7e2-0000-4000-8000-000000000000"
    put = {"schemas": [CORE_GROUP], "id": other_id, "displayName": "Sales"}
    post = {"schemas": [CORE_GROUP], "id": other_id, "displayName": "Sales"}

    assert_normalized(normalize_resource(put, GROUP, method="PUT", resource_id=GROUP_ID), put, [])
    assert_normalized(normalize_resource(post, GROUP, method="POST"), post, [])


def test_okta_user_create_drops_only_the_empty_groups() -> None:
    body = {
        "schemas": [CORE_USER],
        "userName": "a@x.com",
        "name": {"givenName": "A", "familyName": "B"},
        "emails": [{"primary": True, "value": "a@x.com", "type": "work"}],
        "displayName": "A B",
        "locale": "en-US",
        "externalId": "00u1abcdEFGHijkl2345",
        "groups": [],
        "password": "correct-horse-battery-staple",
        "active": True,
    }
    expected = {key: value for key, value in body.items() if key != "groups"}

    assert_normalized(normalize_resource(body, USER, method="POST"), expected, ["readonly-input"])


def test_patch_value_carries_id_drops_the_groups_own_id() -> None:
    body = patch(
        {"op": "replace", "value": {"id": GROUP_ID, "displayName": "Sales EMEA"}},
        {"op": "remove", "path": f'members[value eq "{MEMBER_A}"]'},
        {"op": "add", "path": "members", "value": [{"value": MEMBER_B, "display": "b@example.com"}]},
    )

    result = normalize_patch(body, GROUP, resource_id=GROUP_ID)

    assert_normalized(
        result,
        patch(
            {"op": "replace", "value": {"displayName": "Sales EMEA"}},
            {"op": "remove", "path": f'members[value eq "{MEMBER_A}"]'},
            {"op": "add", "path": "members", "value": [{"value": MEMBER_B, "display": "b@example.com"}]},
        ),
        ["patch-value-carries-id"],
    )


def test_patch_value_carrying_another_id_is_left_for_the_core() -> None:
    body = patch({"op": "replace", "value": {"id": "someone-else", "displayName": "Sales EMEA"}})

    assert_normalized(normalize_patch(body, GROUP, resource_id=GROUP_ID), body, [])


OKTA_VALID_PATCHES = [
    pytest.param(USER, patch({"op": "replace", "value": {"active": False}}), id="okta-deactivate"),
    pytest.param(USER, patch({"op": "replace", "value": {"password": "n3w-Passw0rd!"}}), id="okta-password"),
    pytest.param(
        GROUP,
        patch(
            {"op": "remove", "path": f'members[value eq "{MEMBER_A}"]'},
            {"op": "add", "path": "members", "value": [{"value": MEMBER_B, "display": "b@example.com"}]},
        ),
        id="okta-mixed-membership",
    ),
    pytest.param(
        GROUP, patch({"op": "replace", "path": "members", "value": [{"value": MEMBER_A}]}), id="okta-resync"
    ),
]


@pytest.mark.parametrize(("resource_type", "body"), OKTA_VALID_PATCHES)
def test_okta_valid_shapes_pass_through(resource_type: ResourceType, body: dict[str, Any]) -> None:
    assert_normalized(normalize_patch(body, resource_type, resource_id=GROUP_ID), body, [])


# --- strict RFC requests --------------------------------------------------------------

STRICT_PATCHES = [
    pytest.param(
        USER,
        patch(
            {"op": "add", "path": "emails", "value": [{"value": "babs@jensen.org", "type": "home"}]},
            {"op": "replace", "path": 'emails[type eq "work" and primary eq true].value', "value": "b@x.org"},
            {"op": "replace", "path": "name.familyName", "value": "Jensen"},
            {"op": "remove", "path": 'phoneNumbers[type eq "fax"]'},
            {"op": "replace", "path": "active", "value": False},
        ),
        id="rfc-user",
    ),
    pytest.param(
        USER,
        patch(
            {"op": "replace", "path": MANAGER_PATH, "value": {"value": MANAGER_ID}},
            {"op": "remove", "path": f"{ENTERPRISE_USER}:department"},
            {"op": "add", "value": {"displayName": "Babs", ENTERPRISE_USER: {"costCenter": "4130"}}},
            {
                "op": "add",
                "path": "roles",
                "value": [{"value": "Admin", "display": "Administrator", "primary": True}],
            },
            {"op": "replace", "path": "emails[primary eq true].primary", "value": False},
        ),
        id="rfc-enterprise",
    ),
    pytest.param(
        GROUP,
        patch(
            {"op": "add", "path": "members", "value": [{"value": MEMBER_A, "type": "User"}]},
            {"op": "remove", "path": f'members[value eq "{MEMBER_B}"]'},
            {"op": "replace", "path": "displayName", "value": "Sales"},
            {"op": "replace", "path": f"{ENTRA_GROUP}:securityEnabled", "value": True},
        ),
        id="rfc-group",
    ),
]


@pytest.mark.parametrize(("resource_type", "body"), STRICT_PATCHES)
def test_strict_patch_passes_through_unchanged(resource_type: ResourceType, body: dict[str, Any]) -> None:
    assert_normalized(normalize_patch(body, resource_type, resource_id=USER_ID), body, [])


STRICT_RESOURCES = [
    pytest.param(
        USER,
        {
            "schemas": [CORE_USER, ENTERPRISE_USER],
            "externalId": "bjensen",
            "userName": "bjensen@example.com",
            "name": {"familyName": "Jensen", "givenName": "Barbara", "middleName": "Jane"},
            "active": True,
            "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True}],
            "roles": [],
            "password": "t1meMa$heen",
            ENTERPRISE_USER: {"employeeNumber": "701984", "manager": {"value": MANAGER_ID}},
        },
        id="rfc-user",
    ),
    pytest.param(
        GROUP,
        {
            "schemas": [CORE_GROUP, ENTRA_GROUP],
            "displayName": "Tour Guides",
            "members": [{"value": MEMBER_A, "type": "User"}],
            ENTRA_GROUP: {"securityEnabled": True, "mailEnabled": False, "groupTypes": ["Unified"]},
        },
        id="rfc-group",
    ),
]


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize(("resource_type", "body"), STRICT_RESOURCES)
def test_strict_resource_passes_through_unchanged(
    resource_type: ResourceType, body: dict[str, Any], method: str
) -> None:
    assert_normalized(normalize_resource(body, resource_type, method=method, resource_id=USER_ID), body, [])


# --- filters --------------------------------------------------------------------------


def test_filter_string_boolean_and_name_case() -> None:
    text, fired = normalize_filter('Roles[Primary eq "True"] and active ne "FALSE"', USER)

    assert text == "roles[primary eq true] and active ne false"
    assert fired == ["attribute-name-case", "string-boolean"]


def test_filter_at_the_root_resolves_against_every_resource_type() -> None:
    assert normalize_filter('members[value eq "x"] or active eq "true"') == (
        'members[value eq "x"] or active eq true',
        ["string-boolean"],
    )


@pytest.mark.parametrize(
    "text",
    [
        'userName eq "alice@contoso.com"',
        'emails[type eq "work"].value eq "alice@contoso.com"',
        'externalId eq "00u1" and active eq true',
        'title eq "True" or not (displayName co "False")',
        f'{ENTERPRISE_USER}:manager.value eq "{MANAGER_ID}"',
        'meta.lastModified gt "2026-01-01T00:00:00Z" and emails pr',
        'unknownAttribute eq "True"',
        'userName eq "unterminated',
    ],
)
def test_strict_or_unparseable_filter_passes_through(text: str) -> None:
    assert normalize_filter(text, USER) == (text, [])


# --- the layer as a whole -------------------------------------------------------------


def test_input_is_never_mutated() -> None:
    patch_body = patch(
        {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": MEMBER_A}]},
        {
            "op": "Replace",
            "value": {"id": GROUP_ID, "displayName": "X", f"{ENTRA_GROUP}:mailEnabled": "True"},
        },
    )
    resource_body = {
        "schemas": [CORE_GROUP, ADSCIM_GROUP],
        "DisplayName": "Sales",
        "members": [{"$ref": None, "value": MEMBER_A}],
        "meta": {"resourceType": "Group"},
    }
    patch_before, resource_before = copy.deepcopy(patch_body), copy.deepcopy(resource_body)

    patch_result = normalize_patch(patch_body, GROUP, resource_id=GROUP_ID)
    resource_result = normalize_resource(resource_body, GROUP, method="POST")

    assert patch_body == patch_before
    assert resource_body == resource_before
    assert patch_result.fired == [
        "op-case",
        "remove-members-value-array",
        "no-path-dotted-keys",
        "string-boolean",
        "patch-value-carries-id",
    ]
    assert resource_result.fired == ["non-urn-schema", "readonly-input", "attribute-name-case", "null-ref"]


@pytest.mark.parametrize("body", [None, [], ["Operations"], "garbage", 42, True])
def test_a_body_that_is_not_an_object_is_returned_unchanged(body: Any) -> None:
    assert_normalized(normalize_patch(body, USER), body, [])
    assert_normalized(normalize_resource(body, USER, method="POST"), body, [])


@pytest.mark.parametrize(
    "body",
    [
        {"schemas": [PATCH_OP], "Operations": "not a list"},
        {"schemas": [PATCH_OP], "Operations": [None, 7, "add"]},
        {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "emails[type eq", "value": "x"}]},
    ],
)
def test_malformed_patch_parts_are_left_for_the_core(body: dict[str, Any]) -> None:
    assert_normalized(normalize_patch(body, USER), body, [])


def test_normalize_resource_refuses_other_methods() -> None:
    with pytest.raises(ValueError, match="POST and PUT bodies, not PATCH"):
        normalize_resource({}, USER, method="PATCH")


def test_every_rewrite_is_registered_with_a_description() -> None:
    assert sorted(REWRITES) == [
        "attribute-name-case",
        "entra-user-type",
        "manager-plain-id",
        "message-key-case",
        "no-path-dotted-keys",
        "non-urn-schema",
        "null-ref",
        "op-case",
        "patch-value-carries-id",
        "readonly-input",
        "remove-members-value-array",
        "roles-json-string",
        "stray-keys",
        "string-boolean",
    ]
    assert all(name == rewrite.name and rewrite.description for name, rewrite in REWRITES.items())


ENTRA_USER_URN = "urn:ietf:params:scim:schemas:extension:Microsoft:Entra:2.0:User"


def test_entra_user_type_in_the_extension_body_moves_to_core() -> None:
    body = {
        "schemas": [CORE_USER, ENTRA_USER_URN],
        "userName": "a@contoso.com",
        ENTRA_USER_URN: {"userType": "Guest", "mailNickname": "a"},
    }

    result = normalize_resource(body, USER, method="POST")

    assert result.body["userType"] == "Guest"
    assert result.body[ENTRA_USER_URN] == {"mailNickname": "a"}
    assert result.fired == ["entra-user-type"]


def test_entra_user_type_path_becomes_the_core_path() -> None:
    body = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": f"{ENTRA_USER_URN}:userType", "value": "Member"}],
    }

    result = normalize_patch(body, USER)

    assert result.body["Operations"] == [{"op": "replace", "path": "userType", "value": "Member"}]
    assert result.fired == ["entra-user-type"]
