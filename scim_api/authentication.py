"""Bearer-token authentication and scope checks for SCIM clients."""

import hmac
from datetime import timedelta
from typing import Any

from django.utils.timezone import now
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from scim_api.conf import scim_setting
from scim_api.exceptions import WWW_AUTHENTICATE
from scim_api.models import ScimClient, hash_token
from scim_api.token_cache import recent_clients


class ScimTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer scim_…`: one indexed lookup, then a constant-time hash comparison."""

    def authenticate(self, request: Request) -> tuple[ScimClient, str] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, token = header.partition(" ")
        if not header:
            return None
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <token>'.")
        token = token.strip()
        digest = hash_token(token)
        client = recent_clients.get(digest)
        if client is None:
            lookup = ScimClient.lookup_of(token)
            client = ScimClient.objects.filter(token_lookup=lookup).first() if lookup else None
            # Compare even when no client matched, so timing does not reveal which lookups exist.
            expected = client.token_hash if client else hash_token("")
            if not hmac.compare_digest(digest, expected) or client is None:
                raise exceptions.AuthenticationFailed("The bearer token is not valid.")
            recent_clients.put(digest, client)
        if client.revoked:
            raise exceptions.AuthenticationFailed("The bearer token has been revoked.")
        if not client.is_usable():
            raise exceptions.AuthenticationFailed("The bearer token has expired.")
        self._touch(client)
        return client, token

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


class ScimScopePermission(permissions.BasePermission):
    """Reads need any valid token; writes need the write scope."""

    message = "This SCIM client's token has the read scope only."

    def has_permission(self, request: Request, view: Any) -> bool:
        client = request.user
        if not isinstance(client, ScimClient):
            return False
        # A search is a read sent as POST (RFC 7644 §3.4.3).
        searching = getattr(view, "read_only", False) or getattr(view, "action", None) == "search_request"
        return request.method in permissions.SAFE_METHODS or searching or client.can_write
