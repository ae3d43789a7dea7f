"""Settings for the identity directory: one module, driven by environment variables.

Every variable is documented in README.md and .env.example. Defaults suit a
development machine with no services: SQLite and a filesystem Celery broker
under var/. Production sets DEBUG=false, SECRET_KEY, DATABASE_URL and REDIS_URL.
"""

import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from config.env import env_bool, env_float, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", True)


def _development_secret_key() -> str:
    # Kept on disk so sessions and signed values survive restarts of `make run`.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env_secret("SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) is required when DEBUG is off")
    SECRET_KEY = _development_secret_key()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
PORT = env_int("PORT", 8000, minimum=1, maximum=65535)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "directory",
    "scim_api",
    "provisioning",
    "dashboard",
    "observability",
]

# Sessions, CSRF, the Django user and messages, for every path but /scim/ and /oauth/ (bearer-token
# APIs that use none of them): see config/middleware.py.
MIDDLEWARE = [
    # First: the request id is bound (and the request timed) around everything else.
    "observability.middleware.RequestObservabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from the web process itself (no separate file server): see STORAGES below.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.middleware.BrowserSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "config.middleware.BrowserCsrfViewMiddleware",
    "config.middleware.BrowserAuthenticationMiddleware",
    "config.middleware.BrowserMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# security.W003 looks for django.middleware.csrf.CsrfViewMiddleware by name; BrowserCsrfViewMiddleware
# is that class, skipped only for the bearer-token APIs (/scim/, /oauth/), whose views are CSRF-exempt.
SILENCED_SYSTEM_CHECKS = ["security.W003"]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.context_processors.instance",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'directory.sqlite3'}"
try:
    _database = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0))
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL cannot be parsed: {exc}") from None
if _database["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _database["CONN_MAX_AGE"] = 0
    _database["OPTIONS"] = {
        # The web server, the worker and beat share one file: wait for locks
        # instead of failing, take the write lock up front (no upgrade
        # deadlocks), and let readers run beside the writer (WAL).
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif _database["ENGINE"] == "django.db.backends.postgresql":
    _database.setdefault("OPTIONS", {})
    # Off by default: a health check costs a round trip at the start of every request. Turn it on
    # where something between the app and PostgreSQL (a proxy, a failover) drops idle connections.
    _database["CONN_HEALTH_CHECKS"] = env_bool("DB_CONN_HEALTH_CHECKS", False)
    if env_bool("DB_PREPARED_STATEMENTS", True):
        # Parameters sent apart from the SQL, and a statement a connection has run twice kept
        # prepared: PostgreSQL then skips parsing and planning, which cost more than executing the
        # SCIM API's lookups. Off behind a pooler that cannot carry prepared statements across
        # transactions (PgBouncer before 1.21 in transaction mode).
        _database["OPTIONS"]["server_side_binding"] = True
        _database["OPTIONS"]["prepare_threshold"] = 2
if env_str("TEST_DATABASE_NAME"):
    # Lets two test runs share one PostgreSQL server without clobbering each other.
    _database["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME")}
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Celery -------------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL") or None
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
CELERY_FILESYSTEM_BROKER_DIR = VAR_DIR / "celery" / "broker"
if CELERY_BROKER_URL == "filesystem://":
    # kombu's filesystem transport: an embedded broker that needs no service,
    # good for one machine (`make run`); production uses Redis.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_FILESYSTEM_BROKER_DIR),
        "data_folder_out": str(CELERY_FILESYSTEM_BROKER_DIR),
        # Broadcast tables (worker pidbox); kombu's default is ./control in the working directory.
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "queue_order_strategy": "priority",
        # A Redis that vanishes without closing the connection (a failover, a network cut) makes a
        # publish or a read fail after these many seconds instead of waiting forever; the worker then
        # reconnects. The worker's own reads return every second (kombu's BRPOP timeout), well within.
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
        "socket_keepalive": True,
    }
