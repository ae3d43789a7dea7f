"""SCIM 2.0 CONFORMANCE: scim2-tester runs all its checks against the real server.

The directory is served by pytest-django's `live_server` (a real HTTP server on a
free loopback port). scim2-tester discovers it through /ServiceProviderConfig,
/ResourceTypes and /Schemas, builds its models from what they publish, then
creates, reads, lists, searches, replaces, patches and deletes Users and Groups.

The counts per status and every result that is not a plain SUCCESS are printed in
every run's output (with, for failures, the tester's data and the requests answered
>= 400). The test fails on any ERROR (a violated MUST of RFC 7643/7644) or CRITICAL
result, or if nothing succeeded.

Where scim2-tester 0.5.2 asks what no correct server can give, the test corrects
it; no check is skipped and no result is filtered out:
- Random values. dateTime attributes (Entra's employeeHireDate...) and decimal
  ones (an operator-defined schema's) have no branch in its generator and get a
  UUID string, which its own models refuse before any request is sent: they get
  a real dateTime or number. Entra group mailEnabled is always
  True: a Microsoft 365 group (groupTypes ["Unified"], the only canonical value)
  is always mail-enabled, as in Entra, and a random False is refused with 400.
- PATCH add/replace read-backs. They compare the value sent with the value read
  back field by field; two differences the RFC allows are not counted: a readOnly
  sub-attribute the client left out and the server filled in (members.display,
  manager.displayName: RFC 7643 §2.2), and `primary` left out where false was
  sent (RFC 7643 §2.4: unspecified, it SHALL be assumed false). With an
  operator-defined schema two more: a writeOnly value sent inside a whole
  extension and not read back (RFC 7643 §7: never returned), and an add to a
  multi-valued attribute that already held values, whose read-back also holds
  those (RFC 7644 §3.5.2.1: add appends).
"""

import inspect
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import httpx2
import pytest
from django.core.servers.basehttp import WSGIRequestHandler
from pydantic import BaseModel
from pytest_django.live_server_helper import LiveServer
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_models import Mutability, Path
from scim2_tester import CheckResult, Status, check_server
from scim2_tester import filling as tester_filling
from scim2_tester import utils as tester_utils
from scim2_tester.checkers import patch_add, patch_replace

from directory import services
from directory.actors import Actor
from scim_api.schema import ENTRA_GROUP
from scim_api.services import scim_client_create

pytestmark = pytest.mark.django_db(transaction=True)

FAILING = (Status.ERROR, Status.CRITICAL)
# The modules that bound scim2-tester's value generator at import time.
GENERATOR_USERS: tuple[ModuleType, ...] = (tester_filling, patch_add, patch_replace)


def _constrained_generator(original: Any) -> Any:
    def generate_random_value(context: Any, path: Path[Any], *args: Any, **kwargs: Any) -> Any:
        value = original(context, path, *args, **kwargs)
        binding = path.resolve()
        if value is None or binding is None:
            return value
        if binding.target_type is datetime:
            value = datetime.now(UTC).replace(microsecond=0)
            return [value] if binding.target_is_multivalued else value
        if binding.target_type is float:
            value = random.randint(0, 10**6) / 100
            return [value] if binding.target_is_multivalued else value
        model = binding.target_model
        if getattr(model, "__schema__", None) == ENTRA_GROUP and binding.target_field_name == "mail_enabled":
            return True
        return value

    return generate_random_value


def _as_sent(expected: Any, actual: Any) -> Any:
    """`actual` without the differences RFC 7643 allows from `expected`, the value the client sent."""
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [_as_sent(sent, read) for sent, read in zip(expected, actual, strict=True)]
    if not (isinstance(expected, BaseModel) and type(actual) is type(expected)):
        return actual
    model = type(actual)
    changes: dict[str, Any] = {}
    for name in model.model_fields:
        sent, read = getattr(expected, name), getattr(actual, name)
        if (
            sent is None
            and read is not None
            and model.get_field_annotation(name, Mutability) == Mutability.read_only
        ):
            changes[name] = None  # §2.2: the server's own value
        elif name == "primary" and sent is False and read is None:
            changes[name] = False  # §2.4: unspecified means false
        elif (
            read is None
            and sent is not None
            and model.get_field_annotation(name, Mutability) == Mutability.write_only
        ):
            changes[name] = sent  # §7: a writeOnly value is never returned
        elif isinstance(sent, BaseModel | list):
            changes[name] = _as_sent(sent, read)
    return actual.model_copy(update=changes)


def _rfc_equality(expected: Any, actual: Any) -> bool:
    return tester_utils.fields_equality(expected, _as_sent(expected, actual))


def _rfc_add_equality(expected: Any, actual: Any) -> bool:
    """RFC 7644 §3.5.2.1: add on a multi-valued attribute appends to the values already there."""
    if isinstance(expected, list) and isinstance(actual, list) and 0 < len(expected) < len(actual):
        actual = actual[len(actual) - len(expected) :]
    return _rfc_equality(expected, actual)


