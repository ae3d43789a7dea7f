"""The outbox relay: change events in, one coalesced delivery per (target, object) out.

Each run claims a batch of unprocessed ChangeEvents with
`SELECT ... FOR UPDATE SKIP LOCKED` (a second relay running at the same time
claims other rows or none), works out which targets each change concerns
(scope now, or scope before for what just left it), upserts one active
Delivery per (target, object), marks the events processed and, only once all
of that has committed, sends the new deliveries' ids to the workers. A crash
anywhere before the commit leaves the events unprocessed for the next run.
"""

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from directory.correlation import current_request_id
from directory.models import ChangeEvent
from provisioning import queue
from provisioning.conf import provisioning_setting
from provisioning.models import ACTIVE_DELIVERY_STATES, Delivery, Target
from provisioning.scope import (
    ObjectKey,
    filtered_types,
    scope_filter,
    scope_parent_groups,
    scope_reevaluate,
    scope_refresh,
    scope_touched,
)

# Events that can move an "assigned" target's scope: a membership of a group in
# scope changed, or an object in scope was deleted (its memberships went with it).
SCOPE_EVENTS = frozenset(
    {ChangeEvent.Kind.MEMBER_ADDED, ChangeEvent.Kind.MEMBER_REMOVED, ChangeEvent.Kind.DELETED}
)
LEAVER_EVENTS = frozenset({ChangeEvent.Kind.DEACTIVATED, ChangeEvent.Kind.DELETED})
# Events that change an object's attributes, and so may move it across a scoping filter.
ATTRIBUTE_EVENTS = frozenset(
    {
        ChangeEvent.Kind.CREATED,
        ChangeEvent.Kind.UPDATED,
        ChangeEvent.Kind.ACTIVATED,
        ChangeEvent.Kind.DEACTIVATED,
    }
)


@dataclass(frozen=True)
class Wanted:
    version: int
    priority: int
    # Of the change event `version` names: the request that made it, and when.
    request_id: str = ""
    changed_at: datetime | None = None


@dataclass
class RelayResult:
    events: int = 0
    deliveries: int = 0
    enqueued: int = 0


def relay_change_events(*, batch_size: int | None = None) -> RelayResult:
    """Claim one batch of change events and turn it into deliveries. Returns what it did."""
    limit = batch_size or provisioning_setting("RELAY_BATCH_SIZE")
    result = RelayResult()
    with transaction.atomic():
        events = list(
            ChangeEvent.objects.select_for_update(skip_locked=True)
            .filter(processed__isnull=True)
            .order_by("id")[:limit]
        )
        if not events:
            return result
        result.events = len(events)
        wanted: dict[tuple[int, str, uuid.UUID], Wanted] = {}
        for target in Target.objects.filter(enabled=True):
            for key, want in _wanted_for_target(target, events).items():
                wanted[(target.pk, *key)] = want
        to_send = deliveries_upsert(wanted)
        result.deliveries, result.enqueued = len(wanted), len(to_send)
        ChangeEvent.objects.filter(pk__in=[event.pk for event in events]).update(processed=timezone.now())
        queue.send_on_commit(to_send)
    return result


def _merge(into: dict[ObjectKey, Wanted], key: ObjectKey, event: ChangeEvent, priority: int) -> None:
    known = into.get(key)
    if known is None or event.pk > known.version:
        into[key] = Wanted(
            event.pk,
            priority if known is None else min(known.priority, priority),
            event.request_id,
            event.created,
        )
    else:
        into[key] = Wanted(known.version, min(known.priority, priority), known.request_id, known.changed_at)


