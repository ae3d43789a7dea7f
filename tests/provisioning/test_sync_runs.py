"""Full sync runs: paged, resumable, counted from the provisioning log; the dry-run plan; the progress bar.

Deliveries run as a worker would run them (delivery_send) against scim2-server
on a loopback port, and the downstream is read back over HTTP.
"""

import io
import json
from datetime import timedelta

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.core.management.base import OutputWrapper
from django.utils import timezone

from directory import services as directory
from directory.models import ChangeEvent
from provisioning import queue, relay, sync_runs, tasks
from provisioning.management.commands.sync_target import ProgressBar
from provisioning.models import Delivery, DeliveryAttempt, SyncRun, TargetAssignment, TargetLink
from provisioning.services import delivery_send
from tests.provisioning.downstream import TOKEN

pytestmark = pytest.mark.django_db

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture
def sent(monkeypatch):
    ids: list[int] = []
    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: ids.extend(delivery_ids))
    return ids


def deliver_all() -> list[DeliveryAttempt]:
    """Relay, then run every due delivery until none is left, as the workers would."""
    log: list[DeliveryAttempt] = []
    for _ in range(10):
        relay.relay_change_events()
        Delivery.objects.filter(state="queued").update(next_attempt_at=None)
        due = list(Delivery.objects.filter(state="queued").order_by("priority", "id"))
        if not due:
            return log
        for delivery in due:
            entry = delivery_send(delivery_id=delivery.pk)
            if entry is not None:
                log.append(entry)
    raise AssertionError("deliveries still queued after all rounds")


def remote_user(client: httpx.Client, user_name: str) -> dict | None:
    found = client.get("Users", params={"filter": f'userName eq "{user_name}"'}).json()["Resources"]
    return found[0] if found else None


def test_an_interrupted_run_resumes_after_the_last_page_it_queued(
    actor, target_factory, settings, sent, capsys, django_capture_on_commit_callbacks
):
    settings.PROVISIONING = {"FULL_SYNC_PAGE_SIZE": 2}
    target = target_factory(scope="all")
    users = [directory.user_create(actor=actor, user_name=f"u{n}@example.com") for n in range(5)]
    group = directory.group_create(actor=actor, display_name="Everyone")
    ordered = sorted(user.pk for user in users)

    run, resumed = sync_runs.sync_run_start(target=target, trigger="test")
    assert not resumed

    def stop_after_first_page(run: SyncRun) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), django_capture_on_commit_callbacks(execute=True):
        sync_runs.sync_run_advance(run_id=run.pk, progress=stop_after_first_page)
    run.refresh_from_db()
    # The first page committed with its cursor; nothing after it was queued.
    assert (run.state, run.phase, run.cursor, run.users, run.queued) == (
        "queuing",
        "users",
        str(ordered[1]),
        2,
        2,
    )
    first = Delivery.objects.filter(target=target)
    assert sorted(first.values_list("object_id", flat=True)) == ordered[:2]
    assert set(first.values_list("run_id", flat=True)) == {run.pk}
    # A worker delivers those two meanwhile.
    first.update(state=Delivery.State.DONE)

    with django_capture_on_commit_callbacks(execute=True):
        call_command("sync_target", target.name, "--full")
    captured = capsys.readouterr()
    assert f"Resuming full sync run {run.pk}: users after {ordered[1]} (2 queued so far" in captured.err
    assert "queued 6 deliveries for 5 users, 1 groups and 0 linked objects out of scope" in captured.out
    run.refresh_from_db()
    assert (run.state, run.users, run.groups, run.queued) == ("delivering", 5, 1, 6)
    # Each object queued once: the first two were not queued again.
    rows = list(Delivery.objects.filter(target=target).values_list("object_id", "state", "run_id"))
    assert len(rows) == 6
    assert sorted(oid for oid, state, _ in rows if state == "queued") == sorted([*ordered[2:], group.pk])
    assert {run_id for _, _, run_id in rows} == {run.pk}
    assert len(sent) == 6


def test_restart_cancels_the_unfinished_run(actor, target_factory, sent):
    target = target_factory(scope="all")
    directory.user_create(actor=actor, user_name="ada@example.com")
    run, _ = sync_runs.sync_run_start(target=target)
    again, resumed = sync_runs.sync_run_start(target=target)
    assert (again.pk, resumed) == (run.pk, True)
    fresh, resumed = sync_runs.sync_run_start(target=target, restart=True)
    run.refresh_from_db()
    assert (fresh.pk != run.pk, resumed, run.state) == (True, False, "cancelled")


