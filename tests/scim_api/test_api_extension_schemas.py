"""Operator-defined extension schemas over SCIM: discovery, validation, filters, sorting, PATCH."""

from http import HTTPStatus
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from directory import extensions, services
from directory.actors import Actor
from directory.models import ExtensionSchema, User
from scim_api.filters import compile_filter
from scim_api.schema import get_registry
from tests.directory.test_admin_extension_schemas import add_attribute, schema_form
from tests.scim_api.conftest import Scim, patch_op

pytestmark = pytest.mark.django_db

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
HR = "urn:acme:scim:schemas:hr:1.0:User"
PROJECT = "urn:acme:scim:schemas:project:1.0:Group"
SYSTEM = Actor.system("test")

HR_ATTRIBUTES: list[dict[str, Any]] = [
    {"name": "badgeId", "type": "string", "required": True, "uniqueness": "server"},
    {"name": "level", "type": "integer"},
    {"name": "costRate", "type": "decimal"},
    {"name": "site", "type": "string", "canonical_values": ["Paris", "Oslo", "Lyon"]},
    {"name": "remote", "type": "boolean"},
    {"name": "startDate", "type": "dateTime"},
    {"name": "clearance", "type": "string", "mutability": "readOnly"},
    {"name": "hireId", "type": "string", "mutability": "immutable", "case_exact": True},
    {"name": "pin", "type": "string", "mutability": "writeOnly", "returned": "never"},
    {"name": "notes", "type": "string", "returned": "request"},
    {"name": "costCenterCode", "type": "string", "returned": "always"},
    {"name": "tags", "type": "string", "multi_valued": True},
]


@pytest.fixture
def hr() -> ExtensionSchema:
    return services.extension_schema_create(
        actor=SYSTEM, urn=HR, name="HR", resource_type="user", description="HR data", attributes=HR_ATTRIBUTES
    )


@pytest.fixture
def project() -> ExtensionSchema:
    return services.extension_schema_create(
        actor=SYSTEM,
        urn=PROJECT,
        name="Project",
        resource_type="group",
        attributes=[
            {"name": "code", "type": "string", "uniqueness": "server"},
            {"name": "budget", "type": "integer"},
        ],
    )


def _user(scim: Scim, user_name: str, status: int = HTTPStatus.CREATED, **hr: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [CORE, HR], "userName": user_name}
    if hr:
        body[HR] = hr
    reply = scim.post("Users", body)
    assert reply.status == status, reply
    return reply.body  # type: ignore[no-any-return]


def _ids(reply: Any) -> list[str]:
    assert reply.status == HTTPStatus.OK, reply
    return [resource["id"] for resource in reply.body["Resources"]]


# --- discovery -----------------------------------------------------------------------------


def test_schemas_and_resource_types_show_a_defined_schema(scim: Scim, hr: ExtensionSchema) -> None:
    listed = scim.get("Schemas")
    ids = [schema["id"] for schema in listed.body["Resources"]]
    assert HR in ids

    reply = scim.get(f"Schemas/{HR.upper()}")
    assert reply.status == HTTPStatus.OK, reply
    assert reply.body["id"] == HR
    assert reply.body["name"] == "HR"
    assert reply.body["description"] == "HR data"
    attributes = {attribute["name"]: attribute for attribute in reply.body["attributes"]}
    assert list(attributes) == [attribute["name"] for attribute in HR_ATTRIBUTES]
    assert attributes["badgeId"] == {
        "name": "badgeId",
        "type": "string",
        "multiValued": False,
        "description": "badgeId",
        "required": True,
        "mutability": "readWrite",
        "returned": "default",
        "caseExact": False,
        "uniqueness": "server",
    }
    assert attributes["site"]["canonicalValues"] == ["Paris", "Oslo", "Lyon"]
    assert attributes["level"]["type"] == "integer"
    assert "caseExact" not in attributes["level"]
    assert attributes["pin"]["mutability"] == "writeOnly"
    assert attributes["pin"]["returned"] == "never"
    assert attributes["tags"]["multiValued"] is True

    user_type = scim.get("ResourceTypes/User").body
    assert {"schema": HR, "required": False} in user_type["schemaExtensions"]
    group_type = scim.get("ResourceTypes/Group").body
    assert HR not in [extension["schema"] for extension in group_type["schemaExtensions"]]


