"""Full sync runs: queue every object in a target's scope, a page at a time, resumably, and count outcomes.

A run walks three phases: users, groups (after users, so members have remote
ids by the time their groups are pushed), then linked objects that are no
longer in scope (so a full sync also disables or deletes what left scope while
the target was off). Each page is one transaction that upserts the page's
deliveries in the backfill lane, stamps them with the run id and moves the
run's cursor, under a row lock on the run: two processes resuming the same
run queue each page once, and a crash loses at most the page in flight. Only
ids are held in memory, a page at a time.

Outcomes are counted from the provisioning log rows that carry the run id
(distinct objects per action) and from the run's deliveries still active or
failed, so the counts are the log's, not a second bookkeeping.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from directory.models import Group, User
from provisioning import queue
from provisioning.conf import provisioning_setting
from provisioning.models import (
    ACTIVE_DELIVERY_STATES,
    Delivery,
    DeliveryAttempt,
    ObjectType,
    SyncRun,
    Target,
    TargetLink,
    TargetScope,
)
from provisioning.relay import deliveries_for_objects
from provisioning.scope import ObjectKey, scope_filter, scope_refresh, stored_types

Phase = SyncRun.Phase
PHASES = [Phase.USERS, Phase.GROUPS, Phase.LEAVERS, Phase.END]


class SyncRunBusy(Exception):
    pass


def scope_total(target: Target) -> int:
    """How many objects the target's scope holds now (the progress bar's 100 %)."""
    if target.scope == Target.Scope.ALL:
        return User.objects.count() + Group.objects.count()
    return TargetScope.objects.filter(target=target).count()


def next_page(
    target: Target, phase: str, cursor: str, page_size: int
) -> tuple[list[ObjectKey], str, str, int]:
    """(keys to queue, phase, cursor after this page, objects looked at) from where a run stands.

    An exhausted phase moves on to the next one; `Phase.END` with no keys means the walk is over.
    """
    while phase != Phase.END:
        if phase in (Phase.USERS, Phase.GROUPS):
            object_type = ObjectType.USER.value if phase == Phase.USERS else ObjectType.GROUP.value
            # A type whose scope is stored (assigned, or filtered) walks its stored rows; else every object.
            if object_type not in stored_types(target):
                model = User if phase == Phase.USERS else Group
                rows = model.objects.order_by("pk")
                if cursor:
                    rows = rows.filter(pk__gt=uuid.UUID(cursor))
                ids = list(rows.values_list("pk", flat=True)[:page_size])
                if ids:
                    return [(object_type, pk) for pk in ids], phase, str(ids[-1]), len(ids)
            else:
                scope_rows = TargetScope.objects.filter(target=target, object_type=object_type).order_by("pk")
                if cursor:
                    scope_rows = scope_rows.filter(pk__gt=int(cursor))
                pairs = list(scope_rows.values_list("pk", "object_id")[:page_size])
                if pairs:
                    return [(object_type, oid) for _, oid in pairs], phase, str(pairs[-1][0]), len(pairs)
        else:
            links = TargetLink.objects.filter(target=target).order_by("pk")
            if cursor:
                links = links.filter(pk__gt=int(cursor))
            rows = list(links.values_list("pk", "object_type", "object_id")[:page_size])
            if rows:
                keys = {(kind, oid) for _, kind, oid in rows}
                leaving = sorted(keys - scope_filter(target=target, keys=keys), key=lambda key: str(key[1]))
                return leaving, phase, str(rows[-1][0]), 0
        phase, cursor = PHASES[PHASES.index(Phase(phase)) + 1], ""
    return [], Phase.END, "", 0


def sync_run_start(*, target: Target, trigger: str = "", restart: bool = False) -> tuple[SyncRun, bool]:
    """(run, resumed?): the target's unfinished run (to resume it), or a new one.

    `restart` cancels an unfinished run and starts over. An "assigned"
    target's stored scope is refreshed when a run starts, not while it runs.
    """
    try:
        with transaction.atomic():
            unfinished = (
                SyncRun.objects.select_for_update().filter(target=target, state=SyncRun.State.QUEUING).first()
            )
            if unfinished is not None and not restart:
                return unfinished, True
            if unfinished is not None:
                unfinished.state, unfinished.finished = SyncRun.State.CANCELLED, timezone.now()
                unfinished.save(update_fields=["state", "finished"])
            if stored_types(target):
                scope_refresh(target=target)
            run = SyncRun.objects.create(target=target, trigger=trigger[:64])
            # The status page and the deletion guard's per-run count read the latest run from the target.
            Target.objects.filter(pk=target.pk).update(
                last_full_sync_at=run.started, last_full_sync_run_id=run.pk
            )
    except IntegrityError:
        # Another process started one at the same moment (one queuing run per target): join it.
        return SyncRun.objects.get(target=target, state=SyncRun.State.QUEUING), True
    return run, False


def sync_run_advance(
    *,
    run_id: uuid.UUID,
    seconds: float | None = None,
    progress: Callable[[SyncRun], None] | None = None,
) -> SyncRun:
    """Queue the run's next pages until it has queued everything (or `seconds` have passed).

    Each page commits with the cursor that follows it; the run's deliveries
    are sent to the workers after each commit.
    """
    page_size = provisioning_setting("FULL_SYNC_PAGE_SIZE")
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        with transaction.atomic():
            run = SyncRun.objects.select_for_update().select_related("target").get(pk=run_id)
            if run.state != SyncRun.State.QUEUING:
                return run
            keys, phase, cursor, seen = next_page(run.target, run.phase, run.cursor, page_size)
            now = timezone.now()
            if keys:
                # Objects still linked but out of scope are leavers: their lane is the fast one.
                lane = Delivery.Priority.LEAVER if phase == Phase.LEAVERS else Delivery.Priority.BACKFILL
                ids = deliveries_for_objects(target=run.target, keys=keys, priority=lane)
                # New rows and the active ones a page folded into both belong to this run now.
                run.queued += _claim_deliveries(run, keys)
                queue.send_on_commit(ids)
            if phase == Phase.USERS:
                run.users += seen
            elif phase == Phase.GROUPS:
                run.groups += seen
            elif phase == Phase.LEAVERS:
                run.leavers += len(keys)
            run.phase, run.cursor, run.heartbeat = phase, cursor, now
            if phase == Phase.END:
                run.state, run.queued_at = SyncRun.State.DELIVERING, now
            run.save(
                update_fields=[
                    "phase",
                    "cursor",
                    "users",
                    "groups",
                    "leavers",
                    "queued",
                    "heartbeat",
                    "state",
                    "queued_at",
                ]
            )
        if progress is not None:
            progress(run)
        if run.state != SyncRun.State.QUEUING or (deadline is not None and time.monotonic() > deadline):
            return run


def _claim_deliveries(run: SyncRun, keys: list[ObjectKey]) -> int:
    claimed = 0
    for object_type in (ObjectType.USER.value, ObjectType.GROUP.value):
        ids = [object_id for kind, object_id in keys if kind == object_type]
        if ids:
            claimed += Delivery.objects.filter(
                target=run.target,
                object_type=object_type,
                object_id__in=ids,
                state__in=ACTIVE_DELIVERY_STATES,
            ).update(run_id=run.pk)
    return claimed


def sync_run_refresh(*, run: SyncRun) -> SyncRun:
    """Count the run's outcomes from the log and its deliveries; a run with nothing left active is done."""
    actions = dict(
        DeliveryAttempt.objects.filter(
            run_id=run.pk, outcome__in=[DeliveryAttempt.Outcome.SUCCESS, DeliveryAttempt.Outcome.SKIPPED]
        )
        .order_by()
        .values_list("action")
        .annotate(objects=Count("object_id", distinct=True))
    )
    Action = DeliveryAttempt.Action
    run.created_count = actions.get(Action.CREATE, 0) + actions.get(Action.ADOPT, 0)
    run.updated_count = actions.get(Action.UPDATE, 0)
    run.removed_count = actions.get(Action.DISABLE, 0) + actions.get(Action.DELETE, 0)
    run.unchanged_count = actions.get(Action.NONE, 0)
    run.skipped_count = actions.get(Action.SKIP, 0)
    states = dict(
        Delivery.objects.filter(run_id=run.pk)
        .order_by()
        .values_list("state")
        .annotate(objects=Count("object_id", distinct=True))
    )
    run.failed_count = states.get(Delivery.State.FAILED, 0)
    run.pending_count = sum(states.get(state, 0) for state in ACTIVE_DELIVERY_STATES)
    fields = [
        "created_count",
        "updated_count",
        "removed_count",
        "unchanged_count",
        "skipped_count",
        "failed_count",
        "pending_count",
    ]
    if run.state == SyncRun.State.DELIVERING and run.pending_count == 0:
        run.state, run.finished = SyncRun.State.DONE, timezone.now()
        fields += ["state", "finished"]
    if run._state.adding:
        return run
    # Conditional on the state read: a run cancelled meanwhile stays cancelled.
    SyncRun.objects.filter(pk=run.pk, state__in=[SyncRun.State.DELIVERING, run.state]).update(
        **{name: getattr(run, name) for name in fields}
    )
    return run


