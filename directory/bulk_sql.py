"""Rows inserted and updated in one statement, without the ORM's per-row and per-field machinery.

Every write of the directory inserts rows (the object, its values, a change
event, an audit entry). Model.save() and bulk_create() rebuild and compile an
INSERT each time and prepare every value field by field; for one row that costs
more CPU than the database's own work, and for a bulk ingest of a thousand users
bulk_create's array parameters, which psycopg quotes element by element in
Python, cost more still. On PostgreSQL insert_many sends many rows with COPY
(psycopg's C row formatter) and a few with one INSERT whose SQL is built once
per model; other databases use bulk_create. update_fields() likewise updates
some columns of one row with an UPDATE built once per model and set of columns.

Only for plain new rows: no conflict handling (a unique violation raises
IntegrityError, as save() would), auto-increment keys left to the database and
not read back, no signals (the directory uses none).
"""

import datetime
import functools
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, models

from directory import json_codec

# From this many rows on, COPY's extra round trip pays for itself.
_COPY_MIN_ROWS = 20

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


@dataclass(frozen=True)
class _Plan:
    fields: list["models.Field[Any, Any]"]
    readers: list[Callable[[models.Model], Any]]
    copy: str
    insert: str


@functools.cache
def _plan(model: type[models.Model]) -> _Plan:
    fields = [
        field
        for field in model._meta.concrete_fields
        if not isinstance(field, models.AutoField | models.BigAutoField)
    ]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    marks = ", ".join(["%s"] * len(fields))
    return _Plan(
        fields=fields,
        readers=[_reader(field) for field in fields],
        copy=f"COPY {table} ({columns}) FROM STDIN",
        insert=f"INSERT INTO {table} ({columns}) VALUES ({marks})",
    )


def insert_values(model: type[models.Model], rows: Sequence[Mapping[str, Any]]) -> None:
    """insert_many for rows given as {attname: value}, the other fields taking their defaults.

    For thousands of rows nobody reads back (a bulk ingest's values, change events
    and audit entries): building a model instance for each costs more than writing it.
    """
    if not rows:
        return
    if connection.vendor != "postgresql":
        insert_many(model, [model(**row) for row in rows])
        return
    plan = _plan(model)
    prepared = []
    for row in rows:
        values = []
        for field in plan.fields:
            value = row[field.attname] if field.attname in row else field.get_default()
            if isinstance(field, models.JSONField):
                from psycopg.types.json import Jsonb

                value = Jsonb(value)
            elif not isinstance(field, _PLAIN):
                value = field.get_db_prep_save(value, connection)
            values.append(value)
        prepared.append(values)
    _copy(plan, prepared)


def insert_many(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    """INSERT `objs` (new, unsaved instances of `model`); auto-increment primary keys stay unset."""
    if not objs:
        return
    if connection.vendor != "postgresql":
        model._default_manager.bulk_create(objs, batch_size=500)
        return
    plan = _plan(model)
    for obj in objs:
        for field in plan.fields:
            field.pre_save(obj, add=True)  # auto_now and friends, as save() would
    _copy(plan, [[read(obj) for read in plan.readers] for obj in objs])
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias


def _copy(plan: _Plan, rows: list[list[Any]]) -> None:
    """Write prepared rows: one INSERT for a few, COPY for many (PostgreSQL)."""
    if len(rows) < _COPY_MIN_ROWS:
        with connection.cursor() as cursor:
            if len(rows) == 1:
                cursor.execute(plan.insert, rows[0])
            else:
                cursor.executemany(plan.insert, rows)
        return
    started = time.monotonic()
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(plan.copy) as copy:
            for row in rows:
                copy.write_row(row)
    if connection.queries_logged:
        # COPY bypasses Django's cursor wrapper; logged by hand so query counts still see it.
        connection.queries_log.append(
            {"sql": f"{plan.copy} -- {len(rows)} rows", "time": f"{time.monotonic() - started:.3f}"}
        )


@functools.cache
def _update_statement(model: type[models.Model], names: tuple[str, ...]) -> tuple[str, list[Any]]:
    quote = connection.ops.quote_name
    fields = [model._meta.get_field(name) for name in names]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)  # type: ignore[union-attr]
    pk = model._meta.pk
    statement = f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {quote(pk.column)} = %s"  # type: ignore[union-attr]
    return statement, [_reader(field) for field in [*fields, pk]]  # type: ignore[list-item]


