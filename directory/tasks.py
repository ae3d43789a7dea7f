"""Housekeeping tasks for the directory. Thin: each calls one service."""

from celery import shared_task

from directory import services
from directory.conf import directory_setting


@shared_task
def purge_processed_change_events(older_than_days: int | None = None) -> int:
    """Keep the outbox table small: drop events provisioning finished with long ago."""
    days = (
        older_than_days if older_than_days is not None else directory_setting("CHANGE_EVENT_RETENTION_DAYS")
    )
    return services.change_events_purge(older_than_days=days)
