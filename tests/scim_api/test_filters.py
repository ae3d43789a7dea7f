"""SCIM filters compiled to SQL: operators, case rules, multi-valued and nested-group semantics, errors."""

from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection

from directory import services
from directory.models import Group, User, UserValue
from scim_api.filter_parser import MAX_COMPARISONS, MAX_FILTER_LENGTH, MAX_NESTING
from scim_api.filters import (
    InvalidFilter,
    _compare_column,
    attribute_column,
    compile_filter,
)
from scim_api.schema import ENTERPRISE_USER, ENTRA_USER, Attribute, get_registry

pytestmark = pytest.mark.django_db

USER = get_registry().resource_type("User")
GROUP = get_registry().resource_type("Group")


def users(text: str) -> set[str]:
    return set(User.objects.filter(compile_filter(text, USER)).values_list("user_name", flat=True))


def groups(text: str) -> set[str]:
    return set(Group.objects.filter(compile_filter(text, GROUP)).values_list("display_name", flat=True))


def everyone() -> set[str]:
    return set(User.objects.values_list("user_name", flat=True))


@pytest.fixture
def people(actor: Any) -> dict[str, User]:
    """Alice has everything, Bob reports to her with little, Carol has no emails and no manager."""
    alice = services.user_create(
        actor=actor,
        user_name="Alice@Example.com",
        external_id="EXT-Alice",
        given_name="Alice",
        family_name="Doe",
        display_name="Alice Doe",
        title="Engineer",
        department="R&D",
        values={
            "emails": [
                {"value": "alice@example.com", "type": "work", "primary": True},
                {"value": "alice@home.org", "type": "home"},
            ],
            "addresses": [{"type": "work", "address": {"locality": "Paris", "postalCode": "75001"}}],
            "roles": [{"value": "admin", "display": "Administrator"}],
        },
        extensions={ENTRA_USER: {"mailNickname": "AliceD", "employeeHireDate": "2020-03-01T09:00:00Z"}},
    )
    bob = services.user_create(
        actor=actor,
        user_name="bob@example.com",
        external_id="ext-bob",
        active=False,
        manager_id=alice.pk,
        values={
            "emails": [
                {"value": "Bob@Example.com", "type": "work"},
                {"value": "bob@other.net", "type": "other"},
            ],
            "addresses": [{"type": "home", "address": {"locality": "Lyon"}}],
        },
        extensions={ENTRA_USER: {"mailNickname": None, "employeeHireDate": "2021-06-01T00:00:00+02:00"}},
    )
    carol = services.user_create(
        actor=actor,
        user_name="carol@example.com",
        title="Manager",
        family_name="Roe",
        extensions={ENTRA_USER: {"employeeHireDate": "not a date"}},
    )
    return {"alice": alice, "bob": bob, "carol": carol}


# --- strings and case ---------------------------------------------------------------------------


def test_user_name_eq_ignores_case_of_attribute_operator_and_value(people):
    assert users('USERNAME EQ "ALICE@example.COM"') == {"Alice@Example.com"}
    assert users('userName Eq "carol@EXAMPLE.com"') == {"carol@example.com"}


def test_external_id_is_case_exact(people):
    assert users('externalId eq "EXT-Alice"') == {"Alice@Example.com"}
    assert users('externalId eq "ext-alice"') == set()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('externalId co "Alice"', {"Alice@Example.com"}),
        ('externalId co "alice"', set()),
        ('externalId sw "EXT"', {"Alice@Example.com"}),
        ('externalId sw "ext"', {"bob@example.com"}),
        ('externalId ew "-bob"', {"bob@example.com"}),
        ('externalId ew "-BOB"', set()),
    ],
)
def test_case_exact_co_sw_ew_respect_case_on_every_database(people, text, expected):
    assert users(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('userName co "EXAMPLE"', {"Alice@Example.com", "bob@example.com", "carol@example.com"}),
        ('userName sw "AL"', {"Alice@Example.com"}),
        ('userName ew "E.COM"', {"Alice@Example.com", "bob@example.com", "carol@example.com"}),
        ('title eq "engineer"', {"Alice@Example.com"}),
        ('title gt "f"', {"carol@example.com"}),
        ('title ge "MANAGER"', {"carol@example.com"}),
        ('title lt "F"', {"Alice@Example.com"}),
        ('title le "engineer"', {"Alice@Example.com"}),
        ('title co "e"', {"Alice@Example.com", "carol@example.com"}),
    ],
)
def test_string_operators_compare_case_insensitively_when_not_case_exact(people, text, expected):
    assert users(text) == expected


