"""A directory with a week of provisioning history, as the dashboard tests (and the screenshot) see it.

Users and groups are written through the services, by a SCIM client, so the
audit trail and the outbox hold what production would. The history (log rows,
the changes they carried, queue samples) is arranged directly: it is what a
week of workers would have written, and the dashboard only reads it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from directory import services
from directory.actors import Actor
from directory.models import ChangeEvent
from provisioning.models import Delivery, DeliveryAttempt, Target, TargetSample, VendorProfile
from scim_api.models import DialectRewrite, ScimClient

USERS = 6
ACTIVE_USERS = 5
GROUPS = 2
CLIENTS = 3
HELD = 2


@dataclass
class Seeded:
    targets: dict[str, Target] = field(default_factory=dict)
    entra: ScimClient | None = None


def make_target(name: str, **fields: object) -> Target:
    profile, _ = VendorProfile.objects.get_or_create(name="Dashboard test profile")
    target = Target(name=name, base_url="http://127.0.0.1:9/scim/v2", profile=profile, **fields)
    target.set_credentials({"token": "downstream-token"})
    target.save()
    return target


def make_client(name: str, **fields: object) -> ScimClient:
    client = ScimClient(name=name, **fields)
    client.issue_token()
    client.save()
    return client


def seed_history(target: Target, *, now: datetime, shape: float, failing: Callable[[int], int]) -> None:
    """A week of pushes (hourly over the last day, every three hours before) and queue samples.

    `shape` shifts the lag and queue curves so that each target draws its own;
    `failing(hours_ago)` says how many of that hour's three pushes fail.
    """
    events, deliveries, attempts, samples = [], [], [], []
    for hour in range(7 * 24):
        if hour >= 24 and hour % 3:
            continue
        at = now - timedelta(hours=hour, minutes=20)
        wave = 1 + math.sin(2 * math.pi * hour / 24 + shape)
        for push in range(3):
            object_id = uuid.uuid4()
            lag = 0.4 + shape * wave + push * 0.3
            events.append(
                ChangeEvent(
                    object_type="user",
                    object_id=object_id,
                    kind="updated",
                    version=1,
                    created=at - timedelta(seconds=lag),
                    processed=at,
                )
            )
            deliveries.append(
                Delivery(target=target, object_type="user", object_id=object_id, state=Delivery.State.DONE)
            )
            failed = push < failing(hour)
            attempts.append(
                DeliveryAttempt(
                    target=target,
                    object_type="user",
                    object_id=object_id,
                    created=at,
                    action=DeliveryAttempt.Action.UPDATE,
                    outcome=DeliveryAttempt.Outcome.RETRY if failed else DeliveryAttempt.Outcome.SUCCESS,
                )
            )
    for minutes in range(0, 7 * 24 * 60, 10):
        wave = 1 + math.sin(2 * math.pi * minutes / (24 * 60) + shape)
        samples.append(
            TargetSample(
                target=target,
                taken_at=(now - timedelta(minutes=minutes)).replace(second=0, microsecond=0),
                queued=round(wave * 20 * shape),
                held=HELD if target.name == "Salesforce" and minutes < 90 else 0,
            )
        )
    ChangeEvent.objects.bulk_create(events)
    Delivery.objects.bulk_create(deliveries)
    for event, delivery, attempt in zip(events, deliveries, attempts, strict=True):
        delivery.leased_version = delivery.version = event.pk
        attempt.delivery = delivery
    Delivery.objects.bulk_update(deliveries, ["leased_version", "version"])
    DeliveryAttempt.objects.bulk_create(attempts)
    TargetSample.objects.bulk_create(samples)


def seed_dashboard(*, now: datetime) -> Seeded:
    seeded = Seeded()
    entra = make_client("Entra ID provisioning", last_used=now - timedelta(minutes=2))
    workday = make_client("Workday HR", last_used=now - timedelta(hours=3))
    make_client("Old import script", revoked=True)
    seeded.entra = entra
    DialectRewrite.objects.create(
        client=entra, name="entra_patch_value_string", count=42, last_seen=now - timedelta(minutes=5)
    )
    DialectRewrite.objects.create(
        client=workday, name="lowercase_patch_op", count=3, last_seen=now - timedelta(hours=2)
    )

    actor = Actor.scim_client(id=entra.pk, name=entra.name)
    users = [
        services.user_create(actor=actor, user_name=f"dash-user-{index}@example.com")
        for index in range(USERS)
    ]
    services.user_deactivate(actor=actor, user_id=users[0].pk)
    services.group_create(
        actor=actor, display_name="Engineering", member_user_ids=[user.pk for user in users]
    )
    services.group_create(actor=actor, display_name="Sales")

    seeded.targets = {
        "Slack": make_target("Slack"),
        "Salesforce": make_target(
            "Salesforce",
            circuit_state=Target.CircuitState.DEGRADED,
            circuit_reason="3 transient failures in a row: 503 Service Unavailable",
        ),
        "Legacy LDAP bridge": make_target(
            "Legacy LDAP bridge",
            circuit_state=Target.CircuitState.QUARANTINED,
            circuit_reason="30 transient failures in a row: connection refused",
        ),
        "Zendesk": make_target("Zendesk", paused=True),
    }
    failing: dict[str, Callable[[int], int]] = {
        "Slack": lambda hour: 0,
        "Salesforce": lambda hour: 1 if hour < 3 or hour % 11 == 0 else 0,
        # Down for the last six hours: every push failed, which is what quarantined it.
        "Legacy LDAP bridge": lambda hour: 3 if hour < 6 else (1 if hour % 9 == 0 else 0),
        "Zendesk": lambda hour: 2 if 40 <= hour < 46 else 0,
    }
    for shape, (name, target) in enumerate(seeded.targets.items(), start=1):
        seed_history(target, now=now, shape=shape / 2, failing=failing[name])

    # What waits now: a quarantined target piles changes up, a paused one keeps them.
    for name, waiting in (("Legacy LDAP bridge", 12), ("Zendesk", 5)):
        for _ in range(waiting):
            Delivery.objects.create(target=seeded.targets[name], object_type="user", object_id=uuid.uuid4())
    salesforce = seeded.targets["Salesforce"]
    for user in users[:4]:
        Delivery.objects.create(target=salesforce, object_type="user", object_id=user.pk)
    for user in users[4:]:
        Delivery.objects.create(
            target=salesforce,
            object_type="user",
            object_id=user.pk,
            state=Delivery.State.HELD,
            priority=Delivery.Priority.LEAVER,
            last_error="held by the deletion guard: 2 disables in the last hour exceed the limit of 1",
        )
    return seeded
