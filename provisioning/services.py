"""Delivery: bring objects on one target to their current desired state, and record how it went.

`deliveries_send` is what the `deliver_batch` task calls, for a batch of one
target's deliveries. It asks the target's pacer for a concurrency place, leases
the batch (one statement: one worker per (target, object) at a time), reads the
objects' state now from the directory (never the events' diffs, so duplicates
and reordering are harmless) and matches the unlinked ones with one lookup per
matching attribute, then per object matches, creates, updates, disables or
deletes downstream, each request within the target's rate limit, and finally,
in one transaction, stores the links (remote id and what was written), the
provisioning log rows and the deliveries' next states. Failures follow the
client's taxonomy: transient ones are retried with exponential backoff and
jitter (honouring Retry-After) and drive the target's circuit breaker,
permanent ones fail the delivery, and a 401/403 quarantines the target. What
the pacer refuses is put back and sent again after the wait: no worker sleeps.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from redis.exceptions import RedisError

from directory import selectors
from directory.correlation import current_request_id
from directory.exceptions import ObjectNotFound
from directory.models import Group, Membership, User
from provisioning import broker, pacing, queue, sync_runs
from provisioning.clients import (
    Conflict,
    Exchange,
    GroupClient,
    PermanentError,
    RemoteNotFound,
    ResourceClient,
    ScimConnection,
    ScimError,
    TargetMisconfigured,
    TransientError,
    UserClient,
    build_auth,
    redact,
)
from provisioning.conf import provisioning_setting
from provisioning.crypto import CredentialsUnreadable
from provisioning.guard import DeletionGuard, Held
from provisioning.mapping import (
    Payloads,
    create_only_part,
    group_payloads,
    mapping_set_for,
    matching_value,
    modified_properties,
    patch_operations,
    payload_hash,
    user_payloads,
    with_create_only,
)
from provisioning.metrics import attempts_observe
from provisioning.models import (
    Delivery,
    DeliveryAttempt,
    ObjectType,
    Target,
    TargetAssignment,
    TargetLink,
    TargetScope,
    VendorProfile,
)
from provisioning.relay import deliveries_for_objects
from provisioning.scope import (
    DELETED,
    IN_ALL,
    IN_ASSIGNED,
    ScopeChange,
    object_decision,
    scope_contains,
    scope_filter,
    scope_reevaluate_all,
    scope_refresh,
    stored_types,
)

logger = logging.getLogger(__name__)

Action = DeliveryAttempt.Action
Outcome = DeliveryAttempt.Outcome
DRY_RUN_ID = "(dry-run)"
WAIT_SECONDS = 2.0
SWEEP_GRACE_SECONDS = 10


# --- HTTP clients, one per target per process -------------------------------------

_connections: dict[int, tuple[int, str, ScimConnection]] = {}
_connections_lock = threading.Lock()


def target_connection(target: Target) -> ScimConnection:
    """A kept-alive connection for the target, rebuilt when its settings or credentials change."""
    key = f"{target.revision}:{target.encrypted_credentials[-16:]}:{target.base_url}"
    with _connections_lock:
        cached = _connections.get(target.pk)
        if cached is not None and cached[1] == key:
            return cached[2]
    connection = ScimConnection(
        base_url=target.base_url,
        auth=build_auth(target.auth_type, target.get_credentials()),
        connect_timeout=target.connect_timeout,
        read_timeout=target.read_timeout,
    )
    with _connections_lock:
        previous = _connections.get(target.pk)
        _connections[target.pk] = (target.revision, key, connection)
    if previous is not None:
        previous[2].close()
    return connection


class DryRunConnection(ScimConnection):
    """Reads go to the target (lookups decide what would happen); writes are recorded, never sent."""

    def __init__(self, real: ScimConnection) -> None:
        super().__init__(base_url=real.base_url)
        self.real = real

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        log: list[Exchange] | None = None,
    ) -> Any:
        if method == "GET":
            return self.real.request(method, path, body=body, params=params, log=log)
        if log is not None:
            log.append(Exchange(method, path, body, None, 0))
        if method == "POST":
            return {**(body or {}), "id": DRY_RUN_ID}
        return None


class Paced(Exception):
    """The target's rate limit (or a Retry-After it sent) allows no request now; try again in `wait` s."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"paced: the target's rate limit allows the next request in {wait:.2f} s")
        self.wait = wait


class PacedConnection(ScimConnection):
    """A target's connection that asks its pacer before every request, and never waits: Paced instead."""

    def __init__(self, real: ScimConnection, gate: Callable[[], None]) -> None:
        super().__init__(base_url=real.base_url)
        self.real, self.gate = real, gate

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        log: list[Exchange] | None = None,
    ) -> Any:
        self.gate()
        return self.real.request(method, path, body=body, params=params, log=log)


def pace_key(target: Target) -> str:
    """The target's key in the pacer; `created` too, since a deleted target's id can come back."""
    return f"{target.pk}:{target.created.timestamp():.6f}"


