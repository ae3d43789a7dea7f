"""What both benchmarks need: a PostgreSQL database of their own, and Django set up against it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_SCHEMES = ("postgres", "postgresql")


def refuse(message: str) -> NoReturn:
    print(f"bench: {message}", file=sys.stderr)
    sys.exit(2)


def database_url(default: str) -> str:
    """BENCH_DATABASE_URL, which must name a PostgreSQL database.

    The targets are about the production setup: SQLite takes other code paths
    (chunked membership statements, one writer at a time) and would measure those.
    """
    url = os.environ.get("BENCH_DATABASE_URL", default)
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        refuse(f"BENCH_DATABASE_URL must be a PostgreSQL URL (postgres://...), got scheme {parts.scheme!r}")
    if not parts.path.strip("/"):
        refuse(f"BENCH_DATABASE_URL names no database: {url}")
    return url


def ensure_database(url: str) -> None:
    """Create the benchmark database if missing, via the server's `postgres` database."""
    name = unquote(urlsplit(url).path.strip("/"))
    maintenance = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    try:
        with psycopg.connect(maintenance, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
                print(f"Creating database {name}")
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                except psycopg.errors.DuplicateDatabase:
                    pass  # a concurrent run won the race; its database serves us too
    except psycopg.OperationalError as exc:
        refuse(f"cannot reach PostgreSQL for {url}: {exc}")


def setup_django(url: str) -> None:
    """Point Django at `url`, set it up, and migrate."""
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(REPO_ROOT))

    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    # DEBUG (on by default in development) keeps every query in memory: bookkeeping
    # production does not do, and a log that fills up while seeding 100k rows.
    # CaptureQueriesContext turns query logging on by itself where counts are wanted.
    settings.DEBUG = False
    call_command("migrate", verbosity=0)
