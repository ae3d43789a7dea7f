"""export_directory / import_directory: a directory moved between instances as SCIM JSON lines."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.contrib.auth.hashers import check_password
from django.core.management import CommandError, call_command
from django.db import connection

from directory import extensions, services
from directory.actors import Actor
from directory.models import AuditEntry, ChangeEvent, ExtensionSchema, Group, Membership, User
from scim_api import portable

ACTOR = Actor.system("test")
HR = "urn:example:hr:1.0:User"
PROJECTS = "urn:example:projects:1.0:Group"
ROOT = Path(__file__).resolve().parents[2]


def _directory() -> dict[str, Any]:
    """A small directory with every kind of reference an export has to keep."""
    services.extension_schema_create(
        actor=ACTOR,
        urn=HR,
        name="HR",
        resource_type="user",
        attributes=[
            {"name": "badge", "type": "string", "uniqueness": "server"},
            {"name": "level", "type": "integer"},
            {"name": "grade", "type": "string", "mutability": "readOnly"},
            {"name": "pin", "type": "string", "mutability": "writeOnly", "returned": "never"},
        ],
    )
    services.extension_schema_create(
        actor=ACTOR,
        urn=PROJECTS,
        name="Projects",
        resource_type="group",
        attributes=[{"name": "code", "type": "string", "canonical_values": ["A1", "B2"]}],
    )
    extensions.forget()
    report = services.user_create(
        actor=ACTOR,
        user_name="ada@example.com",
        password="correct horse",
        given_name="Ada",
        family_name="Lovelace",
        department="Research",
        values={
            "emails": [{"value": "ada@example.com", "type": "work", "primary": True}],
            "addresses": [{"type": "work", "address": {"locality": "London", "country": "GB"}}],
        },
        extensions={HR: {"badge": "B-1", "level": 3, "grade": "G7", "pin": "1234"}},
    )
    # Created after the report: the export lists the report first, so its manager comes later.
    boss = services.user_create(actor=ACTOR, user_name="boss@example.com", active=False)
    services.user_update(actor=ACTOR, user_id=report.pk, manager_id=boss.pk)
    outer = services.group_create(actor=ACTOR, display_name="Everyone", extensions={PROJECTS: {"code": "A1"}})
    inner = services.group_create(
        actor=ACTOR,
        display_name="Research 365",
        kind=Group.Kind.UNIFIED,
        mail_nickname="research",
        member_user_ids=[report.pk],
    )
    services.membership_add(actor=ACTOR, group_id=outer.pk, user_ids=[boss.pk], group_ids=[inner.pk])
    return {"report": report, "boss": boss, "outer": outer, "inner": inner}


def _export() -> list[str]:
    out = io.StringIO()
    call_command("export_directory", "-", stdout=out, stderr=io.StringIO())
    return out.getvalue().splitlines()


def _empty_directory() -> None:
    Membership.objects.all().delete()
    User.objects.update(manager=None)
    User.objects.all().delete()
    Group.objects.all().delete()
    for schema in ExtensionSchema.objects.all():
        services.extension_schema_delete(actor=ACTOR, schema_id=schema.pk)
    ChangeEvent.objects.all().delete()
    AuditEntry.objects.all().delete()
    extensions.forget()


def _import(lines: list[str], *args: str) -> str:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"portable-{os.getpid()}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = io.StringIO()
    try:
        call_command("import_directory", str(path), *args, stdout=out, stderr=io.StringIO())
    finally:
        path.unlink()
    return out.getvalue()


@pytest.mark.django_db
def test_export_lists_schemas_users_and_groups_with_what_a_get_never_shows() -> None:
    objects = _directory()
    lines = _export()
    header, *records = (json.loads(line) for line in lines)
    assert header["counts"] == {"schemas": 2, "users": 2, "groups": 2}
    kinds = [record["meta"]["resourceType"] for record in records]
    assert kinds == ["Schema", "Schema", "User", "User", "Group", "Group"]
    ada = next(r for r in records if r.get("userName") == "ada@example.com")
    assert ada[HR] == {"badge": "B-1", "level": 3, "grade": "G7", "pin": "1234"}
    assert ada[portable.USER_EXPORT]["passwordHash"].startswith("argon2")
    assert ada["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["manager"]["value"] == str(
        objects["boss"].pk
    )
    everyone = next(r for r in records if r.get("displayName") == "Everyone")
    assert everyone["members"] == sorted(
        [
            {"value": str(objects["boss"].pk), "type": "User"},
            {"value": str(objects["inner"].pk), "type": "Group"},
        ],
        key=lambda m: (m["type"], m["value"]),
    )


@pytest.mark.django_db
def test_import_recreates_the_directory_with_its_ids_events_and_audit() -> None:
    objects = _directory()
    before = _export()
    _empty_directory()

    output = _import(before)

    assert output.strip() == "Created 2 schema(s), 2 user(s), 2 group(s)"
    assert _export()[1:] == before[1:]
    ada = User.objects.get(pk=objects["report"].pk)
    assert check_password("correct horse", ada.password)
    assert ada.manager_id == objects["boss"].pk
    assert set(Membership.objects.values_list("group_id", "member_user_id", "member_group_id")) == {
        (objects["inner"].pk, objects["report"].pk, None),
        (objects["outer"].pk, objects["boss"].pk, None),
        (objects["outer"].pk, None, objects["inner"].pk),
    }
    events = sorted(ChangeEvent.objects.values_list("object_id", "kind", "member_id"), key=str)
    assert events == sorted(
        [
            (objects["report"].pk, "created", None),
            (objects["boss"].pk, "created", None),
            (objects["outer"].pk, "created", None),
            (objects["inner"].pk, "created", None),
            (objects["inner"].pk, "member_added", objects["report"].pk),
            (objects["outer"].pk, "member_added", objects["boss"].pk),
            (objects["outer"].pk, "member_added", objects["inner"].pk),
        ],
        key=str,
    )
    audit = AuditEntry.objects.get(object_id=ada.pk, action="import")
    assert audit.actor_name == "import_directory"
    assert audit.changes["password"] == [None, "[redacted]"]
    assert audit.changes["extensions"][1][HR]["pin"] == "[redacted]"


@pytest.mark.django_db
def test_import_refuses_a_directory_that_is_not_empty_and_writes_nothing() -> None:
    _directory()
    lines = _export()
    events = ChangeEvent.objects.count()
    with pytest.raises(CommandError, match="already holds users, groups or extension schemas"):
        _import(lines)
    assert ChangeEvent.objects.count() == events


@pytest.mark.django_db
def test_merge_reimport_of_the_same_file_changes_nothing() -> None:
    _directory()
    lines = _export()
    events = ChangeEvent.objects.count()

    output = _import(lines, "--merge")

    assert output.strip() == (
        "Created 0 schema(s), 0 user(s), 0 group(s); left unchanged 2 schema(s), 2 user(s), 2 group(s)"
    )
    assert ChangeEvent.objects.count() == events


@pytest.mark.django_db
def test_merge_updates_existing_objects_and_adds_new_ones_by_id() -> None:
    objects = _directory()
    lines = _export()
    services.user_update(actor=ACTOR, user_id=objects["report"].pk, department="Sales")
    services.membership_remove(actor=ACTOR, group_id=objects["outer"].pk, user_ids=[objects["boss"].pk])
    services.user_delete(actor=ACTOR, user_id=objects["boss"].pk)

    output = _import(lines, "--merge")

    assert output.strip() == (
        "Created 0 schema(s), 1 user(s), 0 group(s); updated 0 schema(s), 1 user(s), 1 group(s); "
        "left unchanged 2 schema(s), 0 user(s), 1 group(s)"
    )
    assert User.objects.get(pk=objects["report"].pk).department == "Research"
    assert User.objects.get(pk=objects["boss"].pk).active is False
    assert Membership.objects.filter(group=objects["outer"], member_user_id=objects["boss"].pk).exists()


@pytest.mark.django_db
def test_dry_run_reports_and_rolls_back() -> None:
    _directory()
    lines = _export()
    _empty_directory()

    output = _import(lines, "--dry-run")

    assert output.strip() == "Dry run, nothing written. Would have created 2 schema(s), 2 user(s), 2 group(s)"
    assert not User.objects.exists()
    assert not ExtensionSchema.objects.exists()
    assert not ChangeEvent.objects.exists()


@pytest.mark.django_db
def test_a_manager_missing_from_the_file_refuses_the_whole_import() -> None:
    objects = _directory()
    boss = f'"id":"{objects["boss"].pk}"'
    lines = [line for line in _export() if boss not in line and '"displayName":"Everyone"' not in line]
    _empty_directory()

    with pytest.raises(CommandError, match=f"Managers that are no user.*{objects['boss'].pk}"):
        _import(lines)
    assert not User.objects.exists()


@pytest.mark.django_db
def test_a_nesting_loop_in_the_file_is_refused() -> None:
    objects = _directory()
    lines = _export()
    inner_line = next(i for i, line in enumerate(lines) if '"displayName":"Research 365"' in line)
    inner = json.loads(lines[inner_line])
    inner["members"].append({"value": str(objects["outer"].pk), "type": "Group"})
    lines[inner_line] = json.dumps(inner)
    _empty_directory()

    with pytest.raises(CommandError, match="nested groups form a loop"):
        _import(lines)
    assert not Group.objects.exists()


@pytest.mark.django_db
def test_a_file_that_is_not_an_export_is_refused() -> None:
    with pytest.raises(CommandError, match="line 1 is not an export header"):
        _import(['{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x"}'])


INDEXES = "SELECT tablename, indexdef FROM pg_indexes WHERE indexname LIKE 'directory_extattr_%' ORDER BY 2"


def _fresh_database_url() -> str:
    settings = connection.settings_dict
    name = f"{settings['NAME']}_fresh"
    admin = psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"] or "postgres",
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    user, host, port = (
        settings["USER"] or "postgres",
        settings["HOST"] or "127.0.0.1",
        settings["PORT"] or 5432,
    )
    return f"postgres://{user}@{host}:{port}/{name}"


def _manage(database_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_round_trip_into_a_fresh_postgresql_database_is_equal() -> None:
    _directory()
    with connection.cursor() as cursor:
        cursor.execute(INDEXES)
        source_indexes = cursor.fetchall()
    exported = _export()
    fresh = _fresh_database_url()
    _manage(fresh, "migrate", "-v0")

    imported = _manage(fresh, "import_directory", "-", stdin="\n".join(exported) + "\n")
    again = _manage(fresh, "export_directory").stdout.splitlines()

    assert imported.stdout.strip() == "Created 2 schema(s), 2 user(s), 2 group(s)"
    assert again[1:] == exported[1:]
    with psycopg.connect(fresh.replace("postgres://", "postgresql://")) as db:
        events = db.execute("SELECT count(*) FROM directory_changeevent WHERE processed IS NULL").fetchone()
        audit = db.execute("SELECT count(*) FROM directory_auditentry WHERE action = 'import'").fetchone()
        indexes = db.execute(INDEXES).fetchall()
        analyzed = db.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL"
            " AND relname IN ('directory_user', 'directory_uservalue',"
            " 'directory_group', 'directory_membership')"
            " ORDER BY relname"
        ).fetchall()
    assert events == (7,)
    assert audit == (4,)
    # The extension attributes' indexes (the unique badge one among them) were built there too.
    assert len(indexes) == len(source_indexes) >= 2
    # Statistics refreshed after the bulk insert, so the planner does not take the tables for empty.
    assert [name for (name,) in analyzed] == [
        "directory_group",
        "directory_membership",
        "directory_user",
        "directory_uservalue",
    ]


@pytest.mark.django_db
def test_merge_refuses_a_new_id_whose_user_name_another_user_has() -> None:
    objects = _directory()
    lines = _export()
    services.user_delete(actor=ACTOR, user_id=objects["boss"].pk)
    services.user_create(actor=ACTOR, user_name="BOSS@example.com")
    events = ChangeEvent.objects.count()

    with pytest.raises(CommandError, match="Nothing imported: Users: .*directory_user_username_ci_unique"):
        _import(lines, "--merge")
    assert ChangeEvent.objects.count() == events
    assert not User.objects.filter(pk=objects["boss"].pk).exists()


@pytest.mark.django_db
def test_small_pages_export_every_user_once_even_when_created_times_tie() -> None:
    for n in range(7):
        services.user_create(actor=ACTOR, user_name=f"user{n}@example.com")
    moment = User.objects.order_by("created").values_list("created", flat=True).first()
    User.objects.filter(user_name__in=["user2@example.com", "user3@example.com", "user4@example.com"]).update(
        created=moment
    )
    whole = _export()
    paged = io.StringIO()
    call_command("export_directory", "--page-size", "2", stdout=paged, stderr=io.StringIO())

    assert paged.getvalue().splitlines()[1:] == whole[1:]
    ids = [json.loads(line)["id"] for line in whole[1:]]
    assert len(ids) == len(set(ids)) == 7
