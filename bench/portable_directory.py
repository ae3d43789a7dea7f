"""Benchmark: export_directory and import_directory of a 100,000-user directory, time and peak memory.

Seeds BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/portable_bench_src) on first
use with USERS users (two emails, an address, an HR extension value, a manager for most) and
USERS/100 groups of 100 direct members, ten of them nested in an "All" group. Then runs, each
as its own `manage.py` process under /usr/bin/time (elapsed and maximum resident set size):

1. export_directory from the seeded database to a file;
2. import_directory of that file into a fresh database (dropped and created, then migrated);
3. export_directory from the fresh database, compared line by line with the first export.

Prints one line per step. Exit code 0 when the round trip is equal, 1 otherwise, 2 cannot run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, database_url, ensure_database, setup_django  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/portable_bench_src"
USERS = int(os.environ.get("BENCH_USERS", "100000"))
HR = "urn:example:hr:1.0:User"


def seed() -> None:
    from directory import services, transfer
    from directory.actors import Actor
    from directory.models import Group, User

    if User.objects.count() >= USERS:
        return
    actor = Actor.system("bench")
    started = time.monotonic()
    services.extension_schema_create(
        actor=actor,
        urn=HR,
        name="HR",
        resource_type="user",
        attributes=[
            {"name": "badge", "type": "string", "uniqueness": "server"},
            {"name": "level", "type": "integer"},
        ],
    )
    for start in range(0, USERS, 1000):
        batch = [
            services.NewUser(
                user_name=f"user{n:06d}@example.com",
                values={
                    "emails": [
                        {"value": f"user{n:06d}@example.com", "type": "work", "primary": True},
                        {"value": f"u{n}@home.example", "type": "home"},
                    ],
                    "addresses": [{"type": "work", "address": {"locality": "Leeds", "country": "GB"}}],
                },
                attributes={
                    "given_name": f"Given{n}",
                    "family_name": f"Family{n}",
                    "department": f"Dept {n % 50}",
                    "employee_number": str(n),
                    "extensions": {HR: {"badge": f"B{n:06d}", "level": n % 10}},
                },
            )
            for n in range(start, min(start + 1000, USERS))
        ]
        services.users_create_many(actor=actor, users=batch)
    ids = list(User.objects.order_by("created", "id").values_list("id", flat=True))
    # Every user but the first hundred reports to one of the first hundred (set directly: seeding).
    for manager_index in range(100):
        User.objects.filter(pk__in=ids[100 + manager_index :: 100]).update(manager_id=ids[manager_index])
    groups = []
    for g in range(USERS // 100):
        group = services.group_create(
            actor=actor, display_name=f"Group {g:04d}", member_user_ids=ids[g * 100 : (g + 1) * 100]
        )
        groups.append(group.pk)
    everyone = services.group_create(actor=actor, display_name="All", kind=Group.Kind.UNIFIED)
    services.membership_add(actor=actor, group_id=everyone.pk, group_ids=groups[:10])
    # Statistics as an installation that has been running has them (autovacuum may lag a bulk load).
    transfer.tables_analyze()
    print(f"seeded {USERS} users and {len(groups) + 1} groups in {time.monotonic() - started:.0f} s")


def timed(url: str, *args: str) -> tuple[float, int, str]:
    """Run manage.py under /usr/bin/time -v; return elapsed seconds, peak RSS in MiB, stdout."""
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "false", "SECRET_KEY": "bench-" + "x" * 40}
    result = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        sys.exit(1)
    elapsed = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    assert elapsed is not None
    assert rss is not None
    hours, minutes, seconds = elapsed.groups()
    total = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    return total, int(rss.group(1)) // 1024, result.stdout


def main() -> None:
    source = database_url(DEFAULT_URL)
    ensure_database(source)
    setup_django(source)
    seed()
    fresh = source.rsplit("/", 1)[0] + "/" + urlsplit(source).path.strip("/").replace("_src", "") + "_dst"
    import psycopg

    with psycopg.connect(psycopg.conninfo.make_conninfo(source, dbname="postgres"), autocommit=True) as conn:
        name = urlsplit(fresh).path.strip("/")
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": fresh},
        check=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        first, second = Path(tmp) / "first.jsonl", Path(tmp) / "second.jsonl"
        seconds, rss, _ = timed(source, "export_directory", str(first))
        size = first.stat().st_size / 2**20
        print(f"export   {seconds:7.1f} s  peak RSS {rss:4d} MiB  file {size:.0f} MiB")
        seconds, rss, out = timed(fresh, "import_directory", str(first))
        print(f"import   {seconds:7.1f} s  peak RSS {rss:4d} MiB  {out.strip()}")
        seconds, rss, _ = timed(fresh, "export_directory", str(second))
        print(f"re-export {seconds:6.1f} s  peak RSS {rss:4d} MiB")
        with first.open() as a, second.open() as b:
            a.readline(), b.readline()  # headers differ by their export time
            equal = all(x == y for x, y in zip(a, b, strict=True))
    print("round trip: " + ("equal" if equal else "DIFFERENT"))
    sys.exit(0 if equal else 1)


if __name__ == "__main__":
    main()
