"""The inbound tick skips while another copy of it runs elsewhere (directory.locks)."""

import psycopg
import pytest

from scim_api.inbound import tasks
from tests.processes import database_url

pytestmark = [pytest.mark.postgres]


def test_the_inbound_tick_skips_while_another_tick_runs(db) -> None:  # type: ignore[no-untyped-def]
    name = "alone:scim_api.inbound.tasks.inbound_tick"
    with psycopg.connect(database_url(), autocommit=True) as other_worker:
        other_worker.execute("SELECT pg_advisory_lock(hashtext(%s))", [name])
        assert tasks.inbound_tick() is None
        other_worker.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])
    assert tasks.inbound_tick() == {"scheduled_actions": 0, "jobs_resent": 0}
