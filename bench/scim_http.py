"""Benchmark: SCIM API throughput over HTTP, as a fraction of a no-Django floor, on 100,000 users.

Seeds (once) 100,000 users, a group with all of them as members and a group of
1,000, starts the project under gunicorn (2 sync workers) and a minimal WSGI
app (bench/floor_app.py, one psycopg primary-key lookup) under the same
settings, and drives each with wrk from another process. Every SCIM scenario
is reported as req/s, p50, p99 and its ratio to the floor's req/s, against the
targets of the issue:

    GET /Users/{id}, filter userName eq          >= 0.40x floor
    PATCH a user, POST /Users                    >= 0.25x floor
    PATCH add one member to the 100k group,
    GET the 100k group without members           >= 0.30x floor, and within 1.5x of the 1k group
    list page of 100                             >= 0.03x floor

A measurement, not a test: it exits 0 whatever the figures (2 when it cannot
run). Needs PostgreSQL (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/directory_bench_http), wrk and gunicorn.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, database_url, ensure_database, refuse, setup_django  # noqa: E402

BENCH_DIR = REPO_ROOT / "bench"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/directory_bench_http"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


# Load shape. Two sync workers serve one request each at a time; 4 connections
# keep one request queued behind each busy worker (so neither idles while wrk
# reconnects: sync workers close the connection after every response) without
# a long queue that only inflates latency. Two wrk threads, one per core;
# wrk, gunicorn and PostgreSQL share the 2 cores, which hits floor and
# scenarios alike, so the ratios stay meaningful even if absolutes do not.
THREADS = _env_int("BENCH_THREADS", 2)
CONNECTIONS = _env_int("BENCH_CONNECTIONS", 4)
DURATION_S = _env_int("BENCH_DURATION", 10)
WARMUP_S = _env_int("BENCH_WARMUP", 2)
WORKERS = 2
WRK_TIMEOUT = "10s"
# A scenario compared with another (the 100k group with the 1k group) is
# measured in ROUNDS slices that alternate with its partner's, as
# membership_add.py does, so a burst of background load hits both alike.
# Slices are whole seconds (wrk's unit): 4 x 3 s for the default 10 s.
ROUNDS = 4
# A short floor run between scenarios: each scenario's ratio uses the floors
# just before and after it, so drift in the machine's speed over the run (other
# processes, thermal limits) does not show up as a difference between scenarios.
FLOOR_S = _env_int("BENCH_FLOOR_DURATION", 3)
# wrk reports these many evenly spaced latency quantiles, so rounds can be
# merged into one distribution for p50/p99.
GRID_POINTS = 1000

USER_COUNT = 100_000
SMALL_GROUP_SIZE = 1_000
# Users in no group, one per group PATCH request: a request that re-adds a
# member changes nothing and would flatter the figures. Plenty for a 3 s slice at the
# rates two cores reach; the run is marked invalid if the pool runs out.
SPARE_COUNT = 20_000
BATCH_SIZE = 5_000
SAMPLE_SIZE = 5_000

BIG_GROUP = "bench-big"
SMALL_GROUP = "bench-1k"
CLIENT_NAME = "bench-http"
SEED_REGEX = r"^bench-[0-9]+@example\.com$"
SPARE_PREFIX = "bench-spare-"
POST_PREFIX = "bench-post-"
BENCH_RATE_LIMIT = 1_000_000_000
SCIM_JSON = "application/scim+json"


# --- small helpers --------------------------------------------------------------


def check_tools() -> str:
    """The wrk binary; refuse early, before any slow seeding, when a tool is missing."""
    wrk = shutil.which("wrk")
    if wrk is None:
        refuse("wrk is not installed; on Debian/Ubuntu: apt-get install -y wrk")
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        refuse(
            f"gunicorn is not installed in this environment; run: {sys.executable} -m pip install gunicorn"
        )
    return wrk


# --- seeding ----------------------------------------------------------------------


def seed_users() -> None:
    """USER_COUNT users bench-N@example.com with names and one work email; reused when complete."""
    from django.db import transaction

    from directory.models import Group, User, UserValue

    seeded = User.objects.filter(user_name__regex=SEED_REGEX)
    if seeded.count() == USER_COUNT:
        return
    print(f"Seeding {USER_COUNT:,} users (first run only; about half a minute)")
    started = time.perf_counter()
    # All or nothing, so an interrupted seed never looks like a finished one.
    with transaction.atomic():
        # A partial or differently sized seed: start over, groups included.
        Group.objects.filter(display_name__in=[BIG_GROUP, SMALL_GROUP]).delete()
        seeded.delete()
        for start in range(0, USER_COUNT, BATCH_SIZE):
            users = User.objects.bulk_create(
                [
                    User(
                        user_name=f"bench-{n}@example.com",
                        display_name=f"Bench User {n}",
                        given_name="Bench",
                        family_name=f"User{n}",
                    )
                    for n in range(start, min(start + BATCH_SIZE, USER_COUNT))
                ]
            )
            UserValue.objects.bulk_create(
                [
                    UserValue(user=user, kind="emails", value=user.user_name, type="work", primary=True)
                    for user in users
                ]
            )
    print(f"  users seeded in {time.perf_counter() - started:.1f} s")


def spare_user_ids() -> list[uuid.UUID]:
    """SPARE_COUNT users outside every bench group, in a fixed order; created once."""
    from directory.models import User

    names = [f"{SPARE_PREFIX}{n}@example.com" for n in range(SPARE_COUNT)]
    existing = set(
        User.objects.filter(user_name__startswith=SPARE_PREFIX).values_list("user_name", flat=True)
    )
    missing = [name for name in names if name not in existing]
    if missing:
        print(f"Creating {len(missing):,} spare users")
        User.objects.bulk_create([User(user_name=name) for name in missing], batch_size=BATCH_SIZE)
    by_name = dict(User.objects.filter(user_name__startswith=SPARE_PREFIX).values_list("user_name", "pk"))
    return [by_name[name] for name in names]


def remove_spares(group_id: uuid.UUID, spares: Sequence[uuid.UUID]) -> int:
    """Take spare users back out of a group, through the service as the API would, so runs start equal."""
    from directory import services
    from directory.actors import Actor

    return services.membership_remove(actor=Actor.system("bench"), group_id=group_id, user_ids=spares).count


def delete_posted_users() -> None:
    # Users created by POST scenarios; removed so the directory stays at its
    # seeded size and the next run sees the same data.
    from directory.models import User

    User.objects.filter(user_name__startswith=POST_PREFIX).delete()


def seed_group(name: str, size: int) -> uuid.UUID:
    """A group whose members are exactly seed users 0..size-1; rebuilt when it is not."""
    from django.db import transaction

    from directory.models import Group, Membership, User

    group = Group.objects.filter(display_name=name).first()
    if group is not None and Membership.objects.filter(group=group).count() == size:
        return group.pk
    print(f"Seeding group {name} with {size:,} members")
    started = time.perf_counter()
    with transaction.atomic():
        if group is not None:
            group.delete()
        group = Group.objects.create(display_name=name, description="scim_http.py benchmark group")
        member_ids = (
            User.objects.filter(user_name__regex=SEED_REGEX)
            .order_by("created", "id")
            .values_list("pk", flat=True)[:size]
        )
        Membership.objects.bulk_create(
            [Membership(group=group, member_user_id=user_id) for user_id in member_ids],
            batch_size=BATCH_SIZE,
        )
    print(f"  group seeded in {time.perf_counter() - started:.1f} s")
    return group.pk


def vacuum_analyze() -> None:
    """Every run starts from the tables as freshly seeded: compact, with current statistics.

    Every run rewrites the bench groups' rows thousands of times (each member PATCH
    bumps the version) and thousands of users (PATCH, POST then delete); without
    VACUUM their dead versions pile up across runs and each lookup of a group by id
    wades through them (10 ms instead of 2.7 ms for a page of 100 users, measured).
    Plain VACUUM (what autovacuum does) frees the dead rows but leaves the indexes
    as large as the churn made them: measured after a few runs and some profiling,
    the userName index had grown from about 10 to 24 MB and a page of 100 users
    ran at 125 req/s instead of 181. VACUUM FULL rewrites each table and its
    indexes (a few seconds), so runs measure the code, not the bench database's past;
    a plain VACUUM after it marks the pages all-visible again (VACUUM FULL does not),
    which index-only scans (COUNT, deep pages) need to skip the table.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("directory_user", "directory_uservalue", "directory_group", "directory_membership"):
            cursor.execute(f"VACUUM FULL {table}")
            cursor.execute(f"VACUUM ANALYZE {table}")


