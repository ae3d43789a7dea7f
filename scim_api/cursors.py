"""Cursor pagination (RFC 9865): opaque, signed, keyset cursors over the default (created, id) order.

A cursor names the last (or, going back, the first) row a client has seen, so
the next page is `WHERE (created, id) > (…)` on the (created, id) index: it
costs the same at the end of 100k users as at the start, and rows inserted or
deleted meanwhile never make a page repeat or skip a row that stays.
Cursors are signed (a client cannot forge one), bound to the resource type and
the filter they were issued for, and expire after CURSOR_TIMEOUT seconds.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from django.core import signing
from django.db.models import Q, QuerySet

from scim_api.conf import scim_setting
from scim_api.exceptions import ScimError

_SALT = "scim_api.cursor"
Direction = Literal["next", "previous"]


@dataclass(frozen=True)
class Cursor:
    created: datetime
    id: uuid.UUID
    direction: Direction


def _scope(resource_type: str, filter_text: str | None) -> str:
    return hashlib.sha256(f"{resource_type}\n{filter_text or ''}".encode()).hexdigest()[:16]


def encode(row: Any, direction: Direction, *, resource_type: str, filter_text: str | None) -> str:
    payload = {
        "c": row.created.isoformat(),
        "i": str(row.pk),
        "d": direction,
        "s": _scope(resource_type, filter_text),
    }
    return signing.TimestampSigner(salt=_SALT).sign_object(payload, compress=True)


def decode(token: str, *, resource_type: str, filter_text: str | None) -> Cursor:
    try:
        payload = signing.TimestampSigner(salt=_SALT).unsign_object(
            token, max_age=scim_setting("CURSOR_TIMEOUT")
        )
    except signing.SignatureExpired:
        raise ScimError(
            "The cursor has expired; start again without one.", scim_type="expiredCursor"
        ) from None
    except (signing.BadSignature, ValueError, TypeError):
        raise ScimError("The cursor is not one this server issued.", scim_type="invalidCursor") from None
    try:
        if payload["s"] != _scope(resource_type, filter_text):
            raise ScimError(
                "The cursor belongs to another query (resource type or filter).", scim_type="invalidCursor"
            )
        return Cursor(datetime.fromisoformat(payload["c"]), uuid.UUID(payload["i"]), payload["d"])
    except (KeyError, ValueError, TypeError):
        raise ScimError("The cursor is not one this server issued.", scim_type="invalidCursor") from None


@dataclass
class CursorPage:
    rows: list[Any]
    next_cursor: str | None
    previous_cursor: str | None


def page(
    queryset: QuerySet[Any], cursor: Cursor | None, count: int, *, resource_type: str, filter_text: str | None
) -> CursorPage:
    """One page after (or before) `cursor`; None starts at the beginning."""
    backwards = cursor is not None and cursor.direction == "previous"
    if cursor is not None:
        # (created, id) > (c, i), spelled so the planner sees a range on the (created, id) index.
        after = Q(created__gte=cursor.created) & ~Q(created=cursor.created, pk__lte=cursor.id)
        before = Q(created__lte=cursor.created) & ~Q(created=cursor.created, pk__gte=cursor.id)
        queryset = queryset.filter(before if backwards else after)
    order = ("-created", "-id") if backwards else ("created", "id")
    # One row more than asked tells whether another page follows, without a COUNT.
    rows = list(queryset.order_by(*order)[: count + 1])
    more = len(rows) > count
    rows = rows[:count]
    if backwards:
        rows.reverse()

    def token(row: Any, direction: Direction) -> str:
        return encode(row, direction, resource_type=resource_type, filter_text=filter_text)

    if not rows:
        return CursorPage(rows, None, None)
    has_next = more if not backwards else True
    has_previous = (cursor is not None) if not backwards else more
    return CursorPage(
        rows,
        token(rows[-1], "next") if has_next else None,
        token(rows[0], "previous") if has_previous else None,
    )
