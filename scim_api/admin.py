"""SCIM clients in the operator admin: credentials shown once, dialect rewrite counts per client."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from directory.admin_audit import OperatorAuditMixin
from scim_api.inbound import admin as inbound_admin  # noqa: F401 - registers the inbound pages
from scim_api.models import DialectRewrite, OAuthCredential, ScimClient
from scim_api.services import (
    oauth_credential_issue,
    scim_client_create,
    scim_client_revoke,
    scim_client_rotate,
)
from scim_api.token_cache import recent_clients


class DialectRewriteInline(admin.TabularInline):
    model = DialectRewrite
    fields = ["name", "count", "first_seen", "last_seen"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "dialect rewrites (requests this client sent in a non-RFC form, by rewrite)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OAuthCredentialInline(admin.StackedInline):
    model = OAuthCredential
    fk_name = "scim_client"
    fields = ["public_id", "token_lifetime_minutes", "created"]
    readonly_fields = ["public_id", "created"]
    extra = 0
    can_delete = True
    verbose_name_plural = "OAuth client credentials (use the action to issue or replace the secret)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ScimClientForm(forms.ModelForm):
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, help_text="Days until the token expires; empty for no expiry."
    )

    class Meta:
        model = ScimClient
        fields = ["name", "description", "scope", "user", "requests_per_minute", "revoked"]


@admin.register(ScimClient)
class ScimClientAdmin(OperatorAuditMixin, admin.ModelAdmin):
    form = ScimClientForm
    list_display = ["name", "scope", "requests_per_minute", "revoked", "expires", "last_used", "created"]
    list_filter = ["scope", "revoked"]
    search_fields = ["name", "description"]
    ordering = ["name"]
    readonly_fields = ["token_lookup", "expires", "created", "last_used"]
    autocomplete_fields = ["user"]
    list_select_related = ["user"]
    inlines = [OAuthCredentialInline, DialectRewriteInline]
    actions = ["rotate_token", "issue_oauth_credentials", "revoke"]

    def get_inlines(self, request: HttpRequest, obj: ScimClient | None) -> list[Any]:
        # A client being created has neither OAuth credentials nor traffic yet.
        return self.inlines if obj is not None else []

    def save_model(self, request: HttpRequest, obj: ScimClient, form: forms.ModelForm, change: bool) -> None:
        if change:
            days = form.cleaned_data.get("expires_in_days")
            if days:
                obj.expires_in(days)
            obj.save()
            if "revoked" in form.changed_data and obj.revoked:
                scim_client_revoke(client_ids=[obj.pk])  # ends its OAuth access tokens too
            recent_clients.clear()  # a revoked tick-box or a new expiry takes effect now
            return
        client, token = scim_client_create(
            name=obj.name,
            scope=obj.scope,
            description=obj.description,
            expires_days=form.cleaned_data.get("expires_in_days"),
            user_id=obj.user_id,
        )
        obj.pk, obj.token_lookup, obj.token_hash, obj.expires = (
            client.pk,
            client.token_lookup,
            client.token_hash,
            client.expires,
        )
        obj._state.adding = False
        self._show_token(request, client, token)

    @admin.action(description="Issue a new token (the old one stops working)", permissions=["change"])
    def rotate_token(self, request: HttpRequest, queryset: QuerySet[ScimClient]) -> None:
        for client in queryset:
            rotated, token = scim_client_rotate(client_id=client.pk)
            self.log_change(request, client, "Issued a new token.")
            self._show_token(request, rotated, token)

    @admin.action(description="Issue OAuth client credentials (replaces the secret)", permissions=["change"])
    def issue_oauth_credentials(self, request: HttpRequest, queryset: QuerySet[ScimClient]) -> None:
        for client in queryset:
            current = getattr(client, "oauth", None)
            credential, secret = oauth_credential_issue(
                client_id=client.pk, lifetime_minutes=current.token_lifetime_minutes if current else 60
            )
            self.log_change(request, client, f"Issued OAuth client credentials {credential.public_id}.")
            self.message_user(
                request,
                f"OAuth credentials for {client.name}: client_id {credential.public_id}, "
                f"client_secret {secret} — copy the secret now; it is stored only as a hash. "
                "Token endpoint: /oauth/token.",
                messages.WARNING,
            )

    @admin.action(description="Revoke the selected clients' tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ScimClient]) -> None:
        count = scim_client_revoke(client_ids=queryset.values_list("pk", flat=True))
        for client in queryset:
            self.log_change(request, client, "Token revoked.")
        self.message_user(request, f"{count} SCIM client token(s) revoked.", messages.SUCCESS)

    def _show_token(self, request: HttpRequest, client: ScimClient, token: str) -> None:
        self.message_user(
            request,
            f"Bearer token for {client.name}: {token} — copy it now; it is stored only as a hash "
            "and cannot be shown again.",
            messages.WARNING,
        )


@admin.register(DialectRewrite)
class DialectRewriteAdmin(OperatorAuditMixin, admin.ModelAdmin):
    list_display = ["client", "name", "count", "first_seen", "last_seen"]
    list_filter = ["name"]
    list_select_related = ["client"]
    search_fields = ["client__name", "name"]
    ordering = ["client__name", "name"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
