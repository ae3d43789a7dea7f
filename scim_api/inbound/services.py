"""Writes of inbound provisioning: sources, staging jobs, applying them, the guard, effective dates.

Every change to the directory itself goes through directory.services (see
scim_api.inbound.engine); this module keeps the inbound records: a job and its
records are staged in one transaction and handed to a worker on commit; a
worker claims the oldest unfinished job of a source (one at a time per
source, so records about one person apply in the order they were sent),
applies its records a chunk per transaction, sets the managers that had to
wait for the end of the job, and writes the job's counts.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from directory import services as directory_services
from directory import statistics
from directory.actors import Actor
from directory.correlation import current_request_id, request_id_bound
from directory.exceptions import DirectoryError
from directory.models import AuditEntry, User
from observability import metrics
from scim_api.bulk import BULK_REQUEST
from scim_api.conf import scim_setting
from scim_api.exceptions import ScimError
from scim_api.inbound import engine, queue, transform
from scim_api.inbound.models import (
    InboundJob,
    InboundRecord,
    InboundScheduledAction,
    InboundSource,
    InboundUpload,
)
from scim_api.models import ScimClient
from scim_api.services import scim_client_create

logger = logging.getLogger(__name__)

Outcome = InboundRecord.Outcome
Status = InboundJob.Status
HOUR = timedelta(hours=1)
# A queued job this old with nobody working on its source was lost on the way to a worker.
STALE_QUEUED = timedelta(seconds=30)


# --- sources ----------------------------------------------------------------------------------


@transaction.atomic
def source_create(
    *, name: str, client_name: str | None = None, expires_days: int | None = None, **config: Any
) -> tuple[InboundSource, str]:
    """A source with a SCIM client of its own; returns it with the client's token (shown this once)."""
    client, token = scim_client_create(
        name=client_name or f"inbound source {name}",
        scope=ScimClient.Scope.WRITE,
        expires_days=expires_days,
        description=f"Uploads worker records to the inbound source {name!r} (/scim/v2/inbound/{name}/).",
    )
    source = InboundSource(name=name, client=client, **config)
    source.full_clean()
    transform.compile_source_config(source)
    source.save()
    return source, token


def max_operations(source: InboundSource) -> int:
    return int(source.max_operations or scim_setting("INBOUND_MAX_OPERATIONS"))


# --- the request -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """A parsed bulkUpload request: (bulkId, record) per operation, and failOnErrors."""

    operations: list[tuple[str, dict[str, Any]]]
    fail_on_errors: int | None


def parse_upload(body: Any, *, limit: int) -> Upload:
    """Validate a BulkRequest as Entra's /bulkUpload takes it: POST operations on /Users, with bulkIds.

    A malformed request is refused whole (ScimError 400, 413 past `limit`
    operations); a record whose attributes do not validate fails alone later.
    """
    if not isinstance(body, dict):
        raise ScimError("The request body must be a JSON object.", scim_type="invalidSyntax")
    keys = {key.lower(): value for key, value in body.items() if isinstance(key, str)}
    schemas = keys.get("schemas")
    if not isinstance(schemas, list) or BULK_REQUEST not in schemas:
        raise ScimError(f"A bulk upload's schemas must list {BULK_REQUEST}.", scim_type="invalidSyntax")
    fail_on_errors = keys.get("failonerrors")
    if fail_on_errors is not None and (
        isinstance(fail_on_errors, bool) or not isinstance(fail_on_errors, int) or fail_on_errors < 1
    ):
        raise ScimError("failOnErrors must be a positive integer (or null).", scim_type="invalidValue")
    raw = keys.get("operations")
    if not isinstance(raw, list) or not raw:
        raise ScimError('"Operations" must be a non-empty list.', scim_type="invalidSyntax")
    if len(raw) > limit:
        raise ScimError(
            f"A bulk upload to this source may carry at most {limit} operations; this one has {len(raw)}.",
            status=413,
        )
    operations: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for number, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            raise ScimError(f"Operation {number} must be an object.", scim_type="invalidSyntax")
        op = {key.lower(): value for key, value in item.items() if isinstance(key, str)}
        method = op.get("method")
        if not isinstance(method, str) or method.upper() != "POST":
            raise ScimError(
                f"Operation {number}: a bulk upload takes POST operations only (the service decides "
                f"whether to create, update, enable or disable), not {method!r}.",
                scim_type="invalidSyntax",
            )
        path = op.get("path")
        if not isinstance(path, str) or path.strip().rstrip("/").lower() != "/users":
            raise ScimError(
                f"Operation {number}: path must be /Users, not {path!r}.", scim_type="invalidPath"
            )
        bulk_id = op.get("bulkid")
        if not isinstance(bulk_id, str) or not bulk_id.strip() or len(bulk_id) > 255:
            raise ScimError(
                f"Operation {number}: bulkId must be a non-empty string (at most 255 characters).",
                scim_type="invalidValue",
            )
        if bulk_id in seen:
            raise ScimError(f"bulkId {bulk_id!r} is used twice.", scim_type="invalidValue")
        seen.add(bulk_id)
        data = op.get("data")
        if not isinstance(data, dict):
            raise ScimError(f"Operation {number}: data must be a User object.", scim_type="invalidSyntax")
        operations.append((bulk_id, data))
    return Upload(operations=operations, fail_on_errors=fail_on_errors)


