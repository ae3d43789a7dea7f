"""Structured logs: one JSON object per line for machines, a readable line for people.

`make_formatter("auto")` picks JSON when stderr is not a terminal (a container,
systemd, a file) and the readable form when it is. Both formatters add the bound
request id and scrub credentials from the message, the extra fields and the
traceback, so a token or password that reaches a log call by mistake (an
exception message quoting a header, a debug line) is not written out.
"""

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from directory.correlation import current_request_id

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

_REDACTED = "[redacted]"
_SECRET_PATTERNS = (
    # Authorization header values: "Bearer <token>", "Basic <base64>".
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\1 {_REDACTED}"),
    # key=value, key: value and "key": "value" for keys that name a secret.
    (
        re.compile(
            r"""(["']?\b(?:password|passwd|secret|client_secret|token|access_token|refresh_token|api_key|"""
            r"""authorization)\b["']?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;&}\]]+)""",
            re.IGNORECASE,
        ),
        rf"\1{_REDACTED}",
    ),
)


# Every pattern above needs one of these words: most lines have none, and a few substring tests cost
# far less than the regular expressions (this runs for every field of every request's line).
_TRIGGERS = ("bearer", "basic", "pass", "secret", "token", "api_key", "authorization")


def redact(text: str) -> str:
    """`text` with anything that looks like a credential replaced."""
    lowered = text.lower()
    for trigger in _TRIGGERS:
        if trigger in lowered:
            break
    else:
        return text
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: redact(value) if isinstance(value, str) else value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }


def _request_id(record: logging.LogRecord) -> str:
    return str(getattr(record, "request_id", "") or current_request_id())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        request_id = _request_id(record)
        if request_id:
            entry["request_id"] = request_id
        entry.update(_extra(record))
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ... [request id]`, for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        parts = [created, record.levelname, record.name, redact(record.getMessage())]
        fields = {key: value for key, value in _extra(record).items() if key != "request_id"}
        parts += [f"{key}={value}" for key, value in fields.items()]
        request_id = _request_id(record)
        if request_id:
            parts.append(f"[{request_id}]")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def make_formatter(style_name: str = "auto") -> logging.Formatter:
    """The LOGGING formatter factory: "json", "console", or "auto" (JSON unless stderr is a terminal)."""
    if style_name == "auto":
        style_name = "console" if sys.stderr.isatty() else "json"
    if style_name == "json":
        return JsonFormatter()
    if style_name == "console":
        return ConsoleFormatter()
    raise ValueError(f"unknown log format {style_name!r}: json, console or auto")
