"""Operator-defined extension schemas: cached definitions, value checks, indexes, and data removal.

- `definitions()` returns every ExtensionSchema with its attributes as frozen
  dataclasses, cached per process. A stamp in Django's cache says when to
  reload: the services change it whenever a definition changes (at once, and
  again on commit, so no process keeps what it read in between), and a process
  looks at the stamp at most once every CHECK_SECONDS. A busy SCIM endpoint
  therefore reads neither the database nor the cache on most requests. Several
  web processes need a shared cache (REDIS_URL) to see each other's changes.
- `clean()` validates the extension values a write changes (type, canonical
  values) and `check_unique()` enforces uniqueness; the unique expression
  index is the backstop for racing writers.
- Single-valued attributes get an expression index on the value expression of
  directory.json_sql (LOWER()ed when caseExact is false), the one SCIM filters
  and sorting compare, so PostgreSQL can use it. Unique ones get a unique
  index on both databases; the others only on PostgreSQL, where the planner
  can use it (SQLite's planner never matches a JSON path passed as a parameter).
- `holders()` / `strip()` export and remove stored values set-based when a
  schema or attribute is removed.
"""

import math
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Count, Expression, Q
from django.db.models.fields.json import compile_json_path
from django.db.models.functions import Lower
from django.db.models.lookups import Exact
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from directory.correlation import current_request_id
from directory.exceptions import InvalidValue, UniquenessConflict
from directory.json_sql import JSONBoolean, JSONNumber, JSONText, NumberValue
from directory.models import AuditEntry, ChangeEvent, ExtensionAttribute, ExtensionSchema, Group, User

# How stale a process's copy may be, at most, after another process changed a definition.
CHECK_SECONDS = 1.0
STAMP_KEY = "directory:extension-schemas:stamp"
# Values of single-valued attributes are indexed: a btree entry holds about 2,700 bytes on
# PostgreSQL, and 512 characters of UTF-8 stay under it.
MAX_STRING_LENGTH = 512
MAX_VALUES = 100
_INT64 = 2**63
STRING_TYPES = frozenset({"string", "reference", "dateTime"})


@dataclass(frozen=True)
class AttributeDefinition:
    """One operator-defined attribute, as read from ExtensionAttribute."""

    id: int
    name: str
    type: str
    multi_valued: bool = False
    required: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    case_exact: bool = False
    canonical_values: tuple[str, ...] = ()
    description: str = ""

    @property
    def unique(self) -> bool:
        return self.uniqueness != "none"

    @property
    def index_name(self) -> str:
        return index_name(self.id)


@dataclass(frozen=True)
class SchemaDefinition:
    """One operator-defined extension schema and its attributes."""

    id: uuid.UUID
    urn: str
    name: str
    resource_type: str  # "user" or "group"
    description: str = ""
    required: bool = False
    attributes: tuple[AttributeDefinition, ...] = ()

    @cached_property
    def _by_name(self) -> dict[str, AttributeDefinition]:
        return {attribute.name.lower(): attribute for attribute in self.attributes}

    def attribute(self, name: str) -> AttributeDefinition | None:
        return self._by_name.get(name.lower())


@dataclass(frozen=True)
class Definitions:
    """Every operator-defined schema; a new object whenever anything in them changes."""

    schemas: tuple[SchemaDefinition, ...] = ()

    @cached_property
    def _by_urn(self) -> dict[str, SchemaDefinition]:
        return {schema.urn.lower(): schema for schema in self.schemas}

    def for_type(self, resource_type: str) -> tuple[SchemaDefinition, ...]:
        return tuple(schema for schema in self.schemas if schema.resource_type == resource_type)

    def schema(self, urn: str, resource_type: str | None = None) -> SchemaDefinition | None:
        schema = self._by_urn.get(urn.lower())
        if schema is None or (resource_type is not None and schema.resource_type != resource_type):
            return None
        return schema


def index_name(attribute_id: int) -> str:
    return f"directory_extattr_{attribute_id}"


# --- the per-process cache -------------------------------------------------------------


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.definitions: Definitions | None = None
        self.stamp: str | None = None
        self.checked = 0.0


_cache = _Cache()


