"""The floor for bench/scim_http.py: the least a Python WSGI server can do to answer "GET one user".

No Django, no framework: one psycopg connection per worker process and the
same primary-key lookup that GET /scim/v2/Users/{id} needs at minimum. Served
by the same gunicorn settings under the same load, its req/s is what the
server, the HTTP handling and one database round trip cost on this machine;
scim_http.py reports every SCIM scenario as a fraction of it.

    FLOOR_DATABASE_URL=postgres://... gunicorn --chdir bench floor_app:application

Routes: GET /users/<uuid> (200 JSON, or 404), anything else 404.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

QUERY = "SELECT id, user_name, display_name FROM directory_user WHERE id = %s"
PREFIX = "/users/"

# One per worker process, opened on the first request: gunicorn forks workers
# after importing this module, and a connection must not be shared across a fork.
_connection: psycopg.Connection[Any] | None = None


def _conn() -> psycopg.Connection[Any]:
    global _connection
    if _connection is None or _connection.closed:
        # Autocommit, like Django's default: a lone SELECT needs no BEGIN/COMMIT round trips.
        _connection = psycopg.connect(os.environ["FLOOR_DATABASE_URL"], autocommit=True)
    return _connection


def _respond(start_response: StartResponse, status: str, body: dict[str, Any]) -> Iterable[bytes]:
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path: str = environ.get("PATH_INFO", "")
    if environ.get("REQUEST_METHOD") != "GET" or not path.startswith(PREFIX):
        return _respond(start_response, "404 Not Found", {"detail": "not found"})
    try:
        user_id = uuid.UUID(path[len(PREFIX) :])
    except ValueError:
        return _respond(start_response, "404 Not Found", {"detail": "not a user id"})
    row = _conn().execute(QUERY, [user_id]).fetchone()
    if row is None:
        return _respond(start_response, "404 Not Found", {"detail": "no such user"})
    return _respond(start_response, "200 OK", {"id": str(row[0]), "userName": row[1], "displayName": row[2]})
