"""`manage.py sync_roles`: create the operator role groups and reset their permissions to the definition."""

from typing import Any

from django.core.management.base import BaseCommand

from directory.roles import ROLES, roles_sync_installed


class Command(BaseCommand):
    help = "Create the operator roles (administrators, helpdesk, auditors) and set their permissions."

    def handle(self, *args: Any, **options: Any) -> None:
        counts = roles_sync_installed()
        for role in ROLES:
            self.stdout.write(f"{role.name}: {counts[role.name]} permissions ({role.description})")
