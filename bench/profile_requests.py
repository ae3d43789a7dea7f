"""Where the time of one SCIM request goes: the WSGI app called in-process, profiled.

Loads config.wsgi against the scim_http.py database (DEBUG off, as the HTTP
benchmark runs it), sends N requests of one scenario straight to the WSGI
callable (no server, no sockets), and prints the mean time per request, the
SQL statements per request, and a profile (cProfile by default, or pyinstrument
with --pyinstrument when it is installed). A tool for attribution, not a
measurement: scim_http.py is the benchmark.

    .venv/bin/python bench/profile_requests.py get -n 2000
    .venv/bin/python bench/profile_requests.py patch_user --pyinstrument
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import database_url, ensure_database  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/directory_bench_http"
SCENARIOS = (
    "get",
    "filter",
    "list_first",
    "list_random",
    "post",
    "patch_user",
    "group_get",
    "group_add",
    "discovery",
    "not_found",
)


def _pg_cpu(pid: int) -> float:
    """CPU seconds used so far by the PostgreSQL backend `pid`, when it runs on this machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _callgrind_control(option: str) -> None:
    import subprocess

    subprocess.run(["callgrind_control", option, str(os.getpid())], check=True, capture_output=True)


def _rerun_under_callgrind(*, requests: int) -> None:
    """Run this command again under callgrind, then print its instruction count per request."""
    import re
    import shutil
    import subprocess
    import tempfile

    if shutil.which("valgrind") is None:
        raise SystemExit("bench: --instructions needs valgrind (apt-get install valgrind)")
    out = Path(tempfile.mkdtemp(prefix="profile-requests-")) / "callgrind.out"
    argv = [sys.executable, *sys.argv]
    if "--no-profile" not in argv:
        argv.append("--no-profile")
    env = dict(os.environ, CALLGRIND_OUT=str(out), PYTHONHASHSEED="0")
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *argv]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if not line.startswith("  CPU ms per request")]
    print("\n".join(lines))
    if result.returncode != 0:
        raise SystemExit(f"bench: the run under valgrind failed:\n{result.stderr[-2000:]}")
    totals = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
    if totals is None:
        raise SystemExit(f"bench: no instruction count in {out}")
    per_request = int(totals.group(1)) / requests
    print(f"instructions per request: {per_request / 1e6:.3f} million (callgrind, this process only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("-n", type=int, default=1000, help="requests to profile (default 1000)")
    parser.add_argument("--pyinstrument", action="store_true", help="profile with pyinstrument")
    parser.add_argument("--no-profile", action="store_true", help="only time the requests")
    parser.add_argument("--top", type=int, default=45, help="cProfile rows to print")
    parser.add_argument("--dump", metavar="FILE", help="save the cProfile statistics to FILE")
    parser.add_argument(
        "--plans", action="store_true", help="list the connection's prepared statements and their plan kinds"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the CPU instructions per request under valgrind's callgrind (steady where time is not)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds of N requests with --no-profile")
    parser.add_argument(
        "--client",
        default="bench-profile",
        help="SCIM client to profile as; each run rotates its token, so two runs side by side need two",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="LOG_LEVEL (INFO writes the per-request log line to stderr)"
    )
    args = parser.parse_args()
    if args.instructions and "CALLGRIND_OUT" not in os.environ:
        _rerun_under_callgrind(requests=args.n * args.repeat)
        return

    url = database_url(DEFAULT_URL)
    ensure_database(url)
    os.environ.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
        DB_CONN_MAX_AGE="600",
        LOG_LEVEL=args.log_level,
    )
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from config.wsgi import application
    from directory.models import Group, User
    from scim_api.models import ScimClient
    from scim_api.services import scim_client_create, scim_client_rotate

    client = ScimClient.objects.filter(name=args.client).first()
    if client is None:
        client, token = scim_client_create(name=args.client)
    else:
        client, token = scim_client_rotate(client_id=client.pk)
    # Counted by the rate limiter like any client, but never limited.
    ScimClient.objects.filter(pk=client.pk).update(requests_per_minute=1_000_000_000)
    users = list(
        User.objects.filter(user_name__regex=r"^bench-[0-9]+@example\.com$").values_list("pk", "user_name")[
            :5000
        ]
    )
    if not users:
        raise SystemExit("bench: no seeded users; run bench/scim_http.py once first")
    big = Group.objects.filter(display_name="bench-big").values_list("pk", flat=True).first()
    spares = list(User.objects.filter(user_name__startswith="bench-spare-").values_list("pk", flat=True))
    run = secrets.token_hex(4)

    def request(method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        raw = json.dumps(body).encode() if body is not None else b""
        path, _, query = path.partition("?")
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_AUTHORIZATION": f"Bearer {token}",
            "HTTP_ACCEPT": "application/scim+json",
            "wsgi.input": io.BytesIO(raw),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        if body is not None:
            environ["CONTENT_TYPE"] = "application/scim+json"
            environ["CONTENT_LENGTH"] = str(len(raw))
        status: list[str] = []
        chunks = application(environ, lambda s, h, *a: status.append(s))
        content = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        return int(status[0].split()[0]), content

    def make(n: int) -> Callable[[], tuple[int, bytes]]:
        user_id, user_name = users[n % len(users)]
        if args.scenario == "get":
            return lambda: request("GET", f"/scim/v2/Users/{user_id}")
        if args.scenario == "filter":
            return lambda: request("GET", "/scim/v2/Users?filter=" + quote(f'userName eq "{user_name}"'))
        if args.scenario == "list_first":
            return lambda: request("GET", "/scim/v2/Users?startIndex=1&count=100")
        if args.scenario == "list_random":
            return lambda: request("GET", f"/scim/v2/Users?startIndex={(n * 7919) % 99_900 + 1}&count=100")
        if args.scenario == "post":
            name = f"bench-post-{run}-{n}@example.com"
            body = {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": name,
                "displayName": f"Bench Post {n}",
                "name": {"givenName": "Bench", "familyName": "Post"},
                "emails": [{"value": name, "type": "work", "primary": True}],
                "active": True,
            }
            return lambda: request("POST", "/scim/v2/Users", body)
        if args.scenario == "patch_user":
            body = {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "title", "value": f"{run}-{n}"}],
            }
            return lambda: request("PATCH", f"/scim/v2/Users/{user_id}", body)
        if args.scenario == "discovery":  # no token, no database: the framework's own cost
            return lambda: request("GET", "/scim/v2/ResourceTypes/User")
        if args.scenario == "not_found":  # a plain Django view under /scim/v2/
            return lambda: request("GET", "/scim/v2/Nothing")
        if args.scenario == "group_get":
            return lambda: request("GET", f"/scim/v2/Groups/{big}?excludedAttributes=members")
        body = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": str(spares[n])}]}],
        }
        return lambda: request("PATCH", f"/scim/v2/Groups/{big}", body)

    # Warm up (URL resolver, registry, connection), and count one request's statements.
    for n in range(20):
        status, content = make(n)()
        if status >= 300 and args.scenario != "not_found":
            raise SystemExit(f"bench: {args.scenario} answered {status}: {content[:300]!r}")
    with CaptureQueriesContext(connection) as queries:
        make(20)()
    print(f"{args.scenario}: {len(queries.captured_queries)} SQL statements per request")
    for query in queries.captured_queries:
        print(f"  {query['time']}s  {query['sql'][:160]}")

    calls = [make(21 + n) for n in range(args.n * (1 if not args.no_profile else args.repeat))]
    profiler: Any = None
    if not args.no_profile:
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002)
            profiler.start()
        else:
            profiler = cProfile.Profile()
            profiler.enable()
    # Without a profiler, `--repeat` rounds of N requests; the least CPU per request of a
    # round is the figure least disturbed by whatever else runs on the machine.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    if args.instructions:
        # callgrind counts nothing until told to: only the requests below, not start-up and warm-up.
        _callgrind_control("--instr=on")
    rounds = []
    for start in range(0, len(calls), args.n):
        started, cpu_started, pg_started = time.perf_counter(), time.process_time(), _pg_cpu(backend)
        for call in calls[start : start + args.n]:
            call()
        rounds.append(
            (time.perf_counter() - started, time.process_time() - cpu_started, _pg_cpu(backend) - pg_started)
        )
    if args.instructions:
        _callgrind_control("--instr=off")
    if profiler is not None:
        profiler.stop() if args.pyinstrument else profiler.disable()
    walls = sorted(wall / args.n * 1000 for wall, _, _ in rounds)
    cpus = sorted(cpu / args.n * 1000 for _, cpu, _ in rounds)
    pg = sorted(pg / args.n * 1000 for _, _, pg in rounds)
    print(
        f"{args.n} requests x {len(rounds)}: {walls[0]:.3f} ms wall, {cpus[0]:.3f} ms CPU of this process "
        f"per request (least of {len(rounds)}; CPU median {cpus[len(cpus) // 2]:.3f}); PostgreSQL backend "
        f"CPU {pg[len(pg) // 2]:.3f} ms (median; when /proc shows it)"
        + (" (profiled: slower than real)" if profiler else "")
    )
    print(
        "  CPU ms per request by round, in order: "
        + " ".join(f"{cpu / args.n * 1000:.3f}" for _, cpu, _ in rounds)
    )
    if args.plans:
        # A statement PostgreSQL keeps planning anew (custom plans only) costs it a plan per request.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT generic_plans, custom_plans, left(statement, 110) FROM pg_prepared_statements "
                "ORDER BY generic_plans + custom_plans DESC"
            )
            for generic, custom, statement in cursor.fetchall():
                print(f"  prepared: {generic} generic, {custom} custom plans  {statement}")
    if args.scenario in ("group_add",) and big is not None:
        from directory import services
        from directory.actors import Actor

        services.membership_remove(actor=Actor.system("bench"), group_id=big, user_ids=spares)
    if args.scenario == "post":
        User.objects.filter(user_name__startswith="bench-post-").delete()
    if profiler is None:
        return
    if args.pyinstrument:
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        return
    if args.dump:
        profiler.dump_stats(args.dump)
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