def update_fields(obj: models.Model, names: Sequence[str]) -> None:
    """UPDATE the columns `names` of a saved object from its attributes, as save(update_fields=...) would."""
    if connection.vendor != "postgresql":
        obj.save(update_fields=names)
        return
    names = tuple(dict.fromkeys(names))
    for name in names:
        obj._meta.get_field(name).pre_save(obj, add=False)  # type: ignore[union-attr]
    statement, readers = _update_statement(type(obj), names)
    with connection.cursor() as cursor:
        cursor.execute(statement, [read(obj) for read in readers])


@functools.cache
def _update_many_statement(model: type[models.Model], names: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    pk = model._meta.pk
    fields = [pk, *(model._meta.get_field(name) for name in names)]
    columns = [quote(field.column) for field in fields]  # type: ignore[union-attr]
    arrays = []
    assignments = []
    for field, column in zip(fields, columns, strict=True):
        if isinstance(field, models.JSONField):
            # Sent as text: psycopg adapts a list of strings as text[] without per-element dumpers.
            arrays.append("%s::text[]")
            if field is not pk:
                assignments.append(f"{column} = v.{column}::jsonb")
        else:
            arrays.append(f"%s::{field.db_type(connection)}[]")  # type: ignore[union-attr]
            if field is not pk:
                assignments.append(f"{column} = v.{column}")
    table = quote(model._meta.db_table)
    return (
        f"UPDATE {table} AS t SET {', '.join(assignments)} "
        f"FROM unnest({', '.join(arrays)}) AS v({', '.join(columns)}) "
        f"WHERE t.{columns[0]} = v.{columns[0]}"
    )


def update_many(model: type[models.Model], objs: Sequence[models.Model], names: Sequence[str]) -> None:
    """UPDATE the columns `names` of saved objects, each row from its object, in one statement.

    On PostgreSQL one UPDATE ... FROM unnest(one array per column); elsewhere a
    save(update_fields=...) per object.
    """
    if not objs:
        return
    if connection.vendor != "postgresql":
        for obj in objs:
            obj.save(update_fields=list(names))
        return
    names = tuple(dict.fromkeys(names))
    fields = [model._meta.get_field(name) for name in names]
    for obj in objs:
        for field in fields:
            field.pre_save(obj, add=False)  # type: ignore[union-attr]
    columns: list[list[Any]] = [[obj.pk for obj in objs]]
    for field in fields:
        attname = field.attname  # type: ignore[union-attr]
        if isinstance(field, models.JSONField):
            encoder = field.encoder
            columns.append([json.dumps(getattr(obj, attname), cls=encoder) for obj in objs])
        elif isinstance(field, _PLAIN):
            columns.append([getattr(obj, attname) for obj in objs])
        else:
            columns.append([field.get_db_prep_save(getattr(obj, attname), connection) for obj in objs])  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute(_update_many_statement(model, names), columns)


# --- one statement: a write and the rows that record it ------------------------------
#
# A write of the directory is a row change plus its change event and audit entry
# (the outbox). Sent one by one inside BEGIN ... COMMIT, that is five or more round
# trips, each costing the web process and the database more than the work itself.
# On PostgreSQL the rows can travel as one statement instead: data-modifying CTEs
# whose inserts select from the main write's RETURNING, so they happen exactly when
# the write does. One statement is atomic by itself, so outside a transaction it
# needs no BEGIN or COMMIT either.

# A part of such a statement: (CTE name, SQL, parameters).
Part = tuple[str, str, list[Any]]


def _cast(field: "models.Field[Any, Any]") -> str:
    # Text is cast as unbounded: assigning it to the varchar(n) column still checks
    # the length, where a cast to varchar(n) would silently cut it.
    if isinstance(field, models.CharField | models.TextField):
        return "text"
    return str(field.db_type(connection))


def returning_insert(obj: models.Model) -> tuple[str, list[Any]]:
    """INSERT of a new object's row ... RETURNING 1, as a part of a statement."""
    plan = _plan(type(obj))
    for field in plan.fields:
        field.pre_save(obj, add=True)
    return f"{plan.insert} RETURNING 1", [read(obj) for read in plan.readers]


def returning_update(obj: models.Model, names: Sequence[str], *, version: int) -> tuple[str, list[Any]]:
    """UPDATE of the columns `names` of `obj`'s row while its version is still `version`, RETURNING 1."""
    names = tuple(dict.fromkeys(names))
    for name in names:
        obj._meta.get_field(name).pre_save(obj, add=False)  # type: ignore[union-attr]
    statement, readers = _update_statement(type(obj), names)
    return f"{statement} AND version = %s RETURNING 1", [*(read(obj) for read in readers), version]


def insert_per_row(
    obj: models.Model, *, source: str, computed: Mapping[str, str] | None = None
) -> tuple[str, list[Any]]:
    """INSERT of `obj`'s row once per row that the CTE `source` returns.

    Columns named in `computed` (attnames) take that SQL expression, which may
    read `source`'s columns, instead of the object's value.
    """
    statement, readers = _per_row_statement(type(obj), source, tuple((computed or {}).items()))
    for field in _plan(type(obj)).fields:
        field.pre_save(obj, add=True)
    return statement, [read(obj) for read in readers]


@functools.cache
def _per_row_statement(
    model: type[models.Model], source: str, computed: tuple[tuple[str, str], ...]
) -> tuple[str, list[Callable[[models.Model], Any]]]:
    # Built once per shape: the text (and the field types it casts to) is the same for
    # every row of a model written from the same source, only the parameters differ.
    expressions_of = dict(computed)
    plan = _plan(model)
    expressions: list[str] = []
    readers: list[Callable[[models.Model], Any]] = []
    for field, read in zip(plan.fields, plan.readers, strict=True):
        if field.attname in expressions_of:
            expressions.append(expressions_of[field.attname])
        else:
            expressions.append(f"%s::{_cast(field)}")
            readers.append(read)
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(field.column) for field in plan.fields)
    return f"INSERT INTO {table} ({columns}) SELECT {', '.join(expressions)} FROM {source}", readers


