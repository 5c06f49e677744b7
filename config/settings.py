"""Settings for the GP Connect document viewer, read from the environment.

Every variable is listed with a safe dummy value in `.env.example`. Defaults are the
secure ones (DEBUG off, Secure cookies), except in demo mode (`DEMO_MODE=1`, what
`make demo` sets), which runs on a laptop over plain http with nothing configured.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Return the variable as a boolean; accepts 1/0, true/false, yes/no, on/off."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {value!r}")


def env_int(name: str, default: int) -> int:
    """Return the variable as an integer, or `default` when unset or empty."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def env_list(name: str, default: str = "") -> list[str]:
    """Return a comma-separated variable as a list of non-empty, stripped items."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_secret(name: str, default: str = "") -> str:
    """Return NAME, or the contents of the file named by NAME_FILE (Docker-style secrets)."""
    path = os.environ.get(f"{name}_FILE", "").strip()
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"{name}_FILE points at {path!r}, which cannot be read: {exc}"
            ) from None
    return os.environ.get(name, default)


def _demo_secret_key(path: Path) -> str:
    """Return the per-checkout demo secret, generating it on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
        # link() is atomic and never replaces: if two processes race, both read the winner's key.
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


# Local state (SQLite database, embedded Celery broker, demo secret) lives here; git ignores var/.
VAR_DIR = BASE_DIR / (os.environ.get("VAR_DIR", "").strip() or "var")

# Demo mode: run on a laptop over http with no configuration. Never in production.
DEMO_MODE = env_bool("DEMO_MODE", False)

# Core
DEBUG = env_bool("DEBUG", DEMO_MODE)
# Schema tools sign nothing and serve nothing, so `manage.py makemigrations --check` runs
# without a secret (as checks on a bare checkout do). Everything else still needs one.
_KEYLESS_COMMANDS = {"makemigrations", "showmigrations"}
_command = sys.argv[1] if len(sys.argv) > 1 and Path(sys.argv[0]).name == "manage.py" else ""

SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    if DEMO_MODE:
        SECRET_KEY = _demo_secret_key(VAR_DIR / "demo-secret-key")
    elif _command in _KEYLESS_COMMANDS:
        SECRET_KEY = secrets.token_urlsafe(50)  # never used: these commands sign nothing
    elif not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off; see .env.example"
        )
    else:
        # A DEBUG developer machine: a fresh key per process only logs everyone out on restart.
        SECRET_KEY = secrets.token_urlsafe(50)
elif SECRET_KEY.startswith("change-me") and not DEBUG:
    raise ImproperlyConfigured("SECRET_KEY is still the placeholder from .env.example")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "axes",
    "csp",
    "viewer",
]

MIDDLEWARE = [
    "viewer.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from the app server itself (gunicorn has no static handler): compressed,
    # with long cache headers for hashed names, and no Django request work per file.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "viewer.middleware.IdleTimeoutMiddleware",
    "viewer.middleware.AbsoluteSessionTimeoutMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "viewer.middleware.HtmxSignInRedirectMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into its own response.
    "axes.middleware.AxesMiddleware",
]

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
                "viewer.context_processors.demo_mode",
                "viewer.context_processors.csp_nonce",
                "viewer.roles.navigation",
            ],
        },
    },
]

# Database: DATABASE_URL (postgres://…) in production and CI; SQLite under VAR_DIR otherwise
DATABASE_URL = os.environ.get("DATABASE_URL", "").strip()
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
    }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "db.sqlite3"),
            # Each thread keeps its connection between requests, as with PostgreSQL above:
            # closing the last one checkpoints the write-ahead log, a millisecond or more
            # added to every request.
            "CONN_MAX_AGE": 60,
            # The web server and the Celery worker write at once: write-ahead logging lets
            # readers carry on, IMMEDIATE transactions queue writers instead of failing
            # with "database is locked", and NORMAL syncs once per checkpoint, not per commit.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }

