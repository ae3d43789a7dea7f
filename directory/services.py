"""Every write to the directory.

Each service runs in one transaction that also writes the change's
ChangeEvent (the outbox) and AuditEntry, bumps the object's `version`, and
raises only directory.exceptions errors. A write that changes nothing writes
nothing, so repeating a request is harmless.
"""

import copy
import functools
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import timedelta
from typing import Any, cast

from django.contrib.auth.hashers import make_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from directory import bulk_sql, extensions, membership_sql, statistics
from directory.actors import Actor
from directory.exceptions import (
    DirectoryError,
    InvalidValue,
    MembershipCycle,
    ObjectNotFound,
    UniquenessConflict,
    VersionMismatch,
)
from directory.models import (
    AuditEntry,
    ChangeEvent,
    ExtensionAttribute,
    ExtensionDataExport,
    ExtensionSchema,
    Group,
    User,
    UserValue,
)
from directory.precompiled import PrecompiledLookup

# Single-valued User attributes a service accepts, by model field name.
USER_FIELDS: frozenset[str] = frozenset(
    {
        "user_name",
        "external_id",
        "name_formatted",
        "family_name",
        "given_name",
        "middle_name",
        "honorific_prefix",
        "honorific_suffix",
        "display_name",
        "nick_name",
        "profile_url",
        "title",
        "user_type",
        "preferred_language",
        "locale",
        "timezone",
        "active",
        "employee_number",
        "cost_center",
        "organization",
        "division",
        "department",
        "manager_id",
        "extensions",
    }
)
GROUP_FIELDS: frozenset[str] = frozenset(
    {
        "display_name",
        "external_id",
        "description",
        "kind",
        "security_enabled",
        "mail_enabled",
        "mail_nickname",
        "extensions",
    }
)
VALUE_KEYS: frozenset[str] = frozenset({"value", "display", "type", "primary", "address"})
# Far below UserValue.position's limit, and more than any real identity carries.
MAX_VALUES_PER_ATTRIBUTE = 1000
ADDRESS_KEYS: frozenset[str] = frozenset(
    {"formatted", "streetAddress", "locality", "region", "postalCode", "country"}
)
REDACTED = "[redacted]"

# The tables a bulk create or update grows; their planner statistics are refreshed after one.
BULK_WRITTEN = (User, UserValue, ChangeEvent, AuditEntry)

MultiValues = Mapping[str, Sequence[Mapping[str, Any]]]
_UNSET: Any = object()


# --- helpers ----------------------------------------------------------------


