"""Benchmark: does adding one member cost the same in a 100,000-member group as in a 1,000-member one?

Requirement: the median time of services.membership_add for one new user in a
100k-member group is at most 1.5x the median for a 1k-member group.
membership_remove is timed the same way for comparison but does not gate.

Runs on PostgreSQL only (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/directory_bench); the database is created
and seeded on first use, and reused by later runs. Exit code: 0 PASS, 1 FAIL,
2 cannot run. See bench/README.md.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import database_url, ensure_database, setup_django  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/directory_bench"

GROUP_SIZES = (1_000, 100_000)
WARMUP = 20
ITERATIONS = 300
MAX_RATIO = 1.5
BATCH_SIZE = 5_000
# One spare user per timed or warm-up iteration, plus one for the query count.
SPARE_COUNT = WARMUP + ITERATIONS + 1
SPARE_PREFIX = "bench-spare-"


@dataclass(frozen=True)
class BenchGroup:
    name: str
    size: int
    id: uuid.UUID


@dataclass(frozen=True)
class Summary:
    operation: str
    size: int
    samples_ms: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95(self) -> float:
        return statistics.quantiles(self.samples_ms, n=20, method="inclusive")[18]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples_ms)


# --- database and Django ------------------------------------------------------


# --- seeding ------------------------------------------------------------------


def seeded_group(name: str, size: int) -> BenchGroup | None:
    """The group from an earlier run, if it still has exactly `size` seeded members."""
    from directory.models import Group, Membership

    group = Group.objects.filter(display_name=name).first()
    if group is None:
        return None
    members = Membership.objects.filter(group=group, member_user__user_name__startswith=f"{name}-user-")
    if members.count() == size:
        return BenchGroup(name=name, size=size, id=group.pk)
    # Wrong size (the constants changed, or the data was edited): start over.
    group.delete()
    return None


def seed_group(name: str, size: int) -> BenchGroup:
    from django.db import transaction

    from directory.models import Group, Membership, User

    # All or nothing, so an interrupted seed never looks like a finished one.
    with transaction.atomic():
        User.objects.filter(user_name__startswith=f"{name}-user-").delete()
        group = Group.objects.create(display_name=name)
        users = User.objects.bulk_create(
            [User(user_name=f"{name}-user-{n}@example.com") for n in range(size)], batch_size=BATCH_SIZE
        )
        Membership.objects.bulk_create(
            [Membership(group=group, member_user=user) for user in users], batch_size=BATCH_SIZE
        )
    return BenchGroup(name=name, size=size, id=group.pk)


def spare_user_ids() -> list[uuid.UUID]:
    """Users that belong to no bench group, one per iteration; created once."""
    from directory.models import User

    names = [f"{SPARE_PREFIX}{n}@example.com" for n in range(SPARE_COUNT)]
    existing = set(User.objects.filter(user_name__in=names).values_list("user_name", flat=True))
    User.objects.bulk_create(
        [User(user_name=name) for name in names if name not in existing], batch_size=BATCH_SIZE
    )
    by_name = dict(User.objects.filter(user_name__in=names).values_list("user_name", "pk"))
    return [by_name[name] for name in names]


def detach_spares(groups: Sequence[BenchGroup], spares: Sequence[uuid.UUID]) -> None:
    """Take spares out of the groups, in case an interrupted run left some in."""
    from directory import services
    from directory.actors import Actor

    for group in groups:
        services.membership_remove(actor=Actor.system("bench"), group_id=group.id, user_ids=spares)


def analyze() -> None:
    from django.db import connection

    from directory.models import Group, Membership, User

    with connection.cursor() as cursor:
        for model in (User, Group, Membership):
            cursor.execute(f"ANALYZE {model._meta.db_table}")


def prepare() -> tuple[list[BenchGroup], list[uuid.UUID]]:
    started = time.perf_counter()
    groups: list[BenchGroup] = []
    for size in GROUP_SIZES:
        name = f"bench-{size // 1000}k"
        group = seeded_group(name, size)
        if group is None:
            print(f"Seeding {name} with {size:,} users")
            group = seed_group(name, size)
        groups.append(group)
    spares = spare_user_ids()
    detach_spares(groups, spares)
    analyze()
    print(f"Seeding and checks took {time.perf_counter() - started:.1f} s")
    return groups, spares


# --- measuring ----------------------------------------------------------------


def timed_ms(call: Callable[[], int]) -> float:
    started = time.perf_counter()
    changed = call()
    elapsed = (time.perf_counter() - started) * 1000
    # A call that changed nothing took a shortcut and would flatter the figures.
    if changed != 1:
        raise RuntimeError(f"expected the service to change one membership, it changed {changed}")
    return elapsed


def measure(groups: Sequence[BenchGroup], spares: Sequence[uuid.UUID]) -> list[Summary]:
    """Add a fresh user to each group and remove it again, timing each call on its own.

    The sizes alternate which goes first, so drift in the machine's load hits
    both alike; removing right away keeps every group at its seeded size.
    """
    from directory import services
    from directory.actors import Actor

    actor = Actor.system("bench")
    samples: dict[tuple[str, int], list[float]] = {
        (operation, group.size): [] for operation in ("add", "remove") for group in groups
    }
    for iteration in range(WARMUP + ITERATIONS):
        member = [spares[iteration]]
        order = groups if iteration % 2 == 0 else list(reversed(groups))
        for group in order:
            add_ms = timed_ms(
                partial(services.membership_add, actor=actor, group_id=group.id, user_ids=member)
            )
            remove_ms = timed_ms(
                partial(services.membership_remove, actor=actor, group_id=group.id, user_ids=member)
            )
            if iteration >= WARMUP:
                samples[("add", group.size)].append(add_ms)
                samples[("remove", group.size)].append(remove_ms)
    return [Summary(operation, size, values) for (operation, size), values in samples.items()]


def query_counts(groups: Sequence[BenchGroup], spare: uuid.UUID) -> list[tuple[int, int, int]]:
    """(group size, queries of one add, queries of one remove) for each group."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from directory import services
    from directory.actors import Actor

    actor = Actor.system("bench")
    counts: list[tuple[int, int, int]] = []
    for group in groups:
        with CaptureQueriesContext(connection) as added:
            services.membership_add(actor=actor, group_id=group.id, user_ids=[spare])
        with CaptureQueriesContext(connection) as removed:
            services.membership_remove(actor=actor, group_id=group.id, user_ids=[spare])
        counts.append((group.size, len(added), len(removed)))
    return counts


