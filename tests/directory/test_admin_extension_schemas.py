"""Extension schemas in the operator admin: defining them, their values on user and group pages, removal."""

import json
from http import HTTPStatus
from typing import Any

import pytest
from django.urls import reverse

from directory import extensions, services
from directory.actors import Actor
from directory.models import AuditEntry, ChangeEvent, ExtensionDataExport, ExtensionSchema, Group, User
from tests.directory.test_admin import _user_form

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")
HR = "urn:acme:scim:schemas:hr:1.0:User"
TEAM = "urn:acme:scim:schemas:team:1.0:Group"


def schema_form(**fields: str) -> dict[str, Any]:
    """The POST body of the extension schema add/change form, with no attribute rows yet."""
    return {
        "urn": HR,
        "name": "HR",
        "resource_type": "user",
        "description": "",
        "attributes-TOTAL_FORMS": "0",
        "attributes-INITIAL_FORMS": "0",
        "attributes-MIN_NUM_FORMS": "0",
        "attributes-MAX_NUM_FORMS": "1000",
        **fields,
    }


def add_attribute(form: dict[str, Any], **fields: str) -> None:
    index = int(form["attributes-TOTAL_FORMS"])
    form["attributes-TOTAL_FORMS"] = str(index + 1)
    row = {
        "type": "string",
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
        "canonical_values": "",
        "description": "",
        **fields,
    }
    form.update({f"attributes-{index}-{name}": value for name, value in row.items()})


def _existing_schema_form(schema: ExtensionSchema, **fields: str) -> dict[str, Any]:
    """The change form of `schema` as the browser sends it back untouched (fixed fields are disabled)."""
    form = schema_form(name=schema.name, description=schema.description, **fields)
    del form["urn"], form["resource_type"]
    attributes = list(schema.attributes.order_by("position"))
    form["attributes-INITIAL_FORMS"] = str(len(attributes))
    for attribute in attributes:
        index = int(form["attributes-TOTAL_FORMS"])
        add_attribute(
            form,
            id=str(attribute.pk),
            schema=str(schema.pk),
            mutability=attribute.mutability,
            returned=attribute.returned,
            uniqueness=attribute.uniqueness,
            canonical_values="\n".join(attribute.canonical_values),
        )
        for flag in ("required", "case_exact"):
            if getattr(attribute, flag):
                form[f"attributes-{index}-{flag}"] = "on"
    return form


def _schema() -> ExtensionSchema:
    return services.extension_schema_create(
        actor=SYSTEM,
        urn=HR,
        name="HR",
        resource_type="user",
        attributes=[
            {"name": "badgeId", "uniqueness": "server"},
            {"name": "level", "type": "integer"},
            {"name": "site", "canonical_values": ["Paris", "Oslo"]},
            {"name": "remote", "type": "boolean"},
            {"name": "tags", "multi_valued": True},
            {"name": "pin", "mutability": "writeOnly", "returned": "never"},
        ],
    )


def _field(schema: ExtensionSchema, name: str) -> str:
    return f"extension_{schema.attributes.get(name=name).pk}"


# --- defining schemas -------------------------------------------------------------------------


def test_adding_a_schema_with_attributes_goes_through_the_service(admin_client_logged_in: Any) -> None:
    form = schema_form(description="HR data")
    add_attribute(form, name="badgeId", required="on", uniqueness="server")
    add_attribute(form, name="site", canonical_values="Paris\nOslo\n")
    add_attribute(form, name="level", type="integer")

    response = admin_client_logged_in.post(reverse("admin:directory_extensionschema_add"), form)

    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:3000]
    schema = ExtensionSchema.objects.get(urn=HR)
    assert [
        (a.name, a.type, a.required, a.uniqueness, a.canonical_values) for a in schema.attributes.all()
    ] == [
        ("badgeId", "string", True, "server", []),
        ("site", "string", False, "none", ["Paris", "Oslo"]),
        ("level", "integer", False, "none", []),
    ]
    assert AuditEntry.objects.get(object_id=schema.pk).actor_name == "operator"
    assert extensions.definitions().schema(HR) is not None


@pytest.mark.parametrize(
    ("urn", "attribute", "error"),
    [
        ("urn:ietf:params:scim:schemas:core:2.0:User", {"name": "x"}, "server defines itself"),
        (HR, {"name": "bad name"}, "starts with a letter"),
        (HR, {"name": "pin", "mutability": "writeOnly"}, "returned = never"),
        (HR, {"name": "n", "type": "integer", "canonical_values": "1"}, "string and reference"),
    ],
)
def test_bad_definitions_are_form_errors(
    admin_client_logged_in: Any, urn: str, attribute: dict[str, str], error: str
) -> None:
    form = schema_form(urn=urn)
    add_attribute(form, **attribute)

    response = admin_client_logged_in.post(reverse("admin:directory_extensionschema_add"), form)

    assert response.status_code == HTTPStatus.OK
    assert error in response.content.decode()
    assert not ExtensionSchema.objects.exists()