def _compiled(source: InboundSource) -> transform.CompiledSource:
    try:
        return transform.compile_source_config(source)
    except transform.SourceConfigError as exc:
        raise ScimError(
            f"The inbound source {source.name!r} is misconfigured ({exc}); an operator must fix it.",
            status=503,
        ) from None


def _staged(
    config: transform.CompiledSource, index: int, bulk_id: str, data: dict[str, Any], now: datetime
) -> InboundRecord:
    return InboundRecord(
        index=index,
        bulk_id=bulk_id,
        data=data,
        key=transform.record_key(config, data),
        leaver=transform.staged_leaver(config, data, now),
        manager_key=transform.staged_manager_key(config, data),
    )


@transaction.atomic
def job_stage(
    *,
    source: InboundSource,
    operations: Sequence[tuple[str, dict[str, Any]]],
    fail_on_errors: int | None = None,
    origin: str = InboundJob.Origin.API,
    created_by: str = "",
    filename: str = "",
    notify: bool = True,
) -> InboundJob:
    """Stage a job and its records; a worker is told once this commits (unless the caller runs it)."""
    config = _compiled(source)
    now = timezone.now()
    job = InboundJob.objects.create(
        source=source,
        origin=origin,
        fail_on_errors=fail_on_errors,
        total=len(operations),
        created_by=created_by[:255],
        filename=filename[:255],
    )
    records = [_staged(config, index, bulk_id, data, now) for index, (bulk_id, data) in enumerate(operations)]
    for record in records:
        record.job = job
    InboundRecord.objects.bulk_create(records, batch_size=1000)
    # The claim looks earlier jobs' records up by key: keep the planner's view of the table current.
    statistics.refresh([InboundRecord])
    if notify:
        queue.send_on_commit(job.pk)
    return job


def dry_run(
    *,
    source: InboundSource,
    operations: Sequence[tuple[str, dict[str, Any]]],
    actor: Actor | None = None,
    progress: Any = None,
) -> list[InboundRecord]:
    """The records of a would-be job with the outcome each would have; nothing is written.

    Records are decided a chunk at a time, each chunk seeing what the earlier
    ones would have done (engine.Context.virtual), as a worker would apply them.
    """
    config = _compiled(source)
    now = timezone.now()
    records = [_staged(config, index, bulk_id, data, now) for index, (bulk_id, data) in enumerate(operations)]
    ctx = engine.Context(
        config=config,
        actor=actor or Actor.system(),
        dry_run=True,
        job_keys=frozenset(_norm_keys(config, records)),
    )
    held, reason = _guard_holds(ctx, [record for record in records if record.leaver])
    for record in held:
        record.outcome, record.reason = Outcome.HELD, reason
    size = int(scim_setting("INBOUND_CHUNK_SIZE"))
    for start in range(0, len(records), size):
        chunk = records[start : start + size]
        engine.run_records(ctx, chunk)
        if progress is not None:
            progress(len(chunk))
    return records


def _norm_keys(config: transform.CompiledSource, records: Iterable[InboundRecord]) -> set[str]:
    lower = config.match_ignores_case
    return {record.key.lower() if lower else record.key for record in records if record.key}