# --- report -------------------------------------------------------------------


def print_table(summaries: Sequence[Summary]) -> None:
    print()
    headings = ("group size", "iterations", "median ms", "p95 ms", "mean ms")
    print(f"{'operation':<10}" + "".join(f" {heading:>10}" for heading in headings))
    for s in summaries:
        print(
            f"{s.operation:<10} {s.size:>10,} {len(s.samples_ms):>10} "
            f"{s.median:>10.3f} {s.p95:>10.3f} {s.mean:>10.3f}"
        )


def print_query_counts(counts: Sequence[tuple[int, int, int]]) -> None:
    print()
    print("SQL queries per call, BEGIN and COMMIT included (should not depend on group size):")
    for size, add, remove in counts:
        print(f"  group of {size:>7,}: membership_add {add}, membership_remove {remove}")


def ratio(summaries: Sequence[Summary], operation: str) -> float:
    by_size = {s.size: s.median for s in summaries if s.operation == operation}
    return by_size[max(GROUP_SIZES)] / by_size[min(GROUP_SIZES)]


def verdict(summaries: Sequence[Summary]) -> bool:
    small, large = min(GROUP_SIZES), max(GROUP_SIZES)
    add_ratio = ratio(summaries, "add")
    print()
    print(
        f"median ratio {large:,} / {small:,} members: add {add_ratio:.2f}x, "
        f"remove {ratio(summaries, 'remove'):.2f}x (remove is informational)"
    )
    passed = add_ratio <= MAX_RATIO
    print(
        f"{'PASS' if passed else 'FAIL'}: membership_add median at {large:,} members is {add_ratio:.2f}x "
        f"the median at {small:,} (requirement: <= {MAX_RATIO}x)"
    )
    return passed


def server_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0]


def main() -> int:
    url = database_url(DEFAULT_URL)
    ensure_database(url)
    setup_django(url)

    print(
        f"PostgreSQL {server_version()} at {urlsplit(url).hostname}, database {urlsplit(url).path.strip('/')}"
    )
    groups, spares = prepare()
    summaries = measure(groups, spares)
    counts = query_counts(groups, spares[-1])
    print_table(summaries)
    print_query_counts(counts)
    return 0 if verdict(summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
