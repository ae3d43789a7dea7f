"""Attribute scoping filters: parsing, checking and evaluation with reasons."""

import pytest

from provisioning.scoping import (
    Clause,
    ScopingError,
    evaluate,
    parse_filters,
    referenced_attributes,
    to_data,
)

ALICE = {
    "department": "Sales",
    "userType": "Employee",
    "active": True,
    "costCenter": "1200",
    "hireDate": "2024-03-05T00:00:00Z",
    "emails": ["alice@example.com", "a.smith@example.org"],
    "title": "",
}


def decide(filters, source=ALICE):
    return evaluate(parse_filters(filters), lambda name: source.get(name))


def clause(attribute, operator, value=""):
    return {"attribute": attribute, "operator": operator, "value": value}


def test_no_filters_means_everything_assigned_is_in_scope():
    assert decide([]) == decide(None)
    assert decide([]).in_scope
    assert decide([]).reason == "no scoping filter"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (clause("department", "EQUALS", "sales"), True),
        (clause("department", "EQUALS", "HR"), False),
        (clause("department", "NOT EQUALS", "HR"), True),
        (clause("title", "EQUALS", ""), True),
        (clause("nickName", "EQUALS", ""), True),
        (clause("active", "IS TRUE"), True),
        (clause("active", "IS FALSE"), False),
        (clause("nickName", "IS NULL"), True),
        (clause("title", "IS NULL"), True),
        (clause("department", "IS NOT NULL"), True),
        (clause("department", "REGEX MATCH", "^Sa"), True),
        (clause("department", "NOT REGEX MATCH", "^Sa"), False),
        (clause("emails", "REGEX MATCH", r"@example\.org$"), True),
        (clause("costCenter", "GREATER_THAN", "999"), True),
        (clause("costCenter", "LESS_THAN_OR_EQUALS", "1200"), True),
        (clause("costCenter", "LESS_THAN", "1200"), False),
        (clause("hireDate", "GREATER_THAN_OR_EQUALS", "2024-01-01"), True),
        (clause("hireDate", "LESS_THAN", "2024-01-01"), False),
        (clause("userType", "INCLUDES", "Contractor, employee"), True),
        (clause("userType", "NOT INCLUDES", "Contractor,Guest"), True),
        (clause("costCenter", "GREATER_THAN", "NaN"), False),  # text order, no crash
    ],
)
def test_operators(rule, expected):
    assert decide([[rule]]).in_scope is expected


def test_clauses_and_filters_combine_as_or_of_ands_with_a_reason():
    sales_employees = [clause("department", "EQUALS", "Sales"), clause("userType", "EQUALS", "Employee")]
    contractors = [clause("userType", "EQUALS", "Contractor")]
    assert decide([contractors, sales_employees]).reason == "scoping filter 2 matched"
    outcome = decide([contractors, sales_employees], {**ALICE, "department": "HR"})
    assert not outcome.in_scope
    assert outcome.reason == (
        "out of scope: filter 1: userType EQUALS \"Contractor\" is false (value 'Employee'); "
        "filter 2: department EQUALS \"Sales\" is false (value 'HR')"
    )


def test_a_catastrophic_pattern_times_out_instead_of_stalling():
    outcome = decide([[clause("department", "REGEX MATCH", "(a+)+$")]], {"department": "a" * 40 + "!"})
    assert not outcome.in_scope


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"attribute": "x"}, "must be a list of filters"),
        ([[]], "filter 1 must be a non-empty list of clauses"),
        ([["department"]], "filter 1, clause 1: a clause is an object"),
        ([[clause("", "EQUALS", "x")]], "filter 1, clause 1: attribute is required"),
        ([[clause("department", "LIKE", "x")]], "unknown operator 'LIKE'"),
        ([[clause("department", "REGEX MATCH", "(")]], "invalid regular expression"),
        ([[clause("department", "GREATER_THAN")]], "GREATER_THAN needs a value"),
        ([[clause("active", "IS TRUE", "yes")]], "IS TRUE takes no value"),
        ([[clause("department", "EQUALS", "x" * 1001)]], "value longer than 1000"),
        (
            [[clause("department", "EQUALS", "x")], [clause("shoeSize", "EQUALS", "9")]],
            "filter 2, clause 1: unknown",
        ),
    ],
)
def test_bad_filters_are_refused_with_where(data, message):
    with pytest.raises(ScopingError, match=message):
        parse_filters(data, known_attributes=["department", "active", "userType"])


def test_operators_are_normalised_and_round_trip():
    filters = parse_filters([[clause(" department ", "not   equals", "HR")]])
    assert filters == ((Clause("department", "NOT EQUALS", "HR"),),)
    assert parse_filters(to_data(filters)) == filters
    assert referenced_attributes(filters) == {"department"}
