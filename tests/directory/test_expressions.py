"""The outbound mapping expression language: parsing, checking and every function."""

import re
from datetime import UTC, datetime

import pytest

from directory.expressions import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_EXPRESSION_LENGTH,
    Attribute,
    Call,
    Constant,
    EvaluationError,
    ExpressionError,
    compile_expression,
    parse,
)

USER = {
    "userName": "Ada.Lovelace@Example.COM",
    "name.givenName": "Ada",
    "name.familyName": "Lovelace",
    "displayName": "  Ada Lovelace  ",
    "department": "Sales",
    "emails": ["ada@example.com", "ada@example.com", "lovelace@example.org"],
    "active": True,
    "hireDate": "2024-03-05T08:09:10Z",
    "adTime": "20240305080910.0Z",
    "city": "Zürich",
    "missing": None,
}


def run(text: str, source: dict[str, object] | None = None) -> object:
    values = USER if source is None else source
    return compile_expression(text).evaluate(lambda path: values.get(path))


def test_parse_builds_calls_attributes_and_constants():
    node = parse('Join(" ", [name.givenName], Left([name.familyName], 1))')
    assert node == Call(
        "Join",
        (
            Constant(" "),
            Attribute("name.givenName"),
            Call("Left", (Attribute("name.familyName"), Constant(1)), 28),
        ),
        0,
    )


def test_attribute_paths_may_hold_brackets_and_quotes():
    expression = compile_expression('ToLower([emails[type eq "work"].value])')
    assert expression.attributes == ['emails[type eq "work"].value']


def test_string_escapes():
    assert run(r'Append("say \"hi\"", "\\")') == 'say "hi"\\'


def test_function_names_are_case_insensitive_and_reported_canonically():
    assert parse("tolower([userName])") == Call("ToLower", (Attribute("userName"),), 0)


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("", "empty expression", 0),
        ("Frobnicate([x])", "unknown function 'Frobnicate'", 0),
        ("ToLower([x]", "expected , or ) in the arguments of ToLower", 11),
        ("ToLower [x]", "expected ( after ToLower", 8),
        ('Append("a)', "string constant is not closed", 7),
        ("ToLower([x)", "attribute name is not closed", 8),
        ("ToLower([])", "empty attribute name", 8),
        ("Left([x])", "Left takes 2 arguments, not 1", 0),
        ("Join()", "Join takes at least 1 arguments, not 0", 0),
        ('Switch([x], "d", "k")', "Switch needs a value for each key", 0),
        ("ToLower([x]) extra", "unexpected text after the expression", 13),
        ("ToLower(@)", "unexpected character '@'", 8),
        (r'Append("a\n", "b")', 'only \\" and \\\\ may be escaped', 9),
    ],
)
def test_bad_expressions_are_refused_with_their_position(text, message, position):
    with pytest.raises(ExpressionError, match=re.escape(message)) as caught:
        parse(text)
    assert caught.value.position == position


def test_unknown_attributes_are_refused_when_the_attribute_set_is_given():
    known = ["userName", "name.givenName", "emails"]
    assert compile_expression("ToLower([USERNAME])", known_attributes=known).attributes == ["USERNAME"]
    compile_expression('Item([emails[type eq "work"].value], 1)', known_attributes=known)
    with pytest.raises(ExpressionError, match=r"unknown attribute \[nickName\] \(at character 9\)"):
        compile_expression("ToLower([nickName])", known_attributes=known)


def test_limits_keep_hostile_expressions_cheap():
    with pytest.raises(ExpressionError, match="longer than"):
        parse('"' + "a" * MAX_EXPRESSION_LENGTH + '"')
    deep = "ToLower(" * (MAX_DEPTH + 1) + "[x]" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(ExpressionError, match="nest deeper"):
        parse(deep)
    shallow = "ToLower(" * MAX_DEPTH + "[userName]" + ")" * MAX_DEPTH
    assert run(shallow) == "ada.lovelace@example.com"