def test_a_required_extension_is_advertised_and_enforced_on_create(scim: Scim, hr: ExtensionSchema) -> None:
    services.extension_schema_update(actor=SYSTEM, schema_id=hr.pk, required=True)

    user_type = scim.get("ResourceTypes/User").body
    assert {"schema": HR, "required": True} in user_type["schemaExtensions"]
    reply = scim.post("Users", {"schemas": [CORE], "userName": "nobadge"})
    assert reply.status == HTTPStatus.BAD_REQUEST, reply
    assert reply.body["scimType"] == "invalidValue"
    assert HR in reply.body["detail"]


def test_removed_schema_disappears_from_discovery(scim: Scim, hr: ExtensionSchema) -> None:
    services.extension_schema_delete(actor=SYSTEM, schema_id=hr.pk)

    assert scim.get(f"Schemas/{HR}").status == HTTPStatus.NOT_FOUND
    assert HR not in [e["schema"] for e in scim.get("ResourceTypes/User").body["schemaExtensions"]]


# --- create and validation ---------------------------------------------------------------


def test_create_stores_values_with_canonical_names_and_spellings(scim: Scim, hr: ExtensionSchema) -> None:
    reply = scim.post(
        "Users",
        {
            "schemas": [CORE, HR.lower()],
            "userName": "ada",
            HR.lower(): {"BADGEID": "B-1", "Level": 3, "site": "paris", "remote": True, "tags": ["a", "b"]},
        },
    )

    assert reply.status == HTTPStatus.CREATED, reply
    assert HR in reply.body["schemas"]
    assert reply.body[HR] == {
        "badgeId": "B-1",
        "level": 3,
        "site": "Paris",
        "remote": True,
        "tags": ["a", "b"],
    }
    assert User.objects.get(user_name="ada").extensions == {HR: reply.body[HR]}


@pytest.mark.parametrize(
    ("values", "detail"),
    [
        ({"badgeId": "B", "level": "3"}, "level must be an integer"),
        ({"badgeId": "B", "level": 2.5}, "level must be an integer"),
        ({"badgeId": "B", "costRate": "high"}, "costRate must be a number"),
        ({"badgeId": "B", "remote": "yes"}, "remote must be a boolean"),
        ({"badgeId": "B", "startDate": "last tuesday"}, "startDate must be an xsd:dateTime"),
        ({"badgeId": "B", "site": "Berlin"}, "site must be one of 'Paris', 'Oslo', 'Lyon'"),
        ({"badgeId": "B", "tags": [1]}, "tags must be a string"),
        ({"badgeId": ["B"]}, "badgeId is single-valued"),
        ({"badgeId": "B", "unknown": 1}, "'unknown' is not an attribute of " + HR),
        ({"level": 1}, f"{HR}:badgeId is required"),
    ],
)
def test_create_with_a_bad_value_is_400_invalid_value_and_writes_nothing(
    scim: Scim, hr: ExtensionSchema, values: dict[str, Any], detail: str
) -> None:
    reply = scim.post("Users", {"schemas": [CORE, HR], "userName": "bad", HR: values})

    assert reply.status == HTTPStatus.BAD_REQUEST, reply
    assert reply.body["scimType"] == "invalidValue"
    assert detail in reply.body["detail"]
    assert not User.objects.filter(user_name="bad").exists()


def test_unique_attribute_conflict_is_409_ignoring_case(scim: Scim, hr: ExtensionSchema) -> None:
    _user(scim, "first", badgeId="B-7")

    reply = scim.post("Users", {"schemas": [CORE, HR], "userName": "second", HR: {"badgeId": "b-7"}})

    assert reply.status == HTTPStatus.CONFLICT, reply
    assert reply.body["scimType"] == "uniqueness"
    assert "badgeId" in reply.body["detail"]
    assert not User.objects.filter(user_name="second").exists()


