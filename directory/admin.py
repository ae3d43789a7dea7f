"""The operator UI: a second front door to the directory services.

Every write here calls a service (never Model.save), so an operator's edit is
versioned and lands in the outbox and the audit trail exactly like a SCIM
client's.
"""

import json
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from directory import extensions, services
from directory.actors import Actor
from directory.exceptions import DirectoryError, InvalidValue, UniquenessConflict
from directory.extensions import AttributeDefinition, SchemaDefinition
from directory.models import (
    AuditEntry,
    ChangeEvent,
    ExtensionAttribute,
    ExtensionDataExport,
    ExtensionSchema,
    Group,
    Membership,
    User,
    UserValue,
)
from directory.selectors import group_list, group_nesting_would_cycle


def operator(request: HttpRequest) -> Actor:
    return Actor.operator(id=request.user.pk, name=request.user.get_username())


def _audit_link(obj: User | Group) -> str:
    if obj.pk is None:
        return "-"
    url = reverse("admin:directory_auditentry_changelist") + f"?object_id={obj.pk}"
    return format_html('<a href="{}">Audit trail of this {}</a>', url, obj._meta.verbose_name)


# --- operator-defined extension attributes on the user and group pages ------------


def _field_name(attribute: AttributeDefinition) -> str:
    return f"extension_{attribute.id}"


def _form_field(schema: SchemaDefinition, attribute: AttributeDefinition) -> forms.Field:
    """An admin form field for one operator-defined attribute (empty means no value)."""
    help_text = attribute.description
    field: forms.Field
    if attribute.multi_valued:
        field = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), help_text="One value per line.")
    elif attribute.mutability == "writeOnly":
        field = forms.CharField(
            widget=forms.PasswordInput(render_value=False),
            help_text="Write-only: never shown. Leave empty to keep the current value.",
        )
    elif attribute.type == "boolean":
        field = forms.NullBooleanField()
    elif attribute.type == "integer":
        field = forms.IntegerField()
    elif attribute.type == "decimal":
        field = forms.DecimalField()
    elif attribute.canonical_values:
        field = forms.ChoiceField(choices=[("", "---------"), *((v, v) for v in attribute.canonical_values)])
    else:
        field = forms.CharField(max_length=extensions.MAX_STRING_LENGTH, strip=False)
        if attribute.type == "dateTime":
            help_text = help_text or "An xsd:dateTime, e.g. 2025-01-31T09:00:00Z."
    field.required = False
    field.label = attribute.name
    field.help_text = field.help_text or help_text
    return field


def _initial(attribute: AttributeDefinition, value: Any) -> Any:
    if value is None or attribute.mutability == "writeOnly":
        return None
    if attribute.multi_valued and isinstance(value, list):
        return "\n".join(json.dumps(item) if isinstance(item, bool) else str(item) for item in value)
    return value


def _from_form(attribute: AttributeDefinition, value: Any) -> Any:
    """A form value as the JSON value the services take; ValueError when a line does not parse."""
    if value in (None, ""):
        return None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if not attribute.multi_valued:
        return value
    items: list[Any] = []
    for line in (line.strip() for line in str(value).splitlines()):
        if not line:
            continue
        if attribute.type == "integer":
            items.append(int(line))
        elif attribute.type == "decimal":
            items.append(float(line))
        elif attribute.type == "boolean":
            if line.lower() not in ("true", "false"):
                raise ValueError(f"{line!r} is neither true nor false")
            items.append(line.lower() == "true")
        else:
            items.append(line)
    return items or None


