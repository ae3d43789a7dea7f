"""`create_scim_token NAME [--scope read|write] [--expires DAYS]`: the token is the last line of output."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scim_api.models import ScimClient
from scim_api.services import scim_client_create, scim_client_rotate


class Command(BaseCommand):
    help = "Create a SCIM client (or issue a new token for an existing one) and print its bearer token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A name for the client, e.g. 'Microsoft Entra ID'.")
        parser.add_argument("--scope", choices=ScimClient.Scope.values, default=ScimClient.Scope.WRITE)
        parser.add_argument("--expires", type=int, metavar="DAYS", help="Days until the token expires.")
        parser.add_argument(
            "--rotate", action="store_true", help="Issue a new token for an existing client of that name."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        if options["expires"] is not None and options["expires"] < 1:
            raise CommandError("--expires takes a positive number of days")
        existing = ScimClient.objects.filter(name=name).first()
        if existing is not None and not options["rotate"]:
            raise CommandError(f"A SCIM client named {name!r} exists; pass --rotate to issue it a new token.")
        if existing is not None:
            client, token = scim_client_rotate(client_id=existing.pk)
        else:
            client, token = scim_client_create(
                name=name, scope=options["scope"], expires_days=options["expires"]
            )
        expiry = f"expires {client.expires:%Y-%m-%d %H:%M} UTC" if client.expires else "never expires"
        self.stderr.write(f"SCIM client {client.name!r} ({client.scope}), token {expiry}. Shown once:")
        self.stdout.write(token)