def test_read_only_values_are_ignored_on_input_and_kept(scim: Scim, hr: ExtensionSchema) -> None:
    body = _user(scim, "ro", badgeId="B-1", clearance="top")
    assert "clearance" not in body[HR]
    user = User.objects.get(pk=body["id"])
    services.user_update(
        actor=SYSTEM, user_id=user.pk, extensions={HR: {"badgeId": "B-1", "clearance": "secret"}}
    )

    reply = scim.put(
        f"Users/{body['id']}",
        {"schemas": [CORE, HR], "userName": "ro", HR: {"badgeId": "B-2", "clearance": "none"}},
    )

    assert reply.status == HTTPStatus.OK, reply
    assert reply.body[HR] == {"badgeId": "B-2", "clearance": "secret"}


def test_immutable_value_may_be_set_once_but_not_changed(scim: Scim, hr: ExtensionSchema) -> None:
    body = _user(scim, "imm", badgeId="B-1")
    path = f"Users/{body['id']}"
    first = scim.put(path, {"schemas": [CORE, HR], "userName": "imm", HR: {"badgeId": "B-1", "hireId": "H1"}})
    assert first.status == HTTPStatus.OK, first

    put = scim.put(path, {"schemas": [CORE, HR], "userName": "imm", HR: {"badgeId": "B-1", "hireId": "H2"}})
    assert put.status == HTTPStatus.BAD_REQUEST, put
    assert put.body["scimType"] == "mutability"
    patch = scim.patch(path, patch_op({"op": "replace", "path": f"{HR}:hireId", "value": "H3"}))
    assert patch.status == HTTPStatus.BAD_REQUEST, patch
    assert patch.body["scimType"] == "mutability"
    same = scim.put(path, {"schemas": [CORE, HR], "userName": "imm", HR: {"badgeId": "B-1"}})
    assert same.status == HTTPStatus.OK, same
    assert same.body[HR]["hireId"] == "H1"


def test_put_that_leaves_the_extension_out_keeps_it(scim: Scim, hr: ExtensionSchema) -> None:
    body = _user(scim, "keep", badgeId="B-1", level=2)

    reply = scim.put(f"Users/{body['id']}", {"schemas": [CORE], "userName": "keep", "title": "Engineer"})

    assert reply.status == HTTPStatus.OK, reply
    assert reply.body[HR] == {"badgeId": "B-1", "level": 2}


# --- returned ----------------------------------------------------------------------------------


def test_returned_never_request_and_always(scim: Scim, hr: ExtensionSchema) -> None:
    body = _user(scim, "ret", badgeId="B-1", pin="1234", notes="hello", costCenterCode="CC1", level=1)
    path = f"Users/{body['id']}"
    assert body[HR] == {"badgeId": "B-1", "costCenterCode": "CC1", "level": 1}
    assert User.objects.get(pk=body["id"]).extensions[HR]["pin"] == "1234"

    asked = scim.get(path, attributes=f"{HR}:notes,{HR}:pin").body
    assert asked[HR] == {"notes": "hello", "costCenterCode": "CC1"}
    only_name = scim.get(path, attributes="userName").body
    assert only_name[HR] == {"costCenterCode": "CC1"}
    excluded = scim.get(path, excludedAttributes=f"{HR}:costCenterCode,{HR}:level").body
    assert excluded[HR] == {"badgeId": "B-1", "costCenterCode": "CC1"}
    listed = scim.get("Users", filter='userName eq "ret"').body["Resources"][0]
    assert listed[HR] == {"badgeId": "B-1", "costCenterCode": "CC1", "level": 1}


def test_write_only_value_survives_a_patch_that_never_saw_it(scim: Scim, hr: ExtensionSchema) -> None:
    body = _user(scim, "wo", badgeId="B-1", pin="1234")

    reply = scim.patch(f"Users/{body['id']}", patch_op({"op": "replace", "path": f"{HR}:level", "value": 4}))

    assert reply.status == HTTPStatus.OK, reply
    assert User.objects.get(pk=body["id"]).extensions[HR] == {"badgeId": "B-1", "pin": "1234", "level": 4}


# --- filters and sorting ------------------------------------------------------------------------


