"""POST /Bulk (RFC 7644 §3.7): many operations in one request, each run as the request it stands for.

Each operation is dispatched through the same URLconf and views as a single
request (same authentication, dialects, validation, errors), so Bulk cannot
drift from the rest of the API. It commits on its own; `failOnErrors` stops
processing after that many failures. `"bulkId:<id>"` anywhere in an
operation's path or data is replaced by the id the operation with that bulkId
created, so operations run in dependency order; a reference to an unknown
bulkId, to one that failed, or a cycle of references fails the operation with
a clear error instead.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.core.handlers.wsgi import WSGIRequest
from django.urls import Resolver404, resolve
from rest_framework.request import Request
from rest_framework.response import Response

from directory import services
from directory.actors import Actor
from directory.exceptions import UniquenessConflict
from directory.models import User
from directory.services import NewUser
from observability import metrics
from scim_api import dialects, mapping
from scim_api.conf import scim_setting
from scim_api.exceptions import SCIM_CONTENT_TYPE, ScimError, error_body, scim_error_for
from scim_api.schema import USER
from scim_api.services import dialect_rewrites_record

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
_REFERENCE = re.compile(r"bulkId:([A-Za-z0-9._~\-]+)")
_METHODS = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Operation:
    index: int
    method: str
    path: str
    bulk_id: str | None
    data: Any
    version: str | None
    needs: set[str] = field(default_factory=set)


def _references(value: Any) -> set[str]:
    return set(_REFERENCE.findall(json.dumps(value))) if value is not None else set()


def _substitute(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _REFERENCE.sub(lambda match: ids[match.group(1)], value)
    if isinstance(value, list):
        return [_substitute(item, ids) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, ids) for key, item in value.items()}
    return value


def parse(body: Any) -> tuple[list[Operation], int | None]:
    """The operations of a BulkRequest and its failOnErrors, validated; ScimError on a malformed request."""
    if not isinstance(body, dict):
        raise ScimError("The request body must be a JSON object.", scim_type="invalidSyntax")
    keys = {key.lower(): value for key, value in body.items()}
    schemas = keys.get("schemas")
    if not isinstance(schemas, list) or BULK_REQUEST not in schemas:
        raise ScimError(f"A bulk request's schemas must list {BULK_REQUEST}.", scim_type="invalidSyntax")
    fail_on_errors = keys.get("failonerrors")
    if fail_on_errors is not None and (
        isinstance(fail_on_errors, bool) or not isinstance(fail_on_errors, int) or fail_on_errors < 1
    ):
        raise ScimError("failOnErrors must be a positive integer.", scim_type="invalidValue")
    raw = keys.get("operations")
    if not isinstance(raw, list) or not raw:
        raise ScimError('"Operations" must be a non-empty list.', scim_type="invalidSyntax")
    if len(raw) > scim_setting("BULK_MAX_OPERATIONS"):
        raise ScimError(
            f"A bulk request may carry at most {scim_setting('BULK_MAX_OPERATIONS')} operations.", status=413
        )
    operations = [_operation(index, item) for index, item in enumerate(raw)]
    seen: set[str] = set()
    for operation in operations:
        if operation.bulk_id is not None:
            if operation.bulk_id in seen:
                raise ScimError(f"bulkId {operation.bulk_id!r} is used twice.", scim_type="invalidValue")
            seen.add(operation.bulk_id)
    return operations, fail_on_errors


def _operation(index: int, item: Any) -> Operation:
    if not isinstance(item, dict):
        raise ScimError(f"Operation {index + 1} must be an object.", scim_type="invalidSyntax")
    keys = {key.lower(): value for key, value in item.items()}
    method = keys.get("method")
    path = keys.get("path")
    if not isinstance(method, str) or method.upper() not in _METHODS:
        raise ScimError(
            f"Operation {index + 1}: method must be one of {', '.join(_METHODS)}.", scim_type="invalidSyntax"
        )
    if not isinstance(path, str) or not path.startswith("/"):
        raise ScimError(
            f"Operation {index + 1}: path must be a resource path such as /Users.", scim_type="invalidSyntax"
        )
    bulk_id = keys.get("bulkid")
    if bulk_id is not None and (
        not isinstance(bulk_id, str) or not _REFERENCE.fullmatch(f"bulkId:{bulk_id}")
    ):
        raise ScimError(f"Operation {index + 1}: bulkId must be a short token.", scim_type="invalidValue")
    if method.upper() == "POST" and bulk_id is None:
        raise ScimError(f"Operation {index + 1}: a POST needs a bulkId.", scim_type="invalidValue")
    version = keys.get("version")
    data = keys.get("data")
    operation = Operation(
        index, method.upper(), path, bulk_id, data, version if isinstance(version, str) else None
    )
    operation.needs = _references(path) | _references(data)
    return operation


def _is_plain_user_create(operation: Operation) -> bool:
    return (
        operation.method == "POST" and operation.path.rstrip("/").lower() == "/users" and not operation.needs
    )


def run(request: Request, operations: list[Operation], fail_on_errors: int | None) -> Response:
    """Run the operations in dependency order; answer with each one's outcome, in request order.

    Consecutive plain user creates (the HR-ingest case) go through one batched
    service call instead of a request each, unless failOnErrors asks to stop
    at an exact operation.
    """
    ids: dict[str, str] = {}
    failed: set[str] = set()
    results: dict[int, dict[str, Any]] = {}
    errors = 0
    known = {op.bulk_id for op in operations}
    pending = list(operations)
    while pending:
        ready = [op for op in pending if op.needs <= ids.keys() or op.needs & failed]
        if not ready:
            # Everything left waits on something else left (an unknown bulkId or a cycle): fail the
            # first, then look again, so whatever waited on it fails for that reason.
            ready = pending[:1]
        for run_of_ops in _runs(ready, batch=fail_on_errors is None):
            for operation in run_of_ops:
                pending.remove(operation)
            if len(run_of_ops) > 1:
                outcomes = _create_users(request, run_of_ops, ids)
            else:
                outcomes = [_outcome(request, run_of_ops[0], ids, failed, known=known)]
            stop = False
            for operation, result in zip(run_of_ops, outcomes, strict=True):
                results[operation.index] = result
                if int(result["status"]) >= 400:
                    errors += 1
                    if operation.bulk_id:
                        failed.add(operation.bulk_id)
                    if fail_on_errors is not None and errors >= fail_on_errors:
                        stop = True
            if stop:
                pending = []
                break
    body = {"schemas": [BULK_RESPONSE], "Operations": [results[index] for index in sorted(results)]}
    return Response(body, content_type=SCIM_CONTENT_TYPE)


def _runs(ready: list[Operation], *, batch: bool) -> list[list[Operation]]:
    """`ready` in order, with consecutive plain user creates grouped (when batching is allowed)."""
    runs: list[list[Operation]] = []
    for operation in ready:
        if batch and _is_plain_user_create(operation) and runs and _is_plain_user_create(runs[-1][-1]):
            runs[-1].append(operation)
        else:
            runs.append([operation])
    return runs


def _create_users(request: Request, operations: list[Operation], ids: dict[str, str]) -> list[dict[str, Any]]:
    """Plain POST /Users operations through services.users_create_many: a few statements for the lot."""
    client = request.user
    actor = Actor.scim_client(id=client.pk, name=client.name)
    outcomes: list[dict[str, Any] | None] = [None] * len(operations)
    items: list[tuple[int, NewUser]] = []
    for position, operation in enumerate(operations):
        try:
            normalized = dialects.normalize_resource(operation.data, USER, method="POST")
            if normalized.fired:
                dialect_rewrites_record(client=client, names=normalized.fired)
            data = mapping.user_from_scim(normalized.body, mode="create")
        except Exception as exc:  # noqa: BLE001 - each becomes that operation's SCIM error, or re-raised
            outcomes[position] = _failure(operation, exc)
            continue
        fields = dict(data.fields)
        user_name = fields.pop("user_name", "")
        items.append((position, NewUser(user_name, data.password, data.values, fields)))
    try:
        created = services.users_create_many(actor=actor, users=[item for _, item in items])
    except UniquenessConflict:
        # Someone took a userName between the check and the insert: go one by one instead.
        return [_outcome(request, operation, ids, set(), known=set()) for operation in operations]
    base = request.build_absolute_uri("/scim/v2").rstrip("/")
    for (position, _), result in zip(items, created, strict=True):
        operation = operations[position]
        if isinstance(result, User):
            ids[operation.bulk_id or ""] = str(result.pk)
            outcomes[position] = {
                "method": "POST",
                "bulkId": operation.bulk_id,
                "location": mapping.location(base, USER, result.pk),
                "version": mapping.etag(result.version),
                "status": "201",
            }
        else:
            outcomes[position] = _failure(operation, result)
    return [outcome for outcome in outcomes if outcome is not None]


def _failure(operation: Operation, exc: Exception) -> dict[str, Any]:
    error = scim_error_for(exc)
    if error is None:
        raise exc
    result: dict[str, Any] = {"method": operation.method}
    if operation.bulk_id:
        result["bulkId"] = operation.bulk_id
    metrics.scim_error_count(status=error.status, scim_type=error.scim_type)
    return {
        **result,
        "status": str(error.status),
        "response": error_body(error.status, error.detail, error.scim_type),
    }


def _outcome(
    request: Request, operation: Operation, ids: dict[str, str], failed: set[str], known: set[str | None]
) -> dict[str, Any]:
    result: dict[str, Any] = {"method": operation.method}
    if operation.bulk_id:
        result["bulkId"] = operation.bulk_id
    missing = operation.needs - ids.keys()
    if missing:
        names = ", ".join(sorted(missing))
        if missing & failed:
            detail = f"bulkId {names} failed, so this operation cannot refer to it."
        elif missing - {b for b in known if b}:
            detail = f"bulkId {names} is not defined in this request."
        else:
            detail = f"bulkId {names} refers back to this operation (a circular reference)."
        metrics.scim_error_count(status=409, scim_type="invalidValue")
        return {**result, "status": "409", "response": error_body(409, detail, "invalidValue")}
    status, body, headers = _dispatch(
        request,
        operation.method,
        _substitute(operation.path, ids),
        _substitute(operation.data, ids),
        operation.version,
    )
    result["status"] = str(status)
    if "Location" in headers:
        result["location"] = headers["Location"]
    elif status < 400 and operation.method != "DELETE":
        result["location"] = request.build_absolute_uri(f"/scim/v2{_substitute(operation.path, ids)}")
    if "ETag" in headers:
        result["version"] = headers["ETag"]
    if status >= 400:
        result["response"] = body
    elif operation.method == "POST" and operation.bulk_id and isinstance(body, dict) and "id" in body:
        ids[operation.bulk_id] = str(body["id"])
    return result


def _dispatch(
    request: Request, method: str, path: str, data: Any, version: str | None
) -> tuple[int, Any, dict[str, str]]:
    """Run one operation through the SCIM URLconf as its own request, with the caller's credentials."""
    raw = json.dumps(data).encode() if data is not None else b""
    environ = {
        **{
            key: value for key, value in request.META.items() if key.startswith(("HTTP_", "SERVER_", "wsgi."))
        },
        "REQUEST_METHOD": method,
        "PATH_INFO": f"/scim/v2{path}",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/scim+json",
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
    }
    environ.pop("HTTP_IF_MATCH", None)
    environ.pop("HTTP_CONTENT_LENGTH", None)
    if version:
        environ["HTTP_IF_MATCH"] = version
    sub_request = WSGIRequest(environ)
    try:
        match = resolve(sub_request.path_info)
    except Resolver404:
        return 404, error_body(404, f"No SCIM endpoint at {path}"), {}
    if match.url_name in ("bulk", "search", "not-found") or match.url_name is None:
        return 400, error_body(400, f"{path} cannot be used inside a bulk request", "invalidPath"), {}
    response = match.func(sub_request, *match.args, **match.kwargs)
    body = getattr(response, "data", None)
    headers = {name: response[name] for name in ("Location", "ETag") if response.has_header(name)}
    return response.status_code, body, headers
