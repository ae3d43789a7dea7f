"""END TO END: an HR system's uploads over HTTP, applied by a real Celery worker (with beat) on Redis.

The directory is pytest-django's live server; a `celery worker --beat` process
runs on Redis and on this run's database, on a queue of its own, with the
inbound tick every second. The test only speaks HTTP to the upload and job
endpoints and reads the directory's rows; it never applies a job itself.
"""

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.utils import timezone

from directory.models import ChangeEvent, User
from scim_api.inbound import services
from scim_api.inbound.models import InboundJob, InboundScheduledAction
from tests.processes import Processes
from tests.scim_api.inbound.conftest import bulk, worker_record

pytestmark = [pytest.mark.celery_worker, pytest.mark.postgres, pytest.mark.redis]
DEADLINE = 45.0


@pytest.fixture
def worker(processes: Processes) -> None:
    """`celery worker --beat` on this run's database, the inbound tick every second; what this process
    queues goes to it."""
    processes.worker(beat=True, concurrency=2, loglevel="INFO", SCIM_INBOUND_TICK_INTERVAL="1")


def _until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class HR:
    """The HR system: uploads over HTTP and follows each job's Location until it is finished."""

    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=f"{base_url}/scim/v2/",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
            timeout=10,
        )

    def upload(self, *records: dict[str, Any]) -> dict[str, Any]:
        reply = self.http.post("bulkUpload", json=bulk(*records))
        assert reply.status_code == 202, reply.text
        location = reply.headers["Location"]

        def finished() -> dict[str, Any] | None:
            job = self.http.get(location).json()
            return job if job["status"] not in ("queued", "running") else None

        return _until(finished, f"job {location}")  # type: ignore[no-any-return]


def _outcomes(job: dict[str, Any]) -> list[str]:
    return [operation["outcome"] for operation in job["operations"]]


def test_an_hr_feed_applied_by_a_real_worker(worker, live_server):
    source, token = services.source_create(
        name="hr",
        hire_date_source="urn:contoso:employee:HireDate",
        guard_job_max_count=2,
    )
    hr = HR(live_server.url, token)
    future = worker_record("4")
    future["urn:contoso:employee"] = {"HireDate": (timezone.now() + timedelta(days=30)).date().isoformat()}
    bad = worker_record("5", title=7)

    # Joiners, reports before their manager, a future joiner and a bad record in one request.
    joiners = hr.upload(
        worker_record("2", manager="1"), worker_record("3", manager="2"), worker_record("1"), future, bad
    )

    users = {user.employee_number: user for user in User.objects.all()}
    assert joiners["status"] == "completedWithErrors"
    assert _outcomes(joiners) == ["created", "created", "created", "created", "failed"]
    assert joiners["operations"][4]["error"]["detail"] == "title must be a string, got 7"
    assert users["2"].manager_id == users["1"].pk
    assert users["3"].manager_id == users["2"].pk
    assert users["4"].active is False
    assert "5" not in users

    # The same records again change nothing; then a mover, a leaver and a rehire-to-be.
    assert _outcomes(hr.upload(worker_record("2", manager="1"), worker_record("1"))) == [
        "unchanged",
        "unchanged",
    ]
    moves = hr.upload(worker_record("3", manager="1", department="Sales"), worker_record("2", active=False))
    assert _outcomes(moves) == ["updated", "disabled"]
    rehire = hr.upload(worker_record("2", active=True))
    assert _outcomes(rehire) == ["enabled"]

    # Three leavers at once: over the guard's two per job, so all are held.
    held = hr.upload(*[worker_record(key, active=False) for key in ("1", "2", "3")])
    assert _outcomes(held) == ["held", "held", "held"]
    assert User.objects.filter(active=False).count() == 1  # only the future joiner

    # The future joiner's hire date comes: beat's inbound tick (every second here) enables them.
    InboundScheduledAction.objects.filter(user=users["4"]).update(due=timezone.now() - timedelta(seconds=1))
    _until(lambda: User.objects.get(pk=users["4"].pk).active, "the scheduled enable")

    kinds = list(
        ChangeEvent.objects.filter(object_id=users["2"].pk).order_by("id").values_list("kind", flat=True)
    )
    assert kinds == ["created", "deactivated", "activated"]
    assert set(InboundJob.objects.values_list("status", flat=True)) == {"completed", "completedWithErrors"}
    assert all(job.attempts == 1 for job in InboundJob.objects.all())
