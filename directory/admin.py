"""The operator UI: a second front door to the directory services.

Every write here calls a service (never Model.save), so an operator's edit is
versioned and lands in the outbox and the audit trail exactly like a SCIM
client's.
"""

import uuid
from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from directory import services
from directory.actors import Actor
from directory.exceptions import InvalidValue
from directory.models import AuditEntry, ChangeEvent, Group, Membership, User, UserValue
from directory.selectors import group_list, group_nesting_would_cycle


def operator(request: HttpRequest) -> Actor:
    return Actor.operator(id=request.user.pk, name=request.user.get_username())


def _audit_link(obj: User | Group) -> str:
    if obj.pk is None:
        return "-"
    url = reverse("admin:directory_auditentry_changelist") + f"?object_id={obj.pk}"
    return format_html('<a href="{}">Audit trail of this {}</a>', url, obj._meta.verbose_name)


# --- users -------------------------------------------------------------------


class UserValueFormSet(BaseInlineFormSet):
    def values(self) -> dict[str, list[dict[str, Any]]]:
        """The multi-valued attributes as the formset now has them, every kind included."""
        values: dict[str, list[dict[str, Any]]] = {kind: [] for kind in UserValue.Kind.values}
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE"):
                continue
            values[data["kind"]].append(
                {
                    "value": data.get("value", ""),
                    "display": data.get("display", ""),
                    "type": data.get("type", ""),
                    "primary": data.get("primary", False),
                    "address": data.get("address") or {},
                }
            )
        return values

    def clean(self) -> None:
        super().clean()
        try:
            services.normalise_values(self.values())
        except InvalidValue as exc:
            raise forms.ValidationError(str(exc)) from None


class UserValueInline(admin.TabularInline):
    model = UserValue
    formset = UserValueFormSet
    fields = ["kind", "value", "type", "display", "primary", "address"]
    extra = 0
    verbose_name_plural = "emails, phone numbers, addresses and other multi-valued attributes"


class UserMembershipInline(admin.TabularInline):
    model = Membership
    fk_name = "member_user"
    fields = ["group", "created"]
    readonly_fields = ["created"]
    autocomplete_fields = ["group"]
    extra = 0
    verbose_name = "group membership"
    verbose_name_plural = "group memberships (direct)"


class UserForm(forms.ModelForm):
    new_password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty to keep the current password. Stored as an Argon2 hash; never shown.",
    )

    class Meta:
        model = User
        # Everything but `password`, which only new_password (hashed by the service) may set.
        fields = [field.name for field in User._meta.fields if field.editable and field.name != "password"]


