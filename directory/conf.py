"""Lazy access to the DIRECTORY settings block, with defaults."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "CHANGE_EVENT_RETENTION_DAYS": 30,
}


def directory_setting(name: str) -> Any:
    if name not in DEFAULTS:
        raise KeyError(f"Unknown DIRECTORY setting {name!r}")
    return getattr(settings, "DIRECTORY", {}).get(name, DEFAULTS[name])
