"""Deciding and applying what a batch of inbound records does to the directory.

`run_records` takes records in their order, splits them into passes in which
each person appears once (so two records about one person apply one after
the other), and for each pass:

1. looks up the users the records match with one query per thousand keys,
   and the managers they name with another;
2. turns each record into a Desired state and compares it with the user:
   nothing differs → `unchanged` without a write; a new person → `created`;
   otherwise `updated`, `enabled` (a rehire), `disabled` or `deleted` (a
   leaver, by the source's policy), within the actions the source allows;
3. writes through directory.services only (users_create_many for joiners,
   a level at a time so that managers exist before their reports;
   users_update_many for movers, rehires and leavers, all of a pass in one
   call, with user_update one at a time only if that call loses a uniqueness
   race; user_delete), so every change has its ChangeEvent and AuditEntry.

A manager named by a record that is applied later in the job (another chunk)
is set by `resolve_pending_managers` once every record of the job is applied.
In a dry run nothing is written: passes see what earlier passes would have
done through `Context.virtual`, and the records are returned with the
outcome they would have.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from directory import extensions, services
from directory.actors import Actor
from directory.columns import ENTERPRISE_COLUMNS, NAME_COLUMNS, USER_COLUMNS
from directory.exceptions import DirectoryError, InvalidValue, UniquenessConflict
from directory.models import User
from scim_api.exceptions import ScimError, error_body, scim_error_for
from scim_api.inbound import transform
from scim_api.inbound.models import InboundRecord, InboundScheduledAction, InboundSource
from scim_api.inbound.transform import CompiledSource, Desired

Outcome = InboundRecord.Outcome
LOOKUP_BATCH = 1000
RECORD_FIELDS = [
    "outcome",
    "reason",
    "user",
    "error",
    "warnings",
    "changes",
    "manager_key",
    "manager_pending",
    "applied",
]

_SCIM_NAMES: dict[str, str] = {
    **{column: name for name, column in USER_COLUMNS.items()},
    **{column: f"name.{part}" for part, column in NAME_COLUMNS.items()},
    **{column: name for name, column in ENTERPRISE_COLUMNS.items()},
    "active": "active",
    "manager_id": "manager",
}
_UNSET: Any = object()


@dataclass
class Virtual:
    """A dry run's view of one person after the passes so far: the user as it would be, or None (deleted)."""

    user: User | None
    values: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Context:
    config: CompiledSource
    actor: Actor
    dry_run: bool = False
    now: datetime = field(default_factory=timezone.now)
    # Every key of the job: a manager reference to one of them resolves once its record is applied.
    job_keys: frozenset[str] = frozenset()
    virtual: dict[str, Virtual] = field(default_factory=dict)
    # Dry runs: unique extension values (label, value as compared) taken by earlier records -> their key.
    claimed: dict[tuple[str, Any], str] = field(default_factory=dict)

    @property
    def source(self) -> InboundSource:
        return self.config.source

    def norm(self, key: str) -> str:
        return key.lower() if self.config.match_ignores_case else key


@dataclass
class Plan:
    record: InboundRecord
    current: User | None
    desired: Desired
    current_values: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    action: str = "noop"  # create, update, delete, noop, skip
    fields: dict[str, Any] = field(default_factory=dict)
    values: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    manager_id: Any = _UNSET
    manager_plan: Plan | None = None
    outcome: str = Outcome.UNCHANGED
    schedule: list[tuple[str, datetime]] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    awaiting_hire: bool = False
    created: User | None = None


# --- outcomes ---------------------------------------------------------------------------------


