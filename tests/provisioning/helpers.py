"""Shared by the provisioning tests: run the relay and every due delivery as workers would."""

from provisioning import relay
from provisioning.clients import ScimConnection
from provisioning.models import Delivery, DeliveryAttempt
from provisioning.services import delivery_send


def run_all(connection: ScimConnection, *, rounds: int = 10) -> list[DeliveryAttempt]:
    """Relay, then run every queued delivery (waits cut short) until nothing is left."""
    log: list[DeliveryAttempt] = []
    for _ in range(rounds):
        relay.relay_change_events()
        Delivery.objects.filter(state="queued", waiting_for_members=True).update(next_attempt_at=None)
        due = list(Delivery.objects.filter(state="queued", next_attempt_at__isnull=True).order_by("id"))
        if not due:
            return log
        for delivery in due:
            entry = delivery_send(delivery_id=delivery.pk, connection=connection)
            if entry is not None:
                log.append(entry)
    raise AssertionError("deliveries still queued after all rounds")
