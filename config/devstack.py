"""`make run`: the whole directory on one machine, with no services to install.

Migrates, makes sure the demo operator exists, then runs the web server, a
Celery worker and Celery beat side by side until Ctrl-C (or until any of them
stops), and stops the others with it. With DATABASE_URL / REDIS_URL set, the
same processes use PostgreSQL and Redis instead of SQLite and the filesystem
broker.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(BASE_DIR / "manage.py"), *args]


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "config", *args]


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings

    from config.celery import ensure_filesystem_broker_dirs

    ensure_filesystem_broker_dirs()
    Path(settings.CELERY_BEAT_SCHEDULE_FILENAME).parent.mkdir(parents=True, exist_ok=True)
    port = settings.PORT

    subprocess.run(_manage("migrate", "--noinput", "-v", "0"), check=True, cwd=BASE_DIR)
    subprocess.run(_manage("demo_setup", "--url", f"http://127.0.0.1:{port}"), check=True, cwd=BASE_DIR)

    commands = {
        "web": _manage("runserver", f"127.0.0.1:{port}", "--noreload"),
        # No -Q: the worker consumes every queue in CELERY_TASK_QUEUES (the default one and the
        # provisioning lanes), as production workers do.
        "worker": _celery("worker", "--loglevel=INFO", "--concurrency=2"),
        "beat": _celery("beat", "--loglevel=INFO", "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME),
    }
    processes = {name: subprocess.Popen(command, cwd=BASE_DIR) for name, command in commands.items()}
    print(f"Started {', '.join(processes)}; Ctrl-C stops them all.", flush=True)

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                print(f"{name} exited with status {process.returncode}; stopping the others.", flush=True)
                exit_code = process.returncode or 1
                stopping = True
                break
        time.sleep(0.5)

    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
