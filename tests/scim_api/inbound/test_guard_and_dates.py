"""The leaver guard (holds and approvals) and effective-dated joiners and leavers."""

from datetime import timedelta
from http import HTTPStatus

import pytest
from django.utils import timezone

from directory.models import ChangeEvent, User
from scim_api.inbound import services
from scim_api.inbound.models import InboundJob, InboundRecord, InboundScheduledAction, InboundSource
from tests.scim_api.inbound.conftest import bulk, outcomes, worker_record

pytestmark = pytest.mark.django_db

HR_NS = "urn:contoso:employee"


def _staff(uploader, count: int) -> None:
    uploader.run(*[worker_record(str(n)) for n in range(count)])


def _configure(source: InboundSource, **fields) -> None:  # type: ignore[no-untyped-def]
    for name, value in fields.items():
        setattr(source, name, value)
    source.save()


# --- the guard ---------------------------------------------------------------------------------


def test_leavers_beyond_the_per_job_count_are_held_and_nobody_is_disabled(uploader, hr_source):
    _staff(uploader, 5)
    _configure(hr_source[0], guard_job_max_count=1)

    job = uploader.run(worker_record("0", active=False), worker_record("1", active=False), worker_record("2"))

    assert outcomes(job) == ["held", "held", "unchanged"]
    assert job["operations"][0]["reason"] == (
        "Held by the guard: 2 leavers in this job would exceed the limit of 1. "
        "An operator can approve or reject it in the admin."
    )
    assert job["counts"]["held"] == 2
    assert job["status"] == "completed"
    assert User.objects.filter(active=False).count() == 0


def test_the_percentage_guard_counts_the_users_the_source_matches(uploader, hr_source):
    _staff(uploader, 10)
    _configure(hr_source[0], guard_job_max_percent=10)

    assert outcomes(uploader.run(worker_record("0", active=False))) == ["disabled"]
    job = uploader.run(worker_record("1", active=False), worker_record("2", active=False))

    assert outcomes(job) == ["held", "held"]
    assert "(20.0% of 10 users) would exceed the limit of 10%" in job["operations"][0]["reason"]


def test_the_hourly_guard_counts_leavers_of_earlier_jobs(uploader, hr_source):
    _staff(uploader, 5)
    _configure(hr_source[0], guard_hour_max_count=2)

    assert outcomes(uploader.run(worker_record("0", active=False), worker_record("1", active=False))) == [
        "disabled",
        "disabled",
    ]
    job = uploader.run(worker_record("2", active=False))

    assert outcomes(job) == ["held"]
    assert "3 leavers in the last hour would exceed the limit of 2" in job["operations"][0]["reason"]


def test_a_leaver_already_disabled_is_not_counted(uploader, hr_source):
    _staff(uploader, 3)
    uploader.run(worker_record("0", active=False))
    _configure(hr_source[0], guard_job_max_count=1)

    job = uploader.run(worker_record("0", active=False), worker_record("1", active=False))

    assert outcomes(job) == ["unchanged", "disabled"]


def test_approving_a_held_leaver_applies_it_and_rejecting_leaves_the_user(uploader, hr_source):
    _staff(uploader, 3)
    _configure(hr_source[0], guard_job_max_count=1)
    job = uploader.run(worker_record("0", active=False), worker_record("1", active=False))
    held = list(InboundRecord.objects.filter(outcome="held").order_by("index"))

    approved = services.held_records_approve(record_ids=[held[0].pk], approved_by="alice")
    services.held_records_reject(record_ids=[held[1].pk], rejected_by="bob")
    assert InboundJob.objects.get(pk=job["id"]).status == "queued"
    services.jobs_drain(job_id=job["id"])

    final = uploader.scim.get(f"inbound/hr/jobs/{job['id']}").body
    assert approved == 1
    assert outcomes(final) == ["disabled", "skipped"]
    assert final["operations"][1]["reason"] == "Rejected by bob: the user was left as it is."
    assert final["status"] == "completed"
    assert final["counts"]["held"] == 0
    assert InboundRecord.objects.get(pk=held[0].pk).approved_by == "alice"
    assert list(User.objects.filter(active=False).values_list("employee_number", flat=True)) == ["0"]


def test_approving_a_held_leaver_that_a_later_record_overtook_skips_it(uploader, hr_source):
    _staff(uploader, 3)
    _configure(hr_source[0], guard_job_max_count=1)
    uploader.run(worker_record("0", active=False), worker_record("1", active=False))
    uploader.run(worker_record("0", title="Still here"))
    held = InboundRecord.objects.get(outcome="held", key="0")

    assert services.held_records_approve(record_ids=[held.pk], approved_by="alice") == 0

    held.refresh_from_db()
    assert held.outcome == "skipped"
    assert held.reason == "Approved by alice, but superseded by a later record (updated)."
    assert User.objects.get(employee_number="0").active is True


