"""The SCIM JSON renderer (orjson) writes what DRF's JSONRenderer wrote."""

import datetime
import decimal
import json
import uuid

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
