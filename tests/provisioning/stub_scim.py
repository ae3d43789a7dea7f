"""A deliberately broken SCIM service on a loopback port, for the connection test: each fault on request."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.provisioning.loopback import serving

LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
USERS = [{"id": f"u{n}", "userName": f"user{n}@example.com"} for n in range(3)]


class StubState:
    """Which faults the stub shows; everything else behaves like a small, correct SCIM service."""

    def __init__(self, faults: set[str]) -> None:
        self.faults = faults
        self.requests: list[str] = []


def _handler(state: StubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            return

        def send(self, status: int, body: Any, content_type: str = "application/scim+json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlparse(self.path)
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            path = url.path.removeprefix("/v2/")
            state.requests.append(self.path)
            faults = state.faults
            if "not_scim" in faults:
                self.send(200, "<html>welcome</html>", "text/html")
                return
            if "bad_token" in faults or self.headers.get("Authorization") != "Bearer stub-token":
                self.send(401, {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "401"})
                return
            if path == "ServiceProviderConfig":
                if "no_spc" in faults:
                    self.send(404, {"status": "404", "detail": "no such endpoint"})
                    return
                spc = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
                self.send(
                    200, {"schemas": [spc], "patch": {"supported": True}, "filter": {"supported": True}}
                )
                return
            if path == "Schemas":
                if "schemas_broken" in faults:
                    self.send(500, {"status": "500", "detail": "internal error"})
                    return
                ids = ["urn:ietf:params:scim:schemas:core:2.0:Group"]
                if "no_user_schema" not in faults:
                    ids.insert(0, "urn:ietf:params:scim:schemas:core:2.0:User")
                self.send(200, {"schemas": [LIST], "Resources": [{"id": i} for i in ids], "totalResults": 2})
                return
            if path in ("Users", "Groups"):
                self.list(path, query)
                return
            self.send(404, {"status": "404"})

        def list(self, path: str, query: dict[str, str]) -> None:
            faults = state.faults
            resources = USERS if path == "Users" else []
            if "filter" in query:
                if "filter_unsupported" in faults:
                    self.send(
                        400, {"status": "400", "scimType": "invalidFilter", "detail": "filtering unsupported"}
                    )
                    return
                if "filter_ignored" not in faults:
                    resources = []
            total = len(resources)
            start = int(query.get("startIndex", 1))
            count = int(query.get("count", 100))
            if "paging_ignores_count" not in faults:
                first = 1 if "paging_ignores_start" in faults else start
                resources = resources[first - 1 : first - 1 + count]
            self.send(
                200,
                {
                    "schemas": [LIST],
                    "totalResults": total,
                    "startIndex": start,
                    "itemsPerPage": len(resources),
                    "Resources": resources,
                },
            )

    return Handler


@contextmanager
def stub_scim(*faults: str) -> Iterator[tuple[str, StubState]]:
    """The stub on a free loopback port, showing `faults`; yields (base URL, state)."""
    state = StubState(set(faults))
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))) as url:
        yield url, state
