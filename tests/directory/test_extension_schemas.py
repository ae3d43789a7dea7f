"""Extension schema definitions: their services, database invariants, cache, indexes and removal."""

import uuid
from typing import Any

import pytest
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from directory import extensions, services
from directory.actors import Actor
from directory.exceptions import InvalidValue, ObjectNotFound, UniquenessConflict
from directory.models import (
    AuditEntry,
    ChangeEvent,
    ExtensionAttribute,
    ExtensionDataExport,
    ExtensionSchema,
    Group,
    User,
)

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")
HR = "urn:acme:scim:schemas:hr:1.0:User"
TEAM = "urn:acme:scim:schemas:team:1.0:Group"


def _schema(urn: str = HR, resource_type: str = "user", **extra: Any) -> ExtensionSchema:
    attributes = extra.pop(
        "attributes",
        [
            {"name": "badgeId", "type": "string", "uniqueness": "server"},
            {"name": "level", "type": "integer"},
            {"name": "site", "type": "string", "canonical_values": ["Paris", "Oslo"]},
        ],
    )
    return services.extension_schema_create(
        actor=SYSTEM, urn=urn, name="HR", resource_type=resource_type, attributes=attributes, **extra
    )


def _attributes(schema: ExtensionSchema) -> list[dict[str, Any]]:
    """The schema's attributes as extension_schema_update takes them (ids included)."""
    return [
        {"id": attribute.pk, **{field: getattr(attribute, field) for field in services.ATTRIBUTE_FIELDS}}
        for attribute in schema.attributes.order_by("position")
    ]


def _user(name: str, **hr: Any) -> User:
    return services.user_create(actor=SYSTEM, user_name=name, extensions={HR: hr} if hr else {})


# --- definitions -------------------------------------------------------------------------------


def test_create_records_an_audit_entry_and_is_seen_at_once() -> None:
    schema = _schema(description="HR data")

    known = extensions.definitions().schema(HR.upper())
    assert known is not None
    assert known.id == schema.pk
    assert [attribute.name for attribute in known.attributes] == ["badgeId", "level", "site"]
    assert known.attribute("LEVEL").type == "integer"  # type: ignore[union-attr]
    entry = AuditEntry.objects.get(object_id=schema.pk)
    assert (entry.action, entry.object_type, entry.object_repr) == ("schema_create", "schema", HR)
    assert entry.changes["definition"][1]["attributes"][0]["name"] == "badgeId"


