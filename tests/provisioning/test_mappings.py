"""Per-target attribute mappings: checked when saved, seeded from the default, used, previewed."""

import uuid

import pytest
from django.core.management import call_command

from directory import services as directory
from provisioning import queue
from provisioning.configuration import (
    MappingRow,
    MappingRowError,
    default_mapping_rows,
    mapping_change_preview,
    mapping_preview_object,
    mapping_rows_compile,
    mappings_replace,
    mappings_seed_default,
)
from provisioning.mapping import (
    ENTERPRISE_USER,
    MappingError,
    check_target_path,
    compile_rule,
    default_rows,
    group_payload,
    group_payloads,
    mapping_set_for,
    user_payload,
    user_payloads,
)
from provisioning.models import AttributeMapping, Delivery, Target, TargetLink, VendorProfile
from tests.provisioning.downstream import InProcessScim
from tests.provisioning.helpers import run_all

EXPRESSION = AttributeMapping.SourceKind.EXPRESSION
CONSTANT = AttributeMapping.SourceKind.CONSTANT
ON_CREATE = AttributeMapping.Apply.ON_CREATE


@pytest.fixture
def sent(monkeypatch):
    ids: list[int] = []
    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: ids.extend(delivery_ids))
    return ids


# --- checked when saved (no database) --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "userName",
        "name.givenName",
        'emails[type eq "work"].value',
        "emails[primary eq true].value",
        f"{ENTERPRISE_USER}:department",
        f"{ENTERPRISE_USER}:manager",
        "urn:example:hr:1.0:User:badge",
        'urn:example:hr:1.0:User:badges[kind eq "door"].code',
    ],
)
def test_target_paths_of_every_shape_are_accepted(path):
    assert str(check_target_path(path, "user")).lower() == path.lower()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("id", "'id' cannot be mapped"),
        ("meta.created", "'meta' cannot be mapped"),
        ("password", "'password' cannot be mapped"),
        ("emails.value", 'choose an element, e.g. emails[type eq "work"].value'),
        ('title[type eq "x"]', "title is not multi-valued"),
        ("name..givenName", "is not an attribute path"),
        ("userName eq 1", "is not an attribute path"),
        ("urn:only", "is not a schema URN followed by"),
    ],
)
def test_malformed_or_reserved_target_paths_are_refused(path, message):
    with pytest.raises(MappingError, match=message.replace("[", r"\[").replace(".", r"\.")):
        check_target_path(path, "user")


def test_group_members_and_the_enterprise_extension_are_not_group_targets():
    with pytest.raises(MappingError, match="'members' cannot be mapped"):
        check_target_path("members", "group")
    with pytest.raises(MappingError, match="a group has no enterprise User extension"):
        check_target_path(f"{ENTERPRISE_USER}:department", "group")


@pytest.mark.parametrize(
    ("kind", "source", "message"),
    [
        ("attribute", "shoeSize", "a user has no attribute 'shoeSize'"),
        ("attribute", "name.nickname", "a user has no attribute 'name.nickname'"),
        ("attribute", 'title[type eq "x"]', "'title' is not multi-valued"),
        ("expression", "ToLower([shoeSize])", "unknown attribute in the expression: a user has no attribute"),
        ("expression", "ToLower([userName]", r"expected '\)'|not closed|expected"),
        ("expression", "Frobnicate([userName])", "unknown function"),
        ("expression", "Left([userName])", "Left takes 2 arguments, not 1"),
        ("constant", "", "a constant needs a value"),
    ],
)
def test_bad_sources_are_refused_with_their_reason(kind, source, message):
    with pytest.raises(MappingError, match=message) as raised:
        compile_rule(object_type="user", target_attribute="title", source_kind=kind, source=source)
    assert raised.value.field == "source"


def test_a_set_needs_its_creation_attribute_and_no_attribute_twice():
    rows = [MappingRow("displayName", source="displayName")]
    with pytest.raises(MappingRowError, match="a user mapping must fill userName") as raised:
        mapping_rows_compile(object_type="user", rows=rows)
    assert raised.value.index is None
    rows = [MappingRow("userName", source="userName"), MappingRow("USERNAME", source="externalId")]
    with pytest.raises(MappingRowError, match="USERNAME is mapped twice"):
        mapping_rows_compile(object_type="user", rows=rows)
    with pytest.raises(MappingRowError, match="row 2: .*unknown function") as raised:
        mapping_rows_compile(
            object_type="user",
            rows=[
                MappingRow("userName", source="userName"),
                MappingRow("title", EXPRESSION, "Nope([title])"),
            ],
        )
    assert (raised.value.index, raised.value.field) == (1, "source")
    assert mapping_rows_compile(object_type="group", rows=[]) is None


