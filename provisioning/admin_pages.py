"""The per-target admin pages: mappings (edit, preview, seed), scoping filters (preview, save), test
connection and the status page with its actions. TargetAdmin routes to them; every write goes through a
service and is recorded in the admin's log (LogEntry) of the target."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from directory.models import Group, User
from provisioning.configuration import (
    MappingRow,
    MappingRowError,
    mapping_change_preview,
    mapping_preview_object,
    mapping_rows_compile,
    mappings_replace,
    mappings_seed_default,
    scoping_change_preview,
    target_scoping_update,
)
from provisioning.connection_test import target_test_connection
from provisioning.guard import held_approve
from provisioning.models import AttributeMapping, ObjectType, Target
from provisioning.status import (
    target_clear_quarantine,
    target_forget_links,
    target_rerun_full_sync,
    target_retry_failed,
    target_status,
)

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin


def _context(admin: ModelAdmin[Any], request: HttpRequest, target: Target, title: str) -> dict[str, Any]:
    return {
        **admin.admin_site.each_context(request),
        "opts": admin.model._meta,
        "original": target,
        "title": title,
        # Read-only operators (auditors) see the pages without the buttons their POST would refuse.
        "can_change": admin.has_change_permission(request, target),
    }


def _target(admin: ModelAdmin[Any], request: HttpRequest, target_id: int, *, change: bool) -> Target:
    target = get_object_or_404(Target.objects.select_related("profile"), pk=target_id)
    allowed = (
        admin.has_change_permission(request, target) if change else admin.has_view_permission(request, target)
    )
    if not allowed:
        raise PermissionError
    return target


def _log(admin: ModelAdmin[Any], request: HttpRequest, target: Target, message: str) -> None:
    admin.log_change(request, target, message)
    messages.success(request, message)


# --- mappings ---------------------------------------------------------------------------------------


class MappingRowForm(forms.Form):
    target_attribute = forms.CharField(
        max_length=255, required=False, widget=forms.TextInput(attrs={"size": 40})
    )
    source_kind = forms.ChoiceField(choices=AttributeMapping.SourceKind.choices)
    source = forms.CharField(required=False, widget=forms.TextInput(attrs={"size": 60}))
    default_value = forms.CharField(
        max_length=1000, required=False, widget=forms.TextInput(attrs={"size": 15})
    )
    apply = forms.ChoiceField(choices=AttributeMapping.Apply.choices)

    def row(self) -> MappingRow:
        data = self.cleaned_data
        return MappingRow(
            target_attribute=data["target_attribute"].strip(),
            source_kind=data["source_kind"],
            source=data["source"],
            default_value=data["default_value"],
            apply=data["apply"],
        )


class BaseMappingFormSet(forms.BaseFormSet):  # type: ignore[type-arg]
    object_type = ObjectType.USER.value

    def kept(self) -> list[MappingRowForm]:
        """Rows that stay, in order: not deleted and not left blank."""
        return [
            form
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and form.cleaned_data.get("target_attribute", "").strip()
        ]

    def clean(self) -> None:
        if any(self.errors):
            return
        kept = self.kept()
        try:
            self.compiled = mapping_rows_compile(
                object_type=self.object_type, rows=[form.row() for form in kept]
            )
        except MappingRowError as exc:
            if exc.index is None:
                raise ValidationError(exc.message) from None
            kept[exc.index].add_error(exc.field or None, exc.message)
            raise ValidationError(f"row {exc.index + 1} cannot be saved") from None

    def rows(self) -> list[MappingRow]:
        return [form.row() for form in self.kept()]


MappingFormSet = forms.formset_factory(MappingRowForm, formset=BaseMappingFormSet, extra=3, can_delete=True)


class PreviewObjectForm(forms.Form):
    preview_object = forms.CharField(
        required=False,
        label="Preview with",
        help_text="A user's userName or id (a group's displayName or id): its payload, saved and edited.",
    )


def find_object(object_type: str, ref: str) -> uuid.UUID | None:
    ref = ref.strip()
    model = User if object_type == ObjectType.USER else Group
    try:
        object_id = uuid.UUID(ref)
    except ValueError:
        lookup = {"user_name__iexact": ref} if model is User else {"display_name__iexact": ref}
        return model.objects.filter(**lookup).values_list("pk", flat=True).first()
    return object_id if model.objects.filter(pk=object_id).exists() else None


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def mappings_view(
    admin: ModelAdmin[Any], request: HttpRequest, target_id: int, object_type: str
) -> HttpResponse:
    if object_type not in ObjectType.values:
        return HttpResponse(status=404)
    try:
        target = _target(admin, request, target_id, change=request.method == "POST")
    except PermissionError:
        return HttpResponse(status=403)
    saved = list(
        AttributeMapping.objects.filter(target=target, object_type=object_type).order_by("position", "id")
    )
    initial = [
        {
            "target_attribute": row.target_attribute,
            "source_kind": row.source_kind,
            "source": row.source,
            "default_value": row.default_value,
            "apply": row.apply,
        }
        for row in saved
    ]
    here = reverse("admin:provisioning_target_mappings", args=[target.pk, object_type])
    context = _context(admin, request, target, f"{object_type.capitalize()} mappings: {target.name}")
    context.update({"object_type": object_type, "saved_count": len(saved)})
    if request.method == "POST" and "_seed" in request.POST:
        created = mappings_seed_default(target=target, object_types=[object_type])
        _log(admin, request, target, f"Seeded {created} {object_type} mapping rows from the default mapping.")
        return HttpResponseRedirect(here)
    if request.method == "POST":
        formset = MappingFormSet(request.POST, initial=initial, prefix="rows")
        formset.object_type = object_type
        preview_form = PreviewObjectForm(request.POST)
        if formset.is_valid() and preview_form.is_valid():
            if "_save" in request.POST:
                rows = formset.rows()
                with transaction.atomic():
                    mappings_replace(target=target, object_type=object_type, rows=rows)
                _log(
                    admin,
                    request,
                    target,
                    f"Saved {len(rows)} {object_type} mapping rows; a full sync is queued to apply them.",
                )
                return HttpResponseRedirect(here)
            context.update(_mapping_preview(target, object_type, formset, preview_form))
    else:
        formset = MappingFormSet(initial=initial, prefix="rows")
        formset.object_type = object_type
        preview_form = PreviewObjectForm()
    context.update({"formset": formset, "preview_form": preview_form})
    return TemplateResponse(request, "admin/provisioning/target/mappings.html", context)


def _mapping_preview(
    target: Target, object_type: str, formset: BaseMappingFormSet, preview_form: PreviewObjectForm
) -> dict[str, Any]:
    """The dry run of unsaved edits: one chosen object's payloads and the counts over the whole scope."""
    edited = formset.compiled
    found: dict[str, Any] = {"previewed": True}
    ref = preview_form.cleaned_data.get("preview_object") or ""
    if ref:
        object_id = find_object(object_type, ref)
        if object_id is None:
            preview_form.add_error("preview_object", f"No {object_type} {ref!r}")
        else:
            one = mapping_preview_object(
                target=target, object_type=object_type, object_id=object_id, edited=edited
            )
            found["object_preview"] = one
            if one.saved is not None and one.edited is not None:
                form = "update" if one.linked else "create"
                found["saved_json"] = _json(getattr(one.saved, form))
                found["edited_json"] = _json(getattr(one.edited, form))
                found["payload_form"] = form
    found["change_preview"] = mapping_change_preview(target=target, object_type=object_type, edited=edited)
    return found