def _gate(target: Target, lane: int) -> Callable[[], None]:
    """Check the target's rate limit (and any Retry-After block) for one request; raise Paced to wait."""
    shared = pacing.pacer()
    key = pace_key(target)
    rate = target.rate_limit_rps
    burst = target.rate_limit_burst
    if lane == Delivery.Priority.BACKFILL:
        # A backfill leaves half the burst unused, for the leavers and changes that come meanwhile.
        burst = max(1, burst // 2)

    def gate() -> None:
        wait = shared.reserve(key, rate=rate, burst=burst)
        if wait > 0:
            raise Paced(wait)

    if rate > 0:
        return gate
    # No rate limit: only a Retry-After block can hold the batch, and a block set meanwhile stops
    # the batch that got the 429 (and each other one at its first 429), so once per batch will do.
    blocked = shared.reserve(key, rate=0, burst=1)

    def unlimited() -> None:
        if blocked > 0:
            raise Paced(blocked)

    return unlimited


# --- matching a batch at once ----------------------------------------------------------

# Attributes a batch lookup can read back from the resources it finds (plain top-level names).
_SIMPLE_ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Targets (per process) that refused an `or` filter: they get one lookup per object.
_no_batch_lookup: set[str] = set()


class PreMatch:
    """What one lookup per matching attribute found for a batch's unlinked objects.

    The engine consults it instead of sending a lookup per object; values it
    was not asked about fall back to the per-object lookup.
    """

    def __init__(self) -> None:
        self.asked: dict[str, set[str]] = {}
        self.found: dict[str, dict[str, list[str]]] = {}

    def lookup(self, attribute: str, value: str) -> list[str] | None:
        """Remote ids with `attribute` equal to `value`, or None when this batch did not ask."""
        key = value.casefold()
        if key not in self.asked.get(attribute, set()):
            return None
        return self.found.get(attribute, {}).get(key, [])

    def record(self, attribute: str, asked: set[str], found: dict[str, list[str]]) -> None:
        self.asked.setdefault(attribute, set()).update(asked)
        self.found.setdefault(attribute, {}).update(found)


def prematch_batch(
    target: Target, client: ResourceClient, payloads: Sequence[dict[str, Any]], object_type: str
) -> PreMatch:
    """Look every payload up by the target's matching attributes with one `or` filter per attribute.

    The same guard as the engine's per-object lookup (ordered attributes, one
    match adopted, several disputed), in one or two requests for a batch
    instead of one or two per object. A target that refuses the filter, or
    answers in a way that cannot be mapped back, gets per-object lookups.
    """
    prematch = PreMatch()
    key = pace_key(target)
    if len(payloads) < 2 or key in _no_batch_lookup:
        return prematch
    remaining = list(payloads)
    for attribute in target.matching_for(object_type):
        if not remaining:
            break
        if not _SIMPLE_ATTRIBUTE.match(attribute) or not target.profile.can_filter(attribute):
            # The engine looks these up one by one; later attributes only matter after it.
            break
        values = {}
        for payload in remaining:
            value = matching_value(payload, attribute)
            if value is not None:
                values[value.casefold()] = value
        if not values:
            continue
        try:
            found = client.find_many(attribute, list(values.values()))
        except TransientError:
            return prematch  # the per-object path meets the same error and retries it properly
        except ScimError:
            _no_batch_lookup.add(key)
            return prematch
        if found is None:
            _no_batch_lookup.add(key)
            return prematch
        prematch.record(attribute, set(values), found)
        remaining = [
            payload
            for payload in remaining
            if (value := matching_value(payload, attribute)) is None or not found.get(value.casefold())
        ]
    return prematch


# --- the outcome of one push ---------------------------------------------------------


@dataclass
class Push:
    """Everything one attempt learned, for the link, the log row and the delivery's next state."""

    target: Target
    object_type: str
    object_id: uuid.UUID
    dry_run: bool = False
    object_repr: str = ""
    action: str = Action.NONE
    outcome: str = Outcome.SUCCESS
    in_scope: bool = True
    scope_reason: str = ""
    match_result: str = ""
    matched_attribute: str = ""
    modified: dict[str, list[Any]] = field(default_factory=dict)
    remote_id: str = ""
    error: str = ""
    retry_after: float | None = None
    exchanges: list[Exchange] = field(default_factory=list)
    # Link changes, applied when the attempt is recorded.
    link_remote_id: str | None = None
    link_hash: str | None = None
    link_state: dict[str, Any] | None = None
    link_delete: bool = False
    # Set when the target itself is at fault (401/403): quarantine it.
    misconfigured: bool = False
    # Set when the pacer stopped the attempt: seconds until the target takes requests again.
    paced: float | None = None
    # The link as it was when the attempt started (None: there was none).
    link: TargetLink | None = None
    # Deliveries to wake once this attempt is recorded (groups waiting for this member).
    created_link: bool = False

    def last_write(self) -> Exchange | None:
        for exchange in reversed(self.exchanges):
            if exchange.method != "GET":
                return exchange
        return self.exchanges[-1] if self.exchanges else None


class Disputed(Exception):
    pass


@dataclass
class Preload:
    """What a batch read for one object in a few queries for all: the engine then reads nothing itself."""

    link: TargetLink | None
    obj: User
    scope_reason: str
    manager_remote_id: str | None
    payloads: Payloads | None


class Engine:
    """The push logic for one target: match, create, update, disable, delete, membership deltas."""

    def __init__(
        self,
        target: Target,
        connection: ScimConnection,
        push: Push,
        guard: DeletionGuard | None = None,
        *,
        preload: Preload | None = None,
        prematch: PreMatch | None = None,
    ) -> None:
        self.target, self.push, self.guard = target, push, guard
        self.preload, self.prematch = preload, prematch
        self.profile: VendorProfile = target.profile
        self.users = UserClient(connection, push.exchanges)
        self.groups = GroupClient(connection, push.exchanges)
        if preload is not None:
            self.link = preload.link
        else:
            self.link = TargetLink.objects.filter(
                target=target, object_type=push.object_type, object_id=push.object_id
            ).first()
        push.link = self.link
        self.state: dict[str, Any] = dict(self.link.state) if self.link else {}

    @property
    def client(self) -> ResourceClient:
        return self.users if self.push.object_type == ObjectType.USER else self.groups

    # -- entry point

    def run(self) -> None:
        push = self.push
        obj: User | Group | None = None
        if self.preload is not None:
            in_scope, reason = True, self.preload.scope_reason
        else:
            in_scope, reason = scope_contains(
                target=self.target, object_type=push.object_type, object_id=push.object_id
            )
        push.in_scope, push.scope_reason = in_scope, reason
        if self.preload is not None:
            obj = self.preload.obj
        elif in_scope:
            try:
                obj = (
                    selectors.user_get(user_id=push.object_id)
                    if push.object_type == ObjectType.USER
                    else selectors.group_get(group_id=push.object_id)
                )
            except ObjectNotFound:
                push.in_scope, push.scope_reason = False, DELETED
        if obj is not None:
            push.object_repr = str(obj)[:255]
        if obj is not None and (decision := object_decision(self.target, obj)) is not None:
            # The filters judged on the object as it is now (the stored scope follows within a relay run).
            push.scope_reason = f"{reason}; {decision.reason}"
            if not decision.in_scope:
                push.in_scope, push.scope_reason, obj = False, decision.reason, None
        if obj is not None:
            if isinstance(obj, User):
                self.upsert_user(obj)
            else:
                self.upsert_group(obj)
        elif orphan := self.state.get("orphan"):
            # A remote object no directory object stands for, linked by a reconciliation so that
            # removing it goes through this path: disabled or deleted per the deletion policy.
            push.in_scope, push.scope_reason = False, "orphan found by reconciliation"
            push.object_repr = str(orphan.get("repr") or "")[:255]
            self.leave(deleted=False)
        else:
            self.leave(deleted=push.scope_reason == DELETED)
        if self.link is not None:
            push.remote_id = push.remote_id or self.link.remote_id

    # -- matching and creating

    def match(self, payload: dict[str, Any], *, fresh: bool = False) -> str | None:
        """The remote id of the single existing resource matching `payload`, or None; Disputed on several.

        `fresh` asks the target again even where the batch's lookup answered (after a 409, say).
        """
        for attribute in self.target.matching_for(self.push.object_type):
            value = matching_value(payload, attribute)
            if value is None or not self.profile.can_filter(attribute):
                continue
            known = None if fresh or self.prematch is None else self.prematch.lookup(attribute, value)
            if known is not None:
                found, total = known, len(known)
            else:
                resources, total = self.client.find(attribute, value)
                found = [str(item["id"]) for item in resources]
            if total > 1:
                self.push.match_result, self.push.matched_attribute = "disputed", attribute
                raise Disputed(f"{total} resources on the target have {attribute} {value!r}; none was linked")
            if found:
                self.push.match_result, self.push.matched_attribute = "matched", attribute
                return found[0]
        self.push.match_result = "no match"
        return None

    def create_or_adopt(self, payload: dict[str, Any]) -> tuple[str, bool]:
        """(remote id, adopted?): an existing match is adopted, otherwise the resource is created."""
        remote_id = self.match(payload)
        if remote_id is not None:
            self.push.action = Action.ADOPT
            return remote_id, True
        try:
            created = self.client.create(payload)
        except Conflict:
            # Someone created it since the lookup, or the target's uniqueness
            # covers an attribute we did not match on: look again, then adopt.
            remote_id = self.match(payload, fresh=True)
            if remote_id is None:
                raise
            self.push.action = Action.ADOPT
            return remote_id, True
        self.push.action, self.push.match_result = Action.CREATE, "created"
        return str(created["id"]), False

    def _set_link(self, remote_id: str, attributes: dict[str, Any], **extra: Any) -> None:
        self.push.remote_id = remote_id
        self.push.link_remote_id = remote_id
        self.push.link_hash = payload_hash(attributes)
        self.state = {**self.state, "attributes": attributes, **extra}
        self.push.link_state = self.state

    # -- users

    def _manager_remote_id(self, user: User) -> str | None:
        if user.manager_id is None:
            return None
        if self.preload is not None:
            return self.preload.manager_remote_id
        return (
            TargetLink.objects.filter(
                target=self.target, object_type=ObjectType.USER, object_id=user.manager_id
            )
            .values_list("remote_id", flat=True)
            .first()
        )

    def _created(self, payloads: Payloads, adopted: bool) -> dict[str, Any]:
        """Link state for a new link: the on-create-only values sent, which a later PUT repeats."""
        return {"create_only": {} if adopted else create_only_part(payloads.create, payloads.update)}

    def _put_body(self, payload: dict[str, Any]) -> dict[str, Any]:
        return with_create_only(payload, self.state.get("create_only") or {})

    def upsert_user(self, user: User) -> None:
        # On-create-only attributes go in the POST (`payloads.create`) and never in an update;
        # the link keeps the update form, so later diffs never see them.
        payloads = (
            self.preload.payloads
            if self.preload is not None and self.preload.payloads is not None
            else user_payloads(
                self.target,
                user,
                manager_remote_id=self._manager_remote_id(user),
                mappings=mapping_set_for(self.target, ObjectType.USER),
            )
        )
        payload = payloads.update
        if self.link is None:
            remote_id, adopted = self.create_or_adopt(payloads.create)
            self.push.created_link = True
            self.push.modified = modified_properties({}, payload if adopted else payloads.create)
            if adopted:
                # What the remote holds is unknown: write every attribute.
                self.write_user(remote_id, {}, payload)
            self._set_link(remote_id, payload, **self._created(payloads, adopted))
            return
        old = self.state.get("attributes") or {}
        if self.link.last_hash == payload_hash(payload):
            self.push.action, self.push.outcome = Action.NONE, Outcome.SUCCESS
            return
        self.push.modified = modified_properties(old, payload)
        self.push.action = Action.UPDATE
        if payload.get("active") is False and old.get("active", True) is not False:
            # A deactivation in the directory disables downstream: the guard counts it like a leaver,
            # so a mass deactivation (a bad HR feed) is held as a mass unassignment would be.
            self.push.action = Action.DISABLE
            self._guard(Action.DISABLE)
        try:
            self.write_user(self.link.remote_id, old, payload)
        except RemoteNotFound:
            # Deleted downstream behind our back: create it again.
            self.push.link_delete = True
            remote_id, adopted = self.create_or_adopt(payloads.create)
            self.push.link_delete = False
            self.push.created_link = True
            self._set_link(remote_id, payload, **self._created(payloads, adopted))
            return
        self._set_link(self.link.remote_id, payload)

    def write_user(self, remote_id: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        if self.profile.user_update_method == VendorProfile.UpdateMethod.PUT:
            self.users.replace(remote_id, self._put_body(new))
            return
        operations = patch_operations(modified_properties(old, new), style=self.profile.patch_style)
        if operations:
            self.users.patch(remote_id, operations)

    # -- groups

    def desired_members(self, group: Group) -> tuple[dict[str, str], list[uuid.UUID]]:
        """({member object id: remote id}, [in-scope members with no remote id yet])."""
        rows = Membership.objects.filter(group=group).values_list("member_user_id", "member_group_id")
        keys = {
            (ObjectType.USER.value, user_id) if user_id is not None else (ObjectType.GROUP.value, group_id)
            for user_id, group_id in rows
        }
        in_scope = scope_filter(target=self.target, keys=keys)
        remote = {
            (kind, object_id): remote_id
            for kind, object_id, remote_id in TargetLink.objects.filter(
                target=self.target, object_id__in=[object_id for _, object_id in in_scope]
            ).values_list("object_type", "object_id", "remote_id")
        }
        linked = {str(key[1]): remote[key] for key in in_scope if key in remote}
        missing = [key[1] for key in in_scope if key not in remote]
        return linked, missing

    def upsert_group(self, group: Group) -> None:
        payloads = group_payloads(self.target, group, mappings=mapping_set_for(self.target, ObjectType.GROUP))
        payload = payloads.update
        linked, missing = self.desired_members(group)
        limit = self.profile.max_patch_operations
        if self.link is None:
            remote_id = self.match(payloads.create)
            adopted = remote_id is not None
            if remote_id is not None:
                self.push.action = Action.ADOPT
                last = self.remote_members(remote_id)
                self.push.modified = modified_properties({}, payload)
                self.write_group_attributes(remote_id, {}, payload, linked)
            else:
                body = dict(payloads.create)
                if len(linked) <= limit:
                    body["members"] = [{"value": remote} for remote in linked.values()]
                try:
                    created = self.groups.create(body)
                    remote_id = str(created["id"])
                    self.push.action, self.push.match_result = Action.CREATE, "created"
                    last = dict(linked) if "members" in body else {}
                except Conflict:
                    remote_id = self.match(payloads.create, fresh=True)
                    if remote_id is None:
                        raise
                    adopted = True
                    self.push.action = Action.ADOPT
                    last = self.remote_members(remote_id)
                    self.write_group_attributes(remote_id, {}, payload, linked)
                self.push.modified = modified_properties({}, payload if adopted else payloads.create)
            self.push.created_link = True
            self._set_link(remote_id, payload, members=last, **self._created(payloads, adopted))
        else:
            remote_id = self.link.remote_id
            old = self.state.get("attributes") or {}
            last = dict(self.state.get("members") or {})
            if self.link.last_hash != payload_hash(payload):
                self.push.action = Action.UPDATE
                self.push.modified = modified_properties(old, payload)
                try:
                    self.write_group_attributes(remote_id, old, payload, linked)
                except RemoteNotFound:
                    self.link_recreate_group(payloads, linked)
                    return
                if self.profile.group_update_method == VendorProfile.UpdateMethod.PUT:
                    last = dict(linked)
            self._set_link(remote_id, payload, members=last)
        try:
            self.push_members(remote_id, last, linked)
        except RemoteNotFound:
            self.link_recreate_group(payloads, linked)
            return
        if missing:
            self.push.error = f"{len(missing)} member(s) have no remote id yet: " + ", ".join(
                str(member) for member in missing[:5]
            )
            self.push.outcome = Outcome.WAITING

    def link_recreate_group(self, payloads: Payloads, linked: dict[str, str]) -> None:
        created = self.groups.create(
            {**payloads.create, "members": [{"value": remote} for remote in linked.values()]}
        )
        self.push.action, self.push.match_result = Action.CREATE, "re-created (gone downstream)"
        self.push.created_link = True
        self.state = {}
        self._set_link(
            str(created["id"]), payloads.update, members=dict(linked), **self._created(payloads, False)
        )

    def remote_members(self, remote_id: str) -> dict[str, str]:
        """Members an adopted group already has downstream, keyed by remote id (no directory id known)."""
        if not self.profile.groups_return_members:
            return {}
        body = self.groups.get(remote_id)
        return {
            f"remote:{member['value']}": str(member["value"])
            for member in body.get("members") or []
            if isinstance(member, dict) and member.get("value")
        }

    def write_group_attributes(
        self, remote_id: str, old: dict[str, Any], new: dict[str, Any], linked: dict[str, str]
    ) -> None:
        if self.profile.group_update_method == VendorProfile.UpdateMethod.PUT:
            members = [{"value": remote} for remote in linked.values()]
            self.groups.replace(remote_id, {**self._put_body(new), "members": members})
            return
        operations = patch_operations(modified_properties(old, new), style=self.profile.patch_style)
        if operations:
            self.groups.patch(remote_id, operations)

    def push_members(self, remote_id: str, last: dict[str, str], desired: dict[str, str]) -> None:
        """PATCH add/remove deltas between what was last written and what should be, in chunks.

        What was written is saved after every chunk, so a failure part-way
        resumes from there instead of starting over.
        """
        desired_remote = set(desired.values())
        remove = sorted({remote for key, remote in last.items() if remote not in desired_remote})
        last_remote = set(last.values())
        add = sorted(remote for remote in desired_remote if remote not in last_remote)
        if not add and not remove:
            return
        if self.push.action == Action.NONE:
            self.push.action = Action.UPDATE
        self.push.modified["members"] = [
            {"removed": len(remove)} if remove else None,
            {"added": len(add)} if add else None,
        ]
        by_remote = {remote: key for key, remote in desired.items()}
        limit = max(1, self.profile.max_patch_operations)
        style = self.profile.patch_style
        written = dict(last)
        for start in range(0, len(remove), limit):
            chunk = remove[start : start + limit]
            if style == VendorProfile.PatchStyle.ENTRA:
                operations = [{"op": "Remove", "path": "members", "value": [{"value": r} for r in chunk]}]
            else:
                operations = [{"op": "remove", "path": f'members[value eq "{r}"]'} for r in chunk]
            self.groups.patch(remote_id, operations)
            gone = set(chunk)
            written = {key: remote for key, remote in written.items() if remote not in gone}
            self._save_members(written)
        for start in range(0, len(add), limit):
            chunk = add[start : start + limit]
            operations = [
                {
                    "op": "Add" if style == "entra" else "add",
                    "path": "members",
                    "value": [{"value": r} for r in chunk],
                }
            ]
            self.groups.patch(remote_id, operations)
            written.update({by_remote[remote]: remote for remote in chunk})
            self._save_members(written)

    def _save_members(self, members: dict[str, str]) -> None:
        self.state = {**self.state, "members": members}
        self.push.link_state = self.state
        if not self.push.dry_run and self.link is not None:
            # Progress survives a failure in a later chunk.
            TargetLink.objects.filter(pk=self.link.pk).update(state=self.state, updated=timezone.now())

    # -- leaving

    def _guard(self, action: str) -> None:
        """Ask the deletion guard before a disable or delete is sent (Held stops the attempt)."""
        if self.guard is None or self.push.dry_run:
            return
        attributes = self.state.get("attributes") or {}
        label = (
            self.push.object_repr
            or str(attributes.get("userName") or attributes.get("displayName") or "")
            or f"{self.push.object_type} {self.push.object_id}"
        )
        self.guard.allow(
            target=self.target,
            object_type=self.push.object_type,
            object_id=self.push.object_id,
            action=action,
            label=label,
        )

    def leave(self, *, deleted: bool) -> None:
        push = self.push
        if self.link is None:
            push.action, push.outcome = Action.SKIP, Outcome.SKIPPED
            push.error = "out of scope and never provisioned"
            return
        policy = self.target.deletion_policy
        if policy == Target.DeletionPolicy.SKIP:
            push.action, push.outcome = Action.SKIP, Outcome.SKIPPED
            push.error = "out of scope; the target skips out-of-scope deletions"
            push.link_delete = deleted
            return
        remote_id = self.link.remote_id
        is_user = push.object_type == ObjectType.USER
        if is_user and not deleted and policy == Target.DeletionPolicy.DISABLE:
            self.disable_user(remote_id)
            return
        if is_user and self.profile.soft_delete == VendorProfile.SoftDelete.ACTIVE_FALSE:
            self.disable_user(remote_id)
            push.link_delete = deleted
            return
        push.action = Action.DELETE
        self._guard(Action.DELETE)
        try:
            self.client.delete(remote_id)
        except RemoteNotFound:
            pass  # already gone: the goal is reached
        push.modified = {"deleted": [remote_id, None]}
        push.link_delete = True

    def disable_user(self, remote_id: str) -> None:
        push = self.push
        attributes = dict(self.state.get("attributes") or {})
        if attributes.get("active") is False:
            push.action = Action.NONE
            return
        push.action = Action.DISABLE
        push.modified = {"active": [attributes.get("active", True), False]}
        self._guard(Action.DISABLE)
        new = {**attributes, "active": False}
        try:
            if self.profile.user_update_method == VendorProfile.UpdateMethod.PUT and attributes:
                self.users.replace(remote_id, self._put_body(new))
            else:
                op = "Replace" if self.profile.patch_style == VendorProfile.PatchStyle.ENTRA else "replace"
                self.users.patch(remote_id, [{"op": op, "path": "active", "value": False}])
        except RemoteNotFound:
            push.link_delete = True
            return
        self._set_link(remote_id, new)


# --- leasing and finishing ------------------------------------------------------------


def _lease_many(target_id: int, delivery_ids: Sequence[int]) -> list[Delivery]:
    """Take every one of these deliveries (of one target) that is due and held by nobody, in one statement.

    Skipped: another worker's (one worker per (target, object)), not yet due, or gone.
    """
    now = timezone.now()
    lease_until = now + timedelta(seconds=provisioning_setting("LEASE_SECONDS"))
    due = Q(state=Delivery.State.QUEUED) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    expired = Q(state=Delivery.State.RUNNING, lease_until__lt=now)
    with transaction.atomic():
        deliveries = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(due | expired, pk__in=list(delivery_ids), target_id=target_id)
            .order_by("pk")
        )
        if not deliveries:
            return []
        # The rows are locked until the commit, so `version` cannot move between the read and this write.
        Delivery.objects.filter(pk__in=[delivery.pk for delivery in deliveries]).update(
            state=Delivery.State.RUNNING,
            lease_until=lease_until,
            leased_version=F("version"),
            attempts=F("attempts") + 1,
            updated=now,
        )
    for delivery in deliveries:
        delivery.state = Delivery.State.RUNNING
        delivery.lease_until = lease_until
        delivery.leased_version = delivery.version
        delivery.attempts += 1
        delivery.updated = now
    return deliveries


def _backoff(failures: int, retry_after: float | None) -> float:
    """The one retry delay (provisioning.pacing.retry_delay) with this deployment's base and cap."""
    return pacing.retry_delay(
        failures,
        retry_after=retry_after,
        base=provisioning_setting("BACKOFF_BASE"),
        cap=provisioning_setting("BACKOFF_MAX"),
    )


def _attempt_row(
    push: Push, delivery: Delivery | None, run_id: uuid.UUID, duration_ms: int
) -> DeliveryAttempt:
    last = push.last_write()
    return DeliveryAttempt(
        target=push.target,
        delivery=delivery,
        object_type=push.object_type,
        object_id=push.object_id,
        object_repr=push.object_repr,
        attempt=delivery.attempts if delivery else 1,
        run_id=run_id,
        action=push.action,
        outcome=Outcome.DRY_RUN if push.dry_run else push.outcome,
        in_scope=push.in_scope,
        scope_reason=push.scope_reason[:255],
        match_result=push.match_result,
        matched_attribute=push.matched_attribute,
        modified_properties=redact(push.modified),
        method=last.method if last else "",
        path=last.path[:500] if last else "",
        request_body=redact(last.body) if last else None,
        status=last.status if last else None,
        remote_id=push.remote_id[:255],
        duration_ms=duration_ms,
        error=push.error,
        requests=[exchange.as_log() for exchange in push.exchanges],
        request_id=delivery.request_id if delivery else current_request_id(),
    )


def _record(push: Push, delivery: Delivery | None, run_id: uuid.UUID, duration_ms: int) -> DeliveryAttempt:
    entry = _attempt_row(push, delivery, run_id, duration_ms)
    if not push.dry_run:
        entry.save()
    return entry


def _apply_links(target: Target, pushes: Sequence[Push]) -> None:
    """Store what the attempts wrote: links deleted in one statement, created or changed in another."""
    gone = [push for push in pushes if push.link_delete]
    for object_type in {push.object_type for push in gone}:
        TargetLink.objects.filter(
            target=target,
            object_type=object_type,
            object_id__in=[push.object_id for push in gone if push.object_type == object_type],
        ).delete()
    now = timezone.now()
    written = [
        TargetLink(
            target=target,
            object_type=push.object_type,
            object_id=push.object_id,
            remote_id=push.link_remote_id,
            last_hash=push.link_hash or "",
            state=push.link_state or {},
            updated=now,
        )
        for push in pushes
        if not push.link_delete and push.link_remote_id is not None
    ]
    if written:
        # Only the delivery's lease holder writes its object's link, so the rows cannot race; the
        # upsert covers a link forgotten (or made) by an operator while the request was out.
        TargetLink.objects.bulk_create(
            written,
            update_conflicts=True,
            unique_fields=["target", "object_type", "object_id"],
            update_fields=["remote_id", "last_hash", "state", "updated"],
        )


def _wake_waiting_groups(target: Target, pushes: Sequence[Push]) -> list[int]:
    """Groups waiting for a remote id these attempts just created run again now, not at their next check."""
    created = [push for push in pushes if push.created_link and push.outcome == Outcome.SUCCESS]
    if not created:
        return []
    users = [push.object_id for push in created if push.object_type == ObjectType.USER]
    groups = [push.object_id for push in created if push.object_type == ObjectType.GROUP]
    parents = Membership.objects.filter(Q(member_user_id__in=users) | Q(member_group_id__in=groups))
    now = timezone.now()
    waiting = Delivery.objects.filter(
        target=target,
        object_type=ObjectType.GROUP,
        object_id__in=parents.values("group_id"),
        state=Delivery.State.QUEUED,
        waiting_for_members=True,
        next_attempt_at__gt=now,
    )
    ids = list(waiting.values_list("pk", flat=True))
    if ids:
        Delivery.objects.filter(pk__in=ids, next_attempt_at__gt=now).update(
            next_attempt_at=now, enqueued_at=now
        )
    return ids


def _wake_reports(target: Target, pushes: Sequence[Push]) -> list[int]:
    """Users already linked whose manager just got a remote id: pushed again, now with their manager.

    A user pushed before its manager (both new, in one batch or one burst) is sent
    without `manager`, which needs the manager's remote id; this sends it again
    once that id exists, so the reference is never silently left out.
    """
    created = [
        push.object_id
        for push in pushes
        if push.created_link and push.outcome == Outcome.SUCCESS and push.object_type == ObjectType.USER
    ]
    if not created:
        return []
    reports = TargetLink.objects.filter(
        target=target,
        object_type=ObjectType.USER,
        object_id__in=User.objects.filter(manager_id__in=created).values("pk"),
    ).values_list("object_id", flat=True)
    keys = [(ObjectType.USER.value, object_id) for object_id in reports]
    return deliveries_for_objects(target=target, keys=keys, priority=Delivery.Priority.CHANGE) if keys else []


def _finish_done(deliveries: Sequence[Delivery]) -> list[int]:
    """Deliveries whose attempt succeeded: done, or queued again if a newer change came meanwhile.

    Returns the ids to send again. Three statements whatever the batch's size: every
    delivery of a batch shares one lease.
    """
    if not deliveries:
        return []
    now = timezone.now()
    ids = [delivery.pk for delivery in deliveries]
    mine = Delivery.objects.filter(
        pk__in=ids, state=Delivery.State.RUNNING, lease_until=deliveries[0].lease_until
    )
    common: dict[str, Any] = {"lease_until": None, "updated": now, "failures": 0}
    mine.filter(version=F("leased_version")).update(
        state=Delivery.State.DONE, last_error="", waiting_for_members=False, **common
    )
    # A newer change arrived while these ran: run again, from the state of now.
    again = list(mine.values_list("pk", flat=True))
    if again:
        Delivery.objects.filter(pk__in=again).update(
            state=Delivery.State.QUEUED, next_attempt_at=None, enqueued_at=now, **common
        )
    return again


def _finish(delivery: Delivery, push: Push) -> tuple[list[int], float | None]:
    """Move the delivery to its next state; return (ids to send, countdown) for after the commit."""
    now = timezone.now()
    mine = Delivery.objects.filter(
        pk=delivery.pk, state=Delivery.State.RUNNING, lease_until=delivery.lease_until
    )
    common: dict[str, Any] = {"lease_until": None, "updated": now}
    if push.outcome in (Outcome.SUCCESS, Outcome.SKIPPED):
        return _finish_done([delivery]), None
    if push.outcome == Outcome.HELD:
        if mine.filter(version=delivery.leased_version).update(
            state=Delivery.State.HELD, last_error=push.error, **common
        ):
            return [], None
        # A newer change arrived meanwhile: decide again from the state of now.
        if mine.update(state=Delivery.State.QUEUED, next_attempt_at=None, enqueued_at=now, **common):
            return [delivery.pk], None
        return [], None
    if push.outcome == Outcome.WAITING:
        if delivery.attempts >= provisioning_setting("MEMBER_WAIT_ATTEMPTS"):
            mine.update(state=Delivery.State.DONE, last_error=push.error, waiting_for_members=False, **common)
            return [], None
        mine.update(
            state=Delivery.State.QUEUED,
            waiting_for_members=True,
            next_attempt_at=now + timedelta(seconds=WAIT_SECONDS),
            enqueued_at=now,
            last_error=push.error,
            **common,
        )
        return [delivery.pk], WAIT_SECONDS
    if push.outcome == Outcome.RETRY:
        failures = delivery.failures
        if push.paced is not None:
            # Stopped by the pacer part-way: not the object's fault, no failure counted.
            wait = push.paced
        elif push.misconfigured:
            wait = _backoff(max(1, _quarantine_count(push.target)), None)
        else:
            failures += 1
            if failures >= provisioning_setting("MAX_FAILURES"):
                mine.update(state=Delivery.State.FAILED, failures=failures, last_error=push.error, **common)
                push.outcome = Outcome.FAILED
                return [], None
            wait = _backoff(failures, push.retry_after)
        mine.update(
            state=Delivery.State.QUEUED,
            failures=failures,
            next_attempt_at=now + timedelta(seconds=wait),
            enqueued_at=now,
            last_error=push.error,
            **common,
        )
        return [delivery.pk], wait
    mine.update(state=Delivery.State.FAILED, last_error=push.error, **common)
    return [], None


def _put_back(deliveries: Sequence[Delivery], *, wait: float | None, reason: str = "") -> None:
    """Return leased deliveries untouched (no attempt counted) and send them again after `wait` seconds."""
    if not deliveries:
        return
    now = timezone.now()
    ids = [delivery.pk for delivery in deliveries]
    fields: dict[str, Any] = {}
    if reason:
        fields["last_error"] = reason
    Delivery.objects.filter(
        pk__in=ids, state=Delivery.State.RUNNING, lease_until=deliveries[0].lease_until
    ).update(
        state=Delivery.State.QUEUED,
        lease_until=None,
        attempts=F("attempts") - 1,
        next_attempt_at=now + timedelta(seconds=wait) if wait else None,
        enqueued_at=now,
        updated=now,
        **fields,
    )
    queue.send(ids, countdown=wait)


# --- the circuit breaker ------------------------------------------------------------------


def _quarantine_count(target: Target) -> int:
    return 4 if target.circuit_state == Target.CircuitState.QUARANTINED else 1


def _streak_key(target: Target) -> str:
    return f"provisioning:circuit:{pace_key(target)}"


def failure_streak(target: Target) -> int:
    """Transient failures in a row on this target (shared through the cache: Redis in production)."""
    return int(cache.get(_streak_key(target)) or 0)


def _update_circuit(target: Target, pushes: Sequence[Push]) -> None:
    """healthy → degraded → quarantined on failures in a row; any success makes the target healthy again.

    Degraded: one request at a time (see _concurrency). Quarantined: nothing is
    sent until the next attempt, which then probes it. 401/403 quarantine at once.
    """
    now = timezone.now()
    misconfigured = next((push for push in pushes if push.misconfigured), None)
    if misconfigured is not None:
        Target.objects.filter(pk=target.pk).update(
            circuit_state=Target.CircuitState.QUARANTINED,
            circuit_reason=misconfigured.error[:1000],
            circuit_next_attempt_at=now + timedelta(seconds=_backoff(_quarantine_count(target) + 2, None)),
        )
        return
    failed = [push for push in pushes if push.outcome == Outcome.RETRY and push.paced is None]
    try:
        streak = _count_streak(_streak_key(target), pushes, failed)
    except RedisError as exc:
        # The streak lives in the cache (Redis in production). Without it the circuit stays as it
        # is for this batch: the attempts are still recorded, and the next batch counts again.
        logger.warning("circuit of target %s not updated, cache unavailable: %s", target.name, exc)
        return
    if streak is None:
        return
    if streak == 0:
        if target.circuit_state != Target.CircuitState.HEALTHY:
            Target.objects.filter(pk=target.pk).update(
                circuit_state=Target.CircuitState.HEALTHY, circuit_reason="", circuit_next_attempt_at=None
            )
        return
    error = failed[-1].error if failed else ""
    if streak >= provisioning_setting("QUARANTINE_AFTER_FAILURES"):
        Target.objects.filter(pk=target.pk).update(
            circuit_state=Target.CircuitState.QUARANTINED,
            circuit_reason=f"{streak} transient failures in a row; the last: {error}"[:1000],
            circuit_next_attempt_at=now + timedelta(seconds=_backoff(_quarantine_count(target) + 2, None)),
        )
    elif streak >= provisioning_setting("DEGRADE_AFTER_FAILURES") and (
        target.circuit_state == Target.CircuitState.HEALTHY
    ):
        Target.objects.filter(pk=target.pk, circuit_state=Target.CircuitState.HEALTHY).update(
            circuit_state=Target.CircuitState.DEGRADED,
            circuit_reason=f"{streak} transient failures in a row (one request at a time until a success); "
            f"the last: {error}"[:1000],
        )


def _count_streak(key: str, pushes: Sequence[Push], failed: Sequence[Push]) -> int | None:
    """The target's failure streak after these pushes (None: nothing to count), kept in the cache."""
    last_ok = max((n for n, push in enumerate(pushes) if push.outcome not in (Outcome.RETRY,)), default=None)
    if last_ok is not None:
        streak = sum(
            1 for push in pushes[last_ok + 1 :] if push.outcome == Outcome.RETRY and push.paced is None
        )
        cache.set(key, streak, timeout=86400)
        return streak
    if not failed:
        return None
    cache.add(key, 0, timeout=86400)
    try:
        return int(cache.incr(key, len(failed)))
    except ValueError:  # expired between the two calls
        cache.set(key, len(failed), timeout=86400)
        return len(failed)


def _concurrency(target: Target, lane: int) -> int:
    """How many batches may talk to the target at once, in this lane."""
    if target.circuit_state == Target.CircuitState.DEGRADED:
        return 1
    cap = target.max_concurrency
    # A backfill leaves one place free, so a leaver or a change never waits for a backfill batch.
    return max(1, cap - 1) if lane == Delivery.Priority.BACKFILL else cap


# --- the services ---------------------------------------------------------------------


def object_push(
    *,
    target: Target,
    object_type: str,
    object_id: uuid.UUID,
    dry_run: bool = False,
    connection: ScimConnection | None = None,
    guard: DeletionGuard | None = None,
    preload: Preload | None = None,
    prematch: PreMatch | None = None,
) -> Push:
    """Bring one object to its desired state on one target (or, dry, say which requests that takes)."""
    push = Push(target=target, object_type=object_type, object_id=object_id, dry_run=dry_run)
    try:
        real = connection or target_connection(target)
    except CredentialsUnreadable as exc:
        push.outcome, push.error, push.misconfigured = Outcome.RETRY, str(exc), True
        return push
    engine = Engine(
        target,
        DryRunConnection(real) if dry_run else real,
        push,
        guard,
        preload=preload,
        prematch=prematch,
    )
    try:
        engine.run()
    except Paced as exc:
        push.outcome, push.error, push.paced = Outcome.RETRY, str(exc), exc.wait
    except Held as exc:
        push.outcome, push.error = Outcome.HELD, str(exc)
    except Disputed as exc:
        push.outcome, push.error = Outcome.DISPUTED, str(exc)
    except TransientError as exc:
        push.outcome, push.error, push.retry_after = Outcome.RETRY, str(exc), exc.retry_after
    except TargetMisconfigured as exc:
        push.outcome, push.error, push.misconfigured = Outcome.RETRY, str(exc), True
    except PermanentError as exc:
        push.outcome, push.error = Outcome.FAILED, str(exc)
    except ScimError as exc:
        push.outcome, push.error = Outcome.FAILED, str(exc)
    return push


def _preload(target: Target, deliveries: Sequence[Delivery]) -> dict[int, Preload]:
    """Everything the engine reads for a batch's users, in five queries for the lot.

    Objects that are out of scope or gone are left to the engine's own path,
    which finds out why (the log says it).
    """
    users = [delivery for delivery in deliveries if delivery.object_type == ObjectType.USER]
    if not users:
        return {}
    keys = {(ObjectType.USER.value, delivery.object_id) for delivery in users}
    in_scope = {object_id for _, object_id in scope_filter(target=target, keys=keys)}
    if not in_scope:
        return {}
    reason = (
        IN_ASSIGNED
        if target.scope == Target.Scope.ASSIGNED and ObjectType.USER in stored_types(target)
        else IN_ALL
    )
    objects = {user.pk: user for user in selectors.user_list().filter(pk__in=in_scope)}
    links = {
        link.object_id: link
        for link in TargetLink.objects.filter(
            target=target, object_type=ObjectType.USER, object_id__in=list(objects)
        )
    }
    manager_ids = {user.manager_id for user in objects.values() if user.manager_id is not None}
    managers = (
        dict(
            TargetLink.objects.filter(
                target=target, object_type=ObjectType.USER, object_id__in=manager_ids
            ).values_list("object_id", "remote_id")
        )
        if manager_ids
        else {}
    )
    try:
        mappings = mapping_set_for(target, ObjectType.USER)
    except ScimError:
        return {}  # the engine meets the same error per object and logs it
    preloads: dict[int, Preload] = {}
    for delivery in users:
        user = objects.get(delivery.object_id)
        if user is None:
            continue
        manager = managers.get(user.manager_id) if user.manager_id is not None else None
        try:
            payloads: Payloads | None = user_payloads(
                target, user, manager_remote_id=manager, mappings=mappings
            )
        except ScimError:
            payloads = None
        preloads[delivery.pk] = Preload(links.get(user.pk), user, reason, manager, payloads)
    return preloads


def deliveries_send(
    *, delivery_ids: Sequence[int], target_id: int | None = None, connection: ScimConnection | None = None
) -> list[DeliveryAttempt]:
    """Lease a batch of deliveries, push their objects, record the attempts and move the deliveries on.

    Per target: nothing is leased while the target is paused or quarantined
    (until its next attempt), or has no concurrency place free, or its rate
    limit (or a Retry-After it sent) says wait: the batch is sent again after
    that wait instead, and no worker sleeps. Returns the log rows written.
    """
    if target_id is None:
        targets = set(Delivery.objects.filter(pk__in=list(delivery_ids)).values_list("target_id", flat=True))
        entries: list[DeliveryAttempt] = []
        for one in sorted(targets):
            entries += deliveries_send(delivery_ids=delivery_ids, target_id=one, connection=connection)
        return entries
    target = Target.objects.select_related("profile").filter(pk=target_id).first()
    if target is None:
        return []
    now = timezone.now()
    if not target.enabled:
        Delivery.objects.filter(pk__in=list(delivery_ids), state=Delivery.State.QUEUED).update(
            state=Delivery.State.SUPERSEDED, last_error="target disabled", updated=now
        )
        return []
    waiting_until = target.circuit_next_attempt_at
    if target.paused:
        return []  # the sweeper skips paused targets; resuming sends what is queued
    if (
        target.circuit_state == Target.CircuitState.QUARANTINED
        and waiting_until is not None
        and waiting_until > now
    ):
        # Not these deliveries' fault: they wait for the target's next attempt, no failure counted.
        Delivery.objects.filter(pk__in=list(delivery_ids), state=Delivery.State.QUEUED).update(
            next_attempt_at=waiting_until, enqueued_at=now, updated=now
        )
        return []
    lane = (
        Delivery.objects.filter(pk__in=list(delivery_ids))
        .order_by("priority")
        .values_list("priority", flat=True)
    ).first()
    if lane is None:
        return []
    shared = pacing.pacer()
    key = pace_key(target)
    slot = shared.acquire(
        key,
        limit=_concurrency(target, lane),
        lease_seconds=provisioning_setting("BATCH_SECONDS")
        + target.connect_timeout
        + target.read_timeout
        + 5,
    )
    if not slot.acquired:
        # Busy with other batches: come back about when one of them may be done.
        wait = min(slot.wait, 0.5) + random.uniform(0, 0.5)  # noqa: S311 - jitter
        Delivery.objects.filter(pk__in=list(delivery_ids), state=Delivery.State.QUEUED).update(
            enqueued_at=now
        )
        queue.send(list(delivery_ids), countdown=wait)
        return []
    try:
        return _send_batch(target, lane, delivery_ids, connection)
    finally:
        assert slot.token is not None
        shared.release(key, slot.token)


def _send_batch(
    target: Target, lane: int, delivery_ids: Sequence[int], connection: ScimConnection | None
) -> list[DeliveryAttempt]:
    deliveries = _lease_many(target.pk, delivery_ids)
    if not deliveries:
        return []
    for delivery in deliveries:
        delivery.target = target
    deadline = time.monotonic() + provisioning_setting("BATCH_SECONDS")
    gate = _gate(target, lane)
    try:
        real: ScimConnection | None = connection or target_connection(target)
    except CredentialsUnreadable:
        real = None  # each push meets the error again and quarantines the target
    paced = PacedConnection(real, gate) if real is not None else None
    preloads = _preload(target, deliveries)
    prematch: PreMatch | None = None
    unlinked = [
        preload.payloads.create
        for preload in preloads.values()
        if preload.link is None and preload.payloads is not None
    ]
    if paced is not None and len(unlinked) > 1:
        try:
            prematch = prematch_batch(target, UserClient(paced), unlinked, ObjectType.USER)
        except Paced as exc:
            _put_back(deliveries, wait=exc.wait)
            return []
    results: list[tuple[Delivery, Push, int]] = []
    rest: list[Delivery] = []
    wait: float | None = None
    for position, delivery in enumerate(deliveries):
        if position and time.monotonic() > deadline:
            rest = list(deliveries[position:])
            break
        started = time.monotonic()
        push = object_push(
            target=target,
            object_type=delivery.object_type,
            object_id=delivery.object_id,
            connection=paced,
            guard=DeletionGuard(delivery),
            preload=preloads.get(delivery.pk),
            prematch=prematch,
        )
        if push.paced is not None and not push.exchanges:
            # Nothing was sent for it: it goes back with the rest, as if never taken.
            rest, wait = list(deliveries[position:]), push.paced
            break
        results.append((delivery, push, int((time.monotonic() - started) * 1000)))
        if push.outcome == Outcome.RETRY and not push.misconfigured and push.paced is None:
            # The target is failing: the rest of the batch waits a moment instead of piling on.
            if push.retry_after:
                pacing.pacer().block(pace_key(target), push.retry_after)
            rest = list(deliveries[position + 1 :])
            wait = push.retry_after or _backoff(1, None)
            break
        if push.misconfigured:
            rest = list(deliveries[position + 1 :])
            break
    entries = _record_batch(target, results)
    if rest:
        _put_back(rest, wait=wait)
    return entries


def _record_batch(target: Target, results: Sequence[tuple[Delivery, Push, int]]) -> list[DeliveryAttempt]:
    """Links, delivery states, log rows and the circuit for a batch's attempts, in one transaction."""
    if not results:
        return []
    pushes = [push for _, push, _ in results]
    with transaction.atomic():
        _apply_links(target, pushes)
        done = [
            delivery for delivery, push, _ in results if push.outcome in (Outcome.SUCCESS, Outcome.SKIPPED)
        ]
        queue.send_on_commit(_finish_done(done))
        for delivery, push, _ in results:
            if push.outcome not in (Outcome.SUCCESS, Outcome.SKIPPED):
                to_send, countdown = _finish(delivery, push)
                queue.send_on_commit(to_send, countdown=countdown)
        entries = DeliveryAttempt.objects.bulk_create(
            [
                _attempt_row(push, delivery, delivery.run_id or uuid.uuid4(), duration_ms)
                for delivery, push, duration_ms in results
            ]
        )
        _update_circuit(target, pushes)
        queue.send_on_commit(_wake_waiting_groups(target, pushes))
        queue.send_on_commit(_wake_reports(target, pushes))
    attempts_observe(
        target, [(delivery, entry) for (delivery, _, _), entry in zip(results, entries, strict=True)]
    )
    for push in pushes:
        if push.outcome in (Outcome.FAILED, Outcome.DISPUTED) or push.misconfigured:
            logger.warning(
                "provisioning %s %s on target %s: %s (%s)",
                push.object_type,
                push.object_id,
                target.name,
                push.outcome,
                push.error,
            )
    return entries


def delivery_send(*, delivery_id: int, connection: ScimConnection | None = None) -> DeliveryAttempt | None:
    """Lease one delivery, push its object, record the attempt and move the delivery on.

    Returns the log row, or None when there was nothing to do (gone, not due,
    held by another worker, or paced).
    """
    entries = deliveries_send(delivery_ids=[delivery_id], connection=connection)
    return entries[0] if entries else None


def object_provision_now(
    *, target: Target, object_type: str, object_id: uuid.UUID, dry_run: bool = False
) -> DeliveryAttempt:
    """Provision on demand: push one object now, in this process, and return the log entry.

    Takes the object's active delivery if it has one (so no worker pushes it at
    the same time); a dry run writes nothing and sends no write request.
    """
    if dry_run:
        started = time.monotonic()
        push = object_push(target=target, object_type=object_type, object_id=object_id, dry_run=True)
        return _record(push, None, uuid.uuid4(), int((time.monotonic() - started) * 1000))
    with transaction.atomic():
        deliveries_for_objects(
            target=target, keys=[(object_type, object_id)], priority=Delivery.Priority.LEAVER
        )
    delivery = Delivery.objects.filter(
        target=target, object_type=object_type, object_id=object_id, state=Delivery.State.QUEUED
    ).first()
    if delivery is not None:
        # On demand means now: a retry wait does not apply.
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=None)
        entry = delivery_send(delivery_id=delivery.pk)
        if entry is not None:
            return entry
    raise DeliveryBusy(f"{object_type} {object_id} is being delivered to {target.name} by a worker right now")


