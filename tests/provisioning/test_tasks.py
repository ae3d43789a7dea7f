"""Scheduled ticks that must not run twice at once skip while a copy runs elsewhere (directory.locks)."""

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone

from provisioning import queue, tasks
from provisioning.models import Delivery
from tests.processes import database_url

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def other_worker(db) -> Iterator[psycopg.Connection]:  # type: ignore[no-untyped-def]
    """A second session on the test database, standing for a worker on another machine."""
    with psycopg.connect(database_url(), autocommit=True) as session:
        yield session


@pytest.fixture
def sent(monkeypatch) -> list[list[int]]:  # type: ignore[no-untyped-def]
    batches: list[list[int]] = []
    monkeypatch.setattr(queue, "publish", lambda task, args, *, queue, countdown: batches.append(args[1]))
    return batches


def test_a_sweep_skips_while_another_sweep_runs_and_runs_once_it_is_done(
    other_worker, sent, target_factory, user_factory
) -> None:
    lost = Delivery.objects.create(
        target=target_factory(),
        object_type="user",
        object_id=user_factory().pk,
        state=Delivery.State.QUEUED,
        enqueued_at=timezone.now() - timedelta(hours=1),
    )
    name = "alone:provisioning.tasks.sweep_deliveries"
    other_worker.execute("SELECT pg_advisory_lock(hashtext(%s))", [name])

    assert tasks.sweep_deliveries() is None
    assert sent == []

    other_worker.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])
    assert tasks.sweep_deliveries() == 1
    assert sent == [[lost.pk]]


@pytest.mark.parametrize(
    ("task", "name"),
    [
        (tasks.provisioning_runs_tick, "alone:provisioning.tasks.provisioning_runs_tick"),
        (tasks.sweep_deliveries, "alone:provisioning.tasks.sweep_deliveries"),
    ],
)
def test_the_guarded_ticks_lock_under_their_own_name(other_worker, task, name) -> None:
    other_worker.execute("SELECT pg_advisory_lock(hashtext(%s))", [name])
    assert task() is None
