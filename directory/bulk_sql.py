"""Many new rows of one model in one statement: COPY on PostgreSQL, bulk_create elsewhere.

bulk_create on PostgreSQL sends each column as an array parameter, which
psycopg quotes element by element in Python: for a bulk ingest of a thousand
users that quoting, and Django's per-field preparation of every value, cost
more than the database's own work. COPY streams the rows through psycopg's C
row formatter instead. Only for plain new rows: no conflict handling (a unique
violation raises IntegrityError, as bulk_create would), auto-increment keys
left to the database and not read back.
"""

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection, models

# Field types whose Python value psycopg adapts as the database column wants it.
_PLAIN = (
    models.CharField,
    models.TextField,
    models.UUIDField,
    models.BooleanField,
    models.IntegerField,
    models.DateTimeField,
    models.ForeignKey,
)


def _reader(field: "models.Field[Any, Any]") -> Callable[[models.Model], Any]:
    attname = field.attname
    if isinstance(field, models.JSONField):
        from psycopg.types.json import Jsonb

        encoder = field.encoder
        if encoder is None:
            return lambda obj: Jsonb(getattr(obj, attname))
        return lambda obj: Jsonb(getattr(obj, attname), dumps=lambda value: json.dumps(value, cls=encoder))
    if isinstance(field, _PLAIN) and not isinstance(field, models.AutoField | models.BigAutoField):
        return lambda obj: getattr(obj, attname)
    return lambda obj: field.get_db_prep_save(getattr(obj, attname), connection)


def insert_many(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    """INSERT `objs` (new, unsaved instances of `model`); auto-increment primary keys stay unset."""
    if not objs:
        return
    if connection.vendor != "postgresql":
        model._default_manager.bulk_create(objs, batch_size=500)
        return
    fields = [
        field
        for field in model._meta.concrete_fields
        if not isinstance(field, models.AutoField | models.BigAutoField)
    ]
    for obj in objs:
        for field in fields:
            field.pre_save(obj, add=True)  # auto_now and friends, as save() would
    readers = [_reader(field) for field in fields]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    statement = f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN"
    started = time.monotonic()
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(statement) as copy:
            for obj in objs:
                copy.write_row([read(obj) for read in readers])
    if connection.queries_logged:
        # COPY bypasses Django's cursor wrapper; logged by hand so query counts still see it.
        connection.queries_log.append(
            {"sql": f"{statement} -- {len(objs)} rows", "time": f"{time.monotonic() - started:.3f}"}
        )
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias
