"""Benchmark: does a cursor page cost the same at the end of 100k users as at the start (RFC 9865)?

Uses the database `scim_http.py` seeds (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/directory_bench_http; run `make bench-http`
once first, or it seeds 100k users here). Times GET /Users pages of 100 through
Django's test client (no HTTP server: this measures the query and rendering),
by cursor and by startIndex, at the start and near the end, and prints the
medians and end/start ratios.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import database_url, ensure_database, setup_django  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/directory_bench_http"
USERS = 100_000
PAGE = 100
ROUNDS = 40


def seed() -> None:
    from directory.models import User

    missing = USERS - User.objects.count()
    if missing > 0:
        print(f"Seeding {missing} users")
        User.objects.bulk_create(
            [User(user_name=f"cursor-{n}@example.com") for n in range(missing)], batch_size=5000
        )


def median_ms(call, rounds: int = ROUNDS) -> float:  # type: ignore[no-untyped-def]
    call()  # warm-up
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = call()
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content[:300]
    return statistics.median(samples)


def main() -> None:
    url = database_url(DEFAULT_URL)
    ensure_database(url)
    setup_django(url)
    seed()

    from django.conf import settings
    from django.test import Client

    from directory.models import User
    from scim_api import cursors
    from scim_api.services import scim_client_create

    settings.ALLOWED_HOSTS = ["testserver"]
    _, token = scim_client_create(name=f"cursor-bench-{time.time_ns()}")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    total = User.objects.count()
    near_end = User.objects.order_by("created", "id")[total - PAGE - 1]
    end_cursor = cursors.encode(near_end, "next", resource_type="User", filter_text=None)

    def page(**params: object):  # type: ignore[no-untyped-def]
        return lambda: client.get("/scim/v2/Users", {"count": PAGE, "excludedAttributes": "groups", **params})

    results = {
        "cursor, first page": median_ms(page(cursor="")),
        "cursor, last page": median_ms(page(cursor=end_cursor)),
        "startIndex=1": median_ms(page(startIndex=1)),
        f"startIndex={total - PAGE + 1}": median_ms(page(startIndex=total - PAGE + 1)),
    }
    print(
        f"{total} users, pages of {PAGE}, median of {ROUNDS} requests each (Django test client, PostgreSQL)"
    )
    for label, value in results.items():
        print(f"  {label:<28} {value:8.2f} ms")
    values = list(results.values())
    print(f"cursor end/start: {values[1] / values[0]:.2f}x   index end/start: {values[3] / values[2]:.2f}x")


if __name__ == "__main__":
    main()
