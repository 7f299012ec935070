"""The rules for acting on operations themselves: cancel and dismiss."""

from django.db import transaction

from audit.models import AuditLog
from audit.services import record
from collections_app.services import Conflict, Request
from operations import lifecycle
from operations.models import Operation


def cancel_operation(request: Request, operation: Operation) -> Operation:
    """A pending operation ends at once; a running one stops after its current file."""
    if not operation.is_active:
        raise Conflict(
            f"Operation {operation.id} has already ended ({operation.status})."
        )
    uninterruptible = (Operation.Type.DELETE, Operation.Type.REMOVE_SOURCE)
    if (
        operation.type in uninterruptible
        and operation.status == Operation.Status.PROCESSING
    ):
        raise Conflict(
            f"A {operation.get_type_display().lower()} operation that has started "
            "cannot be cancelled."
        )
    with transaction.atomic():
        # The type is in the condition too: the operation may have started
        # since `operation` was read.
        changed = (
            Operation.objects.filter(
                id=operation.id,
                status=Operation.Status.PROCESSING,
                cancel_requested=False,
            )
            .exclude(type__in=uninterruptible)
            .update(cancel_requested=True)
        )
        if changed:
            operation.refresh_from_db()
            lifecycle.add_event(operation, "cancel_requested")
            record(
                AuditLog.Action.OPERATION_CANCEL_REQUESTED,
                actor=request.user,
                operation=operation,
                collection=operation.collection,
                remote_addr=request.remote_addr,
            )
            return operation
    ended = lifecycle.finish(
        operation,
        Operation.Status.CANCELLED,
        error="Cancelled before it started",
        actor=request.user,
        remote_addr=request.remote_addr,
        only_from=(Operation.Status.PENDING,),
    )
    operation.refresh_from_db()
    if not ended and operation.is_active:
        if operation.cancel_requested:
            raise Conflict(
                "Cancellation was already requested; it stops after its current file."
            )
        raise Conflict("The operation started just now; ask again to cancel it.")
    if ended:
        from collections_app.indexing import settle_collection

        settle_collection(operation)
    operation.refresh_from_db()
    return operation


def dismiss_operation(operation: Operation) -> None:
    if operation.is_active:
        raise Conflict("An active operation cannot be dismissed; cancel it first.")
    Operation.objects.filter(id=operation.id).update(dismissed=True)
