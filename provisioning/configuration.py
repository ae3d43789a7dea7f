"""A target's attribute mappings and scoping filters: checked, saved, seeded and previewed before saving.

Every write here bumps what workers key their caches on (`mapping_revision`)
or re-decides the stored scope, so a change takes effect with the next
delivery. The previews read the target's scope a page at a time and keep only
counts and a few samples, so their memory does not grow with the directory.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from directory.models import Group, User
from provisioning.conf import provisioning_setting
from provisioning.mapping import (
    MappingError,
    MappingFailed,
    MappingSet,
    Payloads,
    check_mapping_set,
    compile_rule,
    default_rows,
    group_payloads,
    mapping_set_for,
    modified_properties,
    user_payloads,
)
from provisioning.models import AttributeMapping, ObjectType, ScopeExclusion, Target, TargetLink, TargetScope
from provisioning.scope import ScopeChange, stored_types
from provisioning.scoping import Filters, ScopingError, evaluate, parse_filters
from provisioning.services import target_full_sync, target_scope_update
from provisioning.sources import PathError, check_source_path, group_resolver, user_resolver

SAMPLES = 5


# --- mappings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MappingRow:
    """One mapping row as an operator enters it."""

    target_attribute: str
    source_kind: str = AttributeMapping.SourceKind.ATTRIBUTE
    source: str = ""
    default_value: str = ""
    apply: str = AttributeMapping.Apply.ALWAYS


class MappingRowError(ValueError):
    """A row (by index; None for the set as a whole) that cannot be saved, and the field at fault."""

    def __init__(self, message: str, *, index: int | None, field: str = "") -> None:
        super().__init__(message if index is None else f"row {index + 1}: {message}")
        self.message, self.index, self.field = message, index, field


def mapping_rows_compile(*, object_type: str, rows: Sequence[MappingRow]) -> MappingSet | None:
    """Check rows as a set and compile them; None when there are none (the default mapping applies)."""
    rules = []
    for index, row in enumerate(rows):
        try:
            rules.append(
                compile_rule(
                    object_type=object_type,
                    target_attribute=row.target_attribute,
                    source_kind=row.source_kind,
                    source=row.source,
                    default_value=row.default_value,
                    apply=row.apply,
                )
            )
        except MappingError as exc:
            raise MappingRowError(str(exc), index=index, field=exc.field) from None
    try:
        check_mapping_set(object_type, rules)
    except MappingError as exc:
        raise MappingRowError(str(exc), index=None, field=exc.field) from None
    return MappingSet(object_type, tuple(rules)) if rules else None


def _bump_mapping_revision(target: Target) -> None:
    Target.objects.filter(pk=target.pk).update(mapping_revision=F("mapping_revision") + 1)
    target.refresh_from_db(fields=["mapping_revision"])


def _lock(target: Target) -> None:
    # Two operators saving the same target's mappings take turns.
    list(Target.objects.select_for_update().filter(pk=target.pk).values_list("pk", flat=True))


@transaction.atomic
def mappings_replace(
    *, target: Target, object_type: str, rows: Sequence[MappingRow], resync: bool = True
) -> list[AttributeMapping]:
    """Replace the target's mappings for one object type with `rows` (in that order).

    Refuses the whole set (MappingRowError) if one row is wrong. With `resync`,
    a full sync is queued once this commits: objects whose payload changed
    are updated downstream, the others cost no request (their hash matches).
    """
    mapping_rows_compile(object_type=object_type, rows=rows)
    _lock(target)
    AttributeMapping.objects.filter(target=target, object_type=object_type).delete()
    created = AttributeMapping.objects.bulk_create(
        [
            AttributeMapping(
                target=target,
                object_type=object_type,
                target_attribute=row.target_attribute.strip(),
                source_kind=row.source_kind,
                source=row.source,
                default_value=row.default_value,
                apply=row.apply,
                position=index,
            )
            for index, row in enumerate(rows)
        ]
    )
    _bump_mapping_revision(target)
    if resync:
        transaction.on_commit(lambda: target_full_sync(target=target), robust=True)
    return created


def _row(mapping: AttributeMapping) -> MappingRow:
    return MappingRow(
        target_attribute=mapping.target_attribute,
        source_kind=mapping.source_kind,
        source=mapping.source,
        default_value=mapping.default_value,
        apply=mapping.apply,
    )


def mapping_check(*, mapping: AttributeMapping) -> None:
    """ValidationError (by field) unless `mapping` can join the rest of its target's set."""
    others = AttributeMapping.objects.filter(target=mapping.target, object_type=mapping.object_type)
    if mapping.pk:
        others = others.exclude(pk=mapping.pk)
    rows = [_row(other) for other in others.order_by("position", "id")] + [_row(mapping)]
    try:
        mapping_rows_compile(object_type=mapping.object_type, rows=rows)
    except MappingRowError as exc:
        raise ValidationError({exc.field: exc.message} if exc.field else exc.message) from None