# --- the guard --------------------------------------------------------------------------------


def _population(config: transform.CompiledSource) -> int:
    """What the guard's percentages are of: the users this source can match."""
    return config.matchable(User.objects.all()).count()


def _leavers_applied(source: InboundSource, since: datetime) -> int:
    """The users this source's records disabled or deleted since `since`."""
    return InboundRecord.objects.filter(
        job__source=source, outcome__in=[Outcome.DISABLED, Outcome.DELETED], applied__gte=since
    ).count()


def _over(count: int, limit: int | None, percent: float | None, base: int, what: str) -> str:
    if limit is not None and count > limit:
        return f"{count} leavers {what} would exceed the limit of {limit}"
    if percent is not None and count * 100 > percent * max(base, 1):
        share = count * 100 / max(base, 1)
        return f"{count} leavers {what} ({share:.1f}% of {base} users) would exceed the limit of {percent:g}%"
    return ""


def _guard_holds(ctx: engine.Context, leavers: list[InboundRecord]) -> tuple[list[InboundRecord], str]:
    """The leaver records the guard holds (all that would disable or delete someone, or none), and why."""
    source = ctx.source
    if not source.has_guard or not leavers:
        return [], ""
    users = engine.lookup_users(ctx, {record.key for record in leavers if record.key})
    deleting = source.leaver_action == InboundSource.LeaverAction.DELETE
    # A departure counts once, when it is decided: a user whose disable this source already
    # scheduled was counted then (a later record that moves the date or brings it forward is not new).
    scheduled = set(
        InboundScheduledAction.objects.filter(
            source=source,
            action=InboundScheduledAction.Action.DISABLE,
            state__in=InboundScheduledAction.OPEN,
            user_id__in=[user.pk for found in users.values() for user in found],
        ).values_list("user_id", flat=True)
    )
    counted = [
        record
        for record in leavers
        if any(
            (user.active or deleting) and user.pk not in scheduled
            for user in users.get(ctx.norm(record.key), [])
        )
    ]
    if not counted:
        return [], ""
    base = _population(ctx.config)
    since = timezone.now() - HOUR
    recent = _leavers_applied(source, since)
    # Disables (or deletes) this source scheduled in the hour count as that hour's leavers too.
    recent += (
        InboundScheduledAction.objects.filter(
            source=source, action=InboundScheduledAction.Action.DISABLE, created__gte=since
        )
        .exclude(state=InboundScheduledAction.State.CANCELLED)
        .count()
    )
    reason = _over(
        len(counted), source.guard_job_max_count, source.guard_job_max_percent, base, "in this job"
    ) or _over(
        recent + len(counted),
        source.guard_hour_max_count,
        source.guard_hour_max_percent,
        base,
        "in the last hour",
    )
    if not reason:
        return [], ""
    return counted, f"Held by the guard: {reason}. An operator can approve or reject it in the admin."


def _apply_guard(ctx: engine.Context, job: InboundJob) -> None:
    # InboundRecord.objects, not job.records: the related manager would read each row's deferred
    # job_id (a query per leaver) to attach the job it already knows.
    leavers = list(
        InboundRecord.objects.filter(job=job, outcome=Outcome.PENDING, leaver=True, approved_by="").only(
            "id", "key", "leaver"
        )
    )
    held, reason = _guard_holds(ctx, leavers)
    if held:
        InboundRecord.objects.filter(pk__in=[record.pk for record in held]).update(
            outcome=Outcome.HELD, reason=reason
        )


# --- workers ---------------------------------------------------------------------------------


def _actor(job: InboundJob) -> Actor:
    source = job.source
    if job.origin == InboundJob.Origin.API:
        return Actor.scim_client(id=source.client_id, name=source.client.name)
    if job.origin == InboundJob.Origin.CSV:
        return Actor(type=AuditEntry.ActorType.OPERATOR, name=f"{job.created_by} (CSV import)")
    return Actor.system(name=f"import_users ({source.name})")


# How many of the oldest unfinished jobs a claim considers (the rest wait for their turn).
CLAIM_CANDIDATES = 4


