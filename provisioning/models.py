"""Outbound provisioning: downstream SCIM targets, what was written to them, and the delivery queue.

Correctness lives here, in the database: one active delivery per (target,
object) so bursts coalesce and one worker at a time acts on an object, one
link (remote id) per (target, object), and every attempt logged. Celery only
carries delivery ids; a lost message is found again by the sweeper.
"""

import json
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils.timezone import now

from directory.correlation import REQUEST_ID_MAX_LENGTH
from directory.models import Group, User
from provisioning import crypto
from provisioning.scoping import ScopingError, parse_filters
from provisioning.sources import PathError, check_source_path


class ObjectType(models.TextChoices):
    USER = "user"
    GROUP = "group"


class VendorProfile(models.Model):
    """How one kind of downstream SCIM service bends the RFC, as data rather than code.

    The delivery engine reads these fields instead of branching on vendor
    names, so a new quirk is a new row, not a release.
    """

    class PatchStyle(models.TextChoices):
        RFC = "rfc", "RFC 7644 (lower-case ops, member removal by value filter path)"
        ENTRA = "entra", "Entra-like (capitalised ops, member removal by value list)"

    class UpdateMethod(models.TextChoices):
        PATCH = "patch", "PATCH the changed attributes"
        PUT = "put", "PUT the whole resource"

    class SoftDelete(models.TextChoices):
        ACTIVE_FALSE = "active_false", "set active=false"
        DELETE = "delete", "DELETE the resource"

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    patch_style = models.CharField(max_length=16, choices=PatchStyle.choices, default=PatchStyle.RFC)
    # False for targets whose GET /Groups leaves `members` out (AWS IAM Identity
    # Center): membership is then only ever diffed against what was last written.
    groups_return_members = models.BooleanField(default=True)
    # Member values per PATCH request; larger changes are split into several requests.
    max_patch_operations = models.PositiveIntegerField(default=100)
    user_update_method = models.CharField(
        max_length=8, choices=UpdateMethod.choices, default=UpdateMethod.PATCH
    )
    group_update_method = models.CharField(
        max_length=8, choices=UpdateMethod.choices, default=UpdateMethod.PATCH
    )
    # What "delete this object downstream" means on this target.
    soft_delete = models.CharField(max_length=16, choices=SoftDelete.choices, default=SoftDelete.DELETE)
    # Attributes the target can filter on (`attr eq "value"`); matching skips the others.
    filterable_attributes = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name = "vendor profile"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_patch_operations__gte=1), name="provisioning_profile_max_ops_positive"
            ),
            models.CheckConstraint(
                condition=Q(patch_style__in=["rfc", "entra"]), name="provisioning_profile_patch_style_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def can_filter(self, attribute: str) -> bool:
        return not self.filterable_attributes or attribute in self.filterable_attributes


def default_user_matching() -> list[str]:
    return ["externalId", "userName"]


def default_group_matching() -> list[str]:
    return ["externalId", "displayName"]


class Target(models.Model):
    """A downstream SCIM 2.0 service that the directory provisions.

    Credentials are stored encrypted (see provisioning.crypto) and are only
    decrypted in memory to build an HTTP client; they are never logged.
    """

    class AuthType(models.TextChoices):
        BEARER = "bearer", "bearer token"
        OAUTH_CLIENT_CREDENTIALS = "oauth_client_credentials", "OAuth 2.0 client credentials"
        BASIC = "basic", "HTTP Basic"

    class Scope(models.TextChoices):
        ALL = "all", "all users and groups"
        ASSIGNED = "assigned", "assigned users and groups (members of assigned groups included, nested too)"

    class DeletionPolicy(models.TextChoices):
        DISABLE = "disable", "disable users that leave scope (active=false); delete groups"
        DELETE = "delete", "delete objects that leave scope"
        SKIP = "skip", "skip out-of-scope deletions (leave them downstream)"

    class CircuitState(models.TextChoices):
        HEALTHY = "healthy"
        DEGRADED = "degraded"
        QUARANTINED = "quarantined"

    class ReconcilePolicy(models.TextChoices):
        REPORT = "report", "report only"
        CORRECT = "correct", "correct drift and missing objects"
        REMOVE_ORPHANS = "remove_orphans", "also remove orphans (per the deletion policy)"

    name = models.CharField(max_length=100, unique=True)
    base_url = models.URLField(
        max_length=500, help_text="The SCIM base URL, e.g. https://app.example/scim/v2"
    )
    auth_type = models.CharField(max_length=32, choices=AuthType.choices, default=AuthType.BEARER)
    # A Fernet token holding the credentials as JSON; see set_credentials().
    encrypted_credentials = models.TextField(blank=True, default="", editable=False)
    connect_timeout = models.FloatField(default=5.0)
    read_timeout = models.FloatField(default=30.0)
    profile = models.ForeignKey(VendorProfile, on_delete=models.PROTECT, related_name="targets")
    rate_limit_rps = models.FloatField(default=25.0, help_text="Requests per second (0: no limit).")
    rate_limit_burst = models.PositiveIntegerField(default=50)
    max_concurrency = models.PositiveIntegerField(default=4)
    user_matching = models.JSONField(
        default=default_user_matching, help_text="Attributes tried in order to find an existing user."
    )
    group_matching = models.JSONField(
        default=default_group_matching, help_text="Attributes tried in order to find an existing group."
    )
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.ASSIGNED)
    # Attribute scoping filters (provisioning.scoping): an object is in scope when it is assigned
    # (or the scope is "all") and passes them. Empty: no filter.
    user_scoping_filters = models.JSONField(
        default=list,
        blank=True,
        help_text='Users: a list of filters, each a list of clauses {"attribute", "operator", "value"}; '
        "an object passes when every clause of at least one filter holds.",
    )
    group_scoping_filters = models.JSONField(default=list, blank=True, help_text="Groups: as for users.")
    deletion_policy = models.CharField(
        max_length=16, choices=DeletionPolicy.choices, default=DeletionPolicy.DISABLE
    )
    # The deletion guard: disables and deletes beyond any of these are held for an operator's approval.
    # Empty: no limit. Percentages are of the target's population (the larger of the objects in
    # scope and the objects linked on it, so what just left scope still counts).
    guard_run_max_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="Disables/deletes per full sync run."
    )
    guard_run_max_percent = models.FloatField(
        null=True, blank=True, help_text="Disables/deletes per full sync run, in % of the target's objects."
    )
    guard_hour_max_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="Disables/deletes in any rolling hour."
    )
    guard_hour_max_percent = models.FloatField(
        null=True, blank=True, help_text="Disables/deletes in any rolling hour, in % of the target's objects."
    )
    enabled = models.BooleanField(default=True, help_text="Off: changes are not even queued.")
    paused = models.BooleanField(default=False, help_text="On: changes are queued but not sent.")
    circuit_state = models.CharField(
        max_length=16, choices=CircuitState.choices, default=CircuitState.HEALTHY
    )
    circuit_reason = models.TextField(blank=True, default="")
    circuit_next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The last full sync: when it was queued and the run id on its deliveries.
    last_full_sync_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_full_sync_run_id = models.UUIDField(null=True, blank=True, editable=False)
    created = models.DateTimeField(default=now, editable=False)
    # Bumped when the connection settings or credentials change, so cached HTTP clients are rebuilt.
    revision = models.PositiveIntegerField(default=1, editable=False)
    # Bumped by every change to the target's attribute mappings, so workers recompile them.
    mapping_revision = models.PositiveIntegerField(default=1, editable=False)
    reconcile_interval_minutes = models.PositiveIntegerField(
        default=360,
        help_text="Read the target and compare it with the directory every this many minutes (0: never).",
    )
    reconcile_policy = models.CharField(
        max_length=16, choices=ReconcilePolicy.choices, default=ReconcilePolicy.CORRECT
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(connect_timeout__gt=0), name="provisioning_target_timeout"),
            models.CheckConstraint(condition=Q(read_timeout__gt=0), name="provisioning_target_read_timeout"),
            models.CheckConstraint(condition=Q(rate_limit_rps__gte=0), name="provisioning_target_rps"),
            models.CheckConstraint(
                condition=Q(max_concurrency__gte=1), name="provisioning_target_concurrency"
            ),
            models.CheckConstraint(
                condition=Q(scope__in=["all", "assigned"]), name="provisioning_target_scope_valid"
            ),
            models.CheckConstraint(
                condition=Q(deletion_policy__in=["disable", "delete", "skip"]),
                name="provisioning_target_deletion_policy_valid",
            ),
            models.CheckConstraint(
                condition=(Q(guard_run_max_percent__isnull=True) | Q(guard_run_max_percent__gte=0))
                & (Q(guard_hour_max_percent__isnull=True) | Q(guard_hour_max_percent__gte=0)),
                name="provisioning_target_guard_percent",
            ),
            models.CheckConstraint(
                condition=Q(reconcile_policy__in=["report", "correct", "remove_orphans"]),
                name="provisioning_target_reconcile_policy_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def set_credentials(self, credentials: dict[str, Any]) -> None:
        """Encrypt and store credentials (e.g. {"token": ...}); save() persists them."""
        self.encrypted_credentials = crypto.encrypt(json.dumps(credentials, sort_keys=True))

    def get_credentials(self) -> dict[str, Any]:
        if not self.encrypted_credentials:
            return {}
        value: dict[str, Any] = json.loads(crypto.decrypt(self.encrypted_credentials))
        return value

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for field, object_type in (("user_scoping_filters", "user"), ("group_scoping_filters", "group")):
            try:
                for clauses in parse_filters(getattr(self, field)):
                    for clause in clauses:
                        check_source_path(clause.attribute, object_type)
            except (ScopingError, PathError) as exc:
                errors[field] = str(exc)
        if errors:
            raise ValidationError(errors)

    def has_deletion_guard(self) -> bool:
        return any(
            limit is not None
            for limit in (
                self.guard_run_max_count,
                self.guard_run_max_percent,
                self.guard_hour_max_count,
                self.guard_hour_max_percent,
            )
        )

    def scoping_filters_for(self, object_type: str) -> Any:
        return self.user_scoping_filters if object_type == ObjectType.USER else self.group_scoping_filters

    def matching_for(self, object_type: str) -> list[str]:
        rules = self.user_matching if object_type == ObjectType.USER else self.group_matching
        return [str(rule) for rule in rules or []]


class AttributeMapping(models.Model):
    """One attribute a target receives: which directory value (or expression, or constant) fills it.

    A target with no mapping rows for an object type gets the default mapping
    (provisioning.mapping.user_payload / group_payload). Rows are written by
    provisioning.configuration, which checks them and bumps the target's
    `mapping_revision`; workers compile a target's rows once per revision.
    """

    class SourceKind(models.TextChoices):
        ATTRIBUTE = "attribute", "directory attribute"
        EXPRESSION = "expression"
        CONSTANT = "constant"

    class Apply(models.TextChoices):
        ALWAYS = "always", "always"
        ON_CREATE = "on_create", "on create only"

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="mappings")
    object_type = models.CharField(max_length=8, choices=ObjectType.choices)
    target_attribute = models.CharField(
        max_length=255,
        help_text='SCIM path on the target: userName, name.givenName, emails[type eq "work"].value, '
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
    )
    source_kind = models.CharField(max_length=16, choices=SourceKind.choices, default=SourceKind.ATTRIBUTE)
    source = models.TextField(
        blank=True, default="", help_text="A directory attribute path, an expression, or the constant text."
    )
    default_value = models.CharField(
        max_length=1000, blank=True, default="", help_text="Sent when the source is empty."
    )
    apply = models.CharField(max_length=16, choices=Apply.choices, default=Apply.ALWAYS)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "attribute mapping"
        ordering = ["target", "object_type", "position", "id"]
        constraints = [
            models.UniqueConstraint(
                "target",
                "object_type",
                Lower("target_attribute"),
                name="provisioning_mapping_attribute_unique",
                violation_error_message="This target attribute is mapped already.",
            ),
            models.CheckConstraint(
                condition=Q(source_kind__in=["attribute", "expression", "constant"]),
                name="provisioning_mapping_source_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(apply__in=["always", "on_create"]), name="provisioning_mapping_apply_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.target_attribute} ← {self.source or '(empty)'}"


class TargetAssignment(models.Model):
    """A user or group assigned to a target whose scope is "assigned"."""

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="assignments")
    user = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.CASCADE, related_name="target_assignments"
    )
    group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.CASCADE, related_name="target_assignments"
    )
    created = models.DateTimeField(default=now, editable=False)

    class Meta:
        verbose_name = "assignment"
        constraints = [
            models.CheckConstraint(
                condition=(Q(user__isnull=False) & Q(group__isnull=True))
                | (Q(user__isnull=True) & Q(group__isnull=False)),
                name="provisioning_assignment_one_object",
            ),
            models.UniqueConstraint(fields=["target", "user"], name="provisioning_assignment_user_unique"),
            models.UniqueConstraint(fields=["target", "group"], name="provisioning_assignment_group_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user or self.group} → {self.target}"


class TargetScope(models.Model):
    """The stored scope of an "assigned" target: one row per user or group in it.

    provisioning.scope keeps it in step with memberships as change events
    arrive; the rows it adds and removes are the enter/leave deliveries.
    """

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="scope_rows")
    object_type = models.CharField(max_length=8, choices=ObjectType.choices)
    object_id = models.UUIDField()
    since = models.DateTimeField(default=now)

    class Meta:
        verbose_name = "scope member"
        constraints = [
            models.UniqueConstraint(
                fields=["target", "object_type", "object_id"], name="provisioning_scope_unique"
            ),
        ]
        indexes = [models.Index(fields=["object_type", "object_id"], name="provisioning_scope_object")]

    def __str__(self) -> str:
        return f"{self.object_type} {self.object_id} in {self.target_id}"


class ScopeExclusion(models.Model):
    """An object its target's assignments cover but its scoping filters keep out, and why.

    Kept beside TargetScope so that a membership change re-evaluates only the
    objects that newly became candidates, and so the admin and the
    provisioning log can say why an object is not provisioned.
    """

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="scope_exclusions")
    object_type = models.CharField(max_length=8, choices=ObjectType.choices)
    object_id = models.UUIDField()
    reason = models.CharField(max_length=255, blank=True, default="")
    since = models.DateTimeField(default=now)

    class Meta:
        verbose_name = "scope exclusion"
        constraints = [
            models.UniqueConstraint(
                fields=["target", "object_type", "object_id"], name="provisioning_exclusion_unique"
            ),
        ]
        indexes = [models.Index(fields=["object_type", "object_id"], name="provisioning_exclusion_object")]

    def __str__(self) -> str:
        return f"{self.object_type} {self.object_id} out of {self.target_id}: {self.reason}"


