"""`make run` with no services: SQLite, the filesystem broker, web + worker + beat, one Ctrl-C."""

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from kombu import Connection

from config.celery import app

BASE_DIR = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Output:
    """Collects a process's output on a thread, so the test can wait for lines without blocking."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} never appeared in:\n{self.text()}")


@pytest.fixture
def devstack(tmp_path):  # type: ignore[no-untyped-def]
    port = _free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_URL", "REDIS_URL"))
    }
    env.update({"VAR_DIR": str(tmp_path / "var"), "PORT": str(port), "PYTHONUNBUFFERED": "1"})
    env.pop("CELERY_BROKER_URL", None)
    env.pop("CELERY_RESULT_BACKEND", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "config.devstack"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = Output(process)
    try:
        yield process, output, port, tmp_path / "var"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _login(port: int, username: str, password: str) -> str:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_url = f"http://127.0.0.1:{port}/admin/login/?next=/admin/"
    opener.open(login_url).read()
    token = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    body = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": token, "next": "/admin/"}
    ).encode()
    request = urllib.request.Request(login_url, data=body, headers={"Referer": login_url})
    with opener.open(request) as response:
        return response.read().decode()


def test_make_run_serves_the_admin_with_the_printed_login_and_stops_on_ctrl_c(devstack):
    process, output, port, var_dir = devstack

    credentials = output.wait_for(r"Username: (\S+)\s+Password: (\S+)")
    output.wait_for(r"Starting development server at http://127\.0\.0\.1:" + str(port))
    output.wait_for(r"celery@\S+ ready")
    output.wait_for(r"beat: Starting")

    token = output.wait_for(r"SCIM token \(client 'demo'\): (\S+)").group(1)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/scim/v2/Users", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
        assert b'"totalResults":0' in response.read().replace(b" ", b"")

    page = _login(port, credentials.group(1), credentials.group(2))
    assert "Directory administration" in page
    assert "Log out" in page
    assert (var_dir / "directory.sqlite3").exists()

    # The embedded broker carries a task from this process to the stack's worker.
    broker_dir = str(var_dir / "celery" / "broker")
    options = {
        "data_folder_in": broker_dir,
        "data_folder_out": broker_dir,
        "control_folder": str(var_dir / "celery" / "control"),
        "store_processed": False,
    }
    with Connection("filesystem://", transport_options=options) as broker:
        sent = app.send_task("directory.tasks.purge_processed_change_events", connection=broker)
    output.wait_for(rf"Task directory\.tasks\.purge_processed_change_events\[{sent.id}\] succeeded")

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    time.sleep(0.5)
    leftovers = subprocess.run(
        ["pgrep", "-s", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"
