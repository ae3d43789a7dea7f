"""Celery tasks for provisioning. Thin: each takes ids or nothing, and calls one service."""

import uuid

from celery import shared_task

from directory.locks import alone
from provisioning import reconcile, relay, sampling, services, sync_runs
from provisioning.conf import provisioning_setting
from provisioning.models import ReconciliationRun, SyncRun


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
@alone  # two sweeps at once would send the same deliveries twice
def sweep_deliveries() -> int:
    return services.deliveries_sweep()


@shared_task(ignore_result=True)
def purge_provisioning_log(older_than_days: int | None = None) -> int:
    days = older_than_days if older_than_days is not None else provisioning_setting("LOG_RETENTION_DAYS")
    return services.provisioning_log_purge(older_than_days=days)


# --- full sync and reconciliation runs ----------------------------------------------------------


@shared_task(acks_late=True, ignore_result=True)
def full_sync_continue(run_id: str) -> None:
    """Queue a full sync's next pages for a while, then hand the rest to a fresh task (short tasks)."""
    run = sync_runs.sync_run_advance(
        run_id=uuid.UUID(run_id), seconds=provisioning_setting("FULL_SYNC_TASK_SECONDS")
    )
    if run.state == SyncRun.State.QUEUING:
        full_sync_continue.delay(run_id)


@shared_task(acks_late=True, ignore_result=True)
def reconcile_target(run_id: str) -> None:
    run = ReconciliationRun.objects.filter(pk=run_id, state=ReconciliationRun.State.RUNNING).first()
    if run is not None:
        reconcile.reconciliation_run(run=run)


@shared_task(ignore_result=True)
@alone  # two ticks at once would resume the same stale full sync twice
def provisioning_runs_tick() -> None:
    """Every minute: resume full syncs whose process stopped, count and close the delivering ones,
    and start the reconciliations that are due."""
    for run_id in sync_runs.sync_runs_resume_stale():
        full_sync_continue.delay(str(run_id))
    sync_runs.sync_runs_refresh_delivering()
    reconcile.reconciliations_fail_stale()
    for target in reconcile.reconciliations_due():
        try:
            run = reconcile.reconciliation_start(target=target, trigger="schedule")
        except reconcile.ReconciliationBusy:
            continue
        reconcile_target.delay(str(run.pk))


@shared_task(ignore_result=True)
def purge_provisioning_runs(older_than_days: int | None = None) -> int:
    days = older_than_days if older_than_days is not None else provisioning_setting("RUN_RETENTION_DAYS")
    return reconcile.runs_purge(older_than_days=days)


@shared_task(ignore_result=True)
def sample_targets() -> int:
    """Every minute: each target's queue depth for the dashboard, and the purge of old samples."""
    sampling.target_samples_purge()
    return sampling.target_samples_record()