def _wanted_for_target(target: Target, events: Sequence[ChangeEvent]) -> dict[ObjectKey, Wanted]:
    wanted: dict[ObjectKey, Wanted] = {}
    last = max(events, key=lambda event: event.pk)
    left: set[ObjectKey] = set()
    if target.scope == Target.Scope.ASSIGNED:
        touched = {event.object_id for event in events if event.kind in SCOPE_EVENTS}
        touched |= {
            event.member_id
            for event in events
            if event.kind == ChangeEvent.Kind.MEMBER_REMOVED and event.member_id is not None
        }
        if scope_touched(target=target, object_ids=touched):
            change = scope_refresh(target=target)
            left = change.left
            for key in change.entered:
                _merge(wanted, key, last, Delivery.Priority.CHANGE)
            for key in change.left:
                _merge(wanted, key, last, Delivery.Priority.LEAVER)
    keys = {(event.object_type, event.object_id) for event in events}
    # A deleted object is in nobody's scope any more; a target that had it must still hear of it.
    deleted = {(e.object_type, e.object_id) for e in events if e.kind == ChangeEvent.Kind.DELETED}
    if filtered_types(target):
        changed = {(e.object_type, e.object_id) for e in events if e.kind in ATTRIBUTE_EVENTS}
        moved = scope_reevaluate(target=target, keys=changed, deleted=deleted)
        left |= moved.left
        for key in moved.entered:
            _merge(wanted, key, last, Delivery.Priority.CHANGE)
        for key in moved.left:
            _merge(wanted, key, last, Delivery.Priority.LEAVER)
        # Their groups' member lists downstream change with them.
        for key in scope_parent_groups(target=target, keys=moved.entered | moved.left):
            _merge(wanted, key, last, Delivery.Priority.CHANGE)
    concerned = scope_filter(target=target, keys=keys) | (
        deleted if target.scope == Target.Scope.ALL else set()
    )
    concerned |= left & keys
    for event in events:
        key = (event.object_type, event.object_id)
        if key in concerned:
            priority = Delivery.Priority.LEAVER if event.kind in LEAVER_EVENTS else Delivery.Priority.CHANGE
            _merge(wanted, key, event, priority)
    return wanted


def deliveries_upsert(wanted: dict[tuple[int, str, uuid.UUID], Wanted]) -> list[int]:
    """Fold `wanted` into the active deliveries; return the ids of the rows that need a task sent.

    An object with an active delivery gets its version raised (and its
    priority, if more urgent) instead of a second row: the worker that runs it
    pushes the state of that moment, so many events cost one push. A new row
    needs a task; an existing queued row already has one (unless it just became more urgent: it is
    sent again, in its faster lane), and a running one
    queues itself again when it sees the newer version.
    """
    if not wanted:
        return []
    if connection.vendor == "postgresql":
        return _upsert_postgresql(wanted)
    return _upsert_generic(wanted)