def definitions() -> Definitions:
    """The current definitions; reads the database only after a change (see the module docstring)."""
    current = _cache.definitions
    now = time.monotonic()
    if current is not None and now - _cache.checked < CHECK_SECONDS:
        return current
    # The stamp is read before the rows: a change committed in between leaves a newer stamp
    # behind, so the next check reloads, whereas the other order could keep old rows for good.
    stamp = cache.get(STAMP_KEY)
    if stamp is None:
        cache.add(STAMP_KEY, uuid.uuid4().hex, timeout=None)
        stamp = cache.get(STAMP_KEY)
    with _cache.lock:
        if _cache.definitions is not None and stamp is not None and stamp == _cache.stamp:
            _cache.checked = now
            return _cache.definitions
        loaded = _load()
        _cache.definitions, _cache.stamp, _cache.checked = loaded, stamp, now
        return loaded


def _load() -> Definitions:
    schemas = ExtensionSchema.objects.prefetch_related("attributes").order_by("resource_type", "urn")
    return Definitions(
        tuple(
            SchemaDefinition(
                id=schema.id,
                urn=schema.urn,
                name=schema.name,
                resource_type=schema.resource_type,
                description=schema.description,
                required=schema.required,
                attributes=tuple(
                    AttributeDefinition(
                        id=attribute.id,
                        name=attribute.name,
                        type=attribute.type,
                        multi_valued=attribute.multi_valued,
                        required=attribute.required,
                        mutability=attribute.mutability,
                        returned=attribute.returned,
                        uniqueness=attribute.uniqueness,
                        case_exact=attribute.case_exact,
                        canonical_values=tuple(attribute.canonical_values or ()),
                        description=attribute.description,
                    )
                    for attribute in sorted(schema.attributes.all(), key=lambda a: (a.position, a.id))
                ),
            )
            for schema in schemas
        )
    )


def assume(known: Definitions) -> None:
    """Take `known` as the current definitions without reading the database, until the next change.

    For tests: each starts from a fresh database, which defines none, whatever an
    earlier (rolled back) test defined.
    """
    stamp = uuid.uuid4().hex
    cache.set(STAMP_KEY, stamp, timeout=None)
    with _cache.lock:
        _cache.definitions, _cache.stamp, _cache.checked = known, stamp, time.monotonic()


def changed() -> None:
    """Tell every process to reload: now for this one, and again once the change is committed."""
    forget()
    transaction.on_commit(forget)


def forget() -> None:
    """Drop this process's copy and give the shared stamp a new value."""
    cache.set(STAMP_KEY, uuid.uuid4().hex, timeout=None)
    with _cache.lock:
        _cache.definitions, _cache.stamp = None, None


# --- values -----------------------------------------------------------------------------------


def _model(resource_type: str) -> type[User] | type[Group]:
    return User if resource_type == "user" else Group


def resource_type_of(model: type[models.Model]) -> str:
    return "user" if model is User else "group"


def _label(schema: SchemaDefinition, attribute: AttributeDefinition) -> str:
    return f"{schema.urn}:{attribute.name}"


def _scalar(attribute: AttributeDefinition, value: Any, label: str) -> Any:
    """One value checked against the attribute's type (and canonical values); None when empty."""
    if value is None or value == "":
        return None
    kind = attribute.type
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidValue(f"{label} must be a boolean (true or false), got {value!r}", field=label)
        return value
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue(f"{label} must be an integer, got {value!r}", field=label)
        if not -_INT64 <= value < _INT64:
            raise InvalidValue(f"{label} must fit in 64 bits, got {value!r}", field=label)
        return value
    if kind == "decimal":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidValue(f"{label} must be a number, got {value!r}", field=label)
        return value
    if not isinstance(value, str):
        raise InvalidValue(f"{label} must be a string, got {value!r}", field=label)
    if len(value) > MAX_STRING_LENGTH:
        raise InvalidValue(f"{label} is longer than {MAX_STRING_LENGTH} characters", field=label)
    if kind == "dateTime":
        try:
            moment = parse_datetime(value)
        except ValueError:
            moment = None
        if moment is None:
            raise InvalidValue(
                f"{label} must be an xsd:dateTime such as 2025-01-31T09:00:00Z, got {value!r}", field=label
            )
        return value
    if attribute.canonical_values:
        return _canonical(attribute, value, label)
    return value


def _canonical(attribute: AttributeDefinition, value: str, label: str) -> str:
    for canonical in attribute.canonical_values:
        if canonical == value or (not attribute.case_exact and canonical.lower() == value.lower()):
            return canonical
    allowed = ", ".join(repr(canonical) for canonical in attribute.canonical_values)
    raise InvalidValue(f"{label} must be one of {allowed}, got {value!r}", field=label)


