"""Clients authenticated in this process in the last few seconds, keyed by token hash."""

import time
from typing import Any

from scim_api.conf import scim_setting


class RecentClients:
    """What tokens checked in this process in the last few seconds resolved to, by token hash.

    Saves the lookup query on the busy path (a provisioning cycle sends many
    requests a second). Revoking or rotating a token clears this process's cache
    at once; other processes notice within TOKEN_CACHE_SECONDS (0 turns the cache off).
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Any]] = {}

    def get(self, digest: str) -> Any:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, client: Any) -> None:
        ttl = scim_setting("TOKEN_CACHE_SECONDS")
        if ttl <= 0:
            return
        if len(self._entries) > 1000:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + ttl, client)

    def clear(self) -> None:
        self._entries.clear()


recent_clients = RecentClients()