@transaction.atomic
def mapping_save(*, mapping: AttributeMapping, resync: bool = True) -> AttributeMapping:
    """Create or change one mapping row, checked with the rest of its set."""
    _lock(mapping.target)
    mapping_check(mapping=mapping)
    mapping.target_attribute = mapping.target_attribute.strip()
    mapping.save()
    _bump_mapping_revision(mapping.target)
    if resync:
        target = mapping.target
        transaction.on_commit(lambda: target_full_sync(target=target), robust=True)
    return mapping


@transaction.atomic
def mapping_delete(*, mapping: AttributeMapping, resync: bool = True) -> None:
    """Delete one row; the set that remains must still be usable (or empty: the default mapping)."""
    _lock(mapping.target)
    rest = AttributeMapping.objects.filter(target=mapping.target, object_type=mapping.object_type).exclude(
        pk=mapping.pk
    )
    try:
        mapping_rows_compile(object_type=mapping.object_type, rows=[_row(row) for row in rest])
    except MappingRowError as exc:
        raise ValidationError(exc.message) from None
    target = mapping.target
    mapping.delete()
    _bump_mapping_revision(target)
    if resync:
        transaction.on_commit(lambda: target_full_sync(target=target), robust=True)


def default_mapping_rows(object_type: str) -> list[MappingRow]:
    return [MappingRow(target_attribute=attr, source=source) for attr, source in default_rows(object_type)]


@transaction.atomic
def mappings_seed_default(
    *, target: Target, object_types: Sequence[str] = (ObjectType.USER, ObjectType.GROUP)
) -> int:
    """Give the target rows equal to the default mapping for each type that has none; returns rows created.

    What the target receives does not change (the rows say what the default
    mapping did), so nothing is queued.
    """
    _lock(target)
    created = 0
    for object_type in object_types:
        if AttributeMapping.objects.filter(target=target, object_type=object_type).exists():
            continue
        created += len(
            mappings_replace(
                target=target, object_type=object_type, rows=default_mapping_rows(object_type), resync=False
            )
        )
    return created


# --- previews -------------------------------------------------------------------------------------


@dataclass
class ObjectPreview:
    """One object's payloads with the saved mappings and with the edited ones."""

    object_type: str
    object_id: uuid.UUID
    object_repr: str
    linked: bool
    saved: Payloads | None = None
    edited: Payloads | None = None
    # {attribute: [saved, edited]} of what the target would receive (update, or create when not linked).
    changes: dict[str, list[Any]] = field(default_factory=dict)
    error: str = ""


def _manager_remote_ids(target: Target, users: Sequence[User]) -> dict[uuid.UUID, str]:
    manager_ids = {user.manager_id for user in users if user.manager_id}
    if not manager_ids:
        return {}
    return dict(
        TargetLink.objects.filter(
            target=target, object_type=ObjectType.USER, object_id__in=manager_ids
        ).values_list("object_id", "remote_id")
    )


def _payloads(
    target: Target, obj: User | Group, mappings: MappingSet | None, managers: dict[uuid.UUID, str]
) -> Payloads:
    if isinstance(obj, User):
        manager = managers.get(obj.manager_id) if obj.manager_id else None
        return user_payloads(target, obj, manager_remote_id=manager, mappings=mappings)
    return group_payloads(target, obj, mappings=mappings)


