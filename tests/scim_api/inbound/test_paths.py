"""Attribute paths, filters and targets over raw inbound records, and merging values by type (no database)."""

import pytest

from scim_api.inbound import paths
from scim_api.inbound.engine import merge_by_type

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
RECORD = {
    "externalId": "42",
    "UserName": "ada@example.com",
    "name": {"givenName": "Ada", "familyName": "Lovelace"},
    "active": True,
    "emails": [{"value": "ada@home.example", "type": "home"}, {"value": "ada@corp.example", "type": "work"}],
    ENTERPRISE: {"department": "Research", "manager": {"value": "7"}},
    "urn:contoso:hr:1.0:User": {"Level": 3, "Rate": 1.5, "Sites": ["Paris", "Oslo"]},
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("externalId", "42"),
        ("userName", "ada@example.com"),
        ("name.GIVENNAME", "Ada"),
        ("active", True),
        ('emails[type eq "work"].value', "ada@corp.example"),
        ("emails.value", ["ada@home.example", "ada@corp.example"]),
        (f"{ENTERPRISE}:department", "Research"),
        (f"{ENTERPRISE}:manager", "7"),
        (f"{ENTERPRISE}:manager.value", "7"),
        ("urn:contoso:hr:1.0:User:level", 3),
        ("urn:contoso:hr:1.0:User:rate", "1.5"),
        ("urn:contoso:hr:1.0:User:sites", ["Paris", "Oslo"]),
        ("urn:contoso:other:missing", None),
        ("title", None),
        ('emails[type eq "mobile"].value', None),
    ],
)
def test_resolve_reads_a_record_by_scim_path(path, value):
    assert paths.resolve(RECORD, path) == value


@pytest.mark.parametrize(
    ("text", "matched"),
    [
        ('userName eq "ADA@example.com"', True),
        ('not (userType eq "Contractor")', True),
        ('userType eq "Contractor"', False),
        ("userType pr", False),
        ('emails[type eq "work" and value ew "corp.example"]', True),
        ('emails[type eq "mobile"]', False),
        ("urn:contoso:hr:1.0:User:level ge 3", True),
        ("urn:contoso:hr:1.0:User:level gt 3", False),
        ('urn:contoso:hr:1.0:User:sites eq "oslo"', True),
        (f'{ENTERPRISE}:department sw "res" and active eq true', True),
        ('title ne "x"', True),
    ],
)
def test_scoping_filters_are_evaluated_against_the_record(text, matched):
    assert paths.matches(paths.parse_filter(text), RECORD) is matched


@pytest.mark.parametrize(
    ("target", "canonical"),
    [
        ("username", "userName"),
        ("name.givenname", "name.givenName"),
        ("Department", f"{ENTERPRISE}:department"),
        (f"{ENTERPRISE}:manager.value", f"{ENTERPRISE}:manager"),
        ('emails[type eq "work"].VALUE', 'emails[type eq "work"].value'),
        ('addresses[type eq "work"].locality', 'addresses[type eq "work"].locality'),
    ],
)
def test_targets_are_spelled_canonically(target, canonical):
    assert paths.canonical_target(target) == canonical


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("shoeSize", "is not a directory attribute"),
        ("name.nick", "name has no such part"),
        ("emails.value", "names its type"),
        ('emails[type eq "work"]', "name the sub-attribute"),
        (f"{ENTERPRISE}:shoeSize", "the enterprise extension has no such attribute"),
        ("urn:nobody:defines:this:attr", "no user extension schema"),
    ],
)
def test_unknown_targets_are_refused_with_the_reason(target, message):
    with pytest.raises(paths.PathError, match=message):
        paths.canonical_target(target)


def test_set_path_builds_a_scim_user():
    record: dict = {}
    paths.set_path(record, "name.givenName", "Ada")
    paths.set_path(record, 'emails[type eq "work"].value', "ada@corp.example")
    paths.set_path(record, f"{ENTERPRISE}:manager", 7)
    paths.set_path(record, "active", "Inactive")

    assert record == {
        "name": {"givenName": "Ada"},
        "emails": [{"type": "work", "value": "ada@corp.example"}],
        ENTERPRISE: {"manager": {"value": "7"}},
        "active": False,
    }


def test_a_bare_path_and_an_expression_both_compile_as_sources():
    assert paths.compile_source("externalId").evaluate(paths.resolver(RECORD)) == "42"
    expression = paths.compile_source('Join(" ", [name.givenName], [name.familyName])')
    assert expression.evaluate(paths.resolver(RECORD)) == "Ada Lovelace"


def _value(value: str, kind: str, primary: bool = False) -> dict:
    return {"value": value, "type": kind, "primary": primary, "display": "", "address": {}}


def test_merging_values_replaces_the_types_given_in_place_and_keeps_the_primary_unique():
    current = [_value("h", "home", primary=True), _value("w", "work"), _value("o", "other")]

    merged = merge_by_type(current, [_value("w2", "work", primary=True)])

    assert merged == [_value("h", "home"), _value("w2", "work", primary=True), _value("o", "other")]
    assert merge_by_type(current, []) == current
    assert merge_by_type([], [_value("m", "mobile")]) == [_value("m", "mobile")]