def clean_value(schema: SchemaDefinition, attribute: AttributeDefinition, value: Any) -> Any:
    """A value for `attribute` as stored, or None for no value; InvalidValue if it does not fit."""
    label = _label(schema, attribute)
    if not attribute.multi_valued:
        if isinstance(value, list | dict):
            raise InvalidValue(f"{label} is single-valued: it takes one value, got {value!r}", field=label)
        return _scalar(attribute, value, label)
    if value is None or value == "" or value == []:
        return None
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_VALUES:
        raise InvalidValue(f"{label} takes at most {MAX_VALUES} values", field=label)
    clean = [_scalar(attribute, item, label) for item in items]
    return [item for item in clean if item is not None] or None


def clean(resource_type: str, extensions: Mapping[str, Any], *, current: Mapping[str, Any]) -> dict[str, Any]:
    """`extensions` to store, with declared schemas' URNs and attribute names in canonical case.

    Only values that differ from `current` are checked, so a value stored before
    its attribute was declared does not block unrelated writes. Undeclared URNs
    are kept as they are.
    """
    known = definitions()
    result: dict[str, Any] = {}
    for key, data in extensions.items():
        schema = known.schema(key, resource_type) if isinstance(key, str) else None
        if schema is None:
            result[key] = data
            continue
        if not isinstance(data, dict):
            raise InvalidValue(f"{schema.urn} must be an object of its attributes", field=schema.urn)
        before = _object(current, schema.urn)
        values: dict[str, Any] = {}
        for name, value in data.items():
            attribute = schema.attribute(name) if isinstance(name, str) else None
            if attribute is None:
                if before.get(name) == value:
                    values[name] = value
                    continue
                raise InvalidValue(f"'{name}' is not an attribute of {schema.urn}", field=schema.urn)
            if before.get(attribute.name) == value and attribute.name in before:
                values[attribute.name] = value
                continue
            cleaned = clean_value(schema, attribute, value)
            if cleaned is not None:
                values[attribute.name] = cleaned
        if values:
            result[schema.urn] = values
    return result


def _object(extensions: Mapping[str, Any] | None, urn: str) -> dict[str, Any]:
    data = (extensions or {}).get(urn)
    return data if isinstance(data, dict) else {}


def redacted(resource_type: str, data: Any, mask: str) -> Any:
    """`data` (an `extensions` value, or None) with writeOnly attributes' values replaced by `mask`."""
    if not isinstance(data, dict):
        return data
    result = dict(data)
    for schema in definitions().for_type(resource_type):
        values = result.get(schema.urn)
        if not isinstance(values, dict):
            continue
        hidden = {a.name for a in schema.attributes if a.mutability == "writeOnly" and a.name in values}
        if hidden:
            result[schema.urn] = {name: mask if name in hidden else value for name, value in values.items()}
    return result


# --- expressions and uniqueness ------------------------------------------------------------


def value_expression(urn: str, attribute: AttributeDefinition) -> Expression:
    """The stored value of a single-valued attribute as SQL: what filters, sorting and indexes use."""
    if attribute.type in ("integer", "decimal"):
        return JSONNumber("extensions", urn, attribute.name)
    if attribute.type == "boolean":
        return JSONBoolean("extensions", urn, attribute.name)
    return JSONText.from_lookup(f"extensions__{urn}__{attribute.name}")


def _compared(urn: str, attribute: AttributeDefinition) -> Expression:
    expression = value_expression(urn, attribute)
    if attribute.type in STRING_TYPES and not attribute.case_exact:
        return Lower(expression)
    return expression


def compared_expression(urn: str, attribute: AttributeDefinition) -> Expression:
    """The value as compared for equality (lower case unless caseExact): what its index covers."""
    return _compared(urn, attribute)


def _index_expression(urn: str, attribute: AttributeDefinition) -> Expression | None:
    """What an attribute's index covers; None when it gets none."""
    if attribute.multi_valued:
        return None
    if not attribute.unique and attribute.type in ("boolean", "dateTime"):
        # Two values are no use to an index; dateTime filters compare instants, not the text.
        return None
    return _compared(urn, attribute)


