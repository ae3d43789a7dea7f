"""Every SCIM failure as an RFC 7644 §3.12 Error body: status as a string, scimType, a useful detail.

Domain errors from directory services, parse errors from the filter and PATCH
layers, DRF's own errors, and anything unexpected all end here, so no client
ever sees an HTML page or a stack trace.
"""

import logging
import math
from http import HTTPStatus
from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf
from rest_framework.response import Response

from directory import exceptions as domain
from observability import metrics
from scim_api.schema import ERROR

logger = logging.getLogger(__name__)

SCIM_CONTENT_TYPE = "application/scim+json"
WWW_AUTHENTICATE = 'Bearer realm="scim"'


class ScimError(Exception):
    """An error with an explicit SCIM status and scimType, raised by the API layer."""

    def __init__(
        self,
        detail: str,
        *,
        status: int = 400,
        scim_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.scim_type = scim_type
        self.headers = headers or {}


def error_body(status: int, detail: str, scim_type: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [ERROR], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return body


def error_response(status: int, detail: str, scim_type: str | None = None, **headers: str) -> Response:
    metrics.scim_error_count(status=status, scim_type=scim_type)
    response = Response(error_body(status, detail, scim_type), status=status, content_type=SCIM_CONTENT_TYPE)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def scim_error_for(exc: Exception) -> ScimError | None:
    """The SCIM error an exception stands for, or None for an unexpected one."""
    return _from_exception(exc)


def _from_exception(exc: Exception) -> ScimError | None:
    # Imported here: these modules import the registry, which must not load during app setup.
    from scim_api.filter_parser import FilterSyntaxError
    from scim_api.filters import InvalidFilter
    from scim_api.patch import PatchError
    from scim_api.sorting import InvalidSort

    match exc:
        case ScimError():
            return exc
        case RequestDataTooBig():
            return ScimError("The request body is too large.", status=413)
        case TooManyFieldsSent() | TooManyFilesSent():
            return ScimError("The request has too many parameters.", scim_type="invalidSyntax")
        case domain.ObjectNotFound():
            return ScimError(str(exc), status=404)
        case domain.UniquenessConflict():
            return ScimError(str(exc), status=409, scim_type="uniqueness")
        case domain.VersionMismatch():
            return ScimError(str(exc), status=412)
        case domain.InvalidValue():
            return ScimError(str(exc), scim_type="invalidValue")
        case InvalidFilter() | FilterSyntaxError():
            return ScimError(str(exc), scim_type="invalidFilter")
        case InvalidSort():
            return ScimError(str(exc), scim_type="invalidValue")
        case PatchError():
            return ScimError(exc.detail, scim_type=exc.scim_type)
        case drf.ParseError():
            return ScimError(f"The request body is not valid JSON: {exc.detail}", scim_type="invalidSyntax")
        case drf.NotAuthenticated() | drf.AuthenticationFailed():
            return ScimError(str(exc.detail), status=401, headers={"WWW-Authenticate": WWW_AUTHENTICATE})
        case drf.PermissionDenied():
            return ScimError(str(exc.detail), status=403)
        case drf.NotFound() | Http404():
            return ScimError("Resource not found", status=404)
        case drf.MethodNotAllowed():
            return ScimError(str(exc.detail), status=405)
        case drf.UnsupportedMediaType():
            return ScimError(f"{exc.detail} Send application/scim+json or application/json.", status=415)
        case drf.NotAcceptable():
            return ScimError(str(exc.detail), status=406)
        case drf.Throttled():
            wait = max(1, math.ceil(exc.wait or 1))
            return ScimError(str(exc.detail), status=429, headers={"Retry-After": str(wait)})
        case drf.APIException():
            return ScimError(str(exc.detail), status=exc.status_code)
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER for the SCIM views."""
    error = _from_exception(exc)
    if error is None:
        logger.exception("Unexpected error in a SCIM request", exc_info=exc)
        error = ScimError("The server failed to process the request.", status=500)
    response = error_response(error.status, error.detail, error.scim_type)
    for name, value in error.headers.items():
        response[name] = value
    return response


@csrf_exempt  # SCIM clients send no CSRF token: a POST to an unknown URL must still get a SCIM 404.
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown URLs under /scim/v2/ answer a SCIM 404, not Django's HTML page."""
    metrics.scim_error_count(status=HTTPStatus.NOT_FOUND, scim_type=None)
    return JsonResponse(
        error_body(HTTPStatus.NOT_FOUND, f"No SCIM endpoint at {request.path}"),
        status=HTTPStatus.NOT_FOUND,
        content_type=SCIM_CONTENT_TYPE,
    )
