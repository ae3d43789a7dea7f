"""SCIM 2.0 client for downstream targets, on httpx.

One `ScimConnection` per target (base URL, authentication, timeouts) and one
small client class per resource type on top of it. Every HTTP failure becomes
one of the errors below, which is all the delivery engine branches on:

- TransientError: 429, 5xx, timeouts, connection errors; retry later
  (`retry_after` carries the server's Retry-After, in seconds).
- RemoteNotFound (404): the remote object is gone; re-create or forget it.
- Conflict (409): the object exists already; look it up and link it.
- TargetMisconfigured (401/403): credentials or permissions; pause the target.
- PermanentError: any other 4xx; retrying the same request cannot help.

Every exchange is recorded (method, path, redacted body, status, duration) so
the provisioning log can show exactly what was sent. Credentials never appear
in a record, an exception message or a log line.
"""

from __future__ import annotations

import base64
import email.utils
import json
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

SCIM_JSON = "application/scim+json"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
REDACTED = "[redacted]"
# Keys whose values never leave this process in a log row.
SECRET_KEYS = frozenset({"password", "secret", "token", "client_secret", "access_token", "authorization"})


class ScimError(Exception):
    """A request to a target failed; `status` is None when no HTTP answer came back."""

    def __init__(self, message: str, *, status: int | None = None, scim_type: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.scim_type = scim_type


class TransientError(ScimError):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        scim_type: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, scim_type=scim_type)
        self.retry_after = retry_after


class PermanentError(ScimError):
    pass


class RemoteNotFound(PermanentError):
    pass


class Conflict(PermanentError):
    pass


class TargetMisconfigured(PermanentError):
    pass