def test_like_wildcards_in_values_are_literal(actor, people):
    services.user_update(actor=actor, user_id=people["carol"].pk, title="50%_off")

    assert users('title co "%_"') == {"carol@example.com"}
    assert users('title co "0%"') == {"carol@example.com"}
    assert users('title sw "_"') == set()


def test_empty_strings_are_absent_values(people):
    assert users("title pr") == {"Alice@Example.com", "carol@example.com"}
    assert users("not (title pr)") == {"bob@example.com"}
    assert users("title eq null") == {"bob@example.com"}
    assert users("title ne null") == {"Alice@Example.com", "carol@example.com"}
    # An absent title is not "less than" anything.
    assert users('title lt "zzz"') == {"Alice@Example.com", "carol@example.com"}


def test_ne_and_not_match_users_without_the_value(people):
    assert users('title ne "Engineer"') == {"bob@example.com", "carol@example.com"}
    assert users('not (title eq "Engineer")') == {"bob@example.com", "carol@example.com"}
    assert users('not (title co "gin")') == {"bob@example.com", "carol@example.com"}


def test_and_binds_tighter_than_or_and_parentheses_group(people):
    text = 'userName sw "bob" or userName sw "carol" and title eq "Nobody"'
    assert users(text) == {"bob@example.com"}
    assert users(f"({text.replace(' and', ') and')}") == set()


def test_urn_qualified_names_resolve_core_and_extension_attributes(people):
    assert users(f'{ENTERPRISE_USER}:department eq "r&d"') == {"Alice@Example.com"}
    assert users(f'{ENTERPRISE_USER.upper()}:DEPARTMENT eq "R&D"') == {"Alice@Example.com"}
    assert users('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bob@example.com"') == {
        "bob@example.com"
    }


def test_complex_attribute_sub_attributes_and_presence(people):
    assert users('name.givenName eq "ALICE"') == {"Alice@Example.com"}
    assert users('name[givenName eq "alice" and familyName eq "doe"]') == {"Alice@Example.com"}
    assert users("name pr") == {"Alice@Example.com", "carol@example.com"}
    assert users("not (name pr)") == {"bob@example.com"}


# --- booleans and ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["true", '"True"', '"TRUE"', '"true"'])
def test_booleans_accept_json_true_and_entra_strings(people, value):
    assert users(f"active eq {value}") == {"Alice@Example.com", "carol@example.com"}


def test_boolean_false_and_ne(people):
    assert users('active eq "False"') == {"bob@example.com"}
    assert users("active ne false") == {"Alice@Example.com", "carol@example.com"}
    assert users("active pr") == everyone()


def test_id_matches_only_its_canonical_text(people):
    alice = people["alice"]
    assert users(f'id eq "{alice.pk}"') == {"Alice@Example.com"}
    assert users(f'id eq "{str(alice.pk).upper()}"') == set()
    assert users(f'id ne "{alice.pk}"') == {"bob@example.com", "carol@example.com"}


@pytest.mark.parametrize(
    "text",
    [
        'id eq "random-probe-value"',
        'id eq "00000000-0000-0000-0000-00000000000g"',
        "id eq 42",
        'manager.value eq "not-a-uuid"',
        'groups.value eq "8e1b8d5f-probe"',
        'groups[value eq "junk" or display eq "nothing"]',
    ],
)
def test_random_probe_values_on_ids_match_nothing(people, text):
    assert users(text) == set()
    assert users(f"not ({text})") == everyone()


def test_random_probe_on_members_value_matches_no_group(actor, people):
    services.group_create(actor=actor, display_name="Sales", member_user_ids=[people["alice"].pk])

    assert groups('members.value eq "ad8d9a1e-random"') == set()
    assert groups('members.value ne "ad8d9a1e-random"') == {"Sales"}


def test_id_ne_random_value_matches_everyone(people):
    assert users('id ne "random"') == everyone()


# --- multi-valued attributes --------------------------------------------------------------------


def test_bare_multi_valued_attribute_means_its_value(people):
    assert users('emails co "home.org"') == {"Alice@Example.com"}
    assert users('emails eq "BOB@example.COM"') == {"bob@example.com"}
    assert users('emails.value sw "bob@o"') == {"bob@example.com"}
    assert users('roles eq "ADMIN"') == {"Alice@Example.com"}


