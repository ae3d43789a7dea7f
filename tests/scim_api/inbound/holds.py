"""Leavers held by the inbound guard, as the dashboard and /metrics tests need them."""

from django.utils import timezone

from directory import services
from directory.actors import Actor
from scim_api.inbound import services as inbound
from scim_api.inbound.models import InboundJob, InboundRecord, InboundScheduledAction


def hold_inbound_leavers(actor: Actor) -> None:
    """Source "hr": two leavers held in a job and one disable held on its date; "badges": nothing."""
    hr, _ = inbound.source_create(name="hr")
    inbound.source_create(name="badges")
    job = InboundJob.objects.create(source=hr, origin=InboundJob.Origin.API, total=3)
    InboundRecord.objects.bulk_create(
        [
            InboundRecord(job=job, index=n, outcome=outcome)
            for n, outcome in enumerate(["held", "held", "disabled"])
        ]
    )
    user = services.user_create(actor=actor, user_name="leaving@example.com")
    InboundScheduledAction.objects.create(
        source=hr, user=user, action="disable", due=timezone.now(), state="held", detail="Held by the guard."
    )
