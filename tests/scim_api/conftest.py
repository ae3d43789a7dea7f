import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from scim_api.models import ScimClient
from scim_api.services import scim_client_create

SCIM_JSON = "application/scim+json"


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any

    def __repr__(self) -> str:  # shown by pytest when an assertion on a reply fails
        return f"Reply({self.status}, {json.dumps(self.body)[:2000]})"


class Scim:
    """A SCIM client for tests: bearer token, SCIM JSON bodies, parsed replies."""

    def __init__(self, client: Client, token: str, base: str = "/scim/v2") -> None:
        self.client, self.token, self.base = client, token, base

    def _call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, **params: Any
    ) -> Reply:
        extra = {"HTTP_AUTHORIZATION": f"Bearer {self.token}"} if self.token else {}
        for name, value in (headers or {}).items():
            extra["HTTP_" + name.upper().replace("-", "_")] = value
        url = path if path.startswith("/") else f"{self.base}/{path}"
        call = getattr(self.client, method)
        if method == "get":
            response = call(url, params, **extra)
        else:
            data = body if isinstance(body, (str, bytes)) else (json.dumps(body) if body is not None else "")
            content_type = extra.pop("HTTP_CONTENT_TYPE", SCIM_JSON)
            response = call(url, data=data, content_type=content_type, **extra)
        content = response.content.decode()
        return Reply(response.status_code, json.loads(content) if content else None, response)

    def get(self, path: str, headers: dict[str, str] | None = None, **params: Any) -> Reply:
        return self._call("get", path, headers=headers, **params)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Reply:
        return self._call("post", path, body, headers)

    def put(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Reply:
        return self._call("put", path, body, headers)

    def patch(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Reply:
        return self._call("patch", path, body, headers)

    def delete(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return self._call("delete", path, None, headers)


@pytest.fixture
def scim_client(db) -> tuple[ScimClient, str]:  # type: ignore[no-untyped-def]
    return scim_client_create(name="Test IdP")


@pytest.fixture
def scim(client: Client, scim_client: tuple[ScimClient, str]) -> Scim:
    return Scim(client, scim_client[1])


@pytest.fixture
def anonymous(client: Client) -> Scim:
    return Scim(client, "")


def patch_op(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": list(operations)}


@pytest.fixture(autouse=True)
def _forget_recent_tokens() -> None:
    # Each test starts with no token trusted from an earlier test's (rolled back) clients.
    from scim_api.token_cache import recent_clients

    recent_clients.clear()
