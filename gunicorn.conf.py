"""gunicorn settings for the web process: `gunicorn -c gunicorn.conf.py` (docs/deploy.md).

Read from the environment so one file serves every machine; gunicorn's own GUNICORN_CMD_ARGS and
command-line flags still override any of them.
"""

import multiprocessing
import os

wsgi_app = "config.wsgi:application"

# Behind the reverse proxy: listen where it connects. 0.0.0.0 only when the proxy is on another machine.
bind = [os.environ.get("GUNICORN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")]

# Sync workers: each request holds one process, and the work is database-bound. gunicorn's advice of
# 2 x cores + 1 is the default; WEB_CONCURRENCY sets it (as on most platforms).
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count() + 1))
worker_class = "sync"
# Longer than the slowest admin page (a CSV preview of 5,000 rows); SCIM requests take milliseconds.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = 5
# Replace each worker after this many requests (with jitter, so they do not restart together): bounds
# the memory a long-lived worker can accumulate.
# GUNICORN_MAX_REQUESTS=0 never replaces them: with PROMETHEUS_MULTIPROC_DIR each replaced worker leaves
# its metrics files behind (its counts still belong in the sums), and /metrics reads every one.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = max_requests // 10

# The proxy's address(es), whose X-Forwarded-Proto / X-Forwarded-For gunicorn believes. Django decides
# HTTPS from SECURE_PROXY_SSL_HEADER (TRUST_X_FORWARDED_PROTO) on its own.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Heartbeat files on tmpfs: a worker on a slow or full disk is not killed as stuck.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# One access line per request on stdout; errors on stderr. The process manager collects both.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
