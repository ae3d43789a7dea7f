"""Benchmark: inbound HR provisioning end to end, records per second, and the worker's memory.

Starts the project under gunicorn (2 sync workers) and one `celery worker`
(BENCH_WORKER_CONCURRENCY processes, default 2: jobs of one source that name
different people apply side by side) on Redis, creates an
inbound source, and POSTs RECORDS Entra-shaped worker records (core +
enterprise + a custom namespace, a work email and phone, a manager) to
/scim/v2/bulkUpload in requests of BATCH operations, over HTTP. Each record's
manager is an earlier record (the same request or an earlier one), as in an
HR export sorted by hierarchy. It times from the first POST until the worker
has finished the last job, in three rounds:

    joiners   every record new: created
    again     the same records: all unchanged (nothing written)
    movers    a tenth of the records with a new department and title: updated
    leavers   another tenth with `active: false`: disabled

and prints records/s per round, the upload (staging) time alone, the CPU
seconds per 1,000 records spent by the worker's processes, by gunicorn's and
by the PostgreSQL backends serving the bench database (utime + stime from
/proc: unlike records/s, not inflated by other programs on the machine), and
the worker's resident memory (VmRSS) and peak (VmHWM) from /proc.

A measurement, not a test: exits 0 whatever the figures (2 when it cannot run).
Needs PostgreSQL (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/directory_bench_inbound; the database is
emptied first, so give it one of its own), Redis (BENCH_REDIS_URL, default
redis://127.0.0.1:6379/1) and gunicorn.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, database_url, ensure_database, refuse, setup_django  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/directory_bench_inbound"
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
FANOUT = 10  # reports per manager


def record(
    n: int, *, department: str = "Engineering", title: str = "Engineer", active: bool = True
) -> dict[str, Any]:
    key = f"E{n:07d}"
    data: dict[str, Any] = {
        "schemas": [CORE, ENTERPRISE, "urn:contoso:employee"],
        "externalId": key,
        "userName": f"worker{n}@bench.example",
        "name": {"givenName": "Worker", "familyName": f"Number {n}"},
        "displayName": f"Worker {n}",
        "title": title,
        "userType": "Employee",
        "active": active,
        "emails": [{"value": f"worker{n}@bench.example", "type": "work", "primary": True}],
        "phoneNumbers": [{"value": f"+1 555 {n:07d}", "type": "work"}],
        ENTERPRISE: {"employeeNumber": key, "department": department, "costCenter": f"CC{n % 100}"},
        "urn:contoso:employee": {"HireDate": "2020-01-01", "JobCode": f"J{n % 50}"},
    }
    if n > 0:
        data[ENTERPRISE]["manager"] = {"value": f"E{(n - 1) // FANOUT:07d}"}
    return data


def body(records: list[dict[str, Any]], start: int) -> bytes:
    operations = [
        {"method": "POST", "bulkId": str(start + i), "path": "/Users", "data": data}
        for i, data in enumerate(records)
    ]
    return json.dumps({"schemas": [BULK], "Operations": operations, "failOnErrors": None}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in MiB of a worker and its pool processes (summed), from /proc."""
    rss = hwm = 0
    for process in [pid, *children(pid)]:
        try:
            lines = Path(f"/proc/{process}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            name, _, rest = line.partition(":")
            if name == "VmRSS":
                rss += int(rest.split()[0]) // 1024
            elif name == "VmHWM":
                hwm += int(rest.split()[0]) // 1024
    return rss, hwm


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each process in seconds, from /proc/<pid>/stat (gone processes left out)."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    return found


class CpuMeter:
    """CPU seconds a changing set of processes spends between start() and the last sample().

    Processes are sampled while the round runs: one that appears is counted from
    zero (its whole life is in the round), one that exits keeps its last sample.
    """

    def __init__(self, pids: Any) -> None:
        self.pids = pids  # a callable giving the processes to watch now
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def start(self) -> None:
        self.first = cpu_seconds(self.pids())
        self.last = dict(self.first)

    def sample(self) -> None:
        self.last.update(cpu_seconds(self.pids()))

    def spent(self) -> float:
        self.sample()
        return sum(seconds - self.first.get(pid, 0.0) for pid, seconds in self.last.items())


def backend_pids(database: str) -> list[int]:
    """The PostgreSQL backends connected to `database` (from pg_stat_activity; the server is local)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [database]
        )
        return [row[0] for row in cursor.fetchall()]


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the worker's pool), from /proc/*/stat."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def reset_database() -> None:
    from django.db import connection

    tables = [
        "scim_api_inboundscheduledaction",
        "scim_api_inboundrecord",
        "scim_api_inboundjob",
        "scim_api_inboundupload",
        "scim_api_inboundsource",
        "directory_membership",
        "directory_uservalue",
        "directory_user",
        "directory_changeevent",
        "directory_auditentry",
    ]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="operations per bulkUpload request")
    parser.add_argument(
        "--rounds",
        default="joiners,again,movers,leavers",
        help="comma-separated rounds to run, in order (joiners first: the others need its users)",
    )
    args = parser.parse_args()

    url = database_url(DEFAULT_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
    ensure_database(url)
    setup_django(url)
    reset_database()

    from django.conf import settings

    from scim_api.inbound.models import InboundJob
    from scim_api.inbound.services import source_create

    source, token = source_create(name=f"bench-{uuid.uuid4().hex[:6]}", max_operations=max(args.batch, 50))
    task_queue = f"bench-inbound-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "false",
        "SECRET_KEY": settings.SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "REDIS_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "CELERY_TASK_DEFAULT_QUEUE": task_queue,
        "SCIM_RATE_LIMIT_PER_MINUTE": "0",
        "LOG_LEVEL": "WARNING",
    }
    port = free_port()
    logs = Path(os.environ.get("BENCH_LOG_DIR", "/tmp"))
    web_log = (logs / f"inbound-bench-gunicorn-{port}.log").open("w")
    worker_log = (logs / f"inbound-bench-worker-{port}.log").open("w")
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "120",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=web_log,
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=prefork",
            f"--concurrency={os.environ.get('BENCH_WORKER_CONCURRENCY', '2')}",
            "-Q",
            task_queue,
            "--loglevel=WARNING",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{port}/scim/v2/",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
        timeout=120,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                http.get("bulkUpload")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    refuse(f"gunicorn did not start; see {web_log.name}")
                time.sleep(0.2)
        time.sleep(8)  # the pool's processes start
        print(
            f"{args.records:,} records in requests of {args.batch:,}; worker pid {worker.pid} "
            f"with pool processes {children(worker.pid)}"
        )
        available = {
            "joiners": lambda: ([record(n) for n in range(args.records)], "created"),
            "again": lambda: ([record(n) for n in range(args.records)], "unchanged"),
            "movers": lambda: (
                [record(n, department="Sales", title="Seller") for n in range(0, args.records, 10)],
                "updated",
            ),
            "leavers": lambda: (
                [record(n, active=False) for n in range(5, args.records, 10)],
                "disabled",
            ),
        }
        database = settings.DATABASES["default"]["NAME"]
        meters = {
            "worker": CpuMeter(lambda: [worker.pid, *children(worker.pid)]),
            "gunicorn": CpuMeter(lambda: [web.pid, *children(web.pid)]),
            "postgres": CpuMeter(lambda: backend_pids(database)),
        }
        for name in args.rounds.split(","):
            records, expected = available[name]()
            since = time.time()
            for meter in meters.values():
                meter.start()
            started = time.perf_counter()
            job_ids = []
            for start in range(0, len(records), args.batch):
                reply = http.post("bulkUpload", content=body(records[start : start + args.batch], start))
                if reply.status_code != 202:
                    refuse(f"upload refused: {reply.status_code} {reply.text[:500]}")
                job_ids.append(reply.json()["id"])
                for meter in meters.values():
                    meter.sample()
            uploaded = time.perf_counter() - started
            peak_rss = 0
            while True:
                open_jobs = InboundJob.objects.filter(
                    pk__in=job_ids, status__in=["queued", "running"]
                ).count()
                peak_rss = max(peak_rss, memory(worker.pid)[0])
                for meter in meters.values():
                    meter.sample()
                if not open_jobs:
                    break
                if worker.poll() is not None:
                    refuse(f"the worker stopped; see {worker_log.name}")
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            per_thousand = {what: meter.spent() * 1000 / len(records) for what, meter in meters.items()}
            counts: dict[str, int] = {}
            for job in InboundJob.objects.filter(pk__in=job_ids):
                for outcome, number in job.counts.items():
                    counts[outcome] = counts.get(outcome, 0) + number
            rss, hwm = memory(worker.pid)
            summary = ", ".join(f"{n:,} {outcome}" for outcome, n in sorted(counts.items()) if n)
            print(
                f"{name:8} {len(records):>7,} records in {elapsed:6.1f} s = "
                f"{len(records) / elapsed:7,.0f} records/s (uploads alone {uploaded:5.1f} s); worker "
                f"processes' RSS {rss} MiB (peak in round {peak_rss} MiB, lifetime peaks summed {hwm} MiB); "
                f"{summary}"
            )
            print(
                "         CPU s per 1,000 records: "
                + ", ".join(f"{what} {seconds:.2f}" for what, seconds in per_thousand.items())
            )
            if counts.get(expected, 0) != len(records):
                print(f"  expected {len(records):,} {expected}: see the jobs since {time.ctime(since)}")
    finally:
        for process in (web, worker):
            process.terminate()
        for process in (web, worker):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        web_log.close()
        worker_log.close()


if __name__ == "__main__":
    main()