def test_value_path_conditions_hold_on_the_same_element(people):
    # Alice has a work email and a home.org email, but not on the same element.
    assert users('emails[type eq "work" and value co "home.org"]') == set()
    assert users('emails[type eq "home" and value co "home.org"]') == {"Alice@Example.com"}
    assert users('emails[type eq "work"].value eq "bob@example.com"') == {"bob@example.com"}
    assert users('emails[type eq "home" or type eq "other"]') == {"Alice@Example.com", "bob@example.com"}
    assert users('emails[not (type eq "work")].value ew ".net"') == {"bob@example.com"}


def test_separate_comparisons_may_match_different_elements(people):
    assert users('emails.type eq "work" and emails.value co "home.org"') == {"Alice@Example.com"}


def test_entra_string_primary_inside_value_path(people):
    assert users('emails[type eq "work" and primary eq "True"].value eq "alice@example.com"') == {
        "Alice@Example.com"
    }
    assert users('emails[primary eq "True"]') == {"Alice@Example.com"}
    assert users('emails[type eq "work" and primary eq "False"]') == {"bob@example.com"}


def test_multi_valued_presence_and_its_negation(people):
    assert users("emails pr") == {"Alice@Example.com", "bob@example.com"}
    assert users("not (emails pr)") == {"carol@example.com"}
    assert users("roles.display pr") == {"Alice@Example.com"}
    assert users("emails eq null") == {"carol@example.com"}


def test_multi_valued_ne_means_no_element_equals(people):
    assert users('emails.value ne "alice@example.com"') == {"bob@example.com", "carol@example.com"}
    # Inside brackets, ne applies to one element.
    assert users('emails[value ne "alice@example.com"]') == {"Alice@Example.com", "bob@example.com"}


def test_address_sub_attributes_compare_json_parts(people):
    assert users('addresses[type eq "work"].locality eq "PARIS"') == {"Alice@Example.com"}
    assert users('addresses.locality co "yo"') == {"bob@example.com"}
    assert users("addresses.postalCode pr") == {"Alice@Example.com"}
    assert users('addresses.postalCode ne "75001"') == {"bob@example.com", "carol@example.com"}
    assert users('addresses[type eq "home"].locality sw "par"') == set()


# --- the enterprise manager -------------------------------------------------------------------


def test_manager_value_and_display_name(people):
    alice = people["alice"]
    assert users(f'manager.value eq "{alice.pk}"') == {"bob@example.com"}
    assert users(f'{ENTERPRISE_USER}:manager.value eq "{alice.pk}"') == {"bob@example.com"}
    assert users('manager.displayName eq "alice doe"') == {"bob@example.com"}
    assert users("manager pr") == {"bob@example.com"}


def test_negated_manager_comparisons_keep_users_without_a_manager(people):
    alice = people["alice"]
    without = {"Alice@Example.com", "carol@example.com"}
    assert users(f'manager.value ne "{alice.pk}"') == without
    assert users(f'not (manager.value eq "{alice.pk}")') == without
    assert users('not (manager.displayName eq "Alice Doe")') == without
    assert users("not (manager pr)") == without


# --- groups and members -----------------------------------------------------------------------


@pytest.fixture
def nesting(actor: Any, user_factory: Any) -> dict[str, Any]:
    """Top contains Middle contains Bottom; Dave is in Bottom, Erin in Middle, Frank in Top; Gail in none."""
    dave, erin, frank, _gail = (user_factory(user_name=name) for name in ("dave", "erin", "frank", "gail"))
    bottom = services.group_create(actor=actor, display_name="Bottom", member_user_ids=[dave.pk])
    middle = services.group_create(
        actor=actor, display_name="Middle", member_user_ids=[erin.pk], member_group_ids=[bottom.pk]
    )
    top = services.group_create(
        actor=actor, display_name="Top", member_user_ids=[frank.pk], member_group_ids=[middle.pk]
    )
    return {"top": top, "middle": middle, "bottom": bottom, "dave": dave, "erin": erin}


def test_groups_value_matches_direct_and_nested_members_at_any_depth(nesting):
    assert users(f'groups.value eq "{nesting["top"].pk}"') == {"dave", "erin", "frank"}
    assert users(f'groups.value eq "{nesting["middle"].pk}"') == {"dave", "erin"}
    assert users(f'groups.value eq "{nesting["bottom"].pk}"') == {"dave"}
    assert users(f'groups eq "{nesting["middle"].pk}"') == {"dave", "erin"}