class TargetLink(models.Model):
    """Which remote resource stands for a directory object on a target, and what was last written to it."""

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="links")
    object_type = models.CharField(max_length=8, choices=ObjectType.choices)
    object_id = models.UUIDField()
    remote_id = models.CharField(max_length=255)
    # sha256 of the attributes last written (members excluded): an unchanged object costs no request.
    last_hash = models.CharField(max_length=64, blank=True, default="")
    # {"attributes": {...last written payload...}, "members": {object id: remote id}, "active": bool}
    state = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(default=now, editable=False)
    updated = models.DateTimeField(default=now)

    class Meta:
        verbose_name = "link"
        constraints = [
            models.UniqueConstraint(
                fields=["target", "object_type", "object_id"], name="provisioning_link_unique"
            ),
            models.CheckConstraint(condition=~Q(remote_id=""), name="provisioning_link_remote_id_not_empty"),
        ]
        indexes = [
            models.Index(fields=["target", "remote_id"], name="provisioning_link_remote"),
            models.Index(fields=["object_type", "object_id"], name="provisioning_link_object"),
        ]

    def __str__(self) -> str:
        return f"{self.object_type} {self.object_id} = {self.remote_id} on {self.target_id}"


ACTIVE_DELIVERY_STATES = ("queued", "running", "held")


