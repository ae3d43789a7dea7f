"""Inbound sources, their jobs and each record's outcome in the operator admin; held leavers to approve;
the CSV import (upload, column mapping, preview, import)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from directory.admin_audit import OperatorAuditMixin
from directory.models import User
from scim_api.inbound import csv_import, paths, services, transform
from scim_api.inbound.models import (
    HeldInboundRecord,
    InboundJob,
    InboundRecord,
    InboundScheduledAction,
    InboundSource,
    InboundUpload,
)
from scim_api.services import scim_client_rotate
from scim_api.token_cache import recent_clients

PREVIEW_ROWS = 5000
PREVIEW_SHOWN = 200


class InboundSourceForm(forms.ModelForm):
    expires_in_days = forms.IntegerField(
        required=False,
        min_value=1,
        help_text="For a new source: days until its token expires; empty for no expiry.",
    )

    class Meta:
        model = InboundSource
        fields = [
            "name",
            "description",
            "enabled",
            "scim_access",
            "match_source",
            "match_target",
            "match_extension",
            "map_standard_attributes",
            "mappings",
            "scoping_filter",
            "allow_create",
            "allow_update",
            "allow_enable",
            "allow_disable",
            "leaver_action",
            "hire_date_source",
            "termination_date_source",
            "guard_job_max_count",
            "guard_job_max_percent",
            "guard_hour_max_count",
            "guard_hour_max_percent",
            "max_operations",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        probe = InboundSource(**{name: value for name, value in cleaned.items() if name != "expires_in_days"})
        try:
            transform.compile_source_config(probe)
        except transform.SourceConfigError as exc:
            raise ValidationError(str(exc)) from None
        return cleaned


@admin.register(InboundSource)
class InboundSourceAdmin(OperatorAuditMixin, admin.ModelAdmin):
    form = InboundSourceForm
    list_display = ["name", "enabled", "match", "actions_allowed", "leaver_action", "client", "import_link"]
    list_filter = ["enabled", "leaver_action"]
    search_fields = ["name", "description"]
    ordering = ["name"]
    list_select_related = ["client"]
    readonly_fields = ["client_link", "endpoints", "created", "last_modified"]
    actions = ["rotate_token"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "description",
                    "enabled",
                    "scim_access",
                    "client_link",
                    "endpoints",
                    "expires_in_days",
                ]
            },
        ),
        ("Matching", {"fields": ["match_source", "match_target", "match_extension"]}),
        ("Attributes", {"fields": ["map_standard_attributes", "mappings", "scoping_filter"]}),
        (
            "Actions",
            {"fields": ["allow_create", "allow_update", "allow_enable", "allow_disable", "leaver_action"]},
        ),
        ("Effective dates", {"fields": ["hire_date_source", "termination_date_source"]}),
        (
            "Leaver guard",
            {
                "fields": [
                    "guard_job_max_count",
                    "guard_job_max_percent",
                    "guard_hour_max_count",
                    "guard_hour_max_percent",
                ]
            },
        ),
        ("Limits", {"fields": ["max_operations", "created", "last_modified"]}),
    ]

    @admin.display(description="matching")
    def match(self, source: InboundSource) -> str:
        return f"{source.match_source} ↔ {source.match_label}"

    @admin.display(description="may")
    def actions_allowed(self, source: InboundSource) -> str:
        allowed = [
            name
            for name, flag in (
                ("create", source.allow_create),
                ("update", source.allow_update),
                ("enable", source.allow_enable),
                ("disable", source.allow_disable),
            )
            if flag
        ]
        return ", ".join(allowed) or "nothing"

    @admin.display(description="CSV")
    def import_link(self, source: InboundSource) -> str:
        return format_html(
            '<a href="{}">Import a CSV file</a>', reverse("admin:scim_api_inbound_import", args=[source.pk])
        )

    @admin.display(description="SCIM client (its token is the source's credential)")
    def client_link(self, source: InboundSource) -> str:
        if source.client_id is None:
            return "created with the source; its token is shown once"
        url = reverse("admin:scim_api_scimclient_change", args=[source.client_id])
        return format_html('<a href="{}">{}</a>', url, source.client)

    @admin.display(description="endpoints")
    def endpoints(self, source: InboundSource) -> str:
        if source.pk is None:
            return ""
        return format_html(
            "POST /scim/v2/bulkUpload or /scim/v2/inbound/{}/bulkUpload (add ?dryRun=true for a dry run); "
            '<a href="{}">Import a CSV file</a>',
            source.name,
            reverse("admin:scim_api_inbound_import", args=[source.pk]),
        )

    def save_model(
        self, request: HttpRequest, obj: InboundSource, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            obj.save()
            # Granting or withdrawing the SCIM API applies to this process's next request at once
            # (other processes within SCIM_TOKEN_CACHE_SECONDS).
            recent_clients.clear()
            return
        config = {
            name: value
            for name, value in form.cleaned_data.items()
            if name not in ("name", "expires_in_days")
            and name in {f.name for f in InboundSource._meta.fields}
        }
        source, token = services.source_create(
            name=obj.name, expires_days=form.cleaned_data.get("expires_in_days"), **config
        )
        obj.pk, obj.client_id, obj.created = source.pk, source.client_id, source.created
        obj._state.adding = False
        self._show_token(request, source, token)

    @admin.action(
        description="Issue a new token for the selected sources (the old one stops working)",
        permissions=["change"],
    )
    def rotate_token(self, request: HttpRequest, queryset: QuerySet[InboundSource]) -> None:
        for source in queryset:
            _, token = scim_client_rotate(client_id=source.client_id)
            self.log_change(request, source, "Issued a new token.")
            self._show_token(request, source, token)

    def _show_token(self, request: HttpRequest, source: InboundSource, token: str) -> None:
        self.message_user(
            request,
            f"Bearer token for the inbound source {source.name}: {token} — copy it now; it is stored only "
            "as a hash and cannot be shown again.",
            messages.WARNING,
        )

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("<int:source_id>/import/", view(self.import_view), name="scim_api_inbound_import"),
            path(
                "<int:source_id>/import/<uuid:upload_id>/",
                view(self.import_mapping_view),
                name="scim_api_inbound_import_mapping",
            ),
            *super().get_urls(),
        ]

    # --- CSV import -----------------------------------------------------------------------------

    def _source(self, request: HttpRequest, source_id: int) -> InboundSource:
        source = get_object_or_404(InboundSource, pk=source_id)
        if not self.has_change_permission(request, source):
            raise PermissionError
        return source

    def _context(
        self, request: HttpRequest, source: InboundSource, title: str, **extra: Any
    ) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": source,
            "title": title,
            **extra,
        }

    def import_view(self, request: HttpRequest, source_id: int) -> HttpResponse:
        """Step 1: the file."""
        try:
            source = self._source(request, source_id)
        except PermissionError:
            return HttpResponse(status=403)
        form = CsvUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            data = upload.read()
            try:
                csv_import.read_csv(data)
            except csv_import.CsvError as exc:
                form.add_error("file", str(exc))
            else:
                stored = InboundUpload.objects.create(
                    source=source,
                    filename=upload.name[:255],
                    content=data.decode("utf-8-sig"),
                    created_by=request.user.get_username(),
                )
                return HttpResponseRedirect(
                    reverse("admin:scim_api_inbound_import_mapping", args=[source.pk, stored.pk])
                )
        context = self._context(request, source, f"Import a CSV file into {source.name}", form=form)
        return TemplateResponse(request, "admin/scim_api/inbound/import_upload.html", context)

    def import_mapping_view(self, request: HttpRequest, source_id: int, upload_id: Any) -> HttpResponse:
        """Step 2: what each column is; step 3: the preview (a dry run); step 4: the import itself."""
        try:
            source = self._source(request, source_id)
        except PermissionError:
            return HttpResponse(status=403)
        upload = get_object_or_404(InboundUpload, pk=upload_id, source=source)
        csv_file = csv_import.read_csv(upload.content)
        guesses = csv_import.default_columns(csv_file, source)
        columns = {
            header: request.POST.get(f"column:{header}", guesses[header]) for header in csv_file.headers
        }
        errors: dict[str, str] = {}
        for header, column_path in columns.items():
            if column_path.strip():
                try:
                    columns[header] = csv_import.check_path(column_path)
                except paths.PathError as exc:
                    errors[header] = str(exc)
        preview = None
        if request.method == "POST" and not errors:
            operations = csv_import.build_operations(csv_file, columns)
            if "import" in request.POST:
                job = services.job_stage(
                    source=source,
                    operations=operations,
                    origin=InboundJob.Origin.CSV,
                    created_by=request.user.get_username(),
                    filename=upload.filename,
                )
                upload.delete()
                self.log_change(request, source, f"CSV {upload.filename} queued as job {job.pk}.")
                self.message_user(
                    request,
                    f"{len(operations)} rows of {upload.filename} queued as job {job.pk}; "
                    "a worker applies them.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:scim_api_inboundjob_change", args=[job.pk]))
            records = services.dry_run(source=source, operations=operations[:PREVIEW_ROWS])
            preview = {
                "counts": {outcome: n for outcome, n in _counts(records).items() if n},
                "records": records[:PREVIEW_SHOWN],
                "truncated": len(operations) > PREVIEW_ROWS,
                "previewed": len(records),
                "total": len(operations),
            }
        rows = [
            {
                "header": header,
                "path": columns[header],
                "error": errors.get(header, ""),
                "sample": ", ".join(row.get(header, "") for row in csv_file.rows[:3]),
            }
            for header in csv_file.headers
        ]
        context = self._context(
            request,
            source,
            f"Import {upload.filename}: columns and preview",
            upload=upload,
            rows=rows,
            row_count=len(csv_file.rows),
            suggestions=csv_import.target_suggestions(source),
            preview=preview,
            preview_shown=PREVIEW_SHOWN,
        )
        return TemplateResponse(request, "admin/scim_api/inbound/import_mapping.html", context)


def _counts(records: list[InboundRecord]) -> dict[str, int]:
    counts = {outcome: 0 for outcome in InboundRecord.Outcome.values}
    for record in records:
        counts[record.outcome] += 1
    return counts


class CsvUploadForm(forms.Form):
    file = forms.FileField(
        help_text="A CSV export with a header line (UTF-8; comma, semicolon or tab separated)."
    )


@admin.register(InboundJob)
class InboundJobAdmin(OperatorAuditMixin, admin.ModelAdmin):
    list_display = ["created", "source", "origin", "status", "total", "summary", "finished", "created_by"]
    list_filter = ["status", "origin", "source"]
    search_fields = ["id", "filename", "created_by"]
    ordering = ["-created"]
    list_select_related = ["source"]
    date_hierarchy = "created"
    readonly_fields = [
        "id",
        "source",
        "origin",
        "status",
        "detail",
        "total",
        "summary",
        "operations_link",
        "fail_on_errors",
        "created_by",
        "filename",
        "attempts",
        "created",
        "started",
        "finished",
        "lease_until",
    ]
    exclude = ["counts"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="outcomes")
    def summary(self, job: InboundJob) -> str:
        counts = job.counts if job.is_finished and job.counts else services.job_counts(job)
        shown = [
            f"{counts[outcome]} {outcome}" for outcome in InboundRecord.Outcome.values if counts.get(outcome)
        ]
        return ", ".join(shown) or "—"

    @admin.display(description="operations")
    def operations_link(self, job: InboundJob) -> str:
        url = reverse("admin:scim_api_inboundrecord_changelist") + f"?job__id__exact={job.pk}"
        return format_html('<a href="{}">Each record and its outcome</a>', url)


class RecordAdminBase(OperatorAuditMixin, admin.ModelAdmin):
    list_display = ["index", "bulk_id", "key", "outcome", "user_link", "why", "applied", "job"]
    list_filter = ["outcome", "job__source", "job__origin"]
    search_fields = ["key", "bulk_id", "=job__id", "=user__id"]
    list_select_related = ["job__source", "user"]
    ordering = ["-job__created", "index"]
    readonly_fields = [
        "job",
        "index",
        "bulk_id",
        "key",
        "leaver",
        "outcome",
        "reason",
        "user_link",
        "error_json",
        "warnings",
        "changes_json",
        "manager_key",
        "applied",
        "approved_by",
        "data_json",
    ]
    exclude = ["data", "error", "changes", "user", "manager_pending"]
    actions = ["approve", "reject"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="user")
    def user_link(self, record: InboundRecord) -> str:
        if record.user_id is None:
            return "—"
        try:
            user = record.user
        except User.DoesNotExist:
            user = None
        if user is None:
            return f"{record.user_id} (deleted)"
        url = reverse("admin:directory_user_change", args=[record.user_id])
        return format_html('<a href="{}">{}</a>', url, user)

    @admin.display(description="reason / error")
    def why(self, record: InboundRecord) -> str:
        text = (record.error or {}).get("detail") or record.reason or "; ".join(record.warnings or [])
        return text[:200]

    @admin.display(description="SCIM error")
    def error_json(self, record: InboundRecord) -> str:
        return format_html("<pre>{}</pre>", json.dumps(record.error, indent=2)) if record.error else "—"

    @admin.display(description="changed (old → new)")
    def changes_json(self, record: InboundRecord) -> str:
        return format_html("<pre>{}</pre>", json.dumps(record.changes, indent=2, default=str))

    @admin.display(description="record as sent")
    def data_json(self, record: InboundRecord) -> str:
        return format_html("<pre>{}</pre>", json.dumps(record.data, indent=2))

    @admin.action(description="Approve the selected held leavers (they are applied)", permissions=["change"])
    def approve(self, request: HttpRequest, queryset: QuerySet[InboundRecord]) -> None:
        ids = list(queryset.filter(outcome=InboundRecord.Outcome.HELD).values_list("pk", flat=True))
        count = services.held_records_approve(record_ids=ids, approved_by=request.user.get_username())
        for record in queryset.filter(pk__in=ids):
            self.log_change(request, record, "Held leaver approved.")
        skipped = len(ids) - count
        note = f"; {skipped} superseded by later records and skipped" if skipped else ""
        self.message_user(request, f"{count} held leaver(s) approved; a worker applies them{note}.")

    @admin.action(
        description="Reject the selected held leavers (the users stay as they are)", permissions=["change"]
    )
    def reject(self, request: HttpRequest, queryset: QuerySet[InboundRecord]) -> None:
        ids = list(queryset.filter(outcome=InboundRecord.Outcome.HELD).values_list("pk", flat=True))
        count = services.held_records_reject(record_ids=ids, rejected_by=request.user.get_username())
        for record in queryset.model.objects.filter(pk__in=ids):
            self.log_change(request, record, "Held leaver rejected.")
        self.message_user(request, f"{count} held leaver(s) rejected.")


@admin.register(InboundRecord)
class InboundRecordAdmin(RecordAdminBase):
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Read-only pages; the actions (approve, reject) check the change permission themselves.
        return obj is None and super().has_change_permission(request, obj)


@admin.register(HeldInboundRecord)
class HeldInboundRecordAdmin(RecordAdminBase):
    list_display = ["key", "bulk_id", "user_link", "reason", "job", "index"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[InboundRecord]:
        return super().get_queryset(request).filter(outcome=InboundRecord.Outcome.HELD)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)


@admin.register(InboundScheduledAction)
class InboundScheduledActionAdmin(OperatorAuditMixin, admin.ModelAdmin):
    list_display = ["due", "action", "user", "source", "state", "detail", "done"]
    list_filter = ["state", "action", "source"]
    search_fields = ["=user__id", "user__user_name", "user__employee_number"]
    list_select_related = ["user", "source"]
    ordering = ["due"]
    readonly_fields = [
        "source",
        "user",
        "action",
        "due",
        "state",
        "record",
        "created",
        "done",
        "detail",
        "approved_by",
    ]
    actions = ["approve", "cancel"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(
        description="Approve the selected held disables (applied at the next run)", permissions=["change"]
    )
    def approve(self, request: HttpRequest, queryset: QuerySet[InboundScheduledAction]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = services.scheduled_actions_approve(action_ids=ids, approved_by=request.user.get_username())
        for action in queryset.model.objects.filter(
            pk__in=ids, state="pending", approved_by=request.user.get_username()
        ):
            self.log_change(request, action, "Approved.")
        self.message_user(request, f"{count} held action(s) approved.")

    @admin.action(description="Cancel the selected pending or held actions", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[InboundScheduledAction]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = services.scheduled_actions_cancel(action_ids=ids, cancelled_by=request.user.get_username())
        for action in queryset.model.objects.filter(pk__in=ids):
            self.log_change(request, action, "Cancelled.")
        self.message_user(request, f"{count} scheduled action(s) cancelled.")
