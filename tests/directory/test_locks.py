"""Cluster-wide locks (directory.locks): a holder on another connection (another worker, another
machine) keeps the lock from being taken; it goes when its holder finishes, fails, or dies."""

from collections.abc import Iterator

import psycopg
import pytest

from directory import locks
from tests.processes import database_url, eventually

pytestmark = [pytest.mark.postgres]

NAME = "alone:tests.example"


@pytest.fixture
def other_worker(db) -> Iterator[psycopg.Connection]:  # type: ignore[no-untyped-def]
    """A second session on the test database, standing for a worker elsewhere."""
    with psycopg.connect(database_url(), autocommit=True) as session:
        yield session


def taken_by(session: psycopg.Connection, name: str) -> bool:
    """Whether `session` can take the lock (it gives it back at once)."""
    got = bool(session.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [name]).fetchone()[0])
    if got:
        session.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])
    return got


def test_a_held_lock_is_not_taken_twice_and_is_free_again_after(other_worker) -> None:
    with locks.exclusive(NAME) as held:
        assert held
        assert not taken_by(other_worker, NAME)
    assert taken_by(other_worker, NAME)

    other_worker.execute("SELECT pg_advisory_lock(hashtext(%s))", [NAME])
    with locks.exclusive(NAME) as held:
        assert not held
    other_worker.execute("SELECT pg_advisory_unlock(hashtext(%s))", [NAME])
    with locks.exclusive(NAME) as held:
        assert held


def test_the_lock_is_released_when_the_holder_fails(other_worker) -> None:
    with pytest.raises(RuntimeError, match="boom"), locks.exclusive(NAME):
        raise RuntimeError("boom")
    assert taken_by(other_worker, NAME)


def test_a_dead_holder_leaves_no_lock_behind(other_worker) -> None:
    killed = psycopg.connect(database_url(), autocommit=True)
    killed.execute("SELECT pg_advisory_lock(hashtext(%s))", [NAME])
    with locks.exclusive(NAME) as held:
        assert not held
    other_worker.execute("SELECT pg_terminate_backend(%s)", [killed.info.backend_pid])

    def free() -> bool:
        with locks.exclusive(NAME) as held:
            return held

    eventually(free, "the killed session's lock released", timeout=10, every=0.1)
    killed.close()


def test_locks_of_different_names_do_not_block_each_other(other_worker) -> None:
    other_worker.execute("SELECT pg_advisory_lock(hashtext('alone:something.else'))")
    with locks.exclusive(NAME) as held:
        assert held


def test_alone_skips_the_function_while_another_copy_runs(other_worker) -> None:
    calls: list[int] = []

    @locks.alone
    def tick(value: int) -> int:
        calls.append(value)
        return value

    name = f"alone:{tick.__module__}.{tick.__qualname__}"
    other_worker.execute("SELECT pg_advisory_lock(hashtext(%s))", [name])
    assert tick(1) is None
    other_worker.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])
    assert tick(2) == 2
    assert calls == [2]