def test_a_run_counts_its_outcomes_from_the_log_and_finishes(actor, target_factory, scim2_url, remote, sent):
    target = target_factory(base_url=scim2_url, token=TOKEN, scope="all")
    ada = directory.user_create(actor=actor, user_name="ada@example.com", title="Countess")
    directory.user_create(actor=actor, user_name="bob@example.com")
    deliver_all()
    directory.user_update(actor=actor, user_id=ada.pk, title="Analyst")
    directory.user_create(actor=actor, user_name="cy@example.com")
    relay.relay_change_events()

    run = sync_runs.full_sync(target=target, trigger="test")
    assert (run.state, run.users, run.queued) == ("delivering", 3, 3)
    assert sync_runs.sync_run_refresh(run=run).pending_count == 3
    log = deliver_all()

    run = sync_runs.sync_run_refresh(run=run)
    assert (run.created_count, run.updated_count, run.unchanged_count, run.failed_count) == (1, 1, 1, 0)
    assert (run.pending_count, run.state) == (0, "done")
    assert run.finished is not None
    # The log rows carry the run id.
    assert {entry.run_id for entry in log} == {run.pk}
    assert DeliveryAttempt.objects.filter(run_id=run.pk).count() == 3
    assert remote_user(remote, "ada@example.com")["title"] == "Analyst"


def test_a_full_sync_also_removes_linked_objects_that_left_scope(
    actor, target_factory, scim2_url, remote, sent
):
    target = target_factory(base_url=scim2_url, token=TOKEN, scope="assigned", deletion_policy="disable")
    staff = directory.group_create(actor=actor, display_name="Staff")
    ada = directory.user_create(actor=actor, user_name="ada@example.com")
    bob = directory.user_create(actor=actor, user_name="bob@example.com")
    directory.membership_add(actor=actor, group_id=staff.pk, user_ids=[ada.pk, bob.pk])
    TargetAssignment.objects.create(target=target, group=staff)
    sync_runs.full_sync(target=target)
    deliver_all()
    assert TargetLink.objects.filter(target=target).count() == 3
    # bob leaves scope while the target is switched off: no delivery is made for it then.
    target.enabled = False
    target.save()
    directory.membership_remove(actor=actor, group_id=staff.pk, user_ids=[bob.pk])
    relay.relay_change_events()
    target.enabled = True
    target.save()
    assert remote_user(remote, "bob@example.com")["active"] is True

    run = sync_runs.full_sync(target=target)
    assert (run.users, run.groups, run.leavers, run.queued) == (1, 1, 1, 3)
    deliver_all()
    assert remote_user(remote, "bob@example.com")["active"] is False
    assert sync_runs.sync_run_refresh(run=run).removed_count == 1


def test_dry_run_full_sync_prints_a_plan_with_the_exact_requests_and_writes_nothing(
    actor, target_factory, scim2_url, remote, sent, capsys
):
    target = target_factory(base_url=scim2_url, token=TOKEN, scope="all", deletion_policy="disable")
    ada = directory.user_create(actor=actor, user_name="ada@example.com", title="Countess")
    bob = directory.user_create(actor=actor, user_name="bob@example.com")
    directory.user_create(actor=actor, user_name="cy@example.com")
    deliver_all()
    directory.user_update(actor=actor, user_id=ada.pk, title="Analyst")
    directory.user_delete(actor=actor, user_id=bob.pk)
    directory.user_create(actor=actor, user_name="dan@example.com", given_name="Dan")
    # As if the relay had lost these changes: only a full sync brings them.
    ChangeEvent.objects.update(processed=timezone.now())
    links_before = list(TargetLink.objects.values_list("object_id", "remote_id", "last_hash"))
    ada_remote = TargetLink.objects.get(object_id=ada.pk).remote_id
    bob_remote = TargetLink.objects.get(object_id=bob.pk).remote_id

    call_command("sync_target", target.name, "--full", "--dry-run")
    out = capsys.readouterr().out

    counts = dict(line.split() for line in out.splitlines()[1:10])
    assert counts == {
        "create": "1",
        "adopt": "0",
        "update": "1",
        "disable": "0",
        "delete": "1",
        "unchanged": "1",
        "skip": "0",
        "disputed": "0",
        "failed": "0",
    }
    assert "[create] user dan@example.com" in out
    dan_post = next(line for line in out.splitlines() if line.startswith("  POST Users"))
    body = json.loads(dan_post.removeprefix("  POST Users "))
    assert (body["userName"], body["name"], body["active"]) == ("dan@example.com", {"givenName": "Dan"}, True)
    assert (
        f'  PATCH Users/{ada_remote} {{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], ' in out
    )
    assert '"Operations": [{"op": "replace", "path": "title", "value": "Analyst"}]}' in out
    assert f"  DELETE Users/{bob_remote}" in out
    # Nothing was written: not downstream, not in the links, no run, no delivery, no log row.
    assert remote_user(remote, "dan@example.com") is None
    assert remote_user(remote, "ada@example.com")["title"] == "Countess"
    assert remote_user(remote, "bob@example.com") is not None
    assert list(TargetLink.objects.values_list("object_id", "remote_id", "last_hash")) == links_before
    assert not SyncRun.objects.exists()
    assert not Delivery.objects.filter(state="queued").exists()
    assert DeliveryAttempt.objects.count() == 3


