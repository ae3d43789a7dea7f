"""Who may call the SCIM API: clients with bearer tokens, and how often their dialect needed rewriting."""

import hashlib
import secrets
from datetime import timedelta

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.timezone import now

TOKEN_PREFIX = "scim_"
ACCESS_TOKEN_PREFIX = "scimat_"
# The first characters after the prefix identify the client (indexed, not
# secret); the whole token is compared in constant time against its hash.
LOOKUP_LENGTH = 8


def hash_token(token: str) -> str:
    # Tokens are 256 random bits, so one SHA-256 suffices: a slow password
    # hash would only add latency to every request without adding security.
    return hashlib.sha256(token.encode()).hexdigest()


class ScimClient(models.Model):
    """A SCIM client (Entra's provisioning service, Okta, an HR system, a script) and its credential."""

    class Scope(models.TextChoices):
        READ = "read", "read only"
        WRITE = "write", "read and write"

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.WRITE)
    token_lookup = models.CharField(max_length=LOOKUP_LENGTH, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    expires = models.DateTimeField(
        null=True, blank=True, help_text="Leave empty for a token that never expires."
    )
    revoked = models.BooleanField(default=False)
    requests_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests this client may send per minute before it gets 429; empty for the server "
        "default (SCIM_RATE_LIMIT_PER_MINUTE), 0 for no limit.",
    )
    # /Me (RFC 7644 §3.11) answers with this user; clients not bound to a user get 501 there.
    user = models.ForeignKey(
        "directory.User",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="scim_clients",
        help_text="The directory user this client acts as, for /Me. Leave empty for provisioning clients.",
    )
    created = models.DateTimeField(default=now, editable=False)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "SCIM client"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    # DRF treats the authenticated client as request.user.
    is_authenticated = True
    is_anonymous = False

    @property
    def can_write(self) -> bool:
        return self.scope == self.Scope.WRITE

    def is_usable(self) -> bool:
        return not self.revoked and (self.expires is None or self.expires > now())

    def issue_token(self) -> str:
        """Set a new random token (invalidating the old one) and return it: the only time it is readable."""
        secret = secrets.token_urlsafe(32)
        token = f"{TOKEN_PREFIX}{secret}"
        self.token_lookup = secret[:LOOKUP_LENGTH]
        self.token_hash = hash_token(token)
        return token

    @staticmethod
    def lookup_of(token: str) -> str | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) < len(TOKEN_PREFIX) + LOOKUP_LENGTH:
            return None
        return token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + LOOKUP_LENGTH]

    def expires_in(self, days: int | None) -> None:
        self.expires = now() + timedelta(days=days) if days else None


class OAuthCredential(models.Model):
    """OAuth 2.0 client credentials (RFC 6749 §4.4) for a SCIM client that wants short-lived tokens.

    Microsoft's gallery validator and some HR systems exchange a client id and
    secret at /oauth/token for a bearer token that lives 60 to 360 minutes.
    """

    scim_client = models.OneToOneField(ScimClient, on_delete=models.CASCADE, related_name="oauth")
    # The OAuth "client_id" (RFC 6749 §2.2): public, sent with the secret.
    public_id = models.CharField("client_id", max_length=64, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    token_lifetime_minutes = models.PositiveSmallIntegerField(
        default=60,
        validators=[MinValueValidator(60), MaxValueValidator(360)],
        help_text="How long an issued access token lives: 60 to 360 minutes.",
    )
    created = models.DateTimeField(default=now, editable=False)

    class Meta:
        verbose_name = "OAuth client credential"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(token_lifetime_minutes__gte=60, token_lifetime_minutes__lte=360),
                name="scim_api_oauth_lifetime_range",
            )
        ]

    def __str__(self) -> str:
        return f"{self.scim_client} ({self.public_id})"

    def issue_secret(self) -> str:
        """Set a new client id and secret; returns the secret (the only time it is readable)."""
        self.public_id = f"scimc_{secrets.token_urlsafe(12)}"
        secret = secrets.token_urlsafe(32)
        self.secret_hash = hash_token(secret)
        return secret


class AccessToken(models.Model):
    """A bearer token issued at /oauth/token; stored as its hash, valid until `expires`."""

    client = models.ForeignKey(ScimClient, on_delete=models.CASCADE, related_name="access_tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    scope = models.CharField(max_length=8, choices=ScimClient.Scope.choices)
    expires = models.DateTimeField()
    created = models.DateTimeField(default=now)

    class Meta:
        indexes = [models.Index(fields=["expires"], name="scim_api_accesstoken_expires")]

    def __str__(self) -> str:
        return f"{self.client} until {self.expires:%Y-%m-%d %H:%M}"


class DialectRewrite(models.Model):
    """How many requests of one client needed one named dialect rewrite (see scim_api.dialects)."""

    client = models.ForeignKey(ScimClient, on_delete=models.CASCADE, related_name="dialect_rewrites")
    name = models.CharField(max_length=64)
    count = models.PositiveBigIntegerField(default=0)
    first_seen = models.DateTimeField(default=now)
    last_seen = models.DateTimeField(default=now)

    class Meta:
        verbose_name = "dialect rewrite"
        ordering = ["client", "name"]
        constraints = [
            models.UniqueConstraint(fields=["client", "name"], name="scim_api_dialectrewrite_unique")
        ]

    def __str__(self) -> str:
        return f"{self.client}: {self.name} × {self.count}"


# Inbound provisioning's models live in their own subpackage; importing them here registers them
# with this app (Django looks for an app's models in its `models` module).
from scim_api.inbound.models import (  # noqa: E402
    HeldInboundRecord,
    InboundJob,
    InboundRecord,
    InboundScheduledAction,
    InboundSource,
    InboundUpload,
)

__all__ = [
    "AccessToken",
    "DialectRewrite",
    "HeldInboundRecord",
    "InboundJob",
    "InboundRecord",
    "InboundScheduledAction",
    "InboundSource",
    "InboundUpload",
    "OAuthCredential",
    "ScimClient",
]