@transaction.atomic
def job_claim(*, source_id: int, job_id: uuid.UUID | None = None) -> InboundJob | None:
    """A job of the source to apply now, running under this worker's lease; None if there is none.

    The oldest job that shares no person with an earlier unfinished job of the
    source: up to SCIM_INBOUND_SOURCE_CONCURRENCY jobs of one source run at once,
    and records about one person still apply in the order they were sent. With
    `job_id`, that job or nothing.
    """
    # NO KEY UPDATE serializes claimers of a source without blocking uploads, whose new job rows
    # take a KEY SHARE lock on the source through their foreign key.
    source = InboundSource.objects.select_for_update(no_key=True).filter(pk=source_id).first()
    if source is None:
        return None
    now = timezone.now()
    unfinished = list(
        InboundJob.objects.filter(source=source, status__in=[Status.QUEUED, Status.RUNNING])
        .order_by("created", "id")
        .only("id", "status", "lease_until")
    )
    live = {
        job.pk
        for job in unfinished
        if job.status == Status.RUNNING and job.lease_until and job.lease_until > now
    }
    if len(live) >= int(scim_setting("INBOUND_SOURCE_CONCURRENCY")):
        return None
    candidates = [job for job in unfinished if job.pk not in live and (job_id is None or job.pk == job_id)]
    for candidate in candidates[:CLAIM_CANDIDATES]:
        position = next(index for index, job in enumerate(unfinished) if job.pk == candidate.pk)
        earlier = [job.pk for job in unfinished[:position]]
        if earlier and _waits_for(source, candidate.pk, earlier):
            continue
        job = InboundJob.objects.select_related("source__client").get(pk=candidate.pk)
        job.status = Status.RUNNING
        job.started = job.started or now
        job.attempts += 1
        job.lease_until = now + timedelta(seconds=scim_setting("INBOUND_LEASE_SECONDS"))
        job.save(update_fields=["status", "started", "attempts", "lease_until"])
        return job
    return None


def _waits_for(source: InboundSource, job_id: uuid.UUID, earlier: list[uuid.UUID]) -> bool:
    """Whether a job must wait for earlier unfinished ones: it names a person they do (as the record's
    key or its manager), or the source guards leavers and one of them has any (the guard counts
    leavers job by job)."""
    records = InboundRecord.objects
    if source.has_guard and records.filter(job_id__in=[*earlier, job_id], leaver=True).exists():
        return True
    # The names are read first and passed as a list: as one query with a subquery, the planner
    # (which sees a new job's id as rare) nested a thousand-row loop inside another.
    named = {
        name
        for pair in records.filter(job_id=job_id).values_list("key", "manager_key")
        for name in pair
        if name
    }
    return bool(named) and records.filter(job_id__in=earlier, key__in=named).exists()


def jobs_drain(*, job_id: uuid.UUID | str) -> int:
    """Apply the unfinished jobs of `job_id`'s source, oldest first; returns how many ran here."""
    source_id = InboundJob.objects.filter(pk=job_id).values_list("source_id", flat=True).first()
    if source_id is None:
        return 0
    ran = 0
    while (job := job_claim(source_id=source_id)) is not None:
        ran += 1
        try:
            job_run(job)
        except DatabaseError:
            raise  # the task retries; the lease runs out and the job resumes where it stopped
        except Exception as exc:  # noqa: BLE001 - recorded on the job so the source's queue moves on
            logger.exception("inbound job %s failed", job.pk)
            _job_failed(job, f"Processing stopped: {type(exc).__name__}: {exc}")
    return ran


def job_run(job: InboundJob, *, progress: Any = None) -> None:
    """Apply a claimed job's pending records, a chunk per transaction; then managers; then counts.

    Under the upload request's id: its change events, audit entries and deliveries carry it.
    """
    with request_id_bound(job.request_id or current_request_id()):
        _job_run(job, progress=progress)