def test_groups_display_and_negation(nesting):
    assert users('groups.display eq "MIDDLE"') == {"dave", "erin"}
    assert users('groups[display sw "bot" or display eq "top"]') == {"dave", "erin", "frank"}
    assert users(f'not (groups.value eq "{nesting["middle"].pk}")') == {"frank", "gail"}
    assert users('groups.display ne "Middle"') == {"frank", "gail"}
    assert users("groups pr") == {"dave", "erin", "frank"}


def test_members_value_matches_direct_members_only(nesting):
    assert groups(f'members.value eq "{nesting["dave"].pk}"') == {"Bottom"}
    assert groups(f'members eq "{nesting["bottom"].pk}"') == {"Middle"}
    assert groups(f'members[value eq "{nesting["erin"].pk}" and type eq "user"]') == {"Middle"}
    assert groups(f'members[value eq "{nesting["erin"].pk}" and type eq "Group"]') == set()
    assert groups(f'members.value ne "{nesting["dave"].pk}"') == {"Middle", "Top"}


def test_members_type_and_presence(actor, nesting):
    services.group_create(actor=actor, display_name="Empty")

    assert groups('members.type eq "Group"') == {"Middle", "Top"}
    assert groups('members[type eq "User"]') == {"Bottom", "Middle", "Top"}
    assert groups('members.type eq "robot"') == set()
    assert groups("members pr") == {"Bottom", "Middle", "Top"}
    assert groups("not (members pr)") == {"Empty"}


def test_group_types_map_to_the_group_kind(actor):
    services.group_create(actor=actor, display_name="Team", kind="unified")
    services.group_create(actor=actor, display_name="Admins")

    assert groups('groupTypes eq "unified"') == {"Team"}
    assert groups("groupTypes pr") == {"Team"}
    assert groups('groupTypes ne "Unified"') == {"Admins"}
    assert groups("not (groupTypes pr)") == {"Admins"}
    assert groups('groupTypes eq "Security"') == set()


def test_group_display_name_and_entra_attributes(actor):
    services.group_create(
        actor=actor, display_name="Sales EMEA", description="Sellers", mail_nickname="sales"
    )
    services.group_create(actor=actor, display_name="Support")

    assert groups('displayName eq "sales emea"') == {"Sales EMEA"}
    assert groups('displayName ew "EMEA"') == {"Sales EMEA"}
    assert groups('description co "SELL"') == {"Sales EMEA"}
    assert groups("mailNickname pr") == {"Sales EMEA"}
    assert groups("securityEnabled eq true and mailEnabled eq false") == {"Sales EMEA", "Support"}


# --- dates -------------------------------------------------------------------------------------


def test_meta_last_modified_and_created_compare_chronologically(people):
    User.objects.filter(pk=people["alice"].pk).update(
        last_modified=datetime(2011, 5, 13, 4, 42, 34, tzinfo=UTC), created=datetime(2010, 1, 1, tzinfo=UTC)
    )

    assert users('meta.lastModified gt "2011-05-13T04:42:34Z"') == {"bob@example.com", "carol@example.com"}
    assert users('meta.lastModified le "2011-05-13T04:42:34Z"') == {"Alice@Example.com"}
    assert users('meta.lastModified eq "2011-05-13T06:42:34+02:00"') == {"Alice@Example.com"}
    # .NET's round-trip format, as Entra writes it: seven fractional digits.
    assert users('meta.lastModified eq "2011-05-13T04:42:34.0000000Z"') == {"Alice@Example.com"}
    assert users('meta.lastModified lt "2011-05-13T04:42:35"') == {"Alice@Example.com"}
    assert users('meta.created lt "2011-01-01"') == {"Alice@Example.com"}
    assert users('meta.created ge "2011-01-01"') == {"bob@example.com", "carol@example.com"}


def test_extension_date_compares_chronologically_and_ignores_malformed_values(people):
    hire_date = f"{ENTRA_USER}:employeeHireDate"
    # Bob's 2021-06-01T00:00:00+02:00 is 2021-05-31T22:00Z.
    assert users(f'{hire_date} gt "2021-05-31T21:00:00Z"') == {"bob@example.com"}
    assert users(f'{hire_date} lt "2021-05-31T23:00:00Z"') == {"Alice@Example.com", "bob@example.com"}
    assert users(f'{hire_date} eq "2021-05-31T22:00:00Z"') == {"bob@example.com"}
    assert users(f'{hire_date} ge "2020-03-01T10:00:00+01:00"') == {"Alice@Example.com", "bob@example.com"}
    # Carol's stored "not a date" reads as no value: excluded, and counted as "not equal".
    assert users(f'{hire_date} ne "2021-05-31T22:00:00Z"') == {"Alice@Example.com", "carol@example.com"}