def save_outcomes(records: Sequence[InboundRecord]) -> None:
    """Write the records' outcomes in one statement.

    On PostgreSQL one UPDATE ... FROM unnest(arrays): Django's bulk_update
    builds a CASE per column and row, which costs more than applying the
    records themselves at a thousand rows.
    """
    if not records:
        return
    if connection.vendor != "postgresql":
        InboundRecord.objects.bulk_update(records, RECORD_FIELDS, batch_size=500)
        return
    table = InboundRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {table} AS r SET
                outcome = v.outcome, reason = v.reason, user_id = v.user_id, error = v.error::jsonb,
                warnings = v.warnings::jsonb, changes = v.changes::jsonb, manager_key = v.manager_key,
                manager_pending = v.manager_pending, applied = v.applied
            FROM unnest(
                %s::bigint[], %s::text[], %s::text[], %s::uuid[], %s::text[], %s::text[], %s::text[],
                %s::text[], %s::boolean[], %s::timestamptz[]
            ) AS v(
                id, outcome, reason, user_id, error, warnings, changes, manager_key, manager_pending, applied
            )
            WHERE r.id = v.id
            """,
            [
                [record.pk for record in records],
                [record.outcome for record in records],
                [record.reason for record in records],
                [record.user_id for record in records],
                [json.dumps(record.error) if record.error is not None else None for record in records],
                [json.dumps(record.warnings or []) for record in records],
                [json.dumps(record.changes or {}, default=str) for record in records],
                [record.manager_key for record in records],
                [record.manager_pending for record in records],
                [record.applied for record in records],
            ],
        )


def _reset(record: InboundRecord) -> None:
    record.reason, record.error, record.warnings, record.changes = "", None, [], {}


def fail(record: InboundRecord, exc: Exception, *, now: datetime) -> None:
    error = scim_error_for(exc)
    if error is None:
        raise exc
    record.outcome = Outcome.FAILED
    record.error = error_body(error.status, error.detail, error.scim_type)
    record.applied = now


def skip(record: InboundRecord, reason: str, *, now: datetime) -> None:
    record.outcome, record.reason, record.applied = Outcome.SKIPPED, reason, now


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --- lookups --------------------------------------------------------------------------------------


def lookup_users(ctx: Context, keys: Iterable[str], *, with_values: bool = False) -> dict[str, list[User]]:
    """Users by (normalised) key, for keys of the source's matching attribute; a dry run's virtual first."""
    wanted = {ctx.norm(key) for key in keys if key}
    found: dict[str, list[User]] = defaultdict(list)
    for key in list(wanted):
        if key in ctx.virtual:
            virtual = ctx.virtual[key]
            if virtual.user is not None:
                found[key].append(virtual.user)
            wanted.discard(key)
    ordered = sorted(wanted)
    for start in range(0, len(ordered), LOOKUP_BATCH):
        chunk = ordered[start : start + LOOKUP_BATCH]
        queryset = ctx.config.matching(User.objects.all(), chunk)
        if with_values:
            queryset = queryset.prefetch_related("values")
        for user in queryset:
            found[ctx.norm(ctx.config.match_value(user))].append(user)
    return found


def _values_of(ctx: Context, user: User) -> dict[str, list[dict[str, Any]]]:
    key = ctx.norm(ctx.config.match_value(user))
    if key in ctx.virtual and ctx.virtual[key].user is user:
        return ctx.virtual[key].values
    current: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(user.values.all(), key=lambda row: (row.kind, row.position)):
        current[row.kind].append(
            {
                "value": row.value,
                "display": row.display,
                "type": row.type,
                "primary": row.primary,
                "address": row.address,
            }
        )
    return dict(current)


def merge_by_type(current: list[dict[str, Any]], given: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`current` with its elements of the types `given` names replaced by `given`'s, in place.

    A record speaks for the types it sends (its work email, its mobile phone),
    not for values of other types the directory holds from elsewhere.
    """
    given_types = {str(item["type"]).lower() for item in given}
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in given:
        by_type[str(item["type"]).lower()].append(item)
    merged: list[dict[str, Any]] = []
    placed: set[str] = set()
    for item in current:
        kind = str(item["type"]).lower()
        if kind in given_types:
            if kind not in placed:
                merged.extend(by_type[kind])
                placed.add(kind)
            continue
        merged.append(item)
    for kind in by_type:
        if kind not in placed:
            merged.extend(by_type[kind])
    if any(item.get("primary") for item in given):
        merged = [item if item in given else {**item, "primary": False} for item in merged]
    return merged


# --- planning ---------------------------------------------------------------------------------


def split_passes(records: Sequence[InboundRecord], norm: Any) -> list[list[InboundRecord]]:
    """Records in order, split so that each key appears at most once per pass."""
    passes: list[list[InboundRecord]] = []
    seen: dict[str, int] = defaultdict(int)
    for record in records:
        key = norm(record.key) if record.key else f"\x00{record.index}"
        number = seen[key]
        seen[key] += 1
        while len(passes) <= number:
            passes.append([])
        passes[number].append(record)
    return passes


def run_records(ctx: Context, records: Sequence[InboundRecord]) -> None:
    """Decide and (unless a dry run) apply `records`; each ends with its outcome set."""
    for batch in split_passes(records, ctx.norm):
        _run_pass(ctx, batch)


