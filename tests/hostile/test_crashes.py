"""Crashes: killed workers, stale heartbeats, double deliveries and timeouts."""

import itertools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone
from django_q.exceptions import TimeoutException

from audit.models import AuditLog
from collections_app import services
from collections_app.models import Chunk, Collection, Document
from collections_app.services import Request
from operations import lifecycle
from operations.models import Operation, OperationEvent
from operations.tasks import run_operation
from tests.conftest import BASE_DIR, child_env, wait_for, write_files

pytestmark = pytest.mark.django_db(transaction=True)

BIRDS = ["heron", "egret", "wren", "lark", "owl", "gannet", "puffin", "tern"]
# A killed cluster's operation is failed by the next cluster's start-up sweep,
# or at the latest by the scheduled sweep: the guard runs the scheduler every
# 30 s and the schedule is due every minute.
SWEEP_BOUND_SECONDS = 150


def many_files(count: int) -> dict[str, str]:
    """Distinct one-chunk notes, so none is skipped as a duplicate."""
    return {
        f"note{i:04}.txt": f"Note {i}: the {BIRDS[i % 8]} was seen {i // 8} times "
        f"near the {BIRDS[(i // 8) % 8]} colony on the northern cliffs."
        for i in range(count)
    }


def failed_entries(operation: Operation) -> int:
    return AuditLog.objects.filter(
        action=AuditLog.Action.OPERATION_FAILED, operation_uuid=operation.id
    ).count()


def terminal_events(operation: Operation) -> list[str]:
    return list(
        OperationEvent.objects.filter(
            operation=operation, kind__in=Operation.TERMINAL
        ).values_list("kind", flat=True)
    )


def at_the_third_file(act: Callable[[], None]) -> Callable[..., bool]:
    """A stand-in for `Progress.cancel_requested` that does `act` at file three."""
    files_begun = itertools.count(1)

    def check(progress: lifecycle.Progress) -> bool:
        if next(files_begun) == 3:
            act()
        return False

    return check


def ended(operation: Operation) -> Callable[[], bool]:
    def check() -> bool:
        operation.refresh_from_db()
        return operation.status in Operation.TERMINAL

    return check


def settled() -> Collection | None:
    collection = Collection.objects.get()
    return collection if collection.status != Collection.Status.PROCESSING else None


def settled_statuses() -> dict[str, str] | None:
    statuses = dict(Collection.objects.values_list("name", "status"))
    return None if Collection.Status.PROCESSING in statuses.values() else statuses


def assert_no_duplicates(collection: Collection, files: int) -> None:
    documents = Document.objects.filter(collection=collection)
    assert documents.count() == files
    assert documents.filter(status=Document.Status.INDEXED).count() == files
    chunks = Chunk.objects.filter(collection=collection)
    expected = documents.aggregate(n=Sum("chunk_count"))["n"]
    assert chunks.count() == expected
    repeated = chunks.values("document", "ordinal").annotate(n=Count("id"))
    assert not repeated.filter(n__gt=1).exists()


def running_operation(request: Request, folder: Path, name: str = "Docs") -> Operation:
    """An operation a worker has claimed, with nothing queued behind it."""
    operation = services.create_collection(request, name=name, source=str(folder))
    return lifecycle.claim(operation.id)


# --- the sweeper, in this process ----------------------------------------------


def test_the_sweeper_fails_a_stale_operation_once_and_frees_its_collection(
    as_owner, tmp_path, settings, no_queue
):
    folder = write_files(tmp_path / "docs", {"a.txt": "alpha words"})
    operation = running_operation(as_owner, folder)
    stale = timezone.now() - timedelta(seconds=settings.OPERATION_STALE_SECONDS + 1)
    Operation.objects.filter(id=operation.id).update(heartbeat_at=stale)

    swept = [lifecycle.sweep_stale(), lifecycle.sweep_stale()]

    operation.refresh_from_db()
    assert swept == [1, 0]
    assert operation.status == Operation.Status.FAILED
    assert "stopped reporting progress" in operation.error
    assert failed_entries(operation) == 1 and terminal_events(operation) == ["failed"]
    collection = Collection.objects.get()
    assert collection.status == Collection.Status.ERROR
    assert services.reindex(as_owner, collection).status == Operation.Status.PENDING


def test_the_sweeper_leaves_an_operation_with_a_fresh_heartbeat_alone(
    as_owner, tmp_path, no_queue
):
    folder = write_files(tmp_path / "docs", {"a.txt": "alpha words"})
    operation = running_operation(as_owner, folder)

    assert lifecycle.sweep_stale() == 0

    operation.refresh_from_db()
    assert operation.status == Operation.Status.PROCESSING


