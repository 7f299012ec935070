"""The task the queue runs: claim an operation, hand it to its handler, end it."""

import logging

from operations import lifecycle
from operations.models import Operation

logger = logging.getLogger(__name__)


def run_operation(operation_id: str) -> str:
    """Run one operation; a second delivery of the same task does nothing."""
    from collections_app import indexing

    operation = lifecycle.claim(operation_id)
    if operation is None:
        logger.info("Operation %s was already claimed; skipping this delivery", operation_id)
        return "skipped"
    try:
        status, error = indexing.run(operation)
    except Exception as exc:  # noqa: BLE001 - any crash must end the operation
        logger.exception(
            "Operation %s (%s of %s) failed with an unexpected error",
            operation.id,
            operation.type,
            operation.collection_name,
        )
        lifecycle.finish(operation, Operation.Status.FAILED, error=f"Unexpected error: {exc}", logged=True)
        indexing.settle_collection(operation)
        return Operation.Status.FAILED
    lifecycle.finish(operation, status, error=error)
    indexing.settle_collection(operation)
    return status


def sweep() -> int:
    """Scheduled: fail operations whose worker died."""
    return lifecycle.sweep_stale()
