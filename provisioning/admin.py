"""Outbound provisioning in the operator admin: targets (credentials write-only), profiles, links,
deliveries and the provisioning log, with provision-on-demand per target; per target, its mappings,
scoping filters, test connection and status pages (provisioning.admin_pages); held disables/deletes."""

import json
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from directory.admin_audit import OperatorAuditMixin
from directory.models import Group, User
from provisioning import admin_pages, queue, tasks
from provisioning.configuration import mapping_check, mapping_delete, mapping_save, mappings_seed_default
from provisioning.connection_test import target_test_connection
from provisioning.guard import held_approve, held_reject
from provisioning.models import (
    AttributeMapping,
    Delivery,
    DeliveryAttempt,
    GuardGrant,
    HeldDelivery,
    ObjectType,
    ReconciliationFinding,
    ReconciliationRun,
    ScopeExclusion,
    SyncRun,
    Target,
    TargetAssignment,
    TargetLink,
    VendorProfile,
)
from provisioning.reconcile import ReconciliationBusy, reconciliation_start
from provisioning.relay import deliveries_for_objects
from provisioning.services import DeliveryBusy, object_provision_now, target_scope_update
from provisioning.sync_runs import sync_run_cancel, sync_run_refresh, sync_run_start

SCOPING_FIELDS = ("user_scoping_filters", "group_scoping_filters")
GUARD_FIELDS = [
    "guard_run_max_count",
    "guard_run_max_percent",
    "guard_hour_max_count",
    "guard_hour_max_percent",
]

# Credential fields per authentication type; each is write-only in the form.
CREDENTIAL_FIELDS: dict[str, tuple[str, ...]] = {
    Target.AuthType.BEARER: ("token",),
    Target.AuthType.BASIC: ("username", "password"),
    Target.AuthType.OAUTH_CLIENT_CREDENTIALS: ("token_url", "client_id", "client_secret", "scope"),
}
SECRET_FIELDS = frozenset({"token", "password", "client_secret"})


@admin.register(VendorProfile)
class VendorProfileAdmin(OperatorAuditMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "patch_style",
        "groups_return_members",
        "max_patch_operations",
        "user_update_method",
        "group_update_method",
        "soft_delete",
    ]
    search_fields = ["name", "description"]
    ordering = ["name"]