# Redis: REDIS_URL backs the cache and Celery; without it, in-process cache and a file broker
REDIS_URL = os.environ.get("REDIS_URL", "").strip()
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "viewer",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Celery (read by config/celery.py through the CELERY_ namespace)
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
else:
    # kombu's filesystem transport: one folder is the queue for producers and the worker
    # alike, so a laptop needs no broker server. Not for production: it does not scale.
    # Consumed messages are deleted (store_processed is off), so the folder does not grow.
    CELERY_DIR = VAR_DIR / "celery"
    for _folder in ("queue", "control", "results"):
        (CELERY_DIR / _folder).mkdir(parents=True, exist_ok=True)
    # The hostname means nothing to this transport; naming one stops kombu warning about it.
    CELERY_BROKER_URL = "filesystem://localhost/"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_DIR / "queue"),
        "data_folder_out": str(CELERY_DIR / "queue"),
        "control_folder": str(CELERY_DIR / "control"),
    }
    CELERY_RESULT_BACKEND = f"file://{CELERY_DIR / 'results'}"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)

# Celery beat: purge expired prefetched documents (and those of ended sessions) each minute.
CELERY_BEAT_SCHEDULE = {
    "purge-prefetched-documents": {
        "task": "viewer.tasks.purge_prefetched_documents",
        "schedule": 60.0,
    },
    "purge-converted-documents": {
        "task": "viewer.tasks.purge_converted_documents",
        "schedule": 60.0,
    },
    # Bookings whose outcome is not known yet, and those whose request stopped half way.
    "recheck-bookings": {
        "task": "viewer.tasks.recheck_bookings",
        "schedule": 60.0,
    },
}
# The worker takes one task at a time per process: prefetches are long network reads.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True

# Prefetch: large documents are fetched when their list is shown, stored only encrypted
# (Tink streaming AEAD) through the "prefetch" storage, and purged after PREFETCH_TTL_MINUTES.
PREFETCH_ENABLED = env_bool("PREFETCH_ENABLED", True)
PREFETCH_MIN_MB = float(os.environ.get("PREFETCH_MIN_MB", "").strip() or 1)
PREFETCH_MAX_PER_PATIENT = env_int("PREFETCH_MAX_PER_PATIENT", 10)
PREFETCH_TTL_MINUTES = env_int("PREFETCH_TTL_MINUTES", 15)
PREFETCH_MAX_RETRIES = env_int("PREFETCH_MAX_RETRIES", 3)
# A Tink JSON keyset (cleartext; keep it in a secret store). Without one, a keyset is
# generated into VAR_DIR on first use: fine for one machine, not for several.
PREFETCH_KEYSET = env_secret("PREFETCH_KEYSET")
PREFETCH_KEYSET_PATH = VAR_DIR / "prefetch-keyset.json"

# Previews and printing (viewer/services/previews.py, printing.py): formats browsers cannot
# show are converted by Celery within these limits; the results are encrypted blobs in the
# "prefetch" storage, purged like prefetched documents (PREFETCH_TTL_MINUTES, sign-out).
PREVIEW_MAX_PAGES = env_int("PREVIEW_MAX_PAGES", 100)
PREVIEW_MAX_PIXELS = env_int("PREVIEW_MAX_PIXELS", 50_000_000)  # per image page
CONVERSION_TIMEOUT_SECONDS = env_int("CONVERSION_TIMEOUT_SECONDS", 60)
LIBREOFFICE_PATH = os.environ.get("LIBREOFFICE_PATH", "").strip() or "soffice"
PRINT_FONT_PATH = (
    os.environ.get("PRINT_FONT_PATH", "").strip()
    or "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
)
BATCH_PRINT_MAX_DOCUMENTS = env_int("BATCH_PRINT_MAX_DOCUMENTS", 20)
BATCH_PRINT_MAX_PAGES = env_int("BATCH_PRINT_MAX_PAGES", 300)  # a print's pages, cover included

