"""Lookups by one value (a primary key, a unique name), compiled to SQL once per process, not per call.

Building and compiling a queryset costs Django several hundred microseconds,
most of a simple primary-key lookup and more than the database's own work; the
SCIM API makes such lookups on every request. A PrecompiledLookup compiles its
queryset the first time it runs on a database backend, then only executes the
SQL with the new value and builds the instances the way Django's own model
iterator does (field converters, then Model.from_db, then annotations).

Only for querysets of one model without select_related, filtered by one value. PrecompiledWindow
does the same for the pages of an unfiltered, ordered queryset.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.core.exceptions import ValidationError
from django.db import connection, models
from django.db.models.sql.compiler import SQLCompiler

M = TypeVar("M", bound=models.Model)

# Stands in for the looked-up value while compiling: no real id is all zeros.
_SENTINEL = uuid.UUID(int=0)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: tuple[Any, ...]
    value_index: int
    model_start: int
    model_end: int
    init_list: list[str]
    annotations: list[tuple[str, int]]
    converters: list[tuple[int, list[Callable[..., Any]], Any]]


class PrecompiledLookup(Generic[M]):
    """`build(value)` returns the queryset filtered by that value; run(value) returns its rows."""

    def __init__(
        self,
        model: type[M],
        build: Callable[[Any], models.QuerySet[M]],
        *,
        sentinel: Any = _SENTINEL,
        prepare: Callable[[Any], Any] | None = None,
    ) -> None:
        """`prepare` turns a looked-up value into the query parameter (default: a primary key's)."""
        self.model = model
        self.build = build
        self.sentinel = sentinel
        self.prepare = prepare or self._prepare_pk
        self._compiled: dict[tuple[str, str], _Compiled] = {}

    def _prepare_pk(self, value: Any) -> Any:
        try:
            return self.model._meta.pk.get_db_prep_value(value, connection)  # type: ignore[union-attr]
        except ValidationError:
            raise ValueError(f"Not a primary key of {self.model.__name__}: {value!r}") from None

    def _compile(self) -> _Compiled:
        sentinel = self.prepare(self.sentinel)
        compiled = _compile(self.build(self.sentinel), value=sentinel)
        if compiled.value_index < 0:
            raise ValueError(f"Cannot precompile {compiled.sql!r}: one lookup value wanted")
        return compiled

    def run(self, value: Any) -> list[M]:
        """The rows for `value`; ValueError when it is not a primary key (e.g. not a UUID) of a pk lookup."""
        key = (connection.alias, connection.vendor)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile()
        params = list(compiled.params)
        params[compiled.value_index] = self.prepare(value)
        return _instances(self.model, compiled, compiled.sql, params)


class PrecompiledWindow(Generic[M]):
    """Rows `offset` to `offset + limit` of an ordered queryset, compiled once per process.

    The page of a list request with no filter in the default order, which every client paging
    through a directory asks for: Django would build and compile the same query for each page.
    LIMIT and OFFSET are appended to the compiled SQL. Same restrictions as PrecompiledLookup, and
    the queryset takes no parameter at all.
    """

    def __init__(self, model: type[M], build: Callable[[], models.QuerySet[M]]) -> None:
        self.model = model
        self.build = build
        self._compiled: dict[tuple[str, str], _Compiled] = {}

    def _compile(self) -> _Compiled:
        queryset = self.build()
        if not queryset.ordered or queryset.query.is_sliced:
            raise ValueError("PrecompiledWindow needs an ordered, unsliced queryset")
        compiled = _compile(queryset)
        if compiled.params:
            raise ValueError(f"Cannot precompile {compiled.sql!r} as a window: it takes parameters")
        return compiled

    def run(self, *, offset: int, limit: int) -> list[M]:
        key = (connection.alias, connection.vendor)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile()
        # Written into the SQL, as Django writes them: PostgreSQL plans a parameter LIMIT for a
        # tenth of the table and keeps planning every page anew rather than use that plan.
        sql = f"{compiled.sql} LIMIT {int(limit)} OFFSET {int(offset)}"
        return _instances(self.model, compiled, sql, [])


def _compile(queryset: models.QuerySet[Any], *, value: Any = None) -> _Compiled:
    """The queryset's SQL and how to build instances from its rows; value_index is where `value` goes."""
    compiler: SQLCompiler = queryset.query.get_compiler(connection=connection)
    sql, params = compiler.as_sql()
    positions = [index for index, param in enumerate(params) if value is not None and param == value]
    klass_info = compiler.klass_info
    if len(positions) > 1 or klass_info is None or klass_info.get("related_klass_infos"):
        raise ValueError(f"Cannot precompile {sql!r}: at most one lookup value and no select_related")
    fields = klass_info["select_fields"]
    start, end = fields[0], fields[-1] + 1
    converters = compiler.get_converters([column for column, _, _ in compiler.select])
    return _Compiled(
        sql=sql,
        params=tuple(params),
        value_index=positions[0] if positions else -1,
        model_start=start,
        model_end=end,
        init_list=[column[0].target.attname for column in compiler.select[start:end]],
        annotations=list(compiler.annotation_col_map.items()),
        converters=[(position, funcs, expression) for position, (funcs, expression) in converters.items()],
    )


def _instances(model: type[M], compiled: _Compiled, sql: str, params: list[Any]) -> list[M]:
    """Run `sql` and build instances the way Django's model iterator does."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    result = []
    for fetched in rows:
        row = list(fetched)
        for position, funcs, expression in compiled.converters:
            for convert in funcs:
                row[position] = convert(row[position], expression, connection)
        obj = model.from_db(
            connection.alias, compiled.init_list, row[compiled.model_start : compiled.model_end]
        )
        for name, position in compiled.annotations:
            setattr(obj, name, row[position])
        result.append(obj)
    return result