@pytest.fixture
def people(scim: Scim, hr: ExtensionSchema) -> dict[str, str]:
    rows = {
        "ann": {
            "tags": ["red"],
            "badgeId": "A-100",
            "level": 1,
            "costRate": 10.5,
            "remote": True,
            "startDate": "2020-01-01T00:00:00Z",
        },
        "ben": {
            "badgeId": "B-200",
            "level": 3,
            "costRate": 99,
            "remote": False,
            "startDate": "2023-06-01T12:00:00+02:00",
        },
        "cat": {"badgeId": "c-300", "level": 2, "site": "Oslo", "tags": ["Blue", "green"], "pin": "42"},
        "dan": {"badgeId": "D-400"},
    }
    return {name: _user(scim, name, **values)["id"] for name, values in rows.items()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f'{HR}:badgeId eq "b-200"', ["ben"]),
        (f'{HR.upper()}:BADGEID eq "B-200"', ["ben"]),
        (f'{HR}:badgeId co "00"', ["ann", "ben", "cat", "dan"]),
        (f'{HR}:badgeId sw "c"', ["cat"]),
        (f"{HR}:level gt 1", ["ben", "cat"]),
        (f"{HR}:level ge 2 and {HR}:level lt 3", ["cat"]),
        (f"{HR}:level ne 2", ["ann", "ben", "dan"]),
        (f"{HR}:level pr", ["ann", "ben", "cat"]),
        (f"not ({HR}:level pr)", ["dan"]),
        (f"{HR}:costRate le 10.5", ["ann"]),
        (f"{HR}:costRate gt 50", ["ben"]),
        (f"{HR}:remote eq true", ["ann"]),
        (f"{HR}:remote eq false", ["ben"]),
        (f'{HR}:startDate gt "2021-01-01T00:00:00Z"', ["ben"]),
        (f'{HR}:site eq "oslo"', ["cat"]),
        (f'{HR}:tags eq "blue"', ["cat"]),
        (f'{HR}:tags sw "GR"', ["cat"]),
        (f'{HR}:tags ne "red"', ["ben", "cat", "dan"]),
        (f"{HR}:tags pr", ["ann", "cat"]),
        (f'{HR}:tags eq "red" or {HR}:tags eq "green"', ["ann", "cat"]),
    ],
)
def test_filters_on_custom_attributes(
    scim: Scim, people: dict[str, str], text: str, expected: list[str]
) -> None:
    reply = scim.get("Users", filter=text, sortBy="userName")

    assert _ids(reply) == [people[name] for name in expected]


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        (f'{HR}:level gt "high"', "expected a number"),
        (f'{HR}:level co "1"', "'co' operator cannot be used"),
        (f'{HR}:pin eq "42"', "cannot be used in a filter"),
        (f'{HR}:tags[value eq "a"]', "is not a complex attribute"),
        (f'{HR}:nothing eq "a"', "is not an attribute"),
    ],
)
def test_bad_filters_on_custom_attributes_are_400(
    scim: Scim, people: dict[str, str], text: str, detail: str
) -> None:
    reply = scim.get("Users", filter=text)

    assert reply.status == HTTPStatus.BAD_REQUEST, reply
    assert reply.body["scimType"] == "invalidFilter"
    assert detail in reply.body["detail"]


def test_sort_by_custom_attributes_puts_missing_values_last(scim: Scim, people: dict[str, str]) -> None:
    ascending = _ids(scim.get("Users", sortBy=f"{HR}:level"))
    descending = _ids(scim.get("Users", sortBy=f"{HR}:LEVEL", sortOrder="descending"))
    by_badge = _ids(scim.get("Users", sortBy=f"{HR}:badgeId", sortOrder="descending"))

    assert ascending == [people[name] for name in ("ann", "cat", "ben", "dan")]
    assert descending == [people[name] for name in ("ben", "cat", "ann", "dan")]
    assert by_badge == [people[name] for name in ("dan", "cat", "ben", "ann")]
    for unsortable in ("tags", "pin"):
        reply = scim.get("Users", sortBy=f"{HR}:{unsortable}")
        assert reply.status == HTTPStatus.BAD_REQUEST, reply
        assert reply.body["scimType"] == "invalidValue"