class DeliveryBusy(Exception):
    pass


# --- the sweeper and housekeeping ----------------------------------------------------------


def deliveries_sweep(*, limit: int = 1000) -> int:
    """Send again what a lost task, a killed worker or a due retry left behind. Returns how many.

    When the broker lost its tasks (provisioning.broker), every queued delivery that is due is
    sent again now, however recently its task was sent, instead of REENQUEUE_AFTER_SECONDS later.
    """
    now = timezone.now()
    if broker.broker_lost_tasks():
        sent = _resend_after_broker_loss(now, page=limit)
        logger.warning(
            "broker marker missing (a new, restarted or flushed broker): %d queued deliveries sent again",
            sent,
        )
        return sent
    stale = now - timedelta(seconds=provisioning_setting("REENQUEUE_AFTER_SECONDS"))
    due = (
        _expired_leases(now)
        # A retry's own task is due at next_attempt_at; only one that is overdue was lost.
        | Q(state=Delivery.State.QUEUED, next_attempt_at__lte=now - timedelta(seconds=SWEEP_GRACE_SECONDS))
        | Q(state=Delivery.State.QUEUED, next_attempt_at__isnull=True, enqueued_at__lt=stale)
        | Q(state=Delivery.State.QUEUED, next_attempt_at__isnull=True, enqueued_at__isnull=True)
    )
    ids = list(
        Delivery.objects.filter(due, target__enabled=True, target__paused=False)
        .order_by("priority", "id")
        .values_list("pk", flat=True)[:limit]
    )
    _resend(ids, now)
    return len(ids)


