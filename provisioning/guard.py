"""The deletion guard: disables and deletes beyond a target's thresholds wait for an operator.

A target may cap disables and deletes (together, users and groups) per full
sync run and per rolling hour, as a count and as a percentage of its
population. The delivery engine asks `DeletionGuard.allow` just before it
sends a disable or delete. Allowed operations are recorded as GuardGrant rows,
under a lock on the target row, so concurrent workers cannot together go
past a threshold; refused ones end as held deliveries (the `held` state),
with the reason, until an operator approves them (they go through on their
next attempt) or rejects them (the object stays as it is downstream).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from directory.correlation import current_request_id
from directory.models import Group, User
from provisioning import queue
from provisioning.models import (
    Delivery,
    DeliveryAttempt,
    GuardGrant,
    ObjectType,
    Target,
    TargetLink,
    TargetScope,
)
from provisioning.scope import stored_types

WINDOW = timedelta(hours=1)


class Held(Exception):
    """The guard refused an operation; the message says which threshold and how to release it."""


def population(target: Target) -> int:
    """What percentages are of: the larger of the objects in scope and the objects linked on the target."""
    stored = stored_types(target)
    in_scope = TargetScope.objects.filter(target=target, object_type__in=stored).count() if stored else 0
    if ObjectType.USER not in stored:
        in_scope += User.objects.count()
    if ObjectType.GROUP not in stored:
        in_scope += Group.objects.count()
    return max(in_scope, TargetLink.objects.filter(target=target).count())


@dataclass(frozen=True)
class GuardUsage:
    """How much of each threshold is used (for the status page and the held reason)."""

    hour: int
    run: int | None
    population: int


def usage(target: Target, *, run_id: uuid.UUID | None = None) -> GuardUsage:
    grants = GuardGrant.objects.filter(target=target)
    hour = grants.filter(created__gte=timezone.now() - WINDOW).count()
    run = grants.filter(run_id=run_id).count() if run_id is not None else None
    return GuardUsage(hour=hour, run=run, population=population(target))


def _over(count: int, limit: int | None, percent: float | None, base: int, what: str) -> str:
    if limit is not None and count > limit:
        return f"{count} disables/deletes {what} would exceed the limit of {limit}"
    if percent is not None and count * 100 > percent * max(base, 1):
        share = count * 100 / max(base, 1)
        return (
            f"{count} disables/deletes {what} ({share:.1f}% of {base} objects) would exceed the limit of "
            f"{percent:g}%"
        )
    return ""


class DeletionGuard:
    """The guard for one delivery's attempt; `allow` raises Held or records the grant."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    def allow(
        self, *, target: Target, object_type: str, object_id: uuid.UUID, action: str, label: str
    ) -> None:
        delivery = self.delivery
        with transaction.atomic():
            if target.has_deletion_guard():
                # Guard checks of one target take turns, so the counts below cannot go stale.
                list(Target.objects.select_for_update().filter(pk=target.pk).values_list("pk", flat=True))
            if GuardGrant.objects.filter(delivery=delivery).exists():
                return  # allowed already: this is a retry of the same operation
            approved_by = delivery.guard_approved_by
            if target.has_deletion_guard() and not approved_by:
                reason = self.refusal(target)
                if reason:
                    raise Held(
                        f"held by the deletion guard: {action} of {label}: {reason}. "
                        "Approve or reject it under Provisioning › Held disables and deletes."
                    )
            GuardGrant.objects.create(
                target=target,
                delivery=delivery,
                object_type=object_type,
                object_id=object_id,
                action=action,
                run_id=delivery.run_id,
                approved_by=approved_by,
            )

    def refusal(self, target: Target) -> str:
        current = usage(target, run_id=self.delivery.run_id)
        reason = _over(
            current.hour + 1,
            target.guard_hour_max_count,
            target.guard_hour_max_percent,
            current.population,
            "in the last hour",
        )
        if not reason and current.run is not None:
            reason = _over(
                current.run + 1,
                target.guard_run_max_count,
                target.guard_run_max_percent,
                current.population,
                "in this full sync run",
            )
        return reason


# --- operators ------------------------------------------------------------------------------------


def held_deliveries(*, target: Target | None = None) -> QuerySet[Delivery]:
    held = Delivery.objects.filter(state=Delivery.State.HELD)
    return held.filter(target=target) if target is not None else held


@transaction.atomic
def held_approve(
    *, operator: str, delivery_ids: Sequence[int] | None = None, target: Target | None = None
) -> int:
    """Release held deliveries (these ids, or all of a target's): their next attempt goes through."""
    if delivery_ids is None and target is None:
        raise ValueError("say which held deliveries to approve")
    held = held_deliveries(target=target)
    if delivery_ids is not None:
        held = held.filter(pk__in=list(delivery_ids))
    ids = list(held.select_for_update().values_list("pk", flat=True))
    now = timezone.now()
    Delivery.objects.filter(pk__in=ids, state=Delivery.State.HELD).update(
        state=Delivery.State.QUEUED,
        guard_approved_by=operator[:150],
        next_attempt_at=None,
        enqueued_at=now,
        last_error=f"approved by {operator}",
        updated=now,
    )
    queue.send_on_commit(ids)
    return len(ids)


@transaction.atomic
def held_reject(*, operator: str, delivery_ids: Sequence[int]) -> int:
    """Drop held deliveries: nothing is sent, the object stays as it is downstream; the log says who."""
    held = list(held_deliveries().filter(pk__in=list(delivery_ids)).select_for_update())
    now = timezone.now()
    Delivery.objects.filter(pk__in=[d.pk for d in held], state=Delivery.State.HELD).update(
        state=Delivery.State.SUPERSEDED,
        last_error=f"rejected by {operator}: left as it is downstream",
        updated=now,
    )
    DeliveryAttempt.objects.bulk_create(
        [
            DeliveryAttempt(
                target_id=delivery.target_id,
                delivery=delivery,
                object_type=delivery.object_type,
                object_id=delivery.object_id,
                attempt=delivery.attempts,
                run_id=delivery.run_id or uuid.uuid4(),
                action=DeliveryAttempt.Action.SKIP,
                outcome=DeliveryAttempt.Outcome.SKIPPED,
                in_scope=False,
                error=f"held disable/delete rejected by {operator}",
                created=now,
                request_id=current_request_id(),
            )
            for delivery in held
        ]
    )
    return len(held)
