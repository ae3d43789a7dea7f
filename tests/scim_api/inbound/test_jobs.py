"""Claiming jobs: one person's records in order, disjoint jobs side by side, leases, lost tasks, retention."""

from datetime import timedelta

import pytest
from django.utils import timezone

from directory.models import User
from scim_api.inbound import services
from scim_api.inbound.models import InboundJob, InboundRecord
from tests.scim_api.inbound.conftest import worker_record

pytestmark = pytest.mark.django_db


def _stage(source, *records, **kwargs) -> InboundJob:  # type: ignore[no-untyped-def]
    return services.job_stage(
        source=source, operations=[(f"b{n}", record) for n, record in enumerate(records)], **kwargs
    )


def test_jobs_about_different_people_run_side_by_side(hr_source):
    source = hr_source[0]
    first, second = _stage(source, worker_record("1")), _stage(source, worker_record("2"))

    assert services.job_claim(source_id=source.pk).pk == first.pk
    assert services.job_claim(source_id=source.pk).pk == second.pk
    assert services.job_claim(source_id=source.pk) is None


def test_a_job_about_a_person_of_an_earlier_unfinished_job_waits_for_it(hr_source):
    source = hr_source[0]
    first = _stage(source, worker_record("1"), worker_record("2"))
    second = _stage(source, worker_record("3"), worker_record("2", title="Lead"))

    claimed = services.job_claim(source_id=source.pk)
    assert claimed.pk == first.pk
    assert services.job_claim(source_id=source.pk) is None
    services.job_run(claimed)

    assert services.job_claim(source_id=source.pk).pk == second.pk


def test_a_job_whose_manager_an_earlier_unfinished_job_brings_waits_for_it(hr_source):
    source = hr_source[0]
    first = _stage(source, worker_record("boss"))
    second = _stage(source, worker_record("report", manager="boss"))

    claimed = services.job_claim(source_id=source.pk)
    assert services.job_claim(source_id=source.pk) is None
    services.job_run(claimed)
    services.jobs_drain(job_id=second.pk)

    assert claimed.pk == first.pk
    assert User.objects.get(employee_number="report").manager.employee_number == "boss"


def test_no_more_jobs_of_one_source_run_at_once_than_the_setting_allows(hr_source, settings):
    settings.SCIM_API = {**settings.SCIM_API, "INBOUND_SOURCE_CONCURRENCY": 1}
    source = hr_source[0]
    _stage(source, worker_record("1"))
    _stage(source, worker_record("2"))

    assert services.job_claim(source_id=source.pk) is not None
    assert services.job_claim(source_id=source.pk) is None


def test_with_a_guard_jobs_with_leavers_run_one_at_a_time(uploader, hr_source):
    source = hr_source[0]
    uploader.run(worker_record("1"), worker_record("2"))
    source.guard_hour_max_count = 10
    source.save()
    _stage(source, worker_record("1", active=False))
    _stage(source, worker_record("2", active=False))

    assert services.job_claim(source_id=source.pk) is not None
    assert services.job_claim(source_id=source.pk) is None


def test_a_job_whose_worker_died_is_resumed_at_its_first_pending_record(hr_source, settings):
    settings.SCIM_API = {**settings.SCIM_API, "INBOUND_CHUNK_SIZE": 2}
    source = hr_source[0]
    job = _stage(source, *[worker_record(str(n)) for n in range(5)])
    claimed = services.job_claim(source_id=source.pk)
    # The first chunk applied and committed, then the worker died: its lease runs out.
    first_two = list(job.records.order_by("index")[:2])
    services.engine.run_records(
        services.engine.Context(
            config=services.transform.compile_source_config(source), actor=services._actor(claimed)
        ),
        first_two,
    )
    services.engine.save_outcomes(first_two)
    assert services.job_claim(source_id=source.pk) is None
    InboundJob.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=1))

    resumed = services.job_claim(source_id=source.pk)
    services.job_run(resumed)

    job.refresh_from_db()
    assert (resumed.pk, resumed.attempts) == (job.pk, 2)
    assert job.status == "completed"
    assert job.counts["created"] == 5
    assert User.objects.count() == 5


def test_lost_tasks_are_sent_again_once_per_source(hr_source, monkeypatch):
    sent: list[str] = []
    monkeypatch.setattr("scim_api.inbound.queue.send", lambda job_id: sent.append(str(job_id)))
    source = hr_source[0]
    old, newer = _stage(source, worker_record("1")), _stage(source, worker_record("2"))
    fresh = _stage(source, worker_record("3"))
    long_ago = timezone.now() - timedelta(minutes=5)
    # Apart by a second: with one timestamp the two would tie, and either could come first.
    InboundJob.objects.filter(pk=old.pk).update(created=long_ago)
    InboundJob.objects.filter(pk=newer.pk).update(created=long_ago + timedelta(seconds=1))
    InboundJob.objects.filter(pk=fresh.pk).update(created=timezone.now())

    assert services.jobs_resend_stale() == 1
    assert sent == [str(old.pk)]


def test_finished_jobs_are_purged_after_their_retention(uploader, hr_source):
    uploader.run(worker_record("1"))
    recent = uploader.run(worker_record("2"))
    InboundJob.objects.exclude(pk=recent["id"]).update(finished=timezone.now() - timedelta(days=31))

    assert services.jobs_purge() == 2  # the job and its record
    assert list(InboundJob.objects.values_list("pk", flat=True)) == [
        InboundJob.objects.get(pk=recent["id"]).pk
    ]
    assert InboundRecord.objects.count() == 1