def _expired_leases(now: datetime) -> Q:
    return Q(state=Delivery.State.RUNNING, lease_until__lt=now)


def _resend(ids: Sequence[int], now: datetime) -> None:
    if ids:
        Delivery.objects.filter(pk__in=ids).update(enqueued_at=now)
        queue.send(ids)


def _resend_after_broker_loss(now: datetime, *, page: int) -> int:
    """Every due queued delivery (and expired lease), a page at a time, leavers' lane first.

    A retry not yet due is left to the usual sweep: its countdown task went with the broker,
    so it is sent SWEEP_GRACE_SECONDS after it falls due.
    """
    due = _expired_leases(now) | Q(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now), state=Delivery.State.QUEUED
    )
    rows = Delivery.objects.filter(due, target__enabled=True, target__paused=False)
    sent = 0
    for priority in sorted(Delivery.Priority.values):
        after = 0
        while ids := list(
            rows.filter(priority=priority, pk__gt=after).order_by("pk").values_list("pk", flat=True)[:page]
        ):
            _resend(ids, now)
            sent += len(ids)
            after = ids[-1]
    return sent


def provisioning_log_purge(*, older_than_days: int) -> int:
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = DeliveryAttempt.objects.filter(created__lt=cutoff).delete()
    return deleted


# --- targets: scope edits and full sync ------------------------------------------------------


