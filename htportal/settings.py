"""htportal settings: everything comes from the environment, with embedded defaults that run a
fresh checkout as it is (SQLite under var/, Redis on localhost, kept files under var/storage).

Variables: DATABASE_URL, REDIS_URL (redis:// or rediss://, password allowed), HTPORTAL_DEBUG,
HTPORTAL_SECRET_KEY, HTPORTAL_ALLOWED_HOSTS, HTPORTAL_VAR_DIR, HTPORTAL_STORAGE_DIR,
HTPORTAL_FEED_WINDOW, HTPORTAL_FEED_MIN_WINDOW, HTPORTAL_RECONCILE_GRACE_S,
HTPORTAL_RECONCILE_LOST_LIMIT; bounds on requests and deployment behind TLS
(docs/security.md): HTPORTAL_MAX_BODY_BYTES, HTPORTAL_MAX_UPLOAD_BYTES, HTPORTAL_MAX_JSON_DEPTH,
HTPORTAL_YAML_MAX_NODES, HTPORTAL_LOGIN_RATE, HTPORTAL_CACHE_URL, HTPORTAL_SECURE_COOKIES,
HTPORTAL_HSTS_SECONDS, HTPORTAL_HSTS_INCLUDE_SUBDOMAINS, HTPORTAL_HSTS_PRELOAD,
HTPORTAL_SSL_REDIRECT, HTPORTAL_BEHIND_TLS_PROXY.
"""
from __future__ import annotations

from pathlib import Path

import dj_database_url

from htportal.env import env_bool, env_int, env_list, env_rate, env_str, secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("HTPORTAL_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("HTPORTAL_DEBUG", False)
SECRET_KEY = secret_key(VAR_DIR)
ALLOWED_HOSTS = env_list("HTPORTAL_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("HTPORTAL_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "htportal.apps.HtportalConfig",  # start-up guards: no pickle (htportal/nopickle.py)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_rq",
    "campaigns",
    "workers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files without a separate web server (after collectstatic).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "htportal.middleware.ContentSecurityPolicyMiddleware",
    "htportal.middleware.UnreadableJobMiddleware",
]

ROOT_URLCONF = "htportal.urls"

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
            ],
        },
    },
]

WSGI_APPLICATION = "htportal.wsgi.application"
ASGI_APPLICATION = "htportal.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'htportal.sqlite3'}"),
        conn_max_age=60,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the portal read while the collector writes; the timeout rides out short locks.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]

STORAGE_DIR = Path(env_str("HTPORTAL_STORAGE_DIR", str(VAR_DIR / "storage")))
MEDIA_ROOT = STORAGE_DIR
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Redis: one URL for django-rq, the feeder and the workers. redis-py reads the password from
# the URL (redis://:PASSWORD@host:port/db) and TLS from the rediss:// scheme; certificate
# options ride on the query string (?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem).
REDIS_URL = env_str("REDIS_URL", "redis://localhost:6379/0")
# Every queue is JSON: django-rq's pages read SERIALIZER from here (not from RQ) and would fall
# back to pickle; htportal/nopickle.py refuses to start otherwise and disables the fallback.
RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600,
                "SERIALIZER": "rq.serializers.JSONSerializer"},
}
RQ = {"JOB_CLASS": "rq.job.Job", "SERIALIZER": "rq.serializers.JSONSerializer"}
# The feeder keeps at most this many jobs waiting in Redis per worker queue (e.g. xtb's three
# priorities together), topping it up from the task ledger. 0: size it from the live workers,
# max(FEED_MIN_WINDOW, 4 x the workers listening on that queue).
FEED_WINDOW = env_int("HTPORTAL_FEED_WINDOW", 0)
FEED_MIN_WINDOW = env_int("HTPORTAL_FEED_MIN_WINDOW", 2000)
# The collector's bounds (docs/pipeline.md, "What the collector refuses"): bytes of envelopes
# per batch, nesting depth of one envelope, bytes one kept file may decompress to.
COLLECT_MAX_BATCH_BYTES = env_int("HTPORTAL_COLLECT_MAX_BATCH_BYTES", 64 * 1024 * 1024)
COLLECT_MAX_DEPTH = env_int("HTPORTAL_COLLECT_MAX_DEPTH", 64)
COLLECT_MAX_KEPT_FILE_BYTES = env_int("HTPORTAL_COLLECT_MAX_KEPT_FILE_BYTES", 128 * 1024 * 1024)

