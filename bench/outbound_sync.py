"""Benchmark: initial sync of USERS users to a downstream SCIM server on loopback, with real Celery workers.

Seeds USERS users (BENCH_USERS, default 10,000) in PostgreSQL, starts a fast
downstream stub on a loopback port (answers lookups with an empty list and
creates with an id, so the target is not the bottleneck: the engine is),
starts WORKERS `celery worker` processes (BENCH_WORKERS, default 2; thread
pool of 4 each) on Redis, runs `sync_target --full`, and reports users/s from
the full sync's start until every delivery is done.

Uses BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/directory_bench_outbound) and
BENCH_REDIS_URL (default redis://127.0.0.1:6379/14) as the broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, database_url, ensure_database, setup_django  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/directory_bench_outbound"
USERS = int(os.environ.get("BENCH_USERS", "10000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


class Downstream(BaseHTTPRequestHandler):
    """A minimal SCIM target: empty search results, 201 with a fresh id for creates."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and the
    # client's delayed ACK add 40 ms to every keep-alive request and the stub becomes the bottleneck.
    disable_nagle_algorithm = True
    counts: dict[str, int] = {"GET": 0, "POST": 0, "other": 0}
    lock = threading.Lock()

    def _answer(self, status: int, body: dict[str, object] | None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/scim+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _count(self, method: str) -> None:
        with self.lock:
            self.counts[method if method in self.counts else "other"] += 1

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self._count("GET")
        self._answer(
            200,
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": 0,
                "Resources": [],
            },
        )

    def do_POST(self) -> None:  # noqa: N802
        self._count("POST")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self._answer(201, {**body, "id": uuid.uuid4().hex})

    def do_PATCH(self) -> None:  # noqa: N802
        self._count("other")
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(204, None)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    url = database_url(DEFAULT_URL)
    ensure_database(url)
    queue_name = f"bench-{uuid.uuid4().hex[:8]}"
    os.environ["REDIS_URL"] = REDIS
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = queue_name
    setup_django(url)

    from django.conf import settings
    from django.utils import timezone

    from directory.actors import Actor
    from directory.models import ChangeEvent, User
    from directory.services import NewUser, users_create_many
    from provisioning.models import Delivery, Target, VendorProfile
    from provisioning.services import target_full_sync

    Target.objects.all().delete()
    have = User.objects.filter(user_name__startswith="sync-").count()
    if have < USERS:
        print(f"Seeding {USERS - have} users")
        actor = Actor.system("bench")
        for start in range(have, USERS, 1000):
            users_create_many(
                actor=actor,
                users=[
                    NewUser(
                        user_name=f"sync-{n}@example.com",
                        values={
                            "emails": [{"value": f"sync-{n}@example.com", "type": "work", "primary": True}]
                        },
                        attributes={"given_name": "Sync", "family_name": f"User {n}", "department": "Bench"},
                    )
                    for n in range(start, min(start + 1000, USERS))
                ],
            )
    ChangeEvent.objects.filter(processed__isnull=True).update(processed=timezone.now())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Downstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/scim/v2"
    target = Target(
        name="bench", base_url=base, profile=VendorProfile.objects.get(name="RFC 7644 (strict)"), scope="all"
    )
    target.set_credentials({"token": "bench"})
    target.save()

    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": settings.SECRET_KEY, "DEBUG": "false"}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=threads",
                "--concurrency=4",
                "--loglevel=WARNING",
                "-n",
                f"bench{n}@%h",
            ],
            cwd=REPO_ROOT,
            env=env,
        )
        for n in range(WORKERS)
    ]
    try:
        time.sleep(3)  # let the workers connect before the clock starts
        started = time.monotonic()
        plan = target_full_sync(target=target)
        queued = time.monotonic() - started
        total = plan.users + plan.groups
        while True:
            active = Delivery.objects.filter(target=target, state__in=["queued", "running"]).count()
            if active == 0:
                break
            if time.monotonic() - started > 600:
                raise SystemExit(f"bench: {active} deliveries still active after 600 s")
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        server.shutdown()
    failed = Delivery.objects.filter(target=target, state="failed").count()
    print(
        f"initial sync: {total} objects ({plan.users} users) to a loopback target with {WORKERS} workers: "
        f"{elapsed:.1f} s ({total / elapsed:.0f} objects/s); queuing took {queued:.1f} s; failed {failed}; "
        f"downstream saw {Downstream.counts}"
    )


if __name__ == "__main__":
    main()
