"""Celery tasks for provisioning. Thin: each takes ids or nothing, and calls one service."""

from celery import shared_task

from provisioning import relay, services
from provisioning.conf import provisioning_setting


@shared_task(acks_late=True, ignore_result=True)
def relay_change_events() -> int:
    """Turn committed change events into deliveries; runs every second from beat.

    A full batch means more are waiting: run again at once rather than a beat later.
    """
    result = relay.relay_change_events()
    if result.events >= provisioning_setting("RELAY_BATCH_SIZE"):
        relay_change_events.delay()
    return result.events


@shared_task(acks_late=True, ignore_result=True)
def deliver_batch(target_id: int, delivery_ids: list[int]) -> None:
    """Push a batch of one target's deliveries. Safe to run twice: the leases let each through once."""
    services.deliveries_send(delivery_ids=delivery_ids, target_id=target_id)


@shared_task(acks_late=True, ignore_result=True)
def deliver(delivery_id: int) -> None:
    """Push one delivery's object (tasks sent before batches existed, and tests that send one)."""
    services.delivery_send(delivery_id=delivery_id)


@shared_task(acks_late=True, ignore_result=True)
def sweep_deliveries() -> int:
    return services.deliveries_sweep()


@shared_task(ignore_result=True)
def purge_provisioning_log(older_than_days: int | None = None) -> int:
    days = older_than_days if older_than_days is not None else provisioning_setting("LOG_RETENTION_DAYS")
    return services.provisioning_log_purge(older_than_days=days)
