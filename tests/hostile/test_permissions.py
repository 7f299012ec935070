"""Unreadable files, folders and source roots, as an unprivileged worker sees them.

CI runs as root, for whom `chmod 000` hides nothing. There the operation runs
in a child `manage.py shell` on the same test database that, before Python
started, became the user `nobody` or, where `nobody` cannot reach the
interpreter, stayed root without the capabilities that bypass file permissions.
"""

import ctypes
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from collections_app import services
from collections_app.models import Chunk, Collection, Document
from operations import lifecycle
from operations.models import Operation
from operations.tasks import run_operation
from tests.conftest import BASE_DIR, child_env, write_files
from tests.hostile.conftest import assert_counts_add_up, index, outcomes

pytestmark = pytest.mark.django_db(transaction=True)

NOBODY = 65534
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
PR_CAPBSET_DROP = 24


@dataclass
class Launcher:
    """A way to start a child that file permissions apply to."""

    name: str
    preexec_fn: Callable[[], None]

    def run(self, command: list[str], **options) -> subprocess.CompletedProcess:
        return subprocess.run(command, preexec_fn=self.preexec_fn, **options)


def become_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def without_file_capabilities() -> Callable[[], None]:
    # Loaded here, not between fork and exec, where only plain calls are safe.
    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        # Out of the bounding set, they are gone from root's permissions at exec.
        for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    return drop


@pytest.fixture(scope="module")
def unprivileged() -> Launcher | None:
    """How root starts a child that chmod 000 stops; None when not root."""
    if os.geteuid() != 0:
        return None
    problems = []
    for launcher in (
        Launcher(f"uid {NOBODY}", become_nobody),
        Launcher("root without CAP_DAC_*", without_file_capabilities()),
    ):
        try:
            launcher.run(
                [sys.executable, "-c", "import django"],
                check=True,
                capture_output=True,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            problems.append(f"{launcher.name}: {exc}")
        else:
            return launcher
    pytest.skip(f"running as root and cannot drop privileges: {problems}")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder nobody can reach: tmp_path lies under a folder only root may enter."""
    path = Path(tempfile.mkdtemp(prefix="quarry-hostile-"))
    path.chmod(0o755)
    (path / "metrics").mkdir(mode=0o777)
    (path / "metrics").chmod(0o777)
    yield path
    subprocess.run(["chmod", "-R", "u+rwX", str(path)], check=False)
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def database_open_to_nobody(transactional_db) -> Iterator[None]:
    """The child reads the data dir and, on SQLite, writes the database files."""
    paths = [Path(settings.DATA_DIR)]
    if connection.vendor == "sqlite":
        name = Path(connection.settings_dict["NAME"])
        paths += [name.with_name(name.name + suffix) for suffix in ("", "-wal", "-shm")]
    saved = {path: path.stat().st_mode for path in paths if path.exists()}
    for path in saved:
        path.chmod(0o777 if path.is_dir() else 0o666)
    yield
    for path, mode in saved.items():
        path.chmod(mode)


def run_unprivileged(
    operation: Operation, launcher: Launcher | None, shared_dir: Path
) -> None:
    """Run the operation's task as a worker would, without root's privileges."""
    if launcher is None:
        run_operation(str(operation.id))
        return
    script = (
        "from operations.tasks import run_operation; "
        f"run_operation({str(operation.id)!r})"
    )
    result = launcher.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=BASE_DIR,
        env=child_env(PROMETHEUS_MULTIPROC_DIR=str(shared_dir / "metrics")),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr


def test_unreadable_files_and_folders_fail_alone_and_what_lies_under_them_is_kept(
    as_owner, owner, unprivileged, shared_dir, database_open_to_nobody, monkeypatch
):
    birds = ["herons", "egrets", "kingfishers", "cormorants", "pelicans"]
    folder = write_files(
        shared_dir / "docs",
        {
            **{
                f"note{i}.md": f"A readable note about {b}."
                for i, b in enumerate(birds)
            },
            "locked.md": "A note that becomes unreadable.",
            "private/diary.md": "A diary entry about the walled garden.",
            "private/letters.md": "Letters about the old harbour.",
        },
    )
    assert index(as_owner, folder).indexed == 8
    (folder / "fresh.md").write_text("A fresh note about puffins.")
    (folder / "locked.md").chmod(0)
    (folder / "private").chmod(0)
    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: None)
    operation = lifecycle.create_pending(
        collection=Collection.objects.get(),
        type=Operation.Type.INDEX,
        requested_by=owner,
    )

    run_unprivileged(operation, unprivileged, shared_dir)

    operation.refresh_from_db()
    assert operation.status == Operation.Status.COMPLETED, operation.error
    documents = outcomes(operation)
    assert documents["locked.md"] == ("failed", "permission_denied")
    assert documents["private/"] == ("failed", "permission_denied")
    assert documents["fresh.md"] == ("indexed", "")
    assert documents["private/diary.md"] == ("indexed", "")
    assert documents["private/letters.md"] == ("indexed", "")
    assert Chunk.objects.filter(document__path__startswith="private/").count() == 2
    assert (operation.indexed, operation.unchanged, operation.failed) == (1, 5, 2)
    assert_counts_add_up(operation)
    assert Collection.objects.get().status == Collection.Status.DEGRADED


def test_an_unreadable_source_root_fails_the_operation_and_deletes_nothing(
    as_owner, unprivileged, shared_dir, database_open_to_nobody, monkeypatch
):
    folder = write_files(
        shared_dir / "docs", {"keep.txt": "precious words", "also.md": "more words"}
    )
    index(as_owner, folder)
    folder.chmod(0)
    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: None)
    operation = services.reindex(as_owner, Collection.objects.get())

    run_unprivileged(operation, unprivileged, shared_dir)

    operation.refresh_from_db()
    assert operation.status == Operation.Status.FAILED
    assert "cannot be read" in operation.error
    assert "nothing was deleted" in operation.error
    assert set(Document.objects.values_list("path", "status")) == {
        ("keep.txt", "indexed"),
        ("also.md", "indexed"),
    }
    assert Chunk.objects.count() == 2
    assert Collection.objects.get().status == Collection.Status.ERROR
