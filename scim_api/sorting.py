"""SCIM sortBy / sortOrder (RFC 7644 §3.4.2.3) as a Django ordering.

- Strings sort by LOWER() unless the attribute is caseExact, in the database's
  collation.
- Missing values (our "" and NULL) sort last in both directions: descending
  reverses the order of the values, not where the gaps go, so a listing
  always starts with resources that have the attribute.
- A multi-valued attribute sorts by its primary element, else its first one.
- The ordering always ends with the unique ("created", "id") pair, which is
  also the order without sortBy, so index pagination never repeats or skips a
  resource between pages (Okta requires a stable order).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Case, OrderBy, OuterRef, Subquery, TextField, Value, When
from django.db.models.functions import Lower, NullIf

from directory.models import Group, UserValue
from scim_api.filters import Column, Instant, attribute_column, resource_model
from scim_api.schema import AttributePath, ResourceType, UnknownAttribute, get_registry

DEFAULT_ORDER = ("created", "id")


class InvalidSort(ValueError):
    """sortBy names no sortable attribute, or sortOrder is neither ascending nor descending."""


def order_by(sort_by: str | None, sort_order: str | None, resource_type: ResourceType) -> list[OrderBy | str]:
    """The `order_by()` arguments for a list request's sortBy and sortOrder."""
    descending = _descending(sort_order)
    if not sort_by or not sort_by.strip():
        return list(DEFAULT_ORDER)
    key = _sort_key(sort_by.strip(), resource_type)
    ordered = key.desc(nulls_last=True) if descending else key.asc(nulls_last=True)
    return [ordered, *DEFAULT_ORDER]


def _descending(sort_order: str | None) -> bool:
    if sort_order is None or not sort_order.strip():
        return False
    lowered = sort_order.strip().lower()
    if lowered not in ("ascending", "descending"):
        raise InvalidSort(f"sortOrder must be 'ascending' or 'descending', not {sort_order!r}")
    return lowered == "descending"


def _sort_key(sort_by: str, resource_type: ResourceType) -> Any:
    try:
        path = get_registry().resolve(resource_type, sort_by)
    except UnknownAttribute:
        raise InvalidSort(f"sortBy '{sort_by}' is not an attribute of {resource_type.name}") from None
    attribute, sub, label = path.attribute, path.sub_attribute, str(path)
    if not attribute.filterable or (sub is not None and not sub.filterable):
        raise InvalidSort(f"sortBy '{label}' is not sortable")
    if attribute.storage in ("groups", "members"):
        raise InvalidSort(f"sortBy '{label}' is not sortable: memberships have no order")
    if attribute.storage == "json":
        raise InvalidSort(f"sortBy '{label}' is not sortable: it is a list of values")
    if attribute.storage == "values":
        return _first_element(path)
    if attribute.multi_valued and attribute.column == "kind":
        # groupTypes: ["Unified"] or nothing.
        return Case(When(kind=Group.Kind.UNIFIED, then=Value("unified")))
    if attribute.type == "complex" and sub is None:
        raise InvalidSort(
            f"sortBy '{label}' is not sortable: it is a complex attribute; sort by one of its sub-attributes"
        )
    target = sub or attribute
    if target.column is None:
        raise InvalidSort(f"sortBy '{label}' is not sortable")
    return _sortable(attribute_column(resource_model(resource_type), target.column, target, label))


def _first_element(path: AttributePath) -> Subquery:
    """The sort value of a multi-valued attribute: its primary element's, else its first element's."""
    attribute, label = path.attribute, str(path)
    sub = path.sub_attribute or attribute.sub("value")
    if sub is None or sub.column is None:
        raise InvalidSort(f"sortBy '{label}' is not sortable: name one of its sub-attributes")
    key = _sortable(attribute_column(UserValue, sub.column, sub, label))
    elements = (
        UserValue.objects.filter(user=OuterRef("pk"), kind=attribute.name)
        .order_by("-primary", "position")
        .annotate(sort_key=key)
        .values("sort_key")[:1]
    )
    return Subquery(elements)


def _sortable(column: Column) -> Any:
    if column.kind == "dateTime" and column.in_json:
        return Instant(column.expression)
    if column.kind != "string":
        return column.expression
    expression = column.expression if column.case_exact else Lower(column.expression)
    # "" is how an absent string is stored: make it NULL so it sorts with the missing ones.
    return NullIf(expression, Value(""), output_field=TextField())
