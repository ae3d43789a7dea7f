"""Structured logs, request ids end to end, and no secret in any log line."""

import io
import json
import logging
import sys
from collections.abc import Iterator
from http import HTTPStatus

import pytest

from directory import services
from directory.correlation import request_id_bound
from directory.models import AuditEntry, ChangeEvent, User
from observability.logs import ConsoleFormatter, JsonFormatter, make_formatter, redact
from provisioning import queue
from provisioning.models import Delivery
from scim_api.services import scim_client_create
from tests.provisioning.downstream import InProcessScim
from tests.provisioning.helpers import run_all
from tests.scim_api.conftest import Scim

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything any logger writes, at every level, through the JSON formatter production uses."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO, logger: str | None = None) -> list[dict]:
    parsed = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return [line for line in parsed if logger is None or line["logger"] == logger]


def record(message: str, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("some.logger", logging.INFO, __file__, 1, message, None, None)
    entry.__dict__.update(extra)
    return entry


# --- formatters -------------------------------------------------------------------------------


def test_json_lines_carry_level_logger_message_fields_and_request_id():
    with request_id_bound("req-123"):
        line = json.loads(JsonFormatter().format(record("hello %s", status=201)))
    assert line["level"] == "INFO"
    assert line["logger"] == "some.logger"
    assert line["message"] == "hello %s"
    assert line["status"] == 201
    assert line["request_id"] == "req-123"
    assert line["time"].endswith("+00:00")


def test_console_lines_are_readable():
    with request_id_bound("req-9"):
        text = ConsoleFormatter().format(record("GET scim:user 200", route="scim:user"))
    assert "INFO some.logger GET scim:user 200 route=scim:user [req-9]" in text


def test_auto_format_is_json_unless_stderr_is_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(make_formatter("auto"), JsonFormatter)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert isinstance(make_formatter("auto"), ConsoleFormatter)
    assert isinstance(make_formatter("json"), JsonFormatter)
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        make_formatter("xml")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("auth header Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ('{"userName": "ada", "password": "s3cr\\"et!"}', 's3cr\\"et!'),
        ("password=hunter22&user=ada", "hunter22"),
        ("client_secret: 'xyz789'", "xyz789"),
        ("token=tok_live_1", "tok_live_1"),
    ],
)
def test_redact_removes_credentials(text, secret):
    cleaned = redact(text)
    assert secret not in cleaned
    assert "[redacted]" in cleaned


def test_formatters_redact_messages_fields_and_tracebacks():
    try:
        raise ValueError("bad header Bearer leaked-token-1")
    except ValueError:
        entry = record("password=%s", args_unused=True, header="Bearer leaked-token-2")
        entry.exc_info = sys.exc_info()
    for formatter in (JsonFormatter(), ConsoleFormatter()):
        text = formatter.format(entry)
        assert "leaked-token" not in text


# --- request ids ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_one_line_per_request_with_route_status_duration_client_and_request_id(client, captured):
    scim = Scim(client, scim_client_create(name="Logs IdP")[1])
    reply = scim.get("Users")
    assert reply.status == HTTPStatus.OK
    request_id = reply.headers["X-Request-ID"]
    [line] = lines(captured, "observability.request")
    assert line["method"] == "GET"
    assert line["route"] == "scim:users"
    assert line["path"] == "/scim/v2/Users"
    assert line["status"] == 200
    assert line["duration_ms"] > 0
    assert line["client"] == "127.0.0.1"
    assert line["request_id"] == request_id
    assert len(request_id) == 32


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("3f2a9c4e-0d1b-4c55-9b1e-2b3c4d5e6f70", True),
        ("lb-1234567890abcdef", True),
        ("has spaces in it", False),
        ('quote"and\nnewline', False),
        ("x" * 65, False),
    ],
)
def test_an_incoming_request_id_is_kept_only_when_sane(client, incoming, kept):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=incoming)
    assert (response["X-Request-ID"] == incoming) is kept
    assert len(response["X-Request-ID"]) <= 64