# --- payloads ---------------------------------------------------------------------------------------


@pytest.fixture
def rich_user(actor):
    manager = directory.user_create(actor=actor, user_name="grace@example.com")
    return directory.user_create(
        actor=actor,
        user_name="ada@example.com",
        external_id="hr-1815",
        given_name="Ada",
        family_name="Lovelace",
        middle_name="King",
        display_name="Ada Lovelace",
        nick_name="ada",
        title="Countess",
        user_type="Employee",
        preferred_language="en-GB",
        locale="en-GB",
        timezone="Europe/London",
        employee_number="1815",
        cost_center="CC-1",
        department="Engineering",
        division="Analytical",
        organization="Babbage & Co",
        manager_id=manager.pk,
        values={
            "emails": [
                {"value": "ada@example.com", "type": "work", "primary": True},
                {"value": "ada@home.example", "type": "home"},
            ],
            "phoneNumbers": [{"value": "+44 20 0000 0000", "type": "work"}],
            "addresses": [{"address": {"locality": "London", "country": "GB"}, "type": "home"}],
            "roles": [{"value": "admin"}],
        },
        extensions={"urn:example:hr:1.0:User": {"badge": "B-42", "floors": ["1", "3"]}},
    )


def load_user(user):
    return type(user).objects.with_values().get(pk=user.pk)


def test_rows_seeded_from_the_default_mapping_give_the_default_payload(
    actor, target_factory, rich_user, sent
):
    target = target_factory()
    assert mappings_seed_default(target=target) == len(default_rows("user")) + len(default_rows("group"))
    user = load_user(rich_user)
    seeded = mapping_set_for(target, "user")
    assert seeded is not None
    for manager in (None, "remote-grace"):
        payloads = user_payloads(target, user, manager_remote_id=manager, mappings=seeded)
        assert payloads.create == payloads.update == user_payload(target, user, manager_remote_id=manager)
    bare = load_user(directory.user_create(actor=actor, user_name="bare@example.com"))
    assert user_payloads(target, bare, mappings=seeded).create == user_payload(target, bare)
    group = directory.group_create(actor=actor, display_name="Engineering")
    assert group_payloads(target, group, mappings=mapping_set_for(target, "group")).create == group_payload(
        target, group
    )
    # Seeding again leaves existing rows alone.
    assert mappings_seed_default(target=target) == 0


def test_attribute_expression_constant_and_default_rows_build_the_payload(target_factory, rich_user, sent):
    target = target_factory()
    rows = [
        MappingRow("userName", EXPRESSION, 'ToLower(Replace([userName], "@example.com", "@corp.example"))'),
        MappingRow("externalId", source="externalId"),
        MappingRow("displayName", EXPRESSION, 'Join(" ", [name.givenName], [name.familyName])'),
        MappingRow("name.givenName", source="name.givenName"),
        MappingRow('emails[type eq "work"].value', source='emails[type eq "work"].value'),
        MappingRow('emails[type eq "other"].value', source='emails[type eq "home"].value'),
        MappingRow("phoneNumbers", source="phoneNumbers"),
        MappingRow("profileUrl", source="profileUrl", default_value="https://people.example/unknown"),
        MappingRow("userType", CONSTANT, "Staff"),
        MappingRow("active", CONSTANT, "false"),
        MappingRow(f"{ENTERPRISE_USER}:department", EXPRESSION, "ToUpper([department])"),
        MappingRow(f"{ENTERPRISE_USER}:manager", source="manager"),
        MappingRow("urn:example:app:2.0:User:badge", source="urn:example:hr:1.0:User:badge"),
        MappingRow(
            "urn:example:app:2.0:User:floors", EXPRESSION, 'Join(",", [urn:example:hr:1.0:User:floors])'
        ),
        MappingRow("title", source="title", apply=ON_CREATE),
        MappingRow("nickName", source="nickName", default_value="unused"),
        MappingRow("locale", source="urn:example:hr:1.0:User:missing"),
    ]
    mappings_replace(target=target, object_type="user", rows=rows, resync=False)
    payloads = user_payloads(
        target, load_user(rich_user), manager_remote_id="m-1", mappings=mapping_set_for(target, "user")
    )
    assert payloads.create == {
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            ENTERPRISE_USER,
            "urn:example:app:2.0:User",
        ],
        "userName": "ada@corp.example",
        "externalId": "hr-1815",
        "displayName": "Ada Lovelace",
        "name": {"givenName": "Ada"},
        "emails": [
            {"type": "work", "value": "ada@example.com"},
            {"type": "other", "value": "ada@home.example"},
        ],
        "phoneNumbers": [{"value": "+44 20 0000 0000", "type": "work"}],
        "profileUrl": "https://people.example/unknown",
        "userType": "Staff",
        "active": False,
        ENTERPRISE_USER: {"department": "ENGINEERING", "manager": {"value": "m-1"}},
        "urn:example:app:2.0:User": {"badge": "B-42", "floors": "1,3"},
        "title": "Countess",
        "nickName": "ada",
    }
    assert payloads.update == {key: value for key, value in payloads.create.items() if key != "title"}


