"""Celery tasks for inbound provisioning. Thin: each takes an id or nothing and calls one service."""

from celery import shared_task
from django.db import OperationalError

from directory.locks import alone
from scim_api.inbound import services


@shared_task(
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=8,
)
def process_inbound_jobs(job_id: str) -> int:
    """Apply the unfinished jobs of this job's source, oldest first. Safe to run twice: a lease per job."""
    return services.jobs_drain(job_id=job_id)


@shared_task(acks_late=True, ignore_result=True)
@alone  # two ticks at once would send the same stale jobs twice
def inbound_tick() -> dict[str, int]:
    """Every minute (beat): effective-dated enables and disables that are due, and lost jobs sent again."""
    return {
        "scheduled_actions": services.scheduled_actions_apply(),
        "jobs_resent": services.jobs_resend_stale(),
    }


@shared_task(ignore_result=True)
def purge_inbound_jobs() -> int:
    return services.jobs_purge()
