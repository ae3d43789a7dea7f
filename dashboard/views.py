"""The operations dashboard: one admin page that says whether the directory and its targets are healthy.

The view only composes: every figure comes from a selector of the app that
owns the data, and each section is read only when the operator may view
what it shows. The number of queries does not grow with the number of
targets or clients (tests/dashboard/test_views.py asserts it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import SafeString

from dashboard.charts import Line, format_count, format_percent, format_seconds, line_chart
from directory.models import Group
from directory.selectors import user_counts
from provisioning.selectors import (
    RANGES,
    TargetOverview,
    Window,
    held_oldest,
    targets_overview,
    window_ending,
)
from scim_api.inbound.selectors import inbound_holds
from scim_api.selectors import dialect_rewrites_recent, scim_client_activity, scim_client_counts

RANGE_LABELS = {"24h": "Last 24 hours", "7d": "Last 7 days"}
TIME_FORMATS = {"24h": "%H:%M", "7d": "%a %d"}
# "Recent" SCIM client writes are counted over this window.
ACTIVITY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Chart:
    title: str
    svg: SafeString
    legend: list[tuple[str, str]]


def _charts(overview: TargetOverview, window: Window, range_key: str) -> list[Chart]:
    history = overview.history
    assert history is not None  # targets_overview always fills it
    starts = window.bucket_starts()
    common: dict[str, Any] = {"starts": starts, "time_format": TIME_FORMATS[range_key]}
    specs = [
        (
            "Queue depth",
            [Line("queued or running", history.queued), Line("held", history.held, "second")],
            {"value_format": format_count, "integer": True, "minimum": 4},
        ),
        (
            "Change → applied lag",
            [Line("p95", history.lag_p95), Line("p50", history.lag_p50, "second")],
            {"value_format": format_seconds, "minimum": 1.0},
        ),
        (
            "Error rate",
            [Line("errors", history.error_rate, "error")],
            {"value_format": format_percent, "minimum": 0.2},
        ),
    ]
    return [
        Chart(
            title=title,
            svg=line_chart(title=f"{overview.target.name}: {title}", lines=lines, **common, **options),
            legend=[(line.label, line.style) for line in lines],
        )
        for title, lines, options in specs
    ]


def dashboard_view(request: HttpRequest) -> HttpResponse:
    range_key = request.GET.get("range", "24h")
    if range_key not in RANGES:
        range_key = "24h"
    span, bucket = RANGES[range_key]
    now = timezone.now()
    window = window_ending(now=now, span=span, bucket=bucket)
    may = request.user.has_perm
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Operations dashboard",
        # The charts get the whole width; the app list is one click away (Home).
        "is_nav_sidebar_enabled": False,
        "now": now,
        "range_key": range_key,
        "ranges": [(key, RANGE_LABELS[key]) for key in RANGES],
        "range_label": RANGE_LABELS[range_key],
    }
    if may("directory.view_user"):
        context["users"] = user_counts()
    if may("directory.view_group"):
        context["groups"] = Group.objects.count()
    if may("scim_api.view_scimclient"):
        context["clients"] = scim_client_counts(now=now)
        context["client_activity"] = list(scim_client_activity(since=now - ACTIVITY_WINDOW))
        context["rewrites"] = list(dialect_rewrites_recent())
    if may("provisioning.view_target"):
        overviews = targets_overview(window=window, now=now)
        context["targets"] = [
            {"overview": overview, "charts": _charts(overview, window, range_key)} for overview in overviews
        ]
        context["target_states"] = {
            state: sum(1 for overview in overviews if overview.state == state)
            for state in ("healthy", "degraded", "quarantined", "paused", "disabled")
        }
        context["held_total"] = sum(overview.held for overview in overviews)
    if may("provisioning.view_helddelivery"):
        context["held"] = held_oldest()
    if may("scim_api.view_inboundrecord") and may("scim_api.view_inboundscheduledaction"):
        holds = inbound_holds()
        context["inbound_holds"] = {
            "records": sum(source.records for source in holds),
            "scheduled": sum(source.scheduled for source in holds),
        }
    return TemplateResponse(request, "admin/dashboard/index.html", context)