class Delivery(models.Model):
    """Work to bring one object on one target to its current desired state.

    At most one is active per (target, object): the relay folds newer events
    into it (raising `version`), and a worker that finishes an older version
    queues it again. A worker owns it while `lease_until` is in the future.
    """

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        HELD = "held"
        SUPERSEDED = "superseded"

    class Priority(models.IntegerChoices):
        # Lower runs first: leavers before joiners and edits, backfills last.
        LEAVER = 0, "leaver / disable"
        CHANGE = 1, "change"
        BACKFILL = 2, "backfill (full sync)"

    id = models.BigAutoField(primary_key=True)
    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="deliveries")
    object_type = models.CharField(max_length=8, choices=ObjectType.choices)
    object_id = models.UUIDField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.CHANGE)
    # The newest ChangeEvent id folded in (0 for a full sync or on-demand run).
    version = models.BigIntegerField(default=0)
    # The version the current or last lease started from.
    leased_version = models.BigIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Consecutive transient failures: drives the backoff, reset by a success.
    failures = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When a task for it was last sent to the broker; the sweeper resends stale ones.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # A group waiting for some members to get a remote id first.
    waiting_for_members = models.BooleanField(default=False)
    # Set when an operator approves a disable/delete the deletion guard held: it goes through next time.
    guard_approved_by = models.CharField(max_length=150, blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    run_id = models.UUIDField(null=True, blank=True)
    # The request (X-Request-ID) and the time of the newest change folded in (`version`): the log rows
    # carry the one, and the change → applied lag metric is measured from the other.
    request_id = models.CharField(max_length=REQUEST_ID_MAX_LENGTH, blank=True, default="", db_default="")
    changed_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=now, editable=False)
    updated = models.DateTimeField(default=now)

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-id"]
        constraints = [
            # Bursts coalesce: a second event for the same object finds this row
            # (INSERT ... ON CONFLICT in provisioning.relay) instead of adding one.
            models.UniqueConstraint(
                fields=["target", "object_type", "object_id"],
                condition=Q(state__in=ACTIVE_DELIVERY_STATES),
                name="provisioning_delivery_one_active",
            ),
            models.CheckConstraint(
                condition=Q(state__in=["queued", "running", "done", "failed", "held", "superseded"]),
                name="provisioning_delivery_state_valid",
            ),
            models.CheckConstraint(
                condition=~Q(state="running") | Q(lease_until__isnull=False),
                name="provisioning_delivery_running_has_lease",
            ),
        ]
        indexes = [
            # The sweeper: active deliveries whose lease expired or whose retry is due.
            models.Index(
                fields=["state", "next_attempt_at"],
                name="provisioning_delivery_due",
                condition=Q(state__in=["queued", "running"]),
            ),
            models.Index(fields=["object_type", "object_id"], name="provisioning_delivery_object"),
            models.Index(fields=["target", "state"], name="provisioning_delivery_target"),
            # A sync or reconciliation run's progress: its deliveries still active, failed, done.
            models.Index(fields=["run_id", "state"], name="provisioning_delivery_run"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.object_type} {self.object_id} → {self.target_id} ({self.state})"


class DeliveryAttempt(models.Model):
    """The provisioning log: one row per attempt to bring one object to its desired state on one target."""

    class Action(models.TextChoices):
        CREATE = "create"
        UPDATE = "update"
        ADOPT = "adopt"
        DISABLE = "disable"
        DELETE = "delete"
        NONE = "none", "no change"
        SKIP = "skip"

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        SKIPPED = "skipped"
        RETRY = "retry", "failed, will retry"
        FAILED = "failed"
        DISPUTED = "disputed"
        WAITING = "waiting", "waiting for members"
        DRY_RUN = "dry_run", "dry run"
        HELD = "held", "held by the deletion guard"

    id = models.BigAutoField(primary_key=True)
    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="attempts")
    delivery = models.ForeignKey(
        Delivery, null=True, blank=True, on_delete=models.SET_NULL, related_name="attempt_log"
    )
    object_type = models.CharField(max_length=8, choices=ObjectType.choices)
    object_id = models.UUIDField()
    object_repr = models.CharField(max_length=255, blank=True, default="")
    attempt = models.PositiveIntegerField(default=1)
    run_id = models.UUIDField(default=uuid.uuid4)
    created = models.DateTimeField(default=now)
    action = models.CharField(max_length=16, choices=Action.choices, default=Action.NONE)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    in_scope = models.BooleanField(default=True)
    scope_reason = models.CharField(max_length=255, blank=True, default="")
    match_result = models.CharField(max_length=32, blank=True, default="")
    matched_attribute = models.CharField(max_length=64, blank=True, default="")
    # {"attribute": [old, new]}
    modified_properties = models.JSONField(default=dict, blank=True)
    # The last write sent (the one that decided the outcome); every request is in `requests`.
    method = models.CharField(max_length=8, blank=True, default="")
    path = models.CharField(max_length=500, blank=True, default="")
    request_body = models.JSONField(null=True, blank=True)
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    remote_id = models.CharField(max_length=255, blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    # [{"method", "path", "status", "duration_ms", "body"}] with bodies redacted.
    requests = models.JSONField(default=list, blank=True)
    # The request that made the change this attempt pushed ("" for none: a scheduled sync, a shell).
    request_id = models.CharField(max_length=REQUEST_ID_MAX_LENGTH, blank=True, default="", db_default="")

    class Meta:
        verbose_name = "provisioning log entry"
        verbose_name_plural = "provisioning log"
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["object_type", "object_id", "-created"], name="provisioning_attempt_object"),
            models.Index(fields=["target", "-created"], name="provisioning_attempt_target"),
            models.Index(fields=["outcome", "-created"], name="provisioning_attempt_outcome"),
            # purge of old log rows by age.
            models.Index(fields=["created"], name="provisioning_attempt_created"),
            # A run's outcome counts (provisioning.sync_runs) and its log rows in the admin.
            models.Index(fields=["run_id", "action"], name="provisioning_attempt_run"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type} {self.object_repr or self.object_id}: {self.outcome}"