def _compare(
    target: Target,
    obj: User | Group,
    saved: MappingSet | None,
    edited: MappingSet | None,
    linked: bool,
    managers: dict[uuid.UUID, str],
) -> ObjectPreview:
    object_type = ObjectType.USER.value if isinstance(obj, User) else ObjectType.GROUP.value
    preview = ObjectPreview(
        object_type=object_type, object_id=obj.pk, object_repr=str(obj)[:255], linked=linked
    )
    try:
        preview.saved = _payloads(target, obj, saved, managers)
        preview.edited = _payloads(target, obj, edited, managers)
    except MappingFailed as exc:
        preview.error = str(exc)
        return preview
    # A linked object only ever receives the update form again; a new one gets the create form.
    before = preview.saved.update if linked else preview.saved.create
    after = preview.edited.update if linked else preview.edited.create
    preview.changes = modified_properties(before, after)
    return preview


def mapping_preview_object(
    *, target: Target, object_type: str, object_id: uuid.UUID, edited: MappingSet | None
) -> ObjectPreview:
    """What the target would receive for one object with the saved mappings and with `edited` (unsaved)."""
    obj: User | Group
    if object_type == ObjectType.USER:
        obj = User.objects.with_values().get(pk=object_id)
        managers = _manager_remote_ids(target, [obj])
    else:
        obj = Group.objects.get(pk=object_id)
        managers = {}
    linked = TargetLink.objects.filter(target=target, object_type=object_type, object_id=object_id).exists()
    return _compare(target, obj, mapping_set_for(target, object_type), edited, linked, managers)


@dataclass
class MappingChangePreview:
    """What saving edited mappings would change across the target's scope: counts and a few samples."""

    evaluated: int = 0
    changed: int = 0
    failed: int = 0
    samples: list[ObjectPreview] = field(default_factory=list)
    failures: list[ObjectPreview] = field(default_factory=list)


def _page_size() -> int:
    return int(provisioning_setting("FULL_SYNC_PAGE_SIZE"))


def scope_id_pages(target: Target, object_type: str, page_size: int) -> Iterator[list[uuid.UUID]]:
    """Ids of the objects of one type in the target's scope, a page at a time by primary key."""
    if object_type in stored_types(target):
        last_row = 0
        while True:
            rows = list(
                TargetScope.objects.filter(target=target, object_type=object_type, pk__gt=last_row)
                .order_by("pk")
                .values_list("pk", "object_id")[:page_size]
            )
            if not rows:
                return
            yield [object_id for _, object_id in rows]
            last_row = rows[-1][0]
    model = User if object_type == ObjectType.USER else Group
    last: uuid.UUID | None = None
    while True:
        query = model.objects.order_by("pk")
        if last is not None:
            query = query.filter(pk__gt=last)
        ids = list(query.values_list("pk", flat=True)[:page_size])
        if not ids:
            return
        yield ids
        last = ids[-1]


def _load_page(object_type: str, ids: list[uuid.UUID]) -> list[User | Group]:
    if object_type == ObjectType.USER:
        return list(User.objects.filter(pk__in=ids).with_values().order_by("pk"))
    return list(Group.objects.filter(pk__in=ids).order_by("pk"))


def mapping_change_preview(
    *,
    target: Target,
    object_type: str,
    edited: MappingSet | None,
    samples: int = SAMPLES,
    page_size: int | None = None,
) -> MappingChangePreview:
    """Dry run of a mapping change: every object in scope, saved mappings against `edited`, unsaved.

    Counts the objects whose payload would change (the update payload for
    linked objects, the create payload for the others); keeps `samples` diffs.
    Three queries per page (ids, objects with values, links and managers).
    """
    result = MappingChangePreview()
    saved = mapping_set_for(target, object_type)
    for ids in scope_id_pages(target, object_type, page_size or _page_size()):
        objects = _load_page(object_type, ids)
        linked = set(
            TargetLink.objects.filter(target=target, object_type=object_type, object_id__in=ids).values_list(
                "object_id", flat=True
            )
        )
        managers = _manager_remote_ids(target, [o for o in objects if isinstance(o, User)])
        for obj in objects:
            preview = _compare(target, obj, saved, edited, obj.pk in linked, managers)
            result.evaluated += 1
            if preview.error:
                result.failed += 1
                if len(result.failures) < samples:
                    result.failures.append(preview)
            elif preview.changes:
                result.changed += 1
                if len(result.samples) < samples:
                    result.samples.append(preview)
    return result


# --- scoping filters -----------------------------------------------------------------------------