def _same_value(urn: str, attribute: AttributeDefinition, value: Any) -> Q:
    expression = _compared(urn, attribute)
    if attribute.type in ("integer", "decimal"):
        return Q(Exact(expression, NumberValue(value)))
    if isinstance(value, str) and not attribute.case_exact and attribute.type in STRING_TYPES:
        value = value.lower()
    return Q(Exact(expression, value))


def check_unique(
    resource_type: str,
    extensions: Mapping[str, Any],
    *,
    current: Mapping[str, Any] | None,
    exclude: uuid.UUID | None,
) -> bool:
    """Raise UniquenessConflict when a changed unique value is another resource's.

    Returns whether any unique value changed (the write then needs a savepoint,
    in case a racing writer takes the value first and the unique index refuses).
    """
    changed_any = False
    for schema, attribute, value in _changed_unique(resource_type, extensions, current):
        changed_any = True
        others = _model(resource_type).objects.filter(_same_value(schema.urn, attribute, value))
        if exclude is not None:
            others = others.exclude(pk=exclude)
        if others.exists():
            raise UniquenessConflict(
                f"{_label(schema, attribute)} {value!r} is already taken", field=_label(schema, attribute)
            )
    return changed_any


def unique_claims(
    resource_type: str, extensions: Mapping[str, Any], *, current: Mapping[str, Any] | None
) -> list[tuple[str, Any, Any]]:
    """(attribute label, value as compared, value) of each unique value `extensions` changes.

    Two claims with the same label and compared value are the same value to the unique index:
    what a dry run needs to find two records of one batch taking one value.
    """
    claims = []
    for schema, attribute, value in _changed_unique(resource_type, extensions, current):
        compared = value
        if isinstance(value, str) and not attribute.case_exact and attribute.type in STRING_TYPES:
            compared = value.lower()
        claims.append((_label(schema, attribute), compared, value))
    return claims


def _changed_unique(
    resource_type: str, extensions: Mapping[str, Any], current: Mapping[str, Any] | None
) -> Iterator[tuple[SchemaDefinition, AttributeDefinition, Any]]:
    for schema in definitions().for_type(resource_type):
        new, old = _object(extensions, schema.urn), _object(current, schema.urn)
        for attribute in schema.attributes:
            value = new.get(attribute.name)
            if attribute.unique and value is not None and value != old.get(attribute.name):
                yield schema, attribute, value


def conflict_from(error: IntegrityError) -> UniquenessConflict | None:
    """The UniquenessConflict a unique extension index raised, if it was one."""
    text = str(error)
    for schema in definitions().schemas:
        for attribute in schema.attributes:
            if attribute.unique and attribute.index_name in text:
                label = _label(schema, attribute)
                return UniquenessConflict(f"{label}: that value is already taken", field=label)
    return None


# --- indexes ---------------------------------------------------------------------------------


def _definition(attribute: ExtensionAttribute) -> AttributeDefinition:
    return AttributeDefinition(
        id=attribute.id,
        name=attribute.name,
        type=attribute.type,
        multi_valued=attribute.multi_valued,
        uniqueness=attribute.uniqueness,
        case_exact=attribute.case_exact,
    )


def create_index(schema: ExtensionSchema, attribute: ExtensionAttribute) -> None:
    """Create the attribute's expression index, if it gets one; InvalidValue if stored values clash."""
    definition = _definition(attribute)
    expression = _index_expression(schema.urn, definition)
    if expression is None or (not definition.unique and connection.vendor != "postgresql"):
        return
    model = _model(schema.resource_type)
    name = definition.index_name
    index: models.Index | models.UniqueConstraint
    if definition.unique:
        index = models.UniqueConstraint(expression, name=name)
    else:
        index = models.Index(expression, name=name)
    # Not entered as a context manager: SQLite's schema editor refuses to run inside a
    # transaction, and creating an index needs nothing but its SQL.
    editor = connection.schema_editor()
    statement = str(index.create_sql(model, editor))
    _run_pending_checks()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    except IntegrityError:
        raise InvalidValue(
            f"{schema.urn}:{attribute.name} cannot be unique: two {schema.resource_type}s already hold"
            " the same value",
            field="uniqueness",
        ) from None


def has_duplicates(urn: str, resource_type: str, attribute: AttributeDefinition) -> bool:
    """Whether two users (or groups) hold the same value, as a unique index would compare them."""
    expression = _compared(urn, attribute)
    return (
        _model(resource_type)
        .objects.annotate(extension_value=expression)
        .filter(extension_value__isnull=False)
        .values("extension_value")
        .annotate(holders=Count("pk"))
        .filter(holders__gt=1)
        .exists()
    )