@pytest.mark.django_db
def test_the_request_id_reaches_change_events_audit_entries_deliveries_and_the_provisioning_log(
    client, target_factory, monkeypatch, captured
):
    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: None)
    target_factory(name="traced-target")
    scim = Scim(client, scim_client_create(name="Traced IdP")[1])
    reply = scim.post(
        "Users",
        {"schemas": [CORE_USER], "userName": "traced@example.com"},
        headers={"X-Request-ID": "trace-0001"},
    )
    assert reply.status == HTTPStatus.CREATED
    assert reply.headers["X-Request-ID"] == "trace-0001"
    user = User.objects.get(user_name="traced@example.com")
    assert ChangeEvent.objects.get(object_id=user.pk).request_id == "trace-0001"
    assert AuditEntry.objects.get(object_id=user.pk).request_id == "trace-0001"

    # A worker runs outside any request: what it writes takes the id from the delivery.
    [attempt] = run_all(InProcessScim().connection())
    assert Delivery.objects.get(object_id=user.pk).request_id == "trace-0001"
    attempt.refresh_from_db()
    assert attempt.request_id == "trace-0001"
    [delivery_line] = lines(captured, "provisioning.delivery")
    assert delivery_line["request_id"] == "trace-0001"
    assert delivery_line["target"] == "traced-target"
    assert delivery_line["object_id"] == str(user.pk)
    assert delivery_line["outcome"] == "success"
    assert delivery_line["action"] == "create"
    assert delivery_line["status"] == 201
    assert "duration_ms" in delivery_line


@pytest.mark.django_db
def test_a_newer_change_gives_its_request_id_to_the_pending_delivery(actor, target_factory, monkeypatch):
    from provisioning import relay

    monkeypatch.setattr(queue, "send", lambda delivery_ids, countdown=None: None)
    target_factory(name="coalescing-target")
    with request_id_bound("first"):
        ada = services.user_create(actor=actor, user_name="ada@example.com")
    relay.relay_change_events()
    with request_id_bound("second"):
        services.user_update(actor=actor, user_id=ada.pk, title="Countess")
    relay.relay_change_events()
    delivery = Delivery.objects.get(object_id=ada.pk)
    assert delivery.request_id == "second"
    assert delivery.changed_at == ChangeEvent.objects.filter(object_id=ada.pk).latest("id").created


@pytest.mark.django_db
def test_no_password_or_token_is_logged(client, captured, settings):
    settings.DEBUG = True  # the most talkative configuration, SQL logging included
    token = scim_client_create(name="Secretive IdP")[1]
    password = "Correct-Horse-Battery-Staple-42"
    scim = Scim(client, token)
    created = scim.post(
        "Users", {"schemas": [CORE_USER], "userName": "secret@example.com", "password": password}
    )
    assert created.status == HTTPStatus.CREATED
    # Failures too: a malformed body that quotes the password, and a wrong token.
    bad = scim.post("Users", f'{{"userName": "x", "password": "{password}"')
    assert bad.status == HTTPStatus.BAD_REQUEST
    assert Scim(client, token + "-wrong").get("Users").status == HTTPStatus.UNAUTHORIZED
    logging.getLogger("scim_api.views").error("Authorization: Bearer %s", token)

    text = captured.getvalue()
    assert len(lines(captured, "observability.request")) == 3
    assert token not in text
    assert password not in text


@pytest.mark.django_db
def test_operators_find_a_request_s_audit_entries_by_its_id(admin_client_logged_in, actor):
    with request_id_bound("find-me-42"):
        services.user_create(actor=actor, user_name="found@example.com")
    services.user_create(actor=actor, user_name="other@example.com")
    page = admin_client_logged_in.get("/admin/directory/auditentry/", {"q": "find-me-42"})
    assert page.status_code == HTTPStatus.OK
    assert "found@example.com" in page.content.decode()
    assert "other@example.com" not in page.content.decode()
