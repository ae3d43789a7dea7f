"""Operator roles: built-in groups of Django permissions, kept equal to their definition here.

A role is a Django auth group; an operator (a staff account) gets a role by being put in its group.
The groups are created by a data migration and brought back to exactly these permissions after every
`migrate` (the post_migrate hook in directory.apps) and by `manage.py sync_roles`, so a permission
added by a new model, or one granted to a role by hand, never drifts from what is documented.

Permissions are named by strings: the roles cover scim_api and provisioning models without this
module importing either app.
"""

from collections.abc import Iterable
from dataclasses import dataclass

ADMINISTRATORS = "administrators"
HELPDESK = "helpdesk"
AUDITORS = "auditors"

# Users, groups and memberships, and the values and inline rows their admin pages edit. Not SCIM
# clients, targets, inbound sources, extension schemas or anything of provisioning.
HELPDESK_MODELS = ("user", "uservalue", "group", "membership")
# Read-only: the audit trail of the people they look after.
HELPDESK_VIEW_ONLY = ("auditentry",)
ACTIONS = ("view", "add", "change", "delete")


@dataclass(frozen=True)
class Role:
    name: str
    description: str

    def grants(self, app_label: str, codename: str) -> bool:
        """Whether this role holds the permission `app_label.codename`."""
        if self.name == ADMINISTRATORS:
            return True
        if self.name == AUDITORS:
            return codename.startswith("view_")
        if self.name == HELPDESK:
            if app_label != "directory":
                return False
            action, _, model = codename.partition("_")
            return (model in HELPDESK_MODELS and action in ACTIONS) or (
                model in HELPDESK_VIEW_ONLY and action == "view"
            )
        return False


ROLES = (
    Role(ADMINISTRATORS, "everything, operators and roles included"),
    Role(HELPDESK, "users, groups and memberships (and their audit trail, read-only)"),
    Role(AUDITORS, "read-only access to everything, the audit trail and provisioning logs included"),
)


def role_permission_ids(role: Role, permissions: Iterable[tuple[int, str, str]]) -> set[int]:
    """The ids among (id, app_label, codename) rows that `role` holds."""
    return {pk for pk, app_label, codename in permissions if role.grants(app_label, codename)}


def roles_sync(*, group_model: type, permission_model: type) -> dict[str, int]:
    """Create the role groups if missing and set each one's permissions to exactly its definition.

    Takes the models so the data migration can pass its historical ones. Returns the number of
    permissions per role.
    """
    rows = list(permission_model.objects.values_list("pk", "content_type__app_label", "codename"))
    counts: dict[str, int] = {}
    for role in ROLES:
        group, _ = group_model.objects.get_or_create(name=role.name)
        wanted = role_permission_ids(role, rows)
        group.permissions.set(wanted)
        counts[role.name] = len(wanted)
    return counts


def roles_sync_installed() -> dict[str, int]:
    """roles_sync over every installed model, creating the permissions migrate has not created yet.

    migrate creates permissions app by app after migrating, so when directory's post_migrate hook
    runs, the apps after it in INSTALLED_APPS may not have theirs yet.
    """
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission

    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0)
    return roles_sync(group_model=Group, permission_model=Permission)
