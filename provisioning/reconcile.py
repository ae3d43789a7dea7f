"""Reconciliation: read what a target holds and compare it with the directory and with what was written.

Three views of every linked object are compared, attribute by attribute:
desired (the directory now, through the mapping), written (TargetLink.state,
what the last delivery sent) and remote (what the target answers now). An
attribute has *drifted* when the remote value is neither what was written
nor what is desired (a value equal to the desired one is a delivery that
landed but is not recorded yet, not drift). Written ≠ desired with the remote
still at written is a change *pending* (reported when no delivery is queued
for it). Group members get the same three-way treatment: a member added
downstream is one neither written nor desired, a member removed downstream
one both written and desired but absent.

The target is read a page at a time (GET /Users, then /Groups, index
pagination); the remote ids seen go to a scratch table, so links whose remote
object was never seen (*missing*, confirmed by a GET answering 404) come from
a query instead of an in-memory set. Remote objects without a link are
matched against the directory with the target's matching rules: a match in
scope without a link is *unlinked* (its next delivery adopts it); anything
else is an *orphan*. A target whose GET /Groups hides members is asked
`GET /Users?filter=groups.value eq "id"` per group when it can filter on
`groups.value`; otherwise its membership is reported as not verifiable.

Corrections follow the target's reconcile policy and are ordinary
deliveries, so the delivery path (matching, the deletion guard, the
provisioning log) applies to them: for drift, the link's written state is
set to the remote values first, so the delivery sends exactly what differs;
for a missing object the link is forgotten and the delivery creates it
again; an orphan is linked (to the out-of-scope object it matches, or to an
id of its own marked "orphan") and then leaves scope through the deletion
policy.
"""

from __future__ import annotations

import gc
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Lower
from django.utils import timezone

from directory.models import Group, Membership, User
from provisioning import queue
from provisioning.clients import (
    Exchange,
    GroupClient,
    PermanentError,
    RemoteNotFound,
    ScimConnection,
    ScimError,
    UserClient,
    filter_eq,
    redact,
)
from provisioning.conf import provisioning_setting
from provisioning.mapping import group_payloads, mapping_set_for, payload_hash, user_payloads
from provisioning.models import (
    ACTIVE_DELIVERY_STATES,
    Delivery,
    ObjectType,
    ReconciliationFinding,
    ReconciliationRun,
    ReconciliationSeen,
    SyncRun,
    Target,
    TargetLink,
    TargetScope,
    VendorProfile,
)
from provisioning.plans import writes
from provisioning.relay import deliveries_for_objects
from provisioning.scope import ObjectKey, scope_filter
from provisioning.services import Disputed, DryRunConnection, Engine, Push, target_connection

Kind = ReconciliationFinding.Kind
Correction = ReconciliationFinding.Correction
Policy = Target.ReconcilePolicy
USER, GROUP = ObjectType.USER.value, ObjectType.GROUP.value
# Ids shown per side in a membership finding (the counts are always complete).
MEMBER_SAMPLE = 20
# Pages read between two garbage collections.
GC_EVERY_PAGES = 10
# Namespace of the ids given to orphans that no directory object stands for.
ORPHAN_NAMESPACE = uuid.UUID("6f1d3c8e-5a7b-4e2f-9c0d-1b2a3c4d5e6f")


class ReconciliationBusy(Exception):
    pass


class RequestCounter(list[Exchange]):
    """Stands in for the clients' exchange log: counts the requests, keeps none of them (a page's
    response body is let go once the page is checked, so memory stays bounded by a page)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def append(self, exchange: Exchange) -> None:
        self.count += 1


def orphan_object_id(target: Target, object_type: str, remote_id: str) -> uuid.UUID:
    """A stable id for an orphan: the same remote object gets the same link every time."""
    return uuid.uuid5(ORPHAN_NAMESPACE, f"{target.pk}:{object_type}:{remote_id}")


# --- comparing ---------------------------------------------------------------------------


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def same(remote: Any, expected: Any) -> bool:
    """Whether the target's value holds what was sent.

    Targets add to what they are sent (meta, `display`, `$ref`, defaults), so
    a dict matches when it has every key sent with the same value, and a list
    when each element sent has a match, in any order, and no element is extra.
    """
    if _empty(expected):
        return _empty(remote)
    if isinstance(expected, dict):
        return isinstance(remote, dict) and all(
            same(remote.get(key), value) for key, value in expected.items()
        )
    if isinstance(expected, list):
        if not isinstance(remote, list) or len(remote) != len(expected):
            return False
        left = list(remote)
        for item in expected:
            for index, candidate in enumerate(left):
                if same(candidate, item):
                    del left[index]
                    break
            else:
                return False
        return True
    return bool(remote == expected)


def attribute_drift(
    desired: dict[str, Any], written: dict[str, Any], remote: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """{attribute: {desired, written, remote}} for each managed attribute changed downstream."""
    drift: dict[str, dict[str, Any]] = {}
    for key in sorted((set(desired) | set(written)) - {"schemas"}):
        d, w, r = desired.get(key), written.get(key), remote.get(key)
        if not same(r, w) and not same(r, d):
            drift[key] = {"desired": d, "written": w, "remote": r}
    return drift


def member_drift(remote: set[str], written: set[str], desired: set[str]) -> tuple[set[str], set[str]]:
    """(added downstream, removed downstream), in remote ids."""
    return remote - written - desired, (written & desired) - remote


# --- the result ----------------------------------------------------------------------------


@dataclass
class Preview:
    """For a dry run: the requests a finding's correction would send."""

    action: str
    requests: list[dict[str, Any]]
    error: str = ""