def test_on_create_only_attributes_are_sent_on_create_and_never_in_updates(actor, target_factory, sent):
    target = target_factory()
    rows = [
        *default_mapping_rows("user"),
        MappingRow("nickName", EXPRESSION, "Left([userName], 3)", apply=ON_CREATE),
    ]
    rows = [row for row in rows if row.target_attribute != "nickName"] + [rows[-1]]
    mappings_replace(target=target, object_type="user", rows=rows, resync=False)
    downstream = InProcessScim()
    ada = directory.user_create(actor=actor, user_name="ada@example.com", title="Countess")
    [created] = run_all(downstream.connection())
    [(method, _, body)] = [r for r in downstream.requests if r[0] == "POST"]
    assert body["nickName"] == "ada"
    assert created.modified_properties["nickName"] == [None, "ada"]

    downstream.requests.clear()
    directory.user_update(actor=actor, user_id=ada.pk, user_name="lovelace@example.com", title="Lady")
    [updated] = run_all(downstream.connection())
    [(method, _, body)] = downstream.requests
    assert method == "PATCH"
    assert {op["path"] for op in body["Operations"]} == {"userName", "title"}
    assert "nickName" not in updated.modified_properties
    remote = downstream.get(f"Users/{TargetLink.objects.get(object_id=ada.pk).remote_id}")
    assert (remote["userName"], remote["nickName"]) == ("lovelace@example.com", "ada")

    # A target updated by PUT gets the value first sent again, not a recomputed one, nor a removal.
    target.profile = VendorProfile.objects.get(name="PUT for users")
    target.save()
    downstream.requests.clear()
    directory.user_update(actor=actor, user_id=ada.pk, title="Countess")
    run_all(downstream.connection())
    [(method, _, body)] = downstream.requests
    assert (method, body["nickName"], body["title"]) == ("PUT", "ada", "Countess")


def test_a_mapping_that_cannot_compute_a_value_fails_the_delivery_with_the_reason(
    actor, target_factory, sent
):
    target = target_factory()
    rows = [
        MappingRow("userName", source="userName"),
        MappingRow("title", EXPRESSION, 'FormatDateTime([title], "", "yyyyMMdd")'),
    ]
    mappings_replace(target=target, object_type="user", rows=rows, resync=False)
    directory.user_create(actor=actor, user_name="ada@example.com", title="not a date")
    downstream = InProcessScim()
    [entry] = run_all(downstream.connection())
    assert entry.outcome == "failed"
    assert entry.error.startswith("mapping of title: ")
    assert downstream.requests == []
    assert Delivery.objects.get().state == "failed"


def test_replacing_mappings_is_all_or_nothing_and_a_change_reaches_workers(
    actor, target_factory, sent, django_capture_on_commit_callbacks
):
    target = target_factory()
    ada = directory.user_create(actor=actor, user_name="ada@example.com", title="Countess")
    downstream = InProcessScim()
    mappings_seed_default(target=target)
    run_all(downstream.connection())
    revision = Target.objects.get(pk=target.pk).mapping_revision
    before = list(AttributeMapping.objects.filter(target=target).values_list("pk", flat=True))

    bad = [MappingRow("userName", source="userName"), MappingRow("title", EXPRESSION, "Left([title], x)")]
    with pytest.raises(MappingRowError, match="row 2"):
        mappings_replace(target=target, object_type="user", rows=bad)
    assert list(AttributeMapping.objects.filter(target=target).values_list("pk", flat=True)) == before
    assert Target.objects.get(pk=target.pk).mapping_revision == revision

    good = [MappingRow("userName", source="userName"), MappingRow("title", EXPRESSION, "ToUpper([title])")]
    with django_capture_on_commit_callbacks(execute=True):
        mappings_replace(target=target, object_type="user", rows=good)
    target.refresh_from_db()
    assert target.mapping_revision == revision + 1
    # The change queued a full sync, whose delivery writes the new title (and drops what is unmapped now).
    assert Delivery.objects.filter(
        target=target, state="queued", priority=Delivery.Priority.BACKFILL
    ).exists()
    downstream.requests.clear()
    [entry] = [e for e in run_all(downstream.connection()) if e.object_id == ada.pk]
    assert entry.modified_properties["title"] == ["Countess", "COUNTESS"]
    remote = downstream.get(f"Users/{TargetLink.objects.get(object_id=ada.pk).remote_id}")
    assert remote["title"] == "COUNTESS"


