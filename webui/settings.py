"""Django settings for Quarry, read from the environment and `.env`.

Every key is listed with its default in `.env.example`. A malformed value stops
start-up with a message that names the variable.
"""

import ipaddress
import os
import sys
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Names the process got from its real environment, before .env fills the gaps:
# `manage.py setup` tells by them where a value came from.
ENVIRONMENT_NAMES = frozenset(os.environ)
ENV_FILE = Path(env.str("QUARRY_ENV_FILE", default=str(BASE_DIR / ".env")))
if ENV_FILE.is_file():
    env.read_env(ENV_FILE, overwrite=False)


# `manage.py setup` writes .env and reports bad values itself, so it must start
# even when one does not parse: the default stands in and the problem is listed.
_RUNNING_SETUP = sys.argv[1:2] == ["setup"]
INVALID_SETTINGS: list[str] = []


def _invalid(message: str) -> None:
    """Stop start-up with a message naming the variable (setup: list it instead)."""
    if not _RUNNING_SETUP:
        raise ImproperlyConfigured(message)
    INVALID_SETTINGS.append(message)


def _setting(name: str, cast, default):
    """Read one variable; a value that does not parse names the variable."""
    try:
        return cast(name, default=default)
    except (ValueError, TypeError, ImproperlyConfigured) as exc:
        _invalid(f"Setting {name} is invalid: {exc}")
        return default


def _positive(name: str, value: float) -> float:
    if value <= 0:
        _invalid(f"Setting {name} must be positive, got {value}")
    return value


def _port_range(name: str, value: str) -> range:
    """`9092-9101` or a single port; anything else names the variable."""
    first, _, last = value.strip().partition("-")
    try:
        ports = range(int(first), int(last or first) + 1)
    except ValueError:
        ports = range(0)
    if not ports or ports[0] < 1 or ports[-1] > 65535:
        _invalid(
            f"Setting {name} must be a port or a range such as 9092-9101, got {value!r}"
        )
        return range(9092, 9102)
    return ports


def _networks(name: str, values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            _invalid(
                f"Setting {name} holds {value!r}, which is not an IP address or network"
            )
            return ["127.0.0.1", "::1"]
    return values


SECRET_KEY = env.str("SECRET_KEY", default="")
# `manage.py setup` is what writes the key, so it may start without one.
if not SECRET_KEY and _RUNNING_SETUP:
    SECRET_KEY = "setup-in-progress"
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "Setting SECRET_KEY is missing: run `python manage.py setup --noinput` "
        "to write .env, or set SECRET_KEY in the environment"
    )
DEBUG = _setting("DEBUG", env.bool, False)
ALLOWED_HOSTS = _setting("ALLOWED_HOSTS", env.list, ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = _setting("CSRF_TRUSTED_ORIGINS", env.list, [])

DATA_DIR = Path(_setting("DATA_DIR", env.str, str(BASE_DIR / "data"))).expanduser()
if not DATA_DIR.is_absolute():
    DATA_DIR = (BASE_DIR / DATA_DIR).resolve()
# Relative roots mean the same folders to every process, whatever its cwd.
DOCUMENT_ROOTS = [
    BASE_DIR / Path(p).expanduser()
    for p in _setting("DOCUMENT_ROOTS", env.list, [str(Path.home())])
]
WEB_HOST = _setting("WEB_HOST", env.str, "127.0.0.1")
WEB_PORT = int(_positive("WEB_PORT", _setting("WEB_PORT", env.int, 8000)))
REDIS_URL = _setting("REDIS_URL", env.str, "")
EMBEDDING_MODEL = _setting("EMBEDDING_MODEL", env.str, "minilm-l6-int8")

# Metrics (webui.metrics). prometheus_client chooses multiprocess mode when it is
# first imported, which in every process comes after the settings: so the
# directory is exported here. It is emptied by the launcher, never by a process.
PROMETHEUS_MULTIPROC_DIR = Path(
    _setting("PROMETHEUS_MULTIPROC_DIR", env.str, "") or DATA_DIR / "metrics"
).expanduser()
if not PROMETHEUS_MULTIPROC_DIR.is_absolute():
    PROMETHEUS_MULTIPROC_DIR = (BASE_DIR / PROMETHEUS_MULTIPROC_DIR).resolve()
try:
    PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
except OSError as exc:
    _invalid(
        f"Setting PROMETHEUS_MULTIPROC_DIR: cannot create "
        f"{PROMETHEUS_MULTIPROC_DIR}: {exc}"
    )
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)
METRICS_PORT_RANGE = _port_range(
    "METRICS_PORT_RANGE", _setting("METRICS_PORT_RANGE", env.str, "9092-9101")
)
METRICS_ALLOWED_IPS = _networks(
    "METRICS_ALLOWED_IPS",
    _setting("METRICS_ALLOWED_IPS", env.list, ["127.0.0.1", "::1"]),
)
METRICS_TOKEN = _setting("METRICS_TOKEN", env.str, "")

