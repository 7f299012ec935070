"""The keys `manage.py setup` manages in `.env`: their defaults, checks and file format.

A value comes from the environment first, then the existing `.env`, then the
default below; a secret is generated once and then kept like any other value.
"""

import os
import re
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

ADMIN_USERNAME = "QUARRY_ADMIN_USERNAME"
ADMIN_EMAIL = "QUARRY_ADMIN_EMAIL"
ADMIN_PASSWORD = "QUARRY_ADMIN_PASSWORD"
ADMIN_KEYS = (ADMIN_USERNAME, ADMIN_EMAIL, ADMIN_PASSWORD)

_SAFE_UNQUOTED = set(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "_-.,:/@%+=~?&*!^()[]{}<>|;"
)


class InvalidValue(ValueError):
    """A value that fails its key's check; the message names the key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"Setting {key} is invalid: {message}")
        self.key = key
        self.message = message


class Choice(NamedTuple):
    value: str
    origin: str  # "environment", ".env", "default" or "generated"


def _port(value: str) -> str:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError("must be a port number between 1 and 65535")
    return str(int(value))


def _positive_int(value: str) -> str:
    if not value.isdigit() or int(value) < 1:
        raise ValueError("must be a whole number of at least 1")
    return str(int(value))


def _data_dir(value: str) -> str:
    if not value:
        raise ValueError("must name a folder")
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
    roots = split_roots(value)
    if not roots:
        raise ValueError("must name at least one folder")
    relative = [root for root in roots if not Path(root).expanduser().is_absolute()]
    if relative:
        raise ValueError(f"must be absolute paths, not {', '.join(relative)}")
    return ",".join(roots)


def _embedding_model(value: str) -> str:
    # Imported here: the module pulls in numpy, which plain .env handling avoids.
    from collections_app.embedding import MODELS

    if value not in MODELS:
        raise ValueError(f"must be one of {', '.join(MODELS)}")
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
    Key(
        "DATA_DIR",
        lambda: "./data",
        "Database, caches and metrics live here (relative: from the project)",
        _data_dir,
    ),
    Key(
        "DOCUMENT_ROOTS",
        lambda: str(Path.home()),
        "Comma-separated folders that sources must live in",
        _roots,
    ),
    Key("WEB_HOST", lambda: "127.0.0.1", "Address the web server listens on"),
    Key("WEB_PORT", lambda: "8000", "Port the web server listens on", _port),
    Key(
        "ALLOWED_HOSTS",
        lambda: "127.0.0.1,localhost",
        "Host names the site answers to",
    ),
    Key(
        "DATABASE_URL",
        lambda: "",
        "Empty: SQLite in DATA_DIR; or postgres://user@host:5432/quarry",
        _database_url,
    ),
    Key(
        "REDIS_URL",
        lambda: "",
        "Empty: ORM broker; or redis://host:6379/0 for broker and events",
        _redis_url,
    ),
    Key(
        "EMBEDDING_MODEL",
        lambda: "minilm-l6-int8",
        "Model that embeds chunks and queries",
        _embedding_model,
    ),
    Key(
        "WORKER_COUNT", lambda: "2", "Worker processes of the task queue", _positive_int
    ),
]
KEYS_BY_NAME = {key.name: key for key in KEYS}


def split_roots(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def read(path: Path) -> dict[str, str]:
    """Key/value pairs of a .env file (KEY=VALUE lines, # comments, optional quotes)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values[key.strip()] = value
    return values


def choose(
    key: Key, existing: Mapping[str, str], environment: Mapping[str, str]
) -> Choice:
    """One key's value and its origin; raises InvalidValue if it fails the check."""
    if key.name in environment and (environment[key.name] or not key.secret):
        value, origin = environment[key.name], "environment"
    elif key.name in existing and (existing[key.name] or not key.secret):
        value, origin = existing[key.name], ".env"
    else:
        value, origin = key.default(), "generated" if key.secret else "default"
    try:
        return Choice(key.check(value.strip()), origin)
    except ValueError as exc:
        shown = masked_url(value) if "://" in value else value
        raise InvalidValue(key.name, f"{exc} (got {shown!r} from {origin})") from None


def resolve(
    existing: Mapping[str, str], environment: Mapping[str, str]
) -> tuple[dict[str, Choice], list[InvalidValue]]:
    """Every key's choice; an invalid value is reported and replaced by the default."""
    chosen: dict[str, Choice] = {}
    problems: list[InvalidValue] = []
    for key in KEYS:
        try:
            chosen[key.name] = choose(key, existing, environment)
        except InvalidValue as problem:
            problems.append(problem)
            chosen[key.name] = Choice(key.default(), "default")
    return chosen, problems


def unasked_problems(invalid: list[str], kept: Mapping[str, str]) -> list[str]:
    """The settings' problems no answer to setup can fix, as the settings word them.

    A problem counts when its setting is not one of KEYS and it names a variable
    that stays set (`kept`: the environment, and the .env unless --reset drops it).
    """
    unasked = [name for name in kept if name not in KEYS_BY_NAME]
    problems = []
    for problem in invalid:
        subject = re.match(r"Setting (\w+)", problem)
        if subject and subject[1] in KEYS_BY_NAME:
            continue
        if any(re.search(rf"\b{re.escape(name)}\b", problem) for name in unasked):
            problems.append(problem)
    return problems


def _quoted(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise InvalidValue(name, "must be a single line")
    if all(char in _SAFE_UNQUOTED for char in value):
        return value
    if "'" not in value:
        # Single quotes are taken literally by django-environ and by read().
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render(values: Mapping[str, str], extra: Mapping[str, str]) -> str:
    lines = ["# Quarry settings, written by `manage.py setup`. See .env.example."]
    for key in KEYS:
        lines.append(f"# {key.comment}")
        lines.append(f"{key.name}={_quoted(key.name, values[key.name])}")
    kept = {name: value for name, value in extra.items() if name not in KEYS_BY_NAME}
    if kept:
        lines.append("# Kept from the previous .env")
        lines.extend(f"{name}={_quoted(name, value)}" for name, value in kept.items())
    return "\n".join(lines) + "\n"


def write(path: Path, values: Mapping[str, str], extra: Mapping[str, str]) -> None:
    """Write atomically with mode 0600: readers see the old file or the new one."""
    text = render(values, extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)


def backup(path: Path) -> Path | None:
    """Copy .env aside (same mode) under a name with the time; None if there is none."""
    if not path.exists():
        return None
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    target = path.with_name(f"{path.name}.bak.{stamp}")
    number = 1
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}.bak.{stamp}-{number}")
    shutil.copy2(path, target)
    return target


def masked_url(url: str) -> str:
    """The URL with its password replaced by ***, for showing on screen."""
    parts = urlparse(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
