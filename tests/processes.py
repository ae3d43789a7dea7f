"""Real processes for the tests that need them: Celery workers, Celery beat and gunicorn web servers.

One `Processes` per test starts any number of each on this run's database and on a Redis broker,
all sharing one queue prefix of their own (Celery's default queue and the provisioning lanes), so
test runs sharing a Redis never take each other's tasks. Each process writes to a log file of its
own under the test's tmp_path; `stop_all` stops them (SIGTERM, then SIGKILL) and prints the tail of
every log, which pytest shows when the test fails. `route_here` makes what the test process queues
(a full sync, a scope edit, an inbound job) go to the same broker and prefix.

Like the process manager production needs (README, "Broker loss"), `Processes` starts again a
worker that exits on its own (Celery exits on an "Unrecoverable error", which kombu raised in this
suite when Redis went away while the worker held unacknowledged messages); a worker the test kills
stays down. Each restart is printed with the logs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from config.celery import app

BASE_DIR = Path(__file__).resolve().parent.parent
# How much of each log `stop_all` prints: enough for a traceback and what led to it.
LOG_TAIL = 8000


def database_url(name: str | None = None) -> str:
    """This run's test database (or another database on the same server) as a DATABASE_URL."""
    db = connection.settings_dict
    return (
        f"postgres://{quote(db['USER'])}:{quote(db['PASSWORD'] or '')}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{name or db['NAME']}"
    )