# --- bounds on what users send (docs/security.md) ---------------------------------------------
# DRF's parsers ignore DATA_UPLOAD_MAX_MEMORY_SIZE; campaigns/api/parsers.py enforces these on
# Content-Length and while reading: an API body (a job definition, JSON) and a molecule upload,
# which is streamed to a file and may be much larger.
MAX_BODY_BYTES = env_int("HTPORTAL_MAX_BODY_BYTES", 10 * 1024 * 1024)
MAX_UPLOAD_BYTES = env_int("HTPORTAL_MAX_UPLOAD_BYTES", 1024 * 1024 * 1024)
# How deep a JSON or YAML value may nest: queries, API bodies, JSON Lines records.
MAX_JSON_DEPTH = env_int("HTPORTAL_MAX_JSON_DEPTH", 64)
# A job definition file may hold at most this many YAML nodes once its aliases are expanded
# (a "billion laughs" file of 600 bytes expands to 10^9).
YAML_MAX_NODES = env_int("HTPORTAL_YAML_MAX_NODES", 100_000)
# Wrong passwords allowed per username and client address on /api/token/ (DRF rate syntax).
LOGIN_RATE = env_rate("HTPORTAL_LOGIN_RATE", "10/min")
# Behind a TLS-terminating proxy (one hop) that sets X-Forwarded-Proto and X-Forwarded-For.
BEHIND_TLS_PROXY = env_bool("HTPORTAL_BEHIND_TLS_PROXY", False)
# The login throttle's counts live in the default cache: per process unless this names a shared
# Redis (redis://...), e.g. a database of REDIS_URL's server other than the queues'.
CACHE_URL = env_str("HTPORTAL_CACHE_URL", "")
if CACHE_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": CACHE_URL}}

# Reconcile (campaigns/services/reconciling.py): a queued or running task whose rq job ended
# (failed, finished, stopped) without a result, or whose worker stopped heartbeating, becomes a
# failed attempt this many seconds after the job ended (a result still on its way is collected
# first). A task whose job vanished from Redis goes back to pending with no attempt counted, at
# most RECONCILE_LOST_LIMIT times; then it fails with LostInRedis.
RECONCILE_GRACE_S = env_int("HTPORTAL_RECONCILE_GRACE_S", 60)
RECONCILE_LOST_LIMIT = env_int("HTPORTAL_RECONCILE_LOST_LIMIT", 5)

# Every endpoint needs a login: a token for scripts, the session for the browser.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Every error, DRF's own included, is {"error": "..."} (campaigns/api/base.py).
    "EXCEPTION_HANDLER": "campaigns.api.base.error_handler",
    "DEFAULT_PARSER_CLASSES": ["campaigns.api.parsers.BoundedJSONParser",
                               "rest_framework.parsers.FormParser",
                               "campaigns.api.parsers.BoundedMultiPartParser"],
    "DEFAULT_THROTTLE_RATES": {"login": LOGIN_RATE},
    # The client address for throttles: REMOTE_ADDR, or the proxy's X-Forwarded-For entry;
    # never the whole header, which a client could vary to dodge the login throttle.
    "NUM_PROXIES": 1 if BEHIND_TLS_PROXY else 0,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "htportal API",
    "DESCRIPTION": "Define, launch and watch high-throughput chemistry campaigns; export results.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # The interactive page's files come from drf-spectacular-sidecar, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
LOGIN_URL = "/dashboard/login/"  # every user, staff or not, logs in to the dashboard here

# Uploads of job definition files and records go through the admin; 64 MB is ample for a
# definition file with a receptor and stops a runaway upload.
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024 * 1024

# --- deployment behind TLS (all off by default so that a checkout runs on http://localhost) ----
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("HTPORTAL_SECURE_COOKIES", False)
SECURE_HSTS_SECONDS = env_int("HTPORTAL_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HTPORTAL_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("HTPORTAL_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("HTPORTAL_SSL_REDIRECT", False)
# Trust X-Forwarded-Proto only from a proxy that sets it (and strips the client's).
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The dashboard's pages load scripts and styles from this site only (htportal/middleware.py).
DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
                 "form-action 'self'; frame-ancestors 'none'")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("HTPORTAL_LOG_LEVEL", "INFO")},
}