def _run_pass(ctx: Context, batch: list[InboundRecord]) -> None:
    source = ctx.source
    ready: list[InboundRecord] = []
    for record in batch:
        if record.outcome != Outcome.PENDING:
            continue
        _reset(record)
        if not record.key:
            fail(
                record,
                InvalidValue(f"The record has no key: {source.match_source} is empty or missing."),
                now=ctx.now,
            )
        elif not transform.in_scope(ctx.config, record.data):
            skip(record, f"out of scope (scoping filter: {source.scoping_filter})", now=ctx.now)
        else:
            ready.append(record)
    if not ready:
        return
    users = lookup_users(ctx, [record.key for record in ready], with_values=True)
    plans: list[Plan] = []
    for record in ready:
        matched = users.get(ctx.norm(record.key), [])
        if len(matched) > 1:
            ids = ", ".join(sorted(str(user.pk) for user in matched))
            fail(
                record,
                ScimError(
                    f"{source.match_label} {record.key!r} matches {len(matched)} users ({ids}); "
                    "fix the duplicates before this record can apply.",
                    status=409,
                    scim_type="uniqueness",
                ),
                now=ctx.now,
            )
            continue
        current = matched[0] if matched else None
        try:
            desired = transform.desired_state(
                ctx.config,
                record.data,
                key=record.key,
                current_extensions=current.extensions if current is not None else None,
            )
        except (DirectoryError, ScimError) as exc:
            fail(record, exc, now=ctx.now)
            continue
        if desired.conflicting_match_value is not None:
            record.warnings.append(
                f"The record's {source.match_label} ({desired.conflicting_match_value!r}) differs from its "
                f"key ({record.key!r}); the key is kept."
            )
        plan = Plan(record=record, current=current, desired=desired)
        if current is not None:
            plan.current_values = _values_of(ctx, current)
        plans.append(plan)
    _resolve_managers(ctx, plans)
    for plan in plans:
        try:
            if plan.current is None:
                _decide_new(ctx, plan)
            else:
                _decide_existing(ctx, plan)
        except (DirectoryError, ScimError) as exc:
            fail(plan.record, exc, now=ctx.now)
            plan.action = "failed"
    if ctx.dry_run:
        _simulate(ctx, plans)
    else:
        _apply(ctx, plans)


def _resolve_managers(ctx: Context, plans: list[Plan]) -> None:
    wanted = {plan.desired.manager_key for plan in plans if plan.desired.manager_key}
    managers = lookup_users(ctx, wanted) if wanted else {}
    joining = {ctx.norm(plan.record.key): plan for plan in plans if plan.current is None}
    for plan in plans:
        key = plan.desired.manager_key
        record = plan.record
        if key is None:
            continue
        record.manager_key = key
        if key == "":
            plan.manager_id = None
            continue
        norm = ctx.norm(key)
        found = managers.get(norm, [])
        if norm == ctx.norm(record.key):
            record.warnings.append("The record names itself as its manager; the manager is left as it is.")
        elif len(found) == 1:
            plan.manager_id = found[0].pk
        elif len(found) > 1:
            record.warnings.append(
                f"Manager {key!r} matches {len(found)} users; the manager is left as it is."
            )
        elif norm in joining:
            plan.manager_plan = joining[norm]
        elif norm in ctx.job_keys:
            # Applied later in this job: resolve_pending_managers sets it at the end.
            record.manager_pending = True
        else:
            record.warnings.append(
                f"Manager {key!r} not found: no user has {ctx.source.match_label} {key!r}; "
                "the manager is left as it is."
            )


def _scheduling(ctx: Context, plan: Plan, *, active_now: bool | None) -> bool | None:
    """Effective dates: the `active` to apply now; fills the plan's enables/disables to schedule or cancel."""
    desired = plan.desired
    target = desired.active
    hire, ends = desired.hire_date, desired.termination_date
    Action = InboundScheduledAction.Action
    if ends is not None and ends <= ctx.now:
        target = False
        plan.cancel.extend([Action.DISABLE, Action.ENABLE])
        return target
    if ends is not None:
        plan.schedule.append((Action.DISABLE, ends))
    elif desired.termination_cleared:
        plan.cancel.append(Action.DISABLE)
    if hire is not None and hire > ctx.now and active_now is not True:
        # A joiner or a rehire dated in the future: disabled until the day, whatever `active` says now.
        plan.schedule.append((Action.ENABLE, hire))
        plan.awaiting_hire = True
        target = False
    elif ctx.config.hire_date is not None:
        plan.cancel.append(Action.ENABLE)
    return target