def test_the_sweeper_says_when_an_operation_ran_past_its_timeout(
    as_owner, tmp_path, settings, no_queue
):
    folder = write_files(tmp_path / "docs", {"a.txt": "alpha words"})
    operation = running_operation(as_owner, folder)
    long_ago = timezone.now() - timedelta(seconds=settings.OPERATION_TIMEOUT + 60)
    Operation.objects.filter(id=operation.id).update(
        started_at=long_ago, heartbeat_at=long_ago
    )

    lifecycle.sweep_stale()

    operation.refresh_from_db()
    assert operation.status == Operation.Status.FAILED
    assert "OPERATION_TIMEOUT" in operation.error


# --- deliveries and timeouts, in this process ------------------------------------


def test_a_task_delivered_twice_at_the_same_moment_runs_once(
    as_owner, tmp_path, no_queue
):
    folder = write_files(tmp_path / "twice", many_files(6))
    operation = services.create_collection(as_owner, name="Twice", source=str(folder))
    barrier = threading.Barrier(2)
    results: list[str] = []

    def deliver() -> None:
        try:
            barrier.wait(timeout=60)
            results.append(run_operation(str(operation.id)))
        finally:
            connection.close()

    deliveries = [threading.Thread(target=deliver) for _ in range(2)]
    for delivery in deliveries:
        delivery.start()
    for delivery in deliveries:
        delivery.join(timeout=300)

    assert sorted(results) == ["completed", "skipped"]
    completed = AuditLog.objects.filter(
        action=AuditLog.Action.OPERATION_COMPLETED, operation_uuid=operation.id
    )
    assert completed.count() == 1
    assert terminal_events(operation) == ["completed"]
    assert_no_duplicates(Collection.objects.get(), files=6)


def test_the_queue_timeout_inside_a_running_operation_ends_it_failed_at_once(
    as_owner, tmp_path, no_queue, monkeypatch
):
    folder = write_files(tmp_path / "slow", many_files(10))
    operation = services.create_collection(as_owner, name="Slow", source=str(folder))

    def time_runs_out() -> None:
        # What Django-Q2's alarm handler raises inside a task at its timeout.
        raise TimeoutException("Task exceeded maximum timeout value (3 seconds)")

    monkeypatch.setattr(
        lifecycle.Progress, "cancel_requested", at_the_third_file(time_runs_out)
    )

    with pytest.raises(TimeoutException):
        run_operation(str(operation.id))

    operation.refresh_from_db()
    assert operation.status == Operation.Status.FAILED
    assert "Timed out" in operation.error and "OPERATION_TIMEOUT" in operation.error
    assert failed_entries(operation) == 1 and terminal_events(operation) == ["failed"]
    assert Collection.objects.get().status == Collection.Status.ERROR
    assert lifecycle.sweep_stale() == 0


def test_an_operation_out_of_time_stops_between_files_and_keeps_what_it_indexed(
    as_owner, owner, tmp_path, no_queue, monkeypatch
):
    folder = write_files(tmp_path / "slow", many_files(10))
    operation = services.create_collection(as_owner, name="Slow", source=str(folder))
    in_time = lifecycle.Progress.out_of_time
    files_begun = itertools.count(1)
    monkeypatch.setattr(
        lifecycle.Progress, "out_of_time", lambda progress: next(files_begun) >= 3
    )

    assert run_operation(str(operation.id)) == Operation.Status.FAILED

    operation.refresh_from_db()
    assert "Timed out" in operation.error and "OPERATION_TIMEOUT" in operation.error
    assert failed_entries(operation) == 1 and terminal_events(operation) == ["failed"]
    assert Document.objects.filter(status=Document.Status.INDEXED).count() == 2
    monkeypatch.setattr(lifecycle.Progress, "out_of_time", in_time)
    rerun = lifecycle.create_pending(
        collection=Collection.objects.get(),
        type=Operation.Type.INDEX,
        requested_by=owner,
    )
    assert run_operation(str(rerun.id)) == Operation.Status.COMPLETED
    rerun.refresh_from_db()
    assert (rerun.unchanged, rerun.indexed) == (2, 8)
    assert_no_duplicates(Collection.objects.get(), files=10)


# --- real worker processes -----------------------------------------------------


