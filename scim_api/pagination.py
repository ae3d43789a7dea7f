"""Index pagination (RFC 7644 §3.4.2.4): 1-based startIndex, count clamped to the server's maximum."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scim_api.conf import scim_setting
from scim_api.exceptions import ScimError

MAX_START_INDEX = 2**53


def _integer(params: dict[str, Any], name: str, default: int) -> int:
    raw = params.get(name.lower())
    if raw is None or raw == "":
        return default
    # JSON bodies (a SearchRequest) may hold 2.5, true or 1e400 (infinity); only whole numbers are counts.
    if isinstance(raw, bool) or (isinstance(raw, float) and not (math.isfinite(raw) and raw.is_integer())):
        raise ScimError(f"{name} must be an integer, got {raw!r}", scim_type="invalidValue")
    try:
        return int(raw)
    except (TypeError, ValueError, OverflowError):
        raise ScimError(f"{name} must be an integer, got {raw!r}", scim_type="invalidValue") from None


@dataclass(frozen=True)
class Page:
    start_index: int
    count: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Page:
        # §3.4.2.4: a startIndex below 1 reads as 1, a negative count as 0, a count over the maximum as it.
        # Clamped far beyond any directory's size, so the offset always fits the database's integers.
        start = min(max(1, _integer(params, "startIndex", 1)), MAX_START_INDEX)
        count = _integer(params, "count", scim_setting("DEFAULT_PAGE_SIZE"))
        return cls(start_index=start, count=min(max(0, count), scim_setting("MAX_PAGE_SIZE")))

    @property
    def offset(self) -> int:
        return self.start_index - 1
