"""Housekeeping for SCIM credentials. Thin: each calls one service."""

from celery import shared_task

from scim_api import services


@shared_task
def purge_expired_access_tokens() -> int:
    """Expired OAuth access tokens authenticate nothing; drop their rows."""
    return services.access_tokens_purge()