def redact(value: Any) -> Any:
    """A copy of a JSON value with secret-looking keys' values replaced."""
    if isinstance(value, dict):
        return {
            key: REDACTED if str(key).lower() in SECRET_KEYS else redact(item) for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --- authentication ---------------------------------------------------------------


class BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def _basic(username: str, password: str) -> str:
    # RFC 6749 §2.3.1: form-encode each part before joining them.
    pair = f"{quote(username, safe='')}:{quote(password, safe='')}".encode()
    return "Basic " + base64.b64encode(pair).decode()


@dataclass
class _CachedToken:
    value: str
    expires_at: float


class OAuthClientCredentials(httpx.Auth):
    """OAuth 2.0 client credentials (RFC 6749 §4.4): a cached access token, fetched again before it expires.

    The token cache is shared by every connection in the process with the same
    token URL and client id, so worker threads do not each fetch their own.
    A 401 drops the cached token and retries the request once with a new one.
    """

    requires_response_body = True
    _cache: dict[tuple[str, str, str], _CachedToken] = {}
    _lock = threading.Lock()
    # Renew this many seconds before the server's expiry, so a token never dies mid-request.
    EARLY_RENEWAL = 30.0

    def __init__(self, *, token_url: str, client_id: str, client_secret: str, scope: str = "") -> None:
        self.token_url, self.client_id, self.client_secret, self.scope = (
            token_url,
            client_id,
            client_secret,
            scope,
        )

    @property
    def _key(self) -> tuple[str, str, str]:
        return (self.token_url, self.client_id, self.scope)

    def _token_request(self) -> httpx.Request:
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        return httpx.Request(
            "POST",
            self.token_url,
            data=data,
            headers={
                "Accept": "application/json",
                "Authorization": _basic(self.client_id, self.client_secret),
            },
        )

    def _store(self, response: httpx.Response) -> str:
        if response.status_code in (400, 401, 403):
            raise TargetMisconfigured(
                f"The OAuth token endpoint refused the client credentials ({response.status_code})",
                status=response.status_code,
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(
                f"The OAuth token endpoint answered {response.status_code}",
                status=response.status_code,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        try:
            body = response.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise TargetMisconfigured(
                f"The OAuth token endpoint answered {response.status_code} without an access_token",
                status=response.status_code,
            ) from None
        lifetime = float(body.get("expires_in") or 3600)
        with self._lock:
            self._cache[self._key] = _CachedToken(
                token, time.monotonic() + max(1.0, lifetime - self.EARLY_RENEWAL)
            )
        return token

    def _cached(self) -> str | None:
        with self._lock:
            cached = self._cache.get(self._key)
        if cached is None or cached.expires_at <= time.monotonic():
            return None
        return cached.value

    def forget(self) -> None:
        with self._lock:
            self._cache.pop(self._key, None)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._cached()
        if token is None:
            response = yield self._token_request()
            response.read()
            token = self._store(response)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # The token may have been revoked before its expiry: one fresh try.
            self.forget()
            token_response = yield self._token_request()
            token_response.read()
            request.headers["Authorization"] = f"Bearer {self._store(token_response)}"
            yield request


def build_auth(auth_type: str, credentials: dict[str, Any]) -> httpx.Auth | None:
    if auth_type == "bearer":
        token = credentials.get("token")
        return BearerAuth(str(token)) if token else None
    if auth_type == "basic":
        return httpx.BasicAuth(str(credentials.get("username", "")), str(credentials.get("password", "")))
    if auth_type == "oauth_client_credentials":
        return OAuthClientCredentials(
            token_url=str(credentials.get("token_url", "")),
            client_id=str(credentials.get("client_id", "")),
            client_secret=str(credentials.get("client_secret", "")),
            scope=str(credentials.get("scope", "")),
        )
    raise ValueError(f"Unknown authentication type {auth_type!r}")


# --- the connection ----------------------------------------------------------------


@dataclass
class Exchange:
    """One request and its answer, as the provisioning log keeps it."""

    method: str
    path: str
    body: Any
    status: int | None
    duration_ms: int
    response: Any = None
    error: str = ""

    def as_log(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "body": redact(self.body),
            "status": self.status,
            "duration_ms": self.duration_ms,
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class ScimConnection:
    """HTTP to one target. Thread-safe; keeps connections alive between requests."""

    base_url: str
    auth: httpx.Auth | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    transport: httpx.BaseTransport | None = None
    # Called before every request: the target's rate limiter.
    before_request: Callable[[], None] | None = None
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            timeout = httpx.Timeout(self.read_timeout, connect=self.connect_timeout)
            self._client = httpx.Client(
                base_url=self.base_url.rstrip("/") + "/",
                auth=self.auth,
                timeout=timeout,
                transport=self.transport,
                headers={"Accept": f"{SCIM_JSON}, application/json", "User-Agent": "identity-directory"},
                follow_redirects=False,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        log: list[Exchange] | None = None,
    ) -> Any:
        """Send one request; return the parsed JSON body (None when empty) or raise a ScimError."""
        if self.before_request is not None:
            self.before_request()
        url = path.lstrip("/")
        shown = path + (("?" + "&".join(f"{k}={v}" for k, v in params.items())) if params else "")
        started = time.monotonic()
        content = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": SCIM_JSON} if content is not None else {}
        try:
            response = self.client.request(method, url, content=content, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            self._record(log, method, shown, body, None, started, error=f"timeout: {type(exc).__name__}")
            raise TransientError(f"{method} {shown} timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            self._record(log, method, shown, body, None, started, error=f"{type(exc).__name__}: {exc}")
            raise TransientError(f"{method} {shown} failed: {type(exc).__name__}: {exc}") from None
        parsed = _json(response)
        self._record(log, method, shown, body, response.status_code, started, response=parsed)
        if response.status_code < 300:
            return parsed
        raise _error(method, shown, response, parsed)

    @staticmethod
    def _record(
        log: list[Exchange] | None,
        method: str,
        path: str,
        body: Any,
        status: int | None,
        started: float,
        *,
        response: Any = None,
        error: str = "",
    ) -> None:
        if log is not None:
            duration = int((time.monotonic() - started) * 1000)
            log.append(Exchange(method, path, body, status, duration, response, error))


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _error(method: str, path: str, response: httpx.Response, body: Any) -> ScimError:
    status = response.status_code
    detail = ""
    scim_type = ""
    if isinstance(body, dict):
        detail = str(body.get("detail") or body.get("message") or "")[:500]
        scim_type = str(body.get("scimType") or "")
    else:
        detail = response.text[:200]
    message = f"{method} {path} answered {status}" + (f": {detail}" if detail else "")
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return TransientError(message, status=status, scim_type=scim_type, retry_after=retry_after)
    if status in (401, 403):
        return TargetMisconfigured(message, status=status, scim_type=scim_type)
    if status == 404:
        return RemoteNotFound(message, status=status, scim_type=scim_type)
    if status == 409:
        return Conflict(message, status=status, scim_type=scim_type)
    return PermanentError(message, status=status, scim_type=scim_type)


# --- resources ---------------------------------------------------------------------


def filter_eq(attribute: str, value: str) -> str:
    """`attribute eq "value"` with the value escaped as a JSON string (RFC 7644 §3.4.2.2)."""
    return f"{attribute} eq {json.dumps(value)}"


class ResourceClient:
    """Create, read, replace, patch, delete and find one resource type on a target."""

    endpoint = ""

    def __init__(self, connection: ScimConnection, log: list[Exchange] | None = None) -> None:
        self.connection = connection
        self.log = log

    def _path(self, remote_id: str | None = None) -> str:
        return self.endpoint if remote_id is None else f"{self.endpoint}/{quote(remote_id, safe='')}"

    def _call(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.connection.request(method, path, body=body, params=params, log=self.log)

    def get(self, remote_id: str) -> dict[str, Any]:
        return self._resource(self._call("GET", self._path(remote_id)))

    def create(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._resource(self._call("POST", self._path(), body=payload))

    def replace(self, remote_id: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        return self._call("PUT", self._path(remote_id), body={**payload, "id": remote_id})  # type: ignore[no-any-return]

    def patch(self, remote_id: str, operations: list[dict[str, Any]]) -> dict[str, Any] | None:
        body = {"schemas": [PATCH_OP], "Operations": operations}
        return self._call("PATCH", self._path(remote_id), body=body)  # type: ignore[no-any-return]

    def delete(self, remote_id: str) -> None:
        self._call("DELETE", self._path(remote_id))

    def find(self, attribute: str, value: str, *, attributes: str = "id") -> tuple[list[dict[str, Any]], int]:
        """(resources, total) whose `attribute` equals `value`; two are asked for, since one is the answer."""
        params = {"filter": filter_eq(attribute, value), "count": 2, "startIndex": 1}
        if attributes:
            params["attributes"] = attributes
        body = self._call("GET", self._path(), params=params)
        if not isinstance(body, dict):
            raise PermanentError(f"GET {self.endpoint}?filter=... did not answer a ListResponse")
        resources = body.get("Resources") or []
        total = body.get("totalResults")
        found = [item for item in resources if isinstance(item, dict) and item.get("id")]
        return found, max(len(found), total if isinstance(total, int) else 0)

    def find_many(
        self, attribute: str, values: list[str], *, max_filter_length: int = 3000
    ) -> dict[str, list[str]] | None:
        """{casefolded value: remote ids} for every value, by `attribute eq v1 or attribute eq v2 ...`.

        The filter is split so no request's filter passes `max_filter_length`
        characters (URLs stay well under common server limits). None when an
        answer cannot be read back: a resource without the attribute, or fewer
        resources than the target counted (a page-size cap).
        """
        found: dict[str, list[str]] = {}
        chunks: list[list[str]] = [[]]
        length = 0
        for value in values:
            clause = len(filter_eq(attribute, value)) + 4
            if chunks[-1] and length + clause > max_filter_length:
                chunks.append([])
                length = 0
            chunks[-1].append(value)
            length += clause
        for chunk in chunks:
            if not chunk:
                continue
            params = {
                "filter": " or ".join(filter_eq(attribute, value) for value in chunk),
                "startIndex": 1,
                "count": 2 * len(chunk),
                "attributes": f"id,{attribute}",
            }
            body = self._call("GET", self._path(), params=params)
            if not isinstance(body, dict):
                raise PermanentError(f"GET {self.endpoint}?filter=... did not answer a ListResponse")
            resources = [item for item in body.get("Resources") or [] if isinstance(item, dict)]
            total = body.get("totalResults")
            if isinstance(total, int) and total > len(resources):
                return None
            lowered = attribute.lower()
            for item in resources:
                value = next((v for k, v in item.items() if k.lower() == lowered), None)
                if not isinstance(value, str) or not item.get("id"):
                    return None
                found.setdefault(value.casefold(), []).append(str(item["id"]))
        return found

    def pages(self, *, page_size: int = 100, attributes: str = "") -> Iterator[list[dict[str, Any]]]:
        """Every resource, a page at a time (index pagination)."""
        start = 1
        while True:
            params: dict[str, Any] = {"startIndex": start, "count": page_size}
            if attributes:
                params["attributes"] = attributes
            body = self._call("GET", self._path(), params=params)
            resources = [item for item in (body or {}).get("Resources") or [] if isinstance(item, dict)]
            if not resources:
                return
            yield resources
            start += len(resources)
            total = (body or {}).get("totalResults")
            if isinstance(total, int) and start > total:
                return

    @staticmethod
    def _resource(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not body.get("id"):
            raise PermanentError("The target answered without a resource id")
        return body


class UserClient(ResourceClient):
    endpoint = "Users"


class GroupClient(ResourceClient):
    endpoint = "Groups"


class DiscoveryClient(ResourceClient):
    """The discovery endpoints, for the connection test."""

    def service_provider_config(self) -> dict[str, Any]:
        return self._call("GET", "ServiceProviderConfig")  # type: ignore[no-any-return]

    def schemas(self) -> Any:
        return self._call("GET", "Schemas")