# Sessions and cookies: short idle timeout; Secure cookies unless turned off for http demos
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEMO_MODE)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("SESSION_IDLE_TIMEOUT_MINUTES", 15) * 60
# The idle time-out: requests push the session's expiry on, at most once a minute
# (viewer.middleware.IdleTimeoutMiddleware) rather than with a database write per request.
SESSION_SAVE_EVERY_REQUEST = False
SESSION_REFRESH_SECONDS = min(60, SESSION_COOKIE_AGE // 10)  # a tenth of a short time-out
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# However active the user is, sign them out this long after they signed in.
SESSION_ABSOLUTE_TIMEOUT_HOURS = env_int("SESSION_ABSOLUTE_TIMEOUT_HOURS", 8)

# `__Host-` cookies are bound to this host and path "/" and need Secure, so only with it.
if SECURE_COOKIES:
    SESSION_COOKIE_NAME = "__Host-sessionid"
    CSRF_COOKIE_NAME = "__Host-csrftoken"

# HTTPS: redirect http to https and send HSTS, except in demo mode (plain http on a laptop).
# Behind a TLS-terminating proxy, SECURE_PROXY_SSL_HEADER says which header marks https.
HTTPS_ONLY = env_bool("HTTPS_ONLY", not DEMO_MODE and not DEBUG)
SECURE_SSL_REDIRECT = HTTPS_ONLY
SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 31_536_000 if HTTPS_ONLY else 0)
# The app's own host name and any below it are https-only; preload marks it as eligible for
# the browsers' built-in list (submitting it there is a separate, deliberate step).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", HTTPS_ONLY)
SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", HTTPS_ONLY)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain http
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Security headers
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Content-Security-Policy (django-csp 4): our own origin only; the one inline script (the
# NHS.UK `js-enabled` snippet) carries the per-response nonce. htmx runs without eval and
# without its injected indicator style (htmx-config in base.html); no inline styles.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "img-src": [SELF, "data:", "blob:"],
        # NHS.UK frontend's precompiled CSS loads Frutiger from the NHS's own font host.
        "font-src": [SELF, "https://assets.nhs.uk"],
        "connect-src": [SELF],
        "frame-src": [SELF],
        "worker-src": [SELF, "blob:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [SELF],
    }
}

# Authentication
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "viewer:home"
LOGOUT_REDIRECT_URL = "viewer:home"
# django-axes checks for a lock-out before the password is checked at all.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Django's ModelBackend, loading the user's profile with the user (viewer/roles.py).
    "viewer.roles.ProfileBackend",
]
# Lock the username, not the address: a whole practice signs in from one NAT address,
# so five typos anywhere in it would lock everyone out. axes.W006 warns about exactly that.
AXES_LOCKOUT_PARAMETERS = ["username"]
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15))
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
CSRF_FAILURE_VIEW = "viewer.error_pages.csrf_failure"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Internationalisation: audit times are stored in UTC and shown in UK time
LANGUAGE_CODE = "en-gb"
TIME_ZONE = "Europe/London"
USE_I18N = True
USE_TZ = True

# Storage: the prefetched documents' encrypted blobs go through the "prefetch" storage, on
# the local filesystem unless PREFETCH_STORAGE_BACKEND names another (e.g. django-storages'
# "storages.backends.s3.S3Storage", with its options as JSON in PREFETCH_STORAGE_OPTIONS)
# so that several web servers and workers share them.
_prefetch_backend = os.environ.get("PREFETCH_STORAGE_BACKEND", "").strip()
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "prefetch": {
        "BACKEND": _prefetch_backend or "django.core.files.storage.FileSystemStorage",
        "OPTIONS": (
            json.loads(os.environ.get("PREFETCH_STORAGE_OPTIONS", "").strip() or "{}")
            if _prefetch_backend
            else {
                "location": str(VAR_DIR / "prefetch"),
                "directory_permissions_mode": 0o700,
                "file_permissions_mode": 0o600,
            }
        ),
    },
}

# Static files: our own, plus NHS.UK frontend straight from node_modules (npm ci, not git)
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("nhsuk", BASE_DIR / "node_modules" / "nhsuk-frontend" / "dist" / "nhsuk"),
    # pdf.js renders PDF previews the same in every browser: its code, its worker, the
    # standard fonts and character maps PDFs refer to without embedding, and its decoders.
    *(
        (f"pdfjs/{part}", BASE_DIR / "node_modules" / "pdfjs-dist" / part)
        for part in ("build", "standard_fonts", "cmaps", "wasm", "iccs")
    ),
]

# In demo mode WhiteNoise serves straight from the finders, so `make demo` needs no
# collectstatic; in production run `manage.py collectstatic` into STATIC_ROOT.
WHITENOISE_USE_FINDERS = DEMO_MODE or DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
if WHITENOISE_USE_FINDERS:
    STATIC_ROOT.mkdir(exist_ok=True)  # empty until collectstatic; WhiteNoise warns if missing

