"""Verify on a live connection that SQLite runs with the settings Quarry needs.

Options placed at the wrong level of DATABASES are ignored silently by Django,
so the first connection of every process reads the PRAGMAs back.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.signals import connection_created

_checked: set[str] = set()


def expected_busy_timeout_ms() -> int:
    return int(settings.SQLITE_BUSY_TIMEOUT * 1000)


def read_pragmas(connection) -> dict[str, object]:
    with connection.cursor() as cursor:
        values = {}
        for name in ("journal_mode", "synchronous", "busy_timeout"):
            cursor.execute(f"PRAGMA {name}")
            values[name] = cursor.fetchone()[0]
    return values


def check_pragmas(sender, connection, **kwargs) -> None:
    if connection.vendor != "sqlite" or connection.alias in _checked:
        return
    if connection.settings_dict["NAME"] in ("", ":memory:") or "mode=memory" in str(
        connection.settings_dict["NAME"]
    ):
        return
    _checked.add(connection.alias)
    values = read_pragmas(connection)
    problems = []
    if str(values["journal_mode"]).lower() != "wal":
        problems.append(f"journal_mode is {values['journal_mode']}, expected wal")
    if int(values["synchronous"]) != 1:
        problems.append(f"synchronous is {values['synchronous']}, expected 1 (NORMAL)")
    if int(values["busy_timeout"]) < expected_busy_timeout_ms():
        problems.append(
            f"busy_timeout is {values['busy_timeout']} ms, expected "
            f"{expected_busy_timeout_ms()} ms (SQLITE_BUSY_TIMEOUT)"
        )
    if connection.transaction_mode != "IMMEDIATE":
        problems.append("transaction_mode is not IMMEDIATE")
    if problems:
        _checked.discard(connection.alias)
        raise ImproperlyConfigured(
            "Setting DATABASES['default'] did not take effect on SQLite: "
            + "; ".join(problems)
        )


def connect() -> None:
    connection_created.connect(check_pragmas, dispatch_uid="quarry-sqlite-pragmas")