def test_extension_strings_compare_case_insensitively_and_null_is_absent(people):
    nickname = f"{ENTRA_USER}:mailNickname"
    assert users(f'{nickname} eq "aliced"') == {"Alice@Example.com"}
    assert users(f'{nickname} sw "ALI"') == {"Alice@Example.com"}
    assert users(f'{nickname} co "ced"') == {"Alice@Example.com"}
    # Bob stores JSON null, Carol has no key: neither is present, on both databases.
    assert users(f"{nickname} pr") == {"Alice@Example.com"}
    assert users(f'{nickname} ne "AliceD"') == {"bob@example.com", "carol@example.com"}
    assert users(f'not ({nickname} ew "d")') == {"bob@example.com", "carol@example.com"}


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('password eq "secret"', "'password' cannot be used in a filter"),
        ('meta.resourceType eq "User"', "'meta.resourceType' cannot be used in a filter"),
        ('meta.location co "Users"', "'meta.location' cannot be used in a filter"),
        ('meta.version eq "W/1"', "'meta.version' cannot be used in a filter"),
        ('groups.$ref eq "x"', r"'groups.\$ref' cannot be used in a filter"),
        ('groups[type eq "direct"]', "'groups.type' cannot be used in a filter"),
        ("manager.$ref pr", r"User:manager.\$ref' cannot be used in a filter"),
        ('nickname2 eq "x"', "'nickname2' is not an attribute of User"),
        ('urn:example:hr:1.0:User:badge eq "4"', "names no schema of User"),
        ('name eq "Alice"', "'name' is a complex attribute: compare one of its sub-attributes"),
        ('meta eq "x"', "e.g. 'meta.created'"),
        ('addresses eq "Paris"', "'addresses' has no value sub-attribute"),
        ("active gt true", "The 'gt' operator cannot be used on 'active'"),
        ('active co "t"', "The 'co' operator cannot be used on 'active'"),
        ("emails[primary le true]", "The 'le' operator cannot be used on 'emails.primary'"),
        ('active eq "yes"', "'active' is a boolean attribute: expected true or false, got 'yes'"),
        ("active eq 1", "'active' is a boolean attribute"),
        ('id co "abc"', "The 'co' operator cannot be used on 'id'"),
        ('manager.value gt "a"', "The 'gt' operator cannot be used on '.*User:manager.value'"),
        ('groups.value sw "a"', "The 'sw' operator cannot be used on 'groups.value'"),
        (
            'meta.created eq "yesterday"',
            "'meta.created' is a dateTime attribute: 'yesterday' is not an ISO 8601",
        ),
        ('meta.lastModified gt "2024-13-45T00:00:00Z"', "is not an ISO 8601 date and time"),
        ('meta.lastModified co "2024"', "The 'co' operator cannot be used on 'meta.lastModified'"),
        ("userName eq true", "'userName' is a string attribute: expected a string, got true"),
        ("userName gt null", "'gt null' is not a valid comparison"),
        ('emails[type eq "work"', "Expected ']'"),
        ('userName zz "x"', "Unknown operator 'zz'"),
        ("", "The filter is empty"),
        ('emails[kind eq "x"]', "'kind' is not a sub-attribute of 'emails'"),
        ('userName[value eq "x"]', "'userName' is not a complex attribute"),
        ('emails.value[type eq "x"]', "follows a complex attribute, not a sub-attribute"),
        ('emails[type eq "work" and addresses[type eq "x"]]', r"A \[...\] filter inside 'emails\[...\]'"),
    ],
)
def test_invalid_user_filters_raise_with_a_specific_detail(text, message):
    with pytest.raises(InvalidFilter, match=message):
        compile_filter(text, USER)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('userName eq "x"', "'userName' is not an attribute of Group"),
        ('members.display eq "Alice"', "'members.display' cannot be used in a filter"),
        ('members.type co "U"', "The 'co' operator cannot be used on 'members.type'"),
        ('members.value gt "a"', "The 'gt' operator cannot be used on 'members.value'"),
        ('groupTypes sw "Uni"', "The 'sw' operator cannot be used on '.*Group:groupTypes'"),
        ('groupTypes[value eq "Unified"]', "Group:groupTypes' is not a complex attribute"),
        ("mailEnabled lt true", "The 'lt' operator cannot be used on"),
    ],
)
def test_invalid_group_filters_raise_with_a_specific_detail(text, message):
    with pytest.raises(InvalidFilter, match=message):
        compile_filter(text, GROUP)