# Indexing
MAX_FILE_BYTES = int(
    _positive("MAX_FILE_BYTES", _setting("MAX_FILE_BYTES", env.int, 50 * 1024 * 1024))
)
# Names (glob patterns) of files and folders the scan never enters: hidden ones,
# tool caches, and the page sources Sphinx copies beside its HTML.
SCAN_IGNORE = _setting(
    "SCAN_IGNORE", env.list, [".*", "__pycache__", "node_modules", "_sources"]
)
DEFAULT_CHUNK_SIZE = _setting("DEFAULT_CHUNK_SIZE", env.int, 800)
DEFAULT_CHUNK_OVERLAP = _setting("DEFAULT_CHUNK_OVERLAP", env.int, 100)
EMBEDDING_BATCH_SIZE = int(
    _positive("EMBEDDING_BATCH_SIZE", _setting("EMBEDDING_BATCH_SIZE", env.int, 16))
)
EMBEDDING_THREADS = _setting("EMBEDDING_THREADS", env.int, 0)
PROGRESS_INTERVAL_SECONDS = _setting("PROGRESS_INTERVAL_SECONDS", env.float, 1.0)
RECENT_OPERATIONS_HOURS = _setting("RECENT_OPERATIONS_HOURS", env.float, 24.0)
HEARTBEAT_SECONDS = _positive(
    "HEARTBEAT_SECONDS", _setting("HEARTBEAT_SECONDS", env.float, 15.0)
)
OPERATION_STALE_SECONDS = _positive(
    "OPERATION_STALE_SECONDS", _setting("OPERATION_STALE_SECONDS", env.int, 120)
)
if OPERATION_STALE_SECONDS < 3 * HEARTBEAT_SECONDS:
    _invalid(
        "Setting OPERATION_STALE_SECONDS must be at least three HEARTBEAT_SECONDS, "
        "or live operations are failed as stale"
    )

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_q",
    "django_prometheus",
    "collections_app",
    "operations",
    "audit",
    "webui",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "webui.urls"
ASGI_APPLICATION = "webui.asgi.application"
WSGI_APPLICATION = None

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
                "operations.context_processors.active_operations",
            ],
        },
    },
]

# Database: SQLite in DATA_DIR unless DATABASE_URL says otherwise.
SQLITE_BUSY_TIMEOUT = _positive(
    "SQLITE_BUSY_TIMEOUT", _setting("SQLITE_BUSY_TIMEOUT", env.float, 30.0)
)
if SQLITE_BUSY_TIMEOUT < 20:
    _invalid("Setting SQLITE_BUSY_TIMEOUT must be at least 20 seconds")
_default_db_url = f"sqlite:///{DATA_DIR / 'quarry.sqlite3'}"
_database_url = _setting("DATABASE_URL", env.str, "") or _default_db_url
try:
    DATABASES = {"default": environ.Env.db_url_config(_database_url)}
