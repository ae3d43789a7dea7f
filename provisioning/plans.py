"""Dry-run plans: what a full sync would do, object by object, without writing anything anywhere.

Each object in scope goes through the delivery engine with a DryRunConnection
(`object_push(dry_run=True)`): lookups are real GETs, so adopt / create /
disputed are decided as a real run would decide them, and writes are
recorded instead of sent. Nothing is stored: no run, no delivery, no link, no
log row. Memory holds one page of ids, the counts and a few samples.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provisioning.clients import Exchange, redact
from provisioning.conf import provisioning_setting
from provisioning.models import DeliveryAttempt, Target
from provisioning.services import Push, object_push
from provisioning.sync_runs import Phase, next_page

Action = DeliveryAttempt.Action
Outcome = DeliveryAttempt.Outcome
# The plan's rows, in the order it prints them.
PLAN_KINDS = ["create", "adopt", "update", "disable", "delete", "unchanged", "skip", "disputed", "failed"]


@dataclass
class PlanItem:
    object_type: str
    object_id: str
    object_repr: str
    kind: str
    modified: dict[str, Any]
    requests: list[dict[str, Any]]
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": f"{self.object_type} {self.object_repr or self.object_id}",
            "kind": self.kind,
            "modified": self.modified,
            "requests": self.requests,
            **({"note": self.note} if self.note else {}),
        }


@dataclass
class Plan:
    target: str
    counts: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[PlanItem]] = field(default_factory=dict)
    objects: int = 0
    lookups: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "objects": self.objects,
            "counts": {kind: self.counts.get(kind, 0) for kind in PLAN_KINDS},
            "lookups": self.lookups,
            "samples": {kind: [item.as_dict() for item in items] for kind, items in self.samples.items()},
        }


def plan_kind(push: Push) -> str:
    """The plan row an object's dry push falls in."""
    if push.outcome == Outcome.DISPUTED:
        return "disputed"
    if push.outcome in (Outcome.FAILED, Outcome.RETRY):
        return "failed"
    if push.action == Action.NONE:
        return "unchanged"
    return str(push.action)


def writes(exchanges: list[Exchange]) -> list[dict[str, Any]]:
    """The write requests of a dry push, exactly as they would be sent (secrets redacted)."""
    return [
        {"method": e.method, "path": e.path, "body": redact(e.body)} for e in exchanges if e.method != "GET"
    ]


def full_sync_plan(
    *,
    target: Target,
    samples: int = 3,
    progress: Callable[[Plan], None] | None = None,
    page_size: int | None = None,
) -> Plan:
    """The plan of a full sync of `target` now: counts per kind and up to `samples` examples of each.

    An "assigned" target's scope is read as stored (refreshing it would be a write).
    """
    plan = Plan(target=target.name)
    size = page_size or provisioning_setting("FULL_SYNC_PAGE_SIZE")
    phase, cursor = Phase.USERS.value, ""
    while True:
        keys, phase, cursor, seen = next_page(target, phase, cursor, size)
        if not keys and phase == Phase.END:
            break
        plan.objects += len(keys)
        for object_type, object_id in keys:
            push = object_push(target=target, object_type=object_type, object_id=object_id, dry_run=True)
            kind = plan_kind(push)
            plan.counts[kind] += 1
            plan.lookups += sum(1 for e in push.exchanges if e.method == "GET")
            bucket = plan.samples.setdefault(kind, [])
            if len(bucket) < samples:
                note = push.error if push.outcome != Outcome.SUCCESS else ""
                if push.outcome == Outcome.WAITING:
                    # In a real run the members are created first and the group then waits for them.
                    note = f"{push.error} (created earlier in the same run)"
                bucket.append(
                    PlanItem(
                        object_type=object_type,
                        object_id=str(object_id),
                        object_repr=push.object_repr,
                        kind=kind,
                        modified=redact(push.modified),
                        requests=writes(push.exchanges),
                        note=note,
                    )
                )
        if progress is not None:
            progress(plan)
        # Each push leaves its loaded objects as reference cycles: collect them a page at a time.
        gc.collect()
    return plan
