"""Create (or reset) the demo operator that `make run` prints, so a fresh machine can log in at once."""

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from scim_api.models import ScimClient
from scim_api.services import scim_client_create, scim_client_rotate

DEMO_USERNAME = "admin"
DEMO_CLIENT = "demo"


class Command(BaseCommand):
    help = "Ensure the demo operator account exists and print how to log in."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Base URL to print.")

    def handle(self, *args: Any, **options: Any) -> None:
        password = self._password()
        operator_model = get_user_model()
        operator, _ = operator_model.objects.get_or_create(username=DEMO_USERNAME)
        operator.is_staff = operator.is_superuser = operator.is_active = True
        operator.set_password(password)
        operator.save()
        token = self._scim_token()
        base = options["url"].rstrip("/")
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "Identity directory is starting.",
                    f"  Admin:    {base}/admin/",
                    f"  Username: {DEMO_USERNAME}",
                    f"  Password: {password}",
                    f"  SCIM:     {base}/scim/v2/",
                    f"  SCIM token (client {DEMO_CLIENT!r}): {token}",
                    f'  Try:      curl -H "Authorization: Bearer {token}" {base}/scim/v2/Users',
                    "",
                ]
            )
        )

    def _scim_token(self) -> str:
        # The plaintext is kept under var/ (development only) so the printed token
        # survives restarts; the database still holds only its hash.
        path = Path(settings.VAR_DIR) / "demo_scim_token"
        client = ScimClient.objects.filter(name=DEMO_CLIENT).first()
        if path.exists() and client is not None and client.is_usable():
            return path.read_text().strip()
        if client is None:
            _, token = scim_client_create(
                name=DEMO_CLIENT, description="Created by make run for trying the API."
            )
        else:
            _, token = scim_client_rotate(client_id=client.pk)
        path.write_text(token)
        path.chmod(0o600)
        return token

    def _password(self) -> str:
        # Kept under var/ so the printed password stays the same across restarts.
        path = Path(settings.VAR_DIR) / "demo_operator_password"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(12))
            path.chmod(0o600)
        return path.read_text().strip()
