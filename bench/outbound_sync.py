"""Benchmark: outbound provisioning to a downstream SCIM server on loopback, with real Celery workers.

Two scenarios, one after the other, on the same processes:

1. **Initial sync.** Seeds USERS users (BENCH_USERS, default 10,000) in PostgreSQL, then runs
   `target_full_sync` for a target provisioning everyone and reports users/s from its start until
   every delivery is done.
2. **Latency.** Changes users through `directory.services.user_update` at a steady RATE per second
   (BENCH_RATE, default 50) for SECONDS (BENCH_SECONDS, default 30) and reports, per change, the time
   from its commit to the moment the downstream received the PATCH carrying it (p50, p99, max).

The downstream is a fast stub on a loopback port (lookups answer an empty list, creates 201 with a
fresh id, patches 204), so the target is not the bottleneck: the engine is. WORKERS `celery worker`
processes (BENCH_WORKERS, default 2; BENCH_THREADS threads each, default 4) and one `celery beat`
(the relay and the sweeper) run on Redis, with their own queue names. Worker memory (RSS) is read
from /proc before the sync, after it, and after the latency run.

Uses BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/directory_bench_outbound) and
BENCH_REDIS_URL (default redis://127.0.0.1:6379/14) as the broker.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
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
THREADS = int(os.environ.get("BENCH_THREADS", "4"))
RATE = float(os.environ.get("BENCH_RATE", "50"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
# Each run marks its changes with its own token: a title left by an earlier run is never a match,
# and a change is never a no-op because an earlier run happened to write the same value.
RUN = uuid.uuid4().hex[:8]
MARK = re.compile(rb"bench-change-" + RUN.encode() + rb"-(\d+)")


class Downstream(BaseHTTPRequestHandler):
    """A minimal SCIM target: empty search results, 201 with a fresh id for creates, 204 for patches."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and the
    # client's delayed ACK add 40 ms to every keep-alive request and the stub becomes the bottleneck.
    disable_nagle_algorithm = True
    counts: dict[str, int] = {"GET": 0, "POST": 0, "PATCH": 0, "other": 0}
    # Change number → when its PATCH arrived (time.time(), comparable with the commit times).
    applied: dict[int, float] = {}
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
        arrived = time.time()
        self._count("PATCH")
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        marks = [int(found) for found in MARK.findall(data)]
        if marks:
            with self.lock:
                for mark in marks:
                    self.applied.setdefault(mark, arrived)
        self._answer(204, None)

    def log_message(self, *args: object) -> None:
        pass


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def analyze() -> None:
    """Refresh the planner's statistics, as autovacuum would in production (it may be off here)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def main() -> None:
    url = database_url(DEFAULT_URL)
    ensure_database(url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    os.environ["REDIS_URL"] = REDIS
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = f"{prefix}celery"
    os.environ["CELERY_QUEUE_PREFIX"] = prefix
    setup_django(url)

    from django.conf import settings
    from django.utils import timezone

    from directory.actors import Actor
    from directory.models import ChangeEvent, User
    from directory.services import NewUser, user_update, users_create_many
    from provisioning.models import Delivery, Target, VendorProfile
    from provisioning.services import target_full_sync

    Target.objects.all().delete()
    actor = Actor.system("bench")
    have = User.objects.filter(user_name__startswith="sync-").count()
    if have < USERS:
        print(f"Seeding {USERS - have} users")
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
    analyze()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Downstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/scim/v2"
    # The target is not the bottleneck: no rate limit, and more concurrency than the workers have threads.
    target = Target(
        name="bench",
        base_url=base,
        profile=VendorProfile.objects.get(name="RFC 7644 (strict)"),
        scope="all",
        rate_limit_rps=0,
        max_concurrency=WORKERS * THREADS + 1,
    )
    target.set_credentials({"token": "bench"})
    target.save()

    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",  # no line per delivery: the workers log through Django's LOGGING
    }
    celery = [sys.executable, "-m", "celery", "-A", "config"]
    workers = [
        subprocess.Popen(
            [
                *celery,
                "worker",
                "--pool=threads",
                f"--concurrency={THREADS}",
                "--loglevel=WARNING",
                "-n",
                f"bench{n}@%h",
            ],
            cwd=REPO_ROOT,
            env=env,
        )
        for n in range(WORKERS)
    ]
    schedule = Path(tempfile.mkdtemp(prefix="bench-beat-")) / "schedule"
    beat = subprocess.Popen(
        [*celery, "beat", "--loglevel=WARNING", "--schedule", str(schedule)], cwd=REPO_ROOT, env=env
    )
    try:
        time.sleep(4)  # let the workers connect before the clock starts
        rss_start = [rss_mib(worker.pid) for worker in workers]
        started = time.monotonic()
        plan = target_full_sync(target=target)
        queued = time.monotonic() - started
        total = plan.users + plan.groups
        while True:
            active = Delivery.objects.filter(target=target, state__in=["queued", "running"]).count()
            if active == 0:
                break
            if time.monotonic() - started > 900:
                raise SystemExit(f"bench: {active} deliveries still active after 900 s")
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        failed = Delivery.objects.filter(target=target, state="failed").count()
        sync_counts = dict(Downstream.counts)
        rss_synced = [rss_mib(worker.pid) for worker in workers]
        print(
            f"initial sync: {total} objects ({plan.users} users) to a loopback target with {WORKERS} workers"
            f" x {THREADS} threads: {elapsed:.1f} s ({total / elapsed:.0f} objects/s); queuing took"
            f" {queued:.1f} s; failed {failed}; downstream saw {sync_counts}",
            flush=True,
        )

        analyze()  # the deliveries, links and log the sync wrote
        # Steady changes: one every 1/RATE s on the wall clock (a late one does not shift the rest).
        ids = list(User.objects.filter(user_name__startswith="sync-").values_list("pk", flat=True)[:USERS])
        random.seed(7)
        committed: dict[int, float] = {}
        whom: dict[int, uuid.UUID] = {}
        changed_by: dict[uuid.UUID, list[int]] = {}
        count = int(RATE * SECONDS)
        begin = time.monotonic()
        for n in range(count):
            due = begin + n / RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            user_id = random.choice(ids)
            user_update(actor=actor, user_id=user_id, title=f"bench-change-{RUN}-{n}")
            committed[n] = time.time()
            whom[n] = user_id
            changed_by.setdefault(user_id, []).append(n)
        sent_for = time.monotonic() - begin
        deadline = time.monotonic() + 30
        while len(Downstream.applied) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        rss_end = [rss_mib(worker.pid) for worker in workers]
    finally:
        beat.terminate()
        for worker in workers:
            worker.terminate()
        for process in [*workers, beat]:
            process.wait(timeout=30)
        server.shutdown()
    # A user changed twice before its first change was pushed gets one PATCH with the newer value
    # (bursts coalesce): the older change counts as applied when that newer value arrived.
    applied = dict(Downstream.applied)
    lags: list[float] = []
    missing = 0
    for n in range(count):
        later = (m for m in changed_by[whom[n]] if m >= n and m in applied)
        first = next(later, None)
        if first is None:
            missing += 1
            continue
        lags.append(applied[first] - committed[n])
    print(
        f"latency: {count} changes at {count / sent_for:.1f}/s through directory.services"
        f" for {sent_for:.0f} s: commit -> applied downstream p50 {statistics.median(lags):.3f} s,"
        f" p99 {percentile(lags, 0.99):.3f} s,"
        f" max {max(lags):.3f} s; {len(applied)} marked PATCHes arrived, {missing} changes never seen",
        flush=True,
    )
    print(
        "worker RSS (MiB): "
        + "; ".join(
            f"worker {n}: {a:.0f} before the sync, {b:.0f} after it, {c:.0f} after the latency run"
            for n, (a, b, c) in enumerate(zip(rss_start, rss_synced, rss_end, strict=True))
        )
    )


if __name__ == "__main__":
    main()