def issue_token() -> str:
    """A fresh write-scope token for the bench client (rotated each run: tokens are stored only hashed)."""
    from scim_api.models import ScimClient
    from scim_api.services import scim_client_create, scim_client_rotate

    client = ScimClient.objects.filter(name=CLIENT_NAME).first()
    if client is None:
        client, token = scim_client_create(name=CLIENT_NAME, description="bench/scim_http.py")
    else:
        client, token = scim_client_rotate(client_id=client.pk)
    # The rate limiter stays on and counts every request, as in production, but with a
    # limit no run reaches: the default (6,000 a minute) would answer 429 within seconds.
    ScimClient.objects.filter(pk=client.pk).update(requests_per_minute=BENCH_RATE_LIMIT)
    return token


@dataclass(frozen=True)
class Dataset:
    big_group: uuid.UUID
    small_group: uuid.UUID
    spares: list[uuid.UUID]
    sample_ids: list[uuid.UUID]
    sample_names: list[str]
    token: str


def prepare() -> Dataset:
    from directory.models import Group, User

    started = time.perf_counter()
    seed_users()
    spares = spare_user_ids()
    delete_posted_users()
    # Spares an interrupted run left in a group would make it look wrongly
    # sized, and rebuilding the 100k group costs far more than removing them.
    for group_id in Group.objects.filter(display_name__in=[BIG_GROUP, SMALL_GROUP]).values_list(
        "pk", flat=True
    ):
        remove_spares(group_id, spares)
    big = seed_group(BIG_GROUP, USER_COUNT)
    small = seed_group(SMALL_GROUP, SMALL_GROUP_SIZE)
    vacuum_analyze()
    # A fixed sample, so runs request the same users; spread over the whole table.
    rng = random.Random(7)
    names = [f"bench-{n}@example.com" for n in rng.sample(range(USER_COUNT), SAMPLE_SIZE)]
    by_name = dict(User.objects.filter(user_name__in=names).values_list("user_name", "pk"))
    print(f"Data ready in {time.perf_counter() - started:.1f} s")
    return Dataset(
        big_group=big,
        small_group=small,
        spares=spares,
        sample_ids=[by_name[name] for name in names],
        sample_names=names,
        token=issue_token(),
    )


