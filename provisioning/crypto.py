"""Encryption at rest for target credentials: Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`.

The Fernet keys are derived with HKDF-SHA256 from PROVISIONING_SECRET_KEY
(default: SECRET_KEY), so a database dump alone does not reveal a target's
token. Several secrets rotate: the first encrypts, every one decrypts.
"""

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from provisioning.conf import provisioning_setting

REDACTED = "[redacted]"


class CredentialsUnreadable(Exception):
    """The stored credentials were encrypted under a key this process does not have."""


def _derive(secret: str) -> bytes:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"directory.provisioning", info=b"target-credentials"
    ).derive(secret.encode())
    return base64.urlsafe_b64encode(key)


@lru_cache(maxsize=4)
def _fernet(secrets: tuple[str, ...]) -> MultiFernet:
    if not secrets:
        raise ImproperlyConfigured("No key to encrypt target credentials with (PROVISIONING_SECRET_KEY)")
    return MultiFernet([Fernet(_derive(secret)) for secret in secrets])


def _secrets() -> tuple[str, ...]:
    configured = tuple(key for key in provisioning_setting("SECRET_KEYS") if key)
    return configured or (settings.SECRET_KEY,)


def encrypt(plaintext: str) -> str:
    return _fernet(_secrets()).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(_secrets()).decrypt(token.encode()).decode()
    except InvalidToken:
        raise CredentialsUnreadable(
            "Target credentials cannot be decrypted: was PROVISIONING_SECRET_KEY changed without keeping "
            "the old key after the new one?"
        ) from None
