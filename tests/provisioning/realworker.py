"""Real `celery worker` processes for the provisioning tests that need one, on queues of their own.

Each worker runs with embedded beat (the relay and the sweeper, on short intervals), on this test
run's database and on the broker given, with the lane queues under a prefix of its own, so test
runs sharing a Redis never take each other's tasks. `route_here` makes what the test process queues
(a full sync, a scope edit) go to the same broker and prefix.

Like the process manager production needs (README, "Running the workers"), `Workers` starts again
a worker that exits on its own (Celery exits on an "Unrecoverable error", which kombu raised in
this test suite when Redis went away while the worker held unacknowledged messages); a worker the
test kills or stops stays down. Each restart is printed with the worker logs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
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
        # Per worker started: its command line and environment, and its process while it should run.
        self.commands: list[tuple[list[str], dict[str, str]]] = []
        self.running: dict[int, subprocess.Popen[str]] = {}
        self.restarts: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.supervisor: threading.Thread | None = None

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
        n = len(self.commands)
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            f"--loglevel={os.environ.get('TEST_WORKER_LOGLEVEL', 'WARNING')}",
            "-n",
            f"w{n}-{self.prefix}@%h",
        ]
        if beat:
            command += ["--beat", "--schedule", str(self.tmp_path / f"beat-{n}")]
        self.commands.append((command, self.env(**extra)))
        with self.lock:
            process = self._spawn(n)
        if self.supervisor is None:
            self.supervisor = threading.Thread(target=self._supervise, daemon=True)
            self.supervisor.start()
        return process

    def _spawn(self, n: int) -> subprocess.Popen[str]:
        command, env = self.commands[n]
        log = self.tmp_path / f"worker-{n}.{len(self.outputs)}.log"
        with log.open("w") as output:
            process = subprocess.Popen(
                command,
                cwd=BASE_DIR,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        self.processes.append(process)
        self.outputs.append(log)
        self.running[n] = process
        return process

    def _supervise(self) -> None:
        """Start again, as a process manager would, each worker that exited without being told to."""
        while not self.stopping.wait(0.2):
            with self.lock:
                for n, process in list(self.running.items()):
                    if process.poll() is not None and not self.stopping.is_set():
                        self.restarts.append(f"worker {n} exited with {process.returncode}; started again")
                        try:  # its embedded beat too, if it outlived the worker
                            os.killpg(process.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        self._spawn(n)

    def kill(self, process: subprocess.Popen[str]) -> None:
        """kill -9: no warm shutdown, no acknowledgement, leases left behind. It stays down."""
        with self.lock:
            for n, running in list(self.running.items()):
                if running is process:
                    del self.running[n]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        self.stopping.set()
        with self.lock:
            self.running.clear()
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for line in self.restarts:
            print(f"----- {line} -----")
        for log in self.outputs:
            text = log.read_text() if log.exists() else ""
            print(f"----- {log.name} -----\n{text[-8000:]}")


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