# A broker outage must not stop a worker or beat for good: retry the connection forever (Celery's
# default gives up after 100 attempts, about 45 minutes, and exits). See README, "Broker loss".
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or REDIS_URL or None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# Tests give each real worker a queue of its own; deployments keep Celery's default.
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE") or "celery"
# Provisioning's lanes, each a broker queue (provisioning.queue): leavers and disables first, then
# changes, full syncs last. CELERY_QUEUE_PREFIX keeps test and benchmark workers apart on one Redis.
_QUEUE_PREFIX = env_str("CELERY_QUEUE_PREFIX") or ""
PROVISIONING_LANE_QUEUES = {
    lane: f"{_QUEUE_PREFIX}provisioning.{lane}" for lane in ("leaver", "change", "backfill")
}
# A worker started without -Q consumes all of these. On Redis it asks for them in this order every
# time (kombu's "priority" strategy; its default rotates them), so a queued leaver is always taken
# before the next change and a change before the next backfill batch. The default queue (the relay,
# the sweeper, housekeeping: short tasks) comes first: the relay feeds the others.
CELERY_TASK_QUEUES = [
    Queue(name)
    for name in (
        CELERY_TASK_DEFAULT_QUEUE,
        PROVISIONING_LANE_QUEUES["leaver"],
        PROVISIONING_LANE_QUEUES["change"],
        PROVISIONING_LANE_QUEUES["backfill"],
    )
]
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celery" / "beat-schedule")
CELERY_BEAT_SCHEDULE = {
    "purge-processed-change-events": {
        "task": "directory.tasks.purge_processed_change_events",
        "schedule": 3600.0,
    },
    "purge-expired-access-tokens": {
        "task": "scim_api.tasks.purge_expired_access_tokens",
        "schedule": 3600.0,
    },
    # The outbox relay: a change reaches a worker within about this many seconds of its commit.
    "relay-change-events": {
        "task": "provisioning.tasks.relay_change_events",
        "schedule": env_float("PROVISIONING_RELAY_INTERVAL", 1.0, minimum=0.1),
        "options": {"expires": 10},
    },
    # Resends deliveries whose task was lost (broker restart, killed worker) or whose retry is due.
    "sweep-deliveries": {
        "task": "provisioning.tasks.sweep_deliveries",
        "schedule": env_float("PROVISIONING_SWEEP_INTERVAL", 5.0, minimum=0.5),
        "options": {"expires": 30},
    },
    "purge-provisioning-log": {
        "task": "provisioning.tasks.purge_provisioning_log",
        "schedule": 3600.0,
    },
    # Resumes interrupted full syncs, closes finished ones, starts the reconciliations that are due.
    "provisioning-runs-tick": {
        "task": "provisioning.tasks.provisioning_runs_tick",
        "schedule": env_float("PROVISIONING_RUNS_TICK_INTERVAL", 60.0, minimum=1.0),
        "options": {"expires": 50},
    },
    # The dashboard's queue-depth history: one sample per target a minute, old ones purged.
    "sample-targets": {
        "task": "provisioning.tasks.sample_targets",
        "schedule": 60.0,
        "options": {"expires": 50},
    },
    "purge-provisioning-runs": {
        "task": "provisioning.tasks.purge_provisioning_runs",
        "schedule": 3600.0,
    },
    # Inbound provisioning: effective-dated enables/disables that are due, and jobs a lost task left queued.
    "inbound-tick": {
        "task": "scim_api.inbound.tasks.inbound_tick",
        "schedule": env_float("SCIM_INBOUND_TICK_INTERVAL", 60.0, minimum=1.0),
        "options": {"expires": 50},
    },
    "purge-inbound-jobs": {
        "task": "scim_api.inbound.tasks.purge_inbound_jobs",
        "schedule": 3600.0,
    },
}
# Task modules autodiscovery does not find (it looks for each app's `tasks` module only).
CELERY_IMPORTS = ["scim_api.inbound.tasks"]

# Shared counters (SCIM rate limits): Redis when configured, so all web processes
# share them; otherwise each process keeps its own.
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A Redis that stopped answering fails a call (a rate limit, the pacer) in seconds,
            # instead of holding a request or a worker thread for ever.
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 5},
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "directory"}
    )
}

# --- Authentication and passwords -------------------------------------------

# Directory identities' passwords are hashed with Argon2id; the other hashers
# only verify (and upgrade) hashes imported from elsewhere.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]

# Admin sign-in throttling (config.admin_login): failed attempts per username and per client address
# within a window of this many seconds, counted in the cache (shared through Redis when REDIS_URL is set).
ADMIN_LOGIN_WINDOW = env_int("ADMIN_LOGIN_WINDOW", 900, minimum=1)
ADMIN_LOGIN_MAX_FAILURES_PER_USER = env_int("ADMIN_LOGIN_MAX_FAILURES_PER_USER", 5, minimum=1)
ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS = env_int("ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS", 20, minimum=1)
# Reverse proxies in front of the web processes that append to X-Forwarded-For (0: use REMOTE_ADDR).
ADMIN_LOGIN_TRUSTED_PROXIES = env_int("ADMIN_LOGIN_TRUSTED_PROXIES", 0, minimum=0)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Internationalisation and static files ---------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# `manage.py collectstatic` copies the admin's files here; WhiteNoise serves them from the web process
# (compressed, with far-future caching for the hashed names of the manifest storage).
STATIC_ROOT = Path(env_str("STATIC_ROOT") or VAR_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # The manifest (content-hashed names) needs collectstatic to have run before the web process
        # starts, as every deployment does; off by default so a process started without it still runs.
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env_bool("STATIC_MANIFEST", False)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Security ---------------------------------------------------------------

# Production values come from the environment (docs/deploy.md, docs/production.env); with them,
# `manage.py check --deploy --fail-level WARNING` passes (tests/test_deploy.py).
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600, minimum=60)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Off by default: benchmarks and tests serve plain HTTP on loopback with DEBUG off. Production turns it on.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Probes reach a web process directly over HTTP, inside the network, and must not be redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# Sent on HTTPS responses only (browsers ignore it over HTTP). A year once production is stable.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Behind a reverse proxy that terminates TLS: trust its X-Forwarded-Proto to tell HTTPS requests apart.
# Only when the proxy always sets (overwrites) the header, or any client could claim HTTPS.
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Apps ---------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "scim_api.exceptions.exception_handler",
}

