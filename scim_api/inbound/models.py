"""Inbound sources, their jobs, the staged records of each job, and scheduled (effective-dated) actions."""

import uuid

from django.db import models
from django.db.models import Q
from django.utils.timezone import now

from directory.correlation import REQUEST_ID_MAX_LENGTH, current_request_id


class InboundSource(models.Model):
    """An HR system, a badge system or a CSV feed that pushes worker records into the directory.

    It authenticates with its own SCIM client token (`client`), and only that
    token can upload to it or read its jobs. A record matches a directory user
    when the value of `match_source` in the record equals the user's
    `match_target` attribute; the matching attribute is always written from
    the record's key, so a user created by this source is found by it again.
    """

    class MatchTarget(models.TextChoices):
        EMPLOYEE_NUMBER = "employeeNumber", "employeeNumber (enterprise extension)"
        EXTERNAL_ID = "externalId", "externalId"
        USER_NAME = "userName", "userName (ignoring case)"
        EXTENSION = "extension", "an extension attribute (below)"

    class LeaverAction(models.TextChoices):
        DISABLE = "disable", "disable the user (active = false)"
        DELETE = "delete", "delete the user"

    name = models.SlugField(
        max_length=64, unique=True, help_text="Used in the source's URL: /scim/v2/inbound/<name>/bulkUpload."
    )
    description = models.TextField(blank=True, default="")
    client = models.OneToOneField(
        "scim_api.ScimClient",
        on_delete=models.PROTECT,
        related_name="inbound_source",
        help_text="The SCIM client whose bearer token (or OAuth access token) this source uploads with.",
    )
    enabled = models.BooleanField(default=True, help_text="A disabled source's uploads are refused (403).")
    scim_access = models.BooleanField(
        "SCIM API access",
        default=False,
        help_text="Also let the source's token use the rest of the SCIM API (Users, Groups, Bulk, /Me...) "
        "within its scope. Off, it may only upload to this source and read its jobs (403 elsewhere).",
    )

    match_source = models.CharField(
        max_length=1000,
        default="externalId",
        help_text="The record's key: an attribute path of the payload (externalId, "
        "urn:contoso:hr:1.0:User:workerId) or an expression.",
    )
    match_target = models.CharField(
        max_length=32, choices=MatchTarget.choices, default=MatchTarget.EMPLOYEE_NUMBER
    )
    match_extension = models.CharField(
        "match extension attribute",
        max_length=500,
        blank=True,
        default="",
        help_text="With the match target 'an extension attribute': a single-valued string attribute of "
        "a User extension schema defined in this directory, as its URN and name "
        "(urn:contoso:hr:1.0:User:employeeId). Make it unique, so that one user matches.",
    )
    map_standard_attributes = models.BooleanField(
        default=True,
        help_text="Take the core and enterprise User attributes present in a record as they are (and "
        "the attributes of extension schemas defined in this directory); the mappings below apply on top.",
    )
    # [{"target": "<directory attribute path>", "source": "<payload path or expression>"}]
    mappings = models.JSONField(
        default=list,
        blank=True,
        help_text='A list of {"target": "department", "source": "[urn:contoso:hr:1.0:User:dept]"}: '
        "target is a directory attribute (SCIM path), source an attribute path of the payload or an "
        "expression over it (the outbound mapping language). A source that yields no value leaves the "
        "target alone.",
    )
    scoping_filter = models.TextField(
        blank=True,
        default="",
        help_text='A SCIM filter over the record (e.g. not (userType eq "Contractor")); records it does '
        "not match are skipped. Empty: every record is in scope.",
    )

    allow_create = models.BooleanField("may create users", default=True)
    allow_update = models.BooleanField("may update attributes", default=True)
    allow_enable = models.BooleanField("may enable users (rehires)", default=True)
    allow_disable = models.BooleanField("may disable or delete users (leavers)", default=True)
    leaver_action = models.CharField(
        max_length=16, choices=LeaverAction.choices, default=LeaverAction.DISABLE
    )

    hire_date_source = models.CharField(
        max_length=1000,
        blank=True,
        default="",
        help_text="Optional: the record's hire date (path or expression). A joiner hired in the future "
        "is created disabled and enabled on that date.",
    )
    termination_date_source = models.CharField(
        max_length=1000,
        blank=True,
        default="",
        help_text="Optional: the record's termination date (path or expression). A leaver dated in the "
        "future is disabled on that date; one dated in the past is a leaver now.",
    )

    # The guard: leavers (disables and deletes) beyond any of these are held for an operator's approval.
    guard_job_max_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many leavers per job; empty: no limit."
    )
    guard_job_max_percent = models.FloatField(
        null=True, blank=True, help_text="At most this % of the users this source matches, per job."
    )
    guard_hour_max_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many leavers in any hour; empty: no limit."
    )
    guard_hour_max_percent = models.FloatField(
        null=True, blank=True, help_text="At most this % of the users this source matches, in any hour."
    )

    max_operations = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Operations per bulkUpload request; empty for the server default "
        "(SCIM_INBOUND_MAX_OPERATIONS).",
    )
    created = models.DateTimeField(default=now, editable=False)
    last_modified = models.DateTimeField(default=now, editable=False)

    class Meta:
        verbose_name = "inbound source"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(guard_job_max_percent__isnull=True) | Q(guard_job_max_percent__gte=0))
                & (Q(guard_hour_max_percent__isnull=True) | Q(guard_hour_max_percent__gte=0)),
                name="scim_api_inboundsource_guard_percent",
            ),
            models.CheckConstraint(
                condition=Q(max_operations__isnull=True) | Q(max_operations__gte=1),
                name="scim_api_inboundsource_max_operations",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def match_label(self) -> str:
        """The directory attribute records are matched on, as messages name it."""
        return self.match_extension if self.match_target == self.MatchTarget.EXTENSION else self.match_target

    @property
    def has_guard(self) -> bool:
        return any(
            limit is not None
            for limit in (
                self.guard_job_max_count,
                self.guard_job_max_percent,
                self.guard_hour_max_count,
                self.guard_hour_max_percent,
            )
        )


class InboundJob(models.Model):
    """One upload (a bulkUpload request or a CSV file): its records are staged, then applied by a worker.

    Jobs of one source are applied one at a time, oldest first, so records about
    one person apply in the order they were sent. `lease_until` is how long the
    worker that claimed it owns it; the scheduler hands a job whose lease ran
    out (a killed worker) to another, which resumes at the first pending record.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        COMPLETED_WITH_ERRORS = "completedWithErrors", "completed with errors"
        FAILED = "failed"

    class Origin(models.TextChoices):
        API = "api", "bulkUpload API"
        CSV = "csv", "CSV upload (admin)"
        CLI = "cli", "import_users command"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    source = models.ForeignKey(InboundSource, on_delete=models.CASCADE, related_name="jobs")
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.API)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.QUEUED)
    # RFC 7644 §3.7.3: stop after this many failed operations; the rest are skipped.
    fail_on_errors = models.PositiveIntegerField(null=True, blank=True)
    total = models.PositiveIntegerField(default=0)
    # Outcome → count, written when the job ends (a running job's are counted from its records).
    counts = models.JSONField(default=dict, blank=True)
    created_by = models.CharField(max_length=255, blank=True, default="")
    filename = models.CharField(max_length=255, blank=True, default="")
    detail = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(default=now, editable=False)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    # The upload request's X-Request-ID: the worker applying the job writes its changes under it.
    request_id = models.CharField(
        max_length=REQUEST_ID_MAX_LENGTH, blank=True, default=current_request_id, db_default=""
    )

    class Meta:
        verbose_name = "inbound job"
        ordering = ["-created"]
        indexes = [
            # The claim (scim_api.inbound.services.job_claim) looks for a source's oldest unfinished job.
            models.Index(
                fields=["source", "created"],
                name="scim_api_inboundjob_open",
                condition=Q(status__in=["queued", "running"]),
            ),
            models.Index(fields=["created"], name="scim_api_inboundjob_created"),
        ]

    def __str__(self) -> str:
        return f"{self.source} job {self.created:%Y-%m-%d %H:%M:%S} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.COMPLETED, self.Status.COMPLETED_WITH_ERRORS, self.Status.FAILED)


class InboundRecord(models.Model):
    """One operation of a job: the record as sent, and what applying it did to the directory."""

    class Outcome(models.TextChoices):
        PENDING = "pending"
        CREATED = "created"
        UPDATED = "updated"
        ENABLED = "enabled"
        DISABLED = "disabled"
        DELETED = "deleted"
        UNCHANGED = "unchanged"
        SKIPPED = "skipped"
        FAILED = "failed"
        HELD = "held", "held by the guard"

    id = models.BigAutoField(primary_key=True)
    # No index of its own: the (job, index) and (job, outcome) indexes serve every lookup by job.
    job = models.ForeignKey(InboundJob, on_delete=models.CASCADE, related_name="records", db_index=False)
    # Position in the request (0-based); records apply in this order.
    index = models.PositiveIntegerField()
    bulk_id = models.CharField("bulkId", max_length=255, blank=True, default="")
    # The record's matching value, computed when it was staged ("" when it has none).
    key = models.CharField(max_length=255, blank=True, default="")
    # Staged as a leaver (inactive, or with a termination date, past or future): what the guard counts.
    leaver = models.BooleanField(default=False)
    data = models.JSONField(default=dict)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING)
    reason = models.TextField(blank=True, default="")
    # The user the record applied to. Kept when the user is deleted (the record tells what happened to
    # whom), so neither a database constraint nor an index: a random-UUID index written with every
    # outcome would cost more than the rare lookup by user.
    user = models.ForeignKey(
        "directory.User",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="inbound_records",
    )
    # The SCIM Error body of a failed record.
    error = models.JSONField(null=True, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    # SCIM attribute → [old, new] of what applying the record changed.
    changes = models.JSONField(default=dict, blank=True)
    # The manager's key (enterprise manager.value), while it waits for the end of the job to resolve.
    manager_key = models.CharField(max_length=255, blank=True, default="")
    manager_pending = models.BooleanField(default=False)
    applied = models.DateTimeField(null=True, blank=True)
    approved_by = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        verbose_name = "inbound record"
        # By the column, not the relation: `job` would join the jobs table for its own ordering.
        ordering = ["job_id", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="scim_api_inboundrecord_index")]
        indexes = [
            models.Index(fields=["job", "outcome"], name="scim_api_inboundrec_outcome"),
            # The hourly guard counts a source's leavers applied in the last hour.
            models.Index(
                fields=["applied"],
                name="scim_api_inboundrec_leavers",
                condition=Q(outcome__in=["disabled", "deleted"]),
            ),
            models.Index(fields=["key"], name="scim_api_inboundrec_key"),
        ]

    def __str__(self) -> str:
        return f"{self.bulk_id or self.index} ({self.outcome})"


class HeldInboundRecord(InboundRecord):
    """Records the guard holds, as their own list in the admin (approve or reject)."""

    class Meta:
        proxy = True
        verbose_name = "held inbound leaver"
        verbose_name_plural = "held inbound leavers"


class InboundScheduledAction(models.Model):
    """An enable (future hire) or disable (future termination) due on a date, applied by the scheduler."""

    class Action(models.TextChoices):
        ENABLE = "enable"
        DISABLE = "disable"

    class State(models.TextChoices):
        PENDING = "pending"
        # Due disables the guard stopped on their day; an operator approves (back to pending) or cancels.
        HELD = "held", "held by the guard"
        DONE = "done"
        CANCELLED = "cancelled"
        FAILED = "failed"

    # States of an action not yet done, cancelled or failed.
    OPEN = (State.PENDING, State.HELD)

    id = models.BigAutoField(primary_key=True)
    source = models.ForeignKey(InboundSource, on_delete=models.CASCADE, related_name="scheduled_actions")
    # Kept when the user is deleted (by this action under a delete policy, or otherwise): the row is
    # the history of what was done, and the guard counts the deletes it did in the last hour.
    user = models.ForeignKey(
        "directory.User",
        null=True,
        on_delete=models.SET_NULL,
        related_name="inbound_scheduled_actions",
    )
    action = models.CharField(max_length=8, choices=Action.choices)
    due = models.DateTimeField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    record = models.ForeignKey(
        InboundRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="scheduled_actions"
    )
    created = models.DateTimeField(default=now, editable=False)
    done = models.DateTimeField(null=True, blank=True)
    detail = models.TextField(blank=True, default="")
    # Who let a held disable through: approved actions are not counted by the guard again.
    approved_by = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        verbose_name = "scheduled inbound action"
        ordering = ["due", "id"]
        constraints = [
            # One open (pending or held) enable and disable per person and source: a newer record moves it.
            models.UniqueConstraint(
                fields=["source", "user", "action"],
                condition=Q(state__in=["pending", "held"]),
                name="scim_api_inboundaction_one_pending",
            )
        ]
        indexes = [
            models.Index(fields=["due"], name="scim_api_inboundaction_due", condition=Q(state="pending"))
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.user_id} on {self.due:%Y-%m-%d} ({self.state})"


class InboundUpload(models.Model):
    """A CSV file between the admin's upload, mapping and preview steps (purged after a day)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    source = models.ForeignKey(InboundSource, on_delete=models.CASCADE, related_name="uploads")
    filename = models.CharField(max_length=255, blank=True, default="")
    content = models.TextField()
    created_by = models.CharField(max_length=255, blank=True, default="")
    created = models.DateTimeField(default=now, editable=False)

    class Meta:
        verbose_name = "inbound CSV upload"
        ordering = ["-created"]

    def __str__(self) -> str:
        return self.filename or str(self.pk)
