"""JSON encoding and decoding of what goes to and comes back from PostgreSQL (jsonb columns,
json_agg of values, rows sent as one JSON parameter).

A page of 100 users decodes about 300 JSON documents (their extensions and multi-valued
attributes); orjson does that about six times faster than the standard library. It differs on one
kind of value a jsonb document can hold: an integer beyond 64 bits, which it reads as a float,
losing digits. A document with a run of 19 or more digits (where such an integer would be) is read
by `json.loads` instead, as is anything orjson refuses, so every value decodes exactly as before.

Encoding goes the same way: orjson writes what it can write exactly as `json.dumps` would read back
(it refuses integers beyond 64 bits and keys that are not strings), and `json.dumps` writes the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    found, value = loads_fast(raw)
    return value if found else json.loads(raw)


def loads_fast(raw: bytes) -> tuple[bool, Any]:
    """(True, value) when orjson reads `raw` as `json.loads` would; (False, None) when it cannot say.

    False for what orjson refuses (invalid JSON, NaN, a BOM, lone surrogates...) and for a document
    with a run of 19 or more digits, where it might read a big integer as a float.
    """
    if _LONG_DIGITS.search(raw) is not None:
        return False, None
    try:
        return True, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, None


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes | str:
    """`value` as JSON text (UTF-8 bytes from orjson, or str from `json.dumps` when orjson refuses it).

    `default` converts what neither writes itself, as `json.dumps(default=...)` does. Not for output
    where the standard library's exact spelling matters (its ", " and ": " separators): the database
    reads both the same.
    """
    try:
        return orjson.dumps(value, default=default)
    except TypeError:  # orjson.JSONEncodeError: a big integer, a key that is not a string...
        return json.dumps(value, default=default, ensure_ascii=False)


def dumps_text(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """`dumps` as a str: a query parameter of text (bytes would be sent as bytea)."""
    text = dumps(value, default)
    return text.decode() if isinstance(text, bytes) else text


def install() -> None:
    """Read and write json and jsonb values with `loads` and `dumps` on every psycopg connection."""
    from psycopg.types.json import set_json_dumps, set_json_loads

    set_json_loads(loads)
    set_json_dumps(dumps)