def scoping_filters_check(data: Any, *, object_type: str) -> Filters:
    """Parse scoping filters and check every attribute they name; ValidationError if not usable."""
    try:
        filters = parse_filters(data)
        for clauses in filters:
            for clause in clauses:
                check_source_path(clause.attribute, object_type)
    except (ScopingError, PathError) as exc:
        raise ValidationError(str(exc)) from None
    return filters


@transaction.atomic
def target_scoping_update(*, target: Target, user_filters: Any, group_filters: Any) -> ScopeChange:
    """Save new scoping filters, decide every candidate again, and queue enter/leave deliveries at once."""
    errors = {}
    for name, data, object_type in (
        ("user_scoping_filters", user_filters, ObjectType.USER),
        ("group_scoping_filters", group_filters, ObjectType.GROUP),
    ):
        try:
            scoping_filters_check(data, object_type=object_type)
        except ValidationError as exc:
            errors[name] = exc.messages
    if errors:
        raise ValidationError(errors)
    target.user_scoping_filters = user_filters or []
    target.group_scoping_filters = group_filters or []
    target.save(update_fields=["user_scoping_filters", "group_scoping_filters"])
    return target_scope_update(target=target, reevaluate=True)


@dataclass
class ScopeSample:
    object_id: uuid.UUID
    object_repr: str
    reason: str


@dataclass
class ScopingChangePreview:
    """Objects that new filters would let in or keep out, against what is in scope now."""

    evaluated: int = 0
    entering: int = 0
    leaving: int = 0
    entering_samples: list[ScopeSample] = field(default_factory=list)
    leaving_samples: list[ScopeSample] = field(default_factory=list)


def _candidate_pages(
    target: Target, object_type: str, page_size: int
) -> Iterator[tuple[list[uuid.UUID], set[uuid.UUID]]]:
    """(candidate ids, those in scope now), a page at a time: assigned or excluded, or every object."""
    if target.scope == Target.Scope.ASSIGNED:
        for model, inside in ((TargetScope, True), (ScopeExclusion, False)):
            last_row = 0
            while True:
                rows = list(
                    model.objects.filter(target=target, object_type=object_type, pk__gt=last_row)
                    .order_by("pk")
                    .values_list("pk", "object_id")[:page_size]
                )
                if not rows:
                    break
                ids = [object_id for _, object_id in rows]
                yield ids, set(ids) if inside else set()
                last_row = rows[-1][0]
        return
    stored = object_type in stored_types(target)
    model_all = User if object_type == ObjectType.USER else Group
    last: uuid.UUID | None = None
    while True:
        query = model_all.objects.order_by("pk")
        if last is not None:
            query = query.filter(pk__gt=last)
        ids = list(query.values_list("pk", flat=True)[:page_size])
        if not ids:
            return
        if stored:
            inside_ids = set(
                TargetScope.objects.filter(
                    target=target, object_type=object_type, object_id__in=ids
                ).values_list("object_id", flat=True)
            )
        else:
            inside_ids = set(ids)
        yield ids, inside_ids
        last = ids[-1]


def scoping_change_preview(
    *,
    target: Target,
    object_type: str,
    filters_data: Any,
    samples: int = SAMPLES,
    page_size: int | None = None,
) -> ScopingChangePreview:
    """Dry run of new scoping filters for one object type (ValidationError if they are not valid)."""
    filters = scoping_filters_check(filters_data, object_type=object_type)
    result = ScopingChangePreview()
    for ids, inside in _candidate_pages(target, object_type, page_size or _page_size()):
        for obj in _load_page(object_type, ids):
            result.evaluated += 1
            if isinstance(obj, User):
                decision = evaluate(
                    filters, user_resolver(obj, manager=str(obj.manager_id) if obj.manager_id else None)
                )
            else:
                decision = evaluate(filters, group_resolver(obj))
            was_in = obj.pk in inside
            if decision.in_scope and not was_in:
                result.entering += 1
                if len(result.entering_samples) < samples:
                    result.entering_samples.append(ScopeSample(obj.pk, str(obj), decision.reason))
            elif was_in and not decision.in_scope:
                result.leaving += 1
                if len(result.leaving_samples) < samples:
                    result.leaving_samples.append(ScopeSample(obj.pk, str(obj), decision.reason))
    return result