# Server-Timing header with the app's time per response: for benchmarks, off by default.
SERVER_TIMING = env_bool("SERVER_TIMING", False)
if SERVER_TIMING:
    MIDDLEWARE.insert(0, "viewer.server_timing.ServerTimingMiddleware")

# Logging: one line per record to stdout, with the request id when there is one
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "viewer.request_id.RequestIdLogFilter"}},
    "formatters": {
        "line": {
            "format": "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s",
        }
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "filters": ["request_id"],
            "formatter": "line",
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    # Replace Django's own console handlers so every line goes through the one format.
    "loggers": {
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        # django-axes says INFO at every start and sign-in; the audit trail records sign-ins.
        "axes": {"level": "WARNING"},
        # httpx logs every request URL at INFO, and PDS and find-patient URLs carry the NHS
        # number: patient identifiers must not reach the logs (UX-SECURITY.md).
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# GP Connect: read by viewer.services.gpconnect_client_config() and nowhere else.
# The defaults point at the local sandbox and use clearly fake test identifiers.
GPCONNECT_CONSUMER_ASID = os.environ.get("GPCONNECT_CONSUMER_ASID", "999999999999")
GPCONNECT_CONSUMER_ODS_CODE = os.environ.get("GPCONNECT_CONSUMER_ODS_CODE", "X99999")
GPCONNECT_CONSUMER_ORG_NAME = os.environ.get(
    "GPCONNECT_CONSUMER_ORG_NAME", "GP Connect document viewer (test organisation)"
)
GPCONNECT_JWT_ISSUER = os.environ.get("GPCONNECT_JWT_ISSUER", "http://127.0.0.1:8000")
GPCONNECT_SPINE_PROXY_URL = os.environ.get("GPCONNECT_SPINE_PROXY_URL", "").strip() or None
GPCONNECT_SDS_URL = os.environ.get(
    "GPCONNECT_SDS_URL", "http://127.0.0.1:8001/spine-directory/FHIR/R4"
)
GPCONNECT_SDS_API_KEY = env_secret("GPCONNECT_SDS_API_KEY") or None
GPCONNECT_PDS_URL = os.environ.get(
    "GPCONNECT_PDS_URL", "http://127.0.0.1:8001/personal-demographics/FHIR/R4"
)
GPCONNECT_PDS_API_KEY = env_secret("GPCONNECT_PDS_API_KEY") or None
GPCONNECT_TLS_CLIENT_CERT = os.environ.get("GPCONNECT_TLS_CLIENT_CERT", "").strip() or None
GPCONNECT_TLS_CLIENT_KEY = os.environ.get("GPCONNECT_TLS_CLIENT_KEY", "").strip() or None
GPCONNECT_TLS_CA_BUNDLE = os.environ.get("GPCONNECT_TLS_CA_BUNDLE", "").strip() or None
GPCONNECT_CONNECT_TIMEOUT = env_int("GPCONNECT_CONNECT_TIMEOUT", 5)
GPCONNECT_READ_TIMEOUT = env_int("GPCONNECT_READ_TIMEOUT", 30)
GPCONNECT_MAX_DOCUMENT_MB = env_int("GPCONNECT_MAX_DOCUMENT_MB", 5)
# Appointments: we are the booking organisation. Our organisation type goes in every free-slot
# search (it decides which slots a practice offers us) and both go in every booking.
GPCONNECT_ORGANISATION_TYPE = os.environ.get("GPCONNECT_ORGANISATION_TYPE", "gp-practice").strip()
# The phone number a practice calls us on about a booking; booking is refused without one.
# Demo mode gives a number from Ofcom's range for drama (never a real line).
GPCONNECT_ORGANISATION_PHONE = os.environ.get(
    "GPCONNECT_ORGANISATION_PHONE", "0113 496 0999" if DEMO_MODE else ""
).strip()
# After a booking whose answer was lost (a timeout, a gateway error), the practice may still
# make it for this long: until then the booking is "unknown" and its slot stays locked.
GPCONNECT_BOOKING_SETTLE_SECONDS = env_int("GPCONNECT_BOOKING_SETTLE_SECONDS", 180)
