"""What the hostile tests share: indexing a folder, worker processes, a deadline."""

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from collections_app import services
from collections_app.models import Document
from collections_app.services import Request
from operations import lifecycle
from operations.models import Operation
from tests.conftest import BASE_DIR, WorkerProcess, child_env


def index(request: Request, folder: Path, name: str = "Docs") -> Operation:
    """Create a collection over `folder`; the queue runs inline, so it has ended."""
    operation = services.create_collection(request, name=name, source=str(folder))
    operation.refresh_from_db()
    return operation


def outcomes(operation: Operation) -> dict[str, tuple[str, str]]:
    """Each document of the operation's collection: path -> (status, reason)."""
    documents = Document.objects.filter(collection_id=operation.collection_id)
    return {d.path: (d.status, d.error_reason) for d in documents}


def assert_counts_add_up(operation: Operation) -> None:
    counts = operation.counts()
    accounted = sum(counts[k] for k in ("indexed", "unchanged", "failed", "skipped"))
    assert counts["found"] == accounted, counts


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail, instead of hanging the run, if the block blocks or loops."""

    def expire(signum, frame) -> None:
        raise AssertionError(f"still running after {seconds} s: it blocked or looped")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def no_queue(monkeypatch) -> None:
    """Operations stay pending until the test runs them itself."""
    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: None)


class Cluster(WorkerProcess):
    """`manage.py qcluster` or `manage.py startworker` on the test database."""

    def __init__(self, command: str, log_path: Path, env: dict[str, str]):
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", command],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def start_cluster(transactional_db, tmp_path, monkeypatch) -> Iterator[Callable]:
    """Start worker processes with extra settings; all are stopped at the end."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)
    started: list[Cluster] = []

    def start(command: str = "qcluster", **env: str) -> Cluster:
        log = tmp_path / f"{command}-{len(started)}.log"
        cluster = Cluster(command, log, child_env(**env))
        started.append(cluster)
        return cluster

    yield start
    for cluster in reversed(started):
        cluster.stop()