@dataclass
class Reconciliation:
    run: ReconciliationRun
    dry_run: bool
    # A dry run keeps a few findings per kind in memory (a real one stores them all, up to the cap).
    samples: dict[str, list[ReconciliationFinding]] = field(default_factory=dict)
    previews: dict[int, Preview] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def sample_findings(self, per_kind: int = 3) -> dict[str, list[ReconciliationFinding]]:
        if self.dry_run:
            return self.samples
        found: dict[str, list[ReconciliationFinding]] = {}
        for kind in Kind.values:
            rows = list(self.run.findings.filter(kind=kind).order_by("id")[:per_kind])
            if rows:
                found[kind] = rows
        return found


@dataclass
class _Correction:
    """One correction, applied with its page: rewrite or create a link, forget one, queue a delivery."""

    finding: ReconciliationFinding
    key: ObjectKey | None = None
    priority: int = Delivery.Priority.CHANGE
    # (link, state it was read with) → new state and hash, written only if nobody wrote it meanwhile.
    rewrite: tuple[TargetLink, dict[str, Any], str] | None = None
    create_link: TargetLink | None = None
    forget: TargetLink | None = None
    # Groups whose written members still name a forgotten user's old remote id.
    scrub_remote_id: str = ""


# --- the reconciler ------------------------------------------------------------------------


