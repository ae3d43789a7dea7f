"""The Celery application. Configuration comes from Django settings (CELERY_*)."""

import logging.config
import os
from pathlib import Path

from celery import Celery
from celery.signals import setup_logging, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("directory")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def ensure_filesystem_broker_dirs() -> None:
    """Create the folders kombu's filesystem transport reads and writes."""
    from django.conf import settings

    if settings.CELERY_BROKER_URL == "filesystem://":
        Path(settings.CELERY_FILESYSTEM_BROKER_DIR).mkdir(parents=True, exist_ok=True)
        Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["control_folder"]).mkdir(parents=True, exist_ok=True)


@worker_init.connect
def _prepare_worker(**_: object) -> None:
    ensure_filesystem_broker_dirs()


@setup_logging.connect
def _log_as_django_does(loglevel: int | str | None = None, **_: object) -> None:
    """Workers and beat log through Django's LOGGING: the same JSON lines (with request ids) as the web.

    With a receiver here Celery leaves logging alone. The level is LOG_LEVEL when it is set, else the
    command's --loglevel, as Celery users expect.
    """
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    if not os.environ.get("LOG_LEVEL") and loglevel:
        logging.getLogger().setLevel(loglevel)
