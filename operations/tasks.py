"""The task the queue runs: claim an operation, hand it to its handler, end it."""

import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone
from django_q.exceptions import TimeoutException

from operations import lifecycle, shutdown
from operations.models import Operation

logger = logging.getLogger(__name__)


def run_operation(operation_id: str) -> str:
    """Run one operation; a second delivery of the same task does nothing."""
    from collections_app import indexing

    if shutdown.requested():
        # Prefetched by a cluster that is stopping: handed back unclaimed, for
        # another cluster or the next start, instead of failed unrun.
        lifecycle.enqueue(operation_id)
        logger.info(
            "Operation %s handed back to the queue: this worker is stopping",
            operation_id,
        )
        return "requeued"
    operation = _claim_with_retries(operation_id)
    if operation is None:
        logger.info(
            "Operation %s was already claimed; skipping this delivery", operation_id
        )
        return "skipped"
    beat = Heartbeat(operation.id)
    beat.start()
    try:
        status, error = indexing.run(operation)
    except TimeoutException:
        # Django-Q2 raises it (a SystemExit, so not caught below) at
        # OPERATION_TIMEOUT when the handler overran its own deadline; ended
        # here, the operation need not wait for the stale sweep. Re-raised so
        # the queue records the timeout too.
        lifecycle.finish(
            operation,
            Operation.Status.FAILED,
            error=lifecycle.timed_out_message(operation.type),
        )
        indexing.settle_collection(operation)
        raise
    except Exception as exc:  # noqa: BLE001 - any crash must end the operation
        logger.exception(
            "Operation %s (%s of %s) failed with an unexpected error",
            operation.id,
            operation.type,
            operation.collection_name,
        )
        lifecycle.finish(
            operation,
            Operation.Status.FAILED,
            error=f"Unexpected error: {exc}",
            logged=True,
        )
        indexing.settle_collection(operation)
        return Operation.Status.FAILED
    finally:
        beat.stop()
    lifecycle.finish(operation, status, error=error)
    indexing.settle_collection(operation)
    return status


CLAIM_ATTEMPTS = 3


def _claim_with_retries(operation_id: str):
    """Claim, retrying a locked database: the queue delivers this task only once,
    so giving up here would leave the operation pending with nobody to run it."""
    for attempt in range(1, CLAIM_ATTEMPTS + 1):
        try:
            return lifecycle.claim(operation_id)
        except DatabaseError as exc:
            if attempt == CLAIM_ATTEMPTS:
                raise
            logger.info(
                "Claim of operation %s failed (%s); retrying", operation_id, exc
            )
            time.sleep(attempt)
    return None


class Heartbeat(threading.Thread):
    """Beats while a handler runs, so a long file never looks like a dead worker."""

    def __init__(self, operation_id):
        super().__init__(name=f"heartbeat-{operation_id}", daemon=True)
        self.operation_id = operation_id
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(settings.HEARTBEAT_SECONDS):
                try:
                    Operation.objects.filter(
                        id=self.operation_id, status=Operation.Status.PROCESSING
                    ).update(heartbeat_at=timezone.now())
                except DatabaseError as exc:
                    logger.info(
                        "Heartbeat of operation %s not written: %s",
                        self.operation_id,
                        exc,
                    )
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def sweep() -> int:
    """Scheduled: fail operations whose worker died, queue those never queued."""
    lifecycle.requeue_unqueued()
    lifecycle.requeue_lost()
    return lifecycle.sweep_stale()
