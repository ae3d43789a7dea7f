"""Planner statistics kept current while bulk writes grow a table (PostgreSQL).

PostgreSQL picks index or sequential scans from the statistics ANALYZE gathers. A table that was
never analyzed, or was analyzed while it held a few hundred rows, gets the default estimate of 0.5%
of the rows per value: an `IN` list of a thousand keys then looks like the whole table, and the
lookups of a bulk load (is this userName taken, who has these external ids) turn into sequential
scans that get slower with every batch. Autovacuum analyzes on its own, but at most once a minute
(`autovacuum_naptime`) and not at all where it is turned off; a 100,000-person HR load measured here
ran at a third of its speed until the tables were analyzed.

So the bulk paths call `refresh` after they commit: a table whose rows changed since its last
ANALYZE by at least `MIN_CHANGES` plus as many as it held then (it doubled, or was never analyzed)
is analyzed there and then. Estimates scale with the table's current size between analyzes, so
doubling is often enough, and a load from empty to 100,000 rows costs about seven ANALYZE runs of a
fraction of a second each. One process analyzes at a time; the others skip rather than queue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import DatabaseError, connection, models, transaction

from directory.locks import exclusive

logger = logging.getLogger(__name__)

# Rows changed since the last ANALYZE that make a table worth analyzing, on top of its row count then.
MIN_CHANGES = 1000


def refresh(tables: Iterable[type[models.Model] | str]) -> None:
    """Analyze those of `tables` whose statistics are stale, once the current transaction commits."""
    if connection.vendor != "postgresql":
        return
    names = sorted({table if isinstance(table, str) else table._meta.db_table for table in tables})
    transaction.on_commit(lambda: _analyze_stale(names))


def stale(names: list[str]) -> list[str]:
    """Those of `names` changed by at least MIN_CHANGES plus their row count at their last ANALYZE."""
    with connection.cursor() as cursor:
        if connection.pg_version >= 150000:
            # This backend's own counts reach the shared statistics when it next goes idle, at most
            # once a second: have them sent now, so the batch just committed is counted.
            cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute(
            "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
            " WHERE s.schemaname = current_schema() AND s.relname = ANY(%s)"
            " AND s.n_mod_since_analyze >= %s + greatest(c.reltuples, 0)"
            " ORDER BY s.relname",
            [names, MIN_CHANGES],
        )
        return [row[0] for row in cursor.fetchall()]


def _analyze_stale(names: list[str]) -> None:
    try:
        due = stale(names)
        if not due:
            return
        with exclusive("directory.statistics") as held:
            if not held:
                return
            with connection.cursor() as cursor:
                for name in stale(due):  # again: another process may have just analyzed them
                    cursor.execute(f"ANALYZE {connection.ops.quote_name(name)}")
                    logger.info("analyzed %s: its statistics were stale after bulk writes", name)
    except DatabaseError:
        # Statistics only steer plans; the writes they follow are committed. Never fail a caller here.
        logger.warning("could not refresh planner statistics of %s", ", ".join(names), exc_info=True)