@pytest.fixture
def tester_corrections(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _constrained_generator(tester_filling.generate_random_value)
    for module in GENERATOR_USERS:
        monkeypatch.setattr(module, "generate_random_value", generator)
    monkeypatch.setattr(patch_add, "fields_equality", _rfc_add_equality)
    monkeypatch.setattr(patch_replace, "fields_equality", _rfc_equality)


@dataclass
class Exchange:
    method: str
    path: str
    request: str
    status: int
    response: str

    def __str__(self) -> str:
        answer = f"{self.method} {self.path} -> {self.status} {self.response[:400]}"
        return f"{answer}\n      sent: {self.request[:400]}"


class ErrorAnswers:
    """An httpx2 response hook: every answer >= 400, filed under the scim2-tester check that asked for it."""

    def __init__(self) -> None:
        self.by_check: dict[str, list[Exchange]] = defaultdict(list)

    def __call__(self, response: httpx2.Response) -> None:
        request = response.request
        # Cleanup deletes what the checks already deleted: those 404s are right, and many.
        if response.status_code < 400 or (request.method == "DELETE" and response.status_code == 404):
            return
        response.read()
        self.by_check[_running_check()].append(
            Exchange(
                request.method,
                request.url.raw_path.decode(),
                request.content.decode(errors="replace"),
                response.status_code,
                " ".join(response.text.split()),
            )
        )


def _running_check() -> str:
    """The check scim2-tester's `checker` decorator is running, read from the call stack."""
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code.co_name == "wrapped" and frame.f_code.co_filename == tester_utils.__file__:
            return str(getattr(frame.f_locals.get("func"), "__name__", "?"))
        frame = frame.f_back
    return "?"


@pytest.fixture
def error_answers() -> ErrorAnswers:
    return ErrorAnswers()


@pytest.fixture
def http(
    live_server: LiveServer, error_answers: ErrorAnswers, monkeypatch: pytest.MonkeyPatch
) -> Iterator[httpx2.Client]:
    # The live server writes headers and body in two sends: with Nagle's algorithm on, every
    # keep-alive response waits out the client's delayed ACK (40 ms), 3/4 of this test's time.
    monkeypatch.setattr(WSGIRequestHandler, "disable_nagle_algorithm", True)
    _, token = scim_client_create(name="scim2-tester")
    with httpx2.Client(
        base_url=f"{live_server.url}/scim/v2",
        headers={"Authorization": f"Bearer {token}"},
        event_hooks={"response": [error_answers]},
        timeout=10,
    ) as client:
        yield client


def _line(result: CheckResult) -> str:
    return f"[{result.status.name}] {result.title} ({result.resource_type or '-'}): {result.reason}"


def _summary(results: list[CheckResult], error_answers: ErrorAnswers) -> str:
    counts = Counter(result.status for result in results)
    lines = ["scim2-tester conformance: " + ", ".join(f"{s.name}={counts.get(s, 0)}" for s in Status)]
    for result in results:
        if result.status != Status.SUCCESS:
            lines.append("  " + _line(result))
            if result.status in FAILING and result.data is not None:
                lines.append(f"      data: {' '.join(str(result.data).split())[:1500]}")
    failing_checks = dict.fromkeys(str(result.title) for result in results if result.status in FAILING)
    answers = [(check, exchange) for check in failing_checks for exchange in error_answers.by_check[check]]
    if answers:
        lines.append("answers >= 400 during the failing checks:")
        lines += [f"  {check}: {exchange}" for check, exchange in answers]
    return "\n".join(lines)


@pytest.mark.usefixtures("tester_corrections")
def test_scim2_tester_finds_no_error_and_no_critical_result(
    http: httpx2.Client, error_answers: ErrorAnswers, capsys: pytest.CaptureFixture[str]
) -> None:
    results = check_server(SyncSCIMClient(http))

    summary = _summary(results, error_answers)
    with capsys.disabled():  # shown in every run's output, passing or not
        print("\n" + summary)
    failing = [_line(result) for result in results if result.status in FAILING]
    assert not failing, (
        f"{len(failing)} ERROR/CRITICAL result(s) (their data and requests are printed above):\n"
        + "\n".join(failing)
    )
    assert any(result.status == Status.SUCCESS for result in results), summary


@pytest.fixture
def operator_schemas() -> Iterator[None]:
    """An extension schema for users and one for groups, defined as an operator would."""
    actor = Actor.system("test")
    schemas = [
        services.extension_schema_create(
            actor=actor,
            urn="urn:example:scim:schemas:hr:1.0:User",
            name="HR",
            resource_type="user",
            attributes=[
                {"name": "badgeId", "uniqueness": "server", "case_exact": True},
                {"name": "level", "type": "integer"},
                {"name": "rate", "type": "decimal"},
                {"name": "remote", "type": "boolean"},
                {"name": "start", "type": "dateTime"},
                {"name": "homepage", "type": "reference"},
                {"name": "tags", "multi_valued": True},
                {"name": "clearance", "mutability": "readOnly"},
                {"name": "pin", "mutability": "writeOnly", "returned": "never"},
            ],
        ),
        services.extension_schema_create(
            actor=actor,
            urn="urn:example:scim:schemas:project:1.0:Group",
            name="Project",
            resource_type="group",
            attributes=[{"name": "code"}, {"name": "budget", "type": "integer"}],
        ),
    ]
    yield
    # This test commits: the flush after it empties tables but would leave the indexes behind.
    for schema in schemas:
        services.extension_schema_delete(actor=actor, schema_id=schema.pk)


@pytest.mark.usefixtures("tester_corrections", "operator_schemas")
def test_scim2_tester_with_operator_defined_schemas(
    http: httpx2.Client, error_answers: ErrorAnswers, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same checks with extension schemas operators defined, for users and for groups."""
    results = check_server(SyncSCIMClient(http))

    summary = _summary(results, error_answers)
    with capsys.disabled():
        print("\n" + summary)
    failing = [_line(result) for result in results if result.status in FAILING]
    assert not failing, f"{len(failing)} ERROR/CRITICAL result(s):\n" + "\n".join(failing)
    assert any(result.status == Status.SUCCESS for result in results), summary