def _job_run(job: InboundJob, *, progress: Any = None) -> None:
    try:
        config = transform.compile_source_config(job.source)
    except transform.SourceConfigError as exc:
        _job_failed(job, f"The source's configuration is invalid: {exc}")
        return
    keys = job.records.exclude(key="").values_list("key", flat=True)
    lower = config.match_ignores_case
    ctx = engine.Context(
        config=config,
        actor=_actor(job),
        job_keys=frozenset(key.lower() if lower else key for key in keys.iterator(chunk_size=5000)),
    )
    _apply_guard(ctx, job)
    size = 1 if job.fail_on_errors else int(scim_setting("INBOUND_CHUNK_SIZE"))
    lease = timedelta(seconds=scim_setting("INBOUND_LEASE_SECONDS"))
    failures = job.records.filter(outcome=Outcome.FAILED).count()
    while True:
        if job.fail_on_errors and failures >= job.fail_on_errors:
            job.records.filter(outcome=Outcome.PENDING).update(
                outcome=Outcome.SKIPPED,
                reason=f"Not applied: failOnErrors ({job.fail_on_errors}) was reached.",
                applied=timezone.now(),
            )
            break
        chunk = list(job.records.filter(outcome=Outcome.PENDING).order_by("index")[:size])
        if not chunk:
            break
        ctx.now = timezone.now()
        with transaction.atomic():
            engine.run_records(ctx, chunk)
            for record in chunk:
                if record.outcome == Outcome.PENDING:  # every path decides; this keeps the loop finite
                    engine.fail(
                        record, ScimError("The record could not be decided.", status=500), now=ctx.now
                    )
            engine.save_outcomes(chunk)
            InboundJob.objects.filter(pk=job.pk).update(lease_until=timezone.now() + lease)
        failures += sum(record.outcome == Outcome.FAILED for record in chunk)
        if progress is not None:
            progress(len(chunk))
    while True:
        waiting = list(job.records.filter(manager_pending=True).order_by("index")[:size])
        if not waiting:
            break
        with transaction.atomic():
            engine.resolve_pending_managers(ctx, waiting)
            engine.save_outcomes(waiting)
    _job_finish(job)


def job_counts(job: InboundJob) -> dict[str, int]:
    counts = {outcome: 0 for outcome in Outcome.values}
    for outcome, number in job.records.values_list("outcome").annotate(n=Count("id")).order_by():
        counts[outcome] = number
    return counts


def _job_finish(job: InboundJob) -> None:
    counts = job_counts(job)
    job.counts = counts
    job.status = Status.COMPLETED_WITH_ERRORS if counts[Outcome.FAILED] else Status.COMPLETED
    job.finished = timezone.now()
    job.lease_until = None
    job.save(update_fields=["counts", "status", "finished", "lease_until"])
    metrics.inbound_job_count(source=job.source.name, status=job.status, outcomes=counts)


def _job_failed(job: InboundJob, detail: str) -> None:
    InboundJob.objects.filter(pk=job.pk).update(
        status=Status.FAILED, detail=detail, finished=timezone.now(), lease_until=None
    )
    job.counts = job_counts(job)
    InboundJob.objects.filter(pk=job.pk).update(counts=job.counts)
    metrics.inbound_job_count(source=job.source.name, status=Status.FAILED, outcomes=job.counts)


def job_run_inline(job: InboundJob, *, progress: Any = None) -> InboundJob:
    """Claim and apply a job in this process (the import_users command), as a worker would."""
    claimed = job_claim(source_id=job.source_id, job_id=job.pk)
    if claimed is None:
        raise RuntimeError("Earlier jobs of this source about the same people are not finished yet.")
    job_run(claimed, progress=progress)
    claimed.refresh_from_db()
    return claimed


# --- held leavers -----------------------------------------------------------------------------