# --- servers ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # gunicorn: graceful shutdown on SIGTERM
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    name: str, app: str, env: dict[str, str], workdir: Path, logdir: Path, *, workers: int = WORKERS
) -> Server:
    port = free_port()
    log = logdir / f"gunicorn-{name}.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        app,
        "--chdir",
        str(workdir),
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        "--bind",
        f"127.0.0.1:{port}",
        "--timeout",
        "120",
        "--log-level",
        "warning",
    ]
    # gunicorn's error log and Django's console logging both go to stderr: into
    # one file, shown when a server fails, instead of through the report.
    # Started from the log folder, not the project: gunicorn reads ./gunicorn.conf.py
    # from where it starts, and the production one (a worker recycled every
    # GUNICORN_MAX_REQUESTS requests, an access log) is not what is measured here.
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=logdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    return Server(name=name, port=port, process=process, log=log)


def wait_ready(server: Server, path: str, headers: dict[str, str], timeout_s: float = 60) -> None:
    """Until `path` answers 200 from a worker (both workers load the app before the first accept)."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} server exited early:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(
                urllib.request.Request(server.base + path, headers=headers), timeout=5
            ) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.3)
    raise RuntimeError(
        f"{server.name} server not ready after {timeout_s:.0f} s ({last_error}):\n{server.log_tail()}"
    )


def django_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="config.settings",
        # Production settings: no query log, a real secret, persistent
        # connections (the default 60 s would also do at this rate; 600 makes
        # reconnects impossible within a run).
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DB_CONN_MAX_AGE="600",
        # WARNING: no line per request; BENCH_LOG_LEVEL=INFO measures with the request log (JSON lines).
        LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        # As production runs several workers: the metrics in memory-mapped files (README: Operations).
        PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="scim-http-bench-metrics-"),
    )
    return env


def floor_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["FLOOR_DATABASE_URL"] = url
    return env


# --- load generation --------------------------------------------------------------

# One Lua script per wrk run. Each thread walks `items` (read from a file, one
# per line) with stride = thread count, so threads never send the same item:
# no two concurrent PATCHes lock the same user, and no spare is added twice.
# `build(item, n)` returns method, path and body; `done` adds up the threads'
# counters and prints one JSON line for the Python side.
LUA_TEMPLATE = r"""
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local items = {}
local n = 0
bad = 0
exhausted = 0
first_bad = ""
local auth = "Bearer __TOKEN__"
local write_headers = {["Authorization"] = auth, ["Content-Type"] = "__CONTENT_TYPE__",
                       ["Accept"] = "__CONTENT_TYPE__"}
