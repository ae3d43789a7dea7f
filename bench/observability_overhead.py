"""What the observability middleware adds to one request, measured without the request itself.

Calls RequestObservabilityMiddleware around a view that does nothing (a prepared
200 response, resolved as scim:user), so the time per call is the middleware's
own: the request id, the counter and histogram, the response header and (at
INFO) the JSON log line. Run once per mode; PROMETHEUS_MULTIPROC_DIR switches
prometheus_client to its memory-mapped files, as under gunicorn:

    .venv/bin/python bench/observability_overhead.py                       # metrics in memory, no log line
    .venv/bin/python bench/observability_overhead.py --log-level INFO 2>/dev/null
    PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) .venv/bin/python bench/observability_overhead.py \
        --log-level INFO 2>/dev/null

Compare with the time of a whole GET /Users/{id} (bench/profile_requests.py get).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50_000, help="calls per round (default 50,000)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the fastest is reported")
    parser.add_argument("--log-level", default="WARNING", help="LOG_LEVEL (INFO writes a line per call)")
    args = parser.parse_args()
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings", LOG_LEVEL=args.log_level, LOG_FORMAT="json", DEBUG="false"
    )
    os.environ.setdefault("SECRET_KEY", "observability-overhead-bench")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()
    from django.http import HttpResponse
    from django.test import RequestFactory
    from django.urls import resolve

    from observability.middleware import RequestObservabilityMiddleware

    path = "/scim/v2/Users/2819c223-7f76-453a-919d-413861904646"
    match = resolve(path)
    request = RequestFactory().get(path)
    response = HttpResponse(b"{}", content_type="application/scim+json")

    def view(incoming: object) -> HttpResponse:
        request.resolver_match = match
        return response

    middleware = RequestObservabilityMiddleware(view)
    bare = view
    for call in (middleware, bare):  # warm up: the labelled series exist before timing
        for _ in range(1000):
            call(request)

    def per_call(call: object) -> float:
        best = float("inf")
        for _ in range(args.repeat):
            # CPU time of this process: on a shared machine, far steadier than wall time.
            started = time.process_time()
            for _ in range(args.n):
                call(request)  # type: ignore[operator]
            best = min(best, (time.process_time() - started) / args.n)
        return best

    overhead = per_call(middleware) - per_call(bare)
    mode = "multiprocess files" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "in memory"
    print(f"metrics {mode}, LOG_LEVEL={args.log_level}: {overhead * 1e6:.1f} µs of CPU per request")


if __name__ == "__main__":
    main()
