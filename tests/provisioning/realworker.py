"""Real `celery worker` processes for the provisioning tests that need one, on queues of their own.

Each worker runs with embedded beat (the relay and the sweeper, on short intervals), on this test
run's database and on the broker given, with the lane queues under a prefix of its own, so test
runs sharing a Redis never take each other's tasks. `route_here` makes what the test process queues
(a full sync, a scope edit) go to the same broker and prefix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from config.celery import app
from provisioning import queue

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def database_url() -> str:
    db = connection.settings_dict
    return (
        f"postgres://{quote(db['USER'])}:{quote(db['PASSWORD'] or '')}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )


def broker_url() -> str:
    return os.environ.get("TEST_CELERY_BROKER_URL") or os.environ["TEST_REDIS_URL"]


class Workers:
    """Starts workers for one test and stops (or kills) them; every worker shares one prefix."""

    def __init__(self, tmp_path: Path, broker: str) -> None:
        self.tmp_path, self.broker = tmp_path, broker
        self.prefix = f"t{uuid.uuid4().hex[:10]}."
        self.processes: list[subprocess.Popen[str]] = []
        self.outputs: list[Path] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": self.broker,
            "CELERY_RESULT_BACKEND": self.broker,
            "CELERY_TASK_DEFAULT_QUEUE": f"{self.prefix}celery",
            "CELERY_QUEUE_PREFIX": self.prefix,
            "PROVISIONING_RELAY_INTERVAL": "0.3",
            "PROVISIONING_SWEEP_INTERVAL": "1",
            "PROVISIONING_LEASE_SECONDS": "5",
            "PROVISIONING_REENQUEUE_AFTER": "3",
            "PROVISIONING_BACKOFF_BASE": "0.2",
            "PROVISIONING_BACKOFF_MAX": "2",
            "PROVISIONING_MAX_FAILURES": "50",
            "SECRET_KEY": settings.SECRET_KEY,  # the worker decrypts what this process encrypted
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            **extra,
        }

    def start(self, *, concurrency: int = 4, beat: bool = True, **extra: str) -> subprocess.Popen[str]:
        n = len(self.processes)
        log = self.tmp_path / f"worker-{n}.log"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            "--loglevel=WARNING",
            "-n",
            f"w{n}-{self.prefix}@%h",
        ]
        if beat:
            command += ["--beat", "--schedule", str(self.tmp_path / f"beat-{n}")]
        with log.open("w") as output:
            process = subprocess.Popen(
                command,
                cwd=BASE_DIR,
                env=self.env(**extra),
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        self.processes.append(process)
        self.outputs.append(log)
        return process

    def kill(self, process: subprocess.Popen[str]) -> None:
        """kill -9: no warm shutdown, no acknowledgement, leases left behind."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for n, log in enumerate(self.outputs):
            text = log.read_text() if log.exists() else ""
            print(f"----- worker {n} -----\n{text[-8000:]}")


def route_here(monkeypatch: pytest.MonkeyPatch, workers: Workers) -> None:
    """Tasks this test process sends go to the workers' broker, under their prefix."""

    def publish(task: str, args: tuple[Any, ...], *, queue: str, countdown: float | None) -> None:
        with app.connection_for_write(workers.broker) as broker:
            app.send_task(
                task, args=args, queue=f"{workers.prefix}{queue}", countdown=countdown, connection=broker
            )

    monkeypatch.setattr(queue, "publish", publish)


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` and the last value at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"not within {timeout}s: {what} (last: {last!r})")