class TargetForm(forms.ModelForm):
    """Credentials are written, never shown: a blank field keeps what is stored."""

    token = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), strip=True)
    username = forms.CharField(required=False)
    password = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False))
    base_url = forms.URLField(max_length=500, assume_scheme="https", label="Base URL")
    token_url = forms.URLField(required=False, label="OAuth token URL", assume_scheme="https")
    client_id = forms.CharField(required=False, label="OAuth client id")
    client_secret = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False), label="OAuth client secret"
    )
    scope_value = forms.CharField(required=False, label="OAuth scope")

    class Meta:
        model = Target
        fields = [
            "name",
            "base_url",
            "profile",
            "enabled",
            "paused",
            "auth_type",
            "connect_timeout",
            "read_timeout",
            "rate_limit_rps",
            "rate_limit_burst",
            "max_concurrency",
            "user_matching",
            "group_matching",
            "scope",
            "deletion_policy",
            *SCOPING_FIELDS,
            *GUARD_FIELDS,
            "reconcile_interval_minutes",
            "reconcile_policy",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        auth_type = data.get("auth_type")
        if auth_type is None:
            return data
        stored = (
            self.instance.get_credentials()
            if self.instance.pk and self.instance.auth_type == auth_type
            else {}
        )
        credentials: dict[str, Any] = {}
        for name in CREDENTIAL_FIELDS[auth_type]:
            value = data.get("scope_value" if name == "scope" else name) or stored.get(name, "")
            if not value and name != "scope":
                self.add_error(None, f"{name.replace('_', ' ')} is required for {auth_type} authentication")
            credentials[name] = value
        self.credentials = credentials
        return data

    def save(self, commit: bool = True) -> Target:
        target: Target = super().save(commit=False)
        if getattr(self, "credentials", None) is not None and target.get_credentials() != self.credentials:
            target.set_credentials(self.credentials)
        if commit:
            target.save()
        return target


class TargetAssignmentInline(admin.TabularInline):
    model = TargetAssignment
    fields = ["group", "user", "created"]
    readonly_fields = ["created"]
    raw_id_fields = ["group", "user"]
    extra = 0
    verbose_name_plural = "assignments (used when the scope is 'assigned')"


class ProvisionForm(forms.Form):
    object = forms.CharField(help_text="A user or group id, a userName or a group displayName.")
    dry_run = forms.BooleanField(
        required=False, help_text="Send no write: show the requests that would be sent."
    )


@admin.register(Target)
class TargetAdmin(OperatorAuditMixin, admin.ModelAdmin):
    form = TargetForm
    inlines = [TargetAssignmentInline]
    list_display = [
        "name",
        "base_url",
        "scope",
        "enabled",
        "paused",
        "circuit_state",
        "circuit_next_attempt_at",
        "queue_depth",
    ]
    list_filter = ["enabled", "paused", "circuit_state", "scope"]
    search_fields = ["name", "base_url"]
    ordering = ["name"]
    list_select_related = ["profile"]
    readonly_fields = [
        "circuit_state",
        "circuit_reason",
        "circuit_next_attempt_at",
        "created",
        "provision_link",
        "pages",
        "last_full_sync_at",
        "runs_link",
    ]
    actions = [
        "full_sync",
        "reconcile_now",
        "pause",
        "resume",
        "clear_quarantine",
        "retry_failed",
        "approve_all_held",
        "test_connection",
        "seed_default_mappings",
    ]
    fieldsets = [
        (None, {"fields": ["name", "base_url", "profile", "enabled", "paused", "provision_link", "pages"]}),
        (
            "Authentication (write-only: leave blank to keep the stored value)",
            {
                "fields": [
                    "auth_type",
                    "token",
                    "username",
                    "password",
                    "token_url",
                    "client_id",
                    "client_secret",
                    "scope_value",
                ]
            },
        ),
        (
            "Connection",
            {
                "fields": [
                    "connect_timeout",
                    "read_timeout",
                    "rate_limit_rps",
                    "rate_limit_burst",
                    "max_concurrency",
                ]
            },
        ),
        (
            "Matching, scope and deletion",
            {"fields": ["user_matching", "group_matching", "scope", "deletion_policy"]},
        ),
        (
            "Scoping filters (preview a change on the scoping filters page before saving it)",
            {"fields": list(SCOPING_FIELDS)},
        ),
        ("Deletion guard (empty: no limit)", {"fields": GUARD_FIELDS}),
        ("Reconciliation", {"fields": ["reconcile_interval_minutes", "reconcile_policy", "runs_link"]}),
        (
            "Health",
            {
                "fields": [
                    "circuit_state",
                    "circuit_reason",
                    "circuit_next_attempt_at",
                    "last_full_sync_at",
                    "created",
                ]
            },
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Target]:
        # The changelist's queue column in the same query as the rows: a correlated count over the
        # (target, state) index, not a join over every delivery the targets ever had.
        active = (
            Delivery.objects.filter(target=OuterRef("pk"), state__in=["queued", "running"])
            .order_by()
            .values("target")
            .annotate(count=Count("id"))
            .values("count")
        )
        return super().get_queryset(request).annotate(queued_count=Coalesce(Subquery(active), 0))

    @admin.display(description="queued")
    def queue_depth(self, obj: Target) -> int:
        counted = getattr(obj, "queued_count", None)
        if counted is not None:
            return int(counted)
        return obj.deliveries.filter(state__in=["queued", "running"]).count()

    @admin.display(description="pages")
    def pages(self, obj: Target) -> str:
        if not obj.pk:
            return "-"
        links = [
            ("Status", reverse("admin:provisioning_target_status", args=[obj.pk])),
            ("User mappings", reverse("admin:provisioning_target_mappings", args=[obj.pk, "user"])),
            ("Group mappings", reverse("admin:provisioning_target_mappings", args=[obj.pk, "group"])),
            ("Scoping filters", reverse("admin:provisioning_target_scoping", args=[obj.pk])),
            ("Test connection", reverse("admin:provisioning_target_test_connection", args=[obj.pk])),
        ]
        return format_html(
            " · ".join(['<a href="{}">{}</a>'] * len(links)),
            *[part for name, url in links for part in (url, name)],
        )

    @admin.display(description="provision on demand")
    def provision_link(self, obj: Target) -> str:
        if not obj.pk:
            return "-"
        url = reverse("admin:provisioning_target_provision", args=[obj.pk])
        return format_html('<a href="{}">Provision one user or group now…</a>', url)

    @admin.display(description="runs")
    def runs_link(self, obj: Target) -> str:
        if not obj.pk:
            return "-"
        return format_html(
            '<a href="{}?target__id__exact={}">Full sync runs</a> · '
            '<a href="{}?target__id__exact={}">Reconciliation runs</a> · '
            '<a href="{}?target__id__exact={}">Findings</a>',
            reverse("admin:provisioning_syncrun_changelist"),
            obj.pk,
            reverse("admin:provisioning_reconciliationrun_changelist"),
            obj.pk,
            reverse("admin:provisioning_reconciliationfinding_changelist"),
            obj.pk,
        )

    def save_model(self, request: HttpRequest, obj: Target, form: Any, change: bool) -> None:
        if change:
            obj.revision += 1
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # Changed filters decide every candidate again; otherwise only new candidates are looked at.
        reevaluate = bool(set(SCOPING_FIELDS) & set(form.changed_data))
        change_set = target_scope_update(target=form.instance, reevaluate=reevaluate)
        if change_set.entered or change_set.left:
            self.message_user(
                request,
                f"Scope updated: {len(change_set.entered)} entered, {len(change_set.left)} left; "
                "deliveries queued.",
            )

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        urls = [
            path(
                "<int:target_id>/provision/",
                view(self.provision_view),
                name="provisioning_target_provision",
            ),
            path(
                "<int:target_id>/mappings/<str:object_type>/",
                view(
                    lambda request, target_id, object_type: admin_pages.mappings_view(
                        self, request, target_id, object_type
                    )
                ),
                name="provisioning_target_mappings",
            ),
            path(
                "<int:target_id>/scoping/",
                view(lambda request, target_id: admin_pages.scoping_view(self, request, target_id)),
                name="provisioning_target_scoping",
            ),
            path(
                "<int:target_id>/test-connection/",
                view(lambda request, target_id: admin_pages.test_connection_view(self, request, target_id)),
                name="provisioning_target_test_connection",
            ),
            path(
                "<int:target_id>/status/",
                view(lambda request, target_id: admin_pages.status_view(self, request, target_id)),
                name="provisioning_target_status",
            ),
        ]
        return urls + super().get_urls()

    def provision_view(self, request: HttpRequest, target_id: int) -> HttpResponse:
        target = get_object_or_404(Target.objects.select_related("profile"), pk=target_id)
        if not self.has_change_permission(request, target):
            return HttpResponse(status=403)
        form = ProvisionForm(request.POST or None)
        entry = None
        if request.method == "POST" and form.is_valid():
            found = _find_object(form.cleaned_data["object"])
            if found is None:
                form.add_error("object", "No such user or group")
            else:
                try:
                    entry = object_provision_now(
                        target=target,
                        object_type=found[0],
                        object_id=found[1],
                        dry_run=form.cleaned_data["dry_run"],
                    )
                except DeliveryBusy as exc:
                    form.add_error(None, str(exc))
                else:
                    if not form.cleaned_data["dry_run"]:
                        self.log_change(request, target, f"Provisioned {found[0]} {found[1]} on demand.")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": target,
            "title": f"Provision on demand: {target.name}",
            "form": form,
            "entry": entry,
            "requests_json": json.dumps(entry.requests, indent=2) if entry else "",
            "modified_json": json.dumps(entry.modified_properties, indent=2, default=str) if entry else "",
        }
        return TemplateResponse(request, "admin/provisioning/target/provision.html", context)

    @admin.action(
        description="Full sync: queue every object in scope (a worker queues it, resumably)",
        permissions=["change"],
    )
    def full_sync(self, request: HttpRequest, queryset: QuerySet[Target]) -> None:
        for target in queryset:
            run, resumed = sync_run_start(target=target, trigger=f"admin: {request.user}")
            run_id = str(run.pk)
            transaction.on_commit(lambda run_id=run_id: tasks.full_sync_continue.delay(run_id), robust=True)
            verb = "resumed" if resumed else "started"
            self._audit(request, target, f"Full sync run {run.pk} {verb}.")

    @admin.action(description="Reconcile now (per each target's reconcile policy)", permissions=["change"])
    def reconcile_now(self, request: HttpRequest, queryset: QuerySet[Target]) -> None:
        for target in queryset:
            try:
                run = reconciliation_start(target=target, trigger=f"admin: {request.user}")
            except ReconciliationBusy as exc:
                self.message_user(request, str(exc), level=messages.WARNING)
                continue
            run_id = str(run.pk)
            transaction.on_commit(lambda run_id=run_id: tasks.reconcile_target.delay(run_id), robust=True)
            self._audit(request, target, f"Reconciliation {run.pk} started.")

    @admin.action(description="Pause (queue changes, send nothing)", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Target]) -> None:
        queryset.update(paused=True)
        for target in queryset:
            self._audit(request, target, "Paused.")

    @admin.action(description="Resume (send what was queued)", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Target]) -> None:
        queryset.update(paused=False)
        _resend(Delivery.objects.filter(target__in=queryset, state=Delivery.State.QUEUED))
        for target in queryset:
            self._audit(request, target, "Resumed.")

    def _act(self, request: HttpRequest, queryset: QuerySet[Target], action: str) -> None:
        for target in queryset:
            self._audit(request, target, admin_pages.run_action(action, target, request.user.get_username()))

    @admin.action(description="Clear quarantine and retry now", permissions=["change"])
    def clear_quarantine(self, request: HttpRequest, queryset: QuerySet[Target]) -> None:
        self._act(request, queryset, "clear_quarantine")

    @admin.action(description="Retry failed deliveries", permissions=["change"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Target]) -> None:
        self._act(request, queryset, "retry_failed")

    @admin.action(description="Approve every held disable/delete", permissions=["change"])
    def approve_all_held(self, request: HttpRequest, queryset: QuerySet[Target]) -> None:
        self._act(request, queryset, "approve_held")

    @admin.action(description="Test connection", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Target]) -> None:
        for target in queryset:
            checks = target_test_connection(target=target)
            failed = [f"{check.name}: {check.explanation}" for check in checks if check.status == "fail"]
            # Not a write, but the checks use the target's credentials: the audit trail says who ran them.
            self.log_change(request, target, f"Connection tested: {len(failed)} check(s) failed.")
            if failed:
                messages.error(request, f"{target.name}: " + "; ".join(failed))
            else:
                messages.success(request, f"{target.name}: every check passed")

    @admin.action(
        description="Create mapping rows from the default mapping (where there are none)",
        permissions=["change"],
    )
    def seed_default_mappings(self, request: HttpRequest, queryset: QuerySet[Target]) -> None:
        for target in queryset:
            created = mappings_seed_default(target=target)
            self._audit(request, target, f"Seeded {created} mapping rows from the default mapping.")

    def _audit(self, request: HttpRequest, target: Target, message: str) -> None:
        self.log_change(request, target, message)
        self.message_user(request, f"{target.name}: {message}")