def test_a_dry_run_shows_what_the_guard_would_hold(hr, uploader, hr_source):
    _staff(uploader, 3)
    _configure(hr_source[0], guard_job_max_count=1)

    reply = hr.post(
        "bulkUpload?dryRun=true", bulk(worker_record("0", active=False), worker_record("1", active=False))
    )

    assert outcomes(reply.body) == ["held", "held"]
    assert not User.objects.filter(active=False).exists()


# --- effective dates ----------------------------------------------------------------------------


@pytest.fixture
def dated(hr_source):  # type: ignore[no-untyped-def]
    _configure(
        hr_source[0],
        hire_date_source=f"{HR_NS}:HireDate",
        termination_date_source=f"[{HR_NS}:TerminationDate]",
    )
    return hr_source[0]


def _dated(key: str, *, hire: str | None = None, ends: str | None = None, **kwargs) -> dict:  # type: ignore[no-untyped-def]
    record = worker_record(key, **kwargs)
    record[HR_NS] = {k: v for k, v in (("HireDate", hire), ("TerminationDate", ends)) if v}
    return record


def _iso(delta: timedelta) -> str:
    return (timezone.now() + delta).replace(microsecond=0).isoformat()


def test_a_future_joiner_is_created_disabled_and_enabled_on_the_hire_date(uploader, dated):
    hire = _iso(timedelta(days=10))

    job = uploader.run(_dated("1", hire=hire))

    user = User.objects.get(employee_number="1")
    action = InboundScheduledAction.objects.get()
    assert outcomes(job) == ["created"]
    assert job["operations"][0]["changed"] == ["scheduled enable"]
    assert user.active is False
    assert (action.action, action.state, action.user_id, action.due.isoformat()) == (
        "enable",
        "pending",
        user.pk,
        hire,
    )
    assert outcomes(uploader.run(_dated("1", hire=hire))) == ["unchanged"]
    assert services.scheduled_actions_apply(now=timezone.now()) == 0

    assert services.scheduled_actions_apply(now=timezone.now() + timedelta(days=11)) == 1

    user.refresh_from_db()
    action.refresh_from_db()
    assert user.active is True
    assert (action.state, action.detail) == ("done", "Enabled on the hire date.")
    kinds = ChangeEvent.objects.filter(object_id=user.pk).order_by("id").values_list("kind", flat=True)
    assert list(kinds) == ["created", "activated"]


def test_a_moved_hire_date_moves_the_scheduled_enable(uploader, dated):
    uploader.run(_dated("1", hire=_iso(timedelta(days=10))))
    later = _iso(timedelta(days=20))

    job = uploader.run(_dated("1", hire=later))

    assert outcomes(job) == ["updated"]
    assert InboundScheduledAction.objects.get(state="pending").due.isoformat() == later


def test_a_future_leaver_stays_active_until_the_termination_date(uploader, dated):
    uploader.run(_dated("1"))
    ends = _iso(timedelta(days=3))

    job = uploader.run(_dated("1", ends=ends))

    user = User.objects.get(employee_number="1")
    assert outcomes(job) == ["updated"]
    assert user.active is True
    services.scheduled_actions_apply(now=timezone.now() + timedelta(days=4))
    user.refresh_from_db()
    assert user.active is False
    assert InboundScheduledAction.objects.get().detail == "Disabled on the termination date."


def test_a_termination_date_taken_back_cancels_the_pending_disable(uploader, dated):
    uploader.run(_dated("1", ends=_iso(timedelta(days=3))))

    job = uploader.run(_dated("1"))

    assert outcomes(job) == ["updated"]
    assert InboundScheduledAction.objects.get().state == "cancelled"
    services.scheduled_actions_apply(now=timezone.now() + timedelta(days=4))
    assert User.objects.get(employee_number="1").active is True


def test_a_termination_date_in_the_past_is_a_leaver_now(uploader, dated):
    uploader.run(_dated("1"))

    job = uploader.run(_dated("1", ends="2020-01-31"))

    assert outcomes(job) == ["disabled"]
    assert User.objects.get(employee_number="1").active is False


def test_a_future_rehire_stays_disabled_until_the_date(uploader, dated):
    uploader.run(_dated("1"))
    uploader.run(_dated("1", active=False))

    job = uploader.run(_dated("1", hire=_iso(timedelta(days=5))))

    assert outcomes(job) == ["updated"]
    assert User.objects.get(employee_number="1").active is False
    services.scheduled_actions_apply(now=timezone.now() + timedelta(days=6))
    assert User.objects.get(employee_number="1").active is True