class ExtensionValuesForm(forms.ModelForm):
    """A user or group form with a field per operator-defined attribute.

    The raw `extensions` JSON field then holds only the undeclared extensions;
    `clean` merges both into `extension_values`, checked as the services will
    check them, so errors show on the form instead of failing the save.
    """

    extension_resource_type = ""
    extension_schemas: tuple[SchemaDefinition, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stored = self.instance.extensions or {}
        declared = {schema.urn for schema in self.extension_schemas}
        for schema in self.extension_schemas:
            values = stored.get(schema.urn) if isinstance(stored.get(schema.urn), dict) else {}
            for attribute in schema.attributes:
                self.initial[_field_name(attribute)] = _initial(attribute, values.get(attribute.name))
        if "extensions" in self.fields:
            self.initial["extensions"] = {urn: data for urn, data in stored.items() if urn not in declared}
        self.extension_values: dict[str, Any] = dict(stored)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        stored = self.instance.extensions or {}
        declared = {schema.urn.lower() for schema in self.extension_schemas}
        others = data.get("extensions") if "extensions" in self.fields else None
        if others is None:
            others = {urn: value for urn, value in stored.items() if urn.lower() not in declared}
        if not isinstance(others, dict):
            return data
        clash = sorted(urn for urn in others if isinstance(urn, str) and urn.lower() in declared)
        if clash:
            self.add_error("extensions", f"Edit {', '.join(clash)} in its own section of this page.")
            return data
        merged = dict(others)
        for schema in self.extension_schemas:
            current = stored.get(schema.urn) if isinstance(stored.get(schema.urn), dict) else {}
            # Keys stored before the schema declared them are kept as they are.
            values = {key: value for key, value in current.items() if schema.attribute(key) is None}
            for attribute in schema.attributes:
                name = _field_name(attribute)
                try:
                    value = _from_form(attribute, data.get(name))
                    if value is None and attribute.mutability == "writeOnly":
                        value = current.get(attribute.name)
                    value = extensions.clean_value(schema, attribute, value)
                except (ValueError, InvalidValue) as exc:
                    self.add_error(name, str(exc))
                    continue
                if value is not None:
                    values[attribute.name] = value
            if values:
                merged[schema.urn] = values
        try:
            extensions.check_unique(
                self.extension_resource_type, merged, current=stored, exclude=self.instance.pk
            )
        except UniquenessConflict as exc:
            self.add_error(None, str(exc))
        self.extension_values = merged
        return data

    @property
    def extensions_changed(self) -> bool:
        return self.extension_values != (self.instance.extensions or {})


class ExtensionFieldsMixin:
    """Adds a section per operator-defined extension schema to a user or group page."""

    extension_resource_type = ""

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        schemas = extensions.definitions().for_type(self.extension_resource_type)
        base = kwargs.get("form", self.form)  # type: ignore[attr-defined]
        attrs: dict[str, Any] = {
            "extension_resource_type": self.extension_resource_type,
            "extension_schemas": schemas,
            "__module__": __name__,
        }
        for schema in schemas:
            for attribute in schema.attributes:
                attrs[_field_name(attribute)] = _form_field(schema, attribute)
        kwargs["form"] = type(f"{base.__name__}WithExtensions", (base,), attrs)
        return super().get_form(request, obj, change=change, **kwargs)  # type: ignore[misc]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[tuple[str | None, dict[str, Any]]]:
        fieldsets = list(super().get_fieldsets(request, obj))  # type: ignore[misc]
        for schema in extensions.definitions().for_type(self.extension_resource_type):
            if not schema.attributes:
                continue
            # Before the closing "Record" section when there is one.
            fieldsets.insert(
                len(fieldsets) - 1 if len(fieldsets) > 1 else len(fieldsets),
                (
                    f"{schema.name} (extension schema)",
                    {
                        "fields": [_field_name(attribute) for attribute in schema.attributes],
                        "description": schema.urn + (f": {schema.description}" if schema.description else ""),
                    },
                ),
            )
        return fieldsets

    def extension_fields(self, form: forms.ModelForm) -> dict[str, Any]:
        """`extensions` for the service when the form changed any extension value, else nothing."""
        if isinstance(form, ExtensionValuesForm) and form.extensions_changed:
            return {"extensions": form.extension_values}
        return {}


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


class UserForm(ExtensionValuesForm):
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
class UserAdmin(ExtensionFieldsMixin, admin.ModelAdmin):
    extension_resource_type = "user"
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
        fields.pop("extensions", None)
        fields.update(self.extension_fields(form))
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


class GroupForm(ExtensionValuesForm):
    class Meta:
        model = Group
        fields = [
            "display_name",
            "external_id",
            "description",
            "kind",
            "security_enabled",
            "mail_enabled",
            "mail_nickname",
            "extensions",
        ]


@admin.register(Group)
class GroupAdmin(ExtensionFieldsMixin, admin.ModelAdmin):
    extension_resource_type = "group"
    form = GroupForm
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
        fields.pop("extensions", None)
        fields.update(self.extension_fields(form))
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
    search_fields = ["actor_name", "object_repr", "=object_id", "=object_key", "=request_id"]
    ordering = ["-created", "-id"]
    date_hierarchy = "created"


# --- extension schemas -------------------------------------------------------------


class ExtensionAttributeForm(forms.ModelForm):
    canonical_values = forms.CharField(
        label="canonicalValues",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 16}),
        help_text="One per line; strings only.",
    )

    class Meta:
        model = ExtensionAttribute
        fields = [
            "name",
            "type",
            "multi_valued",
            "required",
            "mutability",
            "returned",
            "uniqueness",
            "case_exact",
            "canonical_values",
            "description",
        ]
        widgets = {"description": forms.Textarea(attrs={"rows": 2, "cols": 24})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["canonical_values"] = "\n".join(self.instance.canonical_values or [])
        if self.instance.pk is not None:
            # Stored values are keyed by name and read by type: remove the attribute and add another.
            for name in services.FIXED_ATTRIBUTE_FIELDS:
                self.fields[name].disabled = True

    def clean_canonical_values(self) -> list[str]:
        text = self.cleaned_data.get("canonical_values") or ""
        return [line.strip() for line in text.splitlines() if line.strip()]

    def spec(self) -> dict[str, Any]:
        """The attribute as extension_schema_create / _update take it."""
        spec = {name: self.cleaned_data[name] for name in services.ATTRIBUTE_FIELDS}
        if self.instance.pk is not None:
            spec["id"] = self.instance.pk
        return spec


class ExtensionAttributeFormSet(BaseInlineFormSet):
    def kept_forms(self) -> list[ExtensionAttributeForm]:
        return [
            form
            for form in self.forms
            if getattr(form, "cleaned_data", None)
            and not form.cleaned_data.get("DELETE")
            and (form.instance.pk is not None or form.has_changed())
        ]

    def removed(self) -> list[ExtensionAttribute]:
        return [form.instance for form in self.deleted_forms if form.instance.pk is not None]

    def clean(self) -> None:
        super().clean()
        if any(form.errors for form in self.forms):
            return
        names = [form.cleaned_data["name"].lower() for form in self.kept_forms()]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise forms.ValidationError(f"Attribute names must differ (ignoring case): {', '.join(twice)}")
        schema: ExtensionSchema = self.instance
        if schema.pk is None:
            return
        removed = self.removed()
        held = (
            extensions.holder_count(schema.urn, schema.resource_type, [a.name for a in removed])
            if removed
            else 0
        )
        # The parent form's checkbox: the formset sees the whole POST.
        if held and not self.data.get("confirm_removal"):
            raise forms.ValidationError(
                f"{held} {schema.resource_type}(s) hold values of {', '.join(a.name for a in removed)}. "
                "Removing the attribute(s) strips those values (a JSON export is kept under "
                "Extension data exports): tick 'Confirm removal' and save again."
            )
        for form in self.kept_forms():
            attribute = form.instance
            unique = form.cleaned_data["uniqueness"] != "none"
            # A unique index over values that repeat cannot be built: say so here rather than on save.
            was_unique = form.initial.get("uniqueness", "none") != "none"
            same_case = form.initial.get("case_exact") == form.cleaned_data["case_exact"]
            if unique and not (was_unique and same_case):
                definition = AttributeDefinition(
                    id=attribute.pk or 0,
                    name=form.cleaned_data["name"],
                    type=form.cleaned_data["type"],
                    uniqueness=form.cleaned_data["uniqueness"],
                    case_exact=form.cleaned_data["case_exact"],
                )
                if extensions.has_duplicates(schema.urn, schema.resource_type, definition):
                    form.add_error(
                        "uniqueness", f"Two {schema.resource_type}s already hold the same {definition.name}."
                    )


class ExtensionAttributeInline(admin.TabularInline):
    model = ExtensionAttribute
    form = ExtensionAttributeForm
    formset = ExtensionAttributeFormSet
    extra = 1
    ordering = ["position", "id"]
    verbose_name_plural = "attributes (name, type and multiValued are fixed once saved)"


class ExtensionSchemaForm(forms.ModelForm):
    confirm_removal = forms.BooleanField(
        required=False,
        label="Confirm removal",
        help_text="Needed to remove attributes that hold values: their values are exported, then stripped.",
    )

    class Meta:
        model = ExtensionSchema
        fields = ["urn", "name", "resource_type", "required", "description"]


@admin.register(ExtensionSchema)
class ExtensionSchemaAdmin(admin.ModelAdmin):
    """Operators define extension schemas here; /Schemas and /ResourceTypes serve them once saved."""

    form = ExtensionSchemaForm
    inlines = [ExtensionAttributeInline]
    list_display = ["urn", "name", "resource_type", "required", "attribute_count", "last_modified"]
    list_filter = ["resource_type", "required"]
    search_fields = ["urn", "name"]
    ordering = ["resource_type", "urn"]
    fieldsets = [
        (None, {"fields": ["urn", "name", "resource_type", "required", "description"]}),
        ("Values", {"fields": ["values_held", "confirm_removal"]}),
        ("Record", {"fields": ["id", "created", "last_modified"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ExtensionSchema]:
        return super().get_queryset(request).annotate(attribute_total=Count("attributes"))

    def get_readonly_fields(self, request: HttpRequest, obj: ExtensionSchema | None = None) -> list[str]:
        fields = ["id", "created", "last_modified", "values_held"]
        # Stored values are keyed by the URN, on users or on groups.
        return [*fields, "urn", "resource_type"] if obj is not None else fields

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        # Removal goes through the confirmation page, which says what it strips and exports.
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="attributes", ordering="attribute_total")
    def attribute_count(self, obj: ExtensionSchema) -> int:
        return getattr(obj, "attribute_total", 0)

    @admin.display(description="values held")
    def values_held(self, obj: ExtensionSchema) -> str:
        if obj.pk is None:
            return "-"
        count = extensions.holder_count(obj.urn, obj.resource_type)
        url = reverse("admin:directory_extensionschema_values", args=[obj.pk])
        return format_html(
            '{} {}(s) hold values of this schema. <a href="{}">Download them as JSON</a>',
            count,
            obj.resource_type,
            url,
        )

    def get_urls(self) -> list[URLPattern]:
        values = path(
            "<path:object_id>/values/",
            self.admin_site.admin_view(self.values_view),
            name="directory_extensionschema_values",
        )
        return [values, *super().get_urls()]

    def values_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The values users or groups hold now, as the export a removal would keep."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        schema = get_object_or_404(ExtensionSchema, pk=object_id)
        held = extensions.holders(schema.urn, schema.resource_type)
        body = {
            "schema": schema.urn,
            f"{schema.resource_type}s": {pk: values for pk, (_, values) in held.items()},
        }
        return _json_download(body, f"{schema.name or 'extension'}-values.json")

    def save_model(
        self, request: HttpRequest, obj: ExtensionSchema, form: forms.ModelForm, change: bool
    ) -> None:
        # Written in save_related, with the attributes, in one service call.
        pass

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        actor = operator(request)
        formset = next(fs for fs in formsets if isinstance(fs, ExtensionAttributeFormSet))
        for fs in formsets:
            fs.new_objects, fs.changed_objects, fs.deleted_objects = [], [], []
        attributes = [attribute_form.spec() for attribute_form in formset.kept_forms()]
        data = form.cleaned_data
        if change:
            schema, export = services.extension_schema_update(
                actor=actor,
                schema_id=form.instance.pk,
                attributes=attributes,
                name=data["name"],
                description=data["description"],
                required=data["required"],
            )
        else:
            schema = services.extension_schema_create(
                actor=actor,
                urn=data["urn"],
                name=data["name"],
                resource_type=data["resource_type"],
                description=data["description"],
                required=data["required"],
                attributes=attributes,
            )
            export = None
            form.instance.pk = schema.pk
            form.instance._state.adding = False
        if export is not None:
            self.message_user(request, _export_message(export), messages.WARNING)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: Any = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DirectoryError as exc:
            # A check the form could not make ahead (a racing write): nothing was saved.
            self.message_user(request, f"Nothing was saved: {exc}", messages.ERROR)
            return HttpResponseRedirect(request.path)

    def render_delete_form(self, request: HttpRequest, context: dict[str, Any]) -> TemplateResponse:
        schema: ExtensionSchema = context["object"]
        context["holder_count"] = extensions.holder_count(schema.urn, schema.resource_type)
        context["holder_kind"] = schema.resource_type
        context["values_url"] = reverse("admin:directory_extensionschema_values", args=[schema.pk])
        return super().render_delete_form(request, context)

    def delete_model(self, request: HttpRequest, obj: ExtensionSchema) -> None:
        export = services.extension_schema_delete(actor=operator(request), schema_id=obj.pk)
        request.extension_export = export  # type: ignore[attr-defined]

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        export = getattr(request, "extension_export", None)
        if export is None:
            return super().response_delete(request, obj_display, obj_id)
        self.message_user(request, _export_message(export), messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:directory_extensiondataexport_change", args=[export.pk]))


def _export_message(export: ExtensionDataExport) -> str:
    held = export.user_count or export.group_count
    kind = "user" if export.user_count else "group"
    return (
        f"The values {held} {kind}(s) held were removed; a copy is kept as extension data export {export.pk}."
    )


def _json_download(body: Any, filename: str) -> HttpResponse:
    response = HttpResponse(json.dumps(body, indent=2, sort_keys=True), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin.register(ExtensionDataExport)
class ExtensionDataExportAdmin(admin.ModelAdmin):
    """Copies of the values stripped when a schema or attribute was removed; read-only, downloadable."""

    list_display = ["created", "urn", "removed", "user_count", "group_count", "actor_name", "download"]
    search_fields = ["urn"]
    ordering = ["-created", "-id"]
    fields = ["created", "actor_name", "urn", "removed", "user_count", "group_count", "download"]
    readonly_fields = fields

    @admin.display(description="removed")
    def removed(self, obj: ExtensionDataExport) -> str:
        return ", ".join(obj.attributes) if obj.attributes else "the whole schema"

    @admin.display(description="export")
    def download(self, obj: ExtensionDataExport) -> str:
        url = reverse("admin:directory_extensiondataexport_download", args=[obj.pk])
        return format_html('<a href="{}">Download JSON</a>', url)

    def get_urls(self) -> list[URLPattern]:
        download = path(
            "<path:object_id>/download/",
            self.admin_site.admin_view(self.download_view),
            name="directory_extensiondataexport_download",
        )
        return [download, *super().get_urls()]

    def download_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        export = get_object_or_404(ExtensionDataExport, pk=object_id)
        return _json_download(export.data, f"extension-export-{export.pk}.json")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
