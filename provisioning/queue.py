"""Sending delivery ids to the workers, always after the rows that they name have committed."""

import logging
from collections.abc import Sequence

from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)

DELIVER_TASK = "provisioning.tasks.deliver"


def send(delivery_ids: Sequence[int], *, countdown: float | None = None) -> None:
    """Send one `deliver` task per id. By name, so services need not import the task module.

    A broker outage loses nothing: the rows are committed, and the sweeper
    sends them again once the broker is back.
    """
    try:
        for delivery_id in delivery_ids:
            current_app.send_task(DELIVER_TASK, args=(delivery_id,), countdown=countdown)
    except OperationalError as exc:
        logger.warning("broker unavailable, %d deliveries left to the sweeper: %s", len(delivery_ids), exc)


def send_on_commit(delivery_ids: Sequence[int], *, countdown: float | None = None) -> None:
    """Send once the current transaction commits: a worker must never look for a row not yet visible."""
    if not delivery_ids:
        return
    ids = list(delivery_ids)

    def send_committed() -> None:
        send(ids, countdown=countdown)

    transaction.on_commit(send_committed, robust=True)
