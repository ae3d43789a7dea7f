"""POST /oauth/token: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4) for SCIM clients.

Client authentication by HTTP Basic (preferred, §2.3.1) or client_id and
client_secret in the form body. Errors follow §5.2, not SCIM, since OAuth
clients parse them.
"""

import base64
from urllib.parse import unquote_plus

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from scim_api.services import OAuthError, access_token_issue


def _error(exc: OAuthError) -> JsonResponse:
    response = JsonResponse({"error": exc.error, "error_description": exc.description}, status=exc.status)
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Basic realm="oauth"'
    response["Cache-Control"] = "no-store"
    return response


def _client_credentials(request: HttpRequest) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except ValueError:  # not base64, not ASCII, or not UTF-8 once decoded
            raise OAuthError("invalid_client", "Malformed Basic credentials.", status=401) from None
        public_id, _, secret = decoded.partition(":")
        return unquote_plus(public_id), unquote_plus(secret)
    public_id, secret = request.POST.get("client_id", ""), request.POST.get("client_secret", "")
    if not public_id or not secret:
        raise OAuthError("invalid_client", "Send client_id and client_secret (or HTTP Basic).", status=401)
    return public_id, secret


@csrf_exempt
@require_POST
def token(request: HttpRequest) -> JsonResponse:
    try:
        if request.content_type != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "Send the form as application/x-www-form-urlencoded.")
        if request.POST.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "Only grant_type=client_credentials is supported.")
        public_id, secret = _client_credentials(request)
        issued, access = access_token_issue(
            public_id=public_id, secret=secret, scope=request.POST.get("scope") or None
        )
    except OAuthError as exc:
        return _error(exc)
    lifetime = int((access.expires - access.created).total_seconds())
    response = JsonResponse(
        {"access_token": issued, "token_type": "Bearer", "expires_in": lifetime, "scope": access.scope}
    )
    response["Cache-Control"] = "no-store"
    return response
