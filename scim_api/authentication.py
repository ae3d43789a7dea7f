"""Bearer-token authentication and scope checks for SCIM clients."""

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.utils.timezone import now
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from scim_api.conf import scim_setting
from scim_api.exceptions import WWW_AUTHENTICATE
from scim_api.models import ACCESS_TOKEN_PREFIX, AccessToken, ScimClient, hash_token
from scim_api.token_cache import recent_clients


@dataclass(frozen=True)
class Grant:
    """What the presented token allows: request.auth for SCIM views."""

    scope: str
    expires: datetime | None = None
    # The token of an inbound source that was not granted the SCIM API: its inbound URLs only.
    inbound_only: bool = False

    @property
    def can_write(self) -> bool:
        return self.scope == ScimClient.Scope.WRITE


class ScimTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer …`: a client's long-lived token (scim_…) or an OAuth access token (scimat_…).

    Either way one indexed lookup; the long-lived token is then compared in constant time.
    """

    def authenticate(self, request: Request) -> tuple[ScimClient, Grant] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, token = header.partition(" ")
        if not header:
            return None
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <token>'.")
        token = token.strip()
        digest = hash_token(token)
        cached = recent_clients.get(digest)
        client, grant = cached if cached is not None else self._look_up(token, digest)
        if cached is None:
            recent_clients.put(digest, (client, grant))
        if client.revoked:
            raise exceptions.AuthenticationFailed("The bearer token has been revoked.")
        if not client.is_usable() or (grant.expires is not None and grant.expires <= now()):
            raise exceptions.AuthenticationFailed("The bearer token has expired.")
        self._touch(client)
        return client, grant

    @staticmethod
    def _look_up(token: str, digest: str) -> tuple[ScimClient, Grant]:
        if token.startswith(ACCESS_TOKEN_PREFIX):
            # 256 random bits, looked up by their hash: nothing to learn from timing.
            access = (
                AccessToken.objects.select_related("client__inbound_source").filter(token_hash=digest).first()
            )
            if access is None:
                raise exceptions.AuthenticationFailed("The bearer token is not valid.")
            return access.client, Grant(
                scope=access.scope, expires=access.expires, inbound_only=_inbound_only(access.client)
            )
        lookup = ScimClient.lookup_of(token)
        client = (
            ScimClient.objects.select_related("inbound_source").filter(token_lookup=lookup).first()
            if lookup
            else None
        )
        # Compare even when no client matched, so timing does not reveal which lookups exist.
        expected = client.token_hash if client else hash_token("")
        if not hmac.compare_digest(digest, expected) or client is None:
            raise exceptions.AuthenticationFailed("The bearer token is not valid.")
        return client, Grant(scope=client.scope, inbound_only=_inbound_only(client))

    def authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE

    @staticmethod
    def _touch(client: ScimClient) -> None:
        # One UPDATE a minute per client at most, not one per request.
        current = now()
        if client.last_used is None or current - client.last_used > timedelta(
            seconds=scim_setting("LAST_USED_RESOLUTION")
        ):
            ScimClient.objects.filter(pk=client.pk).update(last_used=current)
            client.last_used = current


def _inbound_only(client: ScimClient) -> bool:
    """Whether `client` is an inbound source's and the operator did not grant it the SCIM API."""
    try:
        source = client.inbound_source  # type: ignore[attr-defined]
    except ObjectDoesNotExist:
        return False
    return not source.scim_access


INBOUND_ONLY = (
    "This token is an inbound source's: it may upload to its source and read its jobs only "
    "(an operator can grant it the SCIM API: Inbound sources, SCIM API access)."
)


class ScimScopePermission(permissions.BasePermission):
    """Reads need any valid token; writes need the write scope; an inbound source's token needs a grant."""

    message = "This token has the read scope only."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not isinstance(request.user, ScimClient) or not isinstance(request.auth, Grant):
            return False
        if request.auth.inbound_only:
            self.message = INBOUND_ONLY
            return False
        # A search is a read sent as POST (RFC 7644 §3.4.3).
        searching = getattr(view, "read_only", False) or getattr(view, "action", None) == "search_request"
        return request.method in permissions.SAFE_METHODS or searching or request.auth.can_write
