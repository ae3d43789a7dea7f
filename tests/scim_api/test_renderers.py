"""The SCIM JSON renderer (orjson) writes what DRF's JSONRenderer wrote."""

import datetime
import decimal
import io
import json
import uuid

import pytest
from rest_framework.renderers import JSONRenderer

from scim_api.renderers import ScimJSONRenderer

BODY = {
    "id": uuid.UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7"),
    "userName": "zoë@example.com",
    "displayName": "line\u2028separator\u2029paragraph",
    "meta": {"created": datetime.datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=datetime.UTC)},
    "hired": datetime.date(2026, 1, 2),
    "grade": decimal.Decimal("7.50"),
    "active": True,
    "manager": None,
    "emails": [{"value": "a@example.com", "primary": True}],
    "counts": (1, 2),
    "ratio": 0.25,
}


def test_the_output_is_drfs_byte_for_byte():
    assert ScimJSONRenderer().render(BODY) == JSONRenderer().render(BODY)


def test_separators_are_escaped_and_text_is_utf8():
    out = ScimJSONRenderer().render(BODY)

    assert b"\\u2028" in out
    assert b"\\u2029" in out
    assert "zoë".encode() in out
    assert json.loads(out)["displayName"] == BODY["displayName"]


def test_what_orjson_refuses_takes_drfs_path():
    huge = {"big": 2**70, 3: "int key"}

    assert ScimJSONRenderer().render(huge) == JSONRenderer().render(huge)


def test_an_indent_asked_for_is_honoured():
    out = ScimJSONRenderer().render({"a": 1}, "application/scim+json; indent=2")

    assert out == b'{\n  "a": 1\n}'


def test_nothing_renders_as_an_empty_body():
    assert ScimJSONRenderer().render(None) == b""


# --- the parser -----------------------------------------------------------------------------

PARSED = [
    b'{"userName": "zo\\u00eb", "active": true, "n": [1, 2.5, -0.0, null], "nested": {"a": {}}}',
    b'{"big": 123456789012345678901234567890, "negative": -9223372036854775809}',  # past 64 bits
    b'{"a": 1, "a": 2}',  # the last of a repeated key, as json reads it
    b'{"huge": 1e400}',  # json reads inf; orjson refuses it
    '{"text": "zoë"}'.encode(),
]


def _parse(raw: bytes, encoding: str = "utf-8"):
    from scim_api.renderers import ScimJSONParser

    return ScimJSONParser().parse(io.BytesIO(raw), "application/scim+json", {"encoding": encoding})


def test_the_parser_reads_what_drfs_reads():
    from rest_framework.parsers import JSONParser

    for raw in PARSED:
        expected = JSONParser().parse(io.BytesIO(raw), "application/json", {"encoding": "utf-8"})
        assert _parse(raw) == expected, raw
    assert _parse(PARSED[1])["big"] == 123456789012345678901234567890  # not a float


def test_the_parser_rejects_what_drf_rejects():
    from rest_framework.exceptions import ParseError

    from scim_api.exceptions import ScimError

    for raw in (b"[NaN]", b'{"a": Infinity}', b'{"a": 1,}', b"\xff\xfe", b'{"a": "\\ud800"}'):
        with pytest.raises((ParseError, ScimError)):
            _parse(raw)
    with pytest.raises(ParseError, match="nested too deeply"):
        _parse(b"[" * 100_000 + b"]" * 100_000)


def test_a_body_in_another_encoding_is_read_by_drf():
    assert _parse('{"name": "zoë"}'.encode("latin-1"), encoding="latin-1") == {"name": "zoë"}
