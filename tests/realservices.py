"""Which real services this test run uses, decided before Django reads its settings.

Loaded with `-p tests.realservices` (see pyproject.toml), so it runs before
pytest-django sets Django up. For each service the variable TEST_<SERVICE>
says: 1 = required (the run stops with an error if it is unreachable),
0 = off, unset = used when reachable.

- PostgreSQL: DATABASE_URL if it names PostgreSQL; else TEST_DATABASE_URL
  (default postgres://postgres@127.0.0.1:5432/directory). When reachable the
  whole suite runs on it; otherwise on SQLite, and tests marked `postgres`
  are skipped with the reason shown.
- Redis: REDIS_URL, else TEST_REDIS_URL (default redis://127.0.0.1:6379/15).
  Tests marked `redis` need it; tests marked `celery_worker` need both.
- Browser: Debian's chromium and chromedriver on PATH, for tests marked `browser`.
"""

import os
import shutil
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest


@dataclass
class Service:
    name: str
    available: bool
    reason: str


def _mode(variable: str) -> str | None:
    raw = os.environ.get(variable, "").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return "on"
    if raw in ("0", "false", "no", "off"):
        return "off"
    return None


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _decide(name: str, variable: str, found: bool, where: str) -> Service:
    mode = _mode(variable)
    if mode == "off":
        return Service(name, False, f"{name} turned off by {variable}=0")
    if found:
        return Service(name, True, "")
    if mode == "on":
        raise pytest.UsageError(f"{variable}=1 but {name} is not available ({where})")
    return Service(name, False, f"{name} not available ({where}); set {variable}=1 to require it")


def _postgres() -> Service:
    url = os.environ.get("DATABASE_URL", "")
    if url and not url.startswith(("postgres://", "postgresql://", "pgsql://")):
        return _decide("PostgreSQL", "TEST_POSTGRES", False, f"DATABASE_URL is {url.split(':')[0]}")
    if _mode("TEST_POSTGRES") == "off":
        os.environ.pop("DATABASE_URL", None)
        return _decide("PostgreSQL", "TEST_POSTGRES", False, "")
    url = url or os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/directory")
    service = _decide("PostgreSQL", "TEST_POSTGRES", _reachable(url, 5432), f"nothing listens for {url}")
    if service.available:
        os.environ["DATABASE_URL"] = url
    return service


def _redis() -> Service:
    url = os.environ.get("REDIS_URL") or os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    service = _decide("Redis", "TEST_REDIS", _reachable(url, 6379), f"nothing listens for {url}")
    if service.available:
        os.environ["TEST_REDIS_URL"] = url
    return service


def _browser() -> Service:
    missing = [tool for tool in ("chromium", "chromedriver") if shutil.which(tool) is None]
    return _decide("Browser", "TEST_BROWSER", not missing, f"{' and '.join(missing)} not on PATH")


SERVICES = {"postgres": _postgres(), "redis": _redis(), "browser": _browser()}

# The suite must not send tasks to whatever broker the developer's shell
# points at; the tests that need a broker start their own worker on Redis.
os.environ.pop("REDIS_URL", None)
os.environ.pop("CELERY_BROKER_URL", None)
os.environ["CELERY_RESULT_BACKEND"] = "cache+memory://"


def pytest_report_header() -> list[str]:
    return [
        "real services: "
        + ", ".join(f"{service.name}={'yes' if service.available else 'no'}" for service in SERVICES.values())
    ]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    needs = {"postgres": ["postgres"], "redis": ["redis"], "browser": ["browser"]}
    needs["celery_worker"] = ["postgres", "redis"]
    for item in items:
        for marker, services in needs.items():
            if item.get_closest_marker(marker) is None:
                continue
            for key in services:
                if not SERVICES[key].available:
                    item.add_marker(pytest.mark.skip(reason=SERVICES[key].reason))
                    break


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many tests really ran against each real component, so CI output proves it."""
    counts = {
        marker: {"passed": 0, "failed": 0, "skipped": 0}
        for marker in ("postgres", "redis", "celery_worker", "browser")
    }
    for outcome in ("passed", "failed", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") not in ("call", "setup"):
                continue
            if outcome != "skipped" and report.when != "call":
                continue
            for marker in counts:
                if marker in getattr(report, "keywords", {}):
                    counts[marker][outcome] += 1
    database = "PostgreSQL" if SERVICES["postgres"].available else "SQLite"
    terminalreporter.write_sep("-", "real components")
    terminalreporter.write_line(f"whole suite ran on: {database}")
    for marker, count in counts.items():
        terminalreporter.write_line(
            f"tests marked {marker} - passed {count['passed']}, failed {count['failed']}, "
            f"skipped {count['skipped']}"
        )