local read_headers = {["Authorization"] = auth, ["Accept"] = "__CONTENT_TYPE__"}

function init(args)
  for line in io.lines("__ITEMS__") do items[#items + 1] = line end
end

local function build(item, n)
__BUILD__
end

function request()
  local index = tid + n * __THREADS__
  n = n + 1
  if index >= #items then
    if __NO_WRAP__ then exhausted = 1 end
    index = index % #items
  end
  local method, path, body = build(items[index + 1], n)
  if body then
    return wrk.format(method, path, write_headers, body)
  end
  return wrk.format(method, path, read_headers)
end

function response(status, headers, body)
  if status ~= __STATUS__ then
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.gsub(string.sub(body or "", 1, 300), "[%c\"\\]", " ")
    end
  end
end

function done(summary, latency, requests)
  local total_bad, any_exhausted, first = 0, 0, ""
  for _, thread in ipairs(threads) do
    total_bad = total_bad + thread:get("bad")
    any_exhausted = math.max(any_exhausted, thread:get("exhausted"))
    if first == "" then first = thread:get("first_bad") end
  end
  local e = summary.errors
  local grid = {}
  for i = 1, __GRID__ do grid[i] = latency:percentile((i - 0.5) * 100 / __GRID__) end
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, '
    .. '"max_us": %d, "bad_status": %d, "socket_errors": %d, "exhausted": %d, "first_bad": "%s", '
    .. '"grid_us": [%s]}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    latency.max, total_bad, e.connect + e.read + e.write + e.timeout, any_exhausted, first,
    table.concat(grid, ", ")))
end
"""

GET = '  return "GET", item, nil'


def lua_script(*, token: str, items_file: Path, build: str, status: int, no_wrap: bool) -> str:
    replacements = {
        "__TOKEN__": token,
        "__CONTENT_TYPE__": SCIM_JSON,
        "__ITEMS__": str(items_file),
        "__BUILD__": build,
        "__THREADS__": str(THREADS),
        "__NO_WRAP__": "true" if no_wrap else "false",
        "__STATUS__": str(status),
        "__GRID__": str(GRID_POINTS),
    }
    script = LUA_TEMPLATE
    for key, value in replacements.items():
        script = script.replace(key, value)
    return script


@dataclass(frozen=True, kw_only=True)
class Scenario:
    key: str
    label: str
    server: str = "django"  # or "floor"
    # Request paths (for group PATCH: member ids) that build() turns into requests.
    items: list[str]
    # Lua body of build(item, n); may use RUN, a token unique to each wrk run,
    # so that re-runs and the warm-up never repeat a userName or a title.
    build: str = GET
    status: int = 200
    # Minimum req/s as a fraction of the floor's; None: reported only.
    target: float | None = None
    no_wrap: bool = False
    # Called before the warm-up, before and after the measured run: puts the
    # data back (takes the spares out of the group) so every run starts equal.
    # Returns how many rows it undid, which must cover every completed request.
    reset: Callable[[], int] | None = None


@dataclass
class Result:
    """One scenario's figures; several wrk runs (rounds) of it add up into one."""

    scenario: Scenario
    requests: int = 0
    duration_s: float = 0.0
    # Latency quantiles of each round (GRID_POINTS each), weighted by its requests.
    grids: list[tuple[int, list[int]]] = field(default_factory=list)
    exact: tuple[float, float] | None = None  # wrk's own p50/p99 (ms) when there was one round
    problems: list[str] = field(default_factory=list)
    floor_rps: float = 0.0  # the floor measured around this scenario

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def ratio(self) -> float:
        return self.rps / self.floor_rps if self.floor_rps else 0.0

    def add_round(self, data: dict[str, Any]) -> None:
        self.exact = (data["p50_us"] / 1000, data["p99_us"] / 1000) if not self.grids else None
        self.requests += data["requests"]
        self.duration_s += data["duration_us"] / 1e6
        self.grids.append((data["requests"], data["grid_us"]))

    def percentile_ms(self, p: float) -> float:
        if self.exact is not None:
            return self.exact[0] if p == 50 else self.exact[1]
        # The mixture of the rounds' distributions: each quantile point stands
        # for an equal share of its round's requests.
        points = sorted((value, count / len(grid)) for count, grid in self.grids for value in grid if count)
        total = sum(weight for _, weight in points)
        running = 0.0
        for value, weight in points:
            # Midpoint rule: a point stands for the quantile in the middle of its share.
            if running + weight / 2 >= total * p / 100:
                return value / 1000
            running += weight
        return points[-1][0] / 1000 if points else 0.0

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)