@transaction.atomic
def held_records_approve(*, record_ids: Iterable[int], approved_by: str) -> int:
    """Let held leavers through: their jobs go back to the queue and apply them (guard exempt).

    A held leaver that a later record about the same person has overtaken is
    skipped instead: applying it would undo what came after.
    """
    records = list(
        InboundRecord.objects.select_for_update()
        .filter(pk__in=list(record_ids), outcome=Outcome.HELD)
        .select_related("job")
    )
    reopened: set[uuid.UUID] = set()
    for record in records:
        later = (
            InboundRecord.objects.filter(job__source_id=record.job.source_id, key=record.key)
            .filter(Q(job__created__gt=record.job.created) | Q(job=record.job, index__gt=record.index))
            .exclude(outcome__in=[Outcome.PENDING, Outcome.HELD, Outcome.SKIPPED, Outcome.FAILED])
            .order_by("-applied")
            .first()
        )
        if later is not None:
            record.outcome = Outcome.SKIPPED
            record.reason = f"Approved by {approved_by}, but superseded by a later record ({later.outcome})."
            record.applied = timezone.now()
        else:
            record.outcome, record.reason, record.approved_by = Outcome.PENDING, "", approved_by[:255]
            reopened.add(record.job_id)
    InboundRecord.objects.bulk_update(records, ["outcome", "reason", "approved_by", "applied"])
    InboundJob.objects.filter(pk__in=reopened).update(status=Status.QUEUED, finished=None)
    for job_id in reopened:
        queue.send_on_commit(job_id)
    for job_id in {record.job_id for record in records} - reopened:
        _recount(job_id)
    return sum(record.outcome == Outcome.PENDING for record in records)


@transaction.atomic
def held_records_reject(*, record_ids: Iterable[int], rejected_by: str) -> int:
    """Leave the held leavers' users as they are; the records end skipped."""
    records = list(
        InboundRecord.objects.select_for_update().filter(pk__in=list(record_ids), outcome=Outcome.HELD)
    )
    for record in records:
        record.outcome = Outcome.SKIPPED
        record.reason = f"Rejected by {rejected_by}: the user was left as it is."
        record.applied = timezone.now()
    InboundRecord.objects.bulk_update(records, ["outcome", "reason", "applied"])
    for job_id in {record.job_id for record in records}:
        _recount(job_id)
    return len(records)


def _recount(job_id: uuid.UUID) -> None:
    job = InboundJob.objects.get(pk=job_id)
    if job.is_finished:
        job.counts = job_counts(job)
        job.save(update_fields=["counts"])


# --- effective dates and housekeeping -----------------------------------------------------------