def full_sync(
    *, target: Target, trigger: str = "", progress: Callable[[SyncRun], None] | None = None
) -> SyncRun:
    """Start (or resume) the target's full sync and queue all of it in this process."""
    run, _ = sync_run_start(target=target, trigger=trigger)
    return sync_run_advance(run_id=run.pk, progress=progress)


def sync_runs_resume_stale() -> list[uuid.UUID]:
    """Runs still queuing whose process stopped beating (killed worker, interrupted command)."""
    cutoff = timezone.now() - timedelta(seconds=provisioning_setting("SYNC_RUN_STALE_SECONDS"))
    return list(
        SyncRun.objects.filter(state=SyncRun.State.QUEUING, heartbeat__lt=cutoff).values_list("pk", flat=True)
    )


def sync_runs_refresh_delivering() -> int:
    """Recount every run still delivering; returns how many finished."""
    finished = 0
    for run in SyncRun.objects.filter(state=SyncRun.State.DELIVERING):
        if sync_run_refresh(run=run).state == SyncRun.State.DONE:
            finished += 1
    return finished


def sync_run_cancel(*, run: SyncRun) -> None:
    SyncRun.objects.filter(pk=run.pk).filter(
        Q(state=SyncRun.State.QUEUING) | Q(state=SyncRun.State.DELIVERING)
    ).update(state=SyncRun.State.CANCELLED, finished=timezone.now())
