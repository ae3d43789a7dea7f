"""Sending job ids to the workers, always after the rows they name have committed."""

import logging
import uuid

from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)

PROCESS_TASK = "scim_api.inbound.tasks.process_inbound_jobs"


def send(job_id: uuid.UUID) -> None:
    """Send the task by name (services need not import the task module).

    A broker outage loses nothing: the job is committed as queued, and the
    scheduler's tick sends it again once the broker is back.
    """
    try:
        current_app.send_task(PROCESS_TASK, args=(str(job_id),))
    except OperationalError as exc:
        logger.warning("broker unavailable, inbound job %s left to the scheduler: %s", job_id, exc)


def send_on_commit(job_id: uuid.UUID) -> None:
    """A worker must never look for a job that is not yet visible."""
    transaction.on_commit(lambda: send(job_id), robust=True)
