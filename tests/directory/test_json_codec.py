"""JSON from the database decoded with orjson, and with the standard library where orjson refuses."""

import json

import pytest
from django.db import connection

from directory import json_codec


def test_loads_reads_json_and_falls_back_for_what_orjson_refuses():
    assert json_codec.loads(b'{"a": [1, 2.5, "\\u00e9", null, true]}') == {"a": [1, 2.5, "é", None, True]}
    assert json_codec.loads(memoryview(b'{"n": 123456789012345678901234567890}')) == {
        "n": 123456789012345678901234567890
    }
    assert json_codec.loads('{"x": NaN}')["x"] != json_codec.loads('{"x": NaN}')["x"]  # NaN, as json reads it


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgresql_json_values_decode_through_it(monkeypatch):
    # json, as json_agg makes it (Django reads jsonb columns as text and decodes them itself).
    seen: list[object] = []
    real = json_codec.orjson.loads
    monkeypatch.setattr(json_codec.orjson, "loads", lambda raw: seen.append(raw) or real(raw))
    with connection.cursor() as cursor:
        cursor.execute("""SELECT '{"n": 123456789012345678901234567890, "s": "é"}'::json, '[1, 2]'::json""")
        big, small = cursor.fetchone()

    assert big == {"n": 123456789012345678901234567890, "s": "é"}
    assert small == [1, 2]
    assert seen == [b"[1, 2]"]  # the short one through orjson, the long integer through json


def test_dumps_writes_json_and_falls_back_for_what_orjson_refuses():
    assert json_codec.dumps({"a": [1, 2.5, "é", None, True]}) == '{"a":[1,2.5,"é",null,true]}'.encode()
    big = json_codec.dumps({"n": 123456789012345678901234567890})  # past 64 bits: the standard library
    assert json.loads(big) == {"n": 123456789012345678901234567890}
    assert json.loads(json_codec.dumps({1: "x"})) == {
        "1": "x"
    }  # a key that is not a string, as json writes it
    assert json_codec.dumps_text({"t": "é"}) == '{"t":"é"}'
    marker = object()
    assert json_codec.dumps_text([marker], default=lambda value: "converted") == '["converted"]'


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgresql_json_parameters_encode_through_it():
    from psycopg.types.json import Jsonb

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT %s::jsonb -> 'n', %s::jsonb",
            [Jsonb({"n": 123456789012345678901234567890}), Jsonb({"s": "é", "k": [1, None]})],
        )
        number, document = cursor.fetchone()

    # Django reads jsonb as text (JSONField decodes it itself).
    assert json.loads(number) == 123456789012345678901234567890
    assert json.loads(document) == {"s": "é", "k": [1, None]}
