"""A scheduled reconciliation with real processes: Celery beat starts it, a worker runs it, and the
corrections it queues reach scim2-server on a loopback port through the worker's ordinary deliveries."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from directory import services as directory
from directory.actors import Actor
from provisioning.models import ReconciliationRun, Target, VendorProfile
from tests.processes import Processes
from tests.provisioning.downstream import TOKEN, scim2_server_process
from tests.provisioning.test_end_to_end import PATCH, Scim, eventually

pytestmark = [pytest.mark.celery_worker, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def worker(processes: Processes) -> None:
    """`celery worker --beat` whose beat checks for due reconciliations every second."""
    processes.worker(beat=True, loglevel="INFO", PROVISIONING_RUNS_TICK_INTERVAL="1")


@pytest.fixture
def scim2_url() -> Iterator[str]:
    with scim2_server_process() as url:
        yield url


@pytest.mark.usefixtures("worker")
def test_beat_starts_a_due_reconciliation_and_the_worker_corrects_drift(scim2_url):
    actor = Actor.operator(id=1, name="e2e")
    target = Target(
        name="scim2-server",
        base_url=scim2_url,
        profile=VendorProfile.objects.get(name="RFC 7644 (strict)"),
        scope=Target.Scope.ALL,
        reconcile_interval_minutes=0,  # off while the directory is first provisioned
        reconcile_policy=Target.ReconcilePolicy.CORRECT,
    )
    target.set_credentials({"token": TOKEN})
    target.save()
    downstream = Scim(scim2_url, TOKEN)
    directory.user_create(actor=actor, user_name="ada@example.com", title="Countess")
    ada = eventually(lambda: downstream.one("Users", "userName", "ada@example.com"), "ada provisioned")
    assert ada["title"] == "Countess"

    downstream.call(
        "PATCH",
        f"Users/{ada['id']}",
        {
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "title", "value": "Changed downstream"}],
        },
    )
    # Due now: a one-minute interval on a target created long ago, never reconciled.
    Target.objects.filter(pk=target.pk).update(
        reconcile_interval_minutes=1, created=timezone.now() - timedelta(hours=1)
    )

    eventually(
        lambda: downstream.one("Users", "userName", "ada@example.com")["title"] == "Countess",
        "the drifted title restored by the scheduled reconciliation's correction",
    )
    run = eventually(
        lambda: ReconciliationRun.objects.filter(target=target, state="done").first(), "the run recorded done"
    )
    assert (run.trigger, run.drift, run.corrections, run.remote_users) == ("schedule", 1, 1, 1)
    [finding] = run.findings.all()
    assert finding.details == {
        "title": {"desired": "Countess", "written": "Countess", "remote": "Changed downstream"}
    }
    assert finding.correction == "queued"