# --- scoping filters --------------------------------------------------------------------------------


class ScopingForm(forms.Form):
    user_scoping_filters = forms.JSONField(
        required=False, widget=forms.Textarea(attrs={"rows": 8, "cols": 100}), label="User scoping filters"
    )
    group_scoping_filters = forms.JSONField(
        required=False, widget=forms.Textarea(attrs={"rows": 5, "cols": 100}), label="Group scoping filters"
    )


def scoping_view(admin: ModelAdmin[Any], request: HttpRequest, target_id: int) -> HttpResponse:
    try:
        target = _target(admin, request, target_id, change=request.method == "POST")
    except PermissionError:
        return HttpResponse(status=403)
    context = _context(admin, request, target, f"Scoping filters: {target.name}")
    initial = {
        "user_scoping_filters": target.user_scoping_filters,
        "group_scoping_filters": target.group_scoping_filters,
    }
    form = ScopingForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        users = form.cleaned_data["user_scoping_filters"] or []
        groups = form.cleaned_data["group_scoping_filters"] or []
        try:
            if "_save" in request.POST:
                change = target_scoping_update(target=target, user_filters=users, group_filters=groups)
                _log(
                    admin,
                    request,
                    target,
                    f"Scoping filters saved: {len(change.entered)} object(s) entered scope, "
                    f"{len(change.left)} left; deliveries queued.",
                )
                return HttpResponseRedirect(reverse("admin:provisioning_target_scoping", args=[target.pk]))
            context["previews"] = [
                ("Users", scoping_change_preview(target=target, object_type="user", filters_data=users)),
                ("Groups", scoping_change_preview(target=target, object_type="group", filters_data=groups)),
            ]
        except ValidationError as exc:
            for field, errors in getattr(exc, "error_dict", {}).items():
                for error in errors:
                    form.add_error(field if field in form.fields else None, error)
            if not hasattr(exc, "error_dict"):
                form.add_error(None, exc)
    context["form"] = form
    return TemplateResponse(request, "admin/provisioning/target/scoping.html", context)