@dataclass(frozen=True)
class Runner:
    wrk: str
    servers: dict[str, Server]
    token: str
    workdir: Path

    def run(self, scenario: Scenario, seconds: int, into: Result | None = None) -> Result:
        """One wrk run of `scenario`, added to `into` (or a new Result)."""
        server = self.servers[scenario.server]
        run_id = secrets.token_hex(4)
        items_file = self.workdir / f"{scenario.key}.items"
        if not items_file.exists():
            items_file.write_text("\n".join(scenario.items) + "\n")
        script = self.workdir / f"{scenario.key}-{run_id}.lua"
        build = f'  local RUN = "{run_id}"\n{scenario.build}'
        script.write_text(
            lua_script(
                token=self.token,
                items_file=items_file,
                build=build,
                status=scenario.status,
                no_wrap=scenario.no_wrap,
            )
        )
        command = [
            self.wrk,
            f"--threads={THREADS}",
            f"--connections={CONNECTIONS}",
            f"--duration={seconds}s",
            f"--timeout={WRK_TIMEOUT}",
            f"--script={script}",
            server.base,
        ]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        line = next((ln for ln in completed.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
        if completed.returncode != 0 or line is None:
            raise RuntimeError(
                f"wrk failed for {scenario.key} (exit {completed.returncode}):\n"
                f"{completed.stdout}\n{completed.stderr}"
            )
        data = json.loads(line.removeprefix("BENCH_RESULT "))
        result = into if into is not None else Result(scenario=scenario)
        result.add_round(data)
        if data["bad_status"]:
            result.problems.append(
                f"{data['bad_status']} responses were not {scenario.status}; first: {data['first_bad']}"
            )
        if data["socket_errors"]:
            result.problems.append(f"{data['socket_errors']} socket errors or timeouts")
        if data["exhausted"]:
            result.problems.append(
                "ran out of distinct items (raise SPARE_COUNT): some requests repeated one"
            )
        if not data["requests"]:
            result.problems.append("no request completed")
        if server.process.poll() is not None:
            result.problems.append(f"the {server.name} server died:\n{server.log_tail()}")
        return result

    def measure(self, block: Sequence[Scenario], seconds: int, *, warmup: int = WARMUP_S) -> list[Result]:
        """Warm up, then measure the block's scenarios, alternating over ROUNDS when there are several."""
        for scenario in block:
            if warmup:
                # Warms the workers' caches (URL resolver, schema registry) and
                # PostgreSQL's buffers for this scenario's rows.
                self._reset(scenario)
                self.run(scenario, warmup)
        rounds = ROUNDS if len(block) > 1 else 1
        results = {scenario.key: Result(scenario=scenario) for scenario in block}
        for round_number in range(rounds):
            order = block if round_number % 2 == 0 else list(reversed(block))
            for scenario in order:
                result = results[scenario.key]
                self._reset(scenario)
                before = result.requests
                self.run(scenario, max(1, math.ceil(seconds / rounds)), into=result)
                undone = self._reset(scenario)
                # Requests in flight when wrk stopped may have written too, hence "<".
                if scenario.reset and undone < result.requests - before:
                    result.problems.append(
                        f"only {undone} of {result.requests - before} requests changed anything: "
                        "some took a no-op shortcut"
                    )
        return list(results.values())

    @staticmethod
    def _reset(scenario: Scenario) -> int:
        return scenario.reset() if scenario.reset else 0


def progress(result: Result) -> None:
    status = "ok" if result.valid else "INVALID"
    print(
        f"  {result.scenario.label:<46} {result.rps:8.1f} req/s  p50 {result.p50_ms:7.2f} ms  "
        f"p99 {result.p99_ms:8.2f} ms  {status}",
        flush=True,
    )
    for problem in result.problems:
        print(f"      ! {problem}")


# --- scenarios --------------------------------------------------------------------

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


def lua_string(text: str) -> str:
    """A Lua string literal for JSON text (which has no single quotes here)."""
    if "'" in text or "\\" in text:
        raise ValueError(f"not safe in a Lua literal: {text!r}")
    return f"'{text}'"


def scenarios(data: Dataset) -> tuple[Scenario, list[list[Scenario]]]:
    """The floor, and the SCIM scenarios in run order, in blocks measured together (alternating)."""
    from django.db import connection

    def reset_group(group_id: uuid.UUID) -> Callable[[], int]:
        def reset() -> int:
            removed = remove_spares(group_id, data.spares)
            # Leaves no connection open in this process while wrk runs.
            connection.close()
            return removed

        return reset

    ids = [str(user_id) for user_id in data.sample_ids]
    spares = [str(user_id) for user_id in data.spares]
    rng = random.Random(11)
    # Any page of the 100,000 seeded users (plus spares): deep offsets are the worst case of index paging.
    random_pages = [f"/scim/v2/Users?startIndex={rng.randint(1, USER_COUNT - 99)}&count=100" for _ in ids]
    filters = [
        "/scim/v2/Users?filter=" + quote(f'userName eq "{name}"', safe="") for name in data.sample_names
    ]
    post_body = lua_string(
        json.dumps(
            {
                "schemas": [USER_SCHEMA],
                "userName": "%s",
                "displayName": "Bench Post %d",
                "name": {"givenName": "Bench", "familyName": "Post"},
                "emails": [{"value": "%s", "type": "work", "primary": True}],
                "active": True,
            }
        )
    )
    patch_title = lua_string(
        json.dumps({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "title", "value": "%s"}]})
    )
    add_member = lua_string(
        json.dumps(
            {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": "%s"}]}],
            }
        )
    )

    def group_get(group_id: uuid.UUID) -> list[str]:
        return [f"/scim/v2/Groups/{group_id}?excludedAttributes=members"]

    def group_add(group_id: uuid.UUID) -> str:
        return f'  return "PATCH", "/scim/v2/Groups/{group_id}", string.format({add_member}, item)'

    floor = Scenario(
        key="floor", label="floor: minimal WSGI + psycopg", server="floor", items=[f"/users/{i}" for i in ids]
    )
    scim = [
        Scenario(key="get", label="GET /Users/{id}", items=[f"/scim/v2/Users/{i}" for i in ids], target=0.40),
        Scenario(key="filter", label='GET /Users?filter=userName eq "…"', items=filters, target=0.40),
        Scenario(
            key="list_first",
            label="GET /Users?startIndex=1&count=100",
            items=["/scim/v2/Users?startIndex=1&count=100"],
            target=0.03,
        ),
        Scenario(
            key="list_random",
            label="GET /Users?startIndex=<random>&count=100",
            items=random_pages,
            target=0.03,
        ),
        Scenario(
            key="post",
            label="POST /Users",
            items=["/scim/v2/Users"],
            build=f'  local name = string.format("{POST_PREFIX}%s-%d-%d@example.com", RUN, tid, n)\n'
            f'  return "POST", item, string.format({post_body}, name, n, name)',
            status=201,
            target=0.25,
        ),
        Scenario(
            key="patch_user",
            label="PATCH /Users/{id} (replace title)",
            items=[f"/scim/v2/Users/{i}" for i in ids],
            build=f'  return "PATCH", item, string.format({patch_title}, RUN .. "-" .. tid .. "-" .. n)',
            target=0.25,
        ),
        Scenario(
            key="group_get_big",
            label="GET /Groups/{100k} excludedAttributes=members",
            items=group_get(data.big_group),
            target=0.30,
        ),
        Scenario(
            key="group_get_small",
            label="GET /Groups/{1k} excludedAttributes=members",
            items=group_get(data.small_group),
        ),
        Scenario(
            key="group_add_big",
            label="PATCH /Groups/{100k} add 1 member",
            items=spares,
            build=group_add(data.big_group),
            status=204,
            target=0.30,
            no_wrap=True,
            reset=reset_group(data.big_group),
        ),
        Scenario(
            key="group_add_small",
            label="PATCH /Groups/{1k} add 1 member",
            items=spares,
            build=group_add(data.small_group),
            status=204,
            no_wrap=True,
            reset=reset_group(data.small_group),
        ),
    ]
    by_key = {scenario.key: scenario for scenario in scim}
    paired = [("group_get_big", "group_get_small"), ("group_add_big", "group_add_small")]
    in_pairs = {key for pair in paired for key in pair}
    blocks = [[scenario] for scenario in scim if scenario.key not in in_pairs]
    blocks += [[by_key[big], by_key[small]] for big, small in paired]
    return floor, blocks