def _upsert_postgresql(wanted: dict[tuple[int, str, uuid.UUID], Wanted]) -> list[int]:
    table = Delivery._meta.db_table
    now = timezone.now()
    states = ", ".join(f"'{state}'" for state in ACTIVE_DELIVERY_STATES)
    created: list[int] = []
    # Every writer (relays, full syncs, scope edits) touches rows in the same order, so two upserts
    # of overlapping objects wait for each other instead of deadlocking.
    items = sorted(wanted.items(), key=lambda item: (item[0][0], item[0][1], str(item[0][2])))
    with connection.cursor() as cursor:
        for start in range(0, len(items), 1000):
            chunk = items[start : start + 1000]
            rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s::timestamptz)"] * len(chunk))
            params: list[object] = []
            for (target_id, object_type, object_id), want in chunk:
                params.extend(
                    [
                        target_id,
                        object_type,
                        object_id,
                        want.version,
                        want.priority,
                        want.request_id,
                        want.changed_at,
                    ]
                )
            cursor.execute(
                f"INSERT INTO {table} (target_id, object_type, object_id, version, priority, state,"
                f" leased_version, attempts, failures, waiting_for_members, last_error, guard_approved_by,"
                f" request_id, changed_at, created, updated, enqueued_at)"
                f" SELECT v.target_id, v.object_type, v.object_id::uuid, v.version, v.priority, 'queued',"
                f" 0, 0, 0, false, '', '', v.request_id, v.changed_at, %s, %s, %s"
                f" FROM (VALUES {rows})"
                f" AS v(target_id, object_type, object_id, version, priority, request_id, changed_at)"
                f" ORDER BY v.target_id, v.object_type, v.object_id::uuid"
                f" ON CONFLICT (target_id, object_type, object_id) WHERE state IN ({states})"
                f" DO UPDATE SET version = GREATEST({table}.version, EXCLUDED.version),"
                # The newest change's request and time go with the version they belong to.
                f" request_id = CASE WHEN EXCLUDED.version > {table}.version"
                f"  THEN EXCLUDED.request_id ELSE {table}.request_id END,"
                f" changed_at = CASE WHEN EXCLUDED.version > {table}.version"
                f"  THEN EXCLUDED.changed_at ELSE {table}.changed_at END,"
                f" priority = LEAST({table}.priority, EXCLUDED.priority), updated = EXCLUDED.updated,"
                # A newer change wakes a delivery the deletion guard holds: the object may be back in
                # scope, and a held row must not swallow the change (SET reads the row as it was).
                f" state = CASE WHEN {table}.state = 'held' AND EXCLUDED.version > {table}.version"
                f"  THEN 'queued' ELSE {table}.state END,"
                f" next_attempt_at = CASE WHEN {table}.state = 'held' AND EXCLUDED.version > {table}.version"
                f"  THEN NULL ELSE {table}.next_attempt_at END,"
                f" enqueued_at = CASE WHEN {table}.state = 'held' AND EXCLUDED.version > {table}.version"
                f"  THEN EXCLUDED.enqueued_at"
                # A queued delivery that became more urgent (a backfill whose object just left) is
                # sent again in its new lane, not left behind the backfill it was queued with.
                f"  WHEN {table}.state = 'queued' AND EXCLUDED.priority < {table}.priority"
                f"  THEN EXCLUDED.enqueued_at ELSE {table}.enqueued_at END"
                # New rows and woken ones carry this call's timestamp: those need a task.
                f" RETURNING id, enqueued_at = %s",
                [now, now, now, *params, now],
            )
            created.extend(pk for pk, to_send in cursor.fetchall() if to_send)
    return created


def _upsert_generic(wanted: dict[tuple[int, str, uuid.UUID], Wanted]) -> list[int]:
    # SQLite runs one writer at a time (IMMEDIATE transactions), so a read then a
    # write cannot race with another relay here.
    now = timezone.now()
    created: list[int] = []
    for (target_id, object_type, object_id), want in wanted.items():
        active = Delivery.objects.filter(
            target_id=target_id,
            object_type=object_type,
            object_id=object_id,
            state__in=ACTIVE_DELIVERY_STATES,
        ).first()
        if active is None:
            delivery = Delivery.objects.create(
                target_id=target_id,
                object_type=object_type,
                object_id=object_id,
                version=want.version,
                priority=want.priority,
                request_id=want.request_id,
                changed_at=want.changed_at,
                enqueued_at=now,
            )
            created.append(delivery.pk)
        else:
            fields = ["version", "priority", "updated"]
            if want.version > active.version:
                active.request_id, active.changed_at = want.request_id, want.changed_at
                fields += ["request_id", "changed_at"]
            if active.state == Delivery.State.HELD and want.version > active.version:
                # A newer change wakes a held delivery (see _upsert_postgresql).
                active.state, active.next_attempt_at, active.enqueued_at = Delivery.State.QUEUED, None, now
                fields += ["state", "next_attempt_at", "enqueued_at"]
                created.append(active.pk)
            elif active.state == Delivery.State.QUEUED and want.priority < active.priority:
                # More urgent now: sent again in its new lane (see _upsert_postgresql).
                active.enqueued_at = now
                fields.append("enqueued_at")
                created.append(active.pk)
            active.version = max(active.version, want.version)
            active.priority = min(active.priority, want.priority)
            active.updated = now
            active.save(update_fields=fields)
    return created


def deliveries_for_objects(
    *, target: Target, keys: Iterable[ObjectKey], priority: int, version: int = 0
) -> list[int]:
    """Queue deliveries for these objects on one target (full sync, on demand, scope edits)."""
    # An operator's full sync or on-demand run carries the request that asked for it.
    request_id = current_request_id()
    return deliveries_upsert({(target.pk, *key): Wanted(version, priority, request_id) for key in keys})