@pytest.mark.parametrize(
    ("urn", "message"),
    [
        ("urn:ietf:params:scim:schemas:core:2.0:User", "server defines itself"),
        ("URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER", "server defines itself"),
        ("urn:ietf:params:scim:schemas:extension:Microsoft:Entra:2.0:Group", "server defines itself"),
        ("urn:ietf:params:scim:api:messages:2.0:PatchOp", "server defines itself"),
        ("hr:1.0:User", "must look like urn:"),
        ("urn:acme:has space", "must look like urn:"),
        ("urn:acme:double__underscore", "must look like urn:"),
        ("urn:acme:trailing:", "must look like urn:"),
    ],
)
def test_reserved_and_malformed_urns_are_refused(urn: str, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        _schema(urn=urn)
    assert not ExtensionSchema.objects.exists()


def test_an_ietf_extension_urn_of_ones_own_is_allowed() -> None:
    _schema(urn="urn:ietf:params:scim:schemas:extension:acme:2.0:User")


def test_urns_are_unique_ignoring_case_and_across_resource_types() -> None:
    _schema()
    with pytest.raises(InvalidValue, match="already exists"):
        _schema(urn=HR.upper(), resource_type="group")


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ({"name": "1st"}, "starts with a letter"),
        ({"name": "a__b"}, "starts with a letter"),
        ({"name": "x", "type": "complex"}, "not a valid choice"),
        ({"name": "x", "mutability": "writeOnly"}, "returned = never"),
        ({"name": "x", "multi_valued": True, "uniqueness": "server"}, "single-valued"),
        ({"name": "x", "type": "integer", "canonical_values": ["1"]}, "string and reference"),
        ({"name": "x", "canonical_values": ["a", "A"]}, "lists a value twice"),
        ({"name": "x", "colour": "red"}, "Unknown extension attribute attribute"),
    ],
)
def test_bad_attribute_definitions_are_refused(attribute: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        _schema(attributes=[attribute])
    assert not ExtensionSchema.objects.exists()


def test_attribute_names_are_unique_per_schema_ignoring_case() -> None:
    with pytest.raises(InvalidValue, match="already has an attribute of this name"):
        _schema(attributes=[{"name": "badge"}, {"name": "BADGE"}])


def test_the_database_refuses_what_the_services_refuse() -> None:
    for values in (
        {"urn": "urn:ietf:params:scim:schemas:core:2.0:Group"},
        {"urn": "not-a-urn"},
        {"urn": HR, "resource_type": "device"},
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            ExtensionSchema.objects.create(**{"urn": HR, "name": "x", "resource_type": "user", **values})
    schema = ExtensionSchema.objects.create(urn=HR, name="x", resource_type="user")
    for values in (
        {"name": "bad name"},
        {"name": "pin", "mutability": "writeOnly"},
        {"name": "tags", "multi_valued": True, "uniqueness": "server"},
        {"name": "n", "type": "integer", "canonical_values": ["1"]},
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            ExtensionAttribute.objects.create(schema=schema, **values)


def test_name_type_and_multi_valued_are_fixed_once_created() -> None:
    schema = _schema()
    attributes = _attributes(schema)
    attributes[1]["type"] = "string"

    with pytest.raises(InvalidValue, match="type cannot change"):
        services.extension_schema_update(actor=SYSTEM, schema_id=schema.pk, attributes=attributes)


def test_update_adds_changes_and_reorders_attributes() -> None:
    schema = _schema()
    attributes = _attributes(schema)
    attributes[2]["canonical_values"] = ["Paris", "Oslo", "Lyon"]
    attributes = [{"name": "remote", "type": "boolean"}, *reversed(attributes)]

    services.extension_schema_update(
        actor=SYSTEM, schema_id=schema.pk, attributes=attributes, name="People", required=True
    )

    known = extensions.definitions().schema(HR)
    assert known is not None
    assert (known.name, known.required) == ("People", True)
    assert [a.name for a in known.attributes] == ["remote", "site", "level", "badgeId"]
    assert known.attribute("site").canonical_values == ("Paris", "Oslo", "Lyon")  # type: ignore[union-attr]
    entry = AuditEntry.objects.filter(object_id=schema.pk, action="schema_update").get()
    assert entry.changes["name"] == ["HR", "People"]
    assert [a["name"] for a in entry.changes["attributes_added"]] == ["remote"]
    assert entry.changes["attributes_changed"]["site"]["canonical_values"][1] == ["Paris", "Oslo", "Lyon"]


def test_an_update_that_changes_nothing_writes_nothing() -> None:
    schema = _schema()

    services.extension_schema_update(
        actor=SYSTEM, schema_id=schema.pk, attributes=_attributes(schema), name="HR"
    )

    assert not AuditEntry.objects.filter(action="schema_update").exists()


def test_unknown_schema_or_attribute_id_is_not_found() -> None:
    schema = _schema()
    with pytest.raises(ObjectNotFound):
        services.extension_schema_update(actor=SYSTEM, schema_id=schema.pk, attributes=[{"id": 999999}])
    with pytest.raises(ObjectNotFound):
        services.extension_schema_delete(actor=SYSTEM, schema_id=uuid.uuid4())


# --- the cache -----------------------------------------------------------------------------------


def test_definitions_are_cached_until_the_stamp_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    _schema()
    first = extensions.definitions()
    with CaptureQueriesContext(connection) as captured:
        assert extensions.definitions() is first
    assert len(captured) == 0

    # Another process defines a schema: this one sees it once it next looks at the stamp.
    ExtensionSchema.objects.create(urn=TEAM, name="Team", resource_type="group")
    monkeypatch.setattr(extensions, "CHECK_SECONDS", 0.0)
    assert extensions.definitions() is first  # same stamp: no reload, no query
    cache.set(extensions.STAMP_KEY, "changed-elsewhere")
    reloaded = extensions.definitions()
    assert reloaded is not first
    assert reloaded.schema(TEAM, "group") is not None
    assert reloaded.schema(TEAM, "user") is None


def test_a_lost_stamp_reloads_once() -> None:
    _schema()
    before = extensions.definitions()
    cache.delete(extensions.STAMP_KEY)
    extensions._cache.checked = 0.0

    after = extensions.definitions()

    assert after is not before
    assert after == before
    assert extensions.definitions() is after


# --- values --------------------------------------------------------------------------------------


def test_services_check_types_and_canonical_values() -> None:
    _schema()
    with pytest.raises(InvalidValue, match="level must be an integer"):
        _user("a", badgeId="A", level="2")
    with pytest.raises(InvalidValue, match="must be one of 'Paris', 'Oslo'"):
        _user("a", badgeId="A", site="Rome")
    with pytest.raises(InvalidValue, match="'colour' is not an attribute"):
        _user("a", colour="red")
    user = _user("a", BadgeID="A", site="oslo")
    assert user.extensions == {HR: {"badgeId": "A", "site": "Oslo"}}


def test_undeclared_extensions_are_stored_as_sent() -> None:
    _schema()
    user = services.user_create(
        actor=SYSTEM, user_name="u", extensions={"urn:other:x": {"anything": [1, {}]}}
    )
    assert user.extensions == {"urn:other:x": {"anything": [1, {}]}}


def test_values_stored_before_the_declaration_do_not_block_other_writes() -> None:
    user = services.user_create(actor=SYSTEM, user_name="old", extensions={HR: {"level": "senior", "x": 1}})
    _schema()

    updated = services.user_update(
        actor=SYSTEM, user_id=user.pk, extensions={HR: {"level": "senior", "x": 1, "badgeId": "B"}}
    )

    assert updated.extensions[HR] == {"level": "senior", "x": 1, "badgeId": "B"}
    with pytest.raises(InvalidValue, match="level must be an integer"):
        services.user_update(actor=SYSTEM, user_id=user.pk, extensions={HR: {"level": "junior"}})


def test_unique_values_are_checked_in_services_for_users_and_groups() -> None:
    _schema()
    _schema(
        urn=TEAM,
        resource_type="group",
        attributes=[{"name": "code", "uniqueness": "server", "case_exact": True}],
    )
    _user("a", badgeId="Blue")
    with pytest.raises(UniquenessConflict, match="badgeId 'BLUE' is already taken"):
        _user("b", badgeId="BLUE")
    other = _user("b", badgeId="Green")
    with pytest.raises(UniquenessConflict):
        services.user_update(actor=SYSTEM, user_id=other.pk, extensions={HR: {"badgeId": "blue"}})

    group = services.group_create(actor=SYSTEM, display_name="One", extensions={TEAM: {"code": "X"}})
    services.group_create(actor=SYSTEM, display_name="Two", extensions={TEAM: {"code": "x"}})  # caseExact
    with pytest.raises(UniquenessConflict, match="code 'X' is already taken"):
        services.group_create(actor=SYSTEM, display_name="Three", extensions={TEAM: {"code": "X"}})
    services.group_update(actor=SYSTEM, group_id=group.pk, extensions={TEAM: {"code": "X"}})  # its own value


def test_the_unique_index_catches_what_a_racing_writer_slipped_past(monkeypatch: pytest.MonkeyPatch) -> None:
    _schema()
    _user("a", badgeId="Blue")
    # Two writers both pass the check before either inserts: the index decides.
    monkeypatch.setattr(extensions, "check_unique", lambda *args, **kwargs: True)

    with pytest.raises(UniquenessConflict, match="badgeId: that value is already taken"):
        _user("b", badgeId="blue")
    assert not User.objects.filter(user_name="b").exists()


def test_making_an_attribute_unique_over_repeated_values_is_refused() -> None:
    schema = _schema()
    _user("a", level=3)
    _user("b", level=3)
    attributes = _attributes(schema)
    attributes[1]["uniqueness"] = "server"

    with pytest.raises(InvalidValue, match="already hold the same value"):
        services.extension_schema_update(actor=SYSTEM, schema_id=schema.pk, attributes=attributes)
    assert ExtensionAttribute.objects.get(name="level").uniqueness == "none"


# --- removal -------------------------------------------------------------------------------------


def test_delete_exports_then_strips_values_with_an_event_per_holder() -> None:
    schema = _schema()
    ada = _user("ada", badgeId="A", level=1)
    bob = _user("bob", badgeId="B")
    services.user_update(
        actor=SYSTEM, user_id=bob.pk, extensions={HR: {"badgeId": "B"}, "urn:other:x": {"k": 1}}
    )
    carl = _user("carl")
    ChangeEvent.objects.all().delete()

    export = services.extension_schema_delete(actor=SYSTEM, schema_id=schema.pk)

    assert export is not None
    assert (export.urn, export.user_count, export.group_count, export.attributes) == (HR, 2, 0, [])
    assert export.data["users"] == {str(ada.pk): {"badgeId": "A", "level": 1}, str(bob.pk): {"badgeId": "B"}}
    assert export.data["schema"]["attributes"][0]["name"] == "badgeId"
    users = {user.user_name: user for user in User.objects.all()}
    assert users["ada"].extensions == {}
    assert users["bob"].extensions == {"urn:other:x": {"k": 1}}
    assert (users["ada"].version, users["bob"].version, users["carl"].version) == (2, 3, 1)
    events = sorted(ChangeEvent.objects.values_list("object_id", "kind", "version"))
    assert events == sorted([(ada.pk, "updated", 2), (bob.pk, "updated", 3)])
    assert AuditEntry.objects.filter(object_id=ada.pk, action="update").latest("id").changes["extensions"][
        0
    ] == {HR: {"badgeId": "A", "level": 1}}
    assert not ExtensionSchema.objects.exists()
    assert extensions.definitions().schema(HR) is None
    assert carl.extensions == {}


def test_delete_of_a_schema_nobody_uses_keeps_no_export() -> None:
    schema = _schema()
    assert services.extension_schema_delete(actor=SYSTEM, schema_id=schema.pk) is None
    assert not ExtensionDataExport.objects.exists()
    assert AuditEntry.objects.filter(action="schema_delete", object_id=schema.pk).exists()


def test_removing_attributes_exports_and_strips_only_them() -> None:
    schema = _schema()
    ada = _user("ada", badgeId="A", level=1)
    bob = _user("bob", level=2)
    attributes = [a for a in _attributes(schema) if a["name"] != "level"]

    _, export = services.extension_schema_update(actor=SYSTEM, schema_id=schema.pk, attributes=attributes)

    assert export is not None
    assert export.attributes == ["level"]
    assert export.data["users"] == {str(ada.pk): {"level": 1}, str(bob.pk): {"level": 2}}
    assert User.objects.get(pk=ada.pk).extensions == {HR: {"badgeId": "A"}}
    assert User.objects.get(pk=bob.pk).extensions == {}
    assert ChangeEvent.objects.filter(object_id=bob.pk, kind="updated", version=2).exists()


def test_group_schema_removal_strips_groups() -> None:
    schema = _schema(urn=TEAM, resource_type="group", attributes=[{"name": "code"}])
    group = services.group_create(actor=SYSTEM, display_name="One", extensions={TEAM: {"code": "X"}})

    export = services.extension_schema_delete(actor=SYSTEM, schema_id=schema.pk)

    assert export is not None
    assert (export.user_count, export.group_count) == (0, 1)
    assert export.data["groups"] == {str(group.pk): {"code": "X"}}
    assert Group.objects.get(pk=group.pk).extensions == {}
    assert ChangeEvent.objects.filter(
        object_type="group", object_id=group.pk, kind="updated", version=2
    ).exists()


def _removal_queries(holders: int) -> int:
    schema = _schema(urn=f"urn:acme:size:{holders}")
    for n in range(holders):
        services.user_create(
            actor=SYSTEM, user_name=f"h{holders}-{n}", extensions={schema.urn: {"badgeId": f"{holders}-{n}"}}
        )
    with CaptureQueriesContext(connection) as captured:
        export = services.extension_schema_delete(actor=SYSTEM, schema_id=schema.pk)
    assert export is not None
    assert export.user_count == holders
    assert ChangeEvent.objects.filter(kind="updated").count() >= holders
    return len(captured)


def test_removal_costs_the_same_statements_whatever_the_number_of_holders() -> None:
    assert _removal_queries(3) == _removal_queries(40)


def test_indexes_follow_the_attributes() -> None:
    schema = _schema()
    ids = {a.name: a.pk for a in schema.attributes.all()}
    postgres = connection.vendor == "postgresql"

    assert extensions.index_exists(User, ids["badgeId"])  # unique: on both databases
    assert extensions.index_exists(User, ids["level"]) is postgres

    attributes = _attributes(schema)
    attributes[0]["uniqueness"] = "none"
    attributes = [a for a in attributes if a["name"] != "level"]
    services.extension_schema_update(actor=SYSTEM, schema_id=schema.pk, attributes=attributes)
    assert extensions.index_exists(User, ids["badgeId"]) is postgres
    assert not extensions.index_exists(User, ids["level"])

    services.extension_schema_delete(actor=SYSTEM, schema_id=schema.pk)
    assert not extensions.index_exists(User, ids["badgeId"])


def test_write_only_values_are_redacted_in_the_audit_trail() -> None:
    schema = _schema(
        attributes=[{"name": "badgeId"}, {"name": "pin", "mutability": "writeOnly", "returned": "never"}]
    )
    user = _user("ada", badgeId="A", pin="1234")
    services.user_update(actor=SYSTEM, user_id=user.pk, extensions={HR: {"badgeId": "A", "pin": "9999"}})
    services.extension_schema_delete(actor=SYSTEM, schema_id=schema.pk)

    entries = AuditEntry.objects.filter(object_id=user.pk).order_by("id")
    created, updated, stripped = (entry.changes["extensions"] for entry in entries)
    assert created[1] == {HR: {"badgeId": "A", "pin": "[redacted]"}}
    assert updated == [
        {HR: {"badgeId": "A", "pin": "[redacted]"}},
        {HR: {"badgeId": "A", "pin": "[redacted]"}},
    ]
    assert stripped[0] == {HR: {"badgeId": "A"}}
    assert "1234" not in str(list(entries.values_list("changes", flat=True)))
    assert ExtensionDataExport.objects.get().data["users"][str(user.pk)] == {"badgeId": "A", "pin": "9999"}