@pytest.mark.slow
def test_a_killed_workers_operation_fails_at_restart_and_a_rerun_duplicates_nothing(
    worker, start_cluster, as_owner, tmp_path
):
    files = 200
    folder = write_files(tmp_path / "many", many_files(files))
    operation = services.create_collection(as_owner, name="Many", source=str(folder))

    def mid_way() -> bool:
        operation.refresh_from_db()
        assert operation.status not in Operation.TERMINAL, "ended before the kill"
        return operation.status == Operation.Status.PROCESSING and operation.done > 0

    wait_for(mid_way, timeout=300, interval=0.05)
    worker.kill()
    worker.process.wait(timeout=30)
    operation.refresh_from_db()
    assert operation.status == Operation.Status.PROCESSING

    restarted = start_cluster(
        "startworker", HEARTBEAT_SECONDS="1", OPERATION_STALE_SECONDS="3"
    )
    wait_for(ended(operation), timeout=SWEEP_BOUND_SECONDS)

    assert operation.status == Operation.Status.FAILED, restarted.output()
    assert "stopped reporting progress" in operation.error
    assert failed_entries(operation) == 1 and terminal_events(operation) == ["failed"]
    # The collection is settled just after the operation's terminal write.
    collection = wait_for(settled, timeout=30)
    assert collection.status == Collection.Status.ERROR
    rerun = services.reindex(as_owner, collection)
    wait_for(ended(rerun), timeout=600)
    assert rerun.status == Operation.Status.COMPLETED, restarted.output()
    assert rerun.indexed == files
    assert_no_duplicates(collection, files)
    assert "Traceback" not in restarted.output()


@pytest.mark.slow
def test_a_worker_stopped_like_a_process_manager_does_ends_its_operation_and_exits(
    start_cluster, as_owner, tmp_path
):
    """honcho (Ctrl-C in `make run`) sends SIGTERM to the worker's whole group."""
    files = 400
    folder = write_files(tmp_path / "many", many_files(files))
    cluster = start_cluster("startworker")
    operation = services.create_collection(as_owner, name="Many", source=str(folder))

    def mid_way() -> bool:
        operation.refresh_from_db()
        assert operation.status not in Operation.TERMINAL, "ended before the stop"
        return operation.status == Operation.Status.PROCESSING and operation.done > 0

    wait_for(mid_way, timeout=300, interval=0.05)
    os.killpg(cluster.process.pid, signal.SIGTERM)

    # A bound for a hang, not a speed target: the old cluster never exited.
    assert cluster.process.wait(timeout=60) == 0, cluster.output()
    operation.refresh_from_db()
    assert operation.status == Operation.Status.FAILED, cluster.output()
    assert "worker was stopped" in operation.error
    assert failed_entries(operation) == 1 and terminal_events(operation) == ["failed"]
    assert "Traceback" not in cluster.output()
    assert not group_alive(cluster.process.pid)

    collection = wait_for(settled, timeout=30)
    restarted = start_cluster("startworker")
    rerun = services.reindex(as_owner, collection)
    wait_for(ended(rerun), timeout=600)
    assert rerun.status == Operation.Status.COMPLETED, restarted.output()
    assert_no_duplicates(collection, files)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_an_operation_past_its_timeout_ends_failed_once_and_the_next_one_still_runs(
    start_cluster, as_owner, tmp_path
):
    # Far more than three seconds' work on any machine.
    slow = write_files(tmp_path / "slow", many_files(2000))
    quick = write_files(tmp_path / "quick", {"one.txt": "a single note on terns"})
    cluster = start_cluster(
        "startworker",
        OPERATION_TIMEOUT="3",
        QUEUE_RETRY="60",
        HEARTBEAT_SECONDS="1",
        OPERATION_STALE_SECONDS="3",
        WORKER_COUNT="1",
    )
    long_one = services.create_collection(as_owner, name="Slow", source=str(slow))
    trivial = services.create_collection(as_owner, name="Quick", source=str(quick))

    wait_for(ended(long_one), timeout=SWEEP_BOUND_SECONDS)
    wait_for(ended(trivial), timeout=300)

    assert long_one.status == Operation.Status.FAILED, cluster.output()
    assert "OPERATION_TIMEOUT" in long_one.error, (long_one.error, cluster.output())
    assert failed_entries(long_one) == 1 and terminal_events(long_one) == ["failed"]
    assert trivial.status == Operation.Status.COMPLETED, cluster.output()
    statuses = wait_for(settled_statuses, timeout=30)
    assert statuses == {"Slow": "error", "Quick": "ready"}


