"""One copy at a time across every machine: a guard for the scheduled ticks.

Beat runs in exactly one process (docs/scale-out.md), so each tick is sent once per interval. Two
beats can still run for a while (a deploy that starts the new one before stopping the old, an
operator's mistake), and a tick can outlast its interval; `alone` keeps two copies of a guarded
task from running at the same time, whichever workers got them.

The lock is a PostgreSQL session advisory lock held by the worker thread's database connection:
it is released when the task ends, and by the server when the connection dies (a worker killed
with SIGKILL leaves no stale lock, unlike a lock with a time to live). It needs a session of its
own, so a pooler in transaction mode (PgBouncer) must not sit between workers and PostgreSQL.
SQLite is the one-machine setup of `make run`, with one beat: there the guard lets everything run.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def exclusive(name: str) -> Iterator[bool]:
    """Try to take the lock called `name` without waiting; yields whether this caller holds it."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [name])
        held = bool(cursor.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])
            except DatabaseError:
                # The connection broke under the task: the server dropped the lock with it.
                logger.warning("could not release %s; its connection is gone", name)


def alone(function: Callable[P, R]) -> Callable[P, R | None]:
    """Run `function` only when no other copy of it runs anywhere; otherwise skip it (None)."""
    name = f"alone:{function.__module__}.{function.__qualname__}"

    @functools.wraps(function)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
        with exclusive(name) as held:
            if not held:
                logger.info("%s skipped: another copy is running", name)
                return None
            return function(*args, **kwargs)

    return guarded
