"""The outermost middleware: a request id, the request metrics and one log line per request.

Kept cheap because it runs on every SCIM request: no query, no cache round
trip; a counter and a histogram (memory writes, or memory-mapped file writes
in multiprocess mode) and one log record.
"""

import logging
import os
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from directory.correlation import is_sane_request_id, request_id_bind, request_id_unbind
from observability import metrics

logger = logging.getLogger("observability.request")

REQUEST_ID_HEADER = "X-Request-ID"
# Probes and scrapes arrive every few seconds; their lines are DEBUG so they do not drown the rest.
_QUIET_PATHS = ("/healthz", "/readyz", "/metrics")


class RequestObservabilityMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        # A caller's id is kept when it is one (a proxy's, a client's); anything else is replaced,
        # so a header cannot forge log lines or grow the column.
        request_id = incoming if incoming and is_sane_request_id(incoming) else os.urandom(16).hex()
        token = request_id_bind(request_id)
        try:
            response = self.get_response(request)
            elapsed = time.perf_counter() - started
            match = request.resolver_match
            route = match.view_name if match is not None else "unmatched"
            method = request.method or ""
            status = response.status_code
            metrics.http_request_observe(route=route, method=method, status=status, seconds=elapsed)
            response[REQUEST_ID_HEADER] = request_id
            level = logging.DEBUG if request.path_info.startswith(_QUIET_PATHS) else logging.INFO
            if logger.isEnabledFor(level):
                logger.log(
                    level,
                    "%s %s %s %.1fms",
                    method,
                    route,
                    status,
                    elapsed * 1000,
                    extra={
                        "method": method,
                        "route": route,
                        "path": request.path_info,  # never the query string: filters carry names
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "client": request.META.get("REMOTE_ADDR", ""),
                    },
                )
            return response
        finally:
            request_id_unbind(token)