def test_two_attributes_of_one_name_are_a_form_error(admin_client_logged_in: Any) -> None:
    form = schema_form()
    add_attribute(form, name="badge")
    add_attribute(form, name="BADGE")

    response = admin_client_logged_in.post(reverse("admin:directory_extensionschema_add"), form)

    assert response.status_code == HTTPStatus.OK
    assert "Attribute names must differ (ignoring case): badge" in response.content.decode()


def test_urn_resource_type_and_fixed_attribute_fields_cannot_change(admin_client_logged_in: Any) -> None:
    schema = _schema()
    url = reverse("admin:directory_extensionschema_change", args=[schema.pk])
    form = _existing_schema_form(schema, urn="urn:acme:other", resource_type="group")
    form["attributes-1-type"] = "string"  # level: disabled, so ignored

    response = admin_client_logged_in.post(url, form)

    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:3000]
    schema.refresh_from_db()
    assert (schema.urn, schema.resource_type) == (HR, "user")
    assert schema.attributes.get(name="level").type == "integer"


def test_making_an_attribute_unique_over_repeated_values_is_a_form_error(admin_client_logged_in: Any) -> None:
    schema = _schema()
    for name in ("a", "b"):
        services.user_create(actor=SYSTEM, user_name=name, extensions={HR: {"level": 2}})
    form = _existing_schema_form(schema)
    form["attributes-1-uniqueness"] = "server"

    response = admin_client_logged_in.post(
        reverse("admin:directory_extensionschema_change", args=[schema.pk]), form
    )

    assert response.status_code == HTTPStatus.OK
    assert "Two users already hold the same level" in response.content.decode()
    assert schema.attributes.get(name="level").uniqueness == "none"


def test_removing_an_attribute_that_holds_values_needs_confirmation(admin_client_logged_in: Any) -> None:
    schema = _schema()
    user = services.user_create(actor=SYSTEM, user_name="ada", extensions={HR: {"badgeId": "A", "level": 2}})
    url = reverse("admin:directory_extensionschema_change", args=[schema.pk])
    form = _existing_schema_form(schema)
    form["attributes-1-DELETE"] = "on"

    refused = admin_client_logged_in.post(url, form)

    assert refused.status_code == HTTPStatus.OK
    assert "1 user(s) hold values of level" in refused.content.decode()
    assert schema.attributes.filter(name="level").exists()

    confirmed = admin_client_logged_in.post(url, {**form, "confirm_removal": "on"}, follow=True)

    assert confirmed.status_code == HTTPStatus.OK
    assert "a copy is kept as extension data export" in confirmed.content.decode()
    assert not schema.attributes.filter(name="level").exists()
    assert User.objects.get(pk=user.pk).extensions == {HR: {"badgeId": "A"}}
    export = ExtensionDataExport.objects.get()
    assert (export.attributes, export.data["users"]) == (["level"], {str(user.pk): {"level": 2}})


# --- deleting a schema ----------------------------------------------------------------------------


def test_delete_asks_with_the_number_of_holders_then_exports_and_strips(admin_client_logged_in: Any) -> None:
    schema = _schema()
    ada = services.user_create(actor=SYSTEM, user_name="ada", extensions={HR: {"badgeId": "A", "pin": "1"}})
    services.user_create(actor=SYSTEM, user_name="bob", extensions={HR: {"level": 3}})
    services.user_create(actor=SYSTEM, user_name="carl")
    url = reverse("admin:directory_extensionschema_delete", args=[schema.pk])

    page = admin_client_logged_in.get(url)

    text = page.content.decode()
    assert page.status_code == HTTPStatus.OK
    assert f"2 user(s) hold values of {HR}" in text
    assert "A JSON copy of every value is kept first" in text
    assert ExtensionSchema.objects.exists()

    values = admin_client_logged_in.get(reverse("admin:directory_extensionschema_values", args=[schema.pk]))
    assert values["Content-Disposition"].startswith("attachment;")
    assert json.loads(values.content)["users"][str(ada.pk)] == {"badgeId": "A", "pin": "1"}

    response = admin_client_logged_in.post(url, {"post": "yes"})

    export = ExtensionDataExport.objects.get()
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == reverse("admin:directory_extensiondataexport_change", args=[export.pk])
    assert not ExtensionSchema.objects.exists()
    assert all(user.extensions == {} for user in User.objects.all())
    assert ChangeEvent.objects.filter(object_id=ada.pk, kind="updated").exists()
    download = admin_client_logged_in.get(
        reverse("admin:directory_extensiondataexport_download", args=[export.pk])
    )
    assert download.status_code == HTTPStatus.OK
    assert json.loads(download.content)["users"][str(ada.pk)] == {"badgeId": "A", "pin": "1"}
    assert export.user_count == 2


