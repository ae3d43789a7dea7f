"""/healthz and /readyz against the real database and broker (and a broker that is not there)."""

import os
from http import HTTPStatus

import pytest

from directory import services
from directory.models import ChangeEvent

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == HTTPStatus.OK
    assert response.json() == {"status": "ok"}
    assert not response.cookies
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.redis
def test_readyz_is_200_when_database_broker_and_outbox_are_fine(client, settings):
    settings.CELERY_BROKER_URL = os.environ["TEST_REDIS_URL"]
    response = client.get("/readyz")
    assert response.status_code == HTTPStatus.OK, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["outbox"] == {
        "ok": True,
        "backlog": 0,
        "threshold": settings.READYZ_MAX_OUTBOX_BACKLOG,
    }


def test_readyz_is_503_when_the_broker_is_unreachable(client, settings):
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    settings.CELERY_BROKER_URL = "redis://:broker-password@127.0.0.1:1/0"
    response = client.get("/readyz")
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["broker"]["ok"] is False
    assert "ConnectionError" in body["checks"]["broker"]["error"]
    assert "broker-password" not in response.content.decode()
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.redis
def test_readyz_is_503_when_the_outbox_backlog_passes_the_threshold(client, settings, actor):
    settings.CELERY_BROKER_URL = os.environ["TEST_REDIS_URL"]
    settings.READYZ_MAX_OUTBOX_BACKLOG = 2
    for n in range(3):
        services.user_create(actor=actor, user_name=f"backlog{n}@example.com")
    assert ChangeEvent.objects.filter(processed__isnull=True).count() == 3

    response = client.get("/readyz")
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert response.json()["checks"]["outbox"] == {"ok": False, "backlog": 3, "threshold": 2}

    ChangeEvent.objects.update(processed=ChangeEvent.objects.first().created)
    assert client.get("/readyz").status_code == HTTPStatus.OK


def test_readyz_checks_the_filesystem_broker_folder(client, settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_FILESYSTEM_BROKER_DIR = tmp_path / "missing"
    response = client.get("/readyz")
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert "missing" in response.json()["checks"]["broker"]["error"]

    (tmp_path / "missing").mkdir()
    assert client.get("/readyz").status_code == HTTPStatus.OK


def test_probes_need_no_credentials_and_refuse_writes(client):
    assert client.post("/healthz").status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert client.post("/readyz").status_code == HTTPStatus.METHOD_NOT_ALLOWED