@dataclass
class SyncPlan:
    """What a full sync queued (or, dry, would queue): objects per type, and (dry runs only) how many
    have no link yet."""

    users: int = 0
    groups: int = 0
    unlinked: int = 0
    # Linked on the target but out of scope now (left while the target was disabled, say): leavers.
    leaving: int = 0
    queued: int = 0
    # Stamped on the deliveries it queued: the deletion guard counts per run, the status page shows it.
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)


def _scope_pages(target: Target, page_size: int) -> Iterator[list[tuple[str, uuid.UUID]]]:
    """Every in-scope object, one page at a time by primary key: memory stays bounded by the page."""
    stored = stored_types(target)
    if target.scope == Target.Scope.ALL:
        for object_type, model in ((ObjectType.USER.value, User), (ObjectType.GROUP.value, Group)):
            if object_type in stored:
                # Scoping filters: the stored scope of that type, as for "assigned".
                yield from _stored_pages(target, page_size, object_type)
                continue
            last: uuid.UUID | None = None
            while True:
                rows = model.objects.order_by("pk")
                if last is not None:
                    rows = rows.filter(pk__gt=last)
                ids = list(rows.values_list("pk", flat=True)[:page_size])
                if not ids:
                    break
                yield [(object_type, pk) for pk in ids]
                last = ids[-1]
        return
    yield from _stored_pages(target, page_size, None)


