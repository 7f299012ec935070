"""The prerequisites Quarry needs, checked against the settings in force.

`manage.py setup --check` prints them all as a table; `manage.py setup` runs
them after writing .env, except the worker heartbeat (the worker starts later).
"""

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

from webui.envfile import masked_url

logger = logging.getLogger(__name__)

SETUP = "run `python manage.py setup`"


@dataclass(frozen=True)
class Outcome:
    name: str
    ok: bool
    detail: str
    hint: str = ""


def run(worker: bool = True) -> list[Outcome]:
    """Every check in a fixed order; `worker=False` leaves out the heartbeat."""
    outcomes = [_guard("Settings", SETUP, settings_parse)]
    outcomes.append(
        _guard("Data directory", f"make it writable by this user, or {SETUP}", data_dir)
    )
    outcomes.extend(document_roots())
    database_outcome = _guard("Database", _database_hint(), database)
    outcomes.append(database_outcome)
    outcomes.append(
        _guard("Migrations", SETUP, lambda: migrations(database_outcome.ok))
    )
    outcomes.append(
        _guard("Broker", _broker_hint(), lambda: broker(database_outcome.ok))
    )
    if worker:
        outcomes.append(_guard("Worker", "start it with `make run`", worker_heartbeat))
    outcomes.append(
        _guard("Embedding model", "reinstall requirements: `make install`", embedding)
    )
    outcomes.append(
        _guard("Metrics directory", "make it writable by this user", metrics_dir)
    )
    return outcomes


def table(outcomes: list[Outcome]) -> list[str]:
    """The outcomes as aligned lines, each failure followed by its fix."""
    width = max(len(outcome.name) for outcome in outcomes)
    lines = [f"{'Prerequisite':<{width}}  Status  Detail"]
    for outcome in outcomes:
        status = "ok" if outcome.ok else "FAIL"
        lines.append(f"{outcome.name:<{width}}  {status:<6}  {outcome.detail}")
        if not outcome.ok and outcome.hint:
            lines.append(f"{'':<{width}}          fix: {outcome.hint}")
    return lines


