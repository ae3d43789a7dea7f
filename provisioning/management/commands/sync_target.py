"""`sync_target NAME [--full [--restart] [--wait] | --reconcile | --object ID] [--dry-run]`.

A full sync (a resumable run, with a progress bar; dry: a plan with samples of
the exact requests), a reconciliation (findings and corrections; dry: what it
would correct and how), or one object now.
"""

import json
import time
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from directory.models import Group, User
from provisioning.models import (
    DeliveryAttempt,
    ObjectType,
    ReconciliationFinding,
    ReconciliationRun,
    SyncRun,
    Target,
    TargetLink,
)
from provisioning.plans import PLAN_KINDS, full_sync_plan
from provisioning.reconcile import ReconciliationBusy, target_reconcile
from provisioning.services import DeliveryBusy, object_provision_now
from provisioning.sync_runs import scope_total, sync_run_advance, sync_run_refresh, sync_run_start


class Command(BaseCommand):
    help = (
        "Provision one object now and print its log entry (--object), queue every object in scope "
        "(--full, resumable), or compare the target with the directory and correct it (--reconcile). "
        "--dry-run sends no write and stores nothing: it prints the requests, the plan or the findings."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The target's name.")
        parser.add_argument("--full", action="store_true", help="Queue every object in the target's scope.")
        parser.add_argument("--dry-run", action="store_true", help="Send no write; say what would happen.")
        parser.add_argument(
            "--object", metavar="ID", help="A user or group id (or a userName / displayName)."
        )
        parser.add_argument(
            "--reconcile",
            action="store_true",
            help="Read the target, report drift, missing objects and orphans, correct per its policy.",
        )
        parser.add_argument(
            "--restart", action="store_true", help="With --full: start over instead of resuming a run."
        )
        parser.add_argument(
            "--wait", action="store_true", help="With --full: follow the deliveries until the run is done."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        target = Target.objects.select_related("profile").filter(name=options["name"]).first()
        if target is None:
            raise CommandError(f"No target named {options['name']!r}")
        if options["object"]:
            self._one(target, options["object"], dry_run=options["dry_run"])
        elif options["full"]:
            self._full(target, dry_run=options["dry_run"], restart=options["restart"], wait=options["wait"])
        elif options["reconcile"]:
            self._reconcile(target, dry_run=options["dry_run"])
        else:
            raise CommandError("Say what to sync: --full, --reconcile or --object ID")

    def _find(self, ref: str) -> tuple[str, uuid.UUID]:
        try:
            object_id = uuid.UUID(ref)
        except ValueError:
            object_id = None
        if object_id is not None:
            if User.objects.filter(pk=object_id).exists():
                return ObjectType.USER, object_id
            if Group.objects.filter(pk=object_id).exists():
                return ObjectType.GROUP, object_id
            # Gone from the directory: still worth a push (it removes the object downstream).
            for object_type in (ObjectType.USER, ObjectType.GROUP):
                if target_has_link(object_type, object_id):
                    return object_type, object_id
            raise CommandError(f"No user or group {ref}")
        user = User.objects.filter(user_name__iexact=ref).values_list("pk", flat=True).first()
        if user is not None:
            return ObjectType.USER, user
        group = Group.objects.filter(display_name__iexact=ref).values_list("pk", flat=True).first()
        if group is not None:
            return ObjectType.GROUP, group
        raise CommandError(f"No user or group {ref!r}")

    def _one(self, target: Target, ref: str, *, dry_run: bool) -> None:
        object_type, object_id = self._find(ref)
        try:
            entry = object_provision_now(
                target=target, object_type=object_type, object_id=object_id, dry_run=dry_run
            )
        except DeliveryBusy as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(log_entry(entry), indent=2, default=str))
        if entry.outcome in (DeliveryAttempt.Outcome.FAILED, DeliveryAttempt.Outcome.DISPUTED):
            raise CommandError(f"{entry.outcome}: {entry.error}")

    def _full(self, target: Target, *, dry_run: bool, restart: bool, wait: bool) -> None:
        if dry_run:
            self._plan(target)
            return
        run, resumed = sync_run_start(target=target, trigger="command", restart=restart)
        if resumed:
            self.stderr.write(
                f"Resuming full sync run {run.pk}: {run.phase} after {run.cursor or 'the start'} "
                f"({run.queued} queued so far; --restart starts over)"
            )
        bar = ProgressBar(self.stderr, total=scope_total(target), label="queuing")
        try:
            run = sync_run_advance(
                run_id=run.pk,
                progress=lambda r: bar.update(r.users + r.groups, f"{r.queued} queued, {r.leavers} leaving"),
            )
        except KeyboardInterrupt:
            bar.close()
            raise CommandError(
                f"Interrupted. Run {run.pk} keeps its place: the same command resumes it "
                "(and the scheduler does within minutes)."
            ) from None
        bar.close()
        self.stdout.write(
            f"{target.name}: full sync run {run.pk}: queued {run.queued} deliveries for {run.users} users, "
            f"{run.groups} groups and {run.leavers} linked objects out of scope"
        )
        if wait:
            self._wait(run)

    def _wait(self, run: SyncRun) -> None:
        bar = ProgressBar(self.stderr, total=run.queued, label="delivering")
        while True:
            run = sync_run_refresh(run=run)
            done = run.queued - run.pending_count
            bar.update(
                done,
                f"{run.created_count} created, {run.updated_count} updated, {run.unchanged_count} unchanged, "
                f"{run.removed_count} removed, {run.failed_count} failed",
            )
            if run.state != SyncRun.State.DELIVERING:
                break
            time.sleep(1.0)
        bar.close()
        self.stdout.write(
            f"{run.state}: {run.created_count} created, {run.updated_count} updated, "
            f"{run.unchanged_count} unchanged, {run.removed_count} disabled or deleted, "
            f"{run.skipped_count} skipped, {run.failed_count} failed"
        )

    def _plan(self, target: Target) -> None:
        bar = ProgressBar(self.stderr, total=scope_total(target), label="planning")
        plan = full_sync_plan(target=target, progress=lambda p: bar.update(p.objects, f"{p.lookups} lookups"))
        bar.close()
        self.stdout.write(
            f"Plan for a full sync of {target.name} (dry run: nothing sent, nothing stored); "
            f"{plan.objects} objects, {plan.lookups} lookups made"
        )
        for kind in PLAN_KINDS:
            self.stdout.write(f"  {kind:<10} {plan.counts.get(kind, 0):>8}")
        for kind in PLAN_KINDS:
            for item in plan.samples.get(kind, []):
                self.stdout.write(f"\n[{kind}] {item.object_type} {item.object_repr or item.object_id}")
                if item.modified:
                    self.stdout.write(f"  modified: {json.dumps(item.modified, default=str)}")
                for request in item.requests:
                    body = "" if request["body"] is None else " " + json.dumps(request["body"], default=str)
                    self.stdout.write(f"  {request['method']} {request['path']}{body}")
                if item.note:
                    self.stdout.write(f"  note: {item.note}")

    def _reconcile(self, target: Target, *, dry_run: bool) -> None:
        try:
            result = target_reconcile(target=target, dry_run=dry_run, trigger="command")
        except ReconciliationBusy as exc:
            raise CommandError(str(exc)) from None
        run = result.run
        heading = "dry run: nothing stored, nothing queued" if dry_run else f"run {run.pk}"
        self.stdout.write(
            f"Reconciliation of {target.name} ({heading}; policy: {run.get_policy_display()}): "
            f"read {run.remote_users} users and {run.remote_groups} groups, {run.requests} requests"
        )
        for kind, label in ReconciliationFinding.Kind.choices:
            self.stdout.write(f"  {kind:<19} {result.counts.get(kind, 0):>7}  {label}")
        self.stdout.write(f"  {'in sync':<19} {run.in_sync:>7}")
        if not dry_run:
            self.stdout.write(
                f"  {'corrections':<19} {run.corrections:>7}  queued as deliveries or links forgotten"
            )
        for kind, findings in result.sample_findings().items():
            for finding in findings:
                self.stdout.write(
                    f"\n[{kind}] {finding.object_type} {finding.object_repr or finding.object_id or ''}"
                    f" (remote {finding.remote_id or '-'}) {finding.note}".rstrip()
                )
                if finding.details:
                    self.stdout.write(f"  {json.dumps(finding.details, default=str)}")
                if not dry_run:
                    self.stdout.write(f"  correction: {finding.get_correction_display()}")
                preview = result.previews.get(finding.id) if dry_run and finding.id else None
                if preview is not None:
                    self.stdout.write(f"  correction would {preview.action}:")
                    for request in preview.requests:
                        body = (
                            "" if request["body"] is None else " " + json.dumps(request["body"], default=str)
                        )
                        self.stdout.write(f"    {request['method']} {request['path']}{body}")
                    if preview.error:
                        self.stdout.write(f"    ({preview.error})")
        if run.state == ReconciliationRun.State.FAILED:
            raise CommandError(f"Reconciliation failed: {run.error}")


class ProgressBar:
    """A progress line: redrawn in place on a terminal, a plain line every few seconds otherwise
    (so logs and pipes get a readable history instead of carriage returns)."""

    WIDTH = 30

    def __init__(self, stream: OutputWrapper, *, total: int, label: str) -> None:
        self.stream, self.total, self.label = stream, max(0, total), label
        self.tty = stream.isatty()
        self.every = 0.1 if self.tty else 5.0
        self.last_draw = 0.0
        self.line = ""
        self.started = time.monotonic()

    def update(self, done: int, detail: str = "") -> None:
        now = time.monotonic()
        self.line = self._render(done, detail, now)
        if now - self.last_draw < self.every:
            return
        self.last_draw = now
        self._draw()

    def _render(self, done: int, detail: str, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = f"{done / elapsed:,.0f}/s"
        if self.total:
            share = min(1.0, done / self.total)
            filled = int(share * self.WIDTH)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            head = f"{self.label} [{bar}] {share:4.0%} {done:,}/{self.total:,}"
        else:
            head = f"{self.label} {done:,}"
        return f"{head} {rate}" + (f" - {detail}" if detail else "")

    def _draw(self) -> None:
        if self.tty:
            self.stream.write(f"\r\x1b[K{self.line}", ending="")
            self.stream.flush()
        else:
            self.stream.write(self.line)

    def close(self) -> None:
        if self.line:
            if self.tty:
                self.stream.write(f"\r\x1b[K{self.line}")
            else:
                self.stream.write(self.line)
            self.line = ""


def target_has_link(object_type: str, object_id: uuid.UUID) -> bool:
    return TargetLink.objects.filter(object_type=object_type, object_id=object_id).exists()


def log_entry(entry: DeliveryAttempt) -> dict[str, Any]:
    """The log row as the command prints it."""
    return {
        "target": entry.target.name,
        "object": f"{entry.object_type} {entry.object_id} ({entry.object_repr})",
        "action": entry.action,
        "outcome": entry.outcome,
        "scope": f"{'in' if entry.in_scope else 'out of'} scope: {entry.scope_reason}",
        "match": f"{entry.match_result} {entry.matched_attribute}".strip(),
        "modified": entry.modified_properties,
        "remote_id": entry.remote_id,
        "duration_ms": entry.duration_ms,
        "error": entry.error,
        "requests": entry.requests,
    }