def _run_pending_checks() -> None:
    # PostgreSQL refuses to change a table's indexes while the transaction holds deferred
    # foreign-key checks on it (rows written earlier in the same transaction): run them now,
    # as commit would, then defer again as Django's constraints expect.
    if connection.vendor == "postgresql":
        connection.check_constraints()


def drop_index(attribute_id: int) -> None:
    _run_pending_checks()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {connection.ops.quote_name(index_name(attribute_id))}")


def index_exists(model: type[models.Model], attribute_id: int) -> bool:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return index_name(attribute_id) in constraints


# --- holders of stored values ----------------------------------------------------------------


def _holding(urn: str, names: Sequence[str] | None) -> Q:
    if names:
        return Q(**{f"extensions__{urn}__has_any_keys": list(names)})
    return Q(extensions__has_key=urn)


def holder_count(urn: str, resource_type: str, names: Sequence[str] | None = None) -> int:
    """How many users (or groups) hold a value of the schema, or of the named attributes."""
    return _model(resource_type).objects.filter(_holding(urn, names)).count()


def holders(
    urn: str, resource_type: str, names: Sequence[str] | None = None, *, lock: bool = False
) -> dict[str, tuple[str, dict[str, Any]]]:
    """{id: (name, values held)} for every user (or group) holding a value of the schema (or attributes).

    With `lock` (inside a transaction), the rows stay locked on PostgreSQL until
    it ends, so what is exported is exactly what `strip` then removes.
    """
    model = _model(resource_type)
    rows = model.objects.filter(_holding(urn, names)).order_by("pk")
    if lock and connection.vendor == "postgresql":
        rows = rows.select_for_update(no_key=True)
    label = "user_name" if model is User else "display_name"
    result: dict[str, tuple[str, dict[str, Any]]] = {}
    for pk, name, stored in rows.values_list("pk", label, "extensions"):
        data = _object(stored, urn)
        if names:
            data = {key: value for key, value in data.items() if key in names}
        result[str(pk)] = (name, data)
    return result


def strip(
    urn: str,
    resource_type: str,
    held: Mapping[str, tuple[str, dict[str, Any]]],
    names: Sequence[str] | None,
    *,
    actor: Any,
    note: str,
    hidden: Sequence[str] = (),
) -> int:
    """Remove the schema's object (or the named attributes) from the `held` rows (see `holders`).

    Each row gets a new version, an `updated` ChangeEvent (its SCIM representation
    changed) and an AuditEntry whose change is [the values removed, `note`],
    without the `hidden` (writeOnly) attributes' values.
    PostgreSQL does it all in one statement whatever the number of rows; SQLite
    in an UPDATE ... RETURNING per 500 rows and two bulk inserts. Returns how
    many rows changed.
    """
    if not held:
        return 0
    if connection.vendor == "postgresql":
        return _strip_postgresql(urn, resource_type, list(held), names, actor=actor, note=note, hidden=hidden)
    return _strip_sqlite(urn, resource_type, held, names, actor=actor, note=note, hidden=hidden)