def test_a_bare_attribute_or_constant_is_an_expression():
    assert run("[department]") == "Sales"
    assert run('"constant"') == "constant"
    assert run("7") == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Append([name.givenName], "-x")', "Ada-x"),
        ('Append([missing], "-x")', None),
        ('Coalesce([missing], "", [department], "fallback")', "Sales"),
        ('Coalesce([missing], "fallback")', "fallback"),
        ("Coalesce([missing])", None),
        ('CBool("TRUE")', True),
        ('CBool("0")', False),
        ("CBool([active])", True),
        ("CStr([active])", "true"),
        ("Count([emails])", 3),
        ("Count([missing])", 0),
        ('IIF([active], "enabled", "disabled")', "enabled"),
        ('IIF(Not([active]), "enabled", "disabled")', "disabled"),
        ("IsNull([missing])", True),
        ('IsNullOrEmpty("")', True),
        ("IsPresent([department])", True),
        ("Item([emails], 3)", "lovelace@example.org"),
        ("Item([emails], 4)", None),
        ('Join(" ", [name.givenName], [missing], [name.familyName])', "Ada Lovelace"),
        ('Join(";", RemoveDuplicates([emails]))', "ada@example.com;lovelace@example.org"),
        ("Left([name.familyName], 4)", "Love"),
        ("Left([name.familyName], 40)", "Lovelace"),
        ("Mid([name.familyName], 2, 3)", "ove"),
        ("NormalizeDiacritics([city])", "Zurich"),
        ('NormalizeDiacritics("Ærøskøbing Straße Łódź")', "AEroskobing Strasse Lodz"),
        ('PCase("aDA lOVELACE")', "Ada Lovelace"),
        ('PCase("jean-luc picard", "-")', "Jean-Luc picard"),
        ('Replace([userName], "@Example.COM", "@example.net")', "Ada.Lovelace@example.net"),
        ('Split("a,b,,c", ",")', ["a", "b", "c"]),
        ('StripSpaces(" a b\tc ")', "abc"),
        ('Switch([department], "Other", "Sales", "S", "Engineering", "E")', "S"),
        ('Switch("Legal", "Other", "Sales", "S")', "Other"),
        ("ToLower([userName])", "ada.lovelace@example.com"),
        ('ToUpper([name.givenName], "en-US")', "ADA"),
        ("ToLower([emails])", ["ada@example.com", "ada@example.com", "lovelace@example.org"]),
        ("Trim([displayName])", "Ada Lovelace"),
        ('Word("one two  three", 3)', "three"),
        ('Word("a.b.c", 2, ".")', "b"),
        ('Word("a.b.c", 9, ".")', None),
        ('Join("", Left([name.givenName], 1), ToLower([name.familyName]))', "Alovelace"),
    ],
)
def test_functions(text, expected):
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('FormatDateTime([hireDate], "", "yyyy-MM-dd")', "2024-03-05"),
        ('FormatDateTime([hireDate], "", "yyyyMMddHHmmss.fZ")', "20240305080910.0Z"),
        ('FormatDateTime([adTime], "yyyyMMddHHmmss.fZ", "yyyy-MM-ddTHH:mm:ssK")', "2024-03-05T08:09:10Z"),
        ('FormatDateTime("03/05/2024 1:02 PM", "None", "MM/dd/yyyy h:mm tt", "HH:mm")', "13:02"),
        ('FormatDateTime("2024-03-05T08:09:10+02:00", "", "HH:mm zzz")', "08:09 +02:00"),
        ('FormatDateTime("2024-03-05", "", "dd\'.\'MM")', "05.03"),
        ('FormatDateTime([missing], "", "yyyy")', None),
    ],
)
def test_format_date_time(text, expected):
    assert run(text) == expected


def test_format_date_time_takes_datetime_values():
    moment = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert run('FormatDateTime([when], "", "yyyy/M/d H:m:s")', {"when": moment}) == "2025/1/2 3:4:5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('FormatDateTime("yesterday", "", "yyyy")', "not an ISO 8601 date"),
        ('FormatDateTime("2024-13-40", "yyyy-MM-dd", "yyyy")', "not a valid date"),
        ('FormatDateTime("2024", "yyyy-MM-dd", "yyyy")', "does not match the input format"),
        ('Left("abc", "x")', "Left's length must be an integer"),
        ('CBool("maybe")', "is not a boolean"),
    ],
)
def test_evaluation_errors_are_reported_not_raised_as_crashes(text, message):
    with pytest.raises(EvaluationError, match=message):
        run(text)


def test_every_function_is_documented_and_reachable():
    for function in FUNCTIONS:
        assert function.summary.startswith(function.name)
        assert parse(f"{function.name}(" + ", ".join(['"1"'] * max(function.min_args, 1)) + ")")
