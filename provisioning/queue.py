"""Sending deliveries to the workers, always after the rows that they name have committed.

Deliveries travel in batches of one target and one lane: a worker leases a
batch in one statement, pushes its objects one after the other over the
target's kept-alive connection, and records the whole batch in one
transaction, which is what makes an initial sync fast. Each lane has a
broker queue of its own (settings.PROVISIONING_LANE_QUEUES), consumed in
priority order, so leavers and disables overtake changes, and a backfill
(full sync) never stands in front of either.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError

from provisioning.conf import provisioning_setting

logger = logging.getLogger(__name__)

DELIVER_TASK = "provisioning.tasks.deliver"
DELIVER_BATCH_TASK = "provisioning.tasks.deliver_batch"
# Delivery.Priority values → lane names (the model's import would make this module import models early).
LANES = {0: "leaver", 1: "change", 2: "backfill"}
# A small set is spread over this many tasks, so several worker threads share it at once.
SPREAD = 4


def lane_queue(priority: int) -> str:
    """The broker queue of a delivery priority's lane."""
    lanes: dict[str, str] = settings.PROVISIONING_LANE_QUEUES
    return lanes[LANES.get(priority, "change")]


def publish(task: str, args: tuple[Any, ...], *, queue: str, countdown: float | None) -> None:
    """Hand one task to the broker (the tests' workers replace this to reach their own broker)."""
    current_app.send_task(task, args=args, queue=queue, countdown=countdown)


def batches(rows: Sequence[tuple[int, int, int]], *, size: int) -> list[tuple[int, int, list[int]]]:
    """(target id, priority, ids) batches from (id, target id, priority) rows: one target and lane each.

    Fewer rows than SPREAD batches' worth are split anyway, so that a relay run's
    handful of changes runs on several worker threads instead of one.
    """
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for delivery_id, target_id, priority in sorted(rows):
        groups[(target_id, priority)].append(delivery_id)
    out: list[tuple[int, int, list[int]]] = []
    # Most urgent lane first: within one send, leavers reach the broker before the rest.
    for (target_id, priority), ids in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        step = max(1, min(size, math.ceil(len(ids) / SPREAD)))
        out.extend((target_id, priority, ids[start : start + step]) for start in range(0, len(ids), step))
    return out


def send(delivery_ids: Sequence[int], *, countdown: float | None = None) -> None:
    """Send these deliveries to their lanes, in batches of one target each.

    A broker outage loses nothing: the rows are committed, and the sweeper
    sends them again once the broker is back.
    """
    if not delivery_ids:
        return
    from provisioning.models import Delivery

    rows = list(Delivery.objects.filter(pk__in=list(delivery_ids)).values_list("pk", "target_id", "priority"))
    try:
        for target_id, priority, ids in batches(rows, size=provisioning_setting("BATCH_SIZE")):
            publish(DELIVER_BATCH_TASK, (target_id, ids), queue=lane_queue(priority), countdown=countdown)
    except OperationalError as exc:
        logger.warning("broker unavailable, %d deliveries left to the sweeper: %s", len(delivery_ids), exc)


def send_on_commit(delivery_ids: Sequence[int], *, countdown: float | None = None) -> None:
    """Send once the current transaction commits: a worker must never look for a row not yet visible."""
    if not delivery_ids:
        return
    ids = list(delivery_ids)

    def send_committed() -> None:
        send(ids, countdown=countdown)

    transaction.on_commit(send_committed, robust=True)