# Read through scim_api.conf.scim_setting; see its DEFAULTS for every key.
SCIM_API = {
    "DEFAULT_PAGE_SIZE": env_int("SCIM_DEFAULT_PAGE_SIZE", 100, minimum=1),
    "MAX_PAGE_SIZE": env_int("SCIM_MAX_PAGE_SIZE", 1000, minimum=1),
    "USER_PATCH_RETURNS_RESOURCE": env_bool("SCIM_USER_PATCH_RETURNS_RESOURCE", True),
    "GROUP_PATCH_RETURNS_RESOURCE": env_bool("SCIM_GROUP_PATCH_RETURNS_RESOURCE", False),
    "TOKEN_CACHE_SECONDS": env_int("SCIM_TOKEN_CACHE_SECONDS", 5, minimum=0, maximum=300),
    "CURSOR_TIMEOUT": env_int("SCIM_CURSOR_TIMEOUT", 3600, minimum=60),
    "RATE_LIMIT_PER_MINUTE": env_int("SCIM_RATE_LIMIT_PER_MINUTE", 6000, minimum=0),
    "INBOUND_MAX_OPERATIONS": env_int("SCIM_INBOUND_MAX_OPERATIONS", 1000, minimum=50),
    "INBOUND_MAX_PAYLOAD_SIZE": env_int("SCIM_INBOUND_MAX_PAYLOAD_SIZE", 5 * 1_048_576, minimum=65_536),
    "INBOUND_CHUNK_SIZE": env_int("SCIM_INBOUND_CHUNK_SIZE", 500, minimum=1),
    "INBOUND_LEASE_SECONDS": env_int("SCIM_INBOUND_LEASE_SECONDS", 300, minimum=10),
    "INBOUND_SOURCE_CONCURRENCY": env_int("SCIM_INBOUND_SOURCE_CONCURRENCY", 2, minimum=1),
    "INBOUND_JOB_RETENTION_DAYS": env_int("SCIM_INBOUND_JOB_RETENTION_DAYS", 30, minimum=1),
}

# Read through directory.conf.directory_settings, never at import time.
DIRECTORY = {
    "CHANGE_EVENT_RETENTION_DAYS": env_int("CHANGE_EVENT_RETENTION_DAYS", 30, minimum=1),
}

# Read through provisioning.conf.provisioning_setting; see its DEFAULTS for every key.
PROVISIONING = {
    # Fernet keys for target credentials (comma-separated to rotate: the first encrypts). Default: SECRET_KEY.
    "SECRET_KEYS": [
        key.strip() for key in (env_secret("PROVISIONING_SECRET_KEY") or "").split(",") if key.strip()
    ],
    "LEASE_SECONDS": env_int("PROVISIONING_LEASE_SECONDS", 300, minimum=5),
    "REENQUEUE_AFTER_SECONDS": env_int("PROVISIONING_REENQUEUE_AFTER", 60, minimum=1),
    "MAX_FAILURES": env_int("PROVISIONING_MAX_FAILURES", 10, minimum=1),
    "BACKOFF_BASE": env_float("PROVISIONING_BACKOFF_BASE", 2.0, minimum=0.01),
    "BACKOFF_MAX": env_float("PROVISIONING_BACKOFF_MAX", 3600.0, minimum=1.0),
    "BATCH_SIZE": env_int("PROVISIONING_BATCH_SIZE", 50, minimum=1, maximum=500),
    "LOG_RETENTION_DAYS": env_int("PROVISIONING_LOG_RETENTION_DAYS", 30, minimum=1),
    "RUN_RETENTION_DAYS": env_int("PROVISIONING_RUN_RETENTION_DAYS", 90, minimum=1),
    "SAMPLE_RETENTION_DAYS": env_int("PROVISIONING_SAMPLE_RETENTION_DAYS", 8, minimum=8),
    "FULL_SYNC_PAGE_SIZE": env_int("PROVISIONING_FULL_SYNC_PAGE_SIZE", 1000, minimum=1),
    "RECONCILE_PAGE_SIZE": env_int("PROVISIONING_RECONCILE_PAGE_SIZE", 100, minimum=1),
}

# --- Operations ---------------------------------------------------------------

# /metrics answers a request bearing this token (or an operator's staff session); empty: sessions only.
METRICS_TOKEN = env_secret("METRICS_TOKEN") or ""
# /readyz answers 503 when more change events than this wait for the relay.
READYZ_MAX_OUTBOX_BACKLOG = env_int("READYZ_MAX_OUTBOX_BACKLOG", 10_000, minimum=0)
# json, console, or auto: JSON lines unless stderr is a terminal (observability/logs.py).
LOG_FORMAT = env_str("LOG_FORMAT") or "auto"
if LOG_FORMAT not in ("auto", "json", "console"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be auto, json or console, got {LOG_FORMAT!r}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"structured": {"()": "observability.logs.make_formatter", "style_name": LOG_FORMAT}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL") or "INFO"},
    # httpx logs every request URL at INFO; the provisioning log keeps what matters, redacted.
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}