class Failed(Exception):
    """A check's expected failure: its message, and a fix when it differs."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def _guard(name: str, hint: str, check: Callable[[], str]) -> Outcome:
    try:
        return Outcome(name, True, check())
    except Failed as exc:
        return Outcome(name, False, str(exc), exc.hint or hint)
    except Exception as exc:  # noqa: BLE001 - every failure is a row, not a crash
        logger.debug("Check %s failed", name, exc_info=True)
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return Outcome(name, False, f"{type(exc).__name__}: {first_line}", hint)


def _writable(path: Path) -> None:
    if not path.is_dir():
        raise Failed(f"{path} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".quarry-check-"):
            pass
    except OSError as exc:
        raise Failed(f"{path} is not writable ({exc.strerror})") from None


def settings_parse() -> str:
    problems = list(getattr(settings, "INVALID_SETTINGS", []))
    if not os.environ.get("SECRET_KEY"):
        problems.insert(0, "SECRET_KEY is not set")
    if problems:
        raise Failed(
            "; ".join(problems),
            f"correct them in .env or the environment, or {SETUP}",
        )
    return "every value parses"


def data_dir() -> str:
    path = Path(settings.DATA_DIR)
    _writable(path)
    return f"{path} is writable"


def document_roots() -> list[Outcome]:
    return [
        _guard(
            f"Document root {root}",
            f"change DOCUMENT_ROOTS in .env ({SETUP})",
            lambda root=root: document_root(Path(root)),
        )
        for root in settings.DOCUMENT_ROOTS
    ]


def document_root(root: Path) -> str:
    hint = f"create it, or change DOCUMENT_ROOTS in .env ({SETUP})"
    if not root.exists():
        raise Failed(f"{root} does not exist", hint)
    if not root.is_dir():
        raise Failed(f"{root} is not a folder", hint)
    if not os.access(root, os.R_OK | os.X_OK):
        raise Failed(f"{root} is not readable by this user", "grant read access to it")
    return f"{root} is readable"


def _database_hint() -> str:
    if connection.vendor == "sqlite":
        return f"check DATA_DIR and its permissions, or {SETUP}"
    return "start PostgreSQL, or correct DATABASE_URL in .env"


def database() -> str:
    """Connect, and on SQLite read back the PRAGMAs the settings ask for."""
    invalid = [
        problem
        for problem in getattr(settings, "INVALID_SETTINGS", [])
        if problem.startswith("Setting DATABASE_URL")
    ]
    if invalid:
        # The settings fell back to SQLite; checking that would say nothing.
        raise Failed(invalid[0], "correct DATABASE_URL in .env or the environment")
    if connection.vendor != "sqlite":
        connection.ensure_connection()
        name = connection.settings_dict["NAME"]
        host = connection.settings_dict.get("HOST") or "the local socket"
        return f"{connection.display_name} database {name} on {host} answers"

    from webui.sqlite import expected_busy_timeout_ms, read_pragmas

    path = Path(connection.settings_dict["NAME"])
    if not path.is_file():
        # Connecting would create an empty file; setup is what creates it.
        raise Failed(f"{path} does not exist", f"{SETUP} to create it")
    connection.ensure_connection()
    values = read_pragmas(connection)
    problems = []
    if str(values["journal_mode"]).lower() != "wal":
        problems.append(f"journal_mode is {values['journal_mode']}, not wal")
    if int(values["synchronous"]) != 1:
        problems.append(f"synchronous is {values['synchronous']}, not 1 (NORMAL)")
    if int(values["busy_timeout"]) < expected_busy_timeout_ms():
        problems.append(f"busy_timeout is {values['busy_timeout']} ms")
    if problems:
        raise Failed(
            f"{path}: " + "; ".join(problems),
            "the DATABASES options in webui/settings.py did not take effect",
        )
    return (
        f"SQLite {path}: journal_mode=wal, synchronous=NORMAL, "
        f"busy_timeout={values['busy_timeout']} ms"
    )


def migrations(database_ok: bool) -> str:
    if not database_ok:
        raise Failed("not checked: the database is not reachable")
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise Failed(f"{len(plan)} migrations are not applied")
    return "all applied"


def _broker_hint() -> str:
    if settings.REDIS_URL:
        return "start Redis, or correct REDIS_URL in .env"
    return "the ORM broker lives in the database: fix the database first"


def broker(database_ok: bool) -> str:
    if not settings.REDIS_URL:
        if not database_ok:
            raise Failed("the database (the ORM broker) is not reachable")
        return "ORM broker in the database"

    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=3, socket_timeout=3
    )
    try:
        client.ping()
    finally:
        client.close()
    return f"Redis at {masked_url(settings.REDIS_URL)} answers"


def worker_heartbeat() -> str:
    from django_q.status import Stat

    clusters = Stat.get_all()
    if not clusters:
        raise Failed("not running (no cluster has reported in the last seconds)")
    described = ", ".join(
        f"{cluster.host} pid {cluster.pid} ({cluster.status})" for cluster in clusters
    )
    return f"{len(clusters)} running: {described}"


def embedding() -> str:
    from collections_app.embedding import DEFAULT_MODEL, MODELS, get_embedder

    name = getattr(settings, "EMBEDDING_MODEL", DEFAULT_MODEL)
    if name not in MODELS:
        raise Failed(
            f"{name!r} is not a model Quarry ships",
            f"set EMBEDDING_MODEL to one of {', '.join(MODELS)}",
        )
    get_embedder(name)
    return f"{name} loads: {MODELS[name]}"


def metrics_dir() -> str:
    path = Path(
        getattr(
            settings, "PROMETHEUS_MULTIPROC_DIR", Path(settings.DATA_DIR) / "metrics"
        )
    )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Failed(
            f"cannot create {path} ({exc.strerror})",
            "make DATA_DIR writable by this user",
        ) from None
    _writable(path)
    return f"{path} is writable"