def test_filter_query_count_is_one_select_with_a_schema_defined(scim: Scim, people: dict[str, str]) -> None:
    scim.get("Users")  # warm-up: the first request of a client also records its last use
    with CaptureQueriesContext(connection) as captured:
        reply = scim.get("Users", filter=f"{HR}:level gt 1", sortBy=f"{HR}:level")
    assert _ids(reply) == [people["cat"], people["ben"]]
    selects = [q["sql"] for q in captured.captured_queries if "directory_extension" in q["sql"]]
    assert selects == []  # the definitions come from the process's cache


# --- PATCH ---------------------------------------------------------------------------------------


def test_patch_with_urn_path_without_path_and_on_the_extension(scim: Scim, hr: ExtensionSchema) -> None:
    body = _user(scim, "pat", badgeId="B-1")
    path = f"Users/{body['id']}"

    with_path = scim.patch(path, patch_op({"op": "add", "path": f"{HR}:Level", "value": 5}))
    assert with_path.status == HTTPStatus.OK, with_path
    assert with_path.body[HR] == {"badgeId": "B-1", "level": 5}

    without_path = scim.patch(
        path, patch_op({"op": "replace", "value": {f"{HR}:site": "lyon", HR: {"remote": True}}})
    )
    assert without_path.status == HTTPStatus.OK, without_path
    assert without_path.body[HR] == {"badgeId": "B-1", "level": 5, "site": "Lyon", "remote": True}

    on_extension = scim.patch(
        path, patch_op({"op": "replace", "path": HR, "value": {"level": 6, "tags": ["x"]}})
    )
    assert on_extension.status == HTTPStatus.OK, on_extension
    assert on_extension.body[HR]["level"] == 6
    assert on_extension.body[HR]["tags"] == ["x"]

    removed = scim.patch(path, patch_op({"op": "remove", "path": f"{HR}:level"}))
    assert removed.status == HTTPStatus.OK, removed
    assert "level" not in removed.body[HR]
    assert User.objects.get(pk=body["id"]).version == 5


@pytest.mark.parametrize(
    ("operation", "status", "scim_type"),
    [
        ({"op": "replace", "path": f"{HR}:level", "value": "five"}, 400, "invalidValue"),
        ({"op": "replace", "path": f"{HR}:site", "value": "Rome"}, 400, "invalidValue"),
        ({"op": "replace", "path": f"{HR}:clearance", "value": "top"}, 400, "mutability"),
        ({"op": "remove", "path": f"{HR}:badgeId"}, 400, "mutability"),
        ({"op": "replace", "path": f"{HR}:badgeId", "value": "TAKEN"}, 409, "uniqueness"),
        ({"op": "replace", "path": f"{HR}:nothing", "value": "x"}, 400, "invalidPath"),
    ],
)
def test_bad_patches_on_custom_attributes_change_nothing(
    scim: Scim, hr: ExtensionSchema, operation: dict[str, Any], status: int, scim_type: str
) -> None:
    _user(scim, "other", badgeId="taken")
    body = _user(scim, "target", badgeId="B-1")

    reply = scim.patch(f"Users/{body['id']}", patch_op(operation))

    assert reply.status == status, reply
    assert reply.body["scimType"] == scim_type
    user = User.objects.get(pk=body["id"])
    assert user.version == 1
    assert user.extensions == {HR: {"badgeId": "B-1"}}


# --- groups --------------------------------------------------------------------------------------


def test_group_extension_create_filter_sort_and_patch(scim: Scim, project: ExtensionSchema) -> None:
    ids = []
    for name, code, budget in (("Apollo", "AP", 300), ("Gemini", "GE", 100), ("Mercury", "ME", 200)):
        reply = scim.post(
            "Groups",
            {
                "schemas": [CORE_GROUP, PROJECT],
                "displayName": name,
                PROJECT: {"code": code, "budget": budget},
            },
        )
        assert reply.status == HTTPStatus.CREATED, reply
        assert reply.body[PROJECT] == {"code": code, "budget": budget}
        ids.append(reply.body["id"])

    assert _ids(scim.get("Groups", filter=f"{PROJECT}:budget ge 200", sortBy=f"{PROJECT}:budget")) == [
        ids[2],
        ids[0],
    ]
    clash = scim.post(
        "Groups", {"schemas": [CORE_GROUP, PROJECT], "displayName": "Other", PROJECT: {"code": "ap"}}
    )
    assert clash.status == HTTPStatus.CONFLICT, clash
    patched = scim.patch(
        f"Groups/{ids[1]}", patch_op({"op": "replace", "path": f"{PROJECT}:budget", "value": 500})
    )
    assert patched.status == HTTPStatus.NO_CONTENT, patched
    assert _ids(scim.get("Groups", filter=f"{PROJECT}:budget gt 400")) == [ids[1]]


