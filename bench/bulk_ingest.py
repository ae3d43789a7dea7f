"""Benchmark: users per second seeded through POST /Bulk into PostgreSQL.

Sends ROUNDS bulk requests of BATCH user creates (userName, name, one email)
through Django's test client (no HTTP server: this measures the bulk path,
validation and the database writes) and prints users/s per round and overall.
Uses BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/directory_bench_bulk).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import database_url, ensure_database, setup_django  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/directory_bench_bulk"
BATCH = 1000
ROUNDS = 5
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


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


def main() -> None:
    url = database_url(DEFAULT_URL)
    ensure_database(url)
    setup_django(url)

    from django.conf import settings
    from django.test import Client

    from scim_api.services import scim_client_create

    settings.ALLOWED_HOSTS = ["testserver"]
    settings.SCIM_API = {**settings.SCIM_API, "RATE_LIMIT_PER_MINUTE": 0}
    _, token = scim_client_create(name=f"bulk-bench-{uuid.uuid4().hex[:8]}")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    total_users, total_seconds = 0, 0.0
    for round_number in range(1, ROUNDS + 1):
        payload = body(uuid.uuid4().hex[:8])
        started = time.perf_counter()
        response = client.post("/scim/v2/Bulk", payload, content_type="application/scim+json")
        elapsed = time.perf_counter() - started
        created = sum(1 for op in response.json()["Operations"] if op["status"] == "201")
        if response.status_code != 200 or created != BATCH:
            raise SystemExit(f"bench: round {round_number} failed: {response.content[:500]!r}")
        total_users += created
        total_seconds += elapsed
        print(f"round {round_number}: {created} users in {elapsed:.2f} s = {created / elapsed:,.0f} users/s")
    print(f"overall: {total_users / total_seconds:,.0f} users/s (target: 3,000 users/s)")


if __name__ == "__main__":
    main()
