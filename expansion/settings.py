"""The one settings module. Everything that differs between machines comes from the environment.

Embedded default (no DATABASE_URL / REDIS_URL): SQLite and in-process tasks, so the demo
runs on a bare machine. With them set: PostgreSQL and Celery workers on Redis.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("UPLIFT_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me-in-production-0123456789")
ALLOWED_HOSTS = [
    h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h
]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]
# Public origin used to build absolute links in emails (upgrade, unsubscribe).
PUBLIC_BASE_URL = os.environ.get("UPLIFT_PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "accounts",
    "billing",
    "triggers",
    "offers",
    "expansion",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "accounts.security.SecurityHeadersMiddleware",
    # Sessions, login, messages and htmx are for pages: the key-authenticated API skips them
    # (accounts/middleware.py).
    "accounts.middleware.PageSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "accounts.middleware.PageAuthenticationMiddleware",
    "accounts.middleware.PageMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "accounts.middleware.PageHtmxMiddleware",
    "accounts.middleware.WorkspaceScopeMiddleware",
]

ROOT_URLCONF = "expansion.urls"
WSGI_APPLICATION = "expansion.wsgi.application"

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
    }
]

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "uplift.sqlite3"),
            "OPTIONS": {"timeout": 20},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "accounts:login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "expansion.cache.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Celery: a real Redis broker when REDIS_URL is set; otherwise tasks run in-process.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("UPLIFT_TASK_QUEUE", "uplift")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 300}
CELERY_BEAT_SCHEDULE = {
    "sweep-evaluation-outbox": {"task": "triggers.tasks.sweep_evaluation_outbox", "schedule": timedelta(seconds=30)},
    "sweep-pending-deliveries": {"task": "offers.tasks.sweep_pending_deliveries", "schedule": timedelta(seconds=60)},
    "ensure-event-partitions": {"task": "triggers.tasks.ensure_event_partitions", "schedule": timedelta(hours=6)},
    "sweep-trigger-rules": {"task": "triggers.tasks.sweep_rules", "schedule": timedelta(minutes=15)},
    "fold-meters": {"task": "triggers.tasks.fold_meters", "schedule": timedelta(seconds=60)},
    "prune-evaluation-outbox": {"task": "triggers.tasks.prune_evaluation_outbox", "schedule": timedelta(minutes=10)},
}
CELERY_BEAT_SCHEDULE["stripe-reconcile"] = {"task": "billing.tasks.reconcile_all", "schedule": timedelta(hours=1)}
CELERY_BEAT_SCHEDULE["stripe-event-sweep"] = {
    "task": "billing.tasks.sweep_stripe_events",
    "schedule": timedelta(seconds=60),
}

EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_TIMEOUT = int(os.environ.get("UPLIFT_EMAIL_TIMEOUT", "10"))  # seconds; a stalled SMTP server is retried
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
else:
    # No SMTP server configured (the embedded demo): print messages instead of sending them.
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = os.environ.get("UPLIFT_FROM_EMAIL", "Uplift <offers@uplift.localhost>")

# Stripe: api_base lets tests and the demo point the official library at a local emulator.
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "")
# "stripe" (real API) or "localstripe" (the emulator's older dialect; see docs/billing.md).
STRIPE_DIALECT = os.environ.get("STRIPE_DIALECT", "localstripe" if STRIPE_API_BASE else "stripe")
# Fernet keys (comma-separated, newest first) encrypting workspaces' Stripe secrets at rest.
UPLIFT_ENCRYPTION_KEYS = [k for k in os.environ.get("UPLIFT_ENCRYPTION_KEYS", "").split(",") if k]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "accounts.api_errors.json_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Uplift API",
    "DESCRIPTION": "Usage ingestion (Segment-compatible), in-app prompts and the management API.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI assets from the drf-spectacular-sidecar package: nothing is fetched from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Production behind TLS (UPLIFT_SECURE=1): HTTPS only, secure cookies, HSTS. `manage.py check --deploy`
# is clean with these (tests/test_security.py). Off by default so the local demo works over http.
UPLIFT_SECURE = env_bool("UPLIFT_SECURE", False)
SECURE_SSL_REDIRECT = UPLIFT_SECURE
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancer probes speak plain http
SESSION_COOKIE_SECURE = UPLIFT_SECURE
CSRF_COOKIE_SECURE = UPLIFT_SECURE
SECURE_HSTS_SECONDS = int(os.environ.get("UPLIFT_HSTS_SECONDS", "31536000")) if UPLIFT_SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("UPLIFT_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("UPLIFT_HSTS_PRELOAD", True)
if env_bool("UPLIFT_BEHIND_PROXY", False):
    # Only when a proxy we control sets this header: it decides whether a request counts as https.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Login brute-force protection (accounts/throttle.py): failures per account+IP before backoff starts,
# the first lock, its cap, and a per-IP budget across accounts (password spraying).
LOGIN_FREE_FAILURES = int(os.environ.get("UPLIFT_LOGIN_FREE_FAILURES", "5"))
LOGIN_LOCK_BASE_SECONDS = 30
LOGIN_LOCK_MAX_SECONDS = 15 * 60
LOGIN_IP_FAILURES_PER_WINDOW = int(os.environ.get("UPLIFT_LOGIN_IP_FAILURES", "50"))
# API key guessing: invalid keys per client IP per window before answering 429.
API_KEY_FAILURES_PER_WINDOW = int(os.environ.get("UPLIFT_API_KEY_FAILURES", "30"))
THROTTLE_WINDOW_SECONDS = 15 * 60

# How long a signed upgrade link stays valid.
UPGRADE_LINK_MAX_AGE = timedelta(days=int(os.environ.get("UPLIFT_UPGRADE_LINK_DAYS", "14")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("UPLIFT_LOG_LEVEL", "INFO")},
}

# Per write key, requests per second accepted by the ingestion API (429 + Retry-After above it).
INGEST_RATE_LIMIT_PER_SECOND = int(os.environ.get("UPLIFT_INGEST_RATE_LIMIT", "2000"))
