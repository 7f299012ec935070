"""The task the queue runs: claim an operation, hand it to its handler, end it."""

import logging
import threading

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from operations import lifecycle
from operations.models import Operation

logger = logging.getLogger(__name__)


def run_operation(operation_id: str) -> str:
    """Run one operation; a second delivery of the same task does nothing."""
    from collections_app import indexing

    operation = lifecycle.claim(operation_id)
    if operation is None:
        logger.info(
            "Operation %s was already claimed; skipping this delivery", operation_id
        )
        return "skipped"
    beat = Heartbeat(operation.id)
    beat.start()
    try:
        status, error = indexing.run(operation)
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
    """Scheduled: fail operations whose worker died."""
    return lifecycle.sweep_stale()
