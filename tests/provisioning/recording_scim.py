"""scim2-server (PyPI) on a loopback port, behind a recorder that sees every write it applies.

The recorder applies one request at a time (so the order it records is the order the server applied
them) and notes, per object:

- every POST, keyed by the `externalId` sent (the directory's id): two POSTs for one object is a
  duplicated create;
- every write that arrived while another write to the same object was still in flight: two
  workers pushing one object at once;
- after each successful write to a user, the user's `title` as the server then holds it: the
  history shows whether a user ever went back to an older value (per-object order).

Tests read the server's whole state with `snapshot()`, taken between two writes.
"""

from __future__ import annotations

import io
import json
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx

from tests.provisioning.downstream import TOKEN, InProcessScim
from tests.provisioning.loopback import serving

WRITES = ("POST", "PUT", "PATCH", "DELETE")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@dataclass
class RecordingScim:
    """The recorder (a WSGI application wrapping scim2-server's) and what it saw."""

    inner: Any = field(default_factory=lambda: InProcessScim().app)
    url: str = ""
    posts: Counter[str] = field(default_factory=Counter)
    overlaps: list[str] = field(default_factory=list)
    titles: dict[str, list[str | None]] = field(default_factory=lambda: defaultdict(list))
    writes: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _flight_lock: threading.Lock = field(default_factory=threading.Lock)
    _in_flight: set[str] = field(default_factory=set)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(raw)
        if method not in WRITES:
            with self.lock:
                return self._call(environ, start_response)
        body = json.loads(raw) if raw else {}
        parts = [part for part in environ["PATH_INFO"].split("/") if part]
        key = f"external:{body.get('externalId')}" if method == "POST" else f"remote:{parts[-1]}"
        with self._flight_lock:
            if key in self._in_flight:
                self.overlaps.append(
                    f"{method} {environ['PATH_INFO']} while another write to it was in flight"
                )
            self._in_flight.add(key)
        try:
            with self.lock:
                status: list[str] = []

                def capture(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                    status.append(line)
                    return start_response(line, headers, exc_info)

                answer = self._call(environ, capture)
                code = int(status[0].split()[0])
                self.writes[method] += 1
                if method == "POST":
                    self.posts[str(body.get("externalId"))] += 1
                resource = json.loads(answer[0]) if answer and answer[0] else {}
                remote_id = resource.get("id") if method == "POST" else parts[-1]
                if code < 300 and "Users" in parts and method != "DELETE" and remote_id:
                    self.titles[remote_id].append(self._stored(f"Users/{remote_id}").get("title"))
                return answer
        finally:
            with self._flight_lock:
                self._in_flight.discard(key)

    def _call(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return [b"".join(self.inner(environ, start_response))]

    def _stored(self, path: str, **params: Any) -> dict[str, Any]:
        """Read the server's state without the socket (the caller holds the lock)."""
        with httpx.Client(
            transport=httpx.WSGITransport(app=self.inner),
            base_url="http://downstream.test/v2/",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client:
            response = client.get(path, params=params)
            return response.json() if response.content else {}  # type: ignore[no-any-return]

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every user and group the server holds, read between two writes."""
        with self.lock:
            return {
                endpoint: self._stored(endpoint, count=10_000).get("Resources", [])
                for endpoint in ("Users", "Groups")
            }


@contextmanager
def recording_scim() -> Iterator[RecordingScim]:
    """The recorder on a free loopback port (its base URL in `.url`)."""
    service = RecordingScim()
    server = make_server("127.0.0.1", 0, service, server_class=_ThreadingServer, handler_class=_QuietHandler)
    with serving(server) as service.url:
        yield service
