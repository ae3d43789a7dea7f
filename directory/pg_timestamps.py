"""A faster reader of timestamptz columns for Django's PostgreSQL connections.

Django reads every timestamptz value with its own loader: psycopg's pure-Python parser (a regular
expression and a few datetime operations), then `replace(tzinfo=<the connection's zone>)`. A page
of 100 users holds 200 timestamps, a few microseconds each. PostgreSQL writes them in ISO form
(`2026-11-29 15:00:19.123456+00`, the session's DateStyle being ISO, which psycopg requires too),
and `datetime.fromisoformat`, written in C, reads that form directly. The loader installed here
does that, then the same `replace` as Django's; anything fromisoformat does not read (BC dates,
years past 9999, infinity) goes to Django's loader, so every value loads exactly as before.
"""

from __future__ import annotations

import datetime
from typing import Any


def install() -> None:
    """Register the loader on the adapters that Django builds UTC PostgreSQL connections from."""
    from django.conf import settings

    if not settings.USE_TZ:
        return
    try:
        from django.db.backends.postgresql.psycopg_any import BaseTzLoader, get_adapters_template
    except ImportError:  # no psycopg 3: nothing to replace
        return

    class IsoUtcTzLoader(BaseTzLoader):  # type: ignore[misc, valid-type]
        # Django compares this with the connection's zone before each cursor, and keeps the
        # loader when they agree.
        timezone = datetime.UTC

        def load(self, data: Any) -> datetime.datetime:
            try:
                value = datetime.datetime.fromisoformat(bytes(data).decode())
            except ValueError:
                return super().load(data)  # type: ignore[no-any-return]
            return value.replace(tzinfo=datetime.UTC)

    # The cached adapters template that Django's connections in UTC (no per-database TIME_ZONE) copy.
    get_adapters_template(True, datetime.UTC).register_loader("timestamptz", IsoUtcTzLoader)