def _stored_pages(
    target: Target, page_size: int, object_type: str | None
) -> Iterator[list[tuple[str, uuid.UUID]]]:
    rows_in_scope = TargetScope.objects.filter(target=target)
    if object_type is not None:
        rows_in_scope = rows_in_scope.filter(object_type=object_type)
    last_row = 0
    while True:
        rows = list(
            rows_in_scope.filter(pk__gt=last_row)
            .order_by("pk")
            .values_list("pk", "object_type", "object_id")[:page_size]
        )
        if not rows:
            return
        yield [(object_type, object_id) for _, object_type, object_id in rows]
        last_row = rows[-1][0]


def target_full_sync(
    *, target: Target, dry_run: bool = False, progress: Callable[[SyncPlan], None] | None = None
) -> SyncPlan:
    """Queue a delivery for every object in the target's scope, in the backfill lane, a page at a time.

    Resumable by construction: each page commits on its own, and queuing an
    object that already has an active delivery folds into it.
    """
    if not dry_run:
        # Recorded as a run (provisioning.sync_runs): resumable, with outcome counts from the log.
        run = sync_runs.full_sync(
            target=target,
            trigger="full sync",
            progress=(lambda run: progress(SyncPlan(run.users, run.groups, 0, run.queued)))
            if progress
            else None,
        )
        return SyncPlan(
            users=run.users, groups=run.groups, leaving=run.leavers, queued=run.queued, run_id=run.pk
        )
    plan = SyncPlan()
    page_size = provisioning_setting("FULL_SYNC_PAGE_SIZE")
    if not dry_run:
        Target.objects.filter(pk=target.pk).update(
            last_full_sync_at=timezone.now(), last_full_sync_run_id=plan.run_id
        )
    if stored_types(target) and not dry_run:
        with transaction.atomic():
            scope_refresh(target=target)
    for page in _scope_pages(target, page_size):
        plan.users += sum(1 for kind, _ in page if kind == ObjectType.USER)
        plan.groups += sum(1 for kind, _ in page if kind == ObjectType.GROUP)
        linked = set(
            TargetLink.objects.filter(target=target, object_id__in=[pk for _, pk in page]).values_list(
                "object_type", "object_id"
            )
        )
        plan.unlinked += sum(1 for key in page if key not in linked)
        if not dry_run:
            with transaction.atomic():
                ids = deliveries_for_objects(target=target, keys=page, priority=Delivery.Priority.BACKFILL)
                Delivery.objects.filter(pk__in=ids).update(run_id=plan.run_id)
                plan.queued += len(ids)
                queue.send_on_commit(ids)
        if progress is not None:
            progress(plan)
    for keys in _linked_out_of_scope_pages(target, page_size):
        # A run also settles what should no longer be there; the deletion guard counts these per run.
        plan.leaving += len(keys)
        if not dry_run:
            with transaction.atomic():
                ids = deliveries_for_objects(target=target, keys=keys, priority=Delivery.Priority.LEAVER)
                Delivery.objects.filter(pk__in=ids).update(run_id=plan.run_id)
                plan.queued += len(ids)
                queue.send_on_commit(ids)
    return plan


