"""Lazy access to the SCIM_API settings block, with defaults (read per call, never at import)."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Index pagination: the page size when `count` is absent, and the largest page served.
    "DEFAULT_PAGE_SIZE": 100,
    "MAX_PAGE_SIZE": 1000,
    # PATCH responses: users answer 200 with the resource (what Microsoft's validator
    # expects), groups 204 (what Entra recommends: a group may have 100k members).
    # A request with `attributes` always gets 200 with the resource.
    "USER_PATCH_RETURNS_RESOURCE": True,
    "GROUP_PATCH_RETURNS_RESOURCE": False,
    # Requests per minute per SCIM client unless its own limit says otherwise; 0 means no limit.
    "RATE_LIMIT_PER_MINUTE": 6000,
    # /Bulk limits, advertised in /ServiceProviderConfig; larger requests get 413.
    "BULK_MAX_OPERATIONS": 1000,
    "BULK_MAX_PAYLOAD_SIZE": 1_048_576,
    # Seconds a cursor (RFC 9865) stays valid after it is issued.
    "CURSOR_TIMEOUT": 3600,
    # How long a process trusts a token it has just checked (seconds); 0 checks every request.
    "TOKEN_CACHE_SECONDS": 5,
    # A client's `last_used` is written at most this often (seconds).
    "LAST_USED_RESOLUTION": 60,
    # Inbound provisioning (/bulkUpload): operations and bytes per request (a source may set its own
    # operation limit), records a worker applies per transaction, how long a worker owns a job
    # before another may resume it, and how long finished jobs are kept.
    "INBOUND_MAX_OPERATIONS": 1000,
    "INBOUND_MAX_PAYLOAD_SIZE": 5 * 1_048_576,
    "INBOUND_CHUNK_SIZE": 500,
    "INBOUND_LEASE_SECONDS": 300,
    # Jobs of one source applied at once (by different workers), when they name no person in common.
    "INBOUND_SOURCE_CONCURRENCY": 2,
    "INBOUND_JOB_RETENTION_DAYS": 30,
}


def scim_setting(name: str) -> Any:
    if name not in DEFAULTS:
        raise KeyError(f"Unknown SCIM_API setting {name!r}")
    return getattr(settings, "SCIM_API", {}).get(name, DEFAULTS[name])
