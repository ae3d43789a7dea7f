"""scim2-server (an independent SCIM server from PyPI) for tests, in process or as a loopback subprocess."""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from scim2_models import ScimProvider
from scim2_server.memory import InMemoryStorage
from scim2_server.service import ScimService
from scim2_server.testserver.application import BearerTokenApplication
from scim2_server.utils import (
    load_default_resource_types,
    load_default_schemas,
    load_default_service_provider_config,
)

from provisioning.clients import ScimConnection, build_auth

TOKEN = "downstream-token"


class InProcessScim:
    """A scim2-server application behind httpx's WSGI transport: real SCIM semantics, no socket."""

    def __init__(self) -> None:
        config = load_default_service_provider_config()
        provider = ScimProvider.from_discovery(
            load_default_schemas().values(), load_default_resource_types().values(), config=config
        )
        self.app = BearerTokenApplication(
            InMemoryStorage(), provider, service=ScimService(provider, secret="s" * 32), bearer_tokens=[TOKEN]
        )
        self.requests: list[tuple[str, str, Any]] = []
        self.transport = httpx.WSGITransport(app=self.app)
        self.reader = httpx.Client(
            transport=self.transport,
            base_url="http://downstream.test/v2/",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )

    def connection(self) -> ScimConnection:
        recorder = self

        class Recording(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                body = json.loads(request.content) if request.content else None
                recorder.requests.append((request.method, request.url.path.removeprefix("/v2/"), body))
                return recorder.transport.handle_request(request)

        return ScimConnection(
            base_url="http://downstream.test/v2",
            auth=build_auth("bearer", {"token": TOKEN}),
            transport=Recording(),
        )

    def get(self, path: str, **params: Any) -> Any:
        response = self.reader.get(path, params=params)
        return response.json() if response.content else None

    def find(self, endpoint: str, attribute: str, value: str) -> list[dict[str, Any]]:
        return self.get(endpoint, filter=f'{attribute} eq "{value}"').get("Resources", [])

    def create(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.reader.post(
            endpoint, content=json.dumps(body), headers={"Content-Type": "application/scim+json"}
        )
        assert response.status_code == 201, response.text
        return response.json()

    def delete(self, path: str) -> None:
        assert self.reader.delete(path).status_code == 204


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode}: {process.stdout.read() if process.stdout else ''}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


@contextmanager
def scim2_server_process() -> Iterator[str]:
    """`scim2-server` as its own process on a free loopback port; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "scim2-server"),
            "--port",
            str(port),
            "--bearer-token",
            TOKEN,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/v2"
    finally:
        process.terminate()
        process.wait(timeout=10)
