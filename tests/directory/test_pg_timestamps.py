"""timestamptz values read with datetime.fromisoformat load exactly as Django's own loader reads them."""

import datetime

import pytest
from django.db import DataError, connection
from django.db.backends.postgresql.psycopg_any import BaseTzLoader

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

VALUES = [
    "2026-11-29 15:00:19.123456+00",
    "2026-11-29 15:00:19+00",
    "2026-11-29 15:00:19.5+00",
    "2020-02-29 23:59:59.999999+00",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
]


def _read(sql: str, params: list[str]) -> tuple[object, ...]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def test_the_loader_reads_what_djangos_reads():
    placeholders = ", ".join("%s::timestamptz" for _ in VALUES)
    loaded = _read(f"SELECT {placeholders}", VALUES)

    with connection.cursor() as cursor:
        loader = cursor.cursor.adapters.get_loader(1184, 0)
        assert loader is not None
        assert loader.__name__ == "IsoUtcTzLoader"  # installed on this connection
        django_loader = type("DjangoLoader", (BaseTzLoader,), {"timezone": datetime.UTC})(1184, cursor.cursor)
        expected = tuple(django_loader.load(value.encode()) for value in VALUES)

    assert loaded == expected
    assert [value.tzinfo for value in loaded] == [datetime.UTC] * len(VALUES)
    assert [value.utcoffset() for value in loaded] == [datetime.timedelta(0)] * len(VALUES)


def test_what_fromisoformat_cannot_read_goes_to_djangos_loader():
    with pytest.raises(DataError, match="before year 1"):  # Django's (psycopg's) own error
        _read("SELECT '0044-03-15 00:00:00+00 BC'::timestamptz", [])
    with pytest.raises(DataError, match="infinity"):
        _read("SELECT 'infinity'::timestamptz", [])
