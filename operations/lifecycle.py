"""Every status change of an operation, in one place.

Each transition is a conditional update, so two workers (or a worker and the
sweeper) can never both move the same operation, and each ends with exactly
one terminal event and one audit entry.
"""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Max
from django.utils import timezone

from audit.models import AuditLog
from audit.services import record, record_guarded
from operations import metrics, relay, shutdown
from operations.models import Operation, OperationEvent
from webui.text import storable_text

logger = logging.getLogger(__name__)

# A pending operation without a task id this old had its enqueue fail; younger
# ones may still be between their commit and the broker's answer.
UNQUEUED_GRACE_SECONDS = 30
# A pending operation this old with nothing left in the broker lost its task.
LOST_AFTER_SECONDS = 600

_TERMINAL_ACTION = {
    Operation.Status.COMPLETED: AuditLog.Action.OPERATION_COMPLETED,
    Operation.Status.FAILED: AuditLog.Action.OPERATION_FAILED,
    Operation.Status.CANCELLED: AuditLog.Action.OPERATION_CANCELLED,
}


def add_event(
    operation: Operation, kind: str, payload: dict | None = None
) -> OperationEvent:
    """Append to the operation's history; call inside a transaction."""
    last = operation.events.aggregate(m=Max("seq"))["m"] or 0
    body = {"operation": operation.to_dict()}
    body.update(payload or {})
    event = OperationEvent.objects.create(
        operation=operation, seq=last + 1, kind=kind, payload=body
    )
    relay.on_event_created(event)
    return event


def create_pending(
    *, collection, type: str, requested_by, config: dict | None = None, remote_addr=None
) -> Operation:
    """Write a pending operation, its first event and its audit entry.

    The caller's transaction holds the change too; the enqueue runs on commit,
    so a worker can never see a task whose row is not there yet.
    """
    operation = Operation.objects.create(
        collection=collection,
        collection_name=collection.name,
        owner=collection.owner,
        type=type,
        config=config or {},
        requested_by=requested_by,
    )
    add_event(operation, "requested")
    record(
        AuditLog.Action.OPERATION_REQUESTED,
        actor=requested_by,
        collection=collection,
        operation=operation,
        details={"type": type, "config": config or {}},
        remote_addr=remote_addr,
    )
    transaction.on_commit(lambda: enqueue(operation.id))
    return operation


def enqueue(operation_id) -> bool:
    """Hand the operation to the queue; False when the broker refused it.

    Runs after the request's transaction committed, so a broker that is down
    cannot undo the request: the operation stays pending without a task id,
    and `requeue_unqueued` (the sweeper) hands it over once the broker answers.
    """
    from django_q.tasks import async_task

    try:
        task_id = async_task(
            "operations.tasks.run_operation",
            str(operation_id),
            task_name=f"operation-{operation_id}",
            group="operations",
        )
    except Exception as exc:  # noqa: BLE001 - brokers raise many kinds
        logger.error(
            "Operation %s could not be queued (%s: %s); it stays pending and is "
            "queued again within a minute once the broker answers. Check REDIS_URL "
            "or the database.",
            operation_id,
            type(exc).__name__,
            exc,
        )
        return False
    if isinstance(task_id, str):
        Operation.objects.filter(id=operation_id, task_id="").update(task_id=task_id)
    return True


def requeue_lost(now=None) -> int:
    """Queue again old pending operations when the broker holds no task at all.

    Redis without persistence forgets its queue when it restarts; their
    operations would wait forever. A task that still exists elsewhere (held by
    a busy cluster) is then delivered twice, which the claim makes harmless.
    """
    from django_q.brokers import get_broker

    cutoff = (now or timezone.now()) - timedelta(seconds=LOST_AFTER_SECONDS)
    waiting = list(
        Operation.objects.filter(status=Operation.Status.PENDING, created_at__lt=cutoff)
        .exclude(task_id="")
        .values_list("id", flat=True)
    )
    if not waiting or get_broker().queue_size():
        return 0
    for operation_id in waiting:
        enqueue(operation_id)
    logger.info(
        "Queued %d pending operation(s) again: the broker holds no task for them",
        len(waiting),
    )
    return len(waiting)


