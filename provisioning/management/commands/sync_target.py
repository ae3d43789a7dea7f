"""`sync_target NAME [--full] [--dry-run] [--object ID]`: a full sync, or one object now (or a dry run)."""

import json
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from directory.models import Group, User
from provisioning.models import DeliveryAttempt, ObjectType, Target, TargetLink
from provisioning.services import DeliveryBusy, SyncPlan, object_provision_now, target_full_sync


class Command(BaseCommand):
    help = (
        "Provision one object now and print its log entry (--object), or queue every object in scope "
        "(--full). --dry-run sends no write: for --object it prints the requests that would be sent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The target's name.")
        parser.add_argument("--full", action="store_true", help="Queue every object in the target's scope.")
        parser.add_argument("--dry-run", action="store_true", help="Send no write; say what would happen.")
        parser.add_argument(
            "--object", metavar="ID", help="A user or group id (or a userName / displayName)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        target = Target.objects.select_related("profile").filter(name=options["name"]).first()
        if target is None:
            raise CommandError(f"No target named {options['name']!r}")
        if options["object"]:
            self._one(target, options["object"], dry_run=options["dry_run"])
        elif options["full"]:
            self._full(target, dry_run=options["dry_run"])
        else:
            raise CommandError("Say what to sync: --full or --object ID")

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

    def _full(self, target: Target, *, dry_run: bool) -> None:
        def progress(plan: SyncPlan) -> None:
            self.stderr.write(
                f"\r{plan.users} users, {plan.groups} groups{' queued' if not dry_run else ''}...", ending=""
            )
            self.stderr.flush()

        plan = target_full_sync(target=target, dry_run=dry_run, progress=progress)
        self.stderr.write("")
        verb = "would queue" if dry_run else "queued"
        self.stdout.write(
            f"{target.name}: {verb} {plan.users} users and {plan.groups} groups "
            f"({plan.unlinked} not yet linked: matched or created on delivery)"
            + (f"; {plan.leaving} linked objects out of scope (to disable or delete)" if plan.leaving else "")
        )


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