# --- report ---------------------------------------------------------------------------


def environment(wrk: str) -> list[str]:
    import django
    import gunicorn
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    connection.close()
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return [
        f"CPU: {os.cpu_count()} x {cpu}",
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"gunicorn {gunicorn.__version__}, "
        f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}), PostgreSQL {pg_version}",
        f"{wrk_version.strip()}",
        f"load: wrk {THREADS} threads, {CONNECTIONS} connections, {WARMUP_S} s warm-up + {DURATION_S} s "
        f"per scenario; gunicorn {WORKERS} sync workers; timeout {WRK_TIMEOUT}",
        # Anything else busy on the machine competes with server, database and wrk.
        "load average before measuring: " + ", ".join(f"{value:.2f}" for value in os.getloadavg()),
    ]


def report(floors: Sequence[Result], results: Sequence[Result], env_lines: Sequence[str]) -> None:
    print()
    print("Environment")
    for line in env_lines:
        print(f"  {line}")
    print()
    rates = [floor.rps for floor in floors]
    spread = (max(rates) - min(rates)) / max(rates) if max(rates) else 0.0
    print(
        f"Floor: {statistics.fmean(rates):.1f} req/s on average over {len(rates)} runs between scenarios "
        f"(min {min(rates):.1f}, max {max(rates):.1f}, spread {spread:.0%})"
    )
    if spread > 0.2:
        print("  The machine's speed changed during the run (other processes?): ratios are rough.")
    print("Each scenario's ratio divides its req/s by the mean of the floor runs just before and after it.")
    print()
    header = (
        f"{'scenario':<46} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>9} {'floor':>7} {'x floor':>8} "
        f"{'target':>7}  verdict"
    )
    print(header)
    print("-" * len(header))
    floor_p50 = statistics.median(floor.p50_ms for floor in floors)
    floor_p99 = statistics.median(floor.p99_ms for floor in floors)
    print(
        f"{floors[0].scenario.label + ' (mean)':<46} {statistics.fmean(rates):>8.1f} {floor_p50:>8.2f} "
        f"{floor_p99:>9.2f} {'':>7} {1:>7.3f}x {'':>7}  -"
    )
    for result in results:
        target = result.scenario.target
        if not result.valid:
            verdict = "INVALID"
        elif target is None:
            verdict = "-"
        else:
            verdict = "PASS" if result.ratio >= target else "FAIL"
        target_text = f">={target:.2f}" if target is not None else ""
        print(
            f"{result.scenario.label:<46} {result.rps:>8.1f} {result.p50_ms:>8.2f} {result.p99_ms:>9.2f} "
            f"{result.floor_rps:>7.0f} {result.ratio:>7.3f}x {target_text:>7}  {verdict}"
        )
    print("(floor p50/p99: medians over the floor runs; paired group scenarios: percentiles over all rounds)")

    by_key = {r.scenario.key: r for r in results}
    pairs = [
        (operation, by_key[big], by_key[small])
        for operation, big, small in (
            ("PATCH add 1 member", "group_add_big", "group_add_small"),
            ("GET excludedAttributes=members", "group_get_big", "group_get_small"),
        )
        if big in by_key and small in by_key
    ]
    if pairs:
        print()
        print(
            f"100k-member group vs 1k-member group, measured alternately in {ROUNDS} rounds "
            "(target: 100k within 1.5x of 1k, i.e. 1k req/s / 100k req/s <= 1.5):"
        )
    for operation, big, small in pairs:
        slowdown = small.rps / big.rps if big.rps else float("inf")
        p50_ratio = big.p50_ms / small.p50_ms if small.p50_ms else float("inf")
        verdict = "INVALID" if not (big.valid and small.valid) else ("PASS" if slowdown <= 1.5 else "FAIL")
        print(
            f"  {operation:<32} 1k {small.rps:7.1f} req/s, 100k {big.rps:7.1f} req/s: "
            f"{slowdown:.2f}x (p50 100k/1k {p50_ratio:.2f}x)  {verdict}"
        )
    invalid = [r.scenario.label for r in [*floors, *results] if not r.valid]
    if invalid:
        print()
        names = ", ".join(sorted(set(invalid)))
        print(f"INVALID runs (errors or repeated items; their figures mean nothing): {names}")