def requeue_unqueued(now=None) -> int:
    """Queue again pending operations whose enqueue failed; returns how many."""
    cutoff = (now or timezone.now()) - timedelta(seconds=UNQUEUED_GRACE_SECONDS)
    waiting = Operation.objects.filter(
        status=Operation.Status.PENDING, task_id="", created_at__lt=cutoff
    ).values_list("id", flat=True)
    queued = 0
    for operation_id in list(waiting):
        if enqueue(operation_id):
            logger.info("Operation %s queued after an earlier failure", operation_id)
            queued += 1
    return queued


def claim(operation_id) -> Operation | None:
    """pending → processing; None when another delivery already claimed it."""
    now = timezone.now()
    with transaction.atomic():
        changed = Operation.objects.filter(
            id=operation_id, status=Operation.Status.PENDING
        ).update(
            status=Operation.Status.PROCESSING,
            started_at=now,
            heartbeat_at=now,
            step="starting",
        )
        if changed != 1:
            return None
        operation = Operation.objects.select_related("collection").get(id=operation_id)
        add_event(operation, "started")
        # Commits with the claim; a failed audit write does not undo it.
        record_guarded(
            AuditLog.Action.OPERATION_STARTED,
            operation=operation,
            collection=operation.collection,
        )
    metrics.OPERATIONS_STARTED.labels(operation.type).inc()
    metrics.operation_claimed(operation.id, operation.type)
    logger.info(
        "Operation %s (%s of %s) started",
        operation.id,
        operation.type,
        operation.collection_name,
    )
    return operation


class OperationEnded(Exception):
    """The operation reached a terminal status while its handler still ran."""


class Progress:
    """Throttled progress writes: at most one every PROGRESS_INTERVAL_SECONDS."""

    def __init__(self, operation: Operation):
        self.operation = operation
        self._last_write = 0.0
        # The queue's timeout strikes wherever the task is, even mid-statement;
        # a handler that stops between files before it ends cleanly instead.
        budget = settings.OPERATION_TIMEOUT
        self.deadline = time.monotonic() + budget - min(60.0, budget * 0.2)

    def update(self, force: bool = False, **fields) -> None:
        for name, value in fields.items():
            setattr(self.operation, name, value)
        now = time.monotonic()
        if not force and now - self._last_write < settings.PROGRESS_INTERVAL_SECONDS:
            return
        try:
            self.flush()
        except DatabaseError as exc:
            # Progress is bookkeeping: losing one write must never stop the
            # documents themselves. The next update writes the counts again.
            metrics.PROGRESS_WRITE_FAILURES.inc()
            logger.warning(
                "Progress of operation %s not recorded (%s); retrying at the next "
                "update",
                self.operation.id,
                exc,
            )
            return
        self._last_write = now

    def flush(self) -> None:
        op = self.operation
        op.heartbeat_at = timezone.now()
        fields = [
            "step",
            "total",
            "done",
            "found",
            "indexed",
            "unchanged",
            "failed",
            "skipped",
            "chunks",
            "heartbeat_at",
        ]
        with transaction.atomic():
            changed = Operation.objects.filter(
                id=op.id, status=Operation.Status.PROCESSING
            ).update(**{name: getattr(op, name) for name in fields})
            if changed != 1:
                # Ended elsewhere (the sweeper took it for dead): no event may
                # follow its terminal one, and its handler must stop.
                raise OperationEnded(op.id)
            add_event(op, "progress")

    def cancel_requested(self) -> bool:
        return Operation.objects.filter(
            id=self.operation.id, cancel_requested=True
        ).exists()

    def worker_stopping(self) -> bool:
        return shutdown.requested()

    def out_of_time(self) -> bool:
        """True once the operation should stop to end before OPERATION_TIMEOUT."""
        return time.monotonic() >= self.deadline


