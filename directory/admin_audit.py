"""Operator actions in the admin that no directory service records, copied into the audit trail.

The directory's own admin pages (users, groups, memberships, extension schemas) write through the
services, which audit every change. Other apps' admin pages (targets, SCIM clients, inbound sources,
held deliveries...) and operator accounts write their own models; Django records those in its admin
log (LogEntry) only. Admins of those models mix this in: every admin log entry they write (saves,
deletions, and the actions that call log_change) is also an audit entry, in the same transaction.
"""

import json
from collections.abc import Iterable
from typing import Any

from django.db import models
from django.http import HttpRequest

from directory import services
from directory.actors import Actor


def operator_actor(request: HttpRequest) -> Actor:
    return Actor.operator(id=request.user.pk, name=request.user.get_username())


def admin_action_record(
    request: HttpRequest, action: str, obj: models.Model, message: Any = "", **changes: Any
) -> None:
    """One audit entry for an operator's admin action on `obj` (any model)."""
    if isinstance(message, str) and message.startswith("["):
        try:
            message = json.loads(message)  # the admin's structured change message
        except ValueError:
            pass  # a plain message that happens to start with "["
    if message:
        changes["message"] = message
    services.operator_event_record(
        actor=operator_actor(request),
        action=action,
        object_type=obj._meta.model_name or "",
        object_key=str(obj.pk),
        object_repr=str(obj),
        changes=changes,
    )


class OperatorAuditMixin:
    """For a ModelAdmin: each admin log entry it writes is also an audit entry."""

    def log_addition(self, request: HttpRequest, obj: models.Model, message: Any) -> Any:
        entry = super().log_addition(request, obj, message)  # type: ignore[misc]
        admin_action_record(request, "admin_add", obj, message)
        return entry

    def log_change(self, request: HttpRequest, obj: models.Model, message: Any) -> Any:
        entry = super().log_change(request, obj, message)  # type: ignore[misc]
        admin_action_record(request, "admin_change", obj, message)
        return entry

    def log_deletions(self, request: HttpRequest, queryset: Iterable[models.Model]) -> Any:
        objects = list(queryset)
        entries = super().log_deletions(request, objects)  # type: ignore[misc]
        for obj in objects:
            admin_action_record(request, "admin_delete", obj)
        return entries
