import os
from pathlib import Path

from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        # prometheus_client writes each process's samples under this folder (multiprocess mode, chosen
        # by the variable itself); it must exist before the first sample.
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
        from observability import outbox  # noqa: F401  (registers its scrape-time gauges)