except (ValueError, KeyError, ImproperlyConfigured) as exc:
    _invalid(f"Setting DATABASE_URL is invalid: {exc}")
    DATABASES = {"default": environ.Env.db_url_config(_default_db_url)}
# django-environ turns any scheme into an ENGINE; Quarry runs on these two only.
if DATABASES["default"].get("ENGINE") not in (
    "django.db.backends.sqlite3",
    "django.db.backends.postgresql",
):
    _invalid(
        f"Setting DATABASE_URL is invalid: {_database_url.partition(':')[0]}:// "
        "is neither sqlite:// nor postgres://"
    )
    DATABASES = {"default": environ.Env.db_url_config(_default_db_url)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    _sqlite_path = Path(DATABASES["default"]["NAME"])
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock at BEGIN, so the busy timeout applies
        # to read-then-write transactions instead of failing at the upgrade.
        "transaction_mode": "IMMEDIATE",
        "timeout": SQLITE_BUSY_TIMEOUT,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {
        # A file, not memory: a real worker process shares it in the tests.
        "NAME": str(_sqlite_path.with_name(f"test_{_sqlite_path.name}")),
    }
else:
    # Test runs that overlap on one server each get their own test database.
    _suffix = env.str("QUARRY_TEST_DB_SUFFIX", default="")
    if _suffix:
        DATABASES["default"]["TEST"] = {
            "NAME": f"test_{DATABASES['default']['NAME']}_{_suffix}"
        }
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # Django-Q2 keeps cluster stats here; a file cache is shared by processes
    # without adding writes to SQLite.
    "queue": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(DATA_DIR / "cache" / "queue"),
    },
}

# Task queue. Retry must exceed timeout, or a long operation is handed to a
# second worker while the first still runs.
OPERATION_TIMEOUT = int(
    _positive("OPERATION_TIMEOUT", _setting("OPERATION_TIMEOUT", env.int, 4 * 3600))
)
QUEUE_RETRY = int(
    _positive("QUEUE_RETRY", _setting("QUEUE_RETRY", env.int, OPERATION_TIMEOUT + 600))
)
if QUEUE_RETRY <= OPERATION_TIMEOUT:
    _invalid(
        f"Setting QUEUE_RETRY ({QUEUE_RETRY}) must be greater than "
        f"OPERATION_TIMEOUT ({OPERATION_TIMEOUT}), or a running operation is "
        "handed to a second worker"
    )
    # Only setup gets here; the default stands in, so Django-Q2 adds no warning.
    QUEUE_RETRY = OPERATION_TIMEOUT + 600
WORKER_COUNT = int(_positive("WORKER_COUNT", _setting("WORKER_COUNT", env.int, 2)))
Q_CLUSTER = {
    # Deployments (or test runs) sharing one Redis must not take each other's tasks.
    "name": _setting("QUEUE_NAME", env.str, "quarry"),
    "workers": WORKER_COUNT,
    "timeout": OPERATION_TIMEOUT,
    "retry": QUEUE_RETRY,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 500,
    "poll": 0.3,
    "cache": "queue",
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
# Tests run tasks inline when they ask for it.
Q_CLUSTER["sync"] = _setting("QUEUE_SYNC", env.bool, False)

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 1000},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "collections:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = _setting("TIME_ZONE", env.str, "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Files are served from the finders (static/ and the apps); no collectstatic step.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOG_LEVEL = _setting("LOG_LEVEL", env.str, "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "filters": {"quiet_security": {"()": "webui.logfilters.QuietSecurityEvents"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "line",
            "filters": ["quiet_security"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"level": "INFO"},
        "django-q": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "asyncio": {"level": "WARNING"},
        # Malformed PDFs are expected input; their outcome is on the Document.
        "pypdf": {"level": "ERROR"},
    },
}