def _linked_out_of_scope_pages(target: Target, page_size: int) -> Iterator[list[tuple[str, uuid.UUID]]]:
    """Objects linked on the target that are out of its scope now, a page of links at a time."""
    last = 0
    while True:
        rows = list(
            TargetLink.objects.filter(target=target, pk__gt=last)
            .order_by("pk")
            .values_list("pk", "object_type", "object_id")[:page_size]
        )
        if not rows:
            return
        last = rows[-1][0]
        keys = {(object_type, object_id) for _, object_type, object_id in rows}
        gone = keys - scope_filter(target=target, keys=keys)
        if gone:
            yield sorted(gone)


@transaction.atomic
def target_scope_update(*, target: Target, reevaluate: bool = False) -> ScopeChange:
    """After assignments change: refresh the stored scope and queue enter/leave deliveries at once.

    `reevaluate` (the scoping filters changed) decides every stored object again, not only new candidates.
    """
    change = scope_reevaluate_all(target=target) if reevaluate else scope_refresh(target=target)
    ids = deliveries_for_objects(target=target, keys=change.entered, priority=Delivery.Priority.CHANGE)
    ids += deliveries_for_objects(target=target, keys=change.left, priority=Delivery.Priority.LEAVER)
    queue.send_on_commit(ids)
    return change


@transaction.atomic
def target_create(
    *,
    name: str,
    base_url: str,
    credentials: dict[str, Any],
    auth_type: str = Target.AuthType.BEARER,
    profile: VendorProfile | None = None,
    scope: str = Target.Scope.ASSIGNED,
    group_ids: Sequence[uuid.UUID] = (),
    **fields: Any,
) -> Target:
    """Create an enabled target with the default mapping, assign groups, and queue its initial sync."""
    target = Target(
        name=name,
        base_url=base_url,
        auth_type=auth_type,
        profile=profile or VendorProfile.objects.get(name="RFC 7644 (strict)"),
        scope=scope,
        **fields,
    )
    target.set_credentials(credentials)
    target.full_clean()
    target.save()
    for group_id in group_ids:
        TargetAssignment.objects.create(target=target, group_id=group_id)
    transaction.on_commit(lambda: target_full_sync(target=target), robust=True)
    return target