def timed_out_message(type: str = Operation.Type.REINDEX) -> str:
    return (
        f"Timed out: the operation reached OPERATION_TIMEOUT "
        f"({settings.OPERATION_TIMEOUT} s); {how_to_finish(type)}"
    )


def how_to_finish(type: str) -> str:
    """What a person does to finish the work of an operation that ended early."""
    if type == Operation.Type.DELETE:
        return "delete the collection again to finish"
    if type == Operation.Type.REMOVE_SOURCE:
        return "remove the source again to finish"
    return "reindex the collection to finish the work"


def finish(
    operation: Operation,
    status: str,
    *,
    error: str = "",
    actor=None,
    remote_addr: str | None = None,
    logged: bool = False,
    only_from: tuple[str, ...] = Operation.ACTIVE,
) -> bool:
    """An active status → a terminal one, once. Returns False if already ended.

    `only_from` narrows the statuses it may leave (a user's cancel may end a
    pending operation, never one a worker is running).
    """
    metrics.operation_ended(operation.id, operation.type)
    # An exception's text can hold anything, NUL included (webui.text).
    error = storable_text(error)
    now = timezone.now()
    operation.status = status
    operation.error = error
    operation.finished_at = now
    operation.step = status
    with transaction.atomic():
        changed = Operation.objects.filter(
            id=operation.id, status__in=only_from
        ).update(
            status=status,
            error=error,
            finished_at=now,
            step=status,
            found=operation.found,
            indexed=operation.indexed,
            unchanged=operation.unchanged,
            failed=operation.failed,
            skipped=operation.skipped,
            chunks=operation.chunks,
            done=F("total") if status == Operation.Status.COMPLETED else F("done"),
        )
        if changed != 1:
            return False
        operation.refresh_from_db()
        add_event(operation, status, {"error": error} if error else None)
        # Commits with the terminal status; a failed audit write does not undo it.
        record_guarded(
            _TERMINAL_ACTION[status],
            actor=actor,
            operation=operation,
            collection=operation.collection if operation.collection_id else None,
            details={"counts": operation.counts(), "error": error}
            if error
            else {"counts": operation.counts()},
            remote_addr=remote_addr,
        )
    metrics.OPERATIONS_FINISHED.labels(operation.type, status).inc()
    if operation.started_at:
        metrics.OPERATION_DURATION.labels(operation.type).observe(
            (now - operation.started_at).total_seconds()
        )
    if logged:
        return True
    log = logger.warning if status == Operation.Status.FAILED else logger.info
    log(
        "Operation %s (%s of %s) %s%s",
        operation.id,
        operation.type,
        operation.collection_name,
        status,
        f": {error}" if error else "",
    )
    return True


def sweep_stale(now=None) -> int:
    """Fail operations whose worker stopped beating; returns how many."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.OPERATION_STALE_SECONDS)
    stale = Operation.objects.filter(
        status=Operation.Status.PROCESSING, heartbeat_at__lt=cutoff
    )
    count = 0
    for operation in stale:
        message = _stale_message(operation, now)
        if finish(operation, Operation.Status.FAILED, error=message):
            from collections_app.indexing import settle_collection

            settle_collection(operation)
            count += 1
    return count


def _stale_message(operation: Operation, now) -> str:
    """Why a stale operation ended: the queue's timeout guard, or a lost worker."""
    limit = settings.OPERATION_TIMEOUT
    if operation.started_at and (now - operation.started_at).total_seconds() > limit:
        return (
            f"The operation ran past OPERATION_TIMEOUT ({limit} s) and its worker "
            f"was stopped; {how_to_finish(operation.type)}"
        )
    return (
        "The worker stopped reporting progress (it was probably killed); "
        f"{how_to_finish(operation.type)}"
    )
