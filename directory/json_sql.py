"""SQL expressions for values kept in a JSON document (`User.extensions`, `Group.extensions`).

The SCIM filters and sorting compare these expressions, and directory.extensions
builds the expression indexes of operator-defined attributes from the very same
ones: PostgreSQL uses an expression index only when the query's expression is
the indexed one, so both sides must come from here.

Each reads NULL when the key is absent, JSON null, or (for numbers and
booleans) of another JSON type, identically on PostgreSQL and SQLite, so a
value stored before its attribute was declared never makes a query fail.
"""

from typing import Any

from django.db import NotSupportedError
from django.db.models import BooleanField, DecimalField, F, Func, Q, TextField
from django.db.models.fields.json import KeyTextTransform, compile_json_path


class JSONText(KeyTextTransform):
    """A key of a JSON document as text, NULL when absent or JSON null, on both databases.

    Django's KT reads JSON null as the text 'null' on SQLite, which would make
    a cleared extension attribute look present there and absent on PostgreSQL.
    """

    def as_sqlite(self, compiler: Any, connection: Any) -> tuple[str, tuple[Any, ...]]:
        lhs, params, keys = self.preprocess_lhs(compiler, connection)
        return f"JSON_EXTRACT({lhs}, %s)", (*params, compile_json_path(keys))


class _JSONScalar(Func):
    """A typed scalar at `keys` inside the JSON column `field`; NULL unless the JSON value has that type."""

    # jsonb_typeof() names on PostgreSQL, json_type() names on SQLite.
    postgres_type = ""
    postgres_cast = ""
    sqlite_types: tuple[str, ...] = ()

    def __init__(self, field: str, *keys: str) -> None:
        super().__init__(F(field))
        self.keys = list(keys)

    def _column(self, compiler: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.get_source_expressions()[0])
        return sql, list(params)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, params = self._column(compiler)
        sql = (
            f"(CASE WHEN jsonb_typeof({column} #> %s) = '{self.postgres_type}' "
            f"THEN ({column} #>> %s)::{self.postgres_cast} END)"
        )
        return sql, [*params, self.keys, *params, self.keys]

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, params = self._column(compiler)
        path = compile_json_path(self.keys)
        types = ", ".join(f"'{name}'" for name in self.sqlite_types)
        sql = f"(CASE WHEN JSON_TYPE({column}, %s) IN ({types}) THEN {self.sqlite_value(column)} END)"
        return sql, [*params, path, *params, path]

    def sqlite_value(self, column: str) -> str:
        return f"JSON_EXTRACT({column}, %s)"

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> tuple[str, list[Any]]:
        raise NotSupportedError(f"JSON values are not implemented on {connection.vendor}")


class JSONNumber(_JSONScalar):
    """A JSON number as SQL numeric (PostgreSQL) or INTEGER/REAL (SQLite)."""

    output_field = DecimalField()
    postgres_type = "number"
    postgres_cast = "numeric"
    sqlite_types = ("integer", "real")


class JSONBoolean(_JSONScalar):
    """A JSON true/false as a SQL boolean (1/0 on SQLite)."""

    output_field = BooleanField()
    postgres_type = "boolean"
    postgres_cast = "boolean"
    sqlite_types = ("true", "false")

    def sqlite_value(self, column: str) -> str:
        # JSON_EXTRACT reads true/false as 1/0 already; JSON_TYPE keeps the statement's two paths.
        return f"(JSON_TYPE({column}, %s) = 'true')"


class NumberValue(Func):
    """A number parameter compared with JSONNumber: numeric on PostgreSQL (so the expression index
    on the numeric value applies), a number rather than Django's decimal-as-text on SQLite."""

    output_field = DecimalField()

    def __init__(self, number: Any) -> None:
        super().__init__()
        self.number = number

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        return "%s::numeric", [str(self.number)]

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        return "%s", [float(self.number) if not isinstance(self.number, int) else self.number]

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> tuple[str, list[Any]]:
        raise NotSupportedError(f"Numbers are not implemented on {connection.vendor}")


class JSONElement(Func):
    """One element of the array JSONArrayAny walks, typed like _JSONScalar (NULL for another JSON type).

    Only meaningful inside JSONArrayAny's condition, which names the element row.
    """

    def __init__(self, type_: str) -> None:
        super().__init__()
        self.type = type_
        self.output_field = {"number": DecimalField(), "boolean": BooleanField()}.get(type_, TextField())

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        item = f"{_ELEMENT}.item"
        if self.type == "number":
            return f"(CASE WHEN jsonb_typeof({item}) = 'number' THEN ({item} #>> '{{}}')::numeric END)", []
        if self.type == "boolean":
            return f"(CASE WHEN jsonb_typeof({item}) = 'boolean' THEN ({item} #>> '{{}}')::boolean END)", []
        return f"(CASE WHEN jsonb_typeof({item}) = 'string' THEN {item} #>> '{{}}' END)", []

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        kind, value = f"{_ELEMENT}.type", f"{_ELEMENT}.value"
        if self.type == "number":
            return f"(CASE WHEN {kind} IN ('integer', 'real') THEN {value} END)", []
        if self.type == "boolean":
            return f"(CASE {kind} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)", []
        return f"(CASE WHEN {kind} = 'text' THEN {value} END)", []

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> tuple[str, list[Any]]:
        raise NotSupportedError(f"JSON values are not implemented on {connection.vendor}")


_ELEMENT = "scim_element"


class JSONArrayAny(Func):
    """EXISTS an element of the JSON array at `keys` for which `condition` (a Q on JSONElement) holds.

    A correlated EXISTS over jsonb_array_elements (PostgreSQL) or json_each
    (SQLite): one SQL query, never the rows in Python. Not indexed.
    """

    output_field = BooleanField()
    conditional = True

    def __init__(self, field: str, keys: list[str], condition: Q) -> None:
        super().__init__(F(field))
        self.keys = list(keys)
        self.condition: Any = condition

    def resolve_expression(self, *args: Any, **kwargs: Any) -> "JSONArrayAny":
        resolved: JSONArrayAny = super().resolve_expression(*args, **kwargs)
        resolved.condition = self.condition.resolve_expression(*args, **kwargs)
        return resolved

    def _condition(self, compiler: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.condition)
        return sql or "1 = 1", list(params)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.get_source_expressions()[0])
        condition, condition_params = self._condition(compiler)
        array = f"{column} #> %s"
        sql = (
            f"EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({array}) = 'array'"
            f" THEN {array} END) AS {_ELEMENT}(item) WHERE {condition})"
        )
        return sql, [*params, self.keys, *params, self.keys, *condition_params]

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.get_source_expressions()[0])
        condition, condition_params = self._condition(compiler)
        path = compile_json_path(self.keys)
        sql = (
            f"EXISTS (SELECT 1 FROM json_each(CASE WHEN JSON_TYPE({column}, %s) = 'array'"
            f" THEN JSON_EXTRACT({column}, %s) END) AS {_ELEMENT} WHERE {condition})"
        )
        return sql, [*params, path, *params, path, *condition_params]

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> tuple[str, list[Any]]:
        raise NotSupportedError(f"JSON arrays are not implemented on {connection.vendor}")


__all__ = ["JSONArrayAny", "JSONBoolean", "JSONElement", "JSONNumber", "JSONText", "NumberValue"]
