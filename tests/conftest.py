"""Shared fixtures: users, folders of real files, a real worker process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from collections_app.services import Request

BASE_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The default hasher costs about a second per user; tests need no strength."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("olivia", password="pw-olivia-123")


@pytest.fixture
def teammate(django_user_model):
    return django_user_model.objects.create_user("theo", password="pw-theo-123")


@pytest.fixture
def outsider(django_user_model):
    return django_user_model.objects.create_user("oscar", password="pw-oscar-123")


@pytest.fixture
def as_owner(owner) -> Request:
    return Request(user=owner, remote_addr="127.0.0.1")


def write_files(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


@pytest.fixture
def docs(tmp_path) -> Path:
    """A small folder about three unrelated topics."""
    return write_files(
        tmp_path / "docs",
        {
            "gardening.txt": "Tomatoes need full sun and regular watering. "
            "Prune the suckers so the plant puts its energy into fruit.",
            "notes/astronomy.md": "# Telescopes\n\nA refracting telescope uses lenses "
            "to bend light; a reflector uses mirrors to gather starlight.",
            "recipes/bread.html": "<html><head><title>Sourdough</title></head><body>"
            "<p>Feed the starter flour and water, then knead the dough and let it "
            "rise overnight before baking.</p></body></html>",
        },
    )


def database_url() -> str:
    """The URL of the database the tests run against, for child processes."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    user = settings.get("USER") or "postgres"
    return f"postgres://{user}@{host}:{port}/{settings['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        QUEUE_SYNC="false",
        PYTHONUNBUFFERED="1",
        WORKER_COUNT="2",
    )
    env.update(extra)
    return env


class WorkerProcess:
    def __init__(self, log_path: Path, env: dict[str, str]):
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            # The cluster stops its own workers; signalling the group races that.
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def worker(transactional_db, tmp_path, monkeypatch):
    """A real `manage.py qcluster` on the test database; tasks are queued, not inline."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)
    process = WorkerProcess(tmp_path / "worker.log", child_env())
    yield process
    process.stop()


def wait_for(predicate, timeout: float = 60, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