# --- the proof: defined in the admin, used over SCIM ------------------------------------------


def test_a_schema_defined_in_the_admin_is_used_over_scim(admin_client_logged_in: Any, scim: Scim) -> None:
    urn = "urn:example:scim:schemas:badges:1.0:User"
    form = schema_form(urn=urn, name="Badges")
    add_attribute(form, name="badgeId", required="on", uniqueness="server")
    add_attribute(form, name="level", type="integer")
    add_attribute(form, name="site", canonical_values="Paris\nOslo")
    saved = admin_client_logged_in.post(reverse("admin:directory_extensionschema_add"), form)
    assert saved.status_code == HTTPStatus.FOUND, saved.content.decode()[:3000]

    assert scim.get(f"Schemas/{urn}").body["attributes"][0]["uniqueness"] == "server"
    assert {"schema": urn, "required": False} in scim.get("ResourceTypes/User").body["schemaExtensions"]

    ids = {}
    for name, badge, level in (("ann", "A-1", 1), ("ben", "B-2", 3), ("cat", "C-3", 2)):
        created = scim.post(
            "Users", {"schemas": [CORE, urn], "userName": name, urn: {"badgeId": badge, "level": level}}
        )
        assert created.status == HTTPStatus.CREATED, created
        assert created.body[urn] == {"badgeId": badge, "level": level}
        ids[name] = created.body["id"]

    assert _ids(scim.get("Users", filter=f'{urn}:badgeId eq "b-2"')) == [ids["ben"]]
    assert _ids(scim.get("Users", filter=f'{urn}:badgeId co "-"', sortBy="userName")) == list(ids.values())
    assert _ids(scim.get("Users", filter=f"{urn}:level gt 1", sortBy="userName")) == [ids["ben"], ids["cat"]]
    assert _ids(scim.get("Users", sortBy=f"{urn}:level", sortOrder="descending")) == [
        ids["ben"],
        ids["cat"],
        ids["ann"],
    ]

    with_path = scim.patch(
        f"Users/{ids['ann']}", patch_op({"op": "replace", "path": f"{urn}:level", "value": 9})
    )
    assert with_path.status == HTTPStatus.OK, with_path
    without_path = scim.patch(
        f"Users/{ids['ann']}", patch_op({"op": "add", "value": {urn: {"site": "oslo"}}})
    )
    assert without_path.status == HTTPStatus.OK, without_path
    assert without_path.body[urn] == {"badgeId": "A-1", "level": 9, "site": "Oslo"}
    assert _ids(scim.get("Users", filter=f"{urn}:level ge 9")) == [ids["ann"]]

    errors = [
        (scim.post("Users", {"userName": "d", urn: {"badgeId": "D", "level": "high"}}), 400, "invalidValue"),
        (scim.post("Users", {"userName": "e", urn: {"level": 1}}), 400, "invalidValue"),
        (scim.post("Users", {"userName": "f", urn: {"badgeId": "a-1"}}), 409, "uniqueness"),
        (scim.post("Users", {"userName": "g", urn: {"badgeId": "G", "site": "Rome"}}), 400, "invalidValue"),
        (
            scim.patch(
                f"Users/{ids['ben']}", patch_op({"op": "replace", "path": f"{urn}:badgeId", "value": "C-3"})
            ),
            409,
            "uniqueness",
        ),
    ]
    for reply, status, scim_type in errors:
        assert (reply.status, reply.body["scimType"]) == (status, scim_type), reply
    assert User.objects.count() == 3