def run_together(
    parts: Sequence[Part], select: str, select_params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """Run the parts as the CTEs of one statement (PostgreSQL) whose result is `select`."""
    ctes = ", ".join(f"{name} AS ({sql})" for name, sql, _ in parts)
    params = [param for _, _, part_params in parts for param in part_params] + list(select_params)
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {ctes} {select}", params)
        return cursor.fetchall()


def _json_value(value: Any) -> Any:
    # What json.dumps cannot write itself, as the column's text input reads it back exactly.
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} has no JSON form here")


def insert_rows_json(
    model: type[models.Model], objs: Sequence[models.Model], *, source: str
) -> tuple[str, list[Any]]:
    """INSERT of new objects' rows, sent as one JSON parameter, once per row of the CTE `source`.

    However many rows, the statement's text is the same, and it takes one
    parameter: a statement with a few rows of many columns would otherwise vary
    with the number of rows and pass psycopg's limit on the parameters of a
    statement whose conversion it caches.
    """
    statement, fields = _json_rows_statement(model, source)
    for obj in objs:
        for field in fields:
            field.pre_save(obj, add=True)
    rows = [{field.column: getattr(obj, field.attname) for field in fields} for obj in objs]
    return statement, [json_codec.dumps_text(rows, default=_json_value)]


@functools.cache
def _json_rows_statement(
    model: type[models.Model], source: str
) -> tuple[str, list["models.Field[Any, Any]"]]:
    fields = _plan(model).fields
    if any(isinstance(field, models.JSONField) and field.encoder is not None for field in fields):
        raise ValueError(f"{model.__name__} has a JSON field with its own encoder: not sent as JSON rows")
    quote = connection.ops.quote_name
    columns = [quote(field.column) for field in fields]
    # A JSON field's value is nested JSON, read as jsonb; other columns read the JSON text.
    types = ["jsonb" if isinstance(field, models.JSONField) else _cast(field) for field in fields]
    definitions = ", ".join(f"{column} {kind}" for column, kind in zip(columns, types, strict=True))
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(columns)}) "
        f"SELECT {', '.join(f'r.{column}' for column in columns)} "
        f"FROM {source}, jsonb_to_recordset(%s::jsonb) AS r({definitions})"
    ), fields


def write_with_records(
    write: tuple[str, list[Any]],
    records: Sequence[models.Model],
    *,
    rows: tuple[type[models.Model], Sequence[models.Model]] | None = None,
) -> bool:
    """Run `write` (returning_insert or returning_update) and insert `records` only if it wrote its row.

    `rows` (a model and new objects of it, possibly none) are inserted with it
    too, as one part whatever their number (insert_rows_json). One statement, one
    round trip. Returns whether the row was written (an update whose version no
    longer matched writes nothing, records included).
    """
    parts: list[Part] = [("written", *write)]
    if rows is not None:
        parts.append(("rows", *insert_rows_json(rows[0], rows[1], source="written")))
    for position, record in enumerate(records):
        parts.append((f"record_{position}", *insert_per_row(record, source="written")))
    (row,) = run_together(parts, "SELECT count(*) FROM written")
    for record in [*records, *(rows[1] if rows is not None else ())]:
        record._state.adding = False
        record._state.db = connection.alias
    return bool(row[0])
