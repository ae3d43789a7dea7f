"""Lookups by one value (a primary key, a unique name), compiled to SQL once per process, not per call.

Building and compiling a queryset costs Django several hundred microseconds,
most of a simple primary-key lookup and more than the database's own work; the
SCIM API makes such lookups on every request. A PrecompiledLookup compiles its
queryset the first time it runs on a database backend, then only executes the
SQL with the new value and builds the instances the way Django's own model
iterator does (field converters, then Model.from_db, then annotations).

Only for querysets of one model without select_related, filtered by one value.
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
        queryset = self.build(self.sentinel)
        compiler: SQLCompiler = queryset.query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        sentinel = self.prepare(self.sentinel)
        positions = [index for index, param in enumerate(params) if param == sentinel]
        klass_info = compiler.klass_info
        if len(positions) != 1 or klass_info is None or klass_info.get("related_klass_infos"):
            raise ValueError(f"Cannot precompile {sql!r}: one lookup value and no select_related wanted")
        fields = klass_info["select_fields"]
        start, end = fields[0], fields[-1] + 1
        converters = compiler.get_converters([column for column, _, _ in compiler.select])
        return _Compiled(
            sql=sql,
            params=tuple(params),
            value_index=positions[0],
            model_start=start,
            model_end=end,
            init_list=[column[0].target.attname for column in compiler.select[start:end]],
            annotations=list(compiler.annotation_col_map.items()),
            converters=[
                (position, funcs, expression) for position, (funcs, expression) in converters.items()
            ],
        )

    def run(self, value: Any) -> list[M]:
        """The rows for `value`; ValueError when it is not a primary key (e.g. not a UUID) of a pk lookup."""
        key = (connection.alias, connection.vendor)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile()
        params = list(compiled.params)
        params[compiled.value_index] = self.prepare(value)
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        result = []
        for fetched in rows:
            row = list(fetched)
            for position, funcs, expression in compiled.converters:
                for convert in funcs:
                    row[position] = convert(row[position], expression, connection)
            obj = self.model.from_db(
                connection.alias, compiled.init_list, row[compiled.model_start : compiled.model_end]
            )
            for name, position in compiled.annotations:
                setattr(obj, name, row[position])
            result.append(obj)
        return result