def broker_url() -> str:
    return os.environ.get("TEST_CELERY_BROKER_URL") or os.environ["TEST_REDIS_URL"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@dataclass
class Launched:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Processes:
    """Starts workers, beat and web servers for one test, and stops them all."""

    def __init__(self, tmp_path: Path, broker: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.broker = broker or broker_url()
        self.prefix = f"t{uuid.uuid4().hex[:10]}."
        self.launched: list[Launched] = []
        # Workers started again when they exit on their own: first name -> (current, command, env).
        self.supervised: dict[str, tuple[Launched, list[str], dict[str, str]]] = {}
        self.restarts: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.supervisor: threading.Thread | None = None

    @property
    def default_queue(self) -> str:
        return f"{self.prefix}celery"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment every process gets: this run's database, the broker, short intervals."""
        return {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": self.broker,
            "CELERY_RESULT_BACKEND": self.broker,
            "CELERY_TASK_DEFAULT_QUEUE": self.default_queue,
            "CELERY_QUEUE_PREFIX": self.prefix,
            "PROVISIONING_RELAY_INTERVAL": "0.3",
            "PROVISIONING_SWEEP_INTERVAL": "1",
            "PROVISIONING_LEASE_SECONDS": "5",
            "PROVISIONING_REENQUEUE_AFTER": "3",
            "PROVISIONING_BACKOFF_BASE": "0.2",
            "PROVISIONING_BACKOFF_MAX": "2",
            "PROVISIONING_MAX_FAILURES": "50",
            "SECRET_KEY": settings.SECRET_KEY,  # they decrypt what this process encrypted
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            **extra,
        }

    def _supervise(self) -> None:
        """Start again, as a process manager would, each supervised worker that exited unasked."""
        while not self.stopping.wait(0.2):
            with self.lock:
                for first, (current, command, env) in list(self.supervised.items()):
                    if current.process.poll() is None or self.stopping.is_set():
                        continue
                    self.restarts.append(f"{current.name} exited with {current.process.returncode}")
                    with contextlib.suppress(ProcessLookupError):  # its embedded beat, if it outlived it
                        os.killpg(current.process.pid, signal.SIGKILL)
                    restarted = self._launch(f"{first}-restart-{len(self.restarts)}", command, env)
                    self.supervised[first] = (restarted, command, env)

    def _launch(self, name: str, command: Sequence[str], env: dict[str, str]) -> Launched:
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                list(command),
                cwd=BASE_DIR,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                # A group of its own: stopping it stops the children (gunicorn's workers) too.
                start_new_session=True,
            )
        launched = Launched(name, process, log)
        self.launched.append(launched)
        return launched

    def _count(self, kind: str) -> int:
        return sum(1 for launched in self.launched if launched.name.startswith(kind))

    def worker(
        self,
        *,
        concurrency: int = 4,
        pool: str = "threads",
        beat: bool = False,
        queues: Sequence[str] = (),
        loglevel: str = os.environ.get("TEST_WORKER_LOGLEVEL", "WARNING"),
        restart: bool = True,
        **extra: str,
    ) -> Launched:
        """`celery worker`; with `beat`, the scheduler embedded (one process only: beat must run once).

        With `restart`, started again if it exits on its own (see the module's docstring).
        """
        name = f"worker-{self._count('worker-')}"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            "-n",
            f"{name}-{self.prefix}@%h",
        ]
        if queues:
            command += ["-Q", ",".join(queues)]
        if beat:
            command += ["--beat", "--schedule", str(self.tmp_path / f"{name}-beat-schedule")]
        # LOG_LEVEL, when set, is the level workers log at (config/celery.py): the same as --loglevel.
        env = self.env(**{"LOG_LEVEL": loglevel, **extra})
        with self.lock:
            launched = self._launch(name, command, env)
            if restart:
                self.supervised[name] = (launched, command, env)
        if restart and self.supervisor is None:
            self.supervisor = threading.Thread(target=self._supervise, daemon=True)
            self.supervisor.start()
        return launched

    def beat(self, **extra: str) -> Launched:
        """`celery beat` on its own, as production runs it."""
        name = f"beat-{self._count('beat-')}"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "--loglevel=WARNING",
            "--schedule",
            str(self.tmp_path / f"{name}-schedule"),
        ]
        return self._launch(name, command, self.env(**extra))

    def web(self, *, workers: int = 1, threads: int = 4, timeout: float = 30.0, **extra: str) -> str:
        """gunicorn serving this project on a free loopback port; returns its base URL once it listens."""
        name = f"web-{self._count('web-')}"
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--access-logfile",
            "-",
            "--access-logformat",
            "%(m)s %(U)s %(s)s",
        ]
        launched = self._launch(name, command, self.env(**extra))
        self.wait_for_port(launched, port, timeout)
        return f"http://127.0.0.1:{port}"

    def wait_for_port(self, launched: Launched, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if launched.process.poll() is not None:
                code, output = launched.process.returncode, launched.output()[-LOG_TAIL:]
                raise RuntimeError(f"{launched.name} exited with {code}:\n{output}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{launched.name}: nothing listens on port {port} after {timeout}s")

    def manage(self, *args: str, **extra: str) -> str:
        """Run a management command to completion in the same environment; returns its output."""
        done = subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), *args],
            cwd=BASE_DIR,
            env=self.env(**extra),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"manage.py {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def kill(self, launched: Launched) -> None:
        """kill -9: no warm shutdown, no acknowledgement, leases left behind. It stays down."""
        with self.lock:
            current, *_ = self.supervised.pop(launched.name, (launched,))
        os.killpg(current.process.pid, signal.SIGKILL)
        current.process.wait(timeout=10)

    def stop_all(self) -> None:
        self.stopping.set()
        with self.lock:
            self.supervised.clear()
        for line in self.restarts:
            print(f"----- {line}; started again -----")
        for launched in self.launched:
            if launched.process.poll() is None:
                os.killpg(launched.process.pid, signal.SIGTERM)
        for launched in self.launched:
            try:
                launched.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(launched.process.pid, signal.SIGKILL)
                launched.process.wait(timeout=10)
            # A child that outlived its parent (a gunicorn or pool worker) would keep its database
            # connection open and stop pytest-django from dropping the test database.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launched.process.pid, signal.SIGKILL)
        for launched in self.launched:
            print(f"----- {launched.name} (exit {launched.process.returncode}) -----")
            print(launched.output()[-LOG_TAIL:])

    def route_here(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Tasks this test process sends go to the processes' broker, under their prefix."""
        from provisioning import queue as provisioning_queue
        from scim_api.inbound import queue as inbound_queue

        def publish(task: str, args: tuple[Any, ...], *, queue: str, countdown: float | None) -> None:
            with app.connection_for_write(self.broker) as broker:
                app.send_task(
                    task, args=args, queue=f"{self.prefix}{queue}", countdown=countdown, connection=broker
                )

        def send_job(job_id: uuid.UUID) -> None:
            with app.connection_for_write(self.broker) as broker:
                app.send_task(
                    inbound_queue.PROCESS_TASK,
                    args=(str(job_id),),
                    queue=self.default_queue,
                    connection=broker,
                )

        monkeypatch.setattr(provisioning_queue, "publish", publish)
        monkeypatch.setattr(inbound_queue, "send", send_job)