# --- Worker Redis credentials (docs/security-redis.md) -----------------------------------------
# Workers run on machines we do not own: the scaler hands them the Redis user below, which may
# only take jobs and push results (`manage.py redis_acl` prints and applies its ACL rules),
# never the portal's own REDIS_URL. The password is generated once into var/ when unset.
from htportal.redis_credentials import generated_password  # noqa: E402

WORKER_REDIS_USER = env_str("HTPORTAL_WORKER_REDIS_USER", "htportal-worker")
WORKER_REDIS_PASSWORD = generated_password(VAR_DIR, variable="HTPORTAL_WORKER_REDIS_PASSWORD",
                                           filename="worker_redis_password")
# What workers get; blank: REDIS_URL with the worker user and password in place of the portal's
# (workers.scaler.credentials.worker_redis_url). Set it when workers reach Redis by another
# address than the portal (a public name, TLS).
WORKER_REDIS_URL = env_str("HTPORTAL_WORKER_REDIS_URL", "")
# When Redis refuses the worker user (its ACL rules not applied): "local" hands local pools the
# portal's REDIS_URL (they run beside the portal, as its user) and refuses SLURM/HTCondor
# pools; "never" refuses every pool; "always" hands every pool the portal's URL (not safe on
# machines you do not own). A portal URL without a password is handed out (with a warning):
# it holds no secret to leak.
WORKER_REDIS_FALLBACK = env_str("HTPORTAL_WORKER_REDIS_FALLBACK", "local")
if WORKER_REDIS_FALLBACK not in ("local", "never", "always"):
    from django.core.exceptions import ImproperlyConfigured  # noqa: E402

    raise ImproperlyConfigured(f"HTPORTAL_WORKER_REDIS_FALLBACK={WORKER_REDIS_FALLBACK!r} is "
                               f"not one of local, never, always")
# `manage.py redis_acl --apply` sends ACL SETUSER over this URL (a user allowed to run ACL).
REDIS_ADMIN_URL = env_str("HTPORTAL_REDIS_ADMIN_URL", REDIS_URL)

# The portal's own background jobs (upload imports, launches: campaigns/portal_jobs_rq.py) go
# to a queue of their own that grid workers never listen on, worked by
# `manage.py rqworker --serializer rq.serializers.JSONSerializer --job-class
# campaigns.portal_jobs_rq.PortalRqJob htportal-portal` (Procfile). HTPORTAL_MAX_UPLOAD_BYTES
# (above) bounds one molecule upload; a job silent for HTPORTAL_PORTAL_JOB_HEARTBEAT_S is failed.
PORTAL_JOBS_QUEUE = "htportal-portal"
RQ_QUEUES[PORTAL_JOBS_QUEUE] = {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 6 * 3600,
                                "SERIALIZER": "rq.serializers.JSONSerializer"}
UPLOAD_DIR = Path(env_str("HTPORTAL_UPLOAD_DIR", str(VAR_DIR / "uploads")))
PORTAL_JOB_TIMEOUT_S = env_int("HTPORTAL_PORTAL_JOB_TIMEOUT_S", 6 * 3600)
PORTAL_JOB_HEARTBEAT_S = env_int("HTPORTAL_PORTAL_JOB_HEARTBEAT_S", 300)

# --- SSH sessions opened by a person (docs/scaler.md, "Access points with a second factor") -----
# Pools whose access point wants a password or one-time code at login (OSPool's ap40...): the
# scaler runs their commands through an OpenSSH ControlMaster socket that `manage.py pool_login
# POOL` opened once, answering the host's prompts on the terminal. Comma-separated pool names.
SSH_SESSION_POOLS = env_list("HTPORTAL_SSH_SESSION_POOLS", [])
# Where the sockets, pinned known_hosts files and login notes live (mode 0700). A unix socket
# path has at most ~90 usable characters: pick a short directory if VAR_DIR is deep.
SSH_SESSION_DIR = Path(env_str("HTPORTAL_SSH_SESSION_DIR", str(VAR_DIR / "ssh")))
