"""The SCIM client against stubbed HTTP: exact method, URL and body; errors mapped to the taxonomy."""

import json
from http import HTTPStatus
from typing import Any

import httpx
import pytest

from provisioning.clients import (
    Conflict,
    GroupClient,
    OAuthClientCredentials,
    PermanentError,
    RemoteNotFound,
    ScimConnection,
    TargetMisconfigured,
    TransientError,
    UserClient,
    build_auth,
    parse_retry_after,
)


class Recorder:
    """An httpx MockTransport that answers from a queue and keeps every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


def connection(recorder: Recorder, auth: httpx.Auth | None = None) -> ScimConnection:
    return ScimConnection(
        base_url="https://target.example/scim/v2", auth=auth, transport=httpx.MockTransport(recorder)
    )


def test_create_posts_scim_json_to_users_with_bearer_token():
    recorder = Recorder(httpx.Response(HTTPStatus.CREATED, json={"id": "r-1", "userName": "ada"}))
    log: list = []
    client = UserClient(connection(recorder, build_auth("bearer", {"token": "s3cret"})), log)

    created = client.create({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ada"})

    request = recorder.requests[0]
    assert (request.method, str(request.url)) == ("POST", "https://target.example/scim/v2/Users")
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.headers["Content-Type"] == "application/scim+json"
    assert recorder.body() == {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ada"}
    assert created["id"] == "r-1"
    assert [(e.method, e.path, e.status) for e in log] == [("POST", "Users", 201)]
    assert "s3cret" not in json.dumps([e.as_log() for e in log])


def test_patch_sends_a_patch_op_message_to_the_escaped_id():
    recorder = Recorder(httpx.Response(HTTPStatus.NO_CONTENT))
    client = GroupClient(connection(recorder))
    operations = [{"op": "add", "path": "members", "value": [{"value": "u/1"}]}]

    assert client.patch("g 1", operations) is None

    request = recorder.requests[0]
    assert (request.method, str(request.url)) == ("PATCH", "https://target.example/scim/v2/Groups/g%201")
    assert recorder.body() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": operations,
    }


def test_replace_puts_the_whole_resource_with_its_id():
    recorder = Recorder(httpx.Response(HTTPStatus.OK, json={"id": "r-1"}))
    UserClient(connection(recorder)).replace("r-1", {"userName": "ada", "active": False})

    request = recorder.requests[0]
    assert (request.method, request.url.path) == ("PUT", "/scim/v2/Users/r-1")
    assert recorder.body() == {"userName": "ada", "active": False, "id": "r-1"}


def test_delete_sends_delete_and_accepts_204():
    recorder = Recorder(httpx.Response(HTTPStatus.NO_CONTENT))
    UserClient(connection(recorder)).delete("r-9")
    assert (recorder.requests[0].method, recorder.requests[0].url.path) == ("DELETE", "/scim/v2/Users/r-9")


def test_find_filters_with_an_escaped_eq_and_asks_for_two():
    recorder = Recorder(httpx.Response(HTTPStatus.OK, json={"totalResults": 1, "Resources": [{"id": "r-1"}]}))
    found, total = UserClient(connection(recorder)).find("userName", 'o"brien@example.com')

    params = recorder.requests[0].url.params
    assert params["filter"] == 'userName eq "o\\"brien@example.com"'
    assert (params["count"], params["startIndex"], params["attributes"]) == ("2", "1", "id")
    assert (found, total) == ([{"id": "r-1"}], 1)


def test_find_reports_the_total_when_the_server_pages_below_it():
    recorder = Recorder(httpx.Response(HTTPStatus.OK, json={"totalResults": 3, "Resources": [{"id": "a"}]}))
    found, total = GroupClient(connection(recorder)).find("displayName", "Sales")
    assert (len(found), total) == (1, 3)


@pytest.mark.parametrize(
    ("status", "error", "headers"),
    [
        (HTTPStatus.TOO_MANY_REQUESTS, TransientError, {"Retry-After": "7"}),
        (HTTPStatus.SERVICE_UNAVAILABLE, TransientError, {}),
        (HTTPStatus.BAD_GATEWAY, TransientError, {}),
        (HTTPStatus.UNAUTHORIZED, TargetMisconfigured, {}),
        (HTTPStatus.FORBIDDEN, TargetMisconfigured, {}),
        (HTTPStatus.NOT_FOUND, RemoteNotFound, {}),
        (HTTPStatus.CONFLICT, Conflict, {}),
        (HTTPStatus.BAD_REQUEST, PermanentError, {}),
    ],
)
def test_http_errors_map_to_the_taxonomy(status, error, headers):
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "detail": "nope", "scimType": "x"}
    recorder = Recorder(httpx.Response(status, json=body, headers=headers))

    with pytest.raises(error, match=f"GET Users/r-1 answered {int(status)}: nope") as caught:
        UserClient(connection(recorder)).get("r-1")

    assert caught.value.status == status
    assert caught.value.scim_type == "x"
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        assert caught.value.retry_after == 7.0


def test_not_found_is_permanent_but_distinct():
    assert issubclass(RemoteNotFound, PermanentError)
    assert not issubclass(RemoteNotFound, TransientError)


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (httpx.ConnectError("refused"), "GET Users/r-1 failed: ConnectError: refused"),
        (httpx.ReadTimeout("slow"), r"GET Users/r-1 timed out \(ReadTimeout\)"),
        (httpx.RemoteProtocolError("reset"), "GET Users/r-1 failed: RemoteProtocolError: reset"),
    ],
)
def test_network_failures_are_transient(failure, message):
    log: list = []
    with pytest.raises(TransientError, match=message) as caught:
        UserClient(connection(Recorder(failure)), log).get("r-1")
    assert caught.value.status is None
    assert log[0].status is None
    assert log[0].error


def test_retry_after_as_an_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_basic_auth_header():
    recorder = Recorder(httpx.Response(HTTPStatus.OK, json={"id": "r-1"}))
    UserClient(connection(recorder, build_auth("basic", {"username": "svc", "password": "pw"}))).get("r-1")
    assert recorder.requests[0].headers["Authorization"] == "Basic c3ZjOnB3"


def test_log_redacts_secret_looking_keys():
    recorder = Recorder(httpx.Response(HTTPStatus.CREATED, json={"id": "r-1"}))
    log: list = []
    UserClient(connection(recorder), log).create({"userName": "ada", "password": "hunter22"})
    assert recorder.body()["password"] == "hunter22"  # sent as given
    assert log[0].as_log()["body"] == {"userName": "ada", "password": "[redacted]"}


class TestOAuthClientCredentials:
    @pytest.fixture(autouse=True)
    def _empty_cache(self):
        OAuthClientCredentials._cache.clear()
        yield
        OAuthClientCredentials._cache.clear()

    def auth(self) -> httpx.Auth:
        return build_auth(
            "oauth_client_credentials",
            {
                "token_url": "https://login.example/token",
                "client_id": "cid",
                "client_secret": "csecret",
                "scope": "scim",
            },
        )

    def test_fetches_a_token_once_and_reuses_it(self):
        recorder = Recorder(
            httpx.Response(HTTPStatus.OK, json={"access_token": "t-1", "expires_in": 3600}),
            httpx.Response(HTTPStatus.OK, json={"id": "a"}),
            httpx.Response(HTTPStatus.OK, json={"id": "b"}),
        )
        client = UserClient(connection(recorder, self.auth()))
        client.get("a")
        # A second connection (another thread's) shares the process-wide cache.
        UserClient(connection(recorder, self.auth())).get("b")

        token_request, first, second = recorder.requests
        assert (token_request.method, str(token_request.url)) == ("POST", "https://login.example/token")
        assert token_request.headers["Authorization"] == "Basic Y2lkOmNzZWNyZXQ="
        assert token_request.content == b"grant_type=client_credentials&scope=scim"
        assert first.headers["Authorization"] == second.headers["Authorization"] == "Bearer t-1"

    def test_a_401_fetches_a_new_token_and_retries_once(self):
        recorder = Recorder(
            httpx.Response(HTTPStatus.OK, json={"access_token": "old", "expires_in": 3600}),
            httpx.Response(HTTPStatus.UNAUTHORIZED),
            httpx.Response(HTTPStatus.OK, json={"access_token": "new", "expires_in": 3600}),
            httpx.Response(HTTPStatus.OK, json={"id": "a"}),
        )
        assert UserClient(connection(recorder, self.auth())).get("a") == {"id": "a"}
        assert recorder.requests[3].headers["Authorization"] == "Bearer new"

    def test_refused_credentials_mean_misconfigured(self):
        recorder = Recorder(httpx.Response(HTTPStatus.UNAUTHORIZED, json={"error": "invalid_client"}))
        with pytest.raises(TargetMisconfigured, match="refused the client credentials"):
            UserClient(connection(recorder, self.auth())).get("a")
        assert len(recorder.requests) == 1
