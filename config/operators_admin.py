"""Operator accounts and roles in the admin (Django's own pages), with every change in the audit trail,
and the throttled sign-in form. Imported by config.urls, after the admin has registered auth's models."""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User

from config.admin_login import ThrottledAdminAuthenticationForm
from directory.admin_audit import OperatorAuditMixin


class OperatorAdmin(OperatorAuditMixin, UserAdmin):  # type: ignore[type-arg]
    pass


class RoleAdmin(OperatorAuditMixin, GroupAdmin):
    pass


admin.site.unregister(User)
admin.site.unregister(Group)
admin.site.register(User, OperatorAdmin)
admin.site.register(Group, RoleAdmin)
admin.site.login_form = ThrottledAdminAuthenticationForm
