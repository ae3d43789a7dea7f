"""`target_status NAME [--clear-quarantine | --retry-failed | --approve-held | --reject-held | ...]`.

The target's status page on the command line, and its buttons: for operators
on a server without a browser, and for scripts. Each action calls the same
service as the admin does.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from provisioning import guard, status
from provisioning.models import Target


class Command(BaseCommand):
    help = (
        "Print a target's circuit state, queue, lag, error rate and held disables/deletes; "
        "or run one of its status-page actions."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The target's name.")
        actions = parser.add_mutually_exclusive_group()
        actions.add_argument(
            "--clear-quarantine", action="store_true", help="Mark it healthy and send what waited now."
        )
        actions.add_argument(
            "--retry-failed", action="store_true", help="Queue failed objects anew; retry backoffs now."
        )
        actions.add_argument(
            "--approve-held", action="store_true", help="Let every held disable/delete go through."
        )
        actions.add_argument(
            "--reject-held", action="store_true", help="Drop every held disable/delete (left as is)."
        )
        actions.add_argument("--pause", action="store_true", help="Queue changes, send nothing.")
        actions.add_argument("--resume", action="store_true", help="Send what was queued while paused.")

    def handle(self, *args: Any, **options: Any) -> None:
        target = Target.objects.filter(name=options["name"]).first()
        if target is None:
            raise CommandError(f"No target named {options['name']!r}")
        operator = "manage.py target_status"
        with transaction.atomic():
            if options["clear_quarantine"]:
                sent = status.target_clear_quarantine(target=target)
                self.stdout.write(f"Quarantine cleared; {sent} queued deliveries sent now.")
            elif options["retry_failed"]:
                result = status.target_retry_failed(target=target)
                self.stdout.write(
                    f"{result.failed} failed object(s) queued anew, {result.backing_off} retried now."
                )
            elif options["approve_held"]:
                approved = guard.held_approve(operator=operator, target=target)
                self.stdout.write(f"Approved {approved} held disable(s)/delete(s).")
            elif options["reject_held"]:
                ids = list(guard.held_deliveries(target=target).values_list("pk", flat=True))
                rejected = guard.held_reject(operator=operator, delivery_ids=ids)
                self.stdout.write(
                    f"Rejected {rejected} held disable(s)/delete(s); left as they are downstream."
                )
            elif options["pause"]:
                status.target_pause(target=target)
                self.stdout.write("Paused: changes are queued, nothing is sent.")
            elif options["resume"]:
                sent = status.target_resume(target=target)
                self.stdout.write(f"Resumed; {sent} queued deliveries sent now.")
            else:
                self._print(target)

    def _print(self, target: Target) -> None:
        report = status.target_status(target=target)
        circuit = target.circuit_state
        if target.circuit_reason:
            circuit += f" ({target.circuit_reason})"
        if target.circuit_next_attempt_at:
            circuit += f", next attempt {target.circuit_next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
        flags = ", ".join(
            flag for flag, on in (("disabled", not target.enabled), ("paused", target.paused)) if on
        )
        lines = [
            f"Target {target.name} ({target.base_url}){f' [{flags}]' if flags else ''}",
            f"  circuit:    {circuit}",
            f"  queue:      {report.queued} queued or running, {report.held} held",
        ]
        lanes = {0: "leaver", 1: "change", 2: "backfill"}
        for state, priority, count in report.queue:
            lines.append(f"              {state:<8} {lanes.get(priority, priority)!s:<9} {count}")
        if report.lag.samples:
            lines.append(
                f"  lag (1 h):  p50 {report.lag.p50:.2f} s, p95 {report.lag.p95:.2f} s "
                f"over {report.lag.samples} applied changes"
            )
        else:
            lines.append("  lag (1 h):  no change applied")
        rate = "n/a" if report.error_rate is None else f"{report.error_rate:.0%}"
        lines.append(f"  errors (1 h): {report.errors} of {report.attempts} attempts ({rate})")
        lines.append(f"  disables/deletes let through this hour: {report.guard_hour}")
        for delivery in guard.held_deliveries(target=target).order_by("id")[:20]:
            lines.append(
                f"  held #{delivery.pk}: {delivery.object_type} {delivery.object_id}: {delivery.last_error}"
            )
        self.stdout.write("\n".join(lines))