def _decide_new(ctx: Context, plan: Plan) -> None:
    source, record, desired = ctx.source, plan.record, plan.desired
    active = _scheduling(ctx, plan, active_now=None)
    if active is False and not plan.awaiting_hire:
        plan.action = "skip"
        plan.schedule.clear()
        skip(record, "Not in the directory, and a leaver: no account to create.", now=ctx.now)
        return
    if not source.allow_create:
        plan.action = "skip"
        plan.schedule.clear()
        skip(record, "This source may not create users.", now=ctx.now)
        return
    plan.action = "create"
    plan.fields = dict(desired.fields)
    given_extensions = dict(desired.extensions)
    if ctx.config.match_column is not None:
        plan.fields[ctx.config.match_column] = record.key
    else:
        urn, attribute = ctx.config.match_urn or "", ctx.config.match_attribute
        assert attribute is not None
        given_extensions[urn] = {**(given_extensions.get(urn) or {}), attribute.name: record.key}
    if active is not None:
        plan.fields["active"] = active
    if given_extensions:
        plan.fields["extensions"] = extensions.clean("user", given_extensions, current={})
    if plan.manager_id is not _UNSET:
        plan.fields["manager_id"] = plan.manager_id
    plan.values = services.normalise_values(desired.values)
    plan.outcome = Outcome.CREATED


def _decide_existing(ctx: Context, plan: Plan) -> None:
    source, record, desired, user = ctx.source, plan.record, plan.desired, plan.current
    assert user is not None
    changes: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    for column, value in desired.fields.items():
        if column == "active" or column == ctx.config.match_column:
            continue
        if getattr(user, column) != value:
            fields[column] = value
            changes[_SCIM_NAMES.get(column, column)] = [getattr(user, column), value]
    for kind, items in services.normalise_values(desired.values).items():
        current = plan.current_values.get(kind, [])
        merged = merge_by_type(current, items)
        if merged != current:
            plan.values[kind] = merged
            changes[kind] = [
                [v["value"] or v["address"] for v in current],
                [v["value"] or v["address"] for v in merged],
            ]
    if desired.extensions:
        final = extensions.clean("user", {**user.extensions, **desired.extensions}, current=user.extensions)
        if final != user.extensions:
            fields["extensions"] = final
            for urn in sorted(set(final) | set(user.extensions)):
                old, new = user.extensions.get(urn) or {}, final.get(urn) or {}
                for name in sorted(set(old) | set(new)):
                    if old.get(name) != new.get(name):
                        changes[f"{urn}:{name}"] = [old.get(name), new.get(name)]
    if plan.manager_id is not _UNSET and plan.manager_id != user.manager_id:
        fields["manager_id"] = plan.manager_id
        changes["manager"] = [user.manager_id, plan.manager_id]

    target = _scheduling(ctx, plan, active_now=user.active)
    refused: list[str] = []
    if (fields or plan.values) and not source.allow_update:
        refused.append("This source may not update attributes")
        fields, plan.values, changes = {}, {}, {}
    leaver = target is False and not plan.awaiting_hire
    if leaver and source.leaver_action == InboundSource.LeaverAction.DELETE:
        if source.allow_disable:
            plan.action, plan.outcome = "delete", Outcome.DELETED
            plan.schedule.clear()
            return
        refused.append("This source may not delete users")
    elif target is False and user.active:
        if source.allow_disable:
            fields["active"] = False
            changes["active"] = [True, False]
        else:
            refused.append("This source may not disable users")
    elif target is True and not user.active:
        if source.allow_enable:
            fields["active"] = True
            changes["active"] = [False, True]
        else:
            refused.append("This source may not enable users")
    if not source.allow_update and not source.allow_enable:
        plan.schedule = [item for item in plan.schedule if item[0] != InboundScheduledAction.Action.ENABLE]
    if not source.allow_disable:
        plan.schedule = [item for item in plan.schedule if item[0] != InboundScheduledAction.Action.DISABLE]
    record.changes = {name: [_jsonable(old), _jsonable(new)] for name, (old, new) in changes.items()}
    plan.fields = fields
    if "active" in fields:
        plan.outcome = Outcome.ENABLED if fields["active"] else Outcome.DISABLED
    elif fields or plan.values:
        plan.outcome = Outcome.UPDATED
    else:
        plan.outcome = Outcome.UNCHANGED
    plan.action = "update" if (fields or plan.values) else "noop"
    if refused:
        if plan.action == "noop" and not plan.schedule:
            plan.action = "skip"
            skip(record, "; ".join(refused) + ".", now=ctx.now)
        else:
            record.warnings.extend(
                f"{reason}: that part of the record was not applied." for reason in refused
            )