def _resend(deliveries: QuerySet[Delivery]) -> int:
    ids = list(deliveries.values_list("pk", flat=True))
    Delivery.objects.filter(pk__in=ids).update(next_attempt_at=None, enqueued_at=timezone.now())
    queue.send_on_commit(ids)
    return len(ids)


def _find_object(ref: str) -> tuple[str, uuid.UUID] | None:
    ref = ref.strip()
    try:
        object_id = uuid.UUID(ref)
    except ValueError:
        user = User.objects.filter(user_name__iexact=ref).values_list("pk", flat=True).first()
        if user is not None:
            return ObjectType.USER, user
        group = Group.objects.filter(display_name__iexact=ref).values_list("pk", flat=True).first()
        return (ObjectType.GROUP, group) if group is not None else None
    if User.objects.filter(pk=object_id).exists():
        return ObjectType.USER, object_id
    if Group.objects.filter(pk=object_id).exists():
        return ObjectType.GROUP, object_id
    link = TargetLink.objects.filter(object_id=object_id).values_list("object_type", flat=True).first()
    return (link, object_id) if link else None


class UUIDSearchMixin:
    """Search by an object's id exactly (a UUID), besides the text fields."""

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> Any:
        results, duplicates = super().get_search_results(request, queryset, search_term)  # type: ignore[misc]
        try:
            object_id = uuid.UUID(search_term.strip())
        except ValueError:
            return results, duplicates
        return results | queryset.filter(object_id=object_id), duplicates


