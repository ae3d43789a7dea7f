"""The admin's sign-in form: failed attempts are throttled per username and per client address.

Counters live in Django's cache (Redis when REDIS_URL is set, so every web process shares them; one
process's memory otherwise) in fixed windows of ADMIN_LOGIN_WINDOW seconds. Once a username or an
address reaches its limit of failures, further attempts are refused without checking the password
until the window ends, so a guessing attack gets a few tries per window instead of thousands.
A success clears its username's counter, not the address's (one address may hide many people).
Every sign-in, failure and refusal is recorded in the audit trail.
"""

import hashlib
import math
import time
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from directory import services
from directory.actors import Actor


def client_address(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or the address the trusted reverse proxies saw."""
    proxies = settings.ADMIN_LOGIN_TRUSTED_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    if proxies and len(hops) >= proxies:
        # Each trusted proxy appends the address it received from; the ones before are client-made.
        return hops[-proxies]
    return str(request.META.get("REMOTE_ADDR", ""))


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"admin-login:{kind}:{digest}"


class Throttle:
    """Failure counters for one sign-in attempt (a username and an address)."""

    def __init__(self, username: str, address: str) -> None:
        self.keys = {
            "user": (_key("user", username.strip().lower()), settings.ADMIN_LOGIN_MAX_FAILURES_PER_USER),
            "address": (_key("address", address), settings.ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS),
        }

    def blocked_for(self) -> int | None:
        """Seconds until the first exceeded counter's window ends; None when no limit is reached."""
        waits = []
        for key, limit in self.keys.values():
            if (cache.get(key) or 0) >= limit:
                until = cache.get(f"{key}:until") or time.time() + settings.ADMIN_LOGIN_WINDOW
                waits.append(max(1, math.ceil(until - time.time())))
        return max(waits) if waits else None

    def record_failure(self) -> None:
        window = settings.ADMIN_LOGIN_WINDOW
        for key, _ in self.keys.values():
            # add() only sets a missing key: the window starts at the first failure and is not extended.
            cache.add(f"{key}:until", time.time() + window, window)
            cache.add(key, 0, window)
            try:
                cache.incr(key)
            except ValueError:  # expired between add() and incr()
                cache.set(key, 1, window)

    def record_success(self) -> None:
        user_key = self.keys["user"][0]
        cache.delete_many([user_key, f"{user_key}:until"])


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": (
            "Too many failed sign-in attempts for this username or from your address. "
            "Try again in %(minutes)s minute(s)."
        ),
    }

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request) if self.request else ""
        throttle = Throttle(username, address)
        wait = throttle.blocked_for()
        if wait is not None:
            _audit("login_throttled", username, address)
            raise ValidationError(
                self.error_messages["throttled"],
                code="throttled",
                params={"minutes": math.ceil(wait / 60)},
            )
        try:
            data = super().clean()
        except ValidationError:
            if self.user_cache is None:  # a wrong password, not a refused (inactive, non-staff) account
                throttle.record_failure()
            _audit("login_failed", username, address)
            raise
        throttle.record_success()
        _audit("login", username, address, account_id=self.user_cache.pk)
        return data


def _audit(action: str, username: str, address: str, account_id: object = "") -> None:
    services.operator_event_record(
        actor=Actor.operator(id=account_id, name=username[:150]),
        action=action,
        object_type="operator",
        object_key=username[:64],
        object_repr=username[:255],
        changes={"address": address},
    )