def test_too_long_filters_are_rejected():
    text = 'userName eq "' + "x" * MAX_FILTER_LENGTH + '"'
    with pytest.raises(InvalidFilter, match=f"longer than {MAX_FILTER_LENGTH} characters"):
        compile_filter(text, USER)


def test_filters_with_too_many_comparisons_are_rejected():
    text = " or ".join(f'title eq "{n}"' for n in range(MAX_COMPARISONS + 1))
    assert len(text) < MAX_FILTER_LENGTH
    with pytest.raises(InvalidFilter, match=f"more than {MAX_COMPARISONS} comparisons"):
        compile_filter(text, USER)


def test_deeply_nested_filters_are_rejected_before_parsing():
    text = "(" * (MAX_NESTING + 1) + "title pr" + ")" * (MAX_NESTING + 1)
    with pytest.raises(InvalidFilter, match=f"more than {MAX_NESTING} levels deep"):
        compile_filter(text, USER)
    # Parentheses inside a quoted value are not nesting.
    assert compile_filter('title eq "' + "(" * 50 + '"', USER) is not None


def test_filters_at_the_limits_still_compile(people):
    text = " or ".join(f'title eq "{n}"' for n in range(MAX_COMPARISONS - 1)) + ' or title eq "Manager"'
    nested = "(" * MAX_NESTING + 'title eq "Engineer"' + ")" * MAX_NESTING

    assert users(text) == {"carol@example.com"}
    assert users(nested) == {"Alice@Example.com"}


# --- SQL shape -------------------------------------------------------------------------------------


def test_compiling_and_running_a_filter_is_one_query(people, nesting, django_assert_num_queries):
    text = (
        'userName sw "a" or (emails[type eq "work" and primary eq "True"].value co "example" '
        f'and not (groups.value eq "{nesting["top"].pk}")) or manager.displayName eq "Alice Doe" '
        f'or {ENTRA_USER}:employeeHireDate gt "2020-01-01" or addresses.locality pr'
    )

    with django_assert_num_queries(1):
        found = {user.user_name for user in User.objects.filter(compile_filter(text, USER))}

    assert found == {"Alice@Example.com", "bob@example.com"}


def test_a_probe_that_can_match_nothing_runs_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert list(User.objects.filter(compile_filter('id eq "probe"', USER))) == []


@pytest.mark.postgres
def test_indexed_lookups_use_the_lower_indexes_on_postgresql():
    created = User.objects.bulk_create([User(user_name=f"Bulk{n}@Example.com") for n in range(5000)])
    UserValue.objects.bulk_create(
        [
            UserValue(user=user, kind=kind, value=f"{kind}-{n}@Example.com", type="work", position=0)
            for n, user in enumerate(created)
            for kind in ("emails", "ims")
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {User._meta.db_table}")
        cursor.execute(f"ANALYZE {UserValue._meta.db_table}")

    by_name = User.objects.filter(compile_filter('userName eq "bulk4242@example.com"', USER))
    by_email = User.objects.filter(
        compile_filter('emails[type eq "work"].value eq "EMAILS-4242@example.com"', USER)
    )

    assert [user.user_name for user in by_name] == ["Bulk4242@Example.com"]
    assert [user.user_name for user in by_email] == ["Bulk4242@Example.com"]
    assert "directory_user_username_ci_unique" in by_name.explain()
    assert "directory_uservalue_value_ci" in by_email.explain()


def test_binary_values_cannot_be_ordered():
    # No registry attribute is binary today (x509Certificates.value is declared a string).
    certificate = Attribute("value", "binary", column="value")
    column = attribute_column(UserValue, "value", certificate, "x509Certificates.value")

    with pytest.raises(InvalidFilter, match="'gt' operator cannot be used on 'x509Certificates.value'"):
        _compare_column(column, "gt", "MIIB")
    assert _compare_column(column, "eq", "MIIB") is not None
