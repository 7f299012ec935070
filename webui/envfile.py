"""Reading and writing `.env`: the keys Quarry knows, their defaults, their checks.

Used by `manage.py setup`. Values come from the environment first, then the
existing `.env`, then the defaults below; secrets are generated once and kept.
"""

import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse


class InvalidValue(ValueError):
    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def _port(value: str) -> str:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError("must be a port number between 1 and 65535")
    return value


def _positive_int(value: str) -> str:
    if not value.isdigit() or int(value) < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def _database_url(value: str) -> str:
    if value and urlparse(value).scheme not in (
        "sqlite",
        "postgres",
        "postgresql",
        "pgsql",
    ):
        raise ValueError("must be empty (SQLite in DATA_DIR) or a postgres:// URL")
    return value


def _redis_url(value: str) -> str:
    if value and urlparse(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be empty (no Redis) or a redis:// URL")
    return value


def _roots(value: str) -> str:
    if not [p for p in value.split(",") if p.strip()]:
        raise ValueError("must name at least one folder")
    return value


def _any(value: str) -> str:
    return value


@dataclass(frozen=True)
class Key:
    name: str
    default: Callable[[], str]
    comment: str
    check: Callable[[str], str] = _any
    secret: bool = False


KEYS = [
    Key(
        "SECRET_KEY",
        lambda: secrets.token_urlsafe(50),
        "Django's secret; generated",
        secret=True,
    ),
    Key("DATA_DIR", lambda: "./data", "Database, caches and metrics live here"),
    Key(
        "DOCUMENT_ROOTS",
        lambda: str(Path.home()),
        "Comma-separated folders that sources must live in",
        _roots,
    ),
    Key("WEB_HOST", lambda: "127.0.0.1", "Address the web server listens on"),
    Key("WEB_PORT", lambda: "8000", "Port the web server listens on", _port),
    Key(
        "ALLOWED_HOSTS", lambda: "127.0.0.1,localhost", "Host names the site answers to"
    ),
    Key(
        "DATABASE_URL",
        lambda: "",
        "Empty: SQLite in DATA_DIR; or postgres://...",
        _database_url,
    ),
    Key(
        "REDIS_URL",
        lambda: "",
        "Empty: ORM broker; or redis://... for broker and events",
        _redis_url,
    ),
    Key(
        "WORKER_COUNT", lambda: "2", "Worker processes of the task queue", _positive_int
    ),
]
KEYS_BY_NAME = {key.name: key for key in KEYS}


def read(path: Path) -> dict[str, str]:
    """Key/value pairs of a .env file (simple KEY=VALUE lines, # comments)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def resolve(
    existing: dict[str, str], environ: dict[str, str] | None = None
) -> dict[str, tuple[str, str]]:
    """Each key's value and where it came from: environment, .env or default."""
    environ = dict(os.environ if environ is None else environ)
    chosen: dict[str, tuple[str, str]] = {}
    for key in KEYS:
        if key.name in environ:
            value, origin = environ[key.name], "environment"
        elif key.name in existing:
            value, origin = existing[key.name], ".env"
        else:
            value, origin = key.default(), "generated" if key.secret else "default"
        try:
            value = key.check(value.strip())
        except ValueError as exc:
            raise InvalidValue(
                key.name, f"{exc} (got {value!r} from {origin})"
            ) from None
        chosen[key.name] = (value, origin)
    return chosen


def render(values: dict[str, str], extra: dict[str, str]) -> str:
    lines = ["# Quarry settings, written by `manage.py setup`. See .env.example."]
    for key in KEYS:
        lines.append(f"# {key.comment}")
        lines.append(f"{key.name}={values[key.name]}")
    for name, value in extra.items():
        if name not in KEYS_BY_NAME:
            lines.append(f"{name}={value}")
    return "\n".join(lines) + "\n"


def write(path: Path, values: dict[str, str], extra: dict[str, str]) -> None:
    """Write atomically with mode 0600, so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render(values, extra))
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def backup(path: Path) -> Path | None:
    if not path.exists():
        return None
    target = path.with_name(f"{path.name}.bak.{datetime.now():%Y%m%d-%H%M%S}")
    shutil.copy2(path, target)
    return target