class Reconciler:
    """One reading of one target: findings as it goes, corrections applied a page at a time."""

    def __init__(
        self,
        target: Target,
        run: ReconciliationRun,
        *,
        dry_run: bool,
        connection: ScimConnection,
        samples: int = 3,
    ) -> None:
        self.target, self.run, self.dry_run = target, run, dry_run
        self.profile: VendorProfile = target.profile
        self.exchanges = RequestCounter()
        self.connection = connection
        self.users = UserClient(connection, self.exchanges)
        self.groups = GroupClient(connection, self.exchanges)
        self.result = Reconciliation(run=run, dry_run=dry_run)
        self.samples = samples
        self.max_findings = provisioning_setting("RECONCILE_MAX_FINDINGS")
        self.removing_orphans = (
            run.policy == Policy.REMOVE_ORPHANS and target.deletion_policy != Target.DeletionPolicy.SKIP
        )
        self.page_corrections: list[_Correction] = []
        self.page_findings: list[ReconciliationFinding] = []
        self.page_rewrites: dict[int, _Correction] = {}

    # -- driving

    def reconcile(self) -> Reconciliation:
        page_size = provisioning_setting("RECONCILE_PAGE_SIZE")
        try:
            pages = 0
            for object_type, client in ((USER, self.users), (GROUP, self.groups)):
                for page in client.pages(page_size=page_size):
                    self.check_page(object_type, page)
                    self.flush()
                    pages += 1
                    if pages % GC_EVERY_PAGES == 0:
                        # A page's users (with their prefetched values) are reference cycles: left to
                        # Python's rare full collections, a long reading would hold many pages of them.
                        gc.collect()
            self.find_missing(page_size)
            self.find_unprovisioned(page_size)
            if self.run.membership_unknown:
                self.add(
                    Kind.MEMBERSHIP_UNKNOWN,
                    GROUP,
                    note=f"{self.run.membership_unknown} group(s): the target's GET /Groups hides members "
                    "and it cannot filter users on groups.value",
                )
            self.flush()
        finally:
            ReconciliationSeen.objects.filter(run_id=self.run.pk).delete()
            self.run.requests = self.exchanges.count
        return self.result

    def flush(self) -> None:
        """Apply the page's corrections and store its findings, in one transaction."""
        corrections, findings = self.page_corrections, self.page_findings
        self.page_corrections, self.page_findings, self.page_rewrites = [], [], {}
        if self.dry_run:
            return
        with transaction.atomic():
            keys: dict[ObjectKey, int] = {}
            for correction in corrections:
                if self._apply(correction) and correction.key is not None:
                    keys[correction.key] = min(
                        keys.get(correction.key, correction.priority), correction.priority
                    )
            for priority in sorted(set(keys.values())):
                batch = [key for key, wanted in keys.items() if wanted == priority]
                ids = deliveries_for_objects(target=self.target, keys=batch, priority=priority)
                for object_type in (USER, GROUP):
                    object_ids = [object_id for kind, object_id in batch if kind == object_type]
                    Delivery.objects.filter(
                        target=self.target,
                        object_type=object_type,
                        object_id__in=object_ids,
                        state__in=ACTIVE_DELIVERY_STATES,
                    ).update(run_id=self.run.pk)
                queue.send_on_commit(ids)
            ReconciliationFinding.objects.bulk_create(findings)
            self.run.heartbeat = timezone.now()
            self.run.save()

    def _apply(self, correction: _Correction) -> bool:
        finding = correction.finding
        now = timezone.now()
        if correction.rewrite is not None:
            link, state, last_hash = correction.rewrite
            # Only if no delivery wrote the link since it was read: that delivery's state is newer.
            if not TargetLink.objects.filter(
                pk=link.pk, updated=link.updated, last_hash=link.last_hash
            ).update(state=state, last_hash=last_hash, updated=now):
                finding.correction, finding.note = Correction.SKIPPED, "written by a delivery while checked"
                return False
        if correction.create_link is not None:
            try:
                with transaction.atomic():
                    correction.create_link.save()
            except IntegrityError:
                finding.correction, finding.note = Correction.SKIPPED, "linked by a delivery while checked"
                return False
        if correction.forget is not None:
            link = correction.forget
            if not TargetLink.objects.filter(pk=link.pk, updated=link.updated).delete()[0]:
                finding.correction, finding.note = Correction.SKIPPED, "written by a delivery while checked"
                return False
            if correction.scrub_remote_id:
                self._scrub_member(link.object_id, correction.scrub_remote_id)
            finding.correction = Correction.LINK_FORGOTTEN
        if correction.key is not None:
            finding.correction = Correction.QUEUED
        self.run.corrections += 1
        return True

    def _scrub_member(self, user_id: uuid.UUID, remote_id: str) -> None:
        """Groups that list a re-created user's old remote id as written: forget it, so the group's
        next delivery adds the new id instead of removing an id the target no longer has."""
        parents = Membership.objects.filter(member_user_id=user_id).values_list("group_id", flat=True)
        for link in TargetLink.objects.filter(target=self.target, object_type=GROUP, object_id__in=parents):
            members = dict(link.state.get("members") or {})
            if members.get(str(user_id)) == remote_id:
                del members[str(user_id)]
                TargetLink.objects.filter(pk=link.pk).update(state={**link.state, "members": members})

    # -- findings

    def _drifted(
        self,
        link: TargetLink,
        object_type: str,
        label: str,
        drift: dict[str, Any],
        state: dict[str, Any],
        *,
        note: str = "",
        priority: int = Delivery.Priority.CHANGE,
    ) -> None:
        """A linked object whose remote attributes differ from what was written: its finding, and the
        correction that records `state` (what the target holds now) as written and pushes it again."""
        new_state = {**link.state, "attributes": state}
        finding = self.add(
            Kind.DRIFT,
            object_type,
            object_id=link.object_id,
            object_repr=label,
            remote_id=link.remote_id,
            details=drift,
            note=note,
        )
        rewrite = (link, new_state, payload_hash(state))
        self.correct(
            finding,
            _Correction(finding, key=(object_type, link.object_id), priority=priority, rewrite=rewrite),
            preview=self.preview(object_type, link.object_id, self._rewritten(*rewrite)),
        )

    def add(
        self,
        kind: str,
        object_type: str,
        *,
        object_id: uuid.UUID | None = None,
        object_repr: str = "",
        remote_id: str = "",
        details: dict[str, Any] | None = None,
        note: str = "",
    ) -> ReconciliationFinding:
        counter = {
            Kind.DRIFT: "drift",
            Kind.MISSING: "missing",
            Kind.ORPHAN: "orphans",
            Kind.UNLINKED: "unlinked",
            Kind.MEMBERSHIP_DRIFT: "membership_drift",
            Kind.PENDING: "pending",
            Kind.UNPROVISIONED: "unprovisioned",
        }.get(Kind(kind))
        if counter is not None:
            setattr(self.run, counter, getattr(self.run, counter) + 1)
        finding = ReconciliationFinding(
            run=self.run,
            target=self.target,
            kind=kind,
            object_type=object_type,
            object_id=object_id,
            object_repr=object_repr[:255],
            remote_id=remote_id[:255],
            details=redact(details or {}),
            note=note[:255],
        )
        self.result.counts[kind] += 1
        if self.dry_run:
            bucket = self.result.samples.setdefault(kind, [])
            if len(bucket) < self.samples:
                finding.id = sum(len(found) for found in self.result.samples.values()) + 1
                bucket.append(finding)
        elif self.result.counts[kind] <= self.max_findings:
            self.page_findings.append(finding)
        return finding

    def correct(
        self,
        finding: ReconciliationFinding,
        correction: _Correction,
        *,
        preview: Callable[[], Push | None] | None = None,
    ) -> None:
        if self.dry_run:
            # Only the findings kept as samples get a preview: each costs an engine run.
            push = preview() if preview is not None and finding.id is not None else None
            if push is not None and finding.id is not None:
                self.result.previews[finding.id] = Preview(
                    action=str(push.action), requests=writes(push.exchanges), error=push.error
                )
            return
        if self.run.policy == Policy.REPORT:
            return
        if correction.rewrite is not None:
            link, state, last_hash = correction.rewrite
            earlier = self.page_rewrites.get(link.pk)
            if earlier is not None and earlier.rewrite is not None:
                # Attributes and members of one group drifted: one rewrite of its link carries both.
                merged = dict(earlier.rewrite[1])
                merged.update({key: value for key, value in state.items() if value != link.state.get(key)})
                earlier.rewrite = (link, merged, earlier.rewrite[2])
                correction.rewrite = None
            else:
                self.page_rewrites[link.pk] = correction
        self.page_corrections.append(correction)

    def _rewritten(self, link: TargetLink, state: dict[str, Any], last_hash: str) -> TargetLink:
        """`link` as a correction's rewrite would leave it (unsaved), for the dry-run preview."""
        return TargetLink(
            pk=link.pk,
            target=self.target,
            object_type=link.object_type,
            object_id=link.object_id,
            remote_id=link.remote_id,
            state=state,
            last_hash=last_hash,
        )

    def preview(
        self, object_type: str, object_id: uuid.UUID, link: TargetLink | None
    ) -> Callable[[], Push | None]:
        """A dry run's view of a correction: the engine run on the link as the correction leaves it."""
        return lambda: self._preview(object_type, object_id, link)

    def _preview(self, object_type: str, object_id: uuid.UUID, link: TargetLink | None) -> Push | None:
        push = Push(target=self.target, object_type=object_type, object_id=object_id, dry_run=True)
        engine = Engine(self.target, DryRunConnection(self.connection), push)
        engine.link = link
        engine.state = dict(link.state) if link is not None else {}
        try:
            engine.run()
        except (ScimError, Disputed) as exc:
            push.error = str(exc)
        return push

    # -- one page of remote objects

    def check_page(self, object_type: str, page: list[dict[str, Any]]) -> None:
        resources = [item for item in page if item.get("id")]
        if object_type == USER:
            self.run.remote_users += len(resources)
        else:
            self.run.remote_groups += len(resources)
        ReconciliationSeen.objects.bulk_create(
            ReconciliationSeen(run_id=self.run.pk, object_type=object_type, remote_id=str(item["id"])[:255])
            for item in resources
        )
        links = {
            link.remote_id: link
            for link in TargetLink.objects.filter(
                target=self.target, object_type=object_type, remote_id__in=[str(r["id"]) for r in resources]
            )
        }
        linked = [(item, links[str(item["id"])]) for item in resources if str(item["id"]) in links]
        unlinked = [item for item in resources if str(item["id"]) not in links]
        if linked:
            self.check_linked(object_type, linked)
        if unlinked:
            self.check_unlinked(object_type, unlinked)

    def _active(self, object_type: str, object_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        return set(
            Delivery.objects.filter(
                target=self.target,
                object_type=object_type,
                object_id__in=list(object_ids),
                state__in=ACTIVE_DELIVERY_STATES,
            ).values_list("object_id", flat=True)
        )

    def check_linked(self, object_type: str, pairs: list[tuple[dict[str, Any], TargetLink]]) -> None:
        ids = [link.object_id for _, link in pairs]
        objects: dict[uuid.UUID, User | Group]
        if object_type == USER:
            objects = {user.pk: user for user in User.objects.with_values().filter(pk__in=ids)}
            managers = {user.manager_id for user in objects.values() if user.manager_id}
            manager_links = dict(
                TargetLink.objects.filter(
                    target=self.target, object_type=USER, object_id__in=managers
                ).values_list("object_id", "remote_id")
            )
        else:
            objects = {group.pk: group for group in Group.objects.filter(pk__in=ids)}
            manager_links = {}
        in_scope = {
            object_id
            for _, object_id in scope_filter(target=self.target, keys=[(object_type, i) for i in ids])
        }
        active = self._active(object_type, ids)
        # Groups in scope get their members checked too; True when an attribute finding was made.
        groups_in_scope: list[tuple[dict[str, Any], TargetLink, Group, bool]] = []
        for remote, link in pairs:
            obj = objects.get(link.object_id)
            written = dict(link.state.get("attributes") or {})
            label = str(obj) if obj is not None else str((link.state.get("orphan") or {}).get("repr") or "")
            if obj is None or link.object_id not in in_scope:
                self.check_leaver(
                    object_type, remote, link, written, label, deleted=obj is None, active=active
                )
                continue
            # The update form the delivery engine writes (the target's mappings, else the default
            # mapping), so a target with mappings is not reported as drifting from the default.
            if isinstance(obj, User):
                desired = user_payloads(
                    self.target,
                    obj,
                    manager_remote_id=manager_links.get(obj.manager_id),
                    mappings=mapping_set_for(self.target, ObjectType.USER),
                ).update
            else:
                assert isinstance(obj, Group)
                desired = group_payloads(
                    self.target, obj, mappings=mapping_set_for(self.target, ObjectType.GROUP)
                ).update
            drift = attribute_drift(desired, written, remote)
            pending = not drift and link.last_hash != payload_hash(desired) and link.object_id not in active
            if isinstance(obj, Group):
                groups_in_scope.append((remote, link, obj, bool(drift or pending)))
            if drift:
                state = dict(written)
                for key, views in drift.items():
                    if views["remote"] is None:
                        state.pop(key, None)
                    else:
                        state[key] = views["remote"]
                self._drifted(link, object_type, label, drift, state)
            elif pending:
                finding = self.add(
                    Kind.PENDING,
                    object_type,
                    object_id=link.object_id,
                    object_repr=label,
                    remote_id=link.remote_id,
                    details={
                        key: {"desired": desired.get(key), "written": written.get(key)}
                        for key in sorted(set(desired) | set(written))
                        if key != "schemas" and desired.get(key) != written.get(key)
                    },
                )
                self.correct(
                    finding,
                    _Correction(finding, key=(object_type, link.object_id)),
                    preview=self.preview(object_type, link.object_id, link),
                )
            elif object_type == USER:
                self.run.in_sync += 1
        if groups_in_scope:
            self.check_members(groups_in_scope)

    def check_leaver(
        self,
        object_type: str,
        remote: dict[str, Any],
        link: TargetLink,
        written: dict[str, Any],
        label: str,
        *,
        deleted: bool,
        active: set[uuid.UUID],
    ) -> None:
        """A linked object out of scope (or gone from the directory, or an orphan): is it disabled or gone?"""
        policy = self.target.deletion_policy
        if policy == Target.DeletionPolicy.SKIP:
            return  # left downstream on purpose
        deleted = deleted and not link.state.get("orphan")
        disables = object_type == USER and (
            (not deleted and policy == Target.DeletionPolicy.DISABLE)
            or self.profile.soft_delete == VendorProfile.SoftDelete.ACTIVE_FALSE
        )
        key = (object_type, link.object_id)
        if disables and remote.get("active") is False:
            self.run.in_sync += 1
            return
        if disables and written.get("active") is False:
            # Disabled by us, enabled again downstream.
            drift = {"active": {"desired": False, "written": False, "remote": remote.get("active")}}
            state = {**written, "active": remote.get("active")}
            self._drifted(
                link,
                object_type,
                label,
                drift,
                state,
                note="out of scope: should be disabled",
                priority=Delivery.Priority.LEAVER,
            )
            return
        if link.object_id in active:
            return  # its leave is queued already
        finding = self.add(
            Kind.PENDING,
            object_type,
            object_id=link.object_id,
            object_repr=label,
            remote_id=link.remote_id,
            note=("out of scope: should be disabled" if disables else "out of scope: should be deleted"),
        )
        self.correct(
            finding,
            _Correction(finding, key=key, priority=Delivery.Priority.LEAVER),
            preview=self.preview(object_type, link.object_id, link),
        )

    def check_members(self, groups: list[tuple[dict[str, Any], TargetLink, Group, bool]]) -> None:
        group_ids = [group.pk for _, _, group, _ in groups]
        rows = Membership.objects.filter(group_id__in=group_ids).values_list(
            "group_id", "member_user_id", "member_group_id"
        )
        members: dict[uuid.UUID, set[ObjectKey]] = {}
        for group_id, user_id, member_group_id in rows:
            member = (USER, user_id) if user_id is not None else (GROUP, member_group_id)
            members.setdefault(group_id, set()).add(member)
        every = set().union(*members.values()) if members else set()
        in_scope = scope_filter(target=self.target, keys=every)
        remote_ids = {
            (kind, object_id): remote_id
            for kind, object_id, remote_id in TargetLink.objects.filter(
                target=self.target, object_id__in=[object_id for _, object_id in in_scope]
            ).values_list("object_type", "object_id", "remote_id")
        }
        for remote, link, group, other_finding in groups:
            desired = {
                remote_ids[key] for key in members.get(group.pk, set()) & in_scope if key in remote_ids
            }
            written = {str(value) for value in (link.state.get("members") or {}).values()}
            actual = self.remote_members(remote, link.remote_id)
            if actual is None:
                self.run.membership_unknown += 1
                self.run.in_sync += 0 if other_finding else 1
                continue
            added, removed = member_drift(actual, written, desired)
            if not added and not removed:
                self.run.in_sync += 0 if other_finding else 1
                continue
            finding = self.add(
                Kind.MEMBERSHIP_DRIFT,
                GROUP,
                object_id=group.pk,
                object_repr=str(group),
                remote_id=link.remote_id,
                details={
                    "added_downstream": sorted(added)[:MEMBER_SAMPLE],
                    "removed_downstream": sorted(removed)[:MEMBER_SAMPLE],
                    "added_count": len(added),
                    "removed_count": len(removed),
                },
            )
            # Written := what the target has, so the group's delivery sends exactly the deltas to desired.
            by_remote = {
                remote_id: str(object_id)
                for object_id, remote_id in TargetLink.objects.filter(
                    target=self.target, remote_id__in=list(actual)
                ).values_list("object_id", "remote_id")
            }
            state = {**link.state, "members": {by_remote.get(r, f"remote:{r}"): r for r in sorted(actual)}}
            self.correct(
                finding,
                _Correction(finding, key=(GROUP, group.pk), rewrite=(link, state, link.last_hash)),
                preview=self.preview(GROUP, group.pk, self._rewritten(link, state, link.last_hash)),
            )

    def remote_members(self, remote: dict[str, Any], remote_id: str) -> set[str] | None:
        """The group's members on the target (remote ids), or None when the target cannot say."""
        if self.profile.groups_return_members:
            return {
                str(member["value"])
                for member in remote.get("members") or []
                if isinstance(member, dict) and member.get("value")
            }
        if not self.profile.can_filter("groups.value"):
            return None
        found: set[str] = set()
        start, size = 1, provisioning_setting("RECONCILE_PAGE_SIZE")
        while True:
            params = {
                "filter": filter_eq("groups.value", remote_id),
                "attributes": "id",
                "startIndex": start,
                "count": size,
            }
            try:
                body = self.connection.request("GET", "Users", params=params, log=self.exchanges)
            except PermanentError:
                return None  # the target refuses the filter after all
            resources = [
                r for r in (body or {}).get("Resources") or [] if isinstance(r, dict) and r.get("id")
            ]
            found.update(str(r["id"]) for r in resources)
            start += len(resources)
            total = (body or {}).get("totalResults")
            if not resources or (isinstance(total, int) and start > total):
                return found

    # -- remote objects without a link

    def check_unlinked(self, object_type: str, resources: list[dict[str, Any]]) -> None:
        matches = self.match_directory(object_type, resources)
        matched_ids = {object_id for object_id, _ in matches.values()}
        in_scope = {
            object_id
            for _, object_id in scope_filter(target=self.target, keys=[(object_type, i) for i in matched_ids])
        }
        linked = dict(
            TargetLink.objects.filter(
                target=self.target, object_type=object_type, object_id__in=matched_ids
            ).values_list("object_id", "remote_id")
        )
        for remote in resources:
            remote_id = str(remote["id"])
            label = str(remote.get("userName") or remote.get("displayName") or remote_id)
            match = matches.get(remote_id)
            if match is not None and match[0] not in linked and match[0] in in_scope:
                finding = self.add(
                    Kind.UNLINKED,
                    object_type,
                    object_id=match[0],
                    object_repr=label,
                    remote_id=remote_id,
                    note=f"matches by {match[1]}; its next delivery adopts it",
                )
                self.correct(
                    finding,
                    _Correction(finding, key=(object_type, match[0])),
                    preview=self.preview(object_type, match[0], None),
                )
                continue
            if match is not None and match[0] in linked:
                object_id, note = (
                    orphan_object_id(self.target, object_type, remote_id),
                    f"a duplicate: the object it matches by {match[1]} is linked to {linked[match[0]]}",
                )
            elif match is not None:
                object_id, note = match[0], f"matches an object out of scope by {match[1]}"
            else:
                object_id, note = orphan_object_id(self.target, object_type, remote_id), "matches nothing"
            finding = self.add(
                Kind.ORPHAN,
                object_type,
                object_id=match[0] if match else None,
                object_repr=label,
                remote_id=remote_id,
                note=note,
                details={
                    key: remote.get(key)
                    for key in ("externalId", "userName", "displayName", "active")
                    if key in remote
                },
            )
            if not self.removing_orphans:
                continue
            state: dict[str, Any] = {
                "attributes": {"active": remote.get("active")} if object_type == USER else {}
            }
            if object_id != (match[0] if match else None):
                state["orphan"] = {"repr": label, "found_by": str(self.run.pk)}
            link = TargetLink(
                target=self.target,
                object_type=object_type,
                object_id=object_id,
                remote_id=remote_id,
                state=state,
            )
            self.correct(
                finding,
                _Correction(
                    finding, key=(object_type, object_id), priority=Delivery.Priority.LEAVER, create_link=link
                ),
                preview=self.preview(object_type, object_id, link),
            )

    def match_directory(
        self, object_type: str, resources: list[dict[str, Any]]
    ) -> dict[str, tuple[uuid.UUID, str]]:
        """{remote id: (directory id, attribute)} by the target's matching rules, first rule first.

        externalId, userName and displayName are checked against the directory; other rules are
        left to the delivery engine's lookups.
        """
        found: dict[str, tuple[uuid.UUID, str]] = {}
        model = User if object_type == USER else Group
        for attribute in self.target.matching_for(object_type):
            pending = [
                r for r in resources if str(r["id"]) not in found and isinstance(r.get(attribute), str)
            ]
            if not pending:
                continue
            if attribute == "externalId":
                values: dict[str, uuid.UUID] = {}
                for remote in pending:
                    try:
                        values[str(remote["id"])] = uuid.UUID(remote["externalId"])
                    except ValueError:
                        continue
                existing = set(model.objects.filter(pk__in=values.values()).values_list("pk", flat=True))
                found.update({rid: (oid, attribute) for rid, oid in values.items() if oid in existing})
            elif attribute in ("userName", "displayName"):
                column = "user_name" if object_type == USER else "display_name"
                if (attribute == "userName") != (object_type == USER):
                    continue
                wanted = {str(r[attribute]).lower(): str(r["id"]) for r in pending}
                rows = (
                    model.objects.annotate(key=Lower(column))
                    .filter(key__in=list(wanted))
                    .values_list("key", "pk")
                )
                found.update({wanted[key]: (pk, attribute) for key, pk in rows})
        return found

    # -- links whose remote object was not seen

    def find_missing(self, page_size: int) -> None:
        seen = ReconciliationSeen.objects.filter(
            run_id=self.run.pk, object_type=OuterRef("object_type"), remote_id=OuterRef("remote_id")
        )
        last = 0
        while True:
            links = list(
                TargetLink.objects.filter(target=self.target, pk__gt=last, created__lt=self.run.started)
                .exclude(Exists(seen))
                .order_by("pk")[:page_size]
            )
            if not links:
                return
            last = links[-1].pk
            for link in links:
                client = self.users if link.object_type == USER else self.groups
                try:
                    client.get(link.remote_id)
                except RemoteNotFound:
                    self.missing(link)
                    continue
                # There after all: the listing moved under the reading (an object deleted meanwhile).
            self.flush()

    def missing(self, link: TargetLink) -> None:
        model = User if link.object_type == USER else Group
        exists = model.objects.filter(pk=link.object_id).first()
        in_scope = exists is not None and bool(
            scope_filter(target=self.target, keys=[(link.object_type, link.object_id)])
        )
        label = str(exists) if exists is not None else str((link.state.get("orphan") or {}).get("repr") or "")
        finding = self.add(
            Kind.MISSING,
            link.object_type,
            object_id=link.object_id,
            object_repr=label,
            remote_id=link.remote_id,
            note="in scope: created again" if in_scope else "out of scope: nothing to remove any more",
        )
        scrub = link.remote_id if link.object_type == USER else ""
        correction = _Correction(
            finding,
            key=(link.object_type, link.object_id) if in_scope else None,
            forget=link,
            scrub_remote_id=scrub,
        )
        self.correct(
            finding,
            correction,
            preview=self.preview(link.object_type, link.object_id, None) if in_scope else None,
        )

    # -- in scope, never provisioned

    def find_unprovisioned(self, page_size: int) -> None:
        every = self.target.scope == Target.Scope.ALL
        for object_type in (USER, GROUP):
            ref = OuterRef("pk" if every else "object_id")
            links = TargetLink.objects.filter(target=self.target, object_type=object_type, object_id=ref)
            active = Delivery.objects.filter(
                target=self.target, object_type=object_type, object_id=ref, state__in=ACTIVE_DELIVERY_STATES
            )
            candidates: Any
            if every:
                model = User if object_type == USER else Group
                candidates = model.objects.filter(created__lt=self.run.started)
            else:
                candidates = TargetScope.objects.filter(
                    target=self.target, object_type=object_type, since__lt=self.run.started
                )
            candidates = candidates.filter(~Exists(links), ~Exists(active)).order_by("pk")
            last: Any = None
            while True:
                rows = candidates if last is None else candidates.filter(pk__gt=last)
                page = list(rows.values_list("pk", "pk" if every else "object_id")[:page_size])
                if not page:
                    break
                last = page[-1][0]
                for _, object_id in page:
                    finding = self.add(Kind.UNPROVISIONED, object_type, object_id=object_id)
                    self.correct(
                        finding,
                        _Correction(finding, key=(object_type, object_id)),
                        preview=self.preview(object_type, object_id, None),
                    )
                self.flush()


# --- the services ------------------------------------------------------------------------------


def reconciliation_start(*, target: Target, trigger: str = "") -> ReconciliationRun:
    """Record a new run for `target`; ReconciliationBusy if one is running already."""
    try:
        with transaction.atomic():
            return ReconciliationRun.objects.create(
                target=target, trigger=trigger[:64], policy=target.reconcile_policy
            )
    except IntegrityError:
        raise ReconciliationBusy(f"A reconciliation of {target.name} is running already") from None


def reconciliation_run(*, run: ReconciliationRun, connection: ScimConnection | None = None) -> Reconciliation:
    """Carry out a recorded run: read the target, store findings, queue corrections per the policy."""
    target = Target.objects.select_related("profile").get(pk=run.target_id)
    reconciler = Reconciler(target, run, dry_run=False, connection=connection or target_connection(target))
    try:
        result = reconciler.reconcile()
    except ScimError as exc:
        # The target could not be read to the end: nothing after the failure is judged (no link is
        # taken for missing on a partial reading); the findings so far stay.
        run.state, run.error = ReconciliationRun.State.FAILED, str(exc)[:2000]
        result = reconciler.result
    except BaseException as exc:
        run.state, run.error = ReconciliationRun.State.FAILED, f"{type(exc).__name__}: {exc}"[:2000]
        run.finished = timezone.now()
        run.save()
        raise
    else:
        run.state = ReconciliationRun.State.DONE
    run.finished = timezone.now()
    run.save()
    return result


def target_reconcile(
    *,
    target: Target,
    dry_run: bool = False,
    trigger: str = "",
    connection: ScimConnection | None = None,
    samples: int = 3,
) -> Reconciliation:
    """Reconcile `target` now, in this process.

    A dry run queues nothing and keeps nothing (its scratch rows of remote ids seen are deleted when it
    ends): it reads the target and says what it found and which requests its corrections would send.
    """
    if not dry_run:
        return reconciliation_run(
            run=reconciliation_start(target=target, trigger=trigger), connection=connection
        )
    run = ReconciliationRun(target=target, trigger=trigger, policy=target.reconcile_policy)
    reconciler = Reconciler(
        target, run, dry_run=True, connection=connection or target_connection(target), samples=samples
    )
    try:
        return reconciler.reconcile()
    except ScimError as exc:
        run.state, run.error = ReconciliationRun.State.FAILED, str(exc)
        return reconciler.result


def reconciliations_due(*, now: Any = None) -> list[Target]:
    """Targets whose interval has passed since their last reconciliation started (or since creation)."""
    now = now or timezone.now()
    due = []
    targets = Target.objects.filter(enabled=True, paused=False, reconcile_interval_minutes__gt=0).exclude(
        circuit_state=Target.CircuitState.QUARANTINED
    )
    for target in targets:
        last = target.reconciliation_runs.order_by("-started").values_list("started", flat=True).first()
        since = last or target.created
        if since <= now - timedelta(minutes=target.reconcile_interval_minutes):
            due.append(target)
    return due


def reconciliations_fail_stale() -> int:
    """Runs whose worker died mid-way stop blocking the next one."""
    cutoff = timezone.now() - timedelta(seconds=provisioning_setting("RECONCILE_STALE_SECONDS"))
    return ReconciliationRun.objects.filter(
        state=ReconciliationRun.State.RUNNING, heartbeat__lt=cutoff
    ).update(
        state=ReconciliationRun.State.FAILED,
        error="interrupted (no progress recorded)",
        finished=timezone.now(),
    )


def runs_purge(*, older_than_days: int) -> int:
    """Finished full sync and reconciliation runs (with their findings) older than the retention."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    syncs, _ = SyncRun.objects.filter(
        Q(state__in=[SyncRun.State.DONE, SyncRun.State.CANCELLED]), started__lt=cutoff
    ).delete()
    reconciliations, _ = ReconciliationRun.objects.filter(
        state__in=[ReconciliationRun.State.DONE, ReconciliationRun.State.FAILED], started__lt=cutoff
    ).delete()
    return syncs + reconciliations