class GuardGrant(models.Model):
    """A disable or delete the deletion guard let through: what its thresholds count.

    Written (under a lock on the target) before the request is sent, so two
    workers can never both take the last place below a threshold; one per
    delivery, so a retried request is not counted twice.
    """

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="guard_grants")
    delivery = models.OneToOneField(
        Delivery, null=True, blank=True, on_delete=models.SET_NULL, related_name="guard_grant"
    )
    object_type = models.CharField(max_length=8, choices=ObjectType.choices)
    object_id = models.UUIDField()
    action = models.CharField(max_length=16)
    run_id = models.UUIDField(null=True, blank=True)
    # The operator who approved it after it was held; empty when it was within the thresholds.
    approved_by = models.CharField(max_length=150, blank=True, default="")
    created = models.DateTimeField(default=now)

    class Meta:
        verbose_name = "deletion guard grant"
        indexes = [
            # The rolling-hour and per-run counts.
            models.Index(fields=["target", "created"], name="provisioning_grant_hour"),
            models.Index(fields=["target", "run_id"], name="provisioning_grant_run"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type} {self.object_id} on {self.target_id}"


class TargetSample(models.Model):
    """A target's queue at one minute: the history behind the dashboard's queue-depth charts.

    Queue depth is a level, not an event, so nothing else records it over time.
    provisioning.sampling writes one row per target a minute (beat) and purges
    rows older than SAMPLE_RETENTION_DAYS.
    """

    id = models.BigAutoField(primary_key=True)
    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="samples")
    # Truncated to the minute: a second beat in the same minute adds nothing.
    taken_at = models.DateTimeField()
    # Deliveries queued or running, and those the deletion guard holds.
    queued = models.PositiveIntegerField(default=0)
    held = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "queue sample"
        constraints = [
            models.UniqueConstraint(fields=["target", "taken_at"], name="provisioning_sample_unique"),
        ]
        indexes = [
            # The dashboard's chart query (every target over a window) and the purge by age.
            models.Index(fields=["taken_at"], name="provisioning_sample_taken"),
        ]

    def __str__(self) -> str:
        return f"{self.target_id} at {self.taken_at:%Y-%m-%d %H:%M}: {self.queued} queued, {self.held} held"