# --- applying -------------------------------------------------------------------------------------


def _creation_levels(plans: list[Plan]) -> list[list[Plan]]:
    """Joiners grouped so that a manager joining in this pass is created a level before their reports."""
    remaining = [plan for plan in plans if plan.action == "create"]
    levels: list[list[Plan]] = []
    placed: set[int] = set()
    while remaining:
        level = [
            plan
            for plan in remaining
            if plan.manager_plan is None
            or plan.manager_plan.action != "create"
            or id(plan.manager_plan) in placed
        ]
        if not level:
            # Managers of each other, all joining: create them, and set the managers at the end of the job.
            for plan in remaining:
                plan.manager_plan = None
                plan.record.manager_pending = True
            level = remaining
        levels.append(level)
        placed.update(id(plan) for plan in level)
        remaining = [plan for plan in remaining if id(plan) not in placed]
    return levels


def _link_manager(plan: Plan) -> None:
    manager = plan.manager_plan
    if manager is None:
        return
    if manager.created is not None:
        plan.fields["manager_id"] = manager.created.pk
    else:
        plan.record.warnings.append(
            f"Manager {plan.desired.manager_key!r} was not created (its record failed); "
            "the manager is left empty."
        )


def _apply(ctx: Context, plans: list[Plan]) -> None:
    for level in _creation_levels(plans):
        for plan in level:
            _link_manager(plan)
        _create(ctx, level)
    _update_many(ctx, [plan for plan in plans if plan.action == "update"])
    for plan in plans:
        if plan.action == "delete":
            _delete(ctx, plan)
        elif plan.action == "noop":
            _finish(ctx, plan, plan.current)
        if plan.record.outcome != Outcome.FAILED and plan.action in ("create", "update", "noop"):
            _schedule(ctx, plan)


def _finish(ctx: Context, plan: Plan, user: User | None) -> None:
    record = plan.record
    record.outcome = plan.outcome
    record.user_id = user.pk if user is not None else None
    record.applied = ctx.now


def _create(ctx: Context, level: list[Plan]) -> None:
    if not level:
        return
    new = [
        services.NewUser(
            user_name=plan.fields.get("user_name", ""),
            values=plan.values,
            attributes={name: value for name, value in plan.fields.items() if name != "user_name"},
        )
        for plan in level
    ]
    try:
        results: list[User | DirectoryError] = services.users_create_many(actor=ctx.actor, users=new)
    except UniquenessConflict:
        # A userName was taken between the check and the insert: one at a time, each in a savepoint.
        results = []
        for item in new:
            try:
                with transaction.atomic():
                    results.append(
                        services.user_create(
                            actor=ctx.actor, user_name=item.user_name, values=item.values, **item.attributes
                        )
                    )
            except DirectoryError as exc:
                results.append(exc)
    for plan, result in zip(level, results, strict=True):
        if isinstance(result, User):
            plan.created = result
            _finish(ctx, plan, result)
        else:
            fail(plan.record, result, now=ctx.now)


def _update_many(ctx: Context, plans: list[Plan]) -> None:
    """Movers, rehires and leavers of a pass: one users_update_many call (a few statements for all)."""
    if not plans:
        return
    changes = []
    for plan in plans:
        assert plan.current is not None
        changes.append(
            services.UserChange(
                user_id=plan.current.pk,
                expected_version=plan.current.version,
                values=plan.values or None,
                changes=plan.fields,
            )
        )
    try:
        results = services.users_update_many(actor=ctx.actor, updates=changes)
    except UniquenessConflict:
        # A unique value was taken between the check and the write: one at a time, each in a savepoint.
        for plan in plans:
            _update(ctx, plan)
        return
    for plan, result in zip(plans, results, strict=True):
        if isinstance(result, User):
            _updated(ctx, plan, result)
        else:
            fail(plan.record, result, now=ctx.now)


