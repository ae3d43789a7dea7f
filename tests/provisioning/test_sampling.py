"""Queue samples: one per target a minute, repeat-safe, purged after the retention."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from provisioning.models import Delivery, TargetSample
from provisioning.sampling import target_samples_purge, target_samples_record
from provisioning.tasks import sample_targets

NOW = datetime(2026, 11, 29, 10, 17, 42, 123456, tzinfo=UTC)


@pytest.mark.django_db
def test_record_counts_each_targets_queue_at_the_minute(target_factory, django_assert_num_queries) -> None:
    busy, idle = target_factory(name="busy"), target_factory(name="idle")
    for state in ("queued", "queued", "running", "held", "done", "failed"):
        Delivery.objects.create(
            target=busy, object_type="user", object_id=uuid.uuid4(), state=state, lease_until=NOW
        )

    with django_assert_num_queries(3):
        assert target_samples_record(now=NOW) == 2

    rows = {row.target_id: row for row in TargetSample.objects.all()}
    minute = datetime(2026, 11, 29, 10, 17, tzinfo=UTC)
    assert (rows[busy.pk].taken_at, rows[busy.pk].queued, rows[busy.pk].held) == (minute, 3, 1)
    assert (rows[idle.pk].queued, rows[idle.pk].held) == (0, 0)


@pytest.mark.django_db
def test_a_second_sample_in_the_same_minute_changes_nothing(target_factory) -> None:
    target = target_factory()
    target_samples_record(now=NOW)
    Delivery.objects.create(target=target, object_type="user", object_id=uuid.uuid4())
    target_samples_record(now=NOW + timedelta(seconds=10))
    target_samples_record(now=NOW + timedelta(minutes=1))

    assert list(TargetSample.objects.order_by("taken_at").values_list("queued", flat=True)) == [0, 1]


@pytest.mark.django_db
def test_purge_keeps_the_retention(target_factory, settings) -> None:
    settings.PROVISIONING = {**settings.PROVISIONING, "SAMPLE_RETENTION_DAYS": 8}
    target = target_factory()
    for days in (9, 8.01, 7.9, 0):
        TargetSample.objects.create(target=target, taken_at=NOW - timedelta(days=days))

    assert target_samples_purge(now=NOW) == 2
    assert TargetSample.objects.count() == 2


@pytest.mark.django_db
def test_beat_task_purges_and_samples(target_factory) -> None:
    target = target_factory()
    TargetSample.objects.create(target=target, taken_at=datetime(2000, 1, 1, tzinfo=UTC))

    assert sample_targets.apply().get() == 1
    assert TargetSample.objects.get().taken_at.year > 2000
