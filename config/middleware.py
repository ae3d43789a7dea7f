"""Browser-only middleware, left out of the machine-to-machine APIs.

Sessions, CSRF, the Django user and flash messages serve the admin. SCIM and
OAuth clients authenticate with bearer tokens on every request, their views are
CSRF-exempt, and they never see a session or a message; running those four
middleware anyway cost a SCIM request about 0.06 ms of CPU, a tenth of a simple
read. Each class below is the Django middleware, unchanged for every other path.
"""

from collections.abc import Callable
from typing import Any

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

# The health probes too: no cookie, no session, nothing but the check.
API_PREFIXES = ("/scim/", "/oauth/", "/healthz", "/readyz")

GetResponse = Callable[[HttpRequest], HttpResponse]


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIXES)


class _BrowserOnly:
    """Mixed into a Django middleware (the admin's checks look for subclasses of the real ones)."""

    get_response: GetResponse

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _is_api(request):
            return self.get_response(request)
        return super().__call__(request)  # type: ignore[misc, no-any-return]


class BrowserSessionMiddleware(_BrowserOnly, SessionMiddleware):
    pass


class BrowserCsrfViewMiddleware(_BrowserOnly, CsrfViewMiddleware):
    def process_view(
        self, request: HttpRequest, callback: Callable[..., Any], callback_args: Any, callback_kwargs: Any
    ) -> HttpResponse | None:
        if _is_api(request):
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)


class BrowserAuthenticationMiddleware(_BrowserOnly, AuthenticationMiddleware):
    pass


class BrowserMessageMiddleware(_BrowserOnly, MessageMiddleware):
    pass
