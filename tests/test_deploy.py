"""Production serving with the documented environment (docs/production.env): `check --deploy` is clean,
and gunicorn with gunicorn.conf.py serves the admin's static files (WhiteNoise) and the security headers."""

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent
HOST = "directory.example.com"


def production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """docs/production.env as a process environment, its files and places swapped for temporary ones."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(BASE_DIR)}
    for line in (BASE_DIR / "docs" / "production.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip()
    for name in ("SECRET_KEY_FILE", "PROVISIONING_SECRET_KEY_FILE", "METRICS_TOKEN_FILE"):
        secret = tmp_path / name.lower()
        secret.write_text(secrets.token_urlsafe(50))
        env[name] = str(secret)
    env["VAR_DIR"] = str(tmp_path / "var")
    env["STATIC_ROOT"] = str(tmp_path / "static")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    env.update(overrides)
    return env


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_environment(tmp_path: Path) -> None:
    result = _manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    # security.W003 alone is silenced, in config/settings.py, with the reason.
    assert "System check identified no issues (1 silenced)." in result.stdout


def test_check_deploy_fails_when_a_documented_setting_is_left_out(tmp_path: Path) -> None:
    env = production_env(tmp_path, SECURE_HSTS_SECONDS="0", SECURE_SSL_REDIRECT="false")
    result = _manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W004" in result.stderr
    assert "security.W008" in result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    env = production_env(tmp_path)
    del env["SECRET_KEY_FILE"]
    result = _manage(env, "check")
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) is required when DEBUG is off" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gunicorn(tmp_path: Path, db) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """gunicorn -c gunicorn.conf.py, production environment, a loopback port; collectstatic first."""
    settings = connection.settings_dict
    database_url = (
        f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"
        if connection.vendor == "postgresql"
        else f"sqlite:///{tmp_path / 'db.sqlite3'}"
    )
    port = _free_port()
    env = production_env(
        tmp_path, DATABASE_URL=database_url, GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1"
    )
    env.pop("REDIS_URL")  # the admin login page needs no cache; Redis is not this test's subject
    collected = _manage(env, "collectstatic", "--noinput", "-v", "0")
    assert collected.returncode == 0, collected.stderr
    log = (tmp_path / "gunicorn.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("gunicorn did not start: " + (tmp_path / "gunicorn.log").read_text())
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


# As the reverse proxy forwards a request it received over HTTPS.
PROXIED = {"Host": HOST, "X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.10"}


def test_gunicorn_serves_static_files_and_security_headers(gunicorn: str) -> None:
    page = httpx.get(gunicorn + "/admin/login/", headers=PROXIED)
    assert page.status_code == 200
    headers = page.headers
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    cookie = headers["set-cookie"]
    assert "csrftoken=" in cookie
    assert "Secure" in cookie

    # The page links the manifest's hashed name; WhiteNoise serves it compressed and cacheable for ever.
    stylesheet = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page.text)
    assert stylesheet, page.text[:2000]
    css = httpx.get(gunicorn + stylesheet.group(1), headers={**PROXIED, "Accept-Encoding": "gzip"})
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert css.headers["content-encoding"] == "gzip"
    assert "immutable" in css.headers["cache-control"]
    assert "max-age=315360000" in css.headers["cache-control"]
    assert "#header" in css.text


def test_gunicorn_redirects_plain_http_to_https(gunicorn: str) -> None:
    response = httpx.get(gunicorn + "/admin/login/", headers={"Host": HOST})
    assert response.status_code == 301
    assert response.headers["location"] == f"https://{HOST}/admin/login/"
    # A host name not in ALLOWED_HOSTS is refused.
    unknown_host = httpx.get(gunicorn + "/admin/login/", headers={**PROXIED, "Host": "evil.example"})
    assert unknown_host.status_code == 400