def _check_fields(fields: Iterable[str], allowed: frozenset[str], entity: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise InvalidValue(f"Unknown {entity} attribute(s): {', '.join(unknown)}", field=unknown[0])


def _check_types(model: type[User] | type[Group], values: Mapping[str, Any]) -> dict[str, Any]:
    """Reject values of the wrong type or length before they reach the database; return them cleaned."""
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if name == "manager_id":
            try:
                clean[name] = None if value in (None, "") else uuid.UUID(str(value))
            except ValueError:
                raise InvalidValue(f"manager must be a user id, got {value!r}", field=name) from None
            continue
        field = model._meta.get_field(name)
        if isinstance(field, models.BooleanField):
            if not isinstance(value, bool) and not (value is None and field.null):
                raise InvalidValue(f"{field.verbose_name} must be a boolean, got {value!r}", field=name)
        elif isinstance(field, models.JSONField):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise InvalidValue(f"{field.verbose_name} must be an object", field=name)
        elif isinstance(field, (models.CharField, models.TextField)):
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise InvalidValue(f"{field.verbose_name} must be a string, got {value!r}", field=name)
            if field.max_length is not None and len(value) > field.max_length:
                raise InvalidValue(
                    f"{field.verbose_name} is longer than {field.max_length} characters", field=name
                )
        clean[name] = value
    return clean


def _check_version(obj: User | Group, expected_version: int | None) -> None:
    if expected_version is not None and obj.version != expected_version:
        raise VersionMismatch(
            f"{obj._meta.verbose_name} {obj.pk} is at version {obj.version}, not {expected_version}",
            current_version=obj.version,
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _event_fields(obj: User | Group, kind: ChangeEvent.Kind) -> dict[str, Any]:
    return {"object_type": _object_type(obj), "object_id": obj.pk, "kind": kind, "version": obj.version}


def _object_type(obj: User | Group) -> ChangeEvent.ObjectType:
    return ChangeEvent.ObjectType.USER if isinstance(obj, User) else ChangeEvent.ObjectType.GROUP


def _audit_row(actor: Actor, action: str, obj: User | Group, changes: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        actor_type=actor.type,
        actor_id=actor.id,
        actor_name=actor.name,
        action=action,
        object_type=_object_type(obj),
        object_id=obj.pk,
        object_repr=str(obj)[:255],
        changes=_redact_extensions(_object_type(obj), changes),
    )


def _audit(actor: Actor, action: str, obj: User | Group, changes: dict[str, Any]) -> AuditEntry:
    entry = _audit_row(actor, action, obj, changes)
    bulk_sql.insert_many(AuditEntry, [entry])
    return entry


def _event(obj: User | Group, kind: ChangeEvent.Kind) -> None:
    bulk_sql.insert_many(ChangeEvent, [ChangeEvent(**_event_fields(obj, kind))])


def _in_one_statement() -> bool:
    """Whether a write and its records go to the database as one statement (see bulk_sql).

    Not inside a caller's transaction: there a service keeps its own savepoint, so
    that a conflict it raises leaves the caller's transaction usable.
    """
    return connection.vendor == "postgresql" and not connection.in_atomic_block


def _redact_extensions(resource_type: str, changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` with the values of writeOnly extension attributes hidden, as passwords are."""
    if "extensions" not in changes:
        return changes
    sides = [extensions.redacted(resource_type, side, REDACTED) for side in changes["extensions"]]
    return {**changes, "extensions": sides}


# Row locks are FOR NO KEY UPDATE: they serialise writers of the same object
# but not the foreign-key checks of rows that merely reference it (a
# membership naming this group as a member), which would otherwise deadlock.


_locked_user = PrecompiledLookup(User, lambda pk: User.objects.select_for_update(no_key=True).filter(pk=pk))
_locked_group = PrecompiledLookup(
    Group, lambda pk: Group.objects.select_for_update(no_key=True).filter(pk=pk)
)


def _lock_user(user_id: uuid.UUID) -> User:
    try:
        (user,) = _locked_user.run(uuid.UUID(str(user_id)))
    except (ValueError, TypeError):
        raise ObjectNotFound(f"User {user_id} not found") from None
    return user


def _lock_group(group_id: uuid.UUID) -> Group:
    try:
        (group,) = _locked_group.run(uuid.UUID(str(group_id)))
    except (ValueError, TypeError):
        raise ObjectNotFound(f"Group {group_id} not found") from None
    return group


def _save_unique(
    obj: User | Group, *, field: str, label: str, update_fields: list[str] | None = None
) -> None:
    """Insert a new object or save a changed one; a value taken in its unique index is UniquenessConflict.

    The index decides, so no query looks first and a lost race reads the same. No
    savepoint either: the conflict ends the service, whose transaction rolls back
    (to its own savepoint when it runs inside a caller's transaction).
    """
    with _uniqueness_as_conflict(obj, field=field, label=label):
        if obj._state.adding:
            bulk_sql.insert_many(type(obj), [obj])
        elif update_fields is not None:
            bulk_sql.update_fields(obj, update_fields)
        else:
            obj.save()


@contextmanager
def _uniqueness_as_conflict(obj: User | Group, *, field: str, label: str) -> Iterator[None]:
    """A unique index violated by writing `obj` is UniquenessConflict (or the extension attribute's)."""
    try:
        yield
    except IntegrityError as exc:
        conflict = extensions.conflict_from(exc)
        if conflict is not None:
            raise conflict from None
        if "unique" in str(exc).lower():
            raise UniquenessConflict(
                f"{label} {getattr(obj, field)!r} is already taken", field=field
            ) from None
        raise


# --- multi-valued attributes -------------------------------------------------


# Django's Choices.values builds a new list on every access.
_VALUE_KINDS = frozenset(UserValue.Kind.values)
_GROUP_KINDS = frozenset(Group.Kind.values)


def normalise_values(values: MultiValues) -> dict[str, list[dict[str, Any]]]:
    """Validate multi-valued attribute input into a canonical, comparable form.

    Public so that forms can show these errors before anything is written.
    """
    normalised: dict[str, list[dict[str, Any]]] = {}
    for kind, items in values.items():
        if kind not in _VALUE_KINDS:
            raise InvalidValue(f"Unknown multi-valued attribute {kind!r}", field=kind)
        if len(items) > MAX_VALUES_PER_ATTRIBUTE:
            raise InvalidValue(f"{kind} has more than {MAX_VALUES_PER_ATTRIBUTE} values", field=kind)
        clean: list[dict[str, Any]] = []
        for item in items:
            _check_fields(item, VALUE_KEYS, f"{kind} sub-")
            address = dict(item.get("address") or {})
            if kind != UserValue.Kind.ADDRESSES and address:
                raise InvalidValue(f"Only addresses take address parts, not {kind}", field=kind)
            _check_fields(address, ADDRESS_KEYS, "address sub-")
            if not isinstance(item.get("primary", False), bool):
                raise InvalidValue(f"{kind}.primary must be a boolean", field=kind)
            entry = {
                "value": str(item.get("value") or ""),
                "display": str(item.get("display") or ""),
                "type": str(item.get("type") or ""),
                "primary": bool(item.get("primary", False)),
                "address": {key: str(part) for key, part in address.items() if part not in (None, "")},
            }
            if not entry["value"] and not entry["address"]:
                raise InvalidValue(f"A value of {kind} needs a value", field=kind)
            for name in ("display", "type"):
                limit = UserValue._meta.get_field(name).max_length
                if limit is not None and len(entry[name]) > limit:
                    raise InvalidValue(f"{kind}.{name} is longer than {limit} characters", field=kind)
            clean.append(entry)
        if sum(entry["primary"] for entry in clean) > 1:
            raise InvalidValue(f"At most one of {kind} may be primary", field=kind)
        normalised[kind] = clean
    return normalised


def _current_values(user: User, kinds: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    current: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    rows = UserValue.objects.filter(user=user, kind__in=list(current)).order_by("kind", "position")
    for row in rows:
        current[row.kind].append(
            {
                "value": row.value,
                "display": row.display,
                "type": row.type,
                "primary": row.primary,
                "address": row.address,
            }
        )
    return current


def _value_rows(user: User, values: dict[str, list[dict[str, Any]]]) -> list[UserValue]:
    return [
        UserValue(user=user, kind=kind, position=position, **entry)
        for kind, items in values.items()
        for position, entry in enumerate(items)
    ]


def _write_values(user: User, values: dict[str, list[dict[str, Any]]], *, replace: bool) -> None:
    if replace:
        UserValue.objects.filter(user=user, kind__in=list(values)).delete()
    bulk_sql.insert_many(UserValue, _value_rows(user, values))


# --- users ---------------------------------------------------------------------


def _check_user_name(user_name: Any) -> None:
    # Whether another user has it is the unique index's call (see _save_unique).
    if not isinstance(user_name, str) or not user_name.strip():
        raise InvalidValue("userName is required", field="user_name")


def _check_manager(manager_id: Any, *, user_id: uuid.UUID | None) -> None:
    if manager_id is None:
        return
    if manager_id == user_id:
        raise InvalidValue("A user cannot be their own manager", field="manager_id")
    if not User.objects.filter(pk=manager_id).exists():
        raise InvalidValue(f"Manager {manager_id} does not exist", field="manager_id")


def user_create(
    *,
    actor: Actor,
    user_name: str,
    password: str | None = None,
    values: MultiValues | None = None,
    **attributes: Any,
) -> User:
    """Create a user with its multi-valued attributes; record `created`."""
    user, clean_values, changes = _prepare_user(user_name, password, values, attributes)
    _check_manager(user.manager_id, user_id=None)
    extensions.check_unique("user", user.extensions, current=None, exclude=None)
    if _in_one_statement():
        records = [
            ChangeEvent(**_event_fields(user, ChangeEvent.Kind.CREATED)),
            _audit_row(actor, "create", user, changes),
        ]
        with _uniqueness_as_conflict(user, field="user_name", label="userName"):
            bulk_sql.write_with_records(
                bulk_sql.returning_insert(user), records, rows=(UserValue, _value_rows(user, clean_values))
            )
        user._state.adding = False
        user._state.db = connection.alias
        return user
    with transaction.atomic():
        _save_unique(user, field="user_name", label="userName")
        _write_values(user, clean_values, replace=False)
        _event(user, ChangeEvent.Kind.CREATED)
        _audit(actor, "create", user, changes)
    return user


@functools.cache
def _user_defaults() -> dict[str, Any]:
    """What a new User holds for each service field before any is set (the audit records the rest)."""
    blank = User()
    return {field: getattr(blank, field) for field in USER_FIELDS}


def _prepare_user(
    user_name: Any, password: str | None, values: MultiValues | None, attributes: dict[str, Any]
) -> tuple[User, dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """A validated, unsaved user, its values and its audit changes; checks that need queries are left out."""
    _check_fields(attributes, USER_FIELDS - {"user_name"}, "User")
    attributes = _check_types(User, {"user_name": user_name, **attributes})
    if "extensions" in attributes:
        attributes["extensions"] = extensions.clean("user", attributes["extensions"], current={})
    user_name = attributes.pop("user_name")
    if not user_name.strip():
        raise InvalidValue("userName is required", field="user_name")
    clean_values = normalise_values(values or {})
    user = User(user_name=user_name, **attributes)
    if password:
        user.password = make_password(password)
    blank = _user_defaults()
    changes = {
        field: [None, _jsonable(getattr(user, field))]
        for field in sorted(USER_FIELDS)
        if getattr(user, field) != blank[field]
    }
    changes = _redact_extensions("user", changes)
    changes.update({kind: [None, items] for kind, items in clean_values.items() if items})
    if password:
        changes["password"] = [None, REDACTED]
    return user, clean_values, changes


@dataclass(frozen=True)
class NewUser:
    """One user for users_create_many: the arguments user_create takes."""

    user_name: str
    password: str | None = None
    values: MultiValues | None = None
    attributes: Mapping[str, Any] = dataclass_field(default_factory=dict)


@transaction.atomic
def users_create_many(*, actor: Actor, users: Sequence[NewUser]) -> list[User | DirectoryError]:
    """Create many users with a handful of set-based statements (bulk ingest).

    Returns, per item in order, the created user or the error that kept it out;
    the valid items are all inserted. A lost race on the unique userName index
    raises UniquenessConflict for the whole call (its transaction rolls back), so
    a caller can fall back to user_create one by one.
    """
    results: list[User | DirectoryError] = []
    prepared: dict[int, tuple[User, dict[str, list[dict[str, Any]]], dict[str, Any]]] = {}
    for item in users:
        try:
            entry = _prepare_user(item.user_name, item.password, item.values, dict(item.attributes))
        except DirectoryError as exc:
            results.append(exc)
            continue
        prepared[id(entry[0])] = entry
        results.append(entry[0])
    taken = _taken_user_names([user.user_name for user, _, _ in prepared.values()])
    managers = {user.manager_id for user, _, _ in prepared.values() if user.manager_id is not None}
    known_managers = (
        set(User.objects.filter(pk__in=managers).values_list("pk", flat=True)) if managers else set()
    )
    accepted = []
    for index, result in enumerate(results):
        if not isinstance(result, User):
            continue
        name = result.user_name.lower()
        if name in taken:
            results[index] = UniquenessConflict(
                f"userName {result.user_name!r} is already taken", field="user_name"
            )
            continue
        if result.manager_id is not None and result.manager_id not in known_managers:
            results[index] = InvalidValue(f"Manager {result.manager_id} does not exist", field="manager_id")
            continue
        taken.add(name)
        accepted.append(prepared[id(result)])
    try:
        with transaction.atomic():
            bulk_sql.insert_many(User, [user for user, _, _ in accepted])
    except IntegrityError:
        raise UniquenessConflict("A userName in the batch was taken meanwhile", field="user_name") from None
    _insert_new_user_rows(actor, accepted, action="create")
    return results


def _insert_new_user_rows(
    actor: Actor,
    accepted: Sequence[tuple[User, dict[str, list[dict[str, Any]]], dict[str, Any]]],
    *,
    action: str,
) -> None:
    """The rows that go with users just inserted in bulk: their values, `created` events and audit entries.

    `accepted` holds (user, clean values, audit changes) as _prepare_user makes them.
    """
    bulk_sql.insert_values(
        UserValue,
        [
            {"user_id": user.pk, "kind": kind, "position": position, **entry}
            for user, values, _ in accepted
            for kind, items in values.items()
            for position, entry in enumerate(items)
        ],
    )
    bulk_sql.insert_values(
        ChangeEvent, [_event_fields(user, ChangeEvent.Kind.CREATED) for user, _, _ in accepted]
    )
    bulk_sql.insert_values(
        AuditEntry,
        [
            {
                "actor_type": actor.type,
                "actor_id": actor.id,
                "actor_name": actor.name,
                "action": action,
                "object_type": ChangeEvent.ObjectType.USER,
                "object_id": user.pk,
                "object_repr": str(user)[:255],
                "changes": changes,
            }
            for user, _, changes in accepted
        ],
    )
    statistics.refresh(BULK_WRITTEN)


def _taken_user_names(names: list[str]) -> set[str]:
    lowered = list({name.lower() for name in names})
    taken: set[str] = set()
    for start in range(0, len(lowered), 1000):
        chunk = lowered[start : start + 1000]
        taken.update(
            name.lower()
            for name in User.objects.filter(user_name__lower__in=chunk).values_list("user_name", flat=True)
        )
    return taken


def user_update(
    *,
    actor: Actor,
    user_id: uuid.UUID,
    expected_version: int | None = None,
    password: str | None = _UNSET,
    values: MultiValues | None = None,
    read: User | None = None,
    **changes: Any,
) -> User:
    """Change some attributes of a user. `values` replaces the listed multi-valued attributes whole.

    Deactivation and reactivation are recorded as their own event kinds, so
    provisioning can tell a leaver from an edit.

    `read` is the user as the caller read it, without a lock, at `expected_version`
    (a read-modify-write such as a SCIM PATCH). Then a change that replaces no
    multi-valued attribute takes no lock: it is written only if the user is still at
    that version (VersionMismatch otherwise, nothing written), as one statement with
    its change event and audit entry.
    """
    _check_fields(changes, USER_FIELDS, "User")
    changes = _check_types(User, changes)
    if read is not None and not values and _in_one_statement():
        if read.pk != user_id or read.version != expected_version:
            raise ValueError("`read` must be the user at `expected_version`")
        return _user_update(actor, copy.copy(read), changes, password, {}, unlocked=True)
    with transaction.atomic():
        user = _lock_user(user_id)
        _check_version(user, expected_version)
        return _user_update(actor, user, changes, password, values or {}, unlocked=False)


def _user_update(
    actor: Actor,
    user: User,
    changes: dict[str, Any],
    password: str | None,
    values: MultiValues,
    *,
    unlocked: bool,
) -> User:
    """user_update on `user` as read: under its row lock, or (`unlocked`) guarded by its version."""
    if "extensions" in changes:
        changes["extensions"] = extensions.clean("user", changes["extensions"], current=user.extensions)

    diff: dict[str, Any] = {}
    for field, new in changes.items():
        old = getattr(user, field)
        if old != new:
            diff[field] = [_jsonable(old), _jsonable(new)]
    if "user_name" in diff:
        _check_user_name(changes["user_name"])
    if "manager_id" in diff:
        _check_manager(changes["manager_id"], user_id=user.pk)
    if "extensions" in diff:
        extensions.check_unique("user", changes["extensions"], current=user.extensions, exclude=user.pk)

    clean_values = normalise_values(values)
    if clean_values:
        current = _current_values(user, clean_values)
        for kind, items in clean_values.items():
            if current[kind] != items:
                diff[kind] = [current[kind], items]
    if password is not _UNSET:
        diff["password"] = [REDACTED, REDACTED]

    if not diff:
        return user

    read_version = user.version
    for field in changes:
        setattr(user, field, changes[field])
    if password is not _UNSET:
        user.password = make_password(password) if password else ""
    user.version += 1
    user.last_modified = timezone.now()
    update_fields = [field for field in changes if field in diff] + ["version", "last_modified"]
    if password is not _UNSET:
        update_fields.append("password")
    if "active" in diff:
        kind = ChangeEvent.Kind.ACTIVATED if user.active else ChangeEvent.Kind.DEACTIVATED
    else:
        kind = ChangeEvent.Kind.UPDATED
    action = {"activated": "activate", "deactivated": "deactivate"}.get(kind, "update")

    if unlocked:
        records = [ChangeEvent(**_event_fields(user, kind)), _audit_row(actor, action, user, diff)]
        with _uniqueness_as_conflict(user, field="user_name", label="userName"):
            written = bulk_sql.write_with_records(
                bulk_sql.returning_update(user, update_fields, version=read_version), records
            )
        if not written:
            raise VersionMismatch(
                f"User {user.pk} was changed or deleted since it was read at version {read_version}",
                current_version=None,
            )
        return user

    _save_unique(user, field="user_name", label="userName", update_fields=update_fields)
    changed_kinds = {kind: items for kind, items in clean_values.items() if kind in diff}
    if changed_kinds:
        _write_values(user, changed_kinds, replace=True)
    _event(user, kind)
    _audit(actor, action, user, diff)
    return user


@dataclass(frozen=True)
class UserChange:
    """One user for users_update_many: the arguments user_update takes, but a password."""

    user_id: uuid.UUID
    expected_version: int | None = None
    values: MultiValues | None = None
    changes: Mapping[str, Any] = dataclass_field(default_factory=dict)


@dataclass
class _Pending:
    """A user of users_update_many whose changes passed the checks, waiting to be written."""

    user: User
    changes: dict[str, Any]
    diff: dict[str, Any]
    values: dict[str, list[dict[str, Any]]]


@transaction.atomic
def users_update_many(*, actor: Actor, updates: Sequence[UserChange]) -> list[User | DirectoryError]:
    """Change many users with a handful of set-based statements (bulk ingest's movers and leavers).

    Each item gets what user_update would do to it: the same checks (an item
    failing one is left out, its error in its place), the same diff (nothing
    different, nothing written: the user comes back at its version), and for a
    change the version bump, its ChangeEvent (`activated`/`deactivated`/
    `updated`) and its AuditEntry, all in this one transaction. The users are
    locked in one query (in primary key order, so two batches cannot deadlock),
    their current multi-valued attributes read in one, and each set of changed
    columns written with one UPDATE. A user may appear once per call. A value
    taken meanwhile in a unique index (userName, a unique extension attribute)
    raises UniquenessConflict for the whole call, whose transaction rolls back,
    so a caller can fall back to user_update one by one.
    """
    results: list[User | DirectoryError | None] = [None] * len(updates)
    wanted: dict[uuid.UUID, int] = {}
    checked: dict[int, tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]] = {}
    for index, item in enumerate(updates):
        try:
            user_id = uuid.UUID(str(item.user_id))
        except ValueError:
            results[index] = ObjectNotFound(f"User {item.user_id} not found")
            continue
        if user_id in wanted:
            results[index] = InvalidValue(f"User {user_id} appears twice in one batch", field="id")
            continue
        try:
            _check_fields(item.changes, USER_FIELDS, "User")
            checked[index] = (_check_types(User, dict(item.changes)), normalise_values(item.values or {}))
        except DirectoryError as exc:
            results[index] = exc
            continue
        wanted[user_id] = index
    locked = {
        user.pk: user
        for user in User.objects.select_for_update(no_key=True).filter(pk__in=list(wanted)).order_by("pk")
    }
    current_values = _current_values_many(
        [pk for pk in locked if checked[wanted[pk]][1]],
        {kind for changes, values in checked.values() for kind in values},
    )
    managers = {
        changes["manager_id"] for changes, _ in checked.values() if changes.get("manager_id") is not None
    }
    known_managers = (
        set(User.objects.filter(pk__in=managers).values_list("pk", flat=True)) if managers else set()
    )
    pending: list[_Pending] = []
    for user_id, index in wanted.items():
        user = locked.get(user_id)
        if user is None:
            results[index] = ObjectNotFound(f"User {user_id} not found")
            continue
        changes, clean_values = checked[index]
        try:
            _check_version(user, updates[index].expected_version)
            if "extensions" in changes:
                changes["extensions"] = extensions.clean(
                    "user", changes["extensions"], current=user.extensions
                )
            diff = {
                field: [_jsonable(getattr(user, field)), _jsonable(new)]
                for field, new in changes.items()
                if getattr(user, field) != new
            }
            if "user_name" in diff:
                _check_user_name(changes["user_name"])
            if "manager_id" in diff and changes["manager_id"] is not None:
                if changes["manager_id"] == user.pk:
                    raise InvalidValue("A user cannot be their own manager", field="manager_id")
                if changes["manager_id"] not in known_managers:
                    raise InvalidValue(f"Manager {changes['manager_id']} does not exist", field="manager_id")
            if "extensions" in diff:
                extensions.check_unique(
                    "user", changes["extensions"], current=user.extensions, exclude=user.pk
                )
        except DirectoryError as exc:
            results[index] = exc
            continue
        current = current_values.get(user.pk, {})
        changed_values = {}
        for kind, items in clean_values.items():
            if current.get(kind, []) != items:
                diff[kind] = [current.get(kind, []), items]
                changed_values[kind] = items
        results[index] = user
        if diff:
            pending.append(_Pending(user=user, changes=changes, diff=diff, values=changed_values))
    _write_updates(actor, pending)
    if pending:
        statistics.refresh(BULK_WRITTEN)
    return cast(list[User | DirectoryError], results)  # every item was given its result above


def _current_values_many(
    user_ids: Sequence[uuid.UUID], kinds: set[str]
) -> dict[uuid.UUID, dict[str, list[dict[str, Any]]]]:
    """Multi-valued attributes of `kinds` per user, as _current_values reads them, in one query."""
    current: dict[uuid.UUID, dict[str, list[dict[str, Any]]]] = {}
    if not user_ids or not kinds:
        return current
    rows = (
        UserValue.objects.filter(user_id__in=list(user_ids), kind__in=sorted(kinds))
        .order_by("user_id", "kind", "position")
        .values_list("user_id", "kind", "value", "display", "type", "primary", "address")
    )
    for user_id, kind, value, display, type_, primary, address in rows:
        current.setdefault(user_id, {}).setdefault(kind, []).append(
            {"value": value, "display": display, "type": type_, "primary": primary, "address": address}
        )
    return current


def _write_updates(actor: Actor, pending: list[_Pending]) -> None:
    """Write users_update_many's changes: an UPDATE per set of changed columns, then values, events, audit."""
    if not pending:
        return
    now = timezone.now()
    by_columns: dict[tuple[str, ...], list[User]] = {}
    for item in pending:
        user = item.user
        changed = tuple(field for field in item.changes if field in item.diff)
        for field in changed:
            setattr(user, field, item.changes[field])
        user.version += 1
        user.last_modified = now
        by_columns.setdefault(changed, []).append(user)
    try:
        with transaction.atomic():
            for columns, users in by_columns.items():
                bulk_sql.update_many(User, users, [*columns, "version", "last_modified"])
    except IntegrityError as exc:
        conflict = extensions.conflict_from(exc)
        if conflict is not None:
            raise conflict from None
        raise UniquenessConflict("A value in the batch was taken meanwhile", field="user_name") from None
    replaced = [(item.user.pk, kind) for item in pending for kind in item.values]
    if replaced:
        by_kind: dict[str, list[uuid.UUID]] = {}
        for user_id, kind in replaced:
            by_kind.setdefault(kind, []).append(user_id)
        pairs = Q()
        for kind, user_ids in by_kind.items():
            pairs |= Q(kind=kind, user_id__in=user_ids)
        UserValue.objects.filter(pairs).delete()
        bulk_sql.insert_values(
            UserValue,
            [
                {"user_id": item.user.pk, "kind": kind, "position": position, **entry}
                for item in pending
                for kind, items in item.values.items()
                for position, entry in enumerate(items)
            ],
        )
    kinds = [
        (ChangeEvent.Kind.ACTIVATED if item.user.active else ChangeEvent.Kind.DEACTIVATED)
        if "active" in item.diff
        else ChangeEvent.Kind.UPDATED
        for item in pending
    ]
    bulk_sql.insert_values(
        ChangeEvent, [_event_fields(item.user, kind) for item, kind in zip(pending, kinds, strict=True)]
    )
    actions = {ChangeEvent.Kind.ACTIVATED: "activate", ChangeEvent.Kind.DEACTIVATED: "deactivate"}
    bulk_sql.insert_values(
        AuditEntry,
        [
            {
                "actor_type": actor.type,
                "actor_id": actor.id,
                "actor_name": actor.name,
                "action": actions.get(kind, "update"),
                "object_type": ChangeEvent.ObjectType.USER,
                "object_id": item.user.pk,
                "object_repr": str(item.user)[:255],
                "changes": _redact_extensions("user", item.diff),
            }
            for item, kind in zip(pending, kinds, strict=True)
        ],
    )


def user_deactivate(*, actor: Actor, user_id: uuid.UUID, expected_version: int | None = None) -> User:
    """Disable a user (a leaver) without deleting anything."""
    return user_update(actor=actor, user_id=user_id, expected_version=expected_version, active=False)


def user_activate(*, actor: Actor, user_id: uuid.UUID, expected_version: int | None = None) -> User:
    """Re-enable a disabled user (a rehire)."""
    return user_update(actor=actor, user_id=user_id, expected_version=expected_version, active=True)


@transaction.atomic
def user_delete(*, actor: Actor, user_id: uuid.UUID, expected_version: int | None = None) -> None:
    """Delete a user, its values and memberships; its reports lose their manager."""
    user = _lock_user(user_id)
    _check_version(user, expected_version)
    now = timezone.now()

    # The groups it leaves and the users it managed change too: bump their
    # versions so ETags held by clients go stale.
    Group.objects.filter(memberships__member_user=user).update(version=F("version") + 1, last_modified=now)
    report_ids = list(User.objects.filter(manager=user).values_list("pk", flat=True))
    if report_ids:
        User.objects.filter(pk__in=report_ids).update(
            manager=None, version=F("version") + 1, last_modified=now
        )
        reports = User.objects.filter(pk__in=report_ids).only("pk", "version")
        ChangeEvent.objects.bulk_create(
            [ChangeEvent(**_event_fields(report, ChangeEvent.Kind.UPDATED)) for report in reports],
            batch_size=1000,
        )

    user.version += 1
    _event(user, ChangeEvent.Kind.DELETED)
    _audit(actor, "delete", user, {"user_name": [user.user_name, None]})
    user.delete()


# --- groups --------------------------------------------------------------------


def _check_display_name(display_name: Any) -> None:
    # Whether another group has it is the unique index's call (see _save_unique).
    if not isinstance(display_name, str) or not display_name.strip():
        raise InvalidValue("displayName is required", field="display_name")


def _check_group_kind(group: Group, explicit: Mapping[str, Any]) -> None:
    if group.kind not in _GROUP_KINDS:
        raise InvalidValue(f"Unknown group kind {group.kind!r}", field="kind")
    if group.kind == Group.Kind.UNIFIED and not group.mail_enabled:
        if explicit.get("mail_enabled") is False:
            raise InvalidValue("A Microsoft 365 group is always mail-enabled", field="mail_enabled")
        group.mail_enabled = True


@transaction.atomic
def group_create(
    *,
    actor: Actor,
    display_name: str,
    member_user_ids: Sequence[uuid.UUID] = (),
    member_group_ids: Sequence[uuid.UUID] = (),
    **attributes: Any,
) -> Group:
    """Create a group, with its initial members in the same transaction."""
    _check_fields(attributes, GROUP_FIELDS - {"display_name"}, "Group")
    attributes = _check_types(Group, {"display_name": display_name, **attributes})
    display_name = attributes.pop("display_name")
    _check_display_name(display_name)
    if "extensions" in attributes:
        attributes["extensions"] = extensions.clean("group", attributes["extensions"], current={})
        extensions.check_unique("group", attributes["extensions"], current=None, exclude=None)
    group = Group(display_name=display_name, **attributes)
    _check_group_kind(group, attributes)
    _save_unique(group, field="display_name", label="Group displayName")

    blank = Group()
    changes = {
        field: [None, getattr(group, field)]
        for field in sorted(GROUP_FIELDS)
        if getattr(group, field) != getattr(blank, field)
    }
    _event(group, ChangeEvent.Kind.CREATED)
    _audit(actor, "create", group, changes)
    # A group nobody can see yet cannot close a cycle: no nesting lock needed.
    if member_user_ids or member_group_ids:
        _add_members(actor, group, member_user_ids, member_group_ids, bump_version=False)
    return group


@transaction.atomic
def group_update(
    *, actor: Actor, group_id: uuid.UUID, expected_version: int | None = None, **changes: Any
) -> Group:
    """Change some attributes of a group (not its members: see membership_add / membership_remove)."""
    _check_fields(changes, GROUP_FIELDS, "Group")
    changes = _check_types(Group, changes)
    group = _lock_group(group_id)
    _check_version(group, expected_version)
    if "extensions" in changes:
        changes["extensions"] = extensions.clean("group", changes["extensions"], current=group.extensions)
    diff = {
        field: [getattr(group, field), new] for field, new in changes.items() if getattr(group, field) != new
    }
    if "display_name" in diff:
        _check_display_name(changes["display_name"])
    if "extensions" in diff:
        extensions.check_unique("group", changes["extensions"], current=group.extensions, exclude=group.pk)
    for field, new in changes.items():
        setattr(group, field, new)
    was_mail_enabled = group.mail_enabled
    _check_group_kind(group, changes)
    if group.mail_enabled != was_mail_enabled:
        diff["mail_enabled"] = [was_mail_enabled, group.mail_enabled]
    if not diff:
        return group
    group.version += 1
    group.last_modified = timezone.now()
    _save_unique(
        group,
        field="display_name",
        label="Group displayName",
        update_fields=[*diff, "version", "last_modified"],
    )
    _event(group, ChangeEvent.Kind.UPDATED)
    _audit(actor, "update", group, diff)
    return group


@transaction.atomic
def group_delete(*, actor: Actor, group_id: uuid.UUID, expected_version: int | None = None) -> None:
    """Delete a group; its memberships go with it, in both directions."""
    group = _lock_group(group_id)
    _check_version(group, expected_version)
    Group.objects.filter(memberships__member_group=group).update(
        version=F("version") + 1, last_modified=timezone.now()
    )
    group.version += 1
    _event(group, ChangeEvent.Kind.DELETED)
    _audit(actor, "delete", group, {"display_name": [group.display_name, None]})
    group.delete()


# --- memberships ------------------------------------------------------------------


def _unique(ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    try:
        return list(dict.fromkeys(uuid.UUID(str(member)) for member in ids))
    except ValueError as exc:
        raise InvalidValue(f"Not a member id: {exc}", field="members") from None


def _missing(model: type[User] | type[Group], ids: list[uuid.UUID]) -> list[uuid.UUID]:
    if not ids:
        return []
    found = set(model.objects.filter(pk__in=ids).values_list("pk", flat=True))
    return [member for member in ids if member not in found]


def _check_missing(user_ids: list[uuid.UUID], group_ids: list[uuid.UUID]) -> None:
    missing = _missing(User, user_ids) + _missing(Group, group_ids)
    if missing:
        raise InvalidValue(
            f"No such member(s): {', '.join(str(member) for member in missing)}", field="members"
        )


def _cycle(group: Group) -> MembershipCycle:
    return MembershipCycle(
        f"Adding these groups to {group.display_name!r} would make it contain itself", field="members"
    )


def _lock_nesting() -> None:
    # Two transactions nesting A in B and B in A could each pass the cycle
    # check alone; on PostgreSQL one transaction-scoped advisory lock makes
    # nesting edits take turns. SQLite already serialises writers.
    # Lock order: the group's row first, then this lock, on every path (a SCIM PUT
    # or PATCH updates the group before it nests). Row locks are FOR NO KEY UPDATE,
    # which the membership insert's foreign-key checks do not wait on, so the two
    # kinds of lock never wait on each other in a cycle.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('directory.group_nesting'))")


def _add_members(
    actor: Actor,
    group: Group,
    user_ids: Sequence[uuid.UUID],
    group_ids: Sequence[uuid.UUID],
    *,
    bump_version: bool = True,
) -> int:
    users, groups = _unique(user_ids), _unique(group_ids)
    if group.pk in groups:
        _check_missing(users, groups)
        raise _cycle(group)
    # The inserts skip ids that are no user or group (and members already there); only when
    # something was skipped does a query tell which, so the common case costs no lookup.
    added_users = membership_sql.insert_members(group_id=group.pk, column="member_user_id", ids=users)
    added_groups = membership_sql.insert_members(group_id=group.pk, column="member_group_id", ids=groups)
    if len(added_users) < len(users) or len(added_groups) < len(groups):
        _check_missing(
            [member for member in users if member not in set(added_users)],
            [member for member in groups if member not in set(added_groups)],
        )
    if added_groups and membership_sql.nested_group_reaches(start_ids=added_groups, target_id=group.pk):
        raise _cycle(group)
    if not added_users and not added_groups:
        return 0
    if bump_version:
        group.version += 1
        group.last_modified = timezone.now()
        bulk_sql.update_fields(group, ["version", "last_modified"])
    _record_membership(actor, group, ChangeEvent.Kind.MEMBER_ADDED, added_users, added_groups)
    return len(added_users) + len(added_groups)


def _record_membership(
    actor: Actor,
    group: Group,
    kind: ChangeEvent.Kind,
    user_ids: list[uuid.UUID],
    group_ids: list[uuid.UUID],
) -> None:
    common = {
        "object_type": ChangeEvent.ObjectType.GROUP,
        "object_id": group.pk,
        "kind": kind,
        "version": group.version,
    }
    bulk_sql.insert_many(
        ChangeEvent,
        [ChangeEvent(**common, member_type=ChangeEvent.ObjectType.USER, member_id=m) for m in user_ids]
        + [ChangeEvent(**common, member_type=ChangeEvent.ObjectType.GROUP, member_id=m) for m in group_ids],
    )
    added = kind == ChangeEvent.Kind.MEMBER_ADDED
    verb = "added" if added else "removed"
    changes: dict[str, Any] = {}
    if user_ids:
        changes[f"users_{verb}"] = [str(member) for member in user_ids]
    if group_ids:
        changes[f"groups_{verb}"] = [str(member) for member in group_ids]
    _audit(actor, "member_add" if added else "member_remove", group, changes)


@dataclass(frozen=True)
class MembershipChange:
    """What membership_add or membership_remove did to a group."""

    count: int  # the members actually added (or removed)
    version: int  # the group's version afterwards: what an ETag names


def membership_add(
    *,
    actor: Actor,
    group_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID] = (),
    group_ids: Sequence[uuid.UUID] = (),
    member_ids: Sequence[uuid.UUID] = (),
    expected_version: int | None = None,
    read: Group | None = None,
) -> MembershipChange:
    """Add users and/or groups to a group; members already there are left alone.

    Costs the same handful of statements whatever the group's size: the
    group's members are never loaded. `member_ids` may be users or groups, the
    caller not knowing which (a SCIM member without a type); they are looked up
    only when they are not all users. With `read` (the group as the caller read
    it), adding users only needs no lock and is one statement (see
    _members_in_one_statement).
    """
    one_statement = read is not None and not group_ids and expected_version is None and _in_one_statement()
    if one_statement and read is not None:
        # Members without a type are nearly always users: tried as such first. The
        # statement writes nothing unless every id is a user.
        done = _members_in_one_statement(actor, read, group_id, [*user_ids, *member_ids], add=True)
        if done is not None:
            return done
        if not member_ids:
            _check_missing(_unique(user_ids), [])  # says which id is no user
    if member_ids:
        users = set(User.objects.filter(pk__in=member_ids).values_list("pk", flat=True))
        user_ids = [*user_ids, *(member for member in member_ids if member in users)]
        group_ids = [*group_ids, *(member for member in member_ids if member not in users)]
        if one_statement and not group_ids:
            return membership_add(actor=actor, group_id=group_id, user_ids=user_ids, read=read)
    with transaction.atomic():
        group = _lock_group(group_id)
        _check_version(group, expected_version)
        if group_ids:
            _lock_nesting()
        return MembershipChange(_add_members(actor, group, user_ids, group_ids), group.version)


def _members_in_one_statement(
    actor: Actor,
    read: Group,
    group_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    group_ids: Sequence[uuid.UUID] = (),
    *,
    add: bool,
) -> MembershipChange | None:
    """Add users, or remove members, as one statement with its records (membership_sql).

    Adding and removing members commute, so unlike a change of the group's own
    attributes they need no version read first and no lock held across round
    trips: the statement bumps whatever version the group is at and records that
    one. Nesting a group is not done this way: its cycle check needs the lock.
    None when adding ids that are not all users (then nothing was written).
    """
    if read.pk != group_id:
        raise ValueError("`read` must be the group `group_id`")
    users, groups = _unique(user_ids), _unique(group_ids)
    if not users and not groups:
        return MembershipChange(0, read.version)
    kind = ChangeEvent.Kind.MEMBER_ADDED if add else ChangeEvent.Kind.MEMBER_REMOVED
    event = ChangeEvent(**_event_fields(read, kind))
    audit = _audit_row(actor, "member_add" if add else "member_remove", read, {})
    try:
        done = membership_sql.change_members_recorded(
            group=read, user_ids=users, group_ids=groups, add=add, event=event, audit=audit
        )
    except IntegrityError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == "23503":  # the group is gone: no FK target
            raise ObjectNotFound(f"Group {group_id} not found") from None
        raise
    if not done.exists or done.version is None:
        raise ObjectNotFound(f"Group {group_id} not found")
    if not done.all_users:
        return None
    return MembershipChange(len(done.changed), done.version)


def membership_remove(
    *,
    actor: Actor,
    group_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID] = (),
    group_ids: Sequence[uuid.UUID] = (),
    expected_version: int | None = None,
    read: Group | None = None,
) -> MembershipChange:
    """Remove users and/or groups from a group; ids that are not members are ignored.

    With `read` it is one statement, as adding users is for membership_add.
    """
    if read is not None and expected_version is None and _in_one_statement():
        done = _members_in_one_statement(actor, read, group_id, user_ids, group_ids, add=False)
        assert done is not None  # removing never depends on what the ids are
        return done
    with transaction.atomic():
        return _remove_members(actor, group_id, user_ids, group_ids, expected_version)


def _remove_members(
    actor: Actor,
    group_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    group_ids: Sequence[uuid.UUID],
    expected_version: int | None,
) -> MembershipChange:
    group = _lock_group(group_id)
    _check_version(group, expected_version)
    removed_users = membership_sql.delete_members(
        group_id=group.pk, column="member_user_id", ids=_unique(user_ids)
    )
    removed_groups = membership_sql.delete_members(
        group_id=group.pk, column="member_group_id", ids=_unique(group_ids)
    )
    if not removed_users and not removed_groups:
        return MembershipChange(0, group.version)
    group.version += 1
    group.last_modified = timezone.now()
    bulk_sql.update_fields(group, ["version", "last_modified"])
    _record_membership(actor, group, ChangeEvent.Kind.MEMBER_REMOVED, removed_users, removed_groups)
    return MembershipChange(len(removed_users) + len(removed_groups), group.version)


# --- housekeeping -------------------------------------------------------------------


def change_events_purge(*, older_than_days: int) -> int:
    """Delete change events processed more than `older_than_days` ago; return how many."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = ChangeEvent.objects.filter(processed__lt=cutoff).delete()
    return deleted


# --- extension schemas -----------------------------------------------------------------

SCHEMA_FIELDS: frozenset[str] = frozenset({"name", "description", "required"})
ATTRIBUTE_FIELDS: frozenset[str] = frozenset(
    {
        "name",
        "description",
        "type",
        "multi_valued",
        "required",
        "mutability",
        "returned",
        "uniqueness",
        "case_exact",
        "canonical_values",
    }
)
# Fixed once an attribute exists: they decide how its stored values read.
FIXED_ATTRIBUTE_FIELDS: frozenset[str] = frozenset({"name", "type", "multi_valued"})


def _validated(obj: models.Model, *, label: str) -> None:
    """Model validation (field choices, lengths, the Meta constraints) as InvalidValue."""
    try:
        obj.full_clean()
    except ValidationError as exc:
        messages = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
        field, texts = next(iter(messages.items()))
        where = "" if field == "__all__" else f"{field}: "
        raise InvalidValue(f"{label}: {where}{' '.join(texts)}", field=field) from None


def _clean_canonical_values(values: Any) -> list[str]:
    if values in (None, ""):
        return []
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise InvalidValue("canonicalValues must be a list of strings", field="canonical_values")
    clean = [value.strip() for value in values if value.strip()]
    if len({value.lower() for value in clean}) != len(clean):
        raise InvalidValue("canonicalValues lists a value twice", field="canonical_values")
    return clean


def _schema_document(schema: ExtensionSchema) -> dict[str, Any]:
    """The definition as plain data, for audit entries and exports."""
    return {
        "urn": schema.urn,
        "name": schema.name,
        "description": schema.description,
        "resource_type": schema.resource_type,
        "required": schema.required,
        "attributes": [_attribute_document(attribute) for attribute in schema.attributes.all()],
    }


def _attribute_document(attribute: ExtensionAttribute) -> dict[str, Any]:
    return {field: getattr(attribute, field) for field in sorted(ATTRIBUTE_FIELDS)}


def _audit_schema(actor: Actor, action: str, schema: ExtensionSchema, changes: dict[str, Any]) -> None:
    AuditEntry.objects.create(
        actor_type=actor.type,
        actor_id=actor.id,
        actor_name=actor.name,
        action=action,
        object_type=AuditEntry.ObjectType.SCHEMA,
        object_id=schema.pk,
        object_repr=schema.urn[:255],
        changes=changes,
    )


def operator_event_record(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_key: str,
    object_repr: str,
    changes: dict[str, Any] | None = None,
) -> AuditEntry:
    """An audit entry for an operator action that no directory write records: a sign-in, or an admin
    change to a target, a SCIM client, an inbound source and the like (their own apps call this)."""
    return AuditEntry.objects.create(
        actor_type=actor.type,
        actor_id=actor.id,
        actor_name=actor.name[:255],
        action=action[:32],
        object_type=object_type[:32],
        object_key=object_key[:64],
        object_repr=object_repr[:255],
        changes=changes or {},
    )


def _attribute_create(schema: ExtensionSchema, spec: Mapping[str, Any], position: int) -> ExtensionAttribute:
    _check_fields(spec, ATTRIBUTE_FIELDS, "extension attribute")
    values = dict(spec)
    values["canonical_values"] = _clean_canonical_values(values.get("canonical_values"))
    attribute = ExtensionAttribute(schema=schema, position=position, **values)
    _validated(attribute, label=f"Attribute {values.get('name', '')!r}")
    attribute.save()
    extensions.create_index(schema, attribute)
    return attribute


def _attribute_update(
    schema: ExtensionSchema, attribute: ExtensionAttribute, spec: Mapping[str, Any], position: int
) -> dict[str, Any]:
    """Apply `spec` to an existing attribute; return its changes (old, new) by field."""
    _check_fields(spec, ATTRIBUTE_FIELDS, "extension attribute")
    values = dict(spec)
    if "canonical_values" in values:
        values["canonical_values"] = _clean_canonical_values(values["canonical_values"])
    diff = {
        field: [getattr(attribute, field), value]
        for field, value in values.items()
        if getattr(attribute, field) != value
    }
    fixed = sorted(FIXED_ATTRIBUTE_FIELDS & diff.keys())
    if fixed:
        raise InvalidValue(
            f"{attribute.name}: {', '.join(fixed)} cannot change once the attribute exists;"
            " remove it and add a new one",
            field=fixed[0],
        )
    if not diff and attribute.position == position:
        return {}
    for field, value in values.items():
        setattr(attribute, field, value)
    attribute.position = position
    _validated(attribute, label=f"Attribute {attribute.name!r}")
    attribute.save()
    if diff.keys() & {"uniqueness", "case_exact"}:
        extensions.drop_index(attribute.pk)
        extensions.create_index(schema, attribute)
    return diff


def _remove_values(
    actor: Actor, schema: ExtensionSchema, names: Sequence[str] | None
) -> ExtensionDataExport | None:
    """Export, then strip, the values of the schema (or of `names`) from every user or group holding one.

    A handful of statements whatever the number of holders; each holder gets a
    new version and an `updated` ChangeEvent, since its SCIM representation changes.
    """
    held = extensions.holders(schema.urn, schema.resource_type, names, lock=True)
    if not held:
        return None
    users = schema.resource_type == ExtensionSchema.ResourceType.USER
    export = ExtensionDataExport.objects.create(
        actor_name=actor.name,
        urn=schema.urn,
        attributes=list(names or []),
        user_count=len(held) if users else 0,
        group_count=0 if users else len(held),
        data={
            "schema": _schema_document(schema),
            "users" if users else "groups": {pk: values for pk, (_, values) in held.items()},
        },
    )
    note = f"[removed with its definition; kept in extension data export {export.pk}]"
    hidden = [
        a.name for a in schema.attributes.all() if a.mutability == ExtensionAttribute.Mutability.WRITE_ONLY
    ]
    extensions.strip(schema.urn, schema.resource_type, held, names, actor=actor, note=note, hidden=hidden)
    return export


@transaction.atomic
def extension_schema_create(
    *,
    actor: Actor,
    urn: str,
    name: str,
    resource_type: str,
    description: str = "",
    required: bool = False,
    attributes: Sequence[Mapping[str, Any]] = (),
) -> ExtensionSchema:
    """Define an extension schema and its attributes; the SCIM API serves it as soon as this commits."""
    schema = ExtensionSchema(
        urn=urn.strip() if isinstance(urn, str) else urn,
        name=name,
        resource_type=resource_type,
        description=description,
        required=required,
    )
    _validated(schema, label="Extension schema")
    schema.save()
    for position, spec in enumerate(attributes):
        _attribute_create(schema, spec, position)
    extensions.changed()
    _audit_schema(actor, "schema_create", schema, {"definition": [None, _schema_document(schema)]})
    return schema


@transaction.atomic
def extension_schema_update(
    *,
    actor: Actor,
    schema_id: uuid.UUID,
    attributes: Sequence[Mapping[str, Any]] | None = None,
    **changes: Any,
) -> tuple[ExtensionSchema, ExtensionDataExport | None]:
    """Change a schema's name, description or required flag, and/or its attributes.

    `attributes`, when given, is the whole new list in order: items with an `id`
    update that attribute, items without one are added, and attributes left
    out are removed, their stored values exported (the returned export) and
    stripped. The URN and resource type never change.
    """
    _check_fields(changes, SCHEMA_FIELDS, "extension schema")
    try:
        schema = ExtensionSchema.objects.select_for_update().get(pk=schema_id)
    except (ExtensionSchema.DoesNotExist, ValueError, TypeError):
        raise ObjectNotFound(f"Extension schema {schema_id} not found") from None
    diff: dict[str, Any] = {
        field: [getattr(schema, field), value]
        for field, value in changes.items()
        if getattr(schema, field) != value
    }
    for field, value in changes.items():
        setattr(schema, field, value)
    _validated(schema, label="Extension schema")
    export = None
    if attributes is not None:
        existing = {attribute.pk: attribute for attribute in schema.attributes.all()}
        listed: list[tuple[int, ExtensionAttribute | None, dict[str, Any]]] = []
        for position, spec in enumerate(attributes):
            values = dict(spec)
            attribute_id = values.pop("id", None)
            attribute = None
            if attribute_id is not None:
                attribute = existing.get(attribute_id if isinstance(attribute_id, int) else -1)
                if attribute is None:
                    raise ObjectNotFound(f"Attribute {attribute_id} is not an attribute of {schema.urn}")
            listed.append((position, attribute, values))
        kept = {attribute.pk for _, attribute, _ in listed if attribute is not None}
        removed = [attribute for pk, attribute in existing.items() if pk not in kept]
        if removed:
            # First, so that a new attribute may take a removed one's name.
            export = _remove_values(actor, schema, [attribute.name for attribute in removed])
            for attribute in removed:
                extensions.drop_index(attribute.pk)
                attribute.delete()
            diff["attributes_removed"] = [_attribute_document(attribute) for attribute in removed]
        for position, attribute, values in listed:
            if attribute is None:
                created = _attribute_create(schema, values, position)
                diff.setdefault("attributes_added", []).append(_attribute_document(created))
            else:
                changed = _attribute_update(schema, attribute, values, position)
                if changed:
                    diff.setdefault("attributes_changed", {})[attribute.name] = changed
    if not diff:
        return schema, None
    schema.last_modified = timezone.now()
    schema.save()
    extensions.changed()
    _audit_schema(actor, "schema_update", schema, diff)
    return schema, export


@transaction.atomic
def extension_schema_delete(*, actor: Actor, schema_id: uuid.UUID) -> ExtensionDataExport | None:
    """Remove a schema: its values are exported (the returned export, None if nobody held any),
    stripped from every user or group, and its definition and indexes dropped."""
    try:
        schema = ExtensionSchema.objects.select_for_update().get(pk=schema_id)
    except (ExtensionSchema.DoesNotExist, ValueError, TypeError):
        raise ObjectNotFound(f"Extension schema {schema_id} not found") from None
    document = _schema_document(schema)
    export = _remove_values(actor, schema, None)
    for attribute_id in schema.attributes.values_list("pk", flat=True):
        extensions.drop_index(attribute_id)
    changes: dict[str, Any] = {"definition": [document, None]}
    if export is not None:
        changes["export"] = [None, export.pk]
    _audit_schema(actor, "schema_delete", schema, changes)
    schema.delete()
    extensions.changed()
    return export