def test_with_the_delete_policy_a_future_leaver_is_deleted_on_the_date(uploader, dated):
    _configure(dated, leaver_action="delete")
    uploader.run(_dated("1", ends=_iso(timedelta(days=3))))

    assert services.scheduled_actions_apply(now=timezone.now() + timedelta(days=4)) == 1

    assert not User.objects.filter(employee_number="1").exists()
    action = InboundScheduledAction.objects.get()  # kept as the history of what was done
    assert (action.state, action.user_id) == ("done", None)
    assert action.detail == "Deleted on the termination date (the source's leaver policy)."


def test_the_hourly_guard_on_the_day_counts_the_deletes_done_in_the_last_hour(uploader, dated):
    _configure(dated, leaver_action="delete")
    uploader.run(*[_dated(str(n)) for n in range(4)])
    _configure(dated, guard_hour_max_count=2)
    day = timezone.now().replace(microsecond=0) + timedelta(days=3)
    uploader.run(_dated("0", ends=day.isoformat()), _dated("1", ends=day.isoformat()))
    InboundScheduledAction.objects.update(created=timezone.now() - timedelta(hours=2))
    uploader.run(_dated("2", ends=(day + timedelta(minutes=30)).isoformat()))

    assert services.scheduled_actions_apply(now=day + timedelta(minutes=1)) == 2
    assert services.scheduled_actions_apply(now=day + timedelta(minutes=31)) == 0

    assert User.objects.filter(employee_number__in=["0", "1"]).count() == 0
    third = InboundScheduledAction.objects.get(user__employee_number="2")
    assert third.state == "held"
    assert "3 leavers in the last hour would exceed the limit of 2" in third.detail


def test_a_date_that_is_not_a_date_fails_its_record(uploader, dated):
    job = uploader.run(_dated("1", hire="next Monday"), _dated("2"))

    assert outcomes(job) == ["failed", "created"]
    assert job["operations"][0]["error"]["detail"] == (
        "hire date 'next Monday' is not a date (use ISO 8601: 2025-07-01 or 2025-07-01T00:00:00Z)"
    )


def test_the_source_advertises_its_effective_date_attributes(hr, dated):
    reply = hr.get("bulkUpload")

    assert reply.status == HTTPStatus.OK
    assert reply.body["effectiveDates"] == {
        "hireDate": f"{HR_NS}:HireDate",
        "terminationDate": f"[{HR_NS}:TerminationDate]",
    }


# --- the guard and effective dates ---------------------------------------------------------------


def test_the_guard_counts_future_dated_leavers_and_holds_them_before_anything_is_scheduled(uploader, dated):
    uploader.run(*[_dated(str(n)) for n in range(3)])
    _configure(dated, guard_job_max_count=1)
    ends = _iso(timedelta(days=3))

    job = uploader.run(_dated("0", ends=ends), _dated("1", ends=ends), _dated("2"))

    assert outcomes(job) == ["held", "held", "unchanged"]
    assert "2 leavers in this job would exceed the limit of 1" in job["operations"][0]["reason"]
    assert not InboundScheduledAction.objects.exists()
    held = InboundRecord.objects.filter(outcome="held").values_list("pk", flat=True)
    services.held_records_approve(record_ids=held, approved_by="op")
    services.jobs_drain(job_id=job["id"])
    assert InboundScheduledAction.objects.filter(action="disable", state="pending").count() == 2
    assert User.objects.filter(active=True).count() == 3


def test_the_hourly_guard_counts_the_disables_scheduled_in_the_hour(uploader, dated):
    uploader.run(*[_dated(str(n)) for n in range(4)])
    _configure(dated, guard_hour_max_count=2)
    ends = _iso(timedelta(days=3))
    assert outcomes(uploader.run(_dated("0", ends=ends), _dated("1", ends=ends))) == ["updated", "updated"]

    job = uploader.run(_dated("2", active=False))

    assert outcomes(job) == ["held"]
    assert "3 leavers in the last hour would exceed the limit of 2" in job["operations"][0]["reason"]


def test_a_scheduled_departure_counts_once_not_again_when_the_record_is_sent_again(uploader, dated):
    uploader.run(*[_dated(str(n)) for n in range(3)])
    ends = _iso(timedelta(days=3))
    uploader.run(_dated("0", ends=ends), _dated("1", ends=ends))
    _configure(dated, guard_job_max_count=1)

    again = uploader.run(_dated("0", ends=ends), _dated("1", ends=_iso(timedelta(days=5))))

    assert outcomes(again) == ["unchanged", "updated"]