def test_hot_get_adds_no_query_with_a_schema_defined(scim: Scim) -> None:
    user = services.user_create(actor=SYSTEM, user_name="hot")
    scim.get("Users")  # warm-up: the first request of a client also records its last use

    def queries() -> int:
        scim.get(f"Users/{user.pk}")  # after a definition change, the first request reloads it
        with CaptureQueriesContext(connection) as captured:
            assert scim.get(f"Users/{user.pk}").status == HTTPStatus.OK
            assert scim.get("Users", filter='userName eq "hot"').status == HTTPStatus.OK
        return len(captured)

    without = queries()
    schema = services.extension_schema_create(
        actor=SYSTEM, urn=HR, name="HR", resource_type="user", attributes=HR_ATTRIBUTES
    )
    services.user_update(actor=SYSTEM, user_id=user.pk, extensions={HR: {"badgeId": "B", "level": 1}})
    assert queries() == without
    services.extension_schema_delete(actor=SYSTEM, schema_id=schema.pk)
    assert queries() == without


def test_bulk_creates_with_a_unique_custom_attribute_fail_one_by_one(scim: Scim, hr: ExtensionSchema) -> None:
    operations = [
        {
            "method": "POST",
            "path": "/Users",
            "bulkId": f"u{n}",
            "data": {"schemas": [CORE, HR], "userName": f"bulk{n}", HR: {"badgeId": badge}},
        }
        for n, badge in enumerate(["X-1", "X-2", "x-1"])
    ]

    reply = scim.post(
        "Bulk", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": operations}
    )

    assert reply.status == HTTPStatus.OK, reply
    assert [operation["status"] for operation in reply.body["Operations"]] == ["201", "201", "409"]
    assert sorted(User.objects.values_list("user_name", flat=True)) == ["bulk0", "bulk1"]


@pytest.mark.postgres
def test_filters_on_custom_attributes_use_their_expression_indexes(hr: ExtensionSchema) -> None:
    User.objects.bulk_create(
        [
            User(
                user_name=f"u{n}",
                extensions={HR: {"badgeId": f"Badge-{n}", "level": n % 1000, "costRate": n / 7}},
            )
            for n in range(5000)
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {User._meta.db_table}")
    user_type = get_registry().resource_type("User")
    indexes = {attribute.name: extensions.index_name(attribute.pk) for attribute in hr.attributes.all()}

    by_badge = User.objects.filter(compile_filter(f'{HR}:badgeId eq "BADGE-4242"', user_type))
    by_level = User.objects.filter(compile_filter(f"{HR}:level ge 998", user_type))
    by_rate = User.objects.filter(compile_filter(f"{HR}:costRate lt 0.5", user_type))

    assert [user.user_name for user in by_badge] == ["u4242"]
    assert sorted(user.user_name for user in by_level) == sorted(
        f"u{n}" for n in range(5000) if n % 1000 >= 998
    )
    assert sorted(user.user_name for user in by_rate) == ["u0", "u1", "u2", "u3"]
    assert indexes["badgeId"] in by_badge.explain()
    assert indexes["level"] in by_level.explain()
    assert indexes["costRate"] in by_rate.explain()


def test_values_stored_before_the_schema_was_declared_do_not_block_writes(scim: Scim) -> None:
    user = services.user_create(actor=SYSTEM, user_name="early", extensions={HR: {"level": "senior", "x": 1}})
    services.extension_schema_create(
        actor=SYSTEM, urn=HR, name="HR", resource_type="user", attributes=HR_ATTRIBUTES
    )
    path = f"Users/{user.pk}"

    patched = scim.patch(path, patch_op({"op": "add", "path": f"{HR}:badgeId", "value": "E-1"}))
    assert patched.status == HTTPStatus.OK, patched
    assert patched.body[HR] == {"level": "senior", "x": 1, "badgeId": "E-1"}
    echoed = scim.put(path, {key: value for key, value in patched.body.items() if key != "meta"})
    assert echoed.status == HTTPStatus.OK, echoed
    new_unknown = scim.put(path, {"schemas": [CORE, HR], "userName": "early", HR: {"badgeId": "E-1", "y": 2}})
    assert new_unknown.status == HTTPStatus.BAD_REQUEST, new_unknown
    assert "'y' is not an attribute" in new_unknown.body["detail"]
    bad_type = scim.patch(path, patch_op({"op": "replace", "path": f"{HR}:level", "value": "junior"}))
    assert bad_type.status == HTTPStatus.BAD_REQUEST, bad_type