def _updated(ctx: Context, plan: Plan, updated: User) -> None:
    assert plan.current is not None
    if updated.version == plan.current.version:  # nothing differed after all
        plan.outcome = Outcome.UNCHANGED
        plan.record.changes = {}
    _finish(ctx, plan, updated)


def _update(ctx: Context, plan: Plan) -> None:
    user = plan.current
    assert user is not None
    try:
        # user_update is atomic itself: inside the chunk's transaction, a savepoint that a failure
        # rolls back alone.
        updated = services.user_update(
            actor=ctx.actor,
            user_id=user.pk,
            expected_version=user.version,
            values=plan.values or None,
            **plan.fields,
        )
    except DirectoryError as exc:
        fail(plan.record, exc, now=ctx.now)
        return
    _updated(ctx, plan, updated)


def _delete(ctx: Context, plan: Plan) -> None:
    user = plan.current
    assert user is not None
    try:
        services.user_delete(actor=ctx.actor, user_id=user.pk, expected_version=user.version)
    except DirectoryError as exc:
        fail(plan.record, exc, now=ctx.now)
        return
    _finish(ctx, plan, user)
    plan.record.reason = f"Deleted user {user.pk} ({user.user_name}), as the source's leaver policy says."


def _schedule(ctx: Context, plan: Plan) -> None:
    """Create, move or cancel this person's pending effective-dated actions from this source."""
    user_id = plan.record.user_id
    if user_id is None or (not plan.schedule and not plan.cancel):
        return
    pending = {
        action.action: action
        for action in InboundScheduledAction.objects.filter(
            source=ctx.source, user_id=user_id, state__in=InboundScheduledAction.OPEN
        )
    }
    wanted = dict(plan.schedule)
    changed: dict[str, Any] = {}
    for action, due in wanted.items():
        existing = pending.get(action)
        if existing is None:
            InboundScheduledAction.objects.create(
                source=ctx.source, user_id=user_id, action=action, due=due, record=plan.record
            )
            changed[f"scheduled {action}"] = [None, due.isoformat()]
        elif existing.due != due:
            changed[f"scheduled {action}"] = [existing.due.isoformat(), due.isoformat()]
            # A held disable moved to another day is weighed again by the guard on that day.
            existing.due, existing.record = due, plan.record
            existing.state, existing.detail = InboundScheduledAction.State.PENDING, ""
            existing.save(update_fields=["due", "record", "state", "detail"])
    for action in plan.cancel:
        existing = pending.get(action)
        if existing is not None and action not in wanted:
            existing.state, existing.done = InboundScheduledAction.State.CANCELLED, ctx.now
            existing.detail = f"Cancelled by record {plan.record.bulk_id or plan.record.index}."
            existing.save(update_fields=["state", "done", "detail"])
            changed[f"scheduled {action}"] = [existing.due.isoformat(), None]
    if changed:
        plan.record.changes = {**plan.record.changes, **changed}
        if plan.record.outcome == Outcome.UNCHANGED:
            plan.record.outcome = Outcome.UPDATED


# --- dry runs -----------------------------------------------------------------------------------


def _simulate(ctx: Context, plans: list[Plan]) -> None:
    """Outcomes as _apply would set them, without writing; later passes see the result in ctx.virtual."""
    creating = [plan for plan in plans if plan.action == "create"]
    names = [str(plan.fields.get("user_name") or "") for plan in creating]
    taken = {name.lower() for name in services_taken_user_names(names)}
    for plan in creating:
        name = str(plan.fields.get("user_name") or "")
        if not name.strip():
            fail(plan.record, InvalidValue("userName is required", field="user_name"), now=ctx.now)
            continue
        if name.lower() in taken:
            fail(
                plan.record,
                UniquenessConflict(f"userName {name!r} is already taken", field="user_name"),
                now=ctx.now,
            )
            continue
        if not _unique_extensions_free(ctx, plan, None):
            continue
        taken.add(name.lower())
        user = User(**{k: v for k, v in plan.fields.items() if k != "manager_id"})
        user.manager_id = plan.fields.get("manager_id")
        plan.created = user
        ctx.virtual[ctx.norm(plan.record.key)] = Virtual(user=user, values=dict(plan.values))
        _finish(ctx, plan, None)
        _note_schedule(plan)
    for plan in plans:
        if plan.action == "update" and not _unique_extensions_free(ctx, plan, plan.current):
            continue
        if plan.action in ("update", "noop", "delete"):
            _finish(ctx, plan, plan.current)
            _note_schedule(plan)
        if plan.action == "update" and plan.current is not None:
            user = User(**{f.attname: getattr(plan.current, f.attname) for f in User._meta.concrete_fields})
            for name, value in plan.fields.items():
                setattr(user, name, value)
            values = {**plan.current_values, **plan.values}
            ctx.virtual[ctx.norm(plan.record.key)] = Virtual(user=user, values=values)
        elif plan.action == "delete":
            ctx.virtual[ctx.norm(plan.record.key)] = Virtual(user=None)
        if plan.manager_plan is not None and plan.manager_plan.created is None:
            plan.record.warnings.append(
                f"Manager {plan.desired.manager_key!r} would not be created (its record fails)."
            )


