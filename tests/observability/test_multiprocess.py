"""Metrics and logs across real processes: two gunicorn workers and two Celery workers on one machine.

With PROMETHEUS_MULTIPROC_DIR shared, /metrics (served by whichever gunicorn
worker takes the scrape) adds up every process's counters: the requests the web
workers answered and the deliveries the Celery workers made. The request id of
the SCIM request that made a change reaches the worker's delivery log line.
"""

import json
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from provisioning.models import Target, VendorProfile
from scim_api.services import scim_client_create
from tests.processes import Processes, eventually
from tests.provisioning.downstream import TOKEN

pytestmark = [pytest.mark.celery_worker, pytest.mark.postgres, pytest.mark.redis]

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
METRICS_TOKEN = "multiprocess-scrape-token"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_add_up_across_web_and_celery_processes(processes: Processes, scim2_url, tmp_path: Path):
    target = Target(
        name="mp-target",
        base_url=scim2_url,
        profile=VendorProfile.objects.get(name="RFC 7644 (strict)"),
        scope=Target.Scope.ALL,
        rate_limit_rps=0,
    )
    target.set_credentials({"token": TOKEN})
    target.save()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "LOG_LEVEL": "INFO"}
    workers = [
        processes.worker(concurrency=2, beat=True, **shared),
        processes.worker(concurrency=2, **shared),
    ]
    web = processes.web(workers=2, threads=1, METRICS_TOKEN=METRICS_TOKEN, **shared)
    token = scim_client_create(name="Multiprocess IdP")[1]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}

    created = httpx.post(
        f"{web}/scim/v2/Users",
        headers={**headers, "X-Request-ID": "mp-request-1"},
        content=json.dumps({"schemas": [CORE_USER], "userName": "mp@example.com"}),
        timeout=60,  # the first request imports the application, beside two starting workers
    )
    assert created.status_code == 201, created.text
    assert created.headers["X-Request-ID"] == "mp-request-1"
    user_id = created.json()["id"]
    for _ in range(20):
        # A new connection each time, so the kernel hands them to either gunicorn worker.
        assert httpx.get(f"{web}/scim/v2/Users/{user_id}", headers=headers, timeout=60).status_code == 200

    def scraped() -> str:
        response = httpx.get(
            f"{web}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=60
        )
        assert response.status_code == 200
        return response.text

    def delivered() -> str | None:
        text = scraped()
        success = samples(text, "directory_provisioning_deliveries_total").get(
            (("outcome", "success"), ("target", "mp-target"))
        )
        return text if success else None

    text = eventually(delivered, "the worker's delivery in the web's /metrics", timeout=60)
    gets = samples(text, "directory_http_requests_total")[
        (("method", "GET"), ("route", "scim:user"), ("status", "200"))
    ]
    assert gets == 20
    lag = samples(text, "directory_provisioning_change_applied_lag_seconds_count")[(("target", "mp-target"),)]
    assert lag == 1
    assert samples(text, "directory_outbox_backlog")[()] == 0
    # The web workers and the Celery workers each wrote their own files; the scrape read them all.
    pids = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("*.db")}
    assert len(pids) >= 2

    def delivery_line() -> dict | None:
        for worker in workers:
            for line in worker.output().splitlines():
                if line.startswith("{") and '"provisioning.delivery"' in line:
                    return json.loads(line)
        return None

    line = eventually(delivery_line, "a JSON delivery line in a worker's output", timeout=10)
    assert line["request_id"] == "mp-request-1"
    assert line["target"] == "mp-target"
    assert line["object_id"] == user_id
    assert line["outcome"] == "success"
    assert settings.SECRET_KEY not in "".join(worker.output() for worker in workers)