@admin.register(User)
class UserAdmin(admin.ModelAdmin):
    form = UserForm
    list_display = ["user_name", "display_name", "department", "title", "active", "manager", "last_modified"]
    list_filter = ["active", "user_type", "department"]
    list_select_related = ["manager"]
    search_fields = ["user_name", "display_name", "external_id", "employee_number", "=values__value"]
    ordering = ["user_name"]
    autocomplete_fields = ["manager"]
    readonly_fields = ["id", "version", "created", "last_modified", "audit_trail"]
    inlines = [UserValueInline, UserMembershipInline]
    actions = ["activate", "deactivate"]
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["user_name", "external_id", "active", "new_password"]}),
        (
            "Name",
            {
                "fields": [
                    "display_name",
                    "name_formatted",
                    ("honorific_prefix", "given_name", "middle_name", "family_name", "honorific_suffix"),
                    "nick_name",
                ]
            },
        ),
        (
            "Profile",
            {
                "fields": [
                    "title",
                    "user_type",
                    "profile_url",
                    ("preferred_language", "locale", "timezone"),
                ]
            },
        ),
        (
            "Organisation (enterprise extension)",
            {
                "fields": [
                    ("employee_number", "cost_center"),
                    ("organization", "division", "department"),
                    "manager",
                ]
            },
        ),
        ("Other extension schemas", {"fields": ["extensions"], "classes": ["collapse"]}),
        ("Record", {"fields": ["id", "version", "created", "last_modified", "audit_trail"]}),
    ]

    @admin.display(description="audit trail")
    def audit_trail(self, obj: User) -> str:
        return _audit_link(obj)

    def save_model(self, request: HttpRequest, obj: User, form: forms.ModelForm, change: bool) -> None:
        # Written in save_related, with the inline values, in one service call.
        pass

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        actor = operator(request)
        for formset in formsets:
            # The admin's history message reads these, which formset.save() would have set.
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        values = next(
            (fs.values() for fs in formsets if isinstance(fs, UserValueFormSet) and fs.has_changed()), None
        )
        fields = {name: form.cleaned_data[name] for name in form.changed_data if name in services.USER_FIELDS}
        if "manager" in form.changed_data:
            manager = form.cleaned_data["manager"]
            fields["manager_id"] = manager.pk if manager else None
        password = form.cleaned_data.get("new_password") or None
        if change:
            extra = {"password": password} if password else {}
            user = services.user_update(
                actor=actor, user_id=form.instance.pk, values=values, **fields, **extra
            )
        else:
            user_name = fields.pop("user_name")
            user = services.user_create(
                actor=actor, user_name=user_name, password=password, values=values, **fields
            )
            form.instance.pk = user.pk
            form.instance._state.adding = False
        for field in ("version", "created", "last_modified"):
            setattr(form.instance, field, getattr(user, field))
        for formset in formsets:
            if formset.model is Membership:
                self._save_memberships(actor, user, formset)

    def _save_memberships(self, actor: Actor, user: User, formset: Any) -> None:
        for form in formset.initial_forms:
            if form in formset.deleted_forms or "group" in form.changed_data:
                services.membership_remove(actor=actor, group_id=form.initial["group"], user_ids=[user.pk])
        for form in formset.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE") or "group" not in form.changed_data:
                continue
            services.membership_add(actor=actor, group_id=data["group"].pk, user_ids=[user.pk])

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        services.user_delete(actor=operator(request), user_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        actor = operator(request)
        for user_id in queryset.values_list("pk", flat=True):
            services.user_delete(actor=actor, user_id=user_id)

    @admin.action(description="Activate selected users", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._set_active(request, queryset, active=True)

    @admin.action(description="Deactivate selected users", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._set_active(request, queryset, active=False)

    def _set_active(self, request: HttpRequest, queryset: QuerySet[User], *, active: bool) -> None:
        actor = operator(request)
        service = services.user_activate if active else services.user_deactivate
        ids = list(queryset.exclude(active=active).values_list("pk", flat=True))
        for user_id in ids:
            service(actor=actor, user_id=user_id)
        verb = "activated" if active else "deactivated"
        self.message_user(request, f"{len(ids)} user(s) {verb}.", messages.SUCCESS)


# --- groups ------------------------------------------------------------------


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = [
        "display_name",
        "kind",
        "member_count",
        "mail_enabled",
        "security_enabled",
        "last_modified",
    ]
    list_filter = ["kind", "mail_enabled", "security_enabled"]
    search_fields = ["display_name", "external_id", "mail_nickname"]
    ordering = ["display_name"]
    readonly_fields = ["id", "version", "created", "last_modified", "members", "audit_trail"]
    fields = [
        "display_name",
        "external_id",
        "description",
        "kind",
        ("security_enabled", "mail_enabled", "mail_nickname"),
        "extensions",
        "members",
        "id",
        "version",
        "created",
        "last_modified",
        "audit_trail",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Group]:
        return group_list(with_member_count=True)

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj: Group) -> int:
        return obj.member_count  # type: ignore[attr-defined, no-any-return]

    @admin.display(description="members")
    def members(self, obj: Group) -> str:
        # A link, not an inline: a group may have 100k members.
        if obj.pk is None:
            return "Add members after saving the group."
        url = reverse("admin:directory_membership_changelist") + f"?group__id__exact={obj.pk}"
        add = reverse("admin:directory_membership_add") + f"?group={obj.pk}"
        count = getattr(obj, "member_count", None)
        label = f"View the {count} direct member(s)" if count is not None else "View the members"
        return format_html('<a href="{}">{}</a> · <a href="{}">Add a member</a>', url, label, add)

    @admin.display(description="audit trail")
    def audit_trail(self, obj: Group) -> str:
        return _audit_link(obj)

    def save_model(self, request: HttpRequest, obj: Group, form: forms.ModelForm, change: bool) -> None:
        actor = operator(request)
        fields = {
            name: form.cleaned_data[name] for name in form.changed_data if name in services.GROUP_FIELDS
        }
        if change:
            group = services.group_update(actor=actor, group_id=obj.pk, **fields)
        else:
            display_name = fields.pop("display_name")
            group = services.group_create(actor=actor, display_name=display_name, **fields)
            obj.pk = group.pk
            obj._state.adding = False
        for field in ("version", "created", "last_modified", "mail_enabled"):
            setattr(obj, field, getattr(group, field))

    def delete_model(self, request: HttpRequest, obj: Group) -> None:
        services.group_delete(actor=operator(request), group_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Group]) -> None:
        actor = operator(request)
        for group_id in queryset.values_list("pk", flat=True):
            services.group_delete(actor=actor, group_id=group_id)


# --- memberships ----------------------------------------------------------------


class MembershipForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ["group", "member_user", "member_group"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        group, member_group = data.get("group"), data.get("member_group")
        if (
            group
            and member_group
            and group_nesting_would_cycle(group_id=group.pk, member_group_id=member_group.pk)
        ):
            raise forms.ValidationError(
                f"{member_group} already contains {group}: nesting it would form a cycle."
            )
        return data


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    form = MembershipForm
    list_display = ["group", "member", "member_kind", "created"]
    list_select_related = ["group", "member_user", "member_group"]
    search_fields = ["group__display_name", "member_user__user_name", "member_group__display_name"]
    autocomplete_fields = ["group", "member_user", "member_group"]
    ordering = ["-created"]
    show_full_result_count = False

    @admin.display(description="member")
    def member(self, obj: Membership) -> str:
        return str(obj.member)

    @admin.display(description="kind")
    def member_kind(self, obj: Membership) -> str:
        return "user" if obj.member_user_id else "group"

    def has_change_permission(self, request: HttpRequest, obj: Membership | None = None) -> bool:
        # A membership is added or removed, never edited in place.
        return False

    def save_model(self, request: HttpRequest, obj: Membership, form: forms.ModelForm, change: bool) -> None:
        services.membership_add(
            actor=operator(request),
            group_id=obj.group_id,
            user_ids=[obj.member_user_id] if obj.member_user_id else [],
            group_ids=[obj.member_group_id] if obj.member_group_id else [],
        )
        saved = Membership.objects.get(
            group_id=obj.group_id, member_user_id=obj.member_user_id, member_group_id=obj.member_group_id
        )
        obj.pk, obj.created = saved.pk, saved.created
        obj._state.adding = False

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        self._remove(request, [obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        self._remove(request, queryset)

    def _remove(self, request: HttpRequest, memberships: Iterable[Membership]) -> None:
        by_group: dict[uuid.UUID, tuple[list[uuid.UUID], list[uuid.UUID]]] = {}
        for membership in memberships:
            users, groups = by_group.setdefault(membership.group_id, ([], []))
            if membership.member_user_id:
                users.append(membership.member_user_id)
            else:
                groups.append(membership.member_group_id)  # type: ignore[arg-type]
        actor = operator(request)
        for group_id, (users, groups) in by_group.items():
            services.membership_remove(actor=actor, group_id=group_id, user_ids=users, group_ids=groups)


# --- outbox and audit trail (read-only) ------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ChangeEvent)
class ChangeEventAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "created",
        "object_type",
        "object_id",
        "kind",
        "version",
        "member_type",
        "member_id",
        "processed",
    ]
    list_filter = ["object_type", "kind", ("processed", admin.EmptyFieldListFilter)]
    search_fields = ["=object_id", "=member_id"]
    ordering = ["-id"]


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["created", "actor_type", "actor_name", "action", "object_type", "object_repr"]
    list_filter = ["actor_type", "action", "object_type"]
    search_fields = ["actor_name", "object_repr", "=object_id"]
    ordering = ["-created", "-id"]
    date_hierarchy = "created"