def scheduled_actions_apply(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Apply the enables and disables that are due; returns how many were done.

    The guard weighs each source's due disables again first (_hold_due_disables).
    """
    now = now or timezone.now()
    _hold_due_disables(now)
    due = list(
        InboundScheduledAction.objects.filter(state=InboundScheduledAction.State.PENDING, due__lte=now)
        .order_by("due", "id")
        .values_list("pk", flat=True)[:limit]
    )
    done = 0
    for action_id in due:
        with transaction.atomic():
            action = (
                InboundScheduledAction.objects.select_for_update(skip_locked=True)
                .select_related("source")
                .filter(pk=action_id, state=InboundScheduledAction.State.PENDING)
                .first()
            )
            if action is None:
                continue  # another tick took it
            actor = Actor.system(name=f"inbound source {action.source.name} (effective date)")
            try:
                with transaction.atomic():
                    if action.action == InboundScheduledAction.Action.ENABLE:
                        directory_services.user_activate(actor=actor, user_id=action.user_id)
                        action.detail = "Enabled on the hire date."
                    elif action.source.leaver_action == InboundSource.LeaverAction.DELETE:
                        directory_services.user_delete(actor=actor, user_id=action.user_id)
                        action.detail = "Deleted on the termination date (the source's leaver policy)."
                    else:
                        directory_services.user_deactivate(actor=actor, user_id=action.user_id)
                        action.detail = "Disabled on the termination date."
                action.state = InboundScheduledAction.State.DONE
                done += 1
            except DirectoryError as exc:
                action.state, action.detail = InboundScheduledAction.State.FAILED, str(exc)
            action.done = now  # the run's clock: the guard's hourly window counts from it
            action.save(update_fields=["state", "detail", "done"])
    return done


def _hold_due_disables(now: datetime) -> None:
    """Hold every due disable of a source whose guard they would break today.

    Each future-dated leaver passed the guard when its record was applied, but leavers sent over
    weeks can share one termination date: a reorganisation announced in small batches, or an HR
    export gone wrong. On the day they all come due together, so the guard weighs them again, as
    one job of that source's due disables, added to its leavers of the last hour. Approved ones
    (an operator let them through) are not weighed again.
    """
    due = (
        InboundScheduledAction.objects.filter(
            state=InboundScheduledAction.State.PENDING,
            action=InboundScheduledAction.Action.DISABLE,
            due__lte=now,
            approved_by="",
        )
        .values("source_id")
        .annotate(n=Count("id"))
    )
    for row in due:
        source = InboundSource.objects.get(pk=row["source_id"])
        if not source.has_guard:
            continue
        reason = _over_on_the_day(source, row["n"], now)
        if reason:
            InboundScheduledAction.objects.filter(
                source=source,
                state=InboundScheduledAction.State.PENDING,
                action=InboundScheduledAction.Action.DISABLE,
                due__lte=now,
                approved_by="",
            ).update(state=InboundScheduledAction.State.HELD, detail=reason)


def _over_on_the_day(source: InboundSource, count: int, now: datetime) -> str:
    """Why `count` disables of `source` due now break its guard ("" when they do not)."""
    try:
        base = _population(transform.compile_source_config(source))
    except transform.SourceConfigError:
        base = User.objects.count()  # a source misconfigured since: weigh against everyone
    since = now - HOUR
    recent = (
        _leavers_applied(source, since)
        + InboundScheduledAction.objects.filter(
            source=source,
            action=InboundScheduledAction.Action.DISABLE,
            state=InboundScheduledAction.State.DONE,
            done__gte=since,
        ).count()
    )
    reason = _over(
        count, source.guard_job_max_count, source.guard_job_max_percent, base, "due today"
    ) or _over(
        recent + count, source.guard_hour_max_count, source.guard_hour_max_percent, base, "in the last hour"
    )
    if not reason:
        return ""
    return (
        f"Held by the guard on its date: {reason}. "
        "An operator can approve (applied at the next run) or cancel it in the admin."
    )


@transaction.atomic
def scheduled_actions_approve(*, action_ids: Iterable[int], approved_by: str) -> int:
    """Let held disables through: pending again, applied at the next run whatever the guard says."""
    return InboundScheduledAction.objects.filter(
        pk__in=list(action_ids), state=InboundScheduledAction.State.HELD
    ).update(
        state=InboundScheduledAction.State.PENDING,
        approved_by=approved_by[:255],
        detail=f"Approved by {approved_by}."[:1000],
    )


@transaction.atomic
def scheduled_actions_cancel(*, action_ids: Iterable[int], cancelled_by: str) -> int:
    """Cancel pending or held effective-dated actions (the users stay as they are); returns how many."""
    return InboundScheduledAction.objects.filter(
        pk__in=list(action_ids), state__in=InboundScheduledAction.OPEN
    ).update(
        state=InboundScheduledAction.State.CANCELLED,
        done=timezone.now(),
        detail=f"Cancelled by {cancelled_by}."[:1000],
    )


def jobs_resend_stale() -> int:
    """Send again the jobs whose task was lost (broker restart) or whose worker died (lease ran out).

    One task per source is enough: the claim picks whichever of its jobs may run.
    """
    now = timezone.now()
    stale = (
        InboundJob.objects.filter(
            Q(status=Status.QUEUED, created__lt=now - STALE_QUEUED)
            | Q(status=Status.RUNNING, lease_until__lte=now)
        )
        .order_by("source_id", "created")
        .values_list("source_id", "pk")
    )
    first: dict[int, uuid.UUID] = {}
    for source_id, job_id in stale:
        first.setdefault(source_id, job_id)
    for job_id in first.values():
        queue.send(job_id)
    return len(first)


def jobs_purge(*, older_than_days: int | None = None) -> int:
    """Delete finished jobs (with their records) and abandoned CSV uploads past their retention."""
    days = older_than_days or int(scim_setting("INBOUND_JOB_RETENTION_DAYS"))
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = InboundJob.objects.filter(
        status__in=[Status.COMPLETED, Status.COMPLETED_WITH_ERRORS, Status.FAILED], finished__lt=cutoff
    ).delete()
    InboundUpload.objects.filter(created__lt=timezone.now() - timedelta(days=1)).delete()
    return deleted


def operations_from_rows(
    rows: Iterable[Mapping[str, Any]], *, start: int = 0
) -> list[tuple[str, dict[str, Any]]]:
    """(bulkId, record) for records built outside the API (CSV rows): the bulkId is the row number."""
    return [(f"row{start + number}", dict(row)) for number, row in enumerate(rows, start=1)]
