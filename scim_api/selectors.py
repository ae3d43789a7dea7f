"""Reads about SCIM clients for the operators' dashboard: who called lately, and which dialects
needed rewriting."""

from __future__ import annotations

from datetime import datetime

from django.db.models import (
    BigIntegerField,
    CharField,
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from directory.models import AuditEntry
from scim_api.models import DialectRewrite, ScimClient


def scim_client_activity(*, since: datetime, limit: int = 10) -> QuerySet[ScimClient]:
    """The clients used most recently, each with `writes` (directory writes it made since `since`)
    and `rewrites` (requests whose dialect needed rewriting, ever).

    One query: both are counted in subqueries (the audit trail is indexed by actor).
    """
    writes = (
        AuditEntry.objects.filter(
            actor_type=AuditEntry.ActorType.SCIM_CLIENT,
            actor_id=Cast(OuterRef("pk"), CharField()),
            created__gte=since,
        )
        .order_by()
        .values("actor_id")
        .annotate(count=Count("id"))
        .values("count")
    )
    return (
        ScimClient.objects.annotate(
            writes=Coalesce(Subquery(writes, output_field=IntegerField()), Value(0)),
            rewrites=Coalesce(
                Subquery(
                    DialectRewrite.objects.filter(client=OuterRef("pk"))
                    .order_by()
                    .values("client")
                    .annotate(total=Sum("count"))
                    .values("total"),
                    output_field=BigIntegerField(),
                ),
                Value(0),
            ),
        )
        .filter(last_used__isnull=False)
        .order_by(F("last_used").desc(), "name")[:limit]
    )


def scim_client_counts(*, now: datetime | None = None) -> dict[str, int]:
    """{"total", "usable"}: all clients, and those neither revoked nor expired (one query)."""
    now = now or timezone.now()
    usable = Q(revoked=False) & (Q(expires__isnull=True) | Q(expires__gt=now))
    return ScimClient.objects.aggregate(total=Count("id"), usable=Count("id", filter=usable))


def dialect_rewrites_recent(*, limit: int = 10) -> QuerySet[DialectRewrite]:
    """The dialect rewrites seen most recently, with their client (one query)."""
    return DialectRewrite.objects.select_related("client").order_by("-last_seen", "-id")[:limit]
