"""A real Celery round trip: a task sent through Redis runs in a separate worker process on PostgreSQL."""

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from celery.backends.redis import RedisBackend
from celery.result import AsyncResult
from django.db import connection
from django.utils import timezone

from config.celery import app
from directory.models import ChangeEvent
from directory.tasks import purge_processed_change_events

BASE_DIR = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.celery_worker, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def worker(transactional_db):  # type: ignore[no-untyped-def]
    """A `celery worker` process on Redis and on this test run's database, on a queue of its own."""
    queue = f"test-{uuid.uuid4().hex[:12]}"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": (
            f"postgres://{quote(db['USER'])}:{quote(db['PASSWORD'] or '')}"
            f"@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        ),
        "REDIS_URL": os.environ["TEST_REDIS_URL"],
        "CELERY_RESULT_BACKEND": os.environ["TEST_REDIS_URL"],
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "-Q",
            queue,
            "--loglevel=INFO",
        ],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield queue
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
        print(output)


def test_task_runs_in_a_real_worker_through_redis(worker, user_factory):
    user = user_factory()
    long_ago = timezone.now() - timedelta(days=90)
    old = ChangeEvent.objects.create(
        object_type="user", object_id=user.pk, kind="updated", version=1, processed=long_ago
    )
    pending = ChangeEvent.objects.create(object_type="user", object_id=user.pk, kind="updated", version=2)
    redis_url = os.environ["TEST_REDIS_URL"]

    with app.connection_for_write(redis_url) as broker:
        sent = purge_processed_change_events.apply_async(
            kwargs={"older_than_days": 30}, queue=worker, connection=broker
        )
    # The worker stores the return value in Redis: read it back from there.
    result = AsyncResult(sent.id, app=app, backend=RedisBackend(app=app, url=redis_url))

    assert result.get(timeout=60) == 1
    assert not ChangeEvent.objects.filter(pk=old.pk).exists()
    assert ChangeEvent.objects.filter(pk=pending.pk).exists()