def test_delete_of_an_unused_schema_says_so(admin_client_logged_in: Any) -> None:
    schema = _schema()

    page = admin_client_logged_in.get(reverse("admin:directory_extensionschema_delete", args=[schema.pk]))

    assert f"No user holds a value of {HR}" in page.content.decode()


def test_the_bulk_delete_action_is_not_offered(admin_client_logged_in: Any) -> None:
    _schema()
    page = admin_client_logged_in.get(reverse("admin:directory_extensionschema_changelist"))
    assert "delete_selected" not in page.content.decode()


# --- values on the user and group pages -----------------------------------------------------------


def test_user_page_shows_and_edits_custom_attributes_through_the_service(admin_client_logged_in: Any) -> None:
    schema = _schema()
    user = services.user_create(
        actor=SYSTEM,
        user_name="ada",
        extensions={HR: {"badgeId": "A-1", "tags": ["x", "y"], "pin": "1234"}, "urn:other:x": {"k": 1}},
    )
    url = reverse("admin:directory_user_change", args=[user.pk])

    page = admin_client_logged_in.get(url).content.decode()

    assert "HR (extension schema)" in page
    assert 'value="A-1"' in page
    assert "1234" not in page  # writeOnly
    form = _user_form(user)
    form.update(
        {
            "extensions": json.dumps({"urn:other:x": {"k": 1}}),
            _field(schema, "badgeId"): "A-1",
            _field(schema, "level"): "4",
            _field(schema, "site"): "Oslo",
            _field(schema, "remote"): "true",
            _field(schema, "tags"): "x\ny\nz",
            _field(schema, "pin"): "",
        }
    )
    response = admin_client_logged_in.post(url, form)

    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:3000]
    user.refresh_from_db()
    assert user.extensions == {
        HR: {
            "badgeId": "A-1",
            "level": 4,
            "site": "Oslo",
            "remote": True,
            "tags": ["x", "y", "z"],
            "pin": "1234",
        },
        "urn:other:x": {"k": 1},
    }
    assert user.version == 2
    assert ChangeEvent.objects.filter(object_id=user.pk, kind="updated", version=2).exists()
    assert AuditEntry.objects.filter(object_id=user.pk, action="update", actor_type="operator").exists()


def test_custom_attribute_errors_show_on_the_user_form(admin_client_logged_in: Any) -> None:
    schema = _schema()
    services.user_create(actor=SYSTEM, user_name="other", extensions={HR: {"badgeId": "TAKEN"}})
    user = services.user_create(actor=SYSTEM, user_name="ada")
    url = reverse("admin:directory_user_change", args=[user.pk])

    taken = admin_client_logged_in.post(url, {**_user_form(user), _field(schema, "badgeId"): "taken"})
    assert taken.status_code == HTTPStatus.OK
    assert "badgeId &#x27;taken&#x27; is already taken" in taken.content.decode()

    raw = admin_client_logged_in.post(url, {**_user_form(user), "extensions": json.dumps({HR: {"level": 1}})})
    assert raw.status_code == HTTPStatus.OK
    assert "in its own section of this page" in raw.content.decode()

    tags = admin_client_logged_in.post(url, {**_user_form(user), _field(schema, "tags"): "x" * 600})
    assert tags.status_code == HTTPStatus.OK
    assert "is longer than 512 characters" in tags.content.decode()
    assert User.objects.get(pk=user.pk).version == 1


def test_group_page_edits_custom_attributes(admin_client_logged_in: Any) -> None:
    schema = services.extension_schema_create(
        actor=SYSTEM, urn=TEAM, name="Team", resource_type="group", attributes=[{"name": "code"}]
    )
    group = services.group_create(actor=SYSTEM, display_name="Sales")
    url = reverse("admin:directory_group_change", args=[group.pk])
    assert "Team (extension schema)" in admin_client_logged_in.get(url).content.decode()
    form = {
        "display_name": "Sales",
        "external_id": "",
        "description": "",
        "kind": "security",
        "security_enabled": "true",
        "mail_enabled": "false",
        "mail_nickname": "",
        "extensions": "{}",
        _field(schema, "code"): "S-1",
    }

    response = admin_client_logged_in.post(url, form)

    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:3000]
    group = Group.objects.get(pk=group.pk)
    assert group.extensions == {TEAM: {"code": "S-1"}}
    assert group.version == 2
