"""Writes to the SCIM API's own records: client credentials and dialect counters."""

import hmac
import secrets
import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils.timezone import now

from observability import metrics
from scim_api.models import (
    ACCESS_TOKEN_PREFIX,
    AccessToken,
    DialectRewrite,
    OAuthCredential,
    ScimClient,
    hash_token,
)
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
    # A new credential ends every old one: issued access tokens and the OAuth secret too, so
    # "revoke, then rotate" after a leak brings nothing stolen back.
    AccessToken.objects.filter(client=client).delete()
    OAuthCredential.objects.filter(scim_client=client).delete()
    recent_clients.clear()
    return client, token


@transaction.atomic
def scim_client_revoke(*, client_ids: Iterable[int]) -> int:
    """Revoke clients: their token and every OAuth access token they hold; returns how many."""
    ids = list(client_ids)
    count = ScimClient.objects.filter(pk__in=ids, revoked=False).update(revoked=True)
    AccessToken.objects.filter(client_id__in=ids).delete()
    recent_clients.clear()
    return count


def dialect_rewrites_record(*, client: ScimClient, names: Iterable[str]) -> None:
    """Count one firing of each named rewrite for this client (one statement per name)."""
    current = now()
    names = list(dict.fromkeys(names))
    metrics.dialect_rewrites_count(names)
    for name in names:
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


@transaction.atomic
def oauth_credential_issue(*, client_id: int, lifetime_minutes: int = 60) -> tuple[OAuthCredential, str]:
    """Give a SCIM client an OAuth client id and a new secret (replacing any old one); returns the secret."""
    client = ScimClient.objects.select_for_update().get(pk=client_id)
    credential = OAuthCredential.objects.filter(scim_client=client).first() or OAuthCredential(
        scim_client=client
    )
    credential.token_lifetime_minutes = lifetime_minutes
    secret = credential.issue_secret()
    credential.full_clean(exclude=["scim_client"])
    credential.save()
    # Tokens issued with the old secret end with it.
    AccessToken.objects.filter(client=client).delete()
    recent_clients.clear()
    return credential, secret


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: `error` code, description, HTTP status."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def access_token_issue(*, public_id: str, secret: str, scope: str | None) -> tuple[str, AccessToken]:
    """Exchange client credentials for an access token (shown once, stored hashed)."""
    credential = OAuthCredential.objects.select_related("scim_client").filter(public_id=public_id).first()
    expected = credential.secret_hash if credential else hash_token("")
    if not hmac.compare_digest(hash_token(secret), expected) or credential is None:
        raise OAuthError("invalid_client", "Unknown client or wrong secret.", status=401)
    client = credential.scim_client
    if not client.is_usable():
        raise OAuthError("invalid_client", "This client is revoked or expired.", status=401)
    granted = _granted_scope(client, scope)
    token = f"{ACCESS_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
    issued = now()
    access = AccessToken.objects.create(
        client=client,
        token_hash=hash_token(token),
        scope=granted,
        created=issued,
        expires=issued + timedelta(minutes=credential.token_lifetime_minutes),
    )
    return token, access


def _granted_scope(client: ScimClient, requested: str | None) -> str:
    """The client's scope, or the narrower one asked for (RFC 6749 §3.3); never a wider one."""
    if not requested:
        return client.scope
    words = set(requested.split())
    if words - {ScimClient.Scope.READ, ScimClient.Scope.WRITE}:
        raise OAuthError("invalid_scope", "Scopes are 'read' and 'write'.")
    wanted = ScimClient.Scope.WRITE if ScimClient.Scope.WRITE in words else ScimClient.Scope.READ
    if wanted == ScimClient.Scope.WRITE and not client.can_write:
        raise OAuthError("invalid_scope", "This client may only read.")
    return wanted


def access_tokens_purge() -> int:
    """Delete access tokens that expired; returns how many."""
    deleted, _ = AccessToken.objects.filter(expires__lt=now()).delete()
    return deleted