class HeldDelivery(Delivery):
    """Deliveries the deletion guard holds, as their own list in the admin."""

    class Meta:
        proxy = True
        verbose_name = "held disable or delete"
        verbose_name_plural = "held disables and deletes"


class SyncRun(models.Model):
    """One full sync of a target: every object in scope queued in the backfill lane, then delivered.

    Objects are queued a page at a time, and the cursor (phase and last key)
    commits with each page's deliveries, so an interrupted run resumes after
    the last page it queued. Its deliveries carry its id, and so do their
    provisioning log rows: the outcome counts are read from those.
    """

    class State(models.TextChoices):
        QUEUING = "queuing", "queuing objects"
        DELIVERING = "delivering"
        DONE = "done"
        CANCELLED = "cancelled"

    class Phase(models.TextChoices):
        USERS = "users"
        GROUPS = "groups"
        # Linked objects no longer in scope: they are disabled or deleted per the deletion policy.
        LEAVERS = "leavers"
        END = "end"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="sync_runs")
    trigger = models.CharField(max_length=64, blank=True, default="")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUING)
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.USERS)
    # The last key queued in the current phase (a user or group id, or a scope or link row id).
    cursor = models.CharField(max_length=64, blank=True, default="")
    # Objects in scope looked at, linked objects found out of scope, and deliveries made active for
    # all of them (new, or an active one folded into).
    users = models.PositiveIntegerField(default=0)
    groups = models.PositiveIntegerField(default=0)
    leavers = models.PositiveIntegerField(default=0)
    queued = models.PositiveIntegerField(default=0)
    # Outcomes, counted from the provisioning log (distinct objects per action).
    created_count = models.PositiveIntegerField("created", default=0)
    updated_count = models.PositiveIntegerField("updated", default=0)
    removed_count = models.PositiveIntegerField("disabled or deleted", default=0)
    unchanged_count = models.PositiveIntegerField("unchanged", default=0)
    skipped_count = models.PositiveIntegerField("skipped", default=0)
    failed_count = models.PositiveIntegerField("failed", default=0)
    pending_count = models.PositiveIntegerField("still queued", default=0)
    started = models.DateTimeField(default=now)
    # Last time a process queued a page; a queuing run that stops beating is resumed by the tick.
    heartbeat = models.DateTimeField(default=now)
    queued_at = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "full sync run"
        ordering = ["-started"]
        constraints = [
            # Two processes queuing the same target's full sync would only race each other.
            models.UniqueConstraint(
                fields=["target"], condition=Q(state="queuing"), name="provisioning_syncrun_one_queuing"
            ),
            models.CheckConstraint(
                condition=Q(state__in=["queuing", "delivering", "done", "cancelled"]),
                name="provisioning_syncrun_state_valid",
            ),
        ]
        indexes = [models.Index(fields=["state", "heartbeat"], name="provisioning_syncrun_state")]

    def __str__(self) -> str:
        return f"full sync of {self.target_id} at {self.started:%Y-%m-%d %H:%M} ({self.state})"


