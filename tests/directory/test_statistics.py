"""Planner statistics refreshed after bulk writes (directory.statistics, PostgreSQL).

Run outside a test transaction: the refresh happens once the bulk write commits.
"""

from datetime import datetime

import pytest
from django.db import connection

from directory import services, statistics
from directory.actors import Actor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ACTOR = Actor.operator(id=8, name="statistics")


def _last_analyze(table: str) -> datetime | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = %s", [table])
        return cursor.fetchone()[0]


def _analyzed_now(table: str) -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")  # count earlier writes before, not after
        cursor.execute(f"ANALYZE {table}")
        cursor.execute("SELECT pg_stat_force_next_flush()")
    stamp = _last_analyze(table)
    assert stamp is not None
    return stamp


def _create(count: int, prefix: str) -> None:
    results = services.users_create_many(
        actor=ACTOR,
        users=[
            services.NewUser(
                f"{prefix}{n}@example.com", values={"emails": [{"value": f"{prefix}{n}@example.com"}]}
            )
            for n in range(count)
        ],
    )
    assert all(not isinstance(result, Exception) for result in results)


def test_a_bulk_create_that_doubles_a_table_analyzes_it(monkeypatch):
    monkeypatch.setattr(statistics, "MIN_CHANGES", 20)
    before = {table: _analyzed_now(table) for table in ("directory_user", "directory_uservalue")}

    _create(25, "grow")

    for table, stamp in before.items():
        after = _last_analyze(table)
        assert after is not None, table
        assert after > stamp, table
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'directory_user'")
        assert cursor.fetchone()[0] == 25  # the statistics now count the new rows


def test_a_bulk_create_below_the_threshold_leaves_the_statistics_alone(monkeypatch):
    monkeypatch.setattr(statistics, "MIN_CHANGES", 20)
    stamp = _analyzed_now("directory_user")

    _create(10, "few")

    assert _last_analyze("directory_user") == stamp
    assert statistics.stale(["directory_user"]) == []


def test_a_table_is_stale_once_it_changed_by_as_many_rows_as_it_held(monkeypatch):
    monkeypatch.setattr(statistics, "MIN_CHANGES", 0)
    analyzed: list[list[str]] = []
    monkeypatch.setattr(statistics, "_analyze_stale", analyzed.append)
    _create(10, "base")
    _analyzed_now("directory_user")

    _create(9, "some")
    assert statistics.stale(["directory_user", "directory_uservalue"]) == ["directory_uservalue"]
    _create(1, "one")
    assert statistics.stale(["directory_user"]) == ["directory_user"]
    assert (
        analyzed
        == [["directory_auditentry", "directory_changeevent", "directory_user", "directory_uservalue"]] * 3
    )