def _strip_postgresql(
    urn: str,
    resource_type: str,
    ids: list[str],
    names: Sequence[str] | None,
    *,
    actor: Any,
    note: str,
    hidden: Sequence[str],
) -> int:
    model = _model(resource_type)
    table = connection.ops.quote_name(model._meta.db_table)
    label = "user_name" if model is User else "display_name"
    if names:
        inner = "(t.extensions -> %s) - %s::text[]"
        # The schema's object goes too when no attribute is left in it.
        new = (
            f"CASE WHEN {inner} = '{{}}'::jsonb THEN t.extensions - %s"
            f" ELSE jsonb_set(t.extensions, ARRAY[%s], {inner}) END"
        )
        new_params: list[Any] = [urn, list(names), urn, urn, urn, list(names)]
        held_sql = (
            "(SELECT jsonb_object_agg(key, value) FROM jsonb_each(extensions -> %s)"
            " WHERE key = ANY(%s::text[]))"
        )
        held_params: list[Any] = [urn, list(names)]
    else:
        new, new_params = "t.extensions - %s", [urn]
        held_sql, held_params = "extensions -> %s", [urn]
    now = timezone.now()
    events = connection.ops.quote_name(ChangeEvent._meta.db_table)
    audit = connection.ops.quote_name(AuditEntry._meta.db_table)
    # Every part of the statement reads the same snapshot: `old` sees the values before the UPDATE.
    sql = f"""
        WITH old AS (
            SELECT id, LEFT({label}, 255) AS label, ({held_sql}) - %s::text[] AS held
            FROM {table} WHERE id = ANY(%s::uuid[])
        ), stripped AS (
            UPDATE {table} AS t SET extensions = {new}, version = t.version + 1, last_modified = %s
            FROM old WHERE t.id = old.id RETURNING t.id, t.version, old.label, old.held
        ), events AS (
            INSERT INTO {events}
                (object_type, object_id, kind, version, member_type, member_id, created, request_id)
            SELECT %s, id, %s, version, '', NULL, %s, %s FROM stripped
        )
        INSERT INTO {audit} (
            created, actor_type, actor_id, actor_name, action, object_type, object_id, object_repr, changes,
            request_id
        )
        SELECT %s, %s, %s, %s, 'update', %s, id, label,
            jsonb_build_object('extensions', jsonb_build_array(jsonb_build_object(%s::text, held), %s::text)),
            %s
        FROM stripped
    """
    params = [
        *held_params,
        list(hidden),
        [uuid.UUID(pk) for pk in ids],
        *new_params,
        now,
        resource_type,
        ChangeEvent.Kind.UPDATED,
        now,
        current_request_id(),
        now,
        actor.type,
        actor.id,
        actor.name,
        resource_type,
        urn,
        note,
        current_request_id(),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def _strip_sqlite(
    urn: str,
    resource_type: str,
    held: Mapping[str, tuple[str, dict[str, Any]]],
    names: Sequence[str] | None,
    *,
    actor: Any,
    note: str,
    hidden: Sequence[str],
) -> int:
    model = _model(resource_type)
    table = connection.ops.quote_name(model._meta.db_table)
    path = compile_path(urn)
    if names:
        paths = [compile_path(urn, name) for name in names]
        removed = f"JSON_REMOVE(extensions, {', '.join(['%s'] * len(paths))})"
        new = (
            f"CASE WHEN JSON_EXTRACT({removed}, %s) = '{{}}' THEN JSON_REMOVE(extensions, %s)"
            f" ELSE {removed} END"
        )
        params: list[Any] = [*paths, path, path, *paths]
    else:
        new, params = "JSON_REMOVE(extensions, %s)", [path]
    now = timezone.now()
    stamp = connection.ops.adapt_datetimefield_value(now)
    ids = list(held)
    rows: list[tuple[uuid.UUID, int]] = []
    with connection.cursor() as cursor:
        for start in range(0, len(ids), 500):
            chunk = [uuid.UUID(pk).hex for pk in ids[start : start + 500]]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(
                f"UPDATE {table} SET extensions = {new}, version = version + 1, last_modified = %s "
                f"WHERE id IN ({marks}) RETURNING id, version",
                [*params, stamp, *chunk],
            )
            rows.extend((_uuid(row[0]), row[1]) for row in cursor.fetchall())
    ChangeEvent.objects.bulk_create(
        [
            ChangeEvent(
                object_type=resource_type, object_id=pk, kind=ChangeEvent.Kind.UPDATED, version=version
            )
            for pk, version in rows
        ],
        batch_size=1000,
    )
    AuditEntry.objects.bulk_create(
        [
            AuditEntry(
                created=now,
                actor_type=actor.type,
                actor_id=actor.id,
                actor_name=actor.name,
                action="update",
                object_type=resource_type,
                object_id=pk,
                object_repr=held[str(pk)][0][:255],
                changes={"extensions": [{urn: _without(held[str(pk)][1], hidden)}, note]},
            )
            for pk, _ in rows
        ],
        batch_size=1000,
    )
    return len(rows)


def _without(values: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key not in names}


def compile_path(*keys: str) -> str:
    return compile_json_path(list(keys))


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


__all__ = [
    "AttributeDefinition",
    "Definitions",
    "SchemaDefinition",
    "changed",
    "check_unique",
    "clean",
    "clean_value",
    "conflict_from",
    "create_index",
    "definitions",
    "drop_index",
    "forget",
    "holder_count",
    "holders",
    "strip",
    "value_expression",
]
