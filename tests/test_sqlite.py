"""SQLite under several writing processes: the settings hold and nobody is locked out."""

import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection

from tests.conftest import BASE_DIR, child_env

pytestmark = pytest.mark.sqlite_only

WRITER = """
import django, os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "webui.settings"
django.setup()
from django.db import connection, transaction
if sys.argv[1] == "deferred":
    # The naive configuration: Django's default DEFERRED transactions, and
    # Quarry's start-up check (which refuses them) switched off.
    from django.db.backends.signals import connection_created
    connection_created.disconnect(dispatch_uid="quarry-sqlite-pragmas")
    connection.settings_dict["OPTIONS"].pop("transaction_mode")
from django.contrib.sessions.models import Session
connection.ensure_connection()
print(f"ready mode={connection.transaction_mode}", flush=True)
sys.stdin.readline()  # wait until the test holds the write lock
from django.utils import timezone
with transaction.atomic():
    count = Session.objects.count()
    Session.objects.create(
        session_key=f"writer-{os.getpid()}", session_data=str(count),
        expire_date=timezone.now(),
    )
print("ok")
"""


@pytest.fixture
def sqlite_only():
    if connection.vendor != "sqlite":
        pytest.skip("runs against the embedded SQLite database")


def hold_write_lock(path: str, seconds: float, ready: threading.Event) -> None:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute(
        "INSERT INTO django_session VALUES ('holder', 'x', '2030-01-01 00:00:00')"
    )
    ready.set()
    time.sleep(seconds)
    holder.execute("COMMIT")
    holder.close()


def run_writers_while_locked(mode: str) -> list[subprocess.CompletedProcess]:
    """Two writers read then write while another connection holds the lock for 2 s."""
    env = child_env(SQLITE_BUSY_TIMEOUT="20")
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, mode],
            cwd=BASE_DIR,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    modes = [writer.stdout.readline().split("mode=")[-1].strip() for writer in writers]
    ready = threading.Event()
    holder = threading.Thread(
        target=hold_write_lock, args=(connection.settings_dict["NAME"], 2.0, ready)
    )
    holder.start()
    ready.wait(10)
    results = []
    for writer in writers:
        writer.stdin.write("go\n")
        writer.stdin.flush()
    for writer, mode_seen in zip(writers, modes, strict=True):
        out, err = writer.communicate(timeout=60)
        results.append(
            subprocess.CompletedProcess(
                writer.args, writer.returncode, f"{mode_seen} {out}", err
            )
        )
    holder.join()
    return results


def test_the_pragmas_are_in_force_on_a_live_connection(sqlite_only, db, settings):
    from webui.sqlite import read_pragmas

    connection.ensure_connection()
    values = read_pragmas(connection)
    assert str(values["journal_mode"]).lower() == "wal"
    assert int(values["synchronous"]) == 1
    assert int(values["busy_timeout"]) == int(settings.SQLITE_BUSY_TIMEOUT * 1000)
    assert connection.transaction_mode == "IMMEDIATE"


def test_read_then_write_transactions_wait_for_a_held_lock(
    sqlite_only, transactional_db
):
    results = run_writers_while_locked("immediate")
    assert [r.stdout.split()[-1] for r in results] == ["ok", "ok"], [
        r.stderr for r in results
    ]
    from django.contrib.sessions.models import Session

    assert Session.objects.filter(session_key__startswith="writer-").count() == 2


def test_deferred_transactions_fail_at_once_which_is_why_quarry_avoids_them(
    sqlite_only, transactional_db
):
    results = run_writers_while_locked("deferred")
    assert all(r.stdout.startswith("None") for r in results)
    assert any("database is locked" in r.stderr for r in results), [
        r.stdout for r in results
    ]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"QUEUE_RETRY": "60", "OPERATION_TIMEOUT": "120"}, "QUEUE_RETRY"),
        ({"SQLITE_BUSY_TIMEOUT": "5"}, "SQLITE_BUSY_TIMEOUT"),
        ({"WEB_PORT": "eighty"}, "WEB_PORT"),
        ({"DATABASE_URL": "nonsense"}, "DATABASE_URL"),
    ],
)
def test_a_bad_setting_stops_start_up_and_names_the_setting(db, env, named):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"Setting {named}" in result.stderr


def test_the_web_process_refuses_to_start_when_a_pragma_did_not_take_effect(
    tmp_path,
):
    """The check runs before daphne binds, not at the first request."""
    (tmp_path / "weaksettings.py").write_text(
        "from webui.settings import *  # noqa: F403\n"
        'DATABASES["default"]["OPTIONS"]["init_command"] = (\n'
        '    "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"\n'
        ")\n"
    )
    env = child_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'weak.sqlite3'}",
        DJANGO_SETTINGS_MODULE="weaksettings",
        PYTHONPATH=f"{tmp_path}:{BASE_DIR}",
        WEB_PORT="1",  # were daphne ever started, it could not bind this
    )

    result = subprocess.run(
        [sys.executable, "manage.py", "runweb"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Quarry cannot start: Setting DATABASES['default'] did not take effect on "
        "SQLite: synchronous is 2, expected 1 (NORMAL)"
    ]
    assert "Quarry web on" not in result.stdout
