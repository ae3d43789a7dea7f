"""`manage.py target_status`: the status page and its buttons on the command line."""

import io
import uuid

import pytest
from django.core.management import CommandError, call_command

from provisioning import queue
from provisioning.models import Delivery, Target

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    ids: list[int] = []
    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: ids.extend(delivery_ids))
    return ids


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("target_status", *args, stdout=out)
    return out.getvalue()


def _delivery(target: Target, state: str, **fields) -> Delivery:  # type: ignore[no-untyped-def]
    return Delivery.objects.create(
        target=target, object_type="user", object_id=uuid.uuid4(), state=state, **fields
    )


def test_status_shows_the_circuit_the_queue_and_each_held_operation(target_factory):
    target = target_factory(
        name="app", circuit_state=Target.CircuitState.QUARANTINED, circuit_reason="401 from GET /Users"
    )
    _delivery(target, "queued", priority=Delivery.Priority.BACKFILL)
    held = _delivery(
        target, "held", priority=Delivery.Priority.LEAVER, last_error="held by the deletion guard"
    )

    output = _run("app")

    assert "  circuit:    quarantined (401 from GET /Users)" in output
    assert "  queue:      1 queued or running, 1 held" in output
    assert f"  held #{held.pk}: user {held.object_id}: held by the deletion guard" in output


def test_clear_quarantine_makes_the_target_healthy_and_sends_what_waited(
    target_factory, sent, django_capture_on_commit_callbacks
):
    target = target_factory(name="app", circuit_state=Target.CircuitState.QUARANTINED, circuit_reason="401")
    waiting = _delivery(target, "queued")

    with django_capture_on_commit_callbacks(execute=True):
        output = _run("app", "--clear-quarantine")

    assert output.strip() == "Quarantine cleared; 1 queued deliveries sent now."
    target.refresh_from_db()
    assert (target.circuit_state, target.circuit_reason) == ("healthy", "")
    assert sent == [waiting.pk]


def test_approve_and_reject_held_act_on_this_targets_held_operations_only(
    target_factory, sent, django_capture_on_commit_callbacks
):
    target, other = target_factory(name="app"), target_factory(name="other")
    first = _delivery(target, "held")
    elsewhere = _delivery(other, "held")

    with django_capture_on_commit_callbacks(execute=True):
        assert _run("app", "--approve-held").strip() == "Approved 1 held disable(s)/delete(s)."
    first.refresh_from_db()
    assert (first.state, first.guard_approved_by) == ("queued", "manage.py target_status")
    assert sent == [first.pk]

    assert _run("other", "--reject-held").strip() == (
        "Rejected 1 held disable(s)/delete(s); left as they are downstream."
    )
    elsewhere.refresh_from_db()
    assert elsewhere.state == "superseded"


def test_pause_then_resume_sends_what_was_queued_meanwhile(
    target_factory, sent, django_capture_on_commit_callbacks
):
    target = target_factory(name="app")
    assert _run("app", "--pause").strip() == "Paused: changes are queued, nothing is sent."
    target.refresh_from_db()
    assert target.paused
    queued = _delivery(target, "queued")

    with django_capture_on_commit_callbacks(execute=True):
        assert _run("app", "--resume").strip() == "Resumed; 1 queued deliveries sent now."
    target.refresh_from_db()
    assert not target.paused
    assert sent == [queued.pk]


def test_an_unknown_target_is_an_error():
    with pytest.raises(CommandError, match="No target named 'nope'"):
        _run("nope")
