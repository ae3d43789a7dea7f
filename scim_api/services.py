"""Writes to the SCIM API's own records: client credentials and dialect counters."""

import uuid
from collections.abc import Iterable

from django.db import transaction
from django.db.models import F
from django.utils.timezone import now

from scim_api.models import DialectRewrite, ScimClient
from scim_api.token_cache import recent_clients


@transaction.atomic
def scim_client_create(
    *,
    name: str,
    scope: str = ScimClient.Scope.WRITE,
    expires_days: int | None = None,
    description: str = "",
    user_id: uuid.UUID | None = None,
) -> tuple[ScimClient, str]:
    """Create a client and return it with its token, which is shown this once and stored only hashed."""
    client = ScimClient(name=name, scope=scope, description=description, user_id=user_id)
    client.expires_in(expires_days)
    token = client.issue_token()
    client.save()
    return client, token


@transaction.atomic
def scim_client_rotate(*, client_id: int) -> tuple[ScimClient, str]:
    """Replace a client's token; the old one stops working at once."""
    client = ScimClient.objects.select_for_update().get(pk=client_id)
    token = client.issue_token()
    client.revoked = False
    client.save(update_fields=["token_lookup", "token_hash", "revoked"])
    recent_clients.clear()
    return client, token


def scim_client_revoke(*, client_ids: Iterable[int]) -> int:
    """Revoke tokens; returns how many clients were revoked."""
    count = ScimClient.objects.filter(pk__in=list(client_ids), revoked=False).update(revoked=True)
    recent_clients.clear()
    return count


def dialect_rewrites_record(*, client: ScimClient, names: Iterable[str]) -> None:
    """Count one firing of each named rewrite for this client (one statement per name)."""
    current = now()
    for name in dict.fromkeys(names):
        updated = DialectRewrite.objects.filter(client=client, name=name).update(
            count=F("count") + 1, last_seen=current
        )
        if not updated:
            _, created = DialectRewrite.objects.get_or_create(
                client=client, name=name, defaults={"count": 1, "first_seen": current, "last_seen": current}
            )
            if not created:
                DialectRewrite.objects.filter(client=client, name=name).update(
                    count=F("count") + 1, last_seen=current
                )