def test_add_target_creates_the_default_mapping_rows(db, sent):
    call_command("add_target", "app", "--url", "http://127.0.0.1:9/v2", "--bearer-token", "t", "--all-users")
    target = Target.objects.get(name="app")
    rows = AttributeMapping.objects.filter(target=target)
    assert rows.filter(object_type="user").count() == len(default_rows("user"))
    assert list(rows.filter(object_type="group").values_list("target_attribute", "source")) == [
        ("externalId", "id"),
        ("displayName", "displayName"),
    ]


# --- previews -------------------------------------------------------------------------------------


def test_object_preview_shows_saved_and_edited_payloads(target_factory, rich_user, sent):
    target = target_factory()
    edited = mapping_rows_compile(
        object_type="user",
        rows=[
            MappingRow("userName", source="userName"),
            MappingRow("displayName", EXPRESSION, "ToUpper([displayName])"),
        ],
    )
    preview = mapping_preview_object(target=target, object_type="user", object_id=rich_user.pk, edited=edited)
    assert preview.saved.create["title"] == "Countess"  # the default mapping, as nothing is saved
    assert preview.edited.create == {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "ada@example.com",
        "displayName": "ADA LOVELACE",
    }
    assert preview.changes["displayName"] == ["Ada Lovelace", "ADA LOVELACE"]
    assert preview.changes["title"] == ["Countess", None]
    assert not preview.linked


def test_mapping_change_preview_counts_changed_objects_a_page_at_a_time(
    actor, target_factory, sent, django_assert_num_queries
):
    target = target_factory()
    named = [
        directory.user_create(actor=actor, user_name=f"u{n}@example.com", display_name=f"User {n}")
        for n in range(5)
    ]
    for n in range(2):
        directory.user_create(actor=actor, user_name=f"anon{n}@example.com")
    linked = named[0]
    TargetLink.objects.create(target=target, object_type="user", object_id=linked.pk, remote_id="r-0")
    mappings_seed_default(target=target, object_types=["user"])
    rows = [
        MappingRow(row.target_attribute, EXPRESSION, "ToUpper([displayName])")
        if row.target_attribute == "displayName"
        else row
        for row in default_mapping_rows("user")
    ] + [MappingRow("urn:example:app:1.0:User:welcome", CONSTANT, "yes", apply=ON_CREATE)]
    edited = mapping_rows_compile(object_type="user", rows=rows)
    mapping_set_for(target, "user")  # compiled once per revision: not part of each page

    # 7 users, 2 a page: 4 pages of 4 queries (ids, users, their values, links) and a last empty page.
    with django_assert_num_queries(17):
        preview = mapping_change_preview(
            target=target, object_type="user", edited=edited, samples=3, page_size=2
        )

    # Every named user's displayName changes; the 2 anonymous ones change only by the on-create-only
    # attribute, which the linked user would never receive again.
    assert (preview.evaluated, preview.changed, preview.failed) == (7, 7, 0)
    edited_only_create = mapping_rows_compile(
        object_type="user",
        rows=[*default_mapping_rows("user"), MappingRow("nickName", CONSTANT, "x", apply=ON_CREATE)][:-1]
        + [MappingRow("urn:example:app:1.0:User:welcome", CONSTANT, "yes", apply=ON_CREATE)],
    )
    only_create = mapping_change_preview(target=target, object_type="user", edited=edited_only_create)
    assert (only_create.evaluated, only_create.changed) == (7, 6)
    assert linked.pk not in {sample.object_id for sample in only_create.samples}
    assert len(preview.samples) == 3
    sample = preview.samples[0]
    assert set(sample.changes) <= {"displayName", "urn:example:app:1.0:User:welcome"}
    assert all(isinstance(sample.object_id, uuid.UUID) for sample in preview.samples)
