"""Reads of inbound provisioning for the operator's views (dashboard, metrics)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count

from scim_api.inbound.models import InboundRecord, InboundScheduledAction, InboundSource


@dataclass(frozen=True)
class SourceHolds:
    """What the leaver guard holds for one source, waiting for an operator."""

    source: str
    records: int  # leavers of jobs (outcome held)
    scheduled: int  # future-dated disables held on their date


def inbound_holds() -> list[SourceHolds]:
    """Per source with anything held, by name (two grouped queries and the sources' names)."""
    records = dict(
        InboundRecord.objects.filter(outcome=InboundRecord.Outcome.HELD)
        .values_list("job__source_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    scheduled = dict(
        InboundScheduledAction.objects.filter(state=InboundScheduledAction.State.HELD)
        .values_list("source_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    ids = set(records) | set(scheduled)
    if not ids:
        return []
    names = dict(InboundSource.objects.filter(pk__in=ids).values_list("pk", "name"))
    return sorted(
        (
            SourceHolds(
                source=names.get(pk, str(pk)), records=records.get(pk, 0), scheduled=scheduled.get(pk, 0)
            )
            for pk in ids
        ),
        key=lambda holds: holds.source,
    )