class ReconciliationRun(models.Model):
    """One reading of a target compared with the directory and with what was last written to it.

    Counts per finding kind, and the corrections queued as ordinary deliveries
    (carrying this run's id) per the target's reconcile policy.
    """

    class State(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="reconciliation_runs")
    trigger = models.CharField(max_length=64, blank=True, default="")
    policy = models.CharField(max_length=16, choices=Target.ReconcilePolicy.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    remote_users = models.PositiveIntegerField(default=0)
    remote_groups = models.PositiveIntegerField(default=0)
    in_sync = models.PositiveIntegerField(default=0)
    drift = models.PositiveIntegerField("attribute drift", default=0)
    missing = models.PositiveIntegerField("missing downstream", default=0)
    orphans = models.PositiveIntegerField(default=0)
    unlinked = models.PositiveIntegerField("matched, not linked", default=0)
    membership_drift = models.PositiveIntegerField(default=0)
    membership_unknown = models.PositiveIntegerField("membership not verifiable", default=0)
    pending = models.PositiveIntegerField("not yet written", default=0)
    unprovisioned = models.PositiveIntegerField("in scope, never provisioned", default=0)
    corrections = models.PositiveIntegerField("corrections queued", default=0)
    requests = models.PositiveIntegerField("requests sent", default=0)
    error = models.TextField(blank=True, default="")
    started = models.DateTimeField(default=now)
    heartbeat = models.DateTimeField(default=now)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "reconciliation run"
        ordering = ["-started"]
        constraints = [
            models.UniqueConstraint(
                fields=["target"], condition=Q(state="running"), name="provisioning_reconcile_one_running"
            ),
            models.CheckConstraint(
                condition=Q(state__in=["running", "done", "failed"]),
                name="provisioning_reconcile_state_valid",
            ),
        ]
        indexes = [models.Index(fields=["target", "-started"], name="provisioning_reconcile_target")]

    def __str__(self) -> str:
        return f"reconciliation of {self.target_id} at {self.started:%Y-%m-%d %H:%M} ({self.state})"


class ReconciliationFinding(models.Model):
    """One difference a reconciliation found, with the three views compared and what was done about it."""

    class Kind(models.TextChoices):
        DRIFT = "drift", "attributes changed downstream"
        MISSING = "missing", "missing downstream"
        ORPHAN = "orphan", "orphan (no directory object in scope)"
        UNLINKED = "unlinked", "matches an object in scope, not linked"
        MEMBERSHIP_DRIFT = "membership_drift", "membership changed downstream"
        MEMBERSHIP_UNKNOWN = "membership_unknown", "membership not verifiable"
        PENDING = "pending", "directory change not yet written, none queued"
        UNPROVISIONED = "unprovisioned", "in scope, never provisioned, none queued"

    class Correction(models.TextChoices):
        NONE = "none", "reported only"
        QUEUED = "queued", "delivery queued"
        LINK_FORGOTTEN = "link_forgotten", "link forgotten"
        SKIPPED = "skipped", "not corrected"

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="findings")
    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="reconciliation_findings")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    object_type = models.CharField(max_length=8, choices=ObjectType.choices)
    object_id = models.UUIDField(null=True, blank=True)
    object_repr = models.CharField(max_length=255, blank=True, default="")
    remote_id = models.CharField(max_length=255, blank=True, default="")
    # {"attribute": {"desired": ..., "written": ..., "remote": ...}}, or member ids added/removed downstream.
    details = models.JSONField(default=dict, blank=True)
    correction = models.CharField(max_length=16, choices=Correction.choices, default=Correction.NONE)
    note = models.CharField(max_length=255, blank=True, default="")
    created = models.DateTimeField(default=now)

    class Meta:
        verbose_name = "reconciliation finding"
        ordering = ["run", "id"]
        indexes = [
            models.Index(fields=["run", "kind"], name="provisioning_finding_run"),
            models.Index(fields=["target", "-created"], name="provisioning_finding_target"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.object_type} {self.object_repr or self.remote_id}"


class ReconciliationSeen(models.Model):
    """Scratch rows: the remote ids one reconciliation has read, so links whose remote object was not
    among them are found by a query rather than by holding every id in memory. Deleted when it ends."""

    id = models.BigAutoField(primary_key=True)
    run_id = models.UUIDField()
    object_type = models.CharField(max_length=8, choices=ObjectType.choices)
    remote_id = models.CharField(max_length=255)

    class Meta:
        indexes = [
            models.Index(fields=["run_id", "object_type", "remote_id"], name="provisioning_seen_lookup"),
        ]

    def __str__(self) -> str:
        return f"{self.object_type} {self.remote_id} seen by {self.run_id}"
