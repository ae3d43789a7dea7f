"""Benchmark: users per second seeded through POST /Bulk into PostgreSQL, end to end over HTTP.

Starts the project under gunicorn (one sync worker, DEBUG off, as bench/scim_http.py
runs it) and sends ROUNDS bulk requests of BATCH user creates, one after another,
over HTTP. Each operation is what an HR feed sends for a new hire:

    {"method": "POST", "path": "/Users", "bulkId": "u<n>",
     "data": {"schemas": [core User], "userName": "bulk-<run>-<n>@example.com",
              "name": {"givenName": "Bulk", "familyName": "User <n>"},
              "emails": [{"value": "bulk-<run>-<n>@example.com", "type": "work", "primary": true}]}}

(no password: HR and Entra provisioning send none; a password would add one
Argon2 hash per user). users/s is created users divided by the wall time from
sending each request to reading its whole response, summed over the rounds.
`--in-process` sends the same requests through Django's test client instead
(no server, no sockets), which isolates the application's own cost.

PostgreSQL statistics are refreshed (ANALYZE) before measuring: PostgreSQL's
autovacuum does that by itself in production, but it is off on some
development servers, and without statistics the foreign-key checks at COMMIT
scan the user table row by row (about half a second per 1,000 users).
Uses BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/directory_bench_bulk).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, database_url, ensure_database, setup_django  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/directory_bench_bulk"
BATCH = 1000
ROUNDS = 5
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
TARGET = 3000


def body(tag: str) -> str:
    operations = [
        {
            "method": "POST",
            "path": "/Users",
            "bulkId": f"u{n}",
            "data": {
                "schemas": [USER],
                "userName": f"bulk-{tag}-{n}@example.com",
                "name": {"givenName": "Bulk", "familyName": f"User {n}"},
                "emails": [{"value": f"bulk-{tag}-{n}@example.com", "type": "work", "primary": True}],
            },
        }
        for n in range(BATCH)
    ]
    return json.dumps(
        {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": operations}
    )


Send = Callable[[str], tuple[int, bytes]]


def http_sender(base: str, token: str) -> Send:
    def send(payload: str) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"{base}/scim/v2/Bulk",
            data=payload.encode(),
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()

    return send


def in_process_sender(token: str) -> Send:
    from django.conf import settings
    from django.test import Client

    settings.ALLOWED_HOSTS = ["testserver"]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    def send(payload: str) -> tuple[int, bytes]:
        response = client.post("/scim/v2/Bulk", payload, content_type="application/scim+json")
        return response.status_code, response.content

    return send


def measure(send: Send) -> None:
    send(body(uuid.uuid4().hex[:8]))  # warm-up: imports, caches, the client's first use
    total_users, total_seconds = 0, 0.0
    for round_number in range(1, ROUNDS + 1):
        payload = body(uuid.uuid4().hex[:8])
        started = time.perf_counter()
        status, content = send(payload)
        elapsed = time.perf_counter() - started
        operations = json.loads(content).get("Operations", []) if status == 200 else []
        created = sum(1 for op in operations if op.get("status") == "201")
        if status != 200 or created != BATCH:
            raise SystemExit(f"bench: round {round_number} failed ({status}): {content[:500]!r}")
        total_users += created
        total_seconds += elapsed
        print(f"round {round_number}: {created} users in {elapsed:.2f} s = {created / elapsed:,.0f} users/s")
    print(f"overall: {total_users / total_seconds:,.0f} users/s (target: {TARGET:,} users/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description="Users per second through POST /Bulk.")
    parser.add_argument("--in-process", action="store_true", help="Django's test client instead of HTTP")
    args = parser.parse_args()
    url = database_url(DEFAULT_URL)
    ensure_database(url)
    setup_django(url)

    from django.db import connection

    from scim_api.models import ScimClient
    from scim_api.services import scim_client_create

    client, token = scim_client_create(name=f"bulk-bench-{uuid.uuid4().hex[:8]}")
    # The rate limiter counts these requests as any client's, but never stops them.
    ScimClient.objects.filter(pk=client.pk).update(requests_per_minute=1_000_000_000)
    with connection.cursor() as cursor:
        for table in (
            "directory_user",
            "directory_uservalue",
            "directory_changeevent",
            "directory_auditentry",
        ):
            cursor.execute(f"ANALYZE {table}")
        cursor.execute("SELECT count(*) FROM directory_user")
        existing = cursor.fetchone()[0]
    connection.close()
    print(
        f"{ROUNDS} rounds of POST /Bulk with {BATCH} user creates each (userName, name, one work email, "
        f"no password), into a directory of {existing:,} users, "
        + ("in process (Django test client)" if args.in_process else "over HTTP (gunicorn, 1 sync worker)")
    )
    if args.in_process:
        measure(in_process_sender(token))
        return

    from scim_http import check_tools, django_env, start_server, wait_ready

    check_tools()
    with tempfile.TemporaryDirectory(prefix="bulk-bench-") as tmp:
        # One worker: the requests go one at a time, and each then lands on the warmed-up process.
        server = start_server(
            "django", "config.wsgi:application", django_env(url), REPO_ROOT, Path(tmp), workers=1
        )
        try:
            wait_ready(server, "/scim/v2/ServiceProviderConfig", {})
            measure(http_sender(server.base, token))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
