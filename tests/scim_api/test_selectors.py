"""The dashboard's reads of SCIM clients: counts, recent activity, dialect rewrites."""

from datetime import timedelta

import pytest
from django.utils import timezone

from directory import services
from directory.actors import Actor
from directory.models import AuditEntry
from scim_api.models import DialectRewrite, ScimClient
from scim_api.selectors import dialect_rewrites_recent, scim_client_activity, scim_client_counts

pytestmark = pytest.mark.django_db


def client(name: str, **fields: object) -> ScimClient:
    made = ScimClient(name=name, **fields)
    made.issue_token()
    made.save()
    return made


def test_counts_tell_usable_clients_from_revoked_and_expired() -> None:
    now = timezone.now()
    client("ok")
    client("until-tomorrow", expires=now + timedelta(days=1))
    client("revoked", revoked=True)
    client("expired", expires=now - timedelta(seconds=1))

    assert scim_client_counts(now=now) == {"total": 4, "usable": 2}


def test_activity_counts_writes_since_and_rewrites_in_one_query(django_assert_num_queries) -> None:
    now = timezone.now()
    busy = client("busy", last_used=now - timedelta(minutes=1))
    quiet = client("quiet", last_used=now - timedelta(days=2))
    client("never")
    actor = Actor.scim_client(id=busy.pk, name=busy.name)
    for index in range(3):
        services.user_create(actor=actor, user_name=f"activity-{index}@example.com")
    # A write older than the window is not counted.
    first = AuditEntry.objects.filter(actor_id=str(busy.pk)).earliest("id")
    AuditEntry.objects.filter(pk=first.pk).update(created=now - timedelta(days=2))
    services.user_create(actor=Actor.scim_client(id=quiet.pk, name=quiet.name), user_name="old@example.com")
    AuditEntry.objects.filter(actor_id=str(quiet.pk)).update(created=now - timedelta(days=2))
    DialectRewrite.objects.create(client=busy, name="a", count=5)
    DialectRewrite.objects.create(client=busy, name="b", count=7)

    with django_assert_num_queries(1):
        rows = [
            (row.name, row.writes, row.rewrites)
            for row in scim_client_activity(since=now - timedelta(days=1))
        ]

    assert rows == [("busy", 2, 12), ("quiet", 0, 0)]


def test_rewrites_most_recent_first() -> None:
    now = timezone.now()
    one = client("one")
    DialectRewrite.objects.create(client=one, name="old", count=1, last_seen=now - timedelta(hours=1))
    DialectRewrite.objects.create(client=one, name="new", count=1, last_seen=now)

    assert [rewrite.name for rewrite in dialect_rewrites_recent(limit=1)] == ["new"]