# --- the guard on the termination date ----------------------------------------------------------


def _leavers_sent_apart(uploader, dated, count: int, ends: str) -> None:  # type: ignore[no-untyped-def]
    """`count` future leavers sharing a date, one job each: each job passes a guard of one per job."""
    uploader.run(*[_dated(str(n)) for n in range(count + 2)])
    _configure(dated, guard_job_max_count=1)
    for n in range(count):
        assert outcomes(uploader.run(_dated(str(n), ends=ends))) == ["updated"]


def test_disables_that_come_due_together_beyond_the_guard_are_held_on_the_day(uploader, dated):
    _leavers_sent_apart(uploader, dated, 3, _iso(timedelta(days=3)))

    assert services.scheduled_actions_apply(now=timezone.now() + timedelta(days=4)) == 0

    assert User.objects.filter(active=False).count() == 0
    actions = InboundScheduledAction.objects.order_by("id")
    assert [action.state for action in actions] == ["held"] * 3
    assert actions[0].detail == (
        "Held by the guard on its date: 3 leavers due today would exceed the limit of 1. "
        "An operator can approve (applied at the next run) or cancel it in the admin."
    )
    # Held stays held: the next run neither applies them nor counts them again.
    assert services.scheduled_actions_apply(now=timezone.now() + timedelta(days=4)) == 0


def test_approved_held_disables_apply_at_the_next_run_and_cancelled_ones_never(uploader, dated):
    _leavers_sent_apart(uploader, dated, 3, _iso(timedelta(days=3)))
    later = timezone.now() + timedelta(days=4)
    services.scheduled_actions_apply(now=later)
    first, second, third = InboundScheduledAction.objects.order_by("id")

    assert services.scheduled_actions_approve(action_ids=[first.pk, second.pk], approved_by="op") == 2
    assert services.scheduled_actions_cancel(action_ids=[third.pk], cancelled_by="op") == 1
    assert services.scheduled_actions_apply(now=later) == 2

    states = dict(InboundScheduledAction.objects.values_list("pk", "state"))
    assert states == {first.pk: "done", second.pk: "done", third.pk: "cancelled"}
    assert sorted(User.objects.filter(active=False).values_list("employee_number", flat=True)) == ["0", "1"]
    assert InboundScheduledAction.objects.get(pk=first.pk).approved_by == "op"


def test_the_hourly_guard_on_the_day_counts_the_disables_done_in_the_last_hour(uploader, dated):
    uploader.run(*[_dated(str(n)) for n in range(4)])
    _configure(dated, guard_hour_max_count=2)
    day = timezone.now().replace(microsecond=0) + timedelta(days=3)
    assert outcomes(uploader.run(_dated("0", ends=day.isoformat()), _dated("1", ends=day.isoformat()))) == [
        "updated",
        "updated",
    ]
    # Decided more than an hour ago: the hourly guard no longer counts them when "2" is decided.
    InboundScheduledAction.objects.update(created=timezone.now() - timedelta(hours=2))
    assert outcomes(uploader.run(_dated("2", ends=(day + timedelta(minutes=30)).isoformat()))) == ["updated"]

    assert services.scheduled_actions_apply(now=day + timedelta(minutes=1)) == 2  # two: within the limit
    assert services.scheduled_actions_apply(now=day + timedelta(minutes=31)) == 0

    third = InboundScheduledAction.objects.get(user__employee_number="2")
    assert third.state == "held"
    assert "3 leavers in the last hour would exceed the limit of 2" in third.detail
    assert User.objects.filter(active=False).count() == 2


def test_a_held_disable_moved_to_another_date_is_pending_again(uploader, dated):
    _leavers_sent_apart(uploader, dated, 2, _iso(timedelta(days=3)))
    services.scheduled_actions_apply(now=timezone.now() + timedelta(days=4))
    moved = _iso(timedelta(days=30))
    _configure(dated, guard_job_max_count=None)

    assert outcomes(uploader.run(_dated("0", ends=moved))) == ["updated"]

    action = InboundScheduledAction.objects.get(user__employee_number="0")
    assert (action.state, action.due.isoformat(), action.detail) == ("pending", moved, "")
    assert InboundScheduledAction.objects.get(user__employee_number="1").state == "held"


def test_a_source_without_a_guard_applies_every_due_disable(uploader, dated):
    _leavers_sent_apart(uploader, dated, 3, _iso(timedelta(days=3)))
    _configure(dated, guard_job_max_count=None)

    assert services.scheduled_actions_apply(now=timezone.now() + timedelta(days=4)) == 3
    assert User.objects.filter(active=False).count() == 3