def test_an_operation_the_broker_refused_stays_pending_and_the_sweeper_queues_it(
    as_owner, tmp_path
):
    folder = write_files(tmp_path / "docs", {"a.txt": "notes on the gannet colony"})
    nothing_listens = "redis://127.0.0.1:1/0"

    created = subprocess.run(
        [sys.executable, "manage.py", "collections", "create", "Birds"]
        + ["--source", str(folder), "--owner", as_owner.user.username],
        cwd=BASE_DIR,
        env=child_env(REDIS_URL=nothing_listens),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert created.returncode == 0, created.stderr
    assert "Traceback" not in created.stderr
    operation = Operation.objects.get(collection__name="Birds")
    refusals = [line for line in created.stderr.splitlines() if " ERROR " in line]
    assert len(refusals) == 1 and str(operation.id) in refusals[0]
    assert (operation.status, operation.task_id) == (Operation.Status.PENDING, "")
    assert "the task queue did not answer" in created.stdout

    assert lifecycle.requeue_unqueued() == 0  # too young: may still be queueing
    later = timezone.now() + timedelta(minutes=1)
    assert lifecycle.requeue_unqueued(now=later) == 1

    operation.refresh_from_db()
    assert operation.status == Operation.Status.COMPLETED
    assert Document.objects.filter(collection__name="Birds").count() == 1


def test_a_handler_whose_operation_the_sweeper_failed_stops_and_adds_no_event(
    as_owner, tmp_path, no_queue, monkeypatch
):
    """A worker paused past the stale bound (a held lock, a stopped VM) resumes."""
    folder = write_files(tmp_path / "docs", many_files(6))
    operation = services.create_collection(as_owner, name="Birds", source=str(folder))

    def swept_as_stale() -> None:
        assert lifecycle.sweep_stale(now=timezone.now() + timedelta(hours=1)) == 1

    monkeypatch.setattr(
        lifecycle.Progress, "cancel_requested", at_the_third_file(swept_as_stale)
    )

    assert run_operation(str(operation.id)) == Operation.Status.FAILED

    operation.refresh_from_db()
    kinds = list(operation.events.order_by("seq").values_list("kind", flat=True))
    assert kinds[-1] == "failed" and kinds.count("failed") == 1
    assert "stopped reporting progress" in operation.error
    assert failed_entries(operation) == 1
    assert not AuditLog.objects.filter(
        action=AuditLog.Action.OPERATION_COMPLETED, operation_uuid=operation.id
    ).exists()


def test_a_stopping_worker_hands_an_operation_it_has_not_started_back_unclaimed(
    as_owner, tmp_path, monkeypatch
):
    folder = write_files(tmp_path / "docs", {"a.txt": "notes on the gannet colony"})
    queued: list[str] = []
    monkeypatch.setattr(lifecycle, "enqueue", lambda operation_id: queued.append(1))
    operation = services.create_collection(as_owner, name="Birds", source=str(folder))
    stop_file = tmp_path / "worker.stop"
    stop_file.touch()
    monkeypatch.setenv("QUARRY_STOP_FILE", str(stop_file))

    assert run_operation(str(operation.id)) == "requeued"

    operation.refresh_from_db()
    assert operation.status == Operation.Status.PENDING
    assert list(operation.events.values_list("kind", flat=True)) == ["requested"]
    assert len(queued) == 2  # on commit, then handed back


@pytest.mark.slow
def test_a_worker_started_before_its_broker_waits_for_it_and_stops_cleanly(
    start_cluster,
):
    cluster = start_cluster("startworker", REDIS_URL="redis://127.0.0.1:1/0")

    wait_for(lambda: "waits for it" in cluster.output(), timeout=120)
    cluster.process.send_signal(signal.SIGTERM)

    assert cluster.process.wait(timeout=30) == 0
    output = cluster.output()
    assert "Traceback" not in output and " ERROR " not in output
    assert output.count(" WARNING ") == 1


def test_an_operation_whose_task_the_broker_lost_is_queued_again(
    as_owner, tmp_path, monkeypatch
):
    """Redis without persistence forgets its queue when it restarts."""
    folder = write_files(tmp_path / "docs", {"a.txt": "notes on the tern colony"})
    queued_then_lost = lambda operation_id: Operation.objects.filter(  # noqa: E731
        id=operation_id
    ).update(task_id="lost-task")
    monkeypatch.setattr(lifecycle, "enqueue", queued_then_lost)
    operation = services.create_collection(as_owner, name="Terns", source=str(folder))
    monkeypatch.undo()

    assert lifecycle.requeue_lost() == 0  # young: its task may still come
    later = timezone.now() + timedelta(minutes=15)
    assert lifecycle.requeue_lost(now=later) == 1

    operation.refresh_from_db()
    assert operation.status == Operation.Status.COMPLETED
