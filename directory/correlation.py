"""The request id of the work in progress, carried into the rows it writes.

The web middleware binds the id of each request (its X-Request-ID, or a new one);
a worker binds the id stored on the rows it processes. ChangeEvent and
AuditEntry take it as their default, so every write a request causes can be
found from the request's log line, and the other way round.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

# Long enough for a UUID with dashes or a W3C trace id, short enough for an index-friendly column.
REQUEST_ID_MAX_LENGTH = 64
# What an incoming X-Request-ID may look like: no spaces, quotes or control characters that could
# forge a log line or a header.
_SANE = re.compile(rf"[A-Za-z0-9._:/+=-]{{1,{REQUEST_ID_MAX_LENGTH}}}")

_request_id: ContextVar[str] = ContextVar("request_id", default="")


def current_request_id() -> str:
    """The bound request id, or "" outside any request (a scheduled task, a shell)."""
    return _request_id.get()


def is_sane_request_id(value: str) -> bool:
    return _SANE.fullmatch(value) is not None


def request_id_bind(value: str) -> Token[str]:
    return _request_id.set(value[:REQUEST_ID_MAX_LENGTH])


def request_id_unbind(token: Token[str]) -> None:
    _request_id.reset(token)


@contextmanager
def request_id_bound(value: str) -> Iterator[None]:
    """Run a block as part of the request `value` (a worker applying what that request queued)."""
    token = request_id_bind(value)
    try:
        yield
    finally:
        request_id_unbind(token)