def test_the_tick_resumes_a_run_whose_process_stopped(target_factory, monkeypatch, settings):
    target = target_factory(scope="all")
    stale, _ = sync_runs.sync_run_start(target=target)
    SyncRun.objects.filter(pk=stale.pk).update(heartbeat=timezone.now() - timedelta(minutes=5))
    other, _ = sync_runs.sync_run_start(target=target_factory(scope="all"))
    resumed: list[str] = []
    monkeypatch.setattr(tasks.full_sync_continue, "delay", lambda run_id: resumed.append(run_id))
    monkeypatch.setattr(tasks.reconcile, "reconciliations_due", lambda: [])
    tasks.provisioning_runs_tick()
    assert resumed == [str(stale.pk)]

    tasks.full_sync_continue(str(stale.pk))
    stale.refresh_from_db()
    assert stale.state == "delivering"
    assert other.state == "queuing"


def test_progress_bar_writes_plain_lines_when_not_on_a_terminal():
    out = io.StringIO()
    bar = ProgressBar(OutputWrapper(out), total=4, label="queuing")
    for done in range(1, 5):
        bar.update(done, f"{done} queued")
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # The first update draws; the rest fall within the interval; close() writes the final state.
    assert lines[0].startswith("queuing [#######.......................]  25% 1/4 ")
    assert lines[-1].startswith("queuing [##############################] 100% 4/4 ")
    assert lines[-1].endswith(" - 4 queued")


def test_progress_bar_redraws_in_place_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    bar = ProgressBar(OutputWrapper(out), total=0, label="delivering")
    bar.update(7)
    bar.close()
    assert out.getvalue().startswith("\r\x1b[Kdelivering 7 ")
    assert out.getvalue().count("\r\x1b[K") == 2


def test_full_and_reconcile_need_a_known_target():
    with pytest.raises(CommandError, match="No target named 'nope'"):
        call_command("sync_target", "nope", "--reconcile")


def test_wait_follows_the_deliveries_until_the_run_is_done(
    actor, target_factory, scim2_url, remote, sent, capsys, monkeypatch
):
    from provisioning.management.commands import sync_target

    target = target_factory(base_url=scim2_url, token=TOKEN, scope="all")
    directory.user_create(actor=actor, user_name="ada@example.com")
    directory.user_create(actor=actor, user_name="bob@example.com")
    ChangeEvent.objects.update(processed=timezone.now())
    waits: list[float] = []

    def workers_meanwhile(seconds: float) -> None:
        waits.append(seconds)
        deliver_all()

    monkeypatch.setattr(sync_target.time, "sleep", workers_meanwhile)
    call_command("sync_target", target.name, "--full", "--wait")
    captured = capsys.readouterr()
    assert waits == [1.0]
    assert captured.out.splitlines()[-1] == (
        "done: 2 created, 0 updated, 0 unchanged, 0 disabled or deleted, 0 skipped, 0 failed"
    )
    assert "delivering [##############################] 100% 2/2 " in captured.err
    assert remote_user(remote, "bob@example.com") is not None