# --- main -------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="SCIM API req/s and latency over HTTP, as a fraction of a no-Django floor.",
        epilog="Environment: BENCH_DATABASE_URL, BENCH_DURATION, BENCH_WARMUP, BENCH_FLOOR_DURATION, "
        "BENCH_THREADS, BENCH_CONNECTIONS.",
    )
    parser.add_argument(
        "--only",
        metavar="KEYS",
        help="comma-separated scenario keys to run (a 100k/1k pair runs whole): "
        "get, filter, list_first, list_random, post, patch_user, group_get_big, group_get_small, "
        "group_add_big, group_add_small",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    wanted = {key.strip() for key in args.only.split(",")} if args.only else None
    wrk = check_tools()
    url = database_url(DEFAULT_URL)
    ensure_database(url)
    setup_django(url)
    started = time.perf_counter()
    data = prepare()

    from django.db import connection

    env_lines = environment(wrk)
    connection.close()
    with tempfile.TemporaryDirectory(prefix="scim-http-bench-") as tmp:
        workdir = Path(tmp)
        servers = {
            "django": start_server("django", "config.wsgi:application", django_env(url), REPO_ROOT, workdir),
            "floor": start_server("floor", "floor_app:application", floor_env(url), BENCH_DIR, workdir),
        }
        try:
            auth = {"Authorization": f"Bearer {data.token}"}
            wait_ready(servers["django"], f"/scim/v2/Users/{data.sample_ids[0]}", auth)
            wait_ready(servers["floor"], f"/users/{data.sample_ids[0]}", {})
            runner = Runner(wrk=wrk, servers=servers, token=data.token, workdir=workdir)
            floor, blocks = scenarios(data)
            if wanted is not None:
                blocks = [block for block in blocks if wanted & {scenario.key for scenario in block}]
                if not blocks:
                    raise RuntimeError(f"--only matched no scenario: {args.only}")
            count = sum(len(block) for block in blocks)
            print(
                f"Measuring {count} scenarios ({WARMUP_S} s warm-up + {DURATION_S} s each), "
                f"with a {FLOOR_S} s floor run before the first and after each"
            )
            floors = runner.measure([floor], FLOOR_S)
            progress(floors[-1])
            results: list[Result] = []
            for block in blocks:
                block_results = runner.measure(block, DURATION_S)
                floors += runner.measure([floor], FLOOR_S, warmup=0)
                for result in block_results:
                    result.floor_rps = statistics.fmean([floors[-2].rps, floors[-1].rps])
                    progress(result)
                progress(floors[-1])
                results += block_results
        finally:
            for server in servers.values():
                server.stop()
    delete_posted_users()
    connection.close()
    report(floors, results, env_lines)
    print()
    print(
        f"Total time {time.perf_counter() - started:.0f} s. "
        "A measurement: the exit code does not reflect the targets."
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        refuse(str(exc))