# --- test connection --------------------------------------------------------------------------------


def test_connection_view(admin: ModelAdmin[Any], request: HttpRequest, target_id: int) -> HttpResponse:
    try:
        # Running the checks sends requests with the target's credentials: an operator who may only
        # look at the target sees the page, not the button's effect.
        target = _target(admin, request, target_id, change=request.method == "POST")
    except PermissionError:
        return HttpResponse(status=403)
    context = _context(admin, request, target, f"Test connection: {target.name}")
    if request.method == "POST":
        checks = target_test_connection(target=target)
        context.update({"checks": checks, "all_passed": all(check.status != "fail" for check in checks)})
    return TemplateResponse(request, "admin/provisioning/target/test_connection.html", context)


# --- status ------------------------------------------------------------------------------------------

STATUS_ACTIONS = ("clear_quarantine", "retry_failed", "full_sync", "forget_links", "approve_held")


def status_view(admin: ModelAdmin[Any], request: HttpRequest, target_id: int) -> HttpResponse:
    try:
        target = _target(admin, request, target_id, change=request.method == "POST")
    except PermissionError:
        return HttpResponse(status=403)
    here = reverse("admin:provisioning_target_status", args=[target.pk])
    if request.method == "POST":
        action = request.POST.get("action", "")
        if action not in STATUS_ACTIONS:
            return HttpResponse(status=400)
        if action == "forget_links" and request.POST.get("confirm") != target.name:
            messages.error(request, "Type the target's name to confirm forgetting its links.")
            return HttpResponseRedirect(here)
        _log(admin, request, target, run_action(action, target, request.user.get_username()))
        return HttpResponseRedirect(here)
    context = _context(admin, request, target, f"Status: {target.name}")
    context["status"] = target_status(target=target)
    return TemplateResponse(request, "admin/provisioning/target/status.html", context)


def run_action(action: str, target: Target, operator: str) -> str:
    """Run one status-page action through its service; returns the message for the log and the operator."""
    if action == "clear_quarantine":
        sent = target_clear_quarantine(target=target)
        return f"Quarantine cleared; {sent} queued deliveries sent now."
    if action == "retry_failed":
        result = target_retry_failed(target=target)
        return (
            f"Retry failed: {result.failed} failed object(s) queued anew, {result.backing_off} retried now."
        )
    if action == "full_sync":
        plan = target_rerun_full_sync(target=target)
        return f"Full sync {plan.run_id} queued: {plan.users} users and {plan.groups} groups."
    if action == "forget_links":
        forgotten = target_forget_links(target=target)
        return f"Forgot {forgotten} links; the next delivery of each object matches again."
    approved = held_approve(operator=operator, target=target)
    return f"Approved {approved} held disable(s)/delete(s); they go through on their next attempt."
