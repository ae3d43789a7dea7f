"""`add_target NAME --url URL --bearer-token TOKEN [--all-users | --group NAME]`: a target, ready to sync."""

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from directory.models import Group
from provisioning.configuration import mappings_seed_default
from provisioning.models import Target, VendorProfile
from provisioning.services import target_create


class Command(BaseCommand):
    help = "Create an enabled downstream SCIM target with the default mapping and queue its initial sync."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--url", required=True, help="The target's SCIM base URL.")
        parser.add_argument("--bearer-token", required=True, help="The token the target expects.")
        scope = parser.add_mutually_exclusive_group()
        scope.add_argument("--all-users", action="store_true", help="Provision every user and group.")
        scope.add_argument(
            "--group", action="append", default=[], metavar="NAME", help="Assign a group (repeatable)."
        )
        parser.add_argument(
            "--profile", default="RFC 7644 (strict)", help="Vendor profile name (default: %(default)s)."
        )
        parser.add_argument(
            "--deletion-policy", choices=Target.DeletionPolicy.values, default=Target.DeletionPolicy.DISABLE
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if Target.objects.filter(name=options["name"]).exists():
            raise CommandError(f"A target named {options['name']!r} exists already")
        try:
            profile = VendorProfile.objects.get(name=options["profile"])
        except VendorProfile.DoesNotExist:
            names = ", ".join(VendorProfile.objects.values_list("name", flat=True))
            raise CommandError(f"No vendor profile {options['profile']!r}; there are: {names}") from None
        group_ids = []
        for name in options["group"]:
            group = Group.objects.filter(display_name__iexact=name).first()
            if group is None:
                raise CommandError(f"No group named {name!r}")
            group_ids.append(group.pk)
        try:
            # The target starts with rows equal to the default mapping, for operators to edit.
            with transaction.atomic():
                target = target_create(
                    name=options["name"],
                    base_url=options["url"],
                    credentials={"token": options["bearer_token"]},
                    profile=profile,
                    scope=Target.Scope.ALL if options["all_users"] else Target.Scope.ASSIGNED,
                    group_ids=group_ids,
                    deletion_policy=options["deletion_policy"],
                )
                mappings_seed_default(target=target)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        scope = "all users and groups" if options["all_users"] else f"{len(group_ids)} assigned group(s)"
        self.stdout.write(f"Target {target.name!r} (id {target.pk}) created: {scope}; initial sync queued.")