@admin.register(TargetLink)
class TargetLinkAdmin(OperatorAuditMixin, UUIDSearchMixin, admin.ModelAdmin):
    list_display = ["object_type", "object_id", "target", "remote_id", "updated"]
    list_filter = ["target", "object_type"]
    search_fields = ["remote_id"]
    list_select_related = ["target"]
    readonly_fields = [
        "target",
        "object_type",
        "object_id",
        "remote_id",
        "last_hash",
        "state",
        "created",
        "updated",
    ]
    ordering = ["-updated"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(OperatorAuditMixin, UUIDSearchMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "target",
        "object_type",
        "object_id",
        "state",
        "priority",
        "attempts",
        "failures",
        "next_attempt_at",
        "updated",
        "last_error",
    ]
    list_filter = ["state", "priority", "target", "object_type"]
    search_fields = ["last_error"]
    list_select_related = ["target"]
    date_hierarchy = "created"
    ordering = ["-id"]
    actions = ["retry_now"]
    readonly_fields = [field.name for field in Delivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Retry now", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = _resend(queryset.filter(state=Delivery.State.QUEUED))
        failed = list(queryset.filter(state=Delivery.State.FAILED))
        for delivery in failed:
            # A failed delivery is history; a fresh one for the same object does the retry.
            queue.send_on_commit(
                deliveries_for_objects(
                    target=delivery.target,
                    keys=[(delivery.object_type, delivery.object_id)],
                    priority=Delivery.Priority.CHANGE,
                )
            )
        for delivery in queryset:
            self.log_change(request, delivery, "Retry now.")
        messages.info(request, f"{count} queued deliveries sent again, {len(failed)} failed ones queued anew")


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(OperatorAuditMixin, UUIDSearchMixin, admin.ModelAdmin):
    list_display = [
        "created",
        "target",
        "object_type",
        "object_repr",
        "action",
        "outcome",
        "status",
        "remote_id",
        "duration_ms",
        "attempt",
    ]
    list_filter = ["outcome", "action", "target", "object_type", "in_scope"]
    search_fields = ["object_repr", "remote_id", "error", "path", "=request_id"]
    list_select_related = ["target"]
    date_hierarchy = "created"
    ordering = ["-created", "-id"]
    readonly_fields = [field.name for field in DeliveryAttempt._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AttributeMappingForm(forms.ModelForm):
    class Meta:
        model = AttributeMapping
        fields = [
            "target",
            "object_type",
            "position",
            "target_attribute",
            "source_kind",
            "source",
            "default_value",
            "apply",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        # The instance gets the form's values only after clean(): check a copy built from them.
        fields = {name: data.get(name) for name in self.Meta.fields}
        try:
            mapping_check(mapping=AttributeMapping(pk=self.instance.pk, **fields))
        except ValidationError as exc:
            if not hasattr(exc, "error_dict"):
                self.add_error(None, exc)
                return data
            for field, errors in exc.error_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        return data


@admin.register(AttributeMapping)
class AttributeMappingAdmin(OperatorAuditMixin, admin.ModelAdmin):
    """Single rows; the per-target mappings page edits a whole set with a preview."""

    form = AttributeMappingForm
    list_display = ["target", "object_type", "position", "target_attribute", "source_kind", "source", "apply"]
    list_filter = ["target", "object_type", "source_kind", "apply"]
    search_fields = ["target_attribute", "source"]
    list_select_related = ["target"]
    ordering = ["target", "object_type", "position", "id"]

    def save_model(self, request: HttpRequest, obj: AttributeMapping, form: Any, change: bool) -> None:
        mapping_save(mapping=obj)

    def delete_model(self, request: HttpRequest, obj: AttributeMapping) -> None:
        mapping_delete(mapping=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AttributeMapping]) -> None:
        for mapping in queryset.select_related("target"):
            try:
                mapping_delete(mapping=mapping)
            except ValidationError as exc:
                messages.error(request, f"{mapping}: {'; '.join(exc.messages)}")


@admin.register(HeldDelivery)
class HeldDeliveryAdmin(OperatorAuditMixin, UUIDSearchMixin, admin.ModelAdmin):
    """Disables and deletes the deletion guard holds: approve (they go through) or reject (left as is)."""

    list_display = ["id", "target", "object_type", "object_id", "last_error", "updated"]
    list_filter = ["target", "object_type"]
    search_fields = ["last_error"]
    list_select_related = ["target"]
    ordering = ["target", "id"]
    actions = ["approve", "reject"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[HeldDelivery]:
        return super().get_queryset(request).filter(state=Delivery.State.HELD)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Decided by the actions below only.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_decide_permission(self, request: HttpRequest) -> bool:
        # The pages are read-only (has_change_permission is False for everyone); approving or
        # rejecting is what the model's change permission grants.
        return request.user.has_perm("provisioning.change_helddelivery")

    def _decide(self, request: HttpRequest, queryset: QuerySet[HeldDelivery], approve: bool) -> None:
        selected = list(queryset.values_list("pk", "target_id"))
        ids = [pk for pk, _ in selected]
        operator = request.user.get_username()
        if approve:
            count, verb = held_approve(operator=operator, delivery_ids=ids), "Approved"
        else:
            count, verb = held_reject(operator=operator, delivery_ids=ids), "Rejected"
        for target in Target.objects.filter(pk__in={target_id for _, target_id in selected}):
            mine = [pk for pk, target_id in selected if target_id == target.pk]
            self.log_change(request, target, f"{verb} held deliveries {', '.join(map(str, mine))}")
        self.message_user(request, f"{verb} {count} held disable(s)/delete(s)")

    @admin.action(description="Approve: send the selected disables/deletes", permissions=["decide"])
    def approve(self, request: HttpRequest, queryset: QuerySet[HeldDelivery]) -> None:
        self._decide(request, queryset, approve=True)

    @admin.action(
        description="Reject: leave the selected objects as they are downstream", permissions=["decide"]
    )
    def reject(self, request: HttpRequest, queryset: QuerySet[HeldDelivery]) -> None:
        self._decide(request, queryset, approve=False)


@admin.register(ScopeExclusion)
class ScopeExclusionAdmin(OperatorAuditMixin, UUIDSearchMixin, admin.ModelAdmin):
    """Objects a target's assignments cover but its scoping filters keep out, with the reason."""

    list_display = ["object_type", "object_id", "target", "reason", "since"]
    list_filter = ["target", "object_type"]
    search_fields = ["reason"]
    list_select_related = ["target"]
    ordering = ["-since"]
    readonly_fields = ["target", "object_type", "object_id", "reason", "since"]


class ReadOnlyAdmin(OperatorAuditMixin, admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(GuardGrant)
class GuardGrantAdmin(OperatorAuditMixin, UUIDSearchMixin, admin.ModelAdmin):
    """Disables and deletes the deletion guard let through (or an operator approved)."""

    list_display = ["created", "target", "action", "object_type", "object_id", "approved_by", "run_id"]
    list_filter = ["target", "action"]
    search_fields = ["approved_by"]
    list_select_related = ["target"]
    date_hierarchy = "created"
    ordering = ["-created"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    list_display = [
        "started",
        "target",
        "state",
        "trigger",
        "users",
        "groups",
        "leavers",
        "queued",
        "created_count",
        "updated_count",
        "removed_count",
        "unchanged_count",
        "failed_count",
        "pending_count",
        "finished",
    ]
    list_filter = ["state", "target"]
    list_select_related = ["target"]
    date_hierarchy = "started"
    ordering = ["-started"]
    readonly_fields = [field.name for field in SyncRun._meta.fields] + ["log_link"]
    actions = ["refresh_counts", "cancel"]

    def has_operate_permission(self, request: HttpRequest) -> bool:
        # Runs are read-only records; refreshing or cancelling one takes the change permission.
        return request.user.has_perm("provisioning.change_syncrun")

    @admin.display(description="provisioning log")
    def log_link(self, obj: SyncRun) -> str:
        url = reverse("admin:provisioning_deliveryattempt_changelist")
        return format_html('<a href="{}?run_id={}">This run\'s log entries</a>', url, obj.pk)

    @admin.action(description="Count outcomes now", permissions=["operate"])
    def refresh_counts(self, request: HttpRequest, queryset: QuerySet[SyncRun]) -> None:
        for run in queryset:
            sync_run_refresh(run=run)

    @admin.action(
        description="Cancel (stop queuing; what is queued is still delivered)", permissions=["operate"]
    )
    def cancel(self, request: HttpRequest, queryset: QuerySet[SyncRun]) -> None:
        for run in queryset:
            sync_run_cancel(run=run)
            self.log_change(request, run, "Cancelled.")


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    list_display = [
        "started",
        "target",
        "state",
        "policy",
        "remote_users",
        "remote_groups",
        "in_sync",
        "drift",
        "missing",
        "orphans",
        "unlinked",
        "membership_drift",
        "membership_unknown",
        "pending",
        "unprovisioned",
        "corrections",
        "findings_link",
    ]
    list_filter = ["state", "target", "policy"]
    list_select_related = ["target"]
    date_hierarchy = "started"
    ordering = ["-started"]
    readonly_fields = [field.name for field in ReconciliationRun._meta.fields] + ["findings_link", "log_link"]

    @admin.display(description="findings")
    def findings_link(self, obj: ReconciliationRun) -> str:
        url = reverse("admin:provisioning_reconciliationfinding_changelist")
        return format_html('<a href="{}?run__id__exact={}">Findings</a>', url, obj.pk)

    @admin.display(description="provisioning log")
    def log_link(self, obj: ReconciliationRun) -> str:
        url = reverse("admin:provisioning_deliveryattempt_changelist")
        return format_html('<a href="{}?run_id={}">Log entries of its corrections</a>', url, obj.pk)


@admin.register(ReconciliationFinding)
class ReconciliationFindingAdmin(ReadOnlyAdmin):
    list_display = [
        "created",
        "target",
        "kind",
        "object_type",
        "object_repr",
        "object_id",
        "remote_id",
        "correction",
        "note",
    ]
    list_filter = ["kind", "correction", "object_type", "target"]
    search_fields = ["object_repr", "remote_id", "note"]
    list_select_related = ["target"]
    ordering = ["-created", "id"]
    readonly_fields = [field.name for field in ReconciliationFinding._meta.fields]