def _unique_extensions_free(ctx: Context, plan: Plan, current: User | None) -> bool:
    """Whether the unique extension values a dry-run record sets are free; fails the record if not.

    As the real run would find them: taken by a user in the directory, or by an earlier record
    of the same dry run.
    """
    given = plan.fields.get("extensions")
    if not given:
        return True
    before = current.extensions if current is not None else None
    try:
        extensions.check_unique("user", given, current=before, exclude=current.pk if current else None)
        claims = extensions.unique_claims("user", given, current=before)
        for label, compared, value in claims:
            owner = ctx.claimed.get((label, compared))
            if owner is not None and owner != plan.record.key:
                raise UniquenessConflict(f"{label} {value!r} is already taken", field=label)
    except DirectoryError as exc:
        fail(plan.record, exc, now=ctx.now)
        return False
    for label, compared, _ in claims:
        ctx.claimed[(label, compared)] = plan.record.key
    return True


def _note_schedule(plan: Plan) -> None:
    for action, due in plan.schedule:
        plan.record.changes = {**plan.record.changes, f"scheduled {action}": [None, due.isoformat()]}


def services_taken_user_names(names: list[str]) -> set[str]:
    """userNames (lower case) already in the directory, one query per thousand."""
    lowered = sorted({name.lower() for name in names if name})
    taken: set[str] = set()
    for start in range(0, len(lowered), LOOKUP_BATCH):
        chunk = lowered[start : start + LOOKUP_BATCH]
        taken.update(
            name.lower()
            for name in User.objects.filter(user_name__lower__in=chunk).values_list("user_name", flat=True)
        )
    return taken


# --- end of job -------------------------------------------------------------------------------------


def resolve_pending_managers(ctx: Context, records: list[InboundRecord]) -> None:
    """Set the managers that named a person applied later in the job; report those still unresolved.

    The managers found are set with one users_update_many call for all the records.
    """
    managers = lookup_users(ctx, {record.manager_key for record in records})
    resolved: list[tuple[InboundRecord, uuid.UUID]] = []
    for record in records:
        record.manager_pending = False
        found = managers.get(ctx.norm(record.manager_key), [])
        if record.user_id is None or record.outcome in (Outcome.FAILED, Outcome.DELETED, Outcome.SKIPPED):
            continue
        if len(found) != 1 or found[0].pk == record.user_id:
            record.warnings = [
                *record.warnings,
                f"Manager {record.manager_key!r} not found after the whole job was applied; "
                "the manager is left as it is.",
            ]
            continue
        resolved.append((record, found[0].pk))
    before = dict(
        User.objects.filter(pk__in=[record.user_id for record, _ in resolved]).values_list("pk", "manager_id")
    )
    changing = [
        (record, manager_id) for record, manager_id in resolved if before.get(record.user_id) != manager_id
    ]
    if not changing:
        return
    results: list[User | DirectoryError] = services.users_update_many(
        actor=ctx.actor,
        updates=[
            services.UserChange(user_id=record.user_id, changes={"manager_id": manager_id})
            for record, manager_id in changing
        ],
    )
    for (record, manager_id), result in zip(changing, results, strict=True):
        if isinstance(result, DirectoryError):
            record.warnings = [*record.warnings, f"Manager {record.manager_key!r} could not be set: {result}"]
            continue
        record.changes = {
            **record.changes,
            "manager": [_jsonable(before.get(record.user_id)), str(manager_id)],
        }
        if record.outcome == Outcome.UNCHANGED:
            record.outcome = Outcome.UPDATED
