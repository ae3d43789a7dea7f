"""/healthz, /readyz and /metrics: thin views over observability.health and prometheus_client."""

import hmac
import os
from http import HTTPStatus

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from observability.health import readiness
from observability.metrics import ScrapeTimeCollector


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and answering; no database or broker is asked (a liveness probe)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """The database and the broker answer, and the outbox is not backed up: 200, else 503."""
    checks = readiness()
    ready = all(check.ok for check in checks.values())
    return JsonResponse(
        {
            "status": "ok" if ready else "fail",
            "checks": {name: check.as_json() for name, check in checks.items()},
        },
        status=HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE,
    )


def _authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format: the processes' counters and histograms, then the database's gauges."""
    if not _authorized(request):
        response = JsonResponse({"detail": "A bearer token (METRICS_TOKEN) or a staff session is required."})
        response.status_code = HTTPStatus.UNAUTHORIZED
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every process of this machine (gunicorn workers, Celery workers) writes its own file there.
        MultiProcessCollector(registry)
    else:
        registry.register(_DefaultRegistry())
    registry.register(ScrapeTimeCollector())
    # The classic text format, or OpenMetrics when the scraper asks for it (Accept).
    encode, content_type = choose_encoder(request.META.get("HTTP_ACCEPT", ""))
    return HttpResponse(encode(registry), content_type=content_type)


class _DefaultRegistry:
    """This process's own metrics (a single process: `make run`, the tests)."""

    def collect(self):  # type: ignore[no-untyped-def]
        return REGISTRY.collect()
