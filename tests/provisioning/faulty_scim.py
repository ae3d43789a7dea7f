"""A small SCIM service on a loopback port that fails on request, and remembers every write it applied.

Users only: create (userName unique, case-insensitively: a second one is a 409), read, filter
(`attr eq "v"`, several joined by `or`), PATCH (top-level replace and remove), PUT and DELETE.
Faults are queued and each hits the next `times` requests it matches:

- `status`: answer that status (with headers, e.g. Retry-After) and apply nothing;
- `sleep`: wait `seconds` first (longer than the client's read timeout: a timeout), then apply the
  request anyway, as a slow server does;
- `reset`: apply the request, then drop the connection without an answer (the client sees a reset);
- `race_create`: another system creates the same user just before this POST (so it gets a 409).

`history[remote id]` lists the `title` of every write applied to a user, in order: the tests check
that a user never goes back to an older value.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.provisioning.loopback import serving

LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
CLAUSE = re.compile(r'(\w+) eq ("(?:[^"\\]|\\.)*")')


@dataclass
class Fault:
    method: str  # an HTTP method, or "*"
    kind: str  # status, sleep, reset, race_create
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    times: int = 1
    # Only requests whose path or body contain this text.
    match: str = ""


class FaultyScim:
    """The service's state: users by remote id, queued faults, and what happened."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.history: dict[str, list[str | None]] = {}
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, str, int]] = []
        self.delay = delay
        self.lock = threading.Lock()
        self.url = ""

    def add(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def take(self, method: str, text: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method in ("*", method) and fault.match in text:
                    fault.times -= 1
                    return fault
        return None

    def by_external_id(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        with self.lock:
            for user in self.users.values():
                found.setdefault(str(user.get("externalId")), []).append(dict(user))
        return found

    def count(self, method: str, status: int | None = None) -> int:
        return sum(1 for m, _, s in self.seen if m == method and (status is None or s == status))

    # -- the resource operations (called under the lock)

    def _record(self, remote_id: str) -> None:
        self.history.setdefault(remote_id, []).append(self.users[remote_id].get("title"))

    def create(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = str(body.get("userName") or "").casefold()
        if not name:
            return 400, {"schemas": [ERROR], "status": "400", "scimType": "invalidValue"}
        if any(str(user.get("userName") or "").casefold() == name for user in self.users.values()):
            return 409, {"schemas": [ERROR], "status": "409", "scimType": "uniqueness"}
        remote_id = uuid.uuid4().hex
        self.users[remote_id] = {**body, "id": remote_id}
        self._record(remote_id)
        return 201, self.users[remote_id]

    def patch(self, remote_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        user = self.users.get(remote_id)
        if user is None:
            return 404, {"schemas": [ERROR], "status": "404"}
        for operation in body.get("Operations") or []:
            op, path = str(operation.get("op", "")).lower(), operation.get("path")
            if op in ("replace", "add") and path:
                user[path] = operation.get("value")
            elif op == "replace" and isinstance(operation.get("value"), dict):
                user.update(operation["value"])
            elif op == "remove" and path:
                user.pop(path, None)
        self._record(remote_id)
        return 200, user

    def replace(self, remote_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        if remote_id not in self.users:
            return 404, {"schemas": [ERROR], "status": "404"}
        self.users[remote_id] = {**body, "id": remote_id}
        self._record(remote_id)
        return 200, self.users[remote_id]

    def delete(self, remote_id: str) -> tuple[int, Any]:
        if self.users.pop(remote_id, None) is None:
            return 404, {"schemas": [ERROR], "status": "404"}
        return 204, None

    def search(self, query: dict[str, str]) -> tuple[int, Any]:
        resources = list(self.users.values())
        if "filter" in query:
            wanted = [(attr, json.loads(value)) for attr, value in CLAUSE.findall(query["filter"])]
            resources = [
                user
                for user in resources
                if any(
                    str(user.get(attr) or "").casefold() == str(value).casefold()
                    if attr.lower() == "username"
                    else user.get(attr) == value
                    for attr, value in wanted
                )
            ]
        start = int(query.get("startIndex", 1))
        count = int(query.get("count", 100))
        page = resources[start - 1 : start - 1 + count]
        return 200, {"schemas": [LIST], "totalResults": len(resources), "Resources": page}


def _handler(service: FaultyScim) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            return

        def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/scim+json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _reset(self) -> None:
            # SO_LINGER with a zero timeout: close() sends a TCP reset instead of a clean FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _handle(self, method: str) -> None:
            url = urlparse(self.path)
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if len(raw) < length:
                # The client died mid-request (a killed worker): a real server acts on nothing.
                self.close_connection = True
                return
            body = json.loads(raw) if raw else {}
            fault = service.take(method, self.path + raw.decode())
            if service.delay:
                time.sleep(service.delay)
            if fault is not None and fault.kind == "status":
                service.seen.append((method, url.path, fault.status))
                self._answer(fault.status, {"schemas": [ERROR], "status": str(fault.status)}, fault.headers)
                return
            if fault is not None and fault.kind == "sleep":
                time.sleep(fault.seconds)
            parts = [part for part in url.path.split("/") if part]
            remote_id = parts[-1] if parts and parts[-1] not in ("Users", "v2") else None
            with service.lock:
                if fault is not None and fault.kind == "race_create":
                    service.create({**body, "title": "created elsewhere"})
                if method == "GET" and remote_id is None:
                    status, answer = service.search(query)
                elif method == "GET":
                    found = service.users.get(remote_id or "")
                    status, answer = (200, dict(found)) if found else (404, {"status": "404"})
                elif method == "POST":
                    status, answer = service.create(body)
                elif method == "PATCH":
                    status, answer = service.patch(remote_id or "", body)
                elif method == "PUT":
                    status, answer = service.replace(remote_id or "", body)
                else:
                    status, answer = service.delete(remote_id or "")
                service.seen.append((method, url.path, status))
                answer = json.loads(json.dumps(answer)) if answer is not None else None
            if fault is not None and fault.kind == "reset":
                self._reset()
                return
            self._answer(status, answer)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._handle("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

        def do_PATCH(self) -> None:  # noqa: N802
            self._handle("PATCH")

        def do_PUT(self) -> None:  # noqa: N802
            self._handle("PUT")

        def do_DELETE(self) -> None:  # noqa: N802
            self._handle("DELETE")

    return Handler


@contextmanager
def faulty_scim(*, delay: float = 0.0) -> Iterator[FaultyScim]:
    """The service on a free loopback port (its base URL in `.url`); `delay` slows every answer."""
    service = FaultyScim(delay=delay)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(service))
    server.daemon_threads = True
    with serving(server) as service.url:
        yield service
