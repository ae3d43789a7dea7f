"""A real Celery round trip: a task sent through Redis runs in a separate worker process on PostgreSQL."""

from datetime import timedelta

import pytest
from celery.backends.redis import RedisBackend
from celery.result import AsyncResult
from django.utils import timezone

from config.celery import app
from directory.models import ChangeEvent
from directory.tasks import purge_processed_change_events
from tests.processes import Processes

pytestmark = [pytest.mark.celery_worker, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def worker(processes: Processes) -> Processes:
    """A `celery worker` process (one thread) on Redis and on this test run's database."""
    processes.worker(pool="solo", concurrency=1, queues=[processes.default_queue], loglevel="INFO")
    return processes


def test_task_runs_in_a_real_worker_through_redis(worker: Processes, user_factory) -> None:
    user = user_factory()
    long_ago = timezone.now() - timedelta(days=90)
    old = ChangeEvent.objects.create(
        object_type="user", object_id=user.pk, kind="updated", version=1, processed=long_ago
    )
    pending = ChangeEvent.objects.create(object_type="user", object_id=user.pk, kind="updated", version=2)
    redis_url = worker.broker

    with app.connection_for_write(redis_url) as broker:
        sent = purge_processed_change_events.apply_async(
            kwargs={"older_than_days": 30}, queue=worker.default_queue, connection=broker
        )
    # The worker stores the return value in Redis: read it back from there.
    result = AsyncResult(sent.id, app=app, backend=RedisBackend(app=app, url=redis_url))

    assert result.get(timeout=60) == 1
    assert not ChangeEvent.objects.filter(pk=old.pk).exists()
    assert ChangeEvent.objects.filter(pk=pending.pk).exists()
